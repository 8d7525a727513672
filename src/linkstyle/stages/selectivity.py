"""Per unit: how each (part, property) and each ground-truth factor changes along its sweep.

Shards are read one at a time and reduced to per-unit numbers, so memory does not grow
with the number of units. Changes are last step minus first step, averaged over start
samples, and also expressed in units of the property's spread over all swept images
(``delta_std``), which makes areas, angles and entropies comparable.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from ..artifacts import TUNE_TABLE, measure_table
from ..config import Config
from ..io import artifact_error, read_parquet, write_parquet
from ..measures import PROPERTIES
from ..units import unit_shards
from .context import Context

#: Reported, but never chosen as a unit's label: counts are not magnitudes, and motion (zero at the
#: first step by definition) says that a part moved, not what about it changed.
UNRANKED = frozenset({"n_components", "motion"})
FACTOR_PREFIX = "factor__"


class _Moments:
    """NaN-aware running mean/variance per column, merged unit by unit.

    Each unit's rows are summed on their own and added to the totals one unit at a time, in unit
    order: the float64 sums are then the same however the units are split into shards.
    """

    def __init__(self) -> None:
        self.n = self.s = self.ss = None

    def add(self, x: np.ndarray) -> None:
        """``x`` [units, rows per unit, columns]."""
        ok = np.isfinite(x)
        xz = np.where(ok, x, 0.0).astype(np.float64)
        n, s, ss = ok.sum(1), xz.sum(1), (xz**2).sum(1)
        for u in range(x.shape[0]):
            if self.n is None:
                self.n, self.s, self.ss = n[u], s[u], ss[u]
            else:
                self.n, self.s, self.ss = self.n + n[u], self.s + s[u], self.ss + ss[u]

    def std(self) -> np.ndarray:
        n = np.maximum(self.n, 1)
        var = self.ss / n - (self.s / n) ** 2
        return np.sqrt(np.maximum(var, 0.0))


def _axial_delta(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Change of an angle defined modulo 180 degrees, in [-90, 90)."""
    return (last - first + 90.0) % 180.0 - 90.0


def _sweep_deltas(values: np.ndarray, axial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values [U, S, K, F] -> mean over starts of last - first [U, F] (NaN if no start has both), and the count."""
    first, last = values[:, :, 0], values[:, :, -1]
    d = last - first
    if axial.any():
        d[..., axial] = _axial_delta(first[..., axial], last[..., axial])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a part absent in every start
        return np.nanmean(d, axis=1), np.isfinite(d).sum(1)


def _faithfulness(tune: pd.DataFrame, n_units: int, n_starts: int, k: int) -> pd.DataFrame:
    """Does the classifier's own unit follow the sweep? Per unit over its S x K images.

    The correlation is taken within each start sample (start means removed): starts differ
    in their baseline activation, which says nothing about whether the sweep moves the unit.
    """
    target = tune["target"].to_numpy().reshape(n_units, n_starts, k)
    real = tune["realised"].to_numpy().reshape(n_units, n_starts, k)
    kept = (tune["pred"].to_numpy() == tune["cls"].to_numpy()).reshape(n_units, n_starts, k)
    tc = target - target.mean(2, keepdims=True)
    rc = real - real.mean(2, keepdims=True)
    den = np.sqrt((tc**2).sum((1, 2)) * (rc**2).sum((1, 2)))
    corr = np.where(den > 0, (tc * rc).sum((1, 2)) / np.maximum(den, 1e-12), np.nan)
    span = (target[:, :, -1] - target[:, :, 0]).mean(1)
    rise = (real[:, :, -1] - real[:, :, 0]).mean(1)
    return pd.DataFrame(
        {
            "realised_corr": corr,
            "realised_rise": rise,
            "rise_ratio": rise / np.where(span > 0, span, np.nan),
            "monotonic": (np.diff(real, axis=2) > 0).all(2).mean(1),
            "class_kept": kept.mean((1, 2)),
        }
    )


def run_selectivity(ctx: Context, name: str) -> None:
    paths = ctx.paths
    features, units_table = summarise(ctx.cfg, _read_shards(ctx, name))
    made = ctx.origin("selectivity", classifier=name)
    write_parquet(features, paths.selectivity_features(name), made)
    write_parquet(units_table, paths.selectivity_units(name), made)
    ctx.wrote(paths.selectivity_features(name), paths.selectivity_units(name))


def _read_shards(ctx: Context, name: str) -> Iterator[tuple[list[int], pd.DataFrame, pd.DataFrame]]:
    """Each unit shard's tune and measure tables, checked against each other, one shard at a time."""
    paths, k = ctx.paths, ctx.cfg.tune.n_steps
    for shard, units in enumerate(unit_shards(ctx.cfg, name)):
        made_tune = ctx.origin("tune", classifier=name, shard=shard)
        made_meas = ctx.origin("measure", classifier=name, shard=shard)
        tune = read_parquet(paths.tune_table(name, shard), origin=made_tune, schema=TUNE_TABLE)
        meas = read_parquet(paths.measure_table(name, shard), origin=made_meas, schema=measure_table())
        n_s = tune["start"].nunique()
        found = sorted(int(u) for u in tune["unit"].unique())
        if len(tune) != len(units) * n_s * k or found != sorted(units):
            raise artifact_error(paths.tune_table(name, shard), f"has {len(tune)} rows of units {found}, "
                                 f"expected units {units} x {n_s} starts x {k} steps", made_tune)
        n_p = len(meas["part"].cat.categories)
        if len(meas) != len(tune) * n_p:
            raise artifact_error(paths.measure_table(name, shard), f"has {len(meas)} rows, expected {len(tune)} images x "
                                 f"{n_p} parts (made from another tune shard?)", made_meas)
        yield units, tune, meas


def summarise(cfg: Config, blocks: Iterable[tuple[Sequence[int], pd.DataFrame, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-(unit, feature) changes and per-unit faithfulness and labels from blocks of (units, tune, measure)
    tables, consumed one block at a time; changes are scaled by each feature's spread over all blocks."""
    k = cfg.tune.n_steps
    unit_frames, delta_blocks, count_blocks = [], [], []
    moments = _Moments()
    feature_index: pd.DataFrame | None = None
    for units, tune, meas in blocks:
        tune = tune.sort_values(["unit", "start", "step"], kind="stable")
        meas = meas.sort_values(["unit", "start", "step", "part"], kind="stable")
        n_u = len(units)
        n_s = tune["start"].nunique()
        n_p = len(meas["part"].cat.categories)
        parts = list(meas["part"].cat.categories)
        m_vals = meas[list(PROPERTIES)].to_numpy(np.float64).reshape(n_u, n_s, k, n_p, len(PROPERTIES))
        m_vals = m_vals.reshape(n_u, n_s, k, n_p * len(PROPERTIES))
        factor_cols = [c for c in tune.columns if c.startswith(FACTOR_PREFIX)]
        f_vals = tune[factor_cols].to_numpy(np.float64).reshape(n_u, n_s, k, len(factor_cols))
        values = np.concatenate([m_vals, f_vals], axis=3)
        if feature_index is None:
            feature_index = pd.DataFrame(
                {
                    "kind": ["measure"] * (n_p * len(PROPERTIES)) + ["factor"] * len(factor_cols),
                    "part": [p for p in parts for _ in PROPERTIES] + [""] * len(factor_cols),
                    "property": list(PROPERTIES) * n_p + [c[len(FACTOR_PREFIX):] for c in factor_cols],
                }
            )
            axial = (feature_index["property"] == "angle").to_numpy() & (feature_index["kind"] == "measure").to_numpy()
        moments.add(values.reshape(n_u, -1, values.shape[-1]))
        deltas, counts = _sweep_deltas(values, axial)
        delta_blocks.append(deltas)
        count_blocks.append(counts)
        faith = _faithfulness(tune, n_u, n_s, k)
        faith.insert(0, "unit", np.sort(np.asarray(units)))
        unit_frames.append(faith)
    if feature_index is None:
        raise ValueError("summarise: no blocks of units given")
    deltas = np.concatenate(delta_blocks)
    counts = np.concatenate(count_blocks)
    scale = moments.std()
    delta_std = deltas / np.where(scale > 0, scale, np.nan)
    units_table = pd.concat(unit_frames, ignore_index=True)
    unit_ids = units_table["unit"].to_numpy()
    n_units, n_feat = deltas.shape
    features = pd.DataFrame(
        {
            "unit": np.repeat(unit_ids, n_feat),
            "kind": np.tile(feature_index["kind"].to_numpy(), n_units),
            "part": np.tile(feature_index["part"].to_numpy(), n_units),
            "property": np.tile(feature_index["property"].to_numpy(), n_units),
            "delta": deltas.reshape(-1),
            "delta_std": delta_std.reshape(-1),
            "n_starts": counts.reshape(-1),
        }
    )
    labels = _labels(delta_std, feature_index)
    return features, pd.concat([units_table, labels], axis=1)


def _labels(delta_std: np.ndarray, index: pd.DataFrame) -> pd.DataFrame:
    """Strongest measured and strongest ground-truth change per unit, and how concentrated it is."""
    out = {}
    for kind, mask in (
        ("measure", (index["kind"] == "measure") & ~index["property"].isin(UNRANKED)),
        ("factor", index["kind"] == "factor"),
    ):
        cols = np.flatnonzero(mask.to_numpy())
        if len(cols) == 0:
            continue
        mag = np.abs(delta_std[:, cols])
        mag = np.where(np.isfinite(mag), mag, 0.0)
        best = mag.argmax(1)
        top = cols[best]
        names = (index["part"] + "." + index["property"]).to_numpy() if kind == "measure" else index["property"].to_numpy()
        out[f"top_{kind}"] = names[top]
        out[f"top_{kind}_delta_std"] = delta_std[np.arange(len(top)), top]
        total = mag.sum(1)
        out[f"{kind}_selectivity"] = np.where(total > 0, mag.max(1) / np.maximum(total, 1e-12), 0.0)
    return pd.DataFrame(out)
