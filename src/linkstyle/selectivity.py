"""Step 4 of the paper, quantified: what each unit's sweeps change, as a ranked explanation.

For every unit, every (part, property) of the measured images and every ground-truth factor, the
*change* of one sweep is its last step minus its first (circular for angles and hues). A unit's
*effect* on a feature is the mean change over its start samples divided by the feature's spread
over the *reference images* (linked held-out samples, stage ``reference``): a standardised effect
size (Cohen's d with a fixed reference spread), comparable across areas, angles and colours, and a
function of the unit alone: it does not depend on which other units are analysed or how they are
sharded. The explanation of a unit (docs/selectivity.md):

- each effect gets a bootstrap over the unit's start samples (seeded by the unit): a percentile
  interval and a *confidence*, the share of resamples in which the change keeps its sign and its
  effect reaches ``selectivity.min_effect``;
- the ranked list holds the (part, property, sign) whose |effect| reaches ``min_effect`` with
  confidence at least ``min_confidence``, largest first; the label is its first item, ``none``
  when nothing stands out;
- faithfulness: the Spearman correlation of target and realised activation along each sweep, and
  the *gain*, realised change / target change, so that a sweep that barely moves its own unit
  is flagged (``weak_sweep``) even when its rank correlation is perfect.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .artifacts import SELECTIVITY_EXPLANATIONS, SELECTIVITY_PLANTED
from .config import SelectivityConfig
from .io import empty_table
from .measures import MOTION_PROPERTIES
from .seeds import derive

#: Reported, but never part of an explanation: counts are not magnitudes, and motion says that a part
#: moved (centre and shape properties say how), while being zero at the first step by definition.
UNRANKED = frozenset({"n_components", *MOTION_PROPERTIES})
#: The backdrop's shape is the complement of the foreground parts' (its area, centroid and ellipse
#: move only because a part in front of it moves), so it names no change of its own: it enters
#: no explanation, while its colour, luminance and texture do.
BACKDROP = "background"
GEOMETRY = frozenset({"area", "eccentricity", "angle", "center_x", "center_y", "width", "height"})
#: Circular properties and their period: angles are axial (mod 180 degrees), hues mod 360.
PERIODS: dict[str, float] = {"angle": 180.0, "hue": 360.0}
FACTOR_PREFIX = "factor__"
#: Relative spread below which a property counts as constant over the reference images.
NEGLIGIBLE = 1e-6
NO_CONCEPT = "none"
#: A label is *settled* when it is the largest change in more than this share of bootstrap resamples.
SETTLED = 0.5
#: Circular changes this close (a share of the period) to half the period count as a half turn.
HALF_TURN_TOLERANCE = 1e-6


def circular_difference(first: np.ndarray, last: np.ndarray, period: float) -> np.ndarray:
    """``last - first`` of a quantity defined modulo ``period``, the shorter way round, in
    (-period / 2, period / 2); NaN for a turn by half the period, which has no direction.

    Such turns are common: a 2 x 3 pixel eye whose moment ellipse turns from 0 to 90 degrees (an
    axial angle, period 180) as it moves by a pixel. Taken as -90 (the modulo's end of the range),
    15% of the eye's and the nose's sweeps on RegNet turned by exactly -90 degrees, so their mean
    change was -13 degrees where the turns themselves have no sign."""
    d = (last - first + period / 2) % period - period / 2
    return np.where(np.abs(d + period / 2) <= HALF_TURN_TOLERANCE * period, np.nan, d)


def spread(values: np.ndarray, period: float | None = None) -> float:
    """The spread of one property over reference images (NaN entries left out): the standard
    deviation, or for a circular property the circular standard deviation sqrt(-2 ln R) in the
    property's own units (Mardia & Jupp, 2000, 2.3.11)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan")
    if period is None:
        sd = float(x.std())
        # A property that does not vary over the data (the entropy of parts that are always flat) has no
        # scale to measure a change in: NaN, not a division by rounding noise.
        return sd if sd > NEGLIGIBLE * max(1.0, float(np.abs(x).max())) else float("nan")
    theta = x * (2 * np.pi / period)
    r = np.hypot(np.cos(theta).mean(), np.sin(theta).mean())
    sd = float(np.sqrt(-2.0 * np.log(min(max(r, 1e-12), 1.0))) * period / (2 * np.pi))
    return sd if sd > NEGLIGIBLE * period else float("nan")


@dataclass(frozen=True)
class Features:
    """The features a unit's sweeps are described by: measured (part, property) pairs, then factors."""

    kind: np.ndarray  # 'measure' or 'factor'
    part: np.ndarray  # '' for factors
    prop: np.ndarray  # property or factor name
    scale: np.ndarray  # spread over the reference images
    factor_periods: Mapping[str, float] = field(default_factory=dict)  # circular factors (e.g. hues) and their period

    @property
    def periods(self) -> np.ndarray:
        """The period of each circular feature (NaN elsewhere): what spreads over images are taken modulo."""
        table = {"measure": PERIODS, "factor": self.factor_periods}
        return np.array([table[k].get(p, np.nan) for k, p in zip(self.kind, self.prop)], np.float64)

    @property
    def change_periods(self) -> np.ndarray:
        """The period a sweep's change is taken modulo: a measured angle or hue's, none for factors.

        A ground-truth factor is an exact, continuous function of ``w`` along the sweep's straight
        line (the world's hue is the sigmoid of a linear function of ``w``: it turns monotonically and
        never jumps at the wheel's seam), so its plain last-minus-first difference is how far it
        turned. Taken modulo 1, a hue probe's sweep 0.08 -> 0.49 -> 0.92 of the wheel read as a turn
        of -0.16 instead of +0.84. A measured angle is known only modulo its period at every step.
        """
        return np.where(self.kind == "factor", np.nan, self.periods)

    @property
    def ranked(self) -> np.ndarray:
        """Columns that may enter an explanation."""
        derived = (self.part == BACKDROP) & np.isin(self.prop, list(GEOMETRY))
        return np.flatnonzero((self.kind == "measure") & ~np.isin(self.prop, list(UNRANKED)) & ~derived)

    @property
    def factors(self) -> np.ndarray:
        return np.flatnonzero(self.kind == "factor")

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"kind": self.kind, "part": self.part, "property": self.prop})


def sweep_changes(values: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """values [U, S, K, F] -> the change of each sweep [U, S, F], last step minus first."""
    first, last = values[:, :, 0], values[:, :, -1]
    d = last - first
    for period in np.unique(periods[np.isfinite(periods)]):
        cols = periods == period
        d[..., cols] = circular_difference(first[..., cols], last[..., cols], period)
    return d


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a part absent in every start
        return np.nanmean(x, axis=axis)


@dataclass(frozen=True)
class Effects:
    """Per unit and feature: the mean standardised change, its bootstrap interval and confidence."""

    delta: np.ndarray  # [U, F] mean raw change over starts
    effect: np.ndarray  # [U, F] delta / reference spread
    ci_low: np.ndarray
    ci_high: np.ndarray
    confidence: np.ndarray  # share of resamples with the same sign and |effect| >= min_effect
    agreement: np.ndarray  # share of starts whose change has the mean's sign
    n_starts: np.ndarray  # starts where the feature is defined at both ends
    lead: np.ndarray  # share of resamples in which the feature has the largest |effect| of ``ranked`` (NaN elsewhere)


def effects(changes: np.ndarray, scale: np.ndarray, units: Sequence[int], crit: SelectivityConfig,
            seed: int, ranked: np.ndarray | None = None) -> Effects:
    """Standardised effects of ``changes`` [U, S, F] (per start) with a bootstrap per unit, whose
    resampling is seeded by (seed, unit) so that a unit's numbers never depend on its neighbours.

    ``ranked``: the columns that compete for a unit's label; for each, the share of resamples in
    which it is the largest of them (``lead``): how settled the label's first place is."""
    ok = np.isfinite(changes)
    count = ok.sum(1)
    delta = _nanmean(changes, 1)
    std = changes / np.where(scale > 0, scale, np.nan)
    effect = delta / np.where(scale > 0, scale, np.nan)
    agree = ((np.sign(changes) == np.sign(delta)[:, None]) & ok & (delta != 0)[:, None]).sum(1) / np.maximum(count, 1)
    n_u, n_s, n_f = changes.shape
    lo, hi, conf, lead = (np.full((n_u, n_f), np.nan) for _ in range(4))
    ranked = np.arange(n_f) if ranked is None else np.asarray(ranked, np.int64)
    for i, unit in enumerate(units):
        rng = np.random.default_rng(derive(seed, "bootstrap", int(unit)) % 2**63)
        idx = rng.integers(0, n_s, size=(crit.bootstrap, n_s))
        boot = _nanmean(std[i][idx], 1)  # [B, F]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo[i], hi[i] = np.nanpercentile(boot, [2.5, 97.5], axis=0)
        same = (np.sign(boot) == np.sign(effect[i])) & (np.abs(boot) >= crit.min_effect)
        conf[i] = np.where(np.isfinite(effect[i]), same.mean(0), np.nan)
        if len(ranked):
            size = np.abs(boot[:, ranked])
            first = np.where(np.isfinite(size), size, -1.0).argmax(1)  # ties: the first column, as in the label
            lead[i, ranked] = np.bincount(first, minlength=len(ranked)) / len(first)
    return Effects(delta, effect, lo, hi, conf, agree, count, lead)


def selectivity_index(mag: np.ndarray) -> np.ndarray:
    """(largest - mean of the rest) / (largest + mean of the rest) per row of non-negative magnitudes.

    Rows are summed column by column: numpy's sum along rows orders its additions by the array's
    shape, and a unit's index must not depend on how many units share its table."""
    n = np.isfinite(mag).sum(1)
    m = np.where(np.isfinite(mag), mag, 0.0)
    top = m.max(1) if m.shape[1] else np.zeros(len(m))
    total = np.zeros(len(m))
    for column in m.T:
        total += column
    rest = (total - top) / np.maximum(n - 1, 1)
    den = top + rest
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (top - rest) / den, 0.0)


def concept_name(part: str, prop: str, sign: float) -> str:
    return f"{part}:{prop}:{'+' if sign > 0 else '-'}"


def explanations(units: Sequence[int], eff: Effects, feats: Features, crit: SelectivityConfig) -> pd.DataFrame:
    """The ranked explanation of every unit: one row per (unit, rank), at most ``max_concepts`` each."""
    cols = feats.ranked
    rows = []
    for i, unit in enumerate(units):
        e, c = eff.effect[i, cols], eff.confidence[i, cols]
        keep = np.isfinite(e) & (np.abs(e) >= crit.min_effect) & (c >= crit.min_confidence)
        order = cols[keep][np.argsort(-np.abs(e[keep]), kind="stable")][: crit.max_concepts]
        for rank, j in enumerate(order, start=1):
            rows.append((int(unit), rank, str(feats.part[j]), str(feats.prop[j]), "+" if eff.effect[i, j] > 0 else "-",
                         eff.effect[i, j], eff.ci_low[i, j], eff.ci_high[i, j], eff.confidence[i, j]))
    if not rows:
        return empty_table(SELECTIVITY_EXPLANATIONS)
    table = pd.DataFrame(rows, columns=["unit", "rank", "part", "property", "sign", "effect", "ci_low", "ci_high",
                                        "confidence"])
    table["concept"] = (table["part"] + ":" + table["property"] + ":" + table["sign"]).astype(object)
    return table.astype({"unit": np.int64, "rank": np.int64, "effect": np.float64, "ci_low": np.float64,
                         "ci_high": np.float64, "confidence": np.float64})


def unit_labels(units: Sequence[int], eff: Effects, feats: Features, explained: pd.DataFrame,
                crit: SelectivityConfig) -> pd.DataFrame:
    """Per unit: the largest measured change and the largest ground-truth change, the selectivity
    index, and the label (the explanation's first item, or ``none``)."""
    out: dict[str, np.ndarray] = {}
    rows = np.arange(len(units))
    for kind, cols in (("measure", feats.ranked), ("factor", feats.factors)):
        if len(cols) == 0:
            continue
        mag = np.abs(eff.effect[:, cols])
        top = cols[np.where(np.isfinite(mag), mag, -1.0).argmax(1)]
        prefix = "top" if kind == "measure" else "top_factor"
        if kind == "measure":
            out["top_part"], out["top_property"] = feats.part[top], feats.prop[top]
            out["top_confidence"] = eff.confidence[rows, top]
        else:
            out["top_factor"] = feats.prop[top]
        out[f"{prefix}_delta_std"] = eff.effect[rows, top]
        out[f"{prefix}_agreement"] = eff.agreement[rows, top]
        out[f"{'' if kind == 'measure' else 'factor_'}selectivity_index"] = selectivity_index(mag)
    first = explained[explained["rank"] == 1].set_index("unit")["concept"]
    label = pd.Series([first.get(int(u), NO_CONCEPT) for u in units], dtype=object).to_numpy()
    if "selectivity_index" in out and crit.min_selectivity > 0:
        label = np.where(out["selectivity_index"] >= crit.min_selectivity, label, NO_CONCEPT)
    lists = explained.groupby("unit")["concept"].apply(lambda c: "; ".join(c))
    counts = explained.groupby("unit").size()
    out["concept"] = label.astype(object)
    out["label_share"] = label_share(label, eff, feats)
    out["selective"] = label != NO_CONCEPT
    out["concepts"] = np.array([lists.get(int(u), "") for u in units], dtype=object)
    out["n_concepts"] = np.array([int(counts.get(int(u), 0)) for u in units], dtype=np.int64)
    return pd.DataFrame(out)


def label_share(label: np.ndarray, eff: Effects, feats: Features) -> np.ndarray:
    """Per unit, the share of bootstrap resamples of its start samples in which its label's property
    has the largest |effect| of all rankable properties: near 1 for a settled first place, low where
    properties that move together (an eye and its head) tie and a few starts decide; NaN for ``none``."""
    column = {(p, q): j for j, (k, p, q) in enumerate(zip(feats.kind, feats.part, feats.prop)) if k == "measure"}
    out = np.full(len(label), np.nan)
    for i, concept in enumerate(label):
        if concept != NO_CONCEPT:
            part, prop, _ = split_concept(str(concept))
            out[i] = eff.lead[i, column[(part, prop)]]
    return out


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation along the last axis (ties get average ranks); NaN where one side is constant."""
    ra = rankdata(a, axis=-1)
    rb = rankdata(b, axis=-1)
    ra -= ra.mean(-1, keepdims=True)
    rb -= rb.mean(-1, keepdims=True)
    den = np.sqrt((ra**2).sum(-1) * (rb**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(-1) / den, np.nan)


def faithfulness(target: np.ndarray, real: np.ndarray, kept: np.ndarray, crit: SelectivityConfig) -> pd.DataFrame:
    """Does the classifier's own unit follow the sweep? ``target``, ``real``, ``kept`` [U, S, K]."""
    from .sweep import gain

    rho = spearman_rows(target, real)  # [U, S]
    g = gain(target, real)  # [U, S]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a unit whose every sweep is constant
        median = np.nanmedian(rho, axis=1)
        median_gain = np.nanmedian(g, axis=1)
    span = (target[:, :, -1] - target[:, :, 0]).mean(1)
    rise = (real[:, :, -1] - real[:, :, 0]).mean(1)
    return pd.DataFrame(
        {
            "faithfulness": median,
            "faithful": median >= crit.faithful_min_spearman,  # NaN compares False: a dead unit is not faithful
            "realised_rise": rise,
            "rise_ratio": rise / np.where(span > 0, span, np.nan),
            "gain": median_gain,
            "weak_sweep": ~(median_gain >= crit.min_gain),  # NaN (dead unit) counts as weak
            "monotonic": (np.diff(real, axis=2) > 0).all(2).mean(1),
            "class_kept": kept.mean((1, 2)),
        }
    )


def motion(deltas: np.ndarray, feats: Features) -> pd.DataFrame:
    """The part that moves most along the sweep (mean flow magnitude at the last step), and where to."""
    measure = feats.kind == "measure"
    cols = {c: np.flatnonzero(measure & (feats.prop == c)) for c in MOTION_PROPERTIES}
    if any(len(c) == 0 for c in cols.values()) or len(deltas) == 0:
        return pd.DataFrame(index=range(len(deltas)))
    mag = deltas[:, cols["motion"]]  # motion is 0 at the first step: the change is the last step's value
    best = np.where(np.isfinite(mag), mag, -1.0).argmax(1)
    rows = np.arange(len(deltas))
    dx = deltas[:, cols["motion_x"]][rows, best]
    dy = deltas[:, cols["motion_y"]][rows, best]
    return pd.DataFrame(
        {
            "motion_part": feats.part[cols["motion"]][best],
            "motion": mag[rows, best],
            # Counter-clockwise from the x axis with y up, as the ellipse angle; motion_y grows downwards.
            "motion_direction": np.degrees(np.arctan2(-dy, dx)) % 360.0,
        }
    )


@dataclass(frozen=True)
class Block:
    """One shard's worth of sweeps: values [U, S, K, F] of every feature, and the tune table's activations."""

    units: np.ndarray
    values: np.ndarray
    target: np.ndarray  # [U, S, K]
    realised: np.ndarray
    kept: np.ndarray  # the rendering kept the start's class
    unit_r2: np.ndarray | None = None


@dataclass(frozen=True)
class UnitResults:
    """What one block of units yields; blocks are concatenated in unit order."""

    features: pd.DataFrame
    units: pd.DataFrame
    explanations: pd.DataFrame


def analyse_block(block: Block, feats: Features, crit: SelectivityConfig, seed: int) -> UnitResults:
    """Everything the selectivity stage says about these units, from their sweeps alone."""
    changes = sweep_changes(block.values, feats.change_periods)
    eff = effects(changes, feats.scale, block.units, crit, seed, feats.ranked)
    n_u, n_f = eff.effect.shape
    units = block.units
    faith = faithfulness(block.target, block.realised, block.kept, crit)
    faith.insert(0, "unit", units)
    faith.insert(1, "n_starts", block.values.shape[1])
    if block.unit_r2 is not None:
        faith["unit_r2"] = block.unit_r2
    explained = explanations(units, eff, feats, crit)
    labels = unit_labels(units, eff, feats, explained, crit)
    table = pd.concat([faith, labels, motion(eff.delta, feats)], axis=1)
    features = pd.DataFrame(
        {
            "unit": np.repeat(units, n_f),
            "kind": np.tile(feats.kind, n_u),
            "part": np.tile(feats.part, n_u),
            "property": np.tile(feats.prop, n_u),
            "delta": eff.delta.reshape(-1),
            "delta_std": eff.effect.reshape(-1),
            "ci_low": eff.ci_low.reshape(-1),
            "ci_high": eff.ci_high.reshape(-1),
            "confidence": eff.confidence.reshape(-1),
            "sign_agreement": eff.agreement.reshape(-1),
            "n_starts": eff.n_starts.reshape(-1),
            "faithful": np.repeat(faith["faithful"].to_numpy(), n_f),
        }
    )
    return UnitResults(features, table, explained)


def population(units: pd.DataFrame, feats: Features) -> pd.DataFrame:
    """Share of the units labelled with each (part, property), and '*' rows for each part, each
    property and overall; among all analysed units and among the faithful ones."""
    cols = feats.ranked
    pairs = list(zip(feats.part[cols], feats.prop[cols]))
    parts = list(dict.fromkeys(feats.part[cols]))
    props = list(dict.fromkeys(feats.prop[cols]))
    keys = pairs + [(p, "*") for p in parts] + [("*", q) for q in props] + [("*", "*")]
    sel = units["selective"].to_numpy() if "selective" in units else np.zeros(len(units), bool)
    faithful = units["faithful"].to_numpy()
    label = units["concept"].astype(str).str.split(":") if "concept" in units else pd.Series([[]] * len(units))
    part = np.array([c[0] if len(c) == 3 else "" for c in label], object)
    prop = np.array([c[1] if len(c) == 3 else "" for c in label], object)
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


def split_concept(concept: str) -> tuple[str, str, str]:
    part, prop, sign = (concept.split(":") + ["", "", ""])[:3]
    return part, prop, sign


def concept_recovery(units: pd.DataFrame, concepts: Mapping[str, tuple[tuple[str, str], ...]], masks: str,
                     swept_iou: Mapping[str, float] | None = None, explained: pd.DataFrame | None = None,
                     permutations: int = 200, seed: int = 0) -> pd.DataFrame:
    """How often the image-domain label names what the ground truth says changed.

    For every labelled unit, its dominant ground-truth factor (largest standardised change) gives the
    (part, property) pairs that factor should change (``concepts``). Part agreement: the label's
    part is one of them; concept agreement: its (part, property) is; top-3 concept agreement: one of
    the first three items of the unit's explanation is. Rows per truth part (the factor's first
    part) and 'all'; ``chance_*`` is the agreement expected if labels and factors were unrelated
    (labels permuted across units, mean of ``permutations`` draws; for the top 3, each unit's first three
    items permuted with its label: lists of more varied items meet more factors by chance). ``swept_iou`` (segmenter masks
    only): the mean IoU of its masks with the exact ones on the swept images, per part and (row
    'all') over parts.
    """
    lab = units[units["selective"].to_numpy()] if "selective" in units else units.iloc[:0]
    factor = lab["top_factor"].to_numpy() if "top_factor" in lab else np.array([], object)
    split = [split_concept(str(c)) for c in lab["concept"]] if "concept" in lab else []
    part = np.array([s[0] for s in split], object)
    prop = np.array([s[1] for s in split], object)

    def agreement(part: np.ndarray, prop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pm = np.array([p in {c[0] for c in concepts.get(f, ())} for f, p in zip(factor, part)], bool)
        cm = np.array([(p, q) in set(concepts.get(f, ())) for f, p, q in zip(factor, part, prop)], bool)
        return pm, cm

    part_match, concept_match = agreement(part, prop)
    factor_pairs = [set(concepts.get(f, ())) for f in factor]
    first3: list[set] = [set() for _ in range(len(lab))]
    if explained is not None and len(lab):
        listed = explained[explained["rank"] <= 3].groupby("unit")[["part", "property"]].apply(
            lambda g: set(zip(g["part"], g["property"])))
        first3 = [listed.get(int(u), set()) for u in lab["unit"]]
    top3 = np.array([bool(a & b) for a, b in zip(first3, factor_pairs)], bool)
    rng = np.random.default_rng(seed)
    chance_p = np.zeros(len(lab))
    chance_c = np.zeros(len(lab))
    chance_3 = np.zeros(len(lab))
    for _ in range(permutations if len(lab) else 0):
        perm = rng.permutation(len(lab))
        pm, cm = agreement(part[perm], prop[perm])
        chance_p += pm
        chance_c += cm
        # the same permutation moves each unit's whole list with its label
        chance_3 += np.array([bool(first3[j] & b) for j, b in zip(perm, factor_pairs)], bool)
    chance_p /= max(permutations, 1)
    chance_c /= max(permutations, 1)
    chance_3 /= max(permutations, 1)
    truth_part = np.array([concepts[f][0][0] if f in concepts else "" for f in factor], object)
    rows = []
    groups = [("all", np.ones(len(lab), bool))] + [(p, truth_part == p) for p in dict.fromkeys(c[0][0] for c in concepts.values())]
    for name, sel in groups:
        n = int(sel.sum())
        rows.append({
            "masks": masks, "part": name, "n_units": len(units), "n_labelled": n,
            "part_agreement": float(part_match[sel].mean()) if n else np.nan,
            "concept_agreement": float(concept_match[sel].mean()) if n else np.nan,
            "top3_concept_agreement": float(top3[sel].mean()) if n and explained is not None else np.nan,
            "chance_part_agreement": float(chance_p[sel].mean()) if n else np.nan,
            "chance_concept_agreement": float(chance_c[sel].mean()) if n else np.nan,
            "chance_top3_concept_agreement": float(chance_3[sel].mean()) if n and explained is not None else np.nan,
            "swept_iou": (float(np.mean(list(swept_iou.values()))) if name == "all" else swept_iou.get(name, np.nan))
            if swept_iou else np.nan,
        })
    return pd.DataFrame(rows)


def label_agreement(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Share of the units labelled in either analysis (e.g. learned vs exact masks) whose labels are the same."""
    la = a.set_index("unit")["concept"]
    lb = b.set_index("unit")["concept"].reindex(la.index)
    either = (la != NO_CONCEPT) | (lb != NO_CONCEPT)
    return float((la[either] == lb[either]).mean()) if either.any() else float("nan")


def settled(units: pd.DataFrame) -> np.ndarray:
    """Labelled units whose label is the largest change in most bootstrap resamples (``label_share``
    above one half): first places that a few start samples or a few pixels cannot flip."""
    share = units["label_share"].to_numpy(np.float64)
    return (units["concept"].to_numpy() != NO_CONCEPT) & (np.nan_to_num(share) > SETTLED)


def settled_share(units: pd.DataFrame) -> float:
    """Share of the labelled units whose label is settled (NaN when none is labelled)."""
    labelled = units["concept"].to_numpy() != NO_CONCEPT
    return float(settled(units)[labelled].mean()) if labelled.any() else float("nan")


def label_agreement_settled(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """:func:`label_agreement` over the units whose label is settled in both analyses (beside it, not
    instead of it): how often two mask sources agree where neither label is a near-tie."""
    both = pd.Series(settled(a), index=a["unit"].to_numpy()) & pd.Series(settled(b), index=b["unit"].to_numpy())
    keep = both[both].index
    return label_agreement(a[a["unit"].isin(keep)], b[b["unit"].isin(keep)]) if len(keep) else float("nan")


def label_in_top3(units: pd.DataFrame, other: pd.DataFrame, other_explained: pd.DataFrame) -> float:
    """Share of the units labelled in either analysis whose label is the other's or among the other's
    first three explanation items (``none`` matches ``none`` only).

    Beside :func:`label_agreement`, not instead of it: the first item is an argmax, and measures that
    move together (an eye and the head it sits in) make near-ties that small mask errors flip."""
    la = units.set_index("unit")["concept"]
    lb = other.set_index("unit")["concept"].reindex(la.index)
    first3 = other_explained[other_explained["rank"] <= 3].groupby("unit")["concept"].apply(set)
    either = ((la != NO_CONCEPT) | (lb != NO_CONCEPT)).to_numpy()
    hit = np.array([a == b or a in first3.get(int(u), set()) for u, a, b in zip(la.index, la, lb)], bool)
    return float(hit[either].mean()) if either.any() else float("nan")


def planted_recovery(units: pd.DataFrame, explained: pd.DataFrame, spec: Sequence[Mapping], masks: str) -> pd.DataFrame:
    """Planted units (classifier kind 'planted'): does the label name the planted property? One row per
    planted unit: its expected (part, property, sign) triples, the label, whether it is one of them,
    and the rank of the first explanation item that is (0: none)."""
    labels = units.set_index("unit")["concept"]
    rows = []
    for item in spec:
        unit = int(item["unit"])
        expected = {tuple(t) for t in item["expected"]}
        label = str(labels.get(unit, NO_CONCEPT))
        mine = explained[explained["unit"] == unit].sort_values("rank")
        ranks = [int(r.rank) for r in mine.itertuples() if (r.part, r.property, r.sign) in expected]
        rows.append({"masks": masks, "unit": unit, "name": str(item["name"]), "group": str(item.get("group", "")),
                     "kind": str(item.get("kind", "")), "label": label, "hit": split_concept(label) in expected,
                     "hit_rank": ranks[0] if ranks else 0,
                     "expected": "; ".join(":".join(t) for t in sorted(expected))})
    return pd.DataFrame(rows) if rows else empty_table(SELECTIVITY_PLANTED)


def top_units(units: pd.DataFrame, n: int) -> pd.DataFrame:
    """The units whose sweep changes one measured property most and most selectively: faithful and
    labelled ones first, then faithful ones, then the rest (so the figure is never empty)."""
    score = units["top_delta_std"].abs().fillna(0.0) * units["selectivity_index"]
    tier = units["faithful"].astype(int) * 2 + units["selective"].astype(int)
    ranked = units.assign(score=score, tier=tier).sort_values(["tier", "score", "unit"], ascending=[False, False, True])
    return ranked.head(n)


def concat_results(parts: Iterable[UnitResults]) -> UnitResults:
    parts = list(parts)
    if not parts:
        raise ValueError("no blocks of units given")
    explained = [p.explanations for p in parts if len(p.explanations)] or [parts[0].explanations]
    return UnitResults(pd.concat([p.features for p in parts], ignore_index=True),
                       pd.concat([p.units for p in parts], ignore_index=True),
                       pd.concat(explained, ignore_index=True))


@dataclass(frozen=True)
class Selectivity:
    """The selectivity stage's tables for one classifier and mask source (see docs/selectivity.md)."""

    features: pd.DataFrame  # one row per (unit, part, property) and per (unit, ground-truth factor)
    units: pd.DataFrame  # one row per unit
    explanations: pd.DataFrame  # one row per (unit, rank)
    population: pd.DataFrame  # one row per (part, property), with '*' rows for totals
    swept_iou: dict[str, float] | None = None  # per part: mean IoU of the segmenter's masks with the truth's


def feature_space(parts: Sequence[str], properties: Sequence[str], factors: Sequence[str],
                  spread_table: pd.DataFrame, factor_periods: Mapping[str, float] | None = None) -> Features:
    """The measured (part, property) pairs, then the factors, each with its reference spread
    (``spread_table``: columns kind, part, property, spread, as the reference stage writes them)."""
    kind = np.array(["measure"] * (len(parts) * len(properties)) + ["factor"] * len(factors), dtype=object)
    part = np.array([p for p in parts for _ in properties] + [""] * len(factors), dtype=object)
    prop = np.array(list(properties) * len(parts) + list(factors), dtype=object)
    lookup = {(k, p, q): s for k, p, q, s in spread_table[["kind", "part", "property", "spread"]].itertuples(index=False)}
    scale = np.array([lookup.get((k, p, q), np.nan) for k, p, q in zip(kind, part, prop)], np.float64)
    return Features(kind, part, prop, scale, dict(factor_periods or {}))


def block_of(units: Sequence[int], tune: pd.DataFrame, meas: pd.DataFrame, properties: Sequence[str],
             n_steps: int) -> tuple[Block, list[str], list[str]]:
    """A shard's tune table and measure rows (one mask source) as arrays; also its parts and factors."""
    tune = tune.sort_values(["unit", "start", "step"], kind="stable")
    parts = [p for p in meas["part"].cat.categories if p in set(meas["part"])]
    meas = meas.sort_values(["unit", "start", "step", "part"], kind="stable")
    n_u, n_s, k = len(units), tune["start"].nunique(), n_steps
    m_vals = meas[list(properties)].to_numpy(np.float64).reshape(n_u, n_s, k, len(parts) * len(properties))
    factor_cols = [c for c in tune.columns if c.startswith(FACTOR_PREFIX)]
    f_vals = tune[factor_cols].to_numpy(np.float64).reshape(n_u, n_s, k, len(factor_cols))

    def grid(col: str) -> np.ndarray:
        return tune[col].to_numpy(np.float64).reshape(n_u, n_s, k)

    kept = (tune["pred"].to_numpy() == tune["cls"].to_numpy()).reshape(n_u, n_s, k)
    r2 = tune["unit_r2"].to_numpy(np.float64).reshape(n_u, -1)[:, 0] if "unit_r2" in tune else None
    block = Block(np.sort(np.asarray(units, np.int64)), np.concatenate([m_vals, f_vals], axis=3), grid("target"),
                  grid("realised"), kept, r2)
    return block, parts, [c[len(FACTOR_PREFIX):] for c in factor_cols]


def summarise(crit: SelectivityConfig, n_steps: int, blocks: Iterable[tuple[Sequence[int], pd.DataFrame, pd.DataFrame]],
              spread_table: pd.DataFrame, seed: int, factor_periods: Mapping[str, float] | None = None) -> Selectivity:
    """Per-(unit, feature) effects, per-unit faithfulness, gain and explanations from blocks of
    (units, tune, measure) tables of one mask source, consumed one block at a time. Every number of
    a unit comes from its own sweeps and the reference spreads: blocks can be cut any way."""
    from .measures import PROPERTIES

    results: list[UnitResults] = []
    feats: Features | None = None
    iou_sum: dict[str, float] = {}
    iou_n: dict[str, int] = {}
    for units, tune, meas in blocks:
        if "truth_iou" in meas and meas["truth_iou"].notna().any():
            agg = meas.groupby("part", observed=True)["truth_iou"].agg(["sum", "count"])
            for part, row in agg.iterrows():
                iou_sum[str(part)] = iou_sum.get(str(part), 0.0) + float(row["sum"])
                iou_n[str(part)] = iou_n.get(str(part), 0) + int(row["count"])
        block, parts, factors = block_of(units, tune, meas, PROPERTIES, n_steps)
        if feats is None:
            feats = feature_space(parts, PROPERTIES, factors, spread_table, factor_periods)
        results.append(analyse_block(block, feats, crit, seed))
    if feats is None:
        raise ValueError("summarise: no blocks of units given")
    out = concat_results(results)
    swept_iou = {p: iou_sum[p] / iou_n[p] for p in iou_sum if iou_n[p]} or None
    return Selectivity(out.features, out.units, out.explanations, population(out.units, feats), swept_iou)


def reference_spread(measures: pd.DataFrame, factors: pd.DataFrame | None, properties: Sequence[str],
                     factor_periods: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The spread of every (mask source, part, property) over the reference images (``measures``: one
    row per image, source and part, as the measure table without unit/start/step), and of every
    ground-truth factor (``factors``: one column per factor), in the reference stage's table format."""
    rows = []
    for (source, part), group in measures.groupby(["masks", "part"], observed=True, sort=False):
        for prop in properties:
            values = group[prop].to_numpy(np.float64)
            rows.append({"masks": str(source), "kind": "measure", "part": str(part), "property": prop,
                         "spread": spread(values, PERIODS.get(prop)), "n": int(np.isfinite(values).sum())})
    sources = list(dict.fromkeys(str(s) for s in measures["masks"]))
    if factors is not None:
        for source in sources:
            for col in factors.columns:
                values = factors[col].to_numpy(np.float64)
                rows.append({"masks": source, "kind": "factor", "part": "", "property": str(col),
                             "spread": spread(values, (factor_periods or {}).get(str(col))),
                             "n": int(np.isfinite(values).sum())})
    return pd.DataFrame(rows, columns=["masks", "kind", "part", "property", "spread", "n"])
