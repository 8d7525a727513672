"""Measure every part of every swept image (CPU only: no networks are loaded)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..artifacts import TUNE_ARRAYS
from ..config import ConfigError
from ..io import artifact_error, read_npz, write_parquet
from ..measures import STATIC_PROPERTIES, part_measures, sweep_motion
from .context import Context


def segment(ctx: Context, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Part masks of the swept images, from the configured segmenter."""
    if ctx.cfg.measure.segmenter == "ground_truth":
        if "masks" not in arrays:
            raise ConfigError(
                f"measure.segmenter: 'ground_truth' needs a generator with exact part masks, and "
                f"'{ctx.cfg.generator.kind}' has none"
            )
        return arrays["masks"], tuple(str(p) for p in arrays["part_names"])
    if ctx.cfg.measure.segmenter == "whole_image":
        return np.zeros(arrays["images"].shape[:3], dtype=np.uint8), ("image",)
    raise ConfigError(f"measure.segmenter: unknown segmenter '{ctx.cfg.measure.segmenter}'; valid: ground_truth, whole_image")


def run_measure(ctx: Context, name: str, shard: int) -> None:
    paths = ctx.paths
    made, path = ctx.origin("tune", classifier=name, shard=shard), paths.tune_arrays(name, shard)
    arrays = read_npz(path, origin=made, arrays=TUNE_ARRAYS)
    n, k = len(arrays["images"]), ctx.cfg.tune.n_steps
    if n % k:
        raise artifact_error(path, f"holds {n} images, not whole sweeps of tune.n_steps={k} images", made)
    if "masks" in arrays and "part_names" not in arrays:
        raise artifact_error(path, "holds label maps ('masks') but no 'part_names' to name their values", made)
    if "masks" in arrays and arrays["masks"].size and int(arrays["masks"].max()) >= len(arrays["part_names"]):
        raise artifact_error(path, f"its label maps hold part index {int(arrays['masks'].max())}, but only "
                                   f"{len(arrays['part_names'])} parts are named (0..{len(arrays['part_names']) - 1})", made)
    table = measure_sweeps(ctx, arrays)
    write_parquet(table, paths.measure_table(name, shard), ctx.origin("measure", classifier=name, shard=shard))
    ctx.wrote(paths.measure_table(name, shard))


def measure_sweeps(ctx: Context, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """Part measures and motion of every image of tune arrays (whole sweeps of tune.n_steps images)."""
    images = arrays["images"]
    n, h, w_px, _ = images.shape
    k = ctx.cfg.tune.n_steps
    masks, part_names = segment(ctx, arrays)
    n_parts = len(part_names)
    static = part_measures(images, masks, n_parts, entropy_radius=ctx.cfg.measure.entropy_radius)  # [N, P, M]
    motion = sweep_motion(images.reshape(n // k, k, h, w_px, 3), masks.reshape(n // k, k, h, w_px), n_parts).reshape(n, n_parts)
    table = pd.DataFrame(
        {
            "unit": np.repeat(arrays["unit"], n_parts),
            "start": np.repeat(arrays["start"], n_parts),
            "step": np.repeat(arrays["step"], n_parts),
            "part": pd.Categorical(np.tile(np.array(part_names), n), categories=list(part_names)),
        }
    )
    for j, prop in enumerate(STATIC_PROPERTIES):
        table[prop] = static[:, :, j].reshape(-1)
    table["motion"] = motion.reshape(-1)
    return table
