"""The unit atlas of a run (atlas.py): every unit of every classifier, browsable from disk."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..artifacts import unit_sweep_images
from ..atlas import ClassifierAtlas, classifier_atlas, sprite_sheet, thumbnails, write_atlas
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
        arrays = ctx.read("tune_arrays", classifier=name, shard=shard)
        strips = []
        for u in units:
            strip = thumbnails(unit_sweep_images(arrays, u, starts), thumb)
            missing = starts * steps - len(strip)
            if missing > 0:  # fewer start samples than shown: blank cells
                strip = np.concatenate([strip, np.full((missing, thumb, thumb, 3), 255, np.uint8)])
            strips.append(strip)
        yield sheet_name(name, shard), sprite_sheet(strips)


def direction_sheet_name(name: str) -> str:
    return f"{name}-directions.png"


def _direction_sweeps(ctx: Context, name: str) -> dict[str, np.ndarray]:
    return ctx.read("actmax_arrays", classifier=name)


def _direction_sheet(arrays: dict[str, np.ndarray], thumb: int) -> np.ndarray:
    """One row per unit: its sweeps along every direction, side by side."""
    images = arrays["direction_images"]  # [directions, units, steps, H, W, 3]
    strips = [thumbnails(images[:, i].reshape(-1, *images.shape[3:]), thumb) for i in range(images.shape[1])]
    return sprite_sheet(strips)


def build_classifier_atlas(ctx: Context, name: str) -> ClassifierAtlas:
    cfg = ctx.cfg
    units = ctx.read("selectivity_units", classifier=name)
    features = ctx.read("selectivity_features", classifier=name)
    drivers, pair_names = None, {}
    if name in counterfactual_classifiers(cfg):
        drivers = ctx.read("counterfactual_drivers", classifier=name)
        items = ctx.read("counterfactual_items", classifier=name)
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
