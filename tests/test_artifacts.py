"""The artifact registry (artifacts.ARTIFACTS): every artifact a stage reads is declared once, with its path,
the stage that makes it and its spec, and read through ctx.read, so no read can pair the wrong spec or origin;
and the one selector of a unit's sweep images (artifacts.unit_sweep_images)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linkstyle.artifacts import ARTIFACTS, Artifact, locate, origin, unit_sweep_images
from linkstyle.config import from_dict
from linkstyle.errors import LinkstyleError
from linkstyle.io import Array, ArtifactError, write_json, write_npz, write_parquet
from linkstyle.paths import RunPaths
from linkstyle.registry import STAGES
from linkstyle.stages.context import Context
from linkstyle.units import unit_shards

from .conftest import TINY

SRC = Path(__file__).resolve().parents[1] / "src" / "linkstyle"


@pytest.fixture
def ctx(tmp_path) -> Context:
    return Context(from_dict(dict(TINY, results_dir=str(tmp_path))))


def _values(art: Artifact) -> dict[str, object]:
    return {w: "regnet" if w == "classifier" else 1 for w in art.wildcards}


@pytest.mark.parametrize("kind", sorted(ARTIFACTS))
def test_every_artifact_kind_is_placed_by_runpaths_and_made_by_a_registered_stage(kind, ctx):
    art = ARTIFACTS[kind]
    assert art.path == kind and art.stage in STAGES and art.format in ("npz", "parquet", "json")
    place = inspect.getattr_static(RunPaths, art.path)
    if art.wildcards:  # a method whose arguments are the stage's wildcards, in order
        assert len(inspect.signature(place).parameters) == 1 + len(art.wildcards), kind
    else:
        assert isinstance(place, property), kind
    spec = art.spec_for(ctx.cfg)
    if art.format == "npz":
        assert spec is None or all(isinstance(a, Array) for a in spec.values()), kind
    elif art.format == "parquet":
        assert spec and all(isinstance(c, str) and isinstance(k, str) for c, k in spec.items()), kind
    else:
        assert spec and all(isinstance(k, str) for k in spec), kind
    found = locate(ctx.cfg, kind, **_values(art))
    assert found.path.is_relative_to(ctx.paths.root) and found.origin.stage == art.stage


def test_located_artifacts_keep_todays_paths_and_remake_commands(ctx):
    """The path arguments and the origin's CLI options are the stage's wildcards, as the hand-paired reads had them."""
    cfg, paths = ctx.cfg, ctx.paths
    expected = {
        ("tune_arrays", (("classifier", "regnet"), ("shard", 1))): (paths.tune_arrays("regnet", 1),
                                                                  origin(cfg, "tune", classifier="regnet", shard=1)),
        ("samples", (("cls", 2), ("shard", 0))): (paths.samples(2, 0), origin(cfg, "sample", cls=2, shard=0)),
        ("selectivity_units", (("classifier", "planted"),)): (paths.selectivity_units("planted"),
                                                               origin(cfg, "selectivity", classifier="planted")),
        ("classifier_metrics", (("classifier", "regnet"),)): (paths.classifier_metrics("regnet"),
                                                               origin(cfg, "train_classifier", classifier="regnet")),
        ("label_latents", ()): (paths.label_latents, origin(cfg, "label_export")),
    }
    for (kind, wildcards), (path, made) in expected.items():
        found = ctx.locate(kind, **dict(reversed(wildcards)))  # the order they are passed in does not matter
        assert (found.path, found.origin) == (path, made), kind
    assert ctx.locate("tune_arrays", shard=3, classifier="regnet").origin.remake.startswith(
        "linkstyle tune --classifier regnet --shard 3 --config ")


def _tune_arrays(n_units: int = 1, starts: int = 1, steps: int = 2) -> dict[str, np.ndarray]:
    u, s, k = (a.ravel() for a in np.meshgrid(np.arange(n_units), np.arange(starts), np.arange(steps), indexing="ij"))
    n = len(u)
    return {"unit": u, "start": s, "step": k, "w": np.zeros((n, 4), np.float32),
            "images": np.zeros((n, 2, 2, 3), np.uint8)}


def test_read_refuses_an_artifact_written_with_another_stages_origin(ctx):
    cfg, paths = ctx.cfg, ctx.paths
    path = paths.tune_arrays("regnet", 0)
    path.parent.mkdir(parents=True)
    write_npz(path, origin(cfg, "measure", classifier="regnet", shard=0), **_tune_arrays())
    with pytest.raises(ArtifactError, match="made by stage 'measure', but stage 'tune' makes"):
        ctx.read("tune_arrays", classifier="regnet", shard=0)
    write_npz(path, origin(cfg, "tune", classifier="regnet", shard=0), **_tune_arrays())
    assert ctx.read("tune_arrays", classifier="regnet", shard=0)["step"].tolist() == [0, 1]
    write_npz(path, origin(cfg, "tune", classifier="regnet", shard=0), **{**_tune_arrays(), "images": np.zeros(2)})
    with pytest.raises(ArtifactError, match="images"):  # the kind's spec (TUNE_ARRAYS) is checked with its origin
        ctx.read("tune_arrays", classifier="regnet", shard=0)

    table = paths.selectivity_units("regnet")
    table.parent.mkdir(parents=True)
    write_parquet(pd.DataFrame({"unit": [1]}), table, origin(cfg, "counterfactual", classifier="regnet"))
    with pytest.raises(ArtifactError, match="made by stage 'counterfactual', but stage 'selectivity' makes"):
        ctx.read("selectivity_units", classifier="regnet")
    metrics = paths.link_metrics("regnet")
    metrics.parent.mkdir(parents=True)
    write_json({"n_train": 1}, metrics, origin(cfg, "select", classifier="regnet"))
    with pytest.raises(ArtifactError, match="made by stage 'select', but stage 'link' makes"):
        ctx.read("link_metrics", classifier="regnet")
    write_json({"n_train": 1}, metrics, origin(cfg, "link", classifier="regnet"))
    with pytest.raises(ArtifactError, match="has no entry 'n_test'"):
        ctx.read("link_metrics", classifier="regnet")


def test_read_refuses_a_file_of_another_shard_or_classifier_and_trusts_files_that_record_none(ctx):
    cfg, paths = ctx.cfg, ctx.paths
    path = paths.tune_arrays("regnet", 1)
    path.parent.mkdir(parents=True)
    write_npz(path, origin(cfg, "tune", classifier="regnet", shard=0), **_tune_arrays())  # shard 0's, copied to 1
    with pytest.raises(ArtifactError, match="made for classifier regnet, shard 0, but this is the place of "
                                            "classifier regnet, shard 1"):
        ctx.read("tune_arrays", classifier="regnet", shard=1)
    write_npz(path, origin(cfg, "tune", classifier="resnet18", shard=1), **_tune_arrays())
    with pytest.raises(ArtifactError, match="made for classifier resnet18, shard 1"):
        ctx.read("tune_arrays", classifier="regnet", shard=1)
    made = origin(cfg, "tune", classifier="regnet", shard=1)
    assert made.record()["wildcards"] == {"classifier": "regnet", "shard": "1"}
    write_npz(path, made, **_tune_arrays())
    assert ctx.read("tune_arrays", classifier="regnet", shard=1)["step"].tolist() == [0, 1]
    older = origin(cfg, "tune")  # as files written before wildcards were recorded
    assert "wildcards" not in older.record()
    write_npz(path, older, **_tune_arrays())
    assert ctx.read("tune_arrays", classifier="regnet", shard=1)["step"].tolist() == [0, 1]


def test_read_takes_exactly_its_stages_wildcards_and_known_kinds(ctx):
    with pytest.raises(TypeError, match=r"takes wildcards \('classifier', 'shard'\)"):
        ctx.read("tune_arrays", classifier="regnet")
    with pytest.raises(TypeError, match="takes wildcards"):
        ctx.read("selectivity_units", classifier="regnet", shard=0)
    with pytest.raises(LinkstyleError, match="unknown artifact 'tune_images'"):
        ctx.read("tune_images", classifier="regnet", shard=0)
    with pytest.raises(TypeError, match="do not apply"):
        ctx.read("link_metrics", classifier="regnet", dims={"n": 1})


def test_read_checks_only_the_named_arrays_and_the_given_sizes(ctx):
    cfg, paths = ctx.cfg, ctx.paths
    path = paths.extract_arrays(0, 0)
    path.parent.mkdir(parents=True)
    n = 3
    write_npz(path, origin(cfg, "extract", cls=0, shard=0), seed=np.arange(n), w=np.zeros((n, 4), np.float32),
              r__regnet=np.zeros((n, 5), np.float32))  # no r__resnet18: this file lacks another classifier's features
    with pytest.raises(ArtifactError, match="r__resnet18"):
        ctx.read("extract_arrays", cls=0, shard=0)
    mine = ctx.read("extract_arrays", cls=0, shard=0, only=("seed", "w", "r__regnet"), dims={"n": n})
    assert mine["r__regnet"].shape == (n, 5)
    with pytest.raises(ArtifactError):
        ctx.read("extract_arrays", cls=0, shard=0, only=("seed", "w", "r__regnet"), dims={"n": n + 1})


def test_no_stage_reads_an_artifact_by_hand():
    """Every read_npz / read_parquet / read_json of an artifact goes through the registry (artifacts.Located.read);
    the one library loader left (planted.load_planted_spec) takes its origin from its caller."""
    allowed = {SRC / "io.py", SRC / "artifacts.py", SRC / "classifiers" / "planted.py"}
    hand = [f"{p.relative_to(SRC)}:{i}" for p in sorted(SRC.rglob("*.py")) if p not in allowed
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bread_(npz|parquet|json)\(", line)]
    assert not hand, hand


def _shuffled_sweeps(units=(3, 5), starts=3, steps=4, seed=0) -> dict[str, np.ndarray]:
    """Tune arrays whose image pixels encode (unit, start, step), rows in a random order."""
    u, s, k = (a.ravel() for a in np.meshgrid(units, np.arange(starts), np.arange(steps), indexing="ij"))
    order = np.random.default_rng(seed).permutation(len(u))
    u, s, k = u[order], s[order], k[order]
    images = np.zeros((len(u), 2, 2, 3), np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = u[:, None, None], s[:, None, None], k[:, None, None]
    return {"unit": u, "start": s, "step": k, "images": images}


def test_a_units_sweep_images_are_ordered_by_start_then_step_from_its_first_starts():
    arrays = _shuffled_sweeps()
    got = unit_sweep_images(arrays, 5, starts=2)
    assert got.shape == (2 * 4, 2, 2, 3)
    assert (got[:, 0, 0, 0] == 5).all()
    assert got[:, 0, 0, 1].tolist() == [0] * 4 + [1] * 4
    assert got[:, 0, 0, 2].tolist() == [0, 1, 2, 3] * 2
    assert unit_sweep_images(arrays, 3, starts=10)[:, 0, 0, 1].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # all there are
    assert len(unit_sweep_images(arrays, 4, starts=2)) == 0  # a unit not in the shard


def test_the_report_and_the_atlas_show_the_same_images_of_a_unit(ctx, monkeypatch):
    """report.sweep_images and the atlas's sprite sheets select a unit's images with the one selector."""
    from linkstyle.stages import atlas, report

    cfg = ctx.cfg
    k = cfg.tune.n_steps
    shards = unit_shards(cfg, "planted")
    unit = shards[0][0]
    arrays = _shuffled_sweeps(units=shards[0], starts=3, steps=k)
    monkeypatch.setattr(Context, "read", lambda self, kind, **w: arrays)
    monkeypatch.setattr(atlas, "thumbnails", lambda images, thumb: images)  # the selected cells, unscaled
    monkeypatch.setattr(atlas, "sprite_sheet", lambda strips: strips)
    shown = report.sweep_images(ctx, "planted", [unit], starts=2)[unit]
    assert shown.shape == (2, k, 2, 2, 3)
    assert (shown.reshape(-1, 2, 2, 3) == unit_sweep_images(arrays, unit, 2)).all()
    name, strips = next(atlas._sheets(ctx, "planted", 2, thumb=2))
    assert name == atlas.sheet_name("planted", 0) and (strips[0] == shown.reshape(-1, 2, 2, 3)).all()
