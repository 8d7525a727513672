"""Measure every part of every swept image (CPU only: no networks are loaded)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..io import artifact_error, write_parquet
from ..measures import MOTION_PROPERTIES, STATIC_PROPERTIES, part_measures_many, sweep_motion_many
from .context import Context


def segment(ctx: Context, arrays: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, tuple[str, ...]]]:
    """Part masks of the swept images: (source, label maps, part names) for each mask source measured.

    The configured segmenter gives the masks the analysis uses; on a world with exact masks, a learned
    segmenter's are measured beside the truth's (``measure.validate_with_truth``), so the selectivity
    stage can say whether the segmenter leads to the same conclusions.
    """
    seg = ctx.cfg.measure.segmenter
    truth = [("truth", arrays["masks"], tuple(str(p) for p in arrays["part_names"]))] if "masks" in arrays else []
    if seg == "ground_truth":
        if not truth:
            raise ConfigError(
                f"measure.segmenter: 'ground_truth' needs a generator with exact part masks, and "
                f"'{ctx.cfg.generator.kind}' has none; use 'learned' (docs/segmentation.md) or 'whole_image'"
            )
        return truth
    if seg == "whole_image":
        return [("whole_image", np.zeros(arrays["images"].shape[:3], dtype=np.uint8), ("image",))]
    if seg == "learned":
        from .segment import predict_tuned

        learned = [("segmenter", *predict_tuned(ctx, arrays))]
        return learned + (truth if ctx.cfg.measure.validate_with_truth else [])
    raise ConfigError(f"measure.segmenter: unknown segmenter '{seg}'; valid: ground_truth, learned, whole_image")


def run_measure(ctx: Context, name: str, shard: int) -> None:
    paths = ctx.paths
    tuned = ctx.locate("tune_arrays", classifier=name, shard=shard)
    made, path, arrays = tuned.origin, tuned.path, tuned.read()
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


def _truth_iou(sources: list[tuple[str, np.ndarray, tuple[str, ...]]]) -> np.ndarray | None:
    """Per image and part, IoU of the segmenter's mask with the exact one (NaN where neither has the
    part): how well the segmenter does on the swept images themselves, which may lie outside what
    its few labelled images showed. None unless both mask sources are measured with the same parts."""
    found = {source: (masks, names) for source, masks, names in sources}
    if "segmenter" not in found or "truth" not in found or found["segmenter"][1] != found["truth"][1]:
        return None
    (seg, names), (truth, _) = found["segmenter"], found["truth"]
    n, n_parts = len(seg), len(names)
    flat = np.arange(n, dtype=np.intp)[:, None] * n_parts
    a = (flat + seg.reshape(n, -1)).ravel()
    b = (flat + truth.reshape(n, -1)).ravel()
    size = n * n_parts
    inter = np.bincount(a[a == b], minlength=size)
    union = np.bincount(a, minlength=size) + np.bincount(b, minlength=size) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan).astype(np.float32).reshape(n, n_parts)


def measure_sweeps(ctx: Context, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """Part measures and motion of every image of tune arrays (whole sweeps of tune.n_steps images),
    one block of rows per mask source (column ``masks``)."""
    images = arrays["images"]
    n, h, w_px, _ = images.shape
    k = ctx.cfg.tune.n_steps
    sources = segment(ctx, arrays)
    all_parts = list(dict.fromkeys(p for _, _, names in sources for p in names))
    sets = [(masks, len(names)) for _, masks, names in sources]
    # Entropy and flow depend on the images only: computed once for every mask source.
    statics = part_measures_many(images, sets, entropy_radius=ctx.cfg.measure.entropy_radius)  # [N, P, M] each
    motions = sweep_motion_many(images.reshape(n // k, k, h, w_px, 3), [(m.reshape(n // k, k, h, w_px), p) for m, p in sets])
    truth_iou = _truth_iou(sources)
    blocks = []
    for (source, _, part_names), static, motion in zip(sources, statics, motions):
        n_parts = len(part_names)
        motion = motion.reshape(n, n_parts, len(MOTION_PROPERTIES))
        table = pd.DataFrame(
            {
                "unit": np.repeat(arrays["unit"], n_parts),
                "start": np.repeat(arrays["start"], n_parts),
                "step": np.repeat(arrays["step"], n_parts),
                "masks": source,
                "part": np.tile(np.array(part_names), n),
            }
        )
        # An absent part is flagged, and its measures are NaN (area 0), never a silent zero.
        table["present"] = static[:, :, STATIC_PROPERTIES.index("area")].reshape(-1) > 0
        for j, prop in enumerate(STATIC_PROPERTIES):
            table[prop] = static[:, :, j].reshape(-1)
        for j, prop in enumerate(MOTION_PROPERTIES):
            table[prop] = motion[:, :, j].reshape(-1)
        table["truth_iou"] = truth_iou.reshape(-1) if source == "segmenter" and truth_iou is not None else np.nan
        blocks.append(table)
    table = pd.concat(blocks, ignore_index=True)
    table["masks"] = pd.Categorical(table["masks"], categories=[s for s, _, _ in sources])
    table["part"] = pd.Categorical(table["part"], categories=all_parts)
    return table
