from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkstyle.io import Origin, atomic_path, read_json, read_npz, write_json, write_npz, write_parquet
from linkstyle.seeds import EVAL_SEED_BASE, TRAIN_SEED_BASE, derive, in_test_split, sample_seeds


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_writers_roundtrip_and_leave_no_temp_files(tmp_path):
    write_npz(tmp_path / "a.npz", x=np.arange(5), name=np.array("ridge"))
    write_parquet(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.parquet")
    write_json({"v": np.float32(0.5), "nan": float("nan"), "arr": np.arange(2)}, tmp_path / "s.json")
    assert read_npz(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2, 3, 4]
    assert pd.read_parquet(tmp_path / "t.parquet")["a"].tolist() == [1, 2]
    assert read_json(tmp_path / "s.json") == {"v": 0.5, "nan": None, "arr": [0, 1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "s.json", "t.parquet"]


def test_sample_seeds_are_distinct_across_classes_and_below_training_seeds():
    seeds = np.concatenate([sample_seeds(0, c, 0, 1000) for c in range(10)])
    assert len(np.unique(seeds)) == len(seeds)
    assert seeds.max() < TRAIN_SEED_BASE < EVAL_SEED_BASE


def test_test_split_is_a_stable_function_of_the_seed():
    seeds = np.arange(20000)
    test = in_test_split(seeds, 0.2)
    assert 0.18 < test.mean() < 0.22
    np.testing.assert_array_equal(in_test_split(seeds[::7], 0.2), test[::7])


def test_derived_seeds_are_stable_and_distinct():
    assert derive(0, "train", "a") == derive(0, "train", "a")
    assert derive(0, "train", "a") != derive(0, "train", "b")


def test_artifacts_get_the_permissions_of_the_umask_not_private_ones(tmp_path):
    """mkstemp makes 0600 files; artifacts on a shared disk must be as readable as the umask allows."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    path = write_npz(tmp_path / "a.npz", x=np.arange(3))
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_npz_writer_streams_rows_and_reads_back_like_write_npz(tmp_path):
    from linkstyle.io import NpzWriter

    made = Origin("tune", ("tune",), "abc", "linkstyle tune")
    images = np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3)
    w = np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32)
    with NpzWriter(tmp_path / "a.npz", made) as sink:
        sink.declare("images", images.shape, images.dtype)
        sink.declare("w", w.shape, w.dtype)
        for sl in (slice(6, 10), slice(0, 6)):  # rows in any order
            sink.write("images", sl, images[sl])
            sink.write("w", sl, w[sl])
        sink.put("unit", np.arange(10))
        sink.close()
    write_npz(tmp_path / "b.npz", made, images=images, w=w, unit=np.arange(10))
    a, b = read_npz(tmp_path / "a.npz", origin=made), read_npz(tmp_path / "b.npz", origin=made)
    assert sorted(a) == sorted(b) == ["images", "unit", "w"]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # no parts left


def test_npz_writer_that_fails_leaves_nothing(tmp_path):
    from linkstyle.io import NpzWriter

    with pytest.raises(RuntimeError, match="boom"):
        with NpzWriter(tmp_path / "a.npz") as sink:
            sink.declare("x", (4, 2), np.float32)
            sink.write("x", slice(0, 2), np.ones((2, 2), np.float32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
