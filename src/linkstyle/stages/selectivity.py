"""Per unit: how each (part, property) and each ground-truth factor changes along its sweep.

Shards are read one at a time and reduced to per-unit numbers, so memory does not grow
with the number of units. A change is last step minus first step of one sweep; per unit it
is averaged over start samples and expressed in units of the property's spread over all
swept images of the classifier (``delta_std``), which makes areas, angles and entropies
comparable. How a unit is judged (see docs/selectivity.md):

- faithful: the median over start samples of the Spearman correlation between the target
  activation and the classifier's realised activation along a sweep reaches
  ``selectivity.faithful_min_spearman``;
- selectivity index of the change vector: ``(m1 - mean_rest) / (m1 + mean_rest)`` of the
  absolute normalised changes, 0 when every (part, property) changes alike, 1 when one alone does;
- concept label ``part:property:sign`` (e.g. ``ear:area:+``) for the largest change when it is
  large enough, consistent in sign across start samples and selective enough; ``none`` otherwise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..artifacts import SELECTIVITY_RECOVERY, TUNE_TABLE, measure_table
from ..config import Config, SelectivityConfig
from ..io import artifact_error, empty_table, read_parquet, write_parquet
from ..measures import MOTION_PROPERTIES, PROPERTIES
from ..units import unit_shards
from .context import Context

#: Reported, but never a unit's label: counts are not magnitudes, and motion says that a part moved
#: (centre and shape properties say how), while being zero at the first step by definition.
UNRANKED = frozenset({"n_components", *MOTION_PROPERTIES})
FACTOR_PREFIX = "factor__"
NO_CONCEPT = "none"
#: Mask sources a measure table may hold: the configured one, and the generator's exact masks
#: alongside a learned segmenter's on the built-in world (to validate the segmenter's conclusions).
MASK_SOURCES = ("truth", "segmenter", "whole_image")


@dataclass(frozen=True)
class Selectivity:
    """The selectivity stage's three tables for one classifier (see docs/selectivity.md)."""

    features: pd.DataFrame  # one row per (unit, part, property) and per (unit, ground-truth factor)
    units: pd.DataFrame  # one row per unit
    population: pd.DataFrame  # one row per (part, property), with '*' rows for totals
    swept_iou: dict[str, float] | None = None  # per part: mean IoU of the segmenter's masks with the truth's


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


def _sweep_deltas(values: np.ndarray, axial: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """values [U, S, K, F] -> per feature: mean over starts of last - first [U, F] (NaN if no start
    has both), the number of starts that have both, and the share of those whose change has the
    sign of the mean (0 where the mean is 0 or NaN)."""
    first, last = values[:, :, 0], values[:, :, -1]
    d = last - first
    if axial.any():
        d[..., axial] = _axial_delta(first[..., axial], last[..., axial])
    ok = np.isfinite(d)
    count = ok.sum(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a part absent in every start
        mean = np.nanmean(d, axis=1)
    agree = ((np.sign(d) == np.sign(mean)[:, None]) & ok & (mean != 0)[:, None]).sum(1)
    return mean, count, agree / np.maximum(count, 1)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation along the last axis (ties get average ranks); NaN where one side is constant."""
    ra = rankdata(a, axis=-1)
    rb = rankdata(b, axis=-1)
    ra -= ra.mean(-1, keepdims=True)
    rb -= rb.mean(-1, keepdims=True)
    den = np.sqrt((ra**2).sum(-1) * (rb**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(-1) / den, np.nan)


def _faithfulness(tune: pd.DataFrame, n_units: int, n_starts: int, k: int, min_spearman: float) -> pd.DataFrame:
    """Does the classifier's own unit follow the sweep? Spearman per sweep, median over start samples."""
    target = tune["target"].to_numpy(np.float64).reshape(n_units, n_starts, k)
    real = tune["realised"].to_numpy(np.float64).reshape(n_units, n_starts, k)
    kept = (tune["pred"].to_numpy() == tune["cls"].to_numpy()).reshape(n_units, n_starts, k)
    rho = _spearman_rows(target, real)  # [U, S]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a unit whose every sweep is constant
        median = np.nanmedian(rho, axis=1)
    span = (target[:, :, -1] - target[:, :, 0]).mean(1)
    rise = (real[:, :, -1] - real[:, :, 0]).mean(1)
    return pd.DataFrame(
        {
            "faithfulness": median,
            "faithful": median >= min_spearman,  # NaN compares False: a dead unit is not faithful
            "realised_rise": rise,
            "rise_ratio": rise / np.where(span > 0, span, np.nan),
            "monotonic": (np.diff(real, axis=2) > 0).all(2).mean(1),
            "class_kept": kept.mean((1, 2)),
        }
    )


def run_selectivity(ctx: Context, name: str) -> None:
    paths = ctx.paths
    primary = primary_mask_source(ctx.cfg)
    result = summarise(ctx.cfg, _read_shards(ctx, name, primary))
    made = ctx.origin("selectivity", classifier=name)
    frames = []  # no rows: no ground truth to recover
    concepts = factor_concepts(ctx.cfg)
    if concepts is not None:
        frames.append(concept_recovery(result.units, concepts, primary, result.swept_iou))
        if primary != "truth" and ctx.cfg.measure.validate_with_truth:
            # The same analysis on exact masks: does the segmenter lead to the truth's conclusions?
            on_truth = summarise(ctx.cfg, _read_shards(ctx, name, "truth"))
            frames.append(concept_recovery(on_truth.units, concepts, "truth"))
    recovery = pd.concat(frames, ignore_index=True) if frames else empty_table(SELECTIVITY_RECOVERY)
    write_parquet(result.features, paths.selectivity_features(name), made)
    write_parquet(result.units, paths.selectivity_units(name), made)
    write_parquet(result.population.assign(classifier=name), paths.selectivity_population(name), made)
    write_parquet(recovery.assign(classifier=pd.Series([name] * len(recovery), dtype="string")),
                  paths.selectivity_recovery(name), made)
    ctx.wrote(paths.selectivity_features(name), paths.selectivity_units(name),
              paths.selectivity_population(name), paths.selectivity_recovery(name))


def primary_mask_source(cfg: Config) -> str:
    """The measure table's ``masks`` value the analysis uses: where the configured segmenter's masks came from."""
    return {"ground_truth": "truth", "learned": "segmenter", "whole_image": "whole_image"}[cfg.measure.segmenter]


def factor_concepts(cfg: Config) -> Mapping[str, tuple[tuple[str, str], ...]] | None:
    """Ground truth: which (part, property) pairs each generative factor should change; None without one."""
    if cfg.generator.kind != "critters":
        return None
    from ..generators.critters import FACTOR_CONCEPTS

    return FACTOR_CONCEPTS


def _read_shards(ctx: Context, name: str, source: str) -> Iterator[tuple[list[int], pd.DataFrame, pd.DataFrame]]:
    """Each unit shard's tune table and measure rows of one mask source, checked against each other."""
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
        held = sorted(set(meas["masks"]))
        meas = meas[meas["masks"] == source]
        if meas.empty:
            raise artifact_error(paths.measure_table(name, shard), f"holds no measures on '{source}' masks "
                                 f"(it has {held}; measure.segmenter changed since?)", made_meas)
        n_p = meas["part"].nunique()
        if len(meas) != len(tune) * n_p:
            raise artifact_error(paths.measure_table(name, shard), f"has {len(meas)} rows on '{source}' masks, expected "
                                 f"{len(tune)} images x {n_p} parts (made from another tune shard?)", made_meas)
        yield units, tune, meas


def summarise(cfg: Config, blocks: Iterable[tuple[Sequence[int], pd.DataFrame, pd.DataFrame]]) -> Selectivity:
    """Per-(unit, feature) changes and per-unit faithfulness, selectivity and labels from blocks of
    (units, tune, measure) tables of one mask source, consumed one block at a time; changes are
    scaled by each feature's spread over all blocks."""
    k = cfg.tune.n_steps
    crit = cfg.selectivity
    unit_frames, delta_blocks, count_blocks, agree_blocks = [], [], [], []
    moments = _Moments()
    feature_index: pd.DataFrame | None = None
    axial = np.zeros(0, bool)
    iou_sum: dict[str, float] = {}
    iou_n: dict[str, int] = {}
    for units, tune, meas in blocks:
        if "truth_iou" in meas and meas["truth_iou"].notna().any():
            agg = meas.groupby("part", observed=True)["truth_iou"].agg(["sum", "count"])
            for part, row in agg.iterrows():
                iou_sum[str(part)] = iou_sum.get(str(part), 0.0) + float(row["sum"])
                iou_n[str(part)] = iou_n.get(str(part), 0) + int(row["count"])
        tune = tune.sort_values(["unit", "start", "step"], kind="stable")
        parts = [p for p in meas["part"].cat.categories if p in set(meas["part"])]
        meas = meas.sort_values(["unit", "start", "step", "part"], kind="stable")
        n_u = len(units)
        n_s = tune["start"].nunique()
        n_p = len(parts)
        m_vals = meas[list(PROPERTIES)].to_numpy(np.float64).reshape(n_u, n_s, k, n_p * len(PROPERTIES))
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
        deltas, counts, agree = _sweep_deltas(values, axial)
        delta_blocks.append(deltas)
        count_blocks.append(counts)
        agree_blocks.append(agree)
        faith = _faithfulness(tune, n_u, n_s, k, crit.faithful_min_spearman)
        faith.insert(0, "unit", np.sort(np.asarray(units)))
        faith.insert(1, "n_starts", n_s)
        unit_frames.append(faith)
    if feature_index is None:
        raise ValueError("summarise: no blocks of units given")
    deltas = np.concatenate(delta_blocks)
    counts = np.concatenate(count_blocks)
    agree = np.concatenate(agree_blocks)
    scale = moments.std()
    delta_std = deltas / np.where(scale > 0, scale, np.nan)
    units_table = pd.concat(unit_frames, ignore_index=True)
    unit_ids = units_table["unit"].to_numpy()
    faithful = units_table["faithful"].to_numpy()
    n_units, n_feat = deltas.shape
    features = pd.DataFrame(
        {
            "unit": np.repeat(unit_ids, n_feat),
            "kind": np.tile(feature_index["kind"].to_numpy(), n_units),
            "part": np.tile(feature_index["part"].to_numpy(), n_units),
            "property": np.tile(feature_index["property"].to_numpy(), n_units),
            "delta": deltas.reshape(-1),
            "delta_std": delta_std.reshape(-1),
            "sign_agreement": agree.reshape(-1),
            "n_starts": counts.reshape(-1),
            "faithful": np.repeat(faithful, n_feat),
        }
    )
    labels = _labels(delta_std, agree, feature_index, crit)
    motion = _motion(deltas, feature_index)
    units_table = pd.concat([units_table, labels, motion], axis=1)
    swept_iou = {p: iou_sum[p] / iou_n[p] for p in iou_sum if iou_n[p]} or None
    return Selectivity(features, units_table, population(units_table, feature_index), swept_iou)


def _selectivity_index(mag: np.ndarray) -> np.ndarray:
    """(largest - mean of the rest) / (largest + mean of the rest) per row of non-negative magnitudes."""
    n = np.isfinite(mag).sum(1)
    m = np.where(np.isfinite(mag), mag, 0.0)
    top = m.max(1) if m.shape[1] else np.zeros(len(m))
    rest = (m.sum(1) - top) / np.maximum(n - 1, 1)
    den = top + rest
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (top - rest) / den, 0.0)


def _labels(delta_std: np.ndarray, agree: np.ndarray, index: pd.DataFrame, crit: SelectivityConfig) -> pd.DataFrame:
    """The largest measured and the largest ground-truth change per unit, its consistency, the
    selectivity index and the concept label."""
    out: dict[str, np.ndarray] = {}
    rows = np.arange(len(delta_std))
    measure_cols = np.flatnonzero(((index["kind"] == "measure") & ~index["property"].isin(UNRANKED)).to_numpy())
    factor_cols = np.flatnonzero((index["kind"] == "factor").to_numpy())
    for kind, cols in (("measure", measure_cols), ("factor", factor_cols)):
        if len(cols) == 0:
            continue
        mag = np.abs(delta_std[:, cols])
        best = np.where(np.isfinite(mag), mag, -1.0).argmax(1)
        top = cols[best]
        value = delta_std[rows, top]
        prefix = "top" if kind == "measure" else "top_factor"
        if kind == "measure":
            out["top_part"] = index["part"].to_numpy()[top]
            out["top_property"] = index["property"].to_numpy()[top]
        else:
            out["top_factor"] = index["property"].to_numpy()[top]
        out[f"{prefix}_delta_std"] = value
        out[f"{prefix}_agreement"] = agree[rows, top]
        out[f"{'' if kind == 'measure' else 'factor_'}selectivity_index"] = _selectivity_index(mag)
    if "top_part" in out:
        passes = (
            np.isfinite(out["top_delta_std"])
            & (np.abs(out["top_delta_std"]) >= crit.min_effect)
            & (out["top_agreement"] >= crit.min_sign_agreement)
            & (out["selectivity_index"] >= crit.min_selectivity)
        )
        sign = np.where(out["top_delta_std"] > 0, "+", "-")
        concept = np.char.add(np.char.add(np.char.add(out["top_part"].astype(str), ":"),
                                          np.char.add(out["top_property"].astype(str), ":")), sign)
        out["concept"] = np.where(passes, concept, NO_CONCEPT).astype(object)
        out["selective"] = passes
    return pd.DataFrame(out)


def _motion(deltas: np.ndarray, index: pd.DataFrame) -> pd.DataFrame:
    """The part that moves most along the sweep (mean flow magnitude at the last step), and where to."""
    measure = (index["kind"] == "measure").to_numpy()
    prop = index["property"].to_numpy()
    cols = {c: np.flatnonzero(measure & (prop == c)) for c in MOTION_PROPERTIES}
    if len(cols["motion"]) == 0 or len(deltas) == 0:
        return pd.DataFrame(index=range(len(deltas)))
    mag = deltas[:, cols["motion"]]  # motion is 0 at the first step: the change is the last step's value
    best = np.where(np.isfinite(mag), mag, -1.0).argmax(1)
    rows = np.arange(len(deltas))
    dx = deltas[:, cols["motion_x"]][rows, best]
    dy = deltas[:, cols["motion_y"]][rows, best]
    return pd.DataFrame(
        {
            "motion_part": index["part"].to_numpy()[cols["motion"]][best],
            "motion": mag[rows, best],
            # Counter-clockwise from the x axis with y up, as the ellipse angle; motion_y grows downwards.
            "motion_direction": np.degrees(np.arctan2(-dy, dx)) % 360.0,
        }
    )


def population(units: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Share of the units labelled with each (part, property), and '*' rows for each part, each
    property and overall; among all analysed units and among the faithful ones."""
    ranked = index[(index["kind"] == "measure") & ~index["property"].isin(UNRANKED)]
    pairs = list(zip(ranked["part"], ranked["property"]))
    parts = list(dict.fromkeys(ranked["part"]))
    props = list(dict.fromkeys(ranked["property"]))
    keys = pairs + [(p, "*") for p in parts] + [("*", q) for q in props] + [("*", "*")]
    sel = units["selective"].to_numpy() if "selective" in units else np.zeros(len(units), bool)
    faithful = units["faithful"].to_numpy()
    part = units.get("top_part", pd.Series([""] * len(units))).to_numpy()
    prop = units.get("top_property", pd.Series([""] * len(units))).to_numpy()
    n, n_f = len(units), int(faithful.sum())
    rows = []
    for p, q in keys:
        hit = sel & ((part == p) | (p == "*")) & ((prop == q) | (q == "*"))
        rows.append({"part": p, "property": q, "n_units": n, "n_faithful": n_f,
                     "n_selective": int(hit.sum()), "n_selective_faithful": int((hit & faithful).sum())})
    table = pd.DataFrame(rows)
    table["share"] = table["n_selective"] / max(n, 1)
    table["share_faithful"] = np.where(n_f > 0, table["n_selective_faithful"] / max(n_f, 1), np.nan)
    return table


def concept_recovery(units: pd.DataFrame, concepts: Mapping[str, tuple[tuple[str, str], ...]], masks: str,
                     swept_iou: Mapping[str, float] | None = None, permutations: int = 200, seed: int = 0) -> pd.DataFrame:
    """How often the image-domain label names what the ground truth says changed.

    For every labelled unit, its dominant ground-truth factor (largest normalised change) gives the
    (part, property) pairs that factor should change (``concepts``). Part agreement: the label's
    part is one of them; concept agreement: its (part, property) is. Rows per truth part (the
    factor's first part) and 'all'; ``chance_*`` is the agreement expected if labels and factors
    were unrelated (labels permuted across units, mean of ``permutations`` draws). ``swept_iou``
    (segmenter masks only): the mean IoU of its masks with the exact ones on the swept images, per
    part and (row 'all') over parts.
    """
    lab = units[units["selective"].to_numpy()] if "selective" in units else units.iloc[:0]
    factor = lab["top_factor"].to_numpy() if "top_factor" in lab else np.array([], object)
    part, prop = lab["top_part"].to_numpy(), lab["top_property"].to_numpy()

    def agreement(part: np.ndarray, prop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pm = np.array([p in {c[0] for c in concepts.get(f, ())} for f, p in zip(factor, part)], bool)
        cm = np.array([(p, q) in set(concepts.get(f, ())) for f, p, q in zip(factor, part, prop)], bool)
        return pm, cm

    part_match, concept_match = agreement(part, prop)
    rng = np.random.default_rng(seed)
    chance_p = np.zeros(len(lab))
    chance_c = np.zeros(len(lab))
    for _ in range(permutations if len(lab) else 0):
        perm = rng.permutation(len(lab))
        pm, cm = agreement(part[perm], prop[perm])
        chance_p += pm
        chance_c += cm
    chance_p /= max(permutations, 1)
    chance_c /= max(permutations, 1)
    truth_part = np.array([concepts[f][0][0] if f in concepts else "" for f in factor], object)
    rows = []
    groups = [("all", np.ones(len(lab), bool))] + [(p, truth_part == p) for p in dict.fromkeys(c[0][0] for c in concepts.values())]
    for name, sel in groups:
        n = int(sel.sum())
        rows.append({
            "masks": masks, "part": name, "n_units": len(units), "n_labelled": n,
            "part_agreement": float(part_match[sel].mean()) if n else np.nan,
            "concept_agreement": float(concept_match[sel].mean()) if n else np.nan,
            "chance_part_agreement": float(chance_p[sel].mean()) if n else np.nan,
            "chance_concept_agreement": float(chance_c[sel].mean()) if n else np.nan,
            "swept_iou": (float(np.mean(list(swept_iou.values()))) if name == "all" else swept_iou.get(name, np.nan))
            if swept_iou else np.nan,
        })
    return pd.DataFrame(rows)


def top_units(units: pd.DataFrame, n: int) -> pd.DataFrame:
    """The units whose sweep changes one measured property most and most selectively: faithful and
    labelled ones first, then faithful ones, then the rest (so the figure is never empty)."""
    score = units["top_delta_std"].abs().fillna(0.0) * units["selectivity_index"]
    tier = units["faithful"].astype(int) * 2 + units["selective"].astype(int)
    ranked = units.assign(score=score, tier=tier).sort_values(["tier", "score", "unit"], ascending=[False, False, True])
    return ranked.head(n)
