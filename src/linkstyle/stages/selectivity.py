"""The selectivity stage: read every shard of a classifier, explain each unit (:mod:`linkstyle.selectivity`), write.

Shards are read one at a time and reduced to per-unit numbers, so memory does not grow with the
number of units. On the built-in world the labels are scored against the ground truth (concept
recovery), with the configured masks and, to validate the segmenter, with the exact ones; a
classifier with planted units is scored against what was planted.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import pandas as pd

from ..artifacts import SELECTIVITY_RECOVERY
from ..config import Config
from ..io import artifact_error, empty_table, write_parquet
from ..seeds import derive
from ..selectivity import (
    Selectivity,
    concept_recovery,
    label_agreement,
    label_agreement_settled,
    label_in_top3,
    planted_recovery,
    settled_share,
    summarise,
    top_units,
)
from ..units import unit_shards
from .context import Context

__all__ = ["run_selectivity", "analyse", "primary_mask_source", "factor_concepts", "read_spread", "top_units", "factor_periods",
           "MASK_SOURCES"]

#: Mask sources a measure table may hold: the configured one, and the generator's exact masks
#: alongside a learned segmenter's on the built-in world (to validate the segmenter's conclusions).
MASK_SOURCES = ("truth", "segmenter", "whole_image")


def run_selectivity(ctx: Context, name: str) -> None:
    paths, cfg = ctx.paths, ctx.cfg
    primary = primary_mask_source(cfg)
    result = analyse(ctx, name, primary)
    made = ctx.origin("selectivity", classifier=name)
    frames = []  # no rows: no ground truth to recover
    concepts = factor_concepts(cfg)
    analyses = {primary: result}
    if concepts is not None and primary != "truth" and cfg.measure.validate_with_truth:
        # The same analysis on exact masks: does the segmenter lead to the truth's conclusions?
        analyses["truth"] = analyse(ctx, name, "truth")
    if concepts is not None:
        for source, res in analyses.items():
            rec = concept_recovery(res.units, concepts, source, res.swept_iou if source == primary else None,
                                   res.explanations)
            other = analyses.get("truth") if source != "truth" else None
            rec["label_agreement_with_truth"] = label_agreement(res.units, other.units) if other is not None else float("nan")
            rec["label_in_truth_top3"] = (label_in_top3(res.units, other.units, other.explanations) if other is not None
                                          else float("nan"))
            rec["settled_share"] = settled_share(res.units)
            rec["label_agreement_settled"] = (label_agreement_settled(res.units, other.units) if other is not None
                                              else float("nan"))
            frames.append(rec)
    recovery = pd.concat(frames, ignore_index=True) if frames else empty_table(SELECTIVITY_RECOVERY)
    spec = planted_spec(ctx, name)
    planted = pd.concat([planted_recovery(res.units, res.explanations, spec, source) for source, res in analyses.items()],
                        ignore_index=True) if spec else None
    write_parquet(result.features, paths.selectivity_features(name), made)
    write_parquet(result.units, paths.selectivity_units(name), made)
    write_parquet(result.explanations, paths.selectivity_explanations(name), made)
    write_parquet(result.population.assign(classifier=name), paths.selectivity_population(name), made)
    write_parquet(recovery.assign(classifier=pd.Series([name] * len(recovery), dtype="string")),
                  paths.selectivity_recovery(name), made)
    write_parquet(planted if planted is not None else planted_recovery(result.units, result.explanations, [], primary),
                  paths.selectivity_planted(name), made)
    ctx.wrote(paths.selectivity_features(name), paths.selectivity_units(name), paths.selectivity_explanations(name),
              paths.selectivity_population(name), paths.selectivity_recovery(name), paths.selectivity_planted(name))


def analyse(ctx: Context, name: str, source: str) -> Selectivity:
    """Every unit of classifier ``name`` explained on the masks of ``source``."""
    cfg = ctx.cfg
    spread = read_spread(ctx, name)
    mine = spread[spread["masks"] == source]
    if mine.empty:
        raise artifact_error(ctx.paths.reference_spread(name), f"holds no spreads on '{source}' masks (it has "
                             f"{sorted(set(spread['masks']))}; measure.segmenter changed since?)", ctx.origin("reference", classifier=name))
    return summarise(cfg.selectivity, cfg.tune.n_steps, _read_shards(ctx, name, source), mine,
                     derive(cfg.seed, "selectivity", name) % 2**63, factor_periods(cfg))


def read_spread(ctx: Context, name: str) -> pd.DataFrame:
    """The reference stage's spread of every (mask source, part, property) and factor."""
    return ctx.read("reference_spread", classifier=name)


def planted_spec(ctx: Context, name: str) -> list[dict]:
    """What each planted unit of a 'planted' classifier encodes by construction; [] for other kinds."""
    if ctx.cfg.classifier(name).kind != "planted":
        return []
    from ..classifiers.planted import check_planted_spec

    found = ctx.locate("planted_spec", classifier=name)
    return check_planted_spec(found.read(), found.path, found.origin)


def primary_mask_source(cfg: Config) -> str:
    """The measure table's ``masks`` value the analysis uses: where the configured segmenter's masks came from."""
    return {"ground_truth": "truth", "learned": "segmenter", "whole_image": "whole_image"}[cfg.measure.segmenter]


def factor_concepts(cfg: Config) -> Mapping[str, tuple[tuple[str, str], ...]] | None:
    """Ground truth: which (part, property) pairs each generative factor should change; None without one."""
    if not cfg.generator.has_ground_truth:
        return None
    from ..generators.critters import FACTOR_CONCEPTS

    return FACTOR_CONCEPTS


def factor_periods(cfg: Config) -> Mapping[str, float]:
    """Ground-truth factors that are circular (hues), with their period; none without ground truth."""
    if not cfg.generator.has_ground_truth:
        return {}
    from ..generators.critters import CIRCULAR_FACTORS

    return CIRCULAR_FACTORS


def _read_shards(ctx: Context, name: str, source: str) -> Iterator[tuple[list[int], pd.DataFrame, pd.DataFrame]]:
    """Each unit shard's tune table and measure rows of one mask source, checked against each other."""
    paths, k = ctx.paths, ctx.cfg.tune.n_steps
    for shard, units in enumerate(unit_shards(ctx.cfg, name)):
        tuned, measured = (ctx.locate(kind, classifier=name, shard=shard) for kind in ("tune_table", "measure_table"))
        made_tune, made_meas = tuned.origin, measured.origin
        tune, meas = tuned.read(), measured.read()
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
