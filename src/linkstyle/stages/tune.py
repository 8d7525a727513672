"""Sweep each unit of a shard over its observed range, all other units fixed, and render.

For unit u, start sample s and step k the target features are ``r_s`` with unit u set to
``linspace(low_u, high_u, n_steps)[k]``; the link maps them to ``w``, the generator renders,
and the classifier's own response to the rendered image (the *realised* activation)
is recorded, so every sweep carries its own faithfulness check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import LinkstyleError
from ..io import NpzWriter, Origin, write_parquet
from ..runtime import autocast, progress, run_batched
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


@torch.inference_mode()
def sweep_units(ctx: Context, name: str, unit_list: Sequence[int], label: str = "tune",
                sink: NpzWriter | None = None, max_starts: int | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Sweep these units (any of the classifier's, in any grouping): the tune table and arrays of one shard.

    With a ``sink``, the per-image arrays (images, w, masks) go to it batch by batch and are left
    out of the returned arrays. ``max_starts`` sweeps from the first start samples only (one
    suffices to look at a unit; the tune stage uses all of them for its consistency test)."""
    cfg = ctx.cfg
    units = np.asarray(unit_list, dtype=np.int64)
    table, arrays = read_select(ctx, name)
    starts = table.index[table["start"]].to_numpy()[:max_starts]
    r0 = torch.from_numpy(arrays["r"][starts].astype(np.float32))
    start_seed, start_cls = table["seed"].to_numpy()[starts], table["cls"].to_numpy()[starts]
    k = cfg.tune.n_steps
    frac = np.linspace(0.0, 1.0, k)
    low, high = arrays["unit_low"][units], arrays["unit_high"][units]
    values = torch.from_numpy((low[:, None] + (high - low)[:, None] * frac[None]).astype(np.float32))  # [U, K]

    link = load_link(ctx, name, dims={"units": arrays["r"].shape[1], "w_dim": arrays["w"].shape[1]})
    coef = torch.from_numpy(link.coef).to(ctx.device)
    intercept = torch.from_numpy(link.intercept).to(ctx.device)
    gen, clf = ctx.generator, ctx.classifier(name)

    n_u, n_s = len(units), len(starts)
    u_idx, s_idx, k_idx = (a.reshape(-1) for a in np.meshgrid(np.arange(n_u), np.arange(n_s), np.arange(k), indexing="ij"))
    n = len(u_idx)
    per_image: dict[str, np.ndarray] = {}  # without a sink: the per-image arrays, in memory
    declared: set[str] = set()

    def store(key: str, sl: slice, values: np.ndarray) -> None:
        """Rows of a per-image array: into the sink, or into memory."""
        if sink is not None:
            if key not in declared:
                sink.declare(key, (n, *values.shape[1:]), values.dtype)
                declared.add(key)
            sink.write(key, sl, values)
            return
        if key not in per_image:
            per_image[key] = np.empty((n, *values.shape[1:]), dtype=values.dtype)
        per_image[key][sl] = values

    realised = np.empty(n, dtype=np.float32)
    pred = np.empty(n, dtype=np.int64)
    prob_cls = np.empty(n, dtype=np.float32)
    factors: np.ndarray | None = None  # the ground-truth factors go to the table, not the arrays
    names_of: dict[str, tuple[str, ...]] = {}
    unit_ids = torch.from_numpy(units)

    def step(sl: slice) -> None:
        nonlocal factors
        ui, si, ki = (torch.from_numpy(a[sl]) for a in (u_idx, s_idx, k_idx))
        r = r0[si].clone()
        rows = torch.arange(len(ui))
        r[rows, unit_ids[ui]] = values[ui, ki]
        w = r.to(ctx.device, non_blocking=True) @ coef + intercept
        with autocast(ctx.device, cfg.precision):
            img, truth = gen.render(w)
            feats, logits = clf.features_and_logits(img)
        dev_rows = rows.to(ctx.device)
        realised[sl] = feats[dev_rows, unit_ids[ui].to(ctx.device)].float().cpu().numpy()
        p = logits.float().softmax(1)
        pred[sl] = p.argmax(1).cpu().numpy()
        prob_cls[sl] = p[dev_rows, torch.from_numpy(start_cls[si.numpy()]).to(ctx.device)].cpu().numpy()
        store("images", sl, to_uint8(img))
        store("w", sl, w.float().cpu().numpy())
        if truth is not None:
            names_of["factors"], names_of["parts"] = truth.factor_names, truth.part_names
            if factors is None:
                factors = np.empty((n, truth.factors.shape[1]), dtype=np.float32)
            factors[sl] = truth.factors.float().cpu().numpy()
            store("masks", sl, truth.masks.cpu().numpy().astype(np.uint8, copy=False))

    with progress(n, label) as bar:
        run_batched(n, cfg.tune.batch_size, step, bar.update, setting="tune.batch_size")
    factor_names = names_of.get("factors", ())
    part_names = names_of.get("parts", ())

    out = pd.DataFrame(
        {
            "unit": units[u_idx],
            "start": s_idx,
            "start_seed": start_seed[s_idx],
            "cls": start_cls[s_idx],
            "step": k_idx,
            "target": values.numpy()[u_idx, k_idx],
            "realised": realised,
            "pred": pred,
            "prob_cls": prob_cls,
        }
    )
    if factors is not None:
        for j, fname in enumerate(factor_names):
            out[f"factor__{fname}"] = factors[:, j]
    extra = {"part_names": np.array(part_names)} if factors is not None else {}
    result = dict(unit=out["unit"].to_numpy(), start=s_idx, step=k_idx, **extra)
    result.update(per_image)  # images, w and (with ground truth) masks, unless they went to the sink
    return out, result
