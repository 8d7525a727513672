"""The reference stage: how much each measured property varies over images like the ones sweeps start from.

It renders the linked latents ``link(r)`` of a classifier's first ``selectivity.reference_images``
held-out samples, segments and measures them exactly as the measure stage does, and writes the
spread of every (mask source, part, property), and of every ground-truth factor where the
generator has them. The selectivity stage divides each unit's changes by these spreads, so a
unit's effect sizes depend on the data alone, never on which units are analysed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..io import write_parquet
from ..measures import STATIC_PROPERTIES, part_measures_many
from ..runtime import autocast, run_batched
from ..selectivity import reference_spread
from .context import Context
from .link import load_link, read_select
from .measure import segment
from .selectivity import factor_periods
from .tune import to_uint8


def reference_samples(table: pd.DataFrame, n: int) -> np.ndarray:
    """Row indices of the reference samples: the held-out split in seed order (the select table's order)."""
    return np.flatnonzero((table["split"] == "test").to_numpy())[:n]


@torch.inference_mode()
def render_reference(ctx: Context, name: str) -> tuple[dict[str, np.ndarray], np.ndarray | None, tuple[str, ...]]:
    """The reference images with their ``w`` (and exact masks), and their ground-truth factors if any."""
    table, arrays = read_select(ctx, name)
    rows = reference_samples(table, ctx.cfg.selectivity.reference_images)
    link = load_link(ctx, name, dims={"units": arrays["r"].shape[1], "w_dim": arrays["w"].shape[1]})
    w_all = torch.from_numpy(link(arrays["r"][rows].astype(np.float64)).astype(np.float32))
    n = len(rows)
    out: dict[str, np.ndarray] = {"w": w_all.numpy()}
    factors: list[np.ndarray] = []
    names: dict[str, tuple[str, ...]] = {}

    def step(sl: slice) -> None:
        with autocast(ctx.device, ctx.cfg.precision):
            img, truth = ctx.generator.render(w_all[sl].to(ctx.device))
        images = to_uint8(img)
        out.setdefault("images", np.empty((n, *images.shape[1:]), np.uint8))[sl] = images
        if truth is not None:
            masks = truth.masks.cpu().numpy().astype(np.uint8, copy=False)
            out.setdefault("masks", np.empty((n, *masks.shape[1:]), np.uint8))[sl] = masks
            factors.append(truth.factors.float().cpu().numpy())
            names["factors"], names["parts"] = truth.factor_names, truth.part_names

    run_batched(n, ctx.cfg.generator.batch_size, step, setting="generator.batch_size")
    if "parts" in names:
        out["part_names"] = np.array(names["parts"])
    return out, (np.concatenate(factors) if factors else None), names.get("factors", ())


def run_reference(ctx: Context, name: str) -> None:
    arrays, factors, factor_names = render_reference(ctx, name)
    sources = segment(ctx, arrays)
    statics = part_measures_many(arrays["images"], [(m, len(p)) for _, m, p in sources],
                                 entropy_radius=ctx.cfg.measure.entropy_radius)
    blocks = []
    for (source, _, parts), values in zip(sources, statics):
        n, n_parts, _ = values.shape
        block = pd.DataFrame(values.reshape(n * n_parts, -1), columns=list(STATIC_PROPERTIES))
        block.insert(0, "masks", source)
        block.insert(1, "part", np.tile(np.array(parts), n))
        blocks.append(block)
    table = reference_spread(pd.concat(blocks, ignore_index=True),
                             pd.DataFrame(factors, columns=list(factor_names)) if factors is not None else None,
                             STATIC_PROPERTIES, factor_periods(ctx.cfg))
    path = ctx.paths.reference_spread(name)
    write_parquet(table, path, ctx.origin("reference", classifier=name))
    ctx.wrote(path)
