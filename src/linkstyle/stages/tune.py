"""The tune stage: sweep the units of one shard (:mod:`linkstyle.sweep`), render, and store.

For unit u, start sample s and step k the unit's target is ``linspace(low_u, high_u, n_steps)[k]``;
the sweep maps it to ``w`` along the unit's direction (``tune.direction``), the generator renders,
and the classifier's own response to the rendered image (the *realised* activation) is recorded,
so every sweep carries its own faithfulness check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import LinkstyleError
from ..io import NpzWriter, Origin, write_parquet
from ..runtime import progress
from ..sweep import Rendered, SweepPlan, plan_sweeps, render_sweeps
from ..units import unit_shards
from .context import Context
from .link import load_link, read_select


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> uint8 NHWC, the storage form of every rendered image."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def run_tune(ctx: Context, name: str, shard: int) -> None:
    paths = ctx.paths
    shards = unit_shards(ctx.cfg, name)
    if not 0 <= shard < len(shards):
        raise LinkstyleError(
            f"unit shard {shard} out of range: classifier '{name}' has {len(shards)} unit shards (0..{len(shards) - 1}) "
            "with the config's tune.units and tune.units_per_shard"
        )
    made = ctx.origin("tune", classifier=name, shard=shard)
    tune_units(ctx, name, shards[shard], paths.tune_table(name, shard), paths.tune_arrays(name, shard), made,
               label=f"tune {name} shard {shard}")
    ctx.wrote(paths.tune_arrays(name, shard), paths.tune_table(name, shard))


def tune_units(ctx: Context, name: str, units: Sequence[int], table_path: Path, arrays_path: Path,
               made: Origin | None = None, label: str = "tune") -> None:
    """A tune job's work: sweep ``units`` and write the table and the arrays, the images streamed to disk
    batch by batch, so the job's memory does not grow with its number of units (bench/bench_scale.py)."""
    with NpzWriter(arrays_path, made) as sink:
        out, arrays = sweep_units(ctx, name, units, label=label, sink=sink)
        for key, values in arrays.items():
            sink.put(key, values)
        sink.close()
    write_parquet(out, table_path, made)  # the table last, as the workflow has always written them


class _Collected:
    """What the rendered batches of one plan leave behind: the per-image arrays (streamed to a sink, or
    kept in memory) and the per-image columns of the tune table."""

    def __init__(self, n: int, start_cls: np.ndarray, start_index: np.ndarray, sink: NpzWriter | None) -> None:
        self.n, self.start_cls, self.start_index, self.sink = n, start_cls, start_index, sink
        self.per_image: dict[str, np.ndarray] = {}  # without a sink: the per-image arrays, in memory
        self.declared: set[str] = set()
        self.realised = np.empty(n, dtype=np.float32)
        self.pred = np.empty(n, dtype=np.int64)
        self.prob_cls = np.empty(n, dtype=np.float32)
        self.factors: np.ndarray | None = None  # the ground-truth factors go to the table, not the arrays
        self.factor_names: tuple[str, ...] = ()
        self.part_names: tuple[str, ...] = ()

    def store(self, key: str, sl: slice, values: np.ndarray) -> None:
        """Rows of a per-image array: into the sink, or into memory."""
        if self.sink is not None:
            if key not in self.declared:
                self.sink.declare(key, (self.n, *values.shape[1:]), values.dtype)
                self.declared.add(key)
            self.sink.write(key, sl, values)
            return
        if key not in self.per_image:
            self.per_image[key] = np.empty((self.n, *values.shape[1:]), dtype=values.dtype)
        self.per_image[key][sl] = values

    def __call__(self, batch: Rendered) -> None:
        sl = batch.sl
        self.realised[sl], self.pred[sl] = batch.realised, batch.pred
        cls = torch.from_numpy(self.start_cls[self.start_index[sl]]).to(batch.probs.device)
        self.prob_cls[sl] = batch.probs.gather(1, cls[:, None])[:, 0].cpu().numpy()
        self.store("images", sl, to_uint8(batch.images))
        self.store("w", sl, batch.w.float().cpu().numpy())
        truth = batch.truth
        if truth is not None:
            self.factor_names, self.part_names = truth.factor_names, truth.part_names
            if self.factors is None:
                self.factors = np.empty((self.n, truth.factors.shape[1]), dtype=np.float32)
            self.factors[sl] = truth.factors.float().cpu().numpy()
            self.store("masks", sl, truth.masks.cpu().numpy().astype(np.uint8, copy=False))

    def table(self, plan: SweepPlan, start_seed: np.ndarray, r2: np.ndarray) -> pd.DataFrame:
        """The tune table: one row per image (unit, start, step), with the ground-truth factors if any."""
        u_idx, k_idx, s_idx = plan.unit_index, plan.step_index, self.start_index
        out = pd.DataFrame(
            {
                "unit": plan.units[u_idx],
                "start": s_idx,
                "start_seed": start_seed[s_idx],
                "cls": self.start_cls[s_idx],
                "step": k_idx,
                "target": plan.values[u_idx, k_idx],
                "realised": self.realised,
                "pred": self.pred,
                "prob_cls": self.prob_cls,
                "unit_r2": r2[u_idx].astype(np.float32),
            }
        )
        if self.factors is not None:
            for j, fname in enumerate(self.factor_names):
                out[f"factor__{fname}"] = self.factors[:, j]
        return out

    def arrays(self, plan: SweepPlan) -> dict[str, np.ndarray]:
        """The tune arrays: each image's unit, start and step, the part names, and the per-image arrays
        that did not go to the sink."""
        extra = {"part_names": np.array(self.part_names)} if self.factors is not None else {}
        result = dict(unit=plan.units[plan.unit_index], start=self.start_index, step=plan.step_index, **extra)
        result.update(self.per_image)  # images, w and (with ground truth) masks, unless they went to the sink
        return result


def sweep_units(ctx: Context, name: str, unit_list: Sequence[int], label: str = "tune",
                sink: NpzWriter | None = None, max_starts: int | None = None,
                direction: str | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Sweep these units (any of the classifier's, in any grouping): the tune table and arrays of one shard.

    The sweeps themselves are :mod:`linkstyle.sweep`'s (direction ``tune.direction``); this reads their
    inputs and collects their outputs. With a ``sink``, the per-image arrays (images, w, masks) go to
    it batch by batch and are left out of the returned arrays. ``max_starts`` sweeps from the first
    start samples only (one suffices to look at a unit; the tune stage uses all of them); ``direction``
    overrides ``tune.direction`` (to compare the directions of one unit)."""
    cfg = ctx.cfg
    table, arrays = read_select(ctx, name)
    starts = table.index[table["start"]].to_numpy()[:max_starts]
    start_seed, start_cls = table["seed"].to_numpy()[starts], table["cls"].to_numpy()[starts]
    link = load_link(ctx, name, dims={"units": arrays["r"].shape[1], "w_dim": arrays["w"].shape[1]})
    train = (table["split"] == "train").to_numpy()
    linked = (arrays["r"][train], arrays["w"][train], table["cls"].to_numpy()[train])
    plan, r2 = plan_sweeps(direction or cfg.tune.direction, link, linked, arrays["r"][starts], unit_list,
                           arrays["unit_low"], arrays["unit_high"], cfg.tune.n_steps)
    collected = _Collected(plan.n_images, start_cls, plan.start_index, sink)
    with progress(plan.n_images, label) as bar:
        render_sweeps(plan, ctx.generator, ctx.classifier(name), ctx.device, cfg.precision, cfg.tune.batch_size,
                      collected, bar.update)
    return collected.table(plan, start_seed, r2), collected.arrays(plan)
