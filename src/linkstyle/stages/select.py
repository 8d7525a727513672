"""Keep the samples a classifier gets right, split them by seed, pick sweep starts, set unit bounds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..io import artifact_error, write_npz, write_parquet
from ..seeds import in_test_split
from .context import Context, log


def extract_shards(ctx: Context) -> list[tuple[int, int]]:
    return [(c, s) for c in ctx.cfg.classes for s in range(ctx.cfg.sample.shards_per_class)]


def unit_bounds(r_train: np.ndarray, bounds: str, percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The range each unit is swept over, from the samples the link was fitted on."""
    if bounds == "minmax":
        return r_train.min(0), r_train.max(0)
    lo, hi = np.percentile(r_train, percentiles, axis=0)
    return lo, hi


def run_select(ctx: Context, name: str) -> None:
    cfg, paths = ctx.cfg, ctx.paths
    tables, ws, rs = [], [], []
    for cls, shard in extract_shards(ctx):
        extracted = ctx.locate("extract_table", cls=cls, shard=shard)
        table = extracted.read()
        table = table[table["classifier"] == name].reset_index(drop=True)
        arrays = ctx.read("extract_arrays", cls=cls, shard=shard, only=("seed", "w", f"r__{name}"), dims={"n": len(table)})
        if not np.array_equal(arrays["seed"], table["seed"].to_numpy()):
            raise artifact_error(extracted.path, f"and {paths.extract_arrays(cls, shard).name} disagree on "
                                 "the order of samples", extracted.origin)
        keep = table["correct"].to_numpy()
        tables.append(table[keep])
        ws.append(arrays["w"][keep])
        rs.append(arrays[f"r__{name}"][keep])
    table = pd.concat(tables, ignore_index=True)
    w, r = np.concatenate(ws), np.concatenate(rs)
    order = np.argsort(table["seed"].to_numpy(), kind="stable")
    table, w, r = table.iloc[order].reset_index(drop=True), w[order], r[order]
    cap = cfg.select.max_per_class
    if cap is not None:
        rank = table.groupby("cls").cumcount().to_numpy()  # seeds ascend within each class
        keep = rank < cap
        short = table[keep].groupby("cls").size()
        for cls, count in short[short < cap].items():
            log.warning("classifier %s: class %s has %d correctly classified samples, fewer than select.max_per_class=%d",
                        name, cls, count, cap)
        table, w, r = table[keep].reset_index(drop=True), w[keep], r[keep]
    test = in_test_split(table["seed"].to_numpy(), cfg.select.test_fraction)
    table["split"] = np.where(test, "test", "train")
    table["start"] = False
    k = cfg.select.starts_per_class
    for cls in cfg.classes:
        idx = np.flatnonzero(test & (table["cls"].to_numpy() == cls))
        if len(idx) < k:
            raise ConfigError(
                f"classifier '{name}': class {cls} has only {len(idx)} correctly classified test samples, "
                f"fewer than select.starts_per_class={k}; raise sample.per_class (now {cfg.sample.per_class})"
            )
        table.loc[idx[:k], "start"] = True
    n_train = int((~test).sum())
    if n_train < max(cfg.link.cv_folds, 2 * len(cfg.classes)):
        raise ConfigError(f"classifier '{name}': only {n_train} correctly classified training samples; raise sample.per_class")
    low, high = unit_bounds(r[~test], cfg.tune.bounds, cfg.tune.percentiles)
    made = ctx.origin("select", classifier=name)
    write_npz(paths.select_arrays(name), made, seed=table["seed"].to_numpy(), w=w, r=r, unit_low=low, unit_high=high)
    write_parquet(table[["seed", "cls", "pred", "prob_pred", "split", "start"]], paths.select_table(name), made)
    ctx.wrote(paths.select_arrays(name), paths.select_table(name))
