"""The paper presets plan without any weights present; doctor and the pre-run check name what is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from linkstyle.config import ConfigError, from_dict, load_config
from linkstyle.doctor import assets, missing

from .conftest import REPO, run_snakemake

PRESETS = sorted((REPO / "config" / "presets").glob("paper-*.yaml"))


def test_there_is_a_preset_per_class_set():
    assert [p.stem for p in PRESETS] == ["paper-birds", "paper-cars", "paper-dogs", "paper-fungi"]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_is_valid_and_has_the_papers_settings(preset):
    cfg = load_config(preset)
    assert cfg.generator.kind == "stylegan" and cfg.generator.truncation_psi == 0.7
    assert [c.arch for c in cfg.classifiers] == ["resnet50", "vgg16", "alexnet", "densenet201"]
    assert cfg.select.max_per_class == 5000 and cfg.tune.units == "all"
    assert cfg.measure.parts


def test_dogs_preset_dry_run_builds_the_dag_without_weights(tmp_path):
    proc = run_snakemake("--directory", str(tmp_path), "--configfile", str(REPO / "config/presets/paper-dogs.yaml"), "-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    planned = {tuple(line.split()) for line in out.splitlines()}
    # 2048 + 4096 + 4096 + 1920 units in shards of 128; 5 classes x 15 sample shards
    assert ("tune", str(16 + 32 + 32 + 15)) in planned, out[-2000:]
    assert ("extract", "75") in planned and ("train_classifier", "1") not in planned


def test_doctor_lists_what_is_missing_and_where_it_comes_from(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "linkstyle", "doctor", "-c", str(REPO / "config/presets/paper-dogs.yaml"),
                           "--set", f"generator.pickle={tmp_path}/G.pkl", "--set", f"generator.repo={tmp_path}/repo"],
                          capture_output=True, text=True, env={"TORCH_HOME": str(tmp_path / "th"), "PATH": ""})
    assert proc.returncode == 1
    assert "[MISSING] generator: StyleGAN network pickle" in proc.stdout
    assert "github.com/autonomousvision/stylegan-xl" in proc.stdout
    assert "avg-projects/stylegan_xl/models/imagenet256.pkl" in proc.stdout  # the paper's pickle, directly
    assert "resnet50-0676ba61.pth" in proc.stdout and "download.pytorch.org" in proc.stdout


def test_doctor_flags_a_file_that_is_not_a_pickle(tmp_path):
    (tmp_path / "G.pkl").write_text("not a pickle")
    (tmp_path / "repo").mkdir()
    cfg = from_dict({"generator": {"kind": "stylegan", "pickle": str(tmp_path / "G.pkl"), "repo": str(tmp_path / "repo"), "num_classes": 3},
                     "classifiers": [{"name": "ts", "kind": "torchscript", "path": str(tmp_path / "m.pt"), "num_units": 8}],
                     "measure": {"segmenter": "whole_image"}})
    bad = missing(assets(cfg))
    by_what = {("pickle" if "network pickle" in a.what else "checkout" if "checkout" in a.what else a.what.split(":")[0]): a for a in bad}
    assert "not a Python pickle" in by_what["pickle"].problem
    assert "legacy.py" in by_what["checkout"].problem
    assert not by_what["classifier ts"].present


def test_stylegan_needs_its_files_and_a_measurable_segmenter():
    with pytest.raises(ConfigError) as err:
        from_dict({"generator": {"kind": "stylegan"}})
    assert "generator.pickle: required" in str(err.value) and "generator.repo: required" in str(err.value)
    assert "measure.segmenter: 'ground_truth' needs the critters world" in str(err.value)


def test_demo_classifiers_need_the_critters_world():
    with pytest.raises(ConfigError, match="kind 'demo' is trained on the critters world only"):
        from_dict({"generator": {"kind": "stylegan", "pickle": "a", "repo": "b"}, "measure": {"segmenter": "whole_image"}})


def test_a_real_run_stops_before_any_job_when_files_are_missing(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run: r\ngenerator: {{kind: stylegan, pickle: {tmp_path}/G.pkl, repo: {tmp_path}/repo, num_classes: 3}}\n"
                   f"classifiers: [{{name: ts, kind: torchscript, path: {tmp_path}/m.pt, num_units: 8}}]\n"
                   "measure: {segmenter: whole_image}\n")
    proc = run_snakemake("--directory", str(tmp_path), "--configfile", str(cfg), "--cores", "1")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "files this config needs are missing or do not fit it" in out and f"{tmp_path}/G.pkl" in out
    assert not (tmp_path / "results" / "r" / "samples").exists()


def test_doctor_covers_biggan_and_timm_and_names_their_sources(tmp_path):
    cfg = from_dict({"generator": {"kind": "biggan", "weights_dir": str(tmp_path / "biggan-deep-256"), "num_classes": 1000},
                     "classifiers": [{"name": "r", "kind": "timm", "arch": "resnet18.a1_in1k", "weights": str(tmp_path / "r.safetensors")}],
                     "measure": {"segmenter": "whole_image"}})
    bad = missing(assets(cfg))
    assert len(bad) == 2
    text = " ".join(a.source for a in bad)
    assert "biggan-deep-256" in text and "timm/resnet18.a1_in1k" in text


def test_timm_needs_a_weights_file_and_biggan_a_folder():
    with pytest.raises(ConfigError) as err:
        from_dict({"generator": {"kind": "biggan"}, "classifiers": [{"name": "t", "kind": "timm", "arch": "resnet18"}],
                   "measure": {"segmenter": "whole_image"}})
    assert "generator.weights_dir: required for generator.kind 'biggan'" in str(err.value)
    assert "classifiers[0].weights: required for kind 'timm'" in str(err.value)


def test_doctor_checks_that_a_classifier_head_covers_the_class_set(tmp_path, monkeypatch):
    import torch
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), ckpt)
    raw = {"generator": {"kind": "biggan", "weights_dir": str(tmp_path), "num_classes": 1000},
           "classifiers": [{"name": "r", "kind": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"}],
           "measure": {"segmenter": "whole_image"}}
    fits = {a.what.split(":")[0]: a for a in assets(from_dict({**raw, "classes": [3, 9]}), deep=True)}
    assert fits["classifier r"].present and not fits["classifier r"].problem
    bad = {a.what.split(":")[0]: a for a in assets(from_dict({**raw, "classes": [3, 232]}), deep=True)}
    assert "head has 10 classes, which does not cover the class set [3, 232]" in bad["classifier r"].problem


def test_doctor_loads_a_stylegan_pickle_to_check_its_classes(tmp_path):
    from .stylegan_standin import write_standin_pickle, write_standin_repo

    repo = write_standin_repo(tmp_path / "repo", variant="xl", num_classes=3, resolution=32)
    pkl = write_standin_pickle(repo, tmp_path / "G.pkl")
    raw = {"generator": {"kind": "stylegan", "pickle": str(pkl), "repo": str(repo), "num_classes": 3},
           "classifiers": [{"name": "ts", "kind": "torchscript", "path": str(pkl), "num_units": 8}],
           "measure": {"segmenter": "whole_image"}}
    ok = [a for a in assets(from_dict(raw), deep=True) if "network pickle" in a.what][0]
    assert ok.present and not ok.problem
    raw["generator"]["num_classes"] = 5
    bad = [a for a in assets(from_dict(raw), deep=True) if "network pickle" in a.what][0]
    assert "the network has 3 classes, generator.num_classes says 5" in bad.problem


class _Bomb:
    """Unpickling this writes a file: a stand-in for the code a pickle may run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pinned_digest_stops_a_foreign_pickle_before_it_is_unpickled(tmp_path):
    import hashlib
    import pickle

    from linkstyle.generators import GENERATOR_KINDS
    from linkstyle.io import UntrustedFile, check_sha256

    marker = tmp_path / "ran"
    pkl = tmp_path / "G.pkl"
    pkl.write_bytes(pickle.dumps(_Bomb(str(marker))))
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "legacy.py").write_text("")
    good = hashlib.sha256(pkl.read_bytes()).hexdigest()
    check_sha256(pkl, good.upper(), "generator.sha256")  # the right digest passes, in either case
    cfg = from_dict({"generator": {"kind": "stylegan", "pickle": str(pkl), "repo": str(tmp_path / "repo"), "num_classes": 3,
                                   "sha256": "0" * 64}, "measure": {"segmenter": "whole_image"},
                     "classifiers": [{"name": "ts", "kind": "torchscript", "path": str(tmp_path / "m.pt"), "num_units": 8}]})
    with pytest.raises(UntrustedFile) as err:
        GENERATOR_KINDS["stylegan"](cfg.generator, 0)
    assert good in str(err.value) and "0" * 64 in str(err.value) and "generator.sha256" in str(err.value)
    # doctor's deep check does not load it either, says why, and prints the digest to pin
    items = assets(cfg, deep=True)
    gen = next(a for a in items if "network pickle" in a.what)
    assert "pins" in gen.problem and not marker.exists()
    from linkstyle.doctor import report

    assert f"sha256: {good}" in report(items)
    with pytest.raises(ConfigError, match="sha256"):
        from_dict({"generator": {"kind": "stylegan", "pickle": "a", "repo": "b", "sha256": "abc"},
                   "measure": {"segmenter": "whole_image"}})
