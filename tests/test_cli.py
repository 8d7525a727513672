from __future__ import annotations

import subprocess
import sys

import pytest

from linkstyle.cli import build_parser
from linkstyle.registry import STAGES


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "linkstyle", *args], capture_output=True, text=True)


def test_help_lists_every_stage():
    out = _run("--help").stdout
    for stage in STAGES:
        assert stage in out
    assert "Snakemake" in out
    assert "train_classifier (train)" in out and "train_segmenter (train-segmenter)" in out  # the older spellings


def test_older_stage_spellings_still_work():
    """The commands the docs showed before stages were named as their rules: train, train-segmenter, label export/import."""
    parser = build_parser()
    assert parser.parse_args(["train", "--classifier", "resnet18"]).stage == "train_classifier"
    assert parser.parse_args(["train-segmenter"]).stage == "train_segmenter"
    assert parser.parse_args(["label", "export"]).stage == "label_export"
    assert parser.parse_args(["label", "import"]).stage == "label_import"
    assert parser.parse_args(["label_export"]).stage == "label_export"


def test_each_stage_takes_its_wildcards():
    parser = build_parser()
    args = parser.parse_args(["tune", "--classifier", "resnet18", "--shard", "3", "--set", "tune.n_steps=5"])
    assert (args.classifier, args.shard, args.set) == ("resnet18", 3, ["tune.n_steps=5"])


def test_units_command_counts_units_and_shards():
    proc = _run("units", "--set", "tune.units_per_shard=100")
    assert proc.returncode == 0, proc.stderr
    assert "resnet18: 512 units, 512 analysed in 6 shards" in proc.stdout
    assert "regnet: 400 units, 400 analysed in 4 shards" in proc.stdout


def test_missing_upstream_artifact_is_a_clear_error(tmp_path):
    proc = _run("link", "--classifier", "resnet18", "--set", f"results_dir={tmp_path}")
    assert proc.returncode == 2
    assert "linkstyle link: error: missing input" in proc.stderr and "samples.parquet" in proc.stderr and "run `snakemake" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_classifier_names_the_configured_ones(tmp_path):
    proc = _run("select", "--classifier", "vgg", "--set", f"results_dir={tmp_path}")
    assert proc.returncode == 2
    assert "unknown classifier 'vgg'; configured: resnet18, regnet" in proc.stderr


def test_missing_weights_say_how_to_make_them(tmp_path):
    from linkstyle.config import load_config
    from linkstyle.io import ArtifactError
    from linkstyle.stages.context import Context

    ctx = Context(load_config(None, {"results_dir": str(tmp_path)}))
    with pytest.raises(ArtifactError) as info:
        ctx.classifier("resnet18")
    assert "weights.pt" in str(info.value) and "linkstyle train_classifier --classifier resnet18" in str(info.value)
