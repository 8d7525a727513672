"""Compare two run folders artefact by artefact: every Parquet table and NPZ array, exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def artifact_files(root: Path) -> list[Path]:
    """Parquet and NPZ artefacts of a run folder, relative to it (logs and benchmarks hold times)."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix in (".parquet", ".npz") and ".tmp" not in p.name)


def assert_same_artifacts(a: Path, b: Path) -> int:
    """Same artefact names, and each table and array equal to the bit; returns how many were compared."""
    files = artifact_files(a)
    assert files, f"no artefacts under {a}"
    assert files == artifact_files(b), f"artefact sets differ:\n{set(files) ^ set(artifact_files(b))}"
    for rel in files:
        if rel.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(a / rel), pd.read_parquet(b / rel), check_exact=True, obj=str(rel))
        else:
            with np.load(a / rel) as x, np.load(b / rel) as y:
                assert sorted(x.files) == sorted(y.files), rel
                for key in x.files:
                    np.testing.assert_array_equal(x[key], y[key], err_msg=f"{rel}:{key}")
    return len(files)
