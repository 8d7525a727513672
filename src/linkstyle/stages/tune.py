"""Sweep each unit of a shard over its observed range, all other units fixed, and render.

For unit u, start sample s and step k the target features are ``r_s`` with unit u set to
``linspace(low_u, high_u, n_steps)[k]``; the link maps them to ``w``, the generator renders,
and the classifier's own response to the rendered image (the *realised* activation)
is recorded, so every sweep carries its own faithfulness check.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import LinkstyleError
from ..io import write_npz, write_parquet
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
    out, arrays = sweep_units(ctx, name, shards[shard], label=f"tune {name} shard {shard}")
    made = ctx.origin("tune", classifier=name, shard=shard)
    write_npz(paths.tune_arrays(name, shard), made, **arrays)
    write_parquet(out, paths.tune_table(name, shard), made)
    ctx.wrote(paths.tune_arrays(name, shard), paths.tune_table(name, shard))


@torch.inference_mode()
def sweep_units(ctx: Context, name: str, unit_list: Sequence[int], label: str = "tune") -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Sweep these units (any of the classifier's, in any grouping): the tune table and arrays of one shard."""
    cfg = ctx.cfg
    units = np.asarray(unit_list, dtype=np.int64)
    table, arrays = read_select(ctx, name)
    starts = table.index[table["start"]].to_numpy()
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
    res = gen.resolution
    images = np.empty((n, res, res, 3), dtype=np.uint8)
    w_out = np.empty((n, gen.w_dim), dtype=np.float32)
    realised = np.empty(n, dtype=np.float32)
    pred = np.empty(n, dtype=np.int64)
    prob_cls = np.empty(n, dtype=np.float32)
    truth_arrays: dict[str, np.ndarray] = {}
    names_of: dict[str, tuple[str, ...]] = {}
    unit_ids = torch.from_numpy(units)

    def step(sl: slice) -> None:
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
        images[sl] = to_uint8(img)
        w_out[sl] = w.float().cpu().numpy()
        if truth is not None:
            if not truth_arrays:
                truth_arrays["masks"] = np.empty((n, res, res), dtype=np.uint8)
                truth_arrays["factors"] = np.empty((n, truth.factors.shape[1]), dtype=np.float32)
                names_of["factors"], names_of["parts"] = truth.factor_names, truth.part_names
            truth_arrays["masks"][sl] = truth.masks.cpu().numpy()
            truth_arrays["factors"][sl] = truth.factors.float().cpu().numpy()

    with progress(n, label) as bar:
        run_batched(n, cfg.tune.batch_size, step, bar.update, setting="tune.batch_size")
    masks = truth_arrays.get("masks")
    factors = truth_arrays.get("factors")
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
    extra = {"masks": masks, "part_names": np.array(part_names)} if masks is not None else {}
    return out, dict(unit=out["unit"].to_numpy(), start=s_idx, step=k_idx, w=w_out, images=images, **extra)
