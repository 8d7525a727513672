"""The unit atlas of a run (atlas.py): every unit of every classifier, browsable from disk."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..artifacts import (
    ACTMAX_ARRAYS,
    COUNTERFACTUAL_DRIVERS,
    COUNTERFACTUAL_ITEMS,
    SELECTIVITY_FEATURES,
    SELECTIVITY_UNITS,
    TUNE_ARRAYS,
)
from ..atlas import ClassifierAtlas, classifier_atlas, sprite_sheet, thumbnails, write_atlas
from ..io import read_npz, read_parquet
from ..units import counterfactual_classifiers, unit_count, unit_shards
from .context import Context

#: Start samples per unit shown in the atlas, and the thumbnail size in pixels (at most).
ATLAS_STARTS = 2
ATLAS_THUMB = 64


def sheet_name(name: str, shard: int) -> str:
    return f"{name}-{shard}.png"


def _sheets(ctx: Context, name: str, starts: int, thumb: int) -> Iterator[tuple[str, np.ndarray]]:
    """One sprite sheet per tune shard, read one shard at a time (memory does not grow with units)."""
    steps = ctx.cfg.tune.n_steps
    for shard, units in enumerate(unit_shards(ctx.cfg, name)):
        arrays = read_npz(ctx.paths.tune_arrays(name, shard), origin=ctx.origin("tune", classifier=name, shard=shard),
                          arrays=TUNE_ARRAYS)
        strips = []
        for u in units:
            sel = np.flatnonzero((arrays["unit"] == u) & (arrays["start"] < starts))
            order = sel[np.lexsort((arrays["step"][sel], arrays["start"][sel]))]
            strip = thumbnails(arrays["images"][order], thumb)
            missing = starts * steps - len(strip)
            if missing > 0:  # fewer start samples than shown: blank cells
                strip = np.concatenate([strip, np.full((missing, thumb, thumb, 3), 255, np.uint8)])
            strips.append(strip)
        yield sheet_name(name, shard), sprite_sheet(strips)


def direction_sheet_name(name: str) -> str:
    return f"{name}-directions.png"


def _direction_sweeps(ctx: Context, name: str) -> dict[str, np.ndarray]:
    return read_npz(ctx.paths.actmax_arrays(name), origin=ctx.origin("actmax", classifier=name), arrays=ACTMAX_ARRAYS)


def _direction_sheet(arrays: dict[str, np.ndarray], thumb: int) -> np.ndarray:
    """One row per unit: its sweeps along every direction, side by side."""
    images = arrays["direction_images"]  # [directions, units, steps, H, W, 3]
    strips = [thumbnails(images[:, i].reshape(-1, *images.shape[3:]), thumb) for i in range(images.shape[1])]
    return sprite_sheet(strips)


def build_classifier_atlas(ctx: Context, name: str) -> ClassifierAtlas:
    cfg, paths = ctx.cfg, ctx.paths
    made = ctx.origin("selectivity", classifier=name)
    units = read_parquet(paths.selectivity_units(name), origin=made, schema=SELECTIVITY_UNITS)
    features = read_parquet(paths.selectivity_features(name), origin=made, schema=SELECTIVITY_FEATURES)
    drivers, pair_names = None, {}
    if name in counterfactual_classifiers(cfg):
        cf = ctx.origin("counterfactual", classifier=name)
        drivers = read_parquet(paths.counterfactual_drivers(name), origin=cf, schema=COUNTERFACTUAL_DRIVERS)
        items = read_parquet(paths.counterfactual_items(name), origin=cf, schema=COUNTERFACTUAL_ITEMS)
        pair_names = {(int(o), int(t)): f"{on} -> {tn}" for o, t, on, tn in
                      items[["origin", "target", "origin_name", "target_name"]].drop_duplicates().itertuples(index=False)}
    shards = unit_shards(cfg, name)
    sprite_rows = {u: (k, i) for k, us in enumerate(shards) for i, u in enumerate(us)}
    thumb = min(ATLAS_THUMB, cfg.generator.resolution)  # never upscaled
    atlas = classifier_atlas(name, unit_count(cfg, name), units, features, drivers, pair_names, sprite_rows,
                             steps=cfg.tune.n_steps, starts=ATLAS_STARTS, thumb=thumb,
                             sheets=[sheet_name(name, k) for k in range(len(shards))])
    swept = _direction_sweeps(ctx, name)
    atlas.directions = [str(m) for m in swept["directions"]]
    atlas.direction_sheet = direction_sheet_name(name)
    atlas.direction_rows = {str(int(u)): [i, [round(float(g), 4) if np.isfinite(g) else None
                                              for g in swept["direction_gain"][:, i]]]
                            for i, u in enumerate(swept["unit"])}
    return atlas


def run_atlas(ctx: Context) -> None:
    atlases = [build_classifier_atlas(ctx, c.name) for c in ctx.cfg.classifiers]

    def sheets() -> Iterator[tuple[str, np.ndarray]]:
        for a in atlases:
            yield from _sheets(ctx, a.name, a.starts, a.thumb)
            yield direction_sheet_name(a.name), _direction_sheet(_direction_sweeps(ctx, a.name), a.thumb)

    out = write_atlas(ctx.paths.atlas, atlases, sheets(), ctx.cfg.run)
    ctx.wrote(out / "index.html")
