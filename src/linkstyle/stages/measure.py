"""Measure every part of every swept image (CPU only: no networks are loaded)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..io import read_npz, write_parquet
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
    cfg, paths = ctx.cfg, ctx.paths
    arrays = read_npz(paths.tune_arrays(name, shard))
    images = arrays["images"]
    masks, part_names = segment(ctx, arrays)
    n, h, w_px, _ = images.shape
    k = cfg.tune.n_steps
    n_parts = len(part_names)
    static = part_measures(images, masks, n_parts, entropy_radius=cfg.measure.entropy_radius)  # [N, P, M]
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
    write_parquet(table, paths.measure_table(name, shard))
    ctx.wrote(paths.measure_table(name, shard))
