"""The labelling loop as a user runs it: export, label (here: the exact masks), import, train, predict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from linkstyle.config import load_config
from linkstyle.paths import RunPaths
from linkstyle.stages import run_stage
from linkstyle.stages.context import Context
from linkstyle.stages.segment import predict_tuned

SMALL = {
    "run": "seg",
    "generator": {"num_classes": 3, "resolution": 32},
    "measure": {"segmenter": "learned"},
    "segmentation": {"export_images": 8, "steps": 40, "heldout_images": 12},
}


def _config(tmp_path, **over):
    raw = {**SMALL, "results_dir": str(tmp_path / "results"), **over}
    cfg = load_config(None, raw)
    RunPaths(cfg.run_dir).root.mkdir(parents=True, exist_ok=True)
    path = RunPaths(cfg.run_dir).config
    path.write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    return cfg, path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "linkstyle", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg")
    cfg, path = _config(tmp)
    run_stage(cfg, "label_export", threads=1)
    return tmp, cfg, path


def test_export_writes_images_truth_and_a_manifest(exported):
    _, cfg, _ = exported
    paths = RunPaths(cfg.run_dir)
    images = sorted((paths.labels_dir / "images").glob("*.png"))
    truth = sorted((paths.labels_dir / "truth").glob("*.png"))
    assert len(images) == 8 and [p.name for p in images] == [p.name for p in truth]
    assert Image.open(images[0]).size == (32, 32) and Image.open(truth[0]).mode == "P"
    manifest = json.loads(paths.label_manifest.read_text())
    assert manifest["parts"][:2] == ["background", "body"]


def test_import_train_predict_on_the_exported_truth(exported):
    _, cfg, _ = exported
    paths = RunPaths(cfg.run_dir)
    run_stage(cfg, "label_import", threads=1)
    run_stage(cfg, "train_segmenter", threads=1)
    metrics = json.loads(paths.segmenter_metrics.read_text())
    assert metrics["labelled_images"] == 8 and metrics["heldout"]["images"] == 12
    assert metrics["heldout"]["mean_iou"] > 0.3  # 40 steps: well above chance (1/8), far from converged
    ctx = Context(cfg, threads=1)
    data = np.load(paths.segmenter_labels)
    masks, parts = predict_tuned(ctx, {"images": data["images"], "w": data["w"]})
    assert masks.shape == data["masks"].shape and masks.dtype == np.uint8 and len(parts) == 8
    assert (masks == data["masks"]).mean() > 0.7  # on its own training images


def test_training_is_deterministic(exported):
    _, cfg, _ = exported
    paths = RunPaths(cfg.run_dir)
    run_stage(cfg, "label_import", threads=1)
    run_stage(cfg, "train_segmenter", threads=1)
    first = json.loads(paths.segmenter_metrics.read_text())["heldout"]
    run_stage(cfg, "train_segmenter", threads=1)
    assert json.loads(paths.segmenter_metrics.read_text())["heldout"] == first


@pytest.mark.parametrize("damage, message", [
    ("value", "outside 0..7"),
    ("size", "but the image is 32x32"),
    ("colour", "RGB"),
    ("too_few", "at least 5 are needed"),
    ("stranger", "matches no exported image"),
])
def test_bad_label_maps_are_refused_naming_the_file(exported, tmp_path, damage, message):
    tmp, cfg, _ = exported
    folder = tmp_path / "maps"
    shutil.copytree(RunPaths(cfg.run_dir).labels_dir / "truth", folder)
    maps = sorted(folder.glob("*.png"))
    bad = maps[1]
    if damage == "value":
        a = np.array(Image.open(bad))
        a[3, 3] = 9
        Image.fromarray(a, "L").save(bad)
    elif damage == "size":
        Image.fromarray(np.zeros((20, 24), np.uint8), "L").save(bad)
    elif damage == "colour":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8), "RGB").save(bad)
    elif damage == "too_few":
        for p in maps[4:]:
            p.unlink()
    elif damage == "stranger":
        shutil.copy(bad, folder / "holiday-photo.png")
    _, path = _config(tmp, segmentation={**SMALL["segmentation"], "labels": str(folder)})
    proc = _cli("label", "import", "--config", str(path))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    if damage not in ("too_few",):
        assert str(folder) in proc.stderr
    _config(tmp)  # leave the module's config as it was


def test_pointing_at_your_labels_keeps_the_export(exported):
    """segmentation.labels is read by the import only: the exported images stay valid."""
    _, cfg, _ = exported
    other = load_config(None, {**cfg.raw, "segmentation": {**cfg.raw["segmentation"], "labels": "/somewhere"}})
    assert other.stage_digest("label_export") == cfg.stage_digest("label_export")
    assert other.stage_digest("label_import") != cfg.stage_digest("label_import")


@pytest.mark.slow
def test_swept_images_join_the_label_set_from_the_sweeps_ends(tiny_run, tmp_path):
    """segmentation.sweep_images: the first and last steps of the sweeps, spread over every
    classifier's shards, exported with their exact masks, imported beside the samples, named by a
    digest of the image; and Snakemake reruns the export when the sweeps will change."""
    import hashlib

    from .conftest import TINY, run_snakemake

    work, _, _ = tiny_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    raw = {**TINY, "segmentation": {**TINY["segmentation"], "export_images": 4, "sweep_images": 7}}
    cfg_file = copy / "sweeps.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    paths = RunPaths(copy / "results" / "tiny")
    target = str(paths.segmenter_labels.relative_to(copy))  # (a target goes before --configfile, which takes several files)
    proc = run_snakemake(target, "--directory", str(copy), "--configfile", str(cfg_file), "--cores", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]

    latents = np.load(paths.label_latents)
    names = [str(n) for n in latents["names"]]
    assert len(names) == 11 and all(n.endswith(f"-seed{s}") for n, s in zip(names[:4], latents["seed"][:4]))
    assert (latents["seed"][4:] == -1).all()
    # 7 images over 9 shards (3 classifiers x 3): one from each of the first 7, in config order
    assert [n.split("-")[1:3] for n in names[4:]] == [
        ["resnet18", "0"], ["resnet18", "1"], ["resnet18", "2"], ["regnet", "0"], ["regnet", "1"], ["regnet", "2"], ["planted", "0"]]
    packed = np.load(paths.segmenter_labels)
    row = {str(n): i for i, n in enumerate(packed["names"])}
    assert set(row) == set(names)
    for i, name in enumerate(names[4:], start=4):
        _, clf, shard, index, digest = name.split("-")
        arrays = np.load(paths.tune_arrays(clf, shard))
        k = int(index)
        assert arrays["step"][k] in (0, raw["tune"]["n_steps"] - 1)  # an end of its sweep
        assert hashlib.sha256(arrays["images"][k].tobytes()).hexdigest()[:8] == digest
        assert np.array_equal(np.asarray(Image.open(paths.labels_dir / "images" / f"{name}.png").convert("RGB")), arrays["images"][k])
        assert np.array_equal(packed["images"][row[name]], arrays["images"][k])
        assert np.array_equal(packed["masks"][row[name]], arrays["masks"][k])  # the exact masks as labels
        assert np.array_equal(latents["w"][i], arrays["w"][k].astype(np.float32))

    def planned(folder, config):
        dry = run_snakemake("-n", "--nolock", "--quiet", "rules", "--directory", str(folder), "--configfile", str(config),
                            "--forcerun", "link")
        assert dry.returncode == 0, dry.stderr[-3000:]
        return {line.split()[0] for line in dry.stdout.splitlines() if line.strip() and line.split()[-1].isdigit()}

    # new sweeps (a new link) re-export swept images; without sweep_images the export does not wait for tune
    assert {"tune", "label_export"} <= planned(copy, cfg_file)
    without = planned(work, work / "tiny.yaml")
    assert "tune" in without and "label_export" not in without
