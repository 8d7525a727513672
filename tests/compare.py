"""Compare two run folders artefact by artefact: tables cell for cell (with their origin record),
arrays element for element, JSON and weights without the timings they record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

#: Measured, not reproducible: left out of the comparisons.
TIMING_KEYS = frozenset({"train_seconds", "timing", "peak_job_rss_mb"})
ARTIFACT_SUFFIXES = (".parquet", ".npz", ".json", ".pt")


def _without_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    return obj


def assert_same_file(a: Path, b: Path) -> None:
    """Same content: tables cell for cell (and the same origin record), arrays element for element."""
    if a.suffix == ".parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
        assert pq.read_schema(a).metadata == pq.read_schema(b).metadata, a
    elif a.suffix == ".npz":
        with np.load(a) as x, np.load(b) as y:
            assert sorted(x.files) == sorted(y.files), a
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{a}: {key}")
    elif a.suffix == ".json":
        assert _without_timing(json.loads(a.read_text())) == _without_timing(json.loads(b.read_text())), a
    elif a.suffix == ".pt":
        x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        sx, sy = x.pop("state_dict"), y.pop("state_dict")
        assert sx.keys() == sy.keys() and all(torch.equal(sx[k], sy[k]) for k in sx), a
        assert _without_timing(x) == _without_timing(y), a
    else:
        raise AssertionError(f"no comparison for {a}")


def assert_same_artifacts(a: Path, b: Path, subdirs: Sequence[str]) -> int:
    """Every artifact under ``subdirs`` of run folder ``a`` exists in ``b`` with the same content; returns the count."""
    def files(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for sub in subdirs for p in (root / sub).rglob("*") if p.suffix in ARTIFACT_SUFFIXES)

    names = files(a)
    assert names and names == files(b)
    for rel in names:
        assert_same_file(a / rel, b / rel)
    return len(names)
