"""One merge everywhere: what `linkstyle config` prints is what the workflow resolves and writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from linkstyle.config import BUILTIN_CONFIG, load_config
from linkstyle.paths import RunPaths

from .conftest import REPO, run_env, run_snakemake

PRESETS = sorted((REPO / "config" / "presets").glob("paper-*.yaml"))


def _printed(*files: Path) -> str:
    args = [a for f in files for a in ("-c", str(f))]
    proc = subprocess.run([sys.executable, "-m", "linkstyle", "config", *args], capture_output=True, text=True,
                          env=run_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("preset", [None, *PRESETS], ids=lambda p: "builtin" if p is None else p.stem)
def test_linkstyle_config_prints_what_the_workflow_writes(preset, tmp_path):
    """The workflow writes its resolved config in `onstart`: for the built-in world a cheap target
    runs (the label export); a preset stops right after, on its missing weights."""
    cfg = load_config(preset if preset is not None else BUILTIN_CONFIG)
    written = tmp_path / RunPaths(cfg.run_dir).config
    if preset is None:
        target = str(RunPaths(cfg.run_dir).label_manifest)
        proc = run_snakemake(target, "--directory", str(tmp_path), "--cores", "1")
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        proc = run_snakemake("--directory", str(tmp_path), "--configfile", str(preset), "--cores", "1")
        assert proc.returncode != 0 and "files this config needs are missing" in proc.stdout + proc.stderr
    assert written.exists(), (proc.stdout + proc.stderr)[-3000:]
    assert written.read_text() == (_printed(preset) if preset is not None else _printed())


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_does_not_inherit_the_builtin_world(preset):
    """Keys a preset leaves out take the schema's defaults (the paper's loss weights), not critters'."""
    printed = yaml.safe_load(_printed(preset))
    assert printed["counterfactual"]["weight_cosine"] == 10.0 and printed["counterfactual"]["weight_other"] == 0.0
    assert printed["generator"]["kind"] == "stylegan"


def test_several_files_merge_in_order(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("run: first\ntune: {n_steps: 5, units_per_shard: 32}\n")
    second.write_text("tune: {n_steps: 7}\n")
    printed = yaml.safe_load(_printed(first, second))
    assert printed["run"] == "first" and printed["tune"]["n_steps"] == 7 and printed["tune"]["units_per_shard"] == 32
    # Neither file is laid over the built-in world: its classifiers are the schema's default.
    assert printed == load_config([first, second]).raw
    assert printed != load_config([BUILTIN_CONFIG, first, second]).raw


def test_without_a_file_both_take_the_builtin_world():
    assert yaml.safe_load(_printed()) == load_config(BUILTIN_CONFIG).raw


def test_the_tiny_test_world_is_the_builtin_world_made_small():
    """.test/config/config.yaml replaces config/config.yaml in the tests: same world, classifiers and
    segmenter, fewer of everything."""
    tiny, builtin = load_config(REPO / ".test" / "config" / "config.yaml"), load_config(BUILTIN_CONFIG)
    assert tiny.classifiers == builtin.classifiers and tiny.generator.kind == builtin.generator.kind
    assert tiny.measure.segmenter == builtin.measure.segmenter and tiny.counterfactual.pairs == builtin.counterfactual.pairs
    assert tiny.sample.per_class < builtin.sample.per_class and tiny.generator.num_classes < builtin.generator.num_classes
