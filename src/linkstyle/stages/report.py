"""The report stage: reads the run's artifacts, draws the figures (figures.py), writes a self-contained
report.html and summary.json with the run's headline numbers."""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..artifacts import SELECTIVITY_RECOVERY, figure_caption, report_inputs, unit_sweep_images
from ..config import ClassifierConfig, Config
from ..figures import (
    figure_actmax,
    figure_counterfactuals,
    figure_directions,
    figure_linking,
    figure_pair_matrix,
    figure_population,
    figure_population_compare,
    figure_recovery,
    figure_selectivity,
    figure_sweeps,
)
from ..io import empty_table, missing_error, write_json, write_text
from ..pages import Template
from ..selectivity import top_units
from ..units import TRAINED_BY_WORKFLOW, analysed_units, counterfactual_classifiers, unit_count
from .actmax import read_actmax
from .context import Context
from .counterfactual import label_drivers, read_counterfactual_images, read_counterfactuals


def sweep_images(ctx: Context, name: str, units: list[int], starts: int = 2) -> dict[int, np.ndarray]:
    """Images [starts, steps, H, W, 3] of each requested unit, read shard by shard."""
    order = analysed_units(ctx.cfg, name)
    per = ctx.cfg.tune.units_per_shard
    by_shard: dict[int, list[int]] = {}
    for u in units:
        by_shard.setdefault(order.index(u) // per, []).append(u)
    out: dict[int, np.ndarray] = {}
    k = ctx.cfg.tune.n_steps
    for shard, wanted in by_shard.items():
        arrays = ctx.read("tune_arrays", classifier=name, shard=shard)
        for u in wanted:
            imgs = unit_sweep_images(arrays, u, starts)
            out[u] = imgs.reshape(-1, k, *imgs.shape[1:])
    return out


def actmax_summary(table: pd.DataFrame, bench_dir: Path, name: str, units_swept: int) -> dict[str, Any]:
    """How high activation maximisation drives its units, and (under ``timing``: it varies from run to run)
    its cost per unit beside linking's, both as job wall time per unit, start-up included."""
    ratio = table["activation"] / table["observed_high"].where(table["observed_high"] > 0)
    actmax_s, tune_s = job_seconds(bench_dir, "actmax", name), job_seconds(bench_dir, "tune", name)
    per_unit = actmax_s / len(table) if actmax_s and len(table) else None
    linking = tune_s / units_swept if tune_s and units_swept else None
    return {
        "units": int(len(table)),
        "steps": int(table["steps"].iloc[0]) if len(table) else None,
        "median_activation_over_sweep_top": float(ratio.median()) if ratio.notna().any() else None,
        "timing": {
            "actmax_job_seconds_per_unit": per_unit,
            "tune_job_seconds_per_unit": linking,
            "ratio": per_unit / linking if per_unit and linking else None,
        },
    }


def counterfactual_summary(metrics: dict[str, Any], drivers: pd.DataFrame, top: int = 3) -> dict[str, Any]:
    """Headline numbers per classifier, and per pair its success and its top driving units with labels."""
    pairs = []
    for p in metrics["pairs"]:
        mine = drivers[(drivers["origin"] == p["origin"]) & (drivers["target"] == p["target"])].head(top)
        pairs.append({
            "pair": f"{p['origin_name']} -> {p['target_name']}", "items": p["items"], "success_rate": p["success_rate"],
            "median_steps": p["median_steps"], "median_image_distance": p["median_image_distance_successful"],
            "factor_cosine": p.get("factor_cosine"), "top_factor_overlap": p.get("top_factor_overlap"),
            "drivers": [{"unit": int(d.unit), "fraction": float(d.fraction), "concept": str(d.concept)} for d in mine.itertuples()],
        })
    cosines = [p["factor_cosine"] for p in pairs if p["factor_cosine"] is not None and math.isfinite(p["factor_cosine"])]
    return {
        "logits_from": metrics["logits_from"], "items": metrics["items"], "success_rate": metrics["success_rate"],
        "min_pair_success_rate": metrics["min_pair_success_rate"], "median_steps": metrics["median_steps"],
        "mean_factor_cosine": float(np.mean(cosines)) if cosines else None, "pairs": pairs,
    }


def _benchmark_row(tsv: Path) -> pd.Series:
    """The last (latest) row of one job's Snakemake benchmark file."""
    return pd.read_csv(tsv, sep="\t").iloc[-1]


def stage_timing(bench_dir: Path) -> dict[str, dict[str, float]]:
    """Wall time summed over jobs and the largest resident memory, per rule (from Snakemake's benchmarks)."""
    out: dict[str, dict[str, float]] = {}
    for tsv in sorted(bench_dir.glob("*/*.tsv")):
        row = _benchmark_row(tsv)
        entry = out.setdefault(tsv.parent.name, {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
        entry["jobs"] += 1
        entry["seconds"] += float(row["s"])
        rss = pd.to_numeric(row.get("max_rss"), errors="coerce")
        if np.isfinite(rss):
            entry["max_rss_mb"] = max(entry["max_rss_mb"], float(rss))
    return out


def job_seconds(bench_dir: Path, rule: str, classifier: str) -> float | None:
    """Wall time of one classifier's jobs of ``rule``, summed (None before any ran under Snakemake)."""
    files = sorted((bench_dir / rule).glob(f"{classifier}-*.tsv")) + sorted((bench_dir / rule).glob(f"{classifier}.tsv"))
    return sum(float(_benchmark_row(f)["s"]) for f in files) if files else None


def sweep_summary(cfg: Config, units: pd.DataFrame, actmax_arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """How far the sweeps move their own units (gain = realised change / target change); with the
    actmax stage's arrays, the median gain of the report's units along each direction (one start)."""
    compared = None
    if actmax_arrays is not None and "direction_gain" in actmax_arrays:
        compared = {str(mode): (float(np.nanmedian(g)) if np.isfinite(g).any() else None)
                    for mode, g in zip(actmax_arrays["directions"], actmax_arrays["direction_gain"])}
    return {
        "direction": cfg.tune.direction,
        "report_units_median_gain_by_direction": compared,
        "median_gain": float(units["gain"].median()),
        "weak_sweep_share": float(units["weak_sweep"].mean()),
        "median_gain_faithful": float(units.loc[units["faithful"], "gain"].median()) if units["faithful"].any() else None,
        "median_concepts": float(units["n_concepts"].median()),
    }


def planted_summary(planted: pd.DataFrame) -> dict[str, Any] | None:
    """Classifier kind 'planted': the share of planted units whose label (and top-3 list) names what was planted."""
    if planted.empty:
        return None
    out: dict[str, Any] = {}
    for masks, rows in planted.groupby("masks", sort=False):
        out[str(masks)] = {
            "n_planted": int(len(rows)),
            "label_accuracy": float(rows["hit"].mean()),
            "top3_accuracy": float(((rows["hit_rank"] >= 1) & (rows["hit_rank"] <= 3)).mean()),
            "by_unit": {r.name: {"label": r.label, "hit": bool(r.hit), "hit_rank": int(r.hit_rank)} for r in rows.itertuples()},
        }
    return out


def require_inputs(ctx: Context) -> None:
    """Every artifact the report rule declares (artifacts.report_inputs), checked before any figure is
    drawn: a missing one names the stage that makes it (and how to run it), and nothing is redrawn from
    half the inputs."""
    for needed in report_inputs(ctx.cfg):
        if not needed.path.is_file():
            raise missing_error(needed.path, ctx.origin(needed.stage, **needed.wildcards))


#: A figure of report.html: its title, its kind (whose caption it carries) and its PNG.
Figure = tuple[str, str, bytes]


@dataclass
class Selectivity:
    """One classifier's tables from the selectivity stage."""

    units: pd.DataFrame
    features: pd.DataFrame
    population: pd.DataFrame
    recovery: pd.DataFrame
    planted: pd.DataFrame


@dataclass
class Drawn:
    """What the report has drawn and gathered so far, classifier by classifier."""

    figures: list[Figure]
    classifiers: dict[str, dict[str, Any]] = field(default_factory=dict)  # summary.json's, per classifier
    unit_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    units: dict[str, pd.DataFrame] = field(default_factory=dict)
    populations: dict[str, pd.DataFrame] = field(default_factory=dict)
    recoveries: list[pd.DataFrame] = field(default_factory=list)
    resolution: int = 0


def read_selectivity(ctx: Context, name: str) -> Selectivity:
    return Selectivity(**{part: ctx.read(f"selectivity_{part}", classifier=name)
                          for part in ("units", "features", "population", "recovery", "planted")})


def run_report(ctx: Context) -> None:
    cfg, paths = ctx.cfg, ctx.paths
    link_metrics = {c.name: ctx.read("link_metrics", classifier=c.name) for c in cfg.classifiers}
    require_inputs(ctx)
    drawn = Drawn([("Linking quality", "linking", figure_linking(link_metrics, paths.figures / "linking.png"))])
    for clf in cfg.classifiers:
        report_classifier(ctx, clf, link_metrics[clf.name], drawn)
    drawn.figures += overview_figures(ctx, drawn)
    timing = stage_timing(paths.root / "benchmarks")
    summary = {
        "run": cfg.run,
        "generator": cfg.generator.kind,
        "resolution": int(drawn.resolution),
        "classes": list(cfg.classes),
        "classifiers": drawn.classifiers,
        "timing": timing,
        "peak_job_rss_mb": max((t["max_rss_mb"] for t in timing.values()), default=None),
    }
    write_json(summary, paths.summary, ctx.origin("report"))
    write_text(render_html(cfg.run, summary, drawn.figures, drawn.unit_rows), paths.report)
    ctx.wrote(paths.figures, paths.summary, paths.report)


def report_classifier(ctx: Context, clf: ClassifierConfig, link_metrics: dict[str, Any], drawn: Drawn) -> None:
    """One classifier's figures (in report order), headline numbers and table of most selective units."""
    name = clf.name
    sel = read_selectivity(ctx, name)
    top = top_units(sel.units, ctx.cfg.report.top_units)
    am_table, am_arrays = unit_figures(ctx, name, sel, top, drawn)
    if len(sel.recovery):
        drawn.recoveries.append(sel.recovery)
    drawn.units[name], drawn.populations[name] = sel.units, sel.population
    counterfactuals = None  # None where none are searched (a planted classifier)
    if name in counterfactual_classifiers(ctx.cfg):
        counterfactuals = counterfactual_figures(ctx, name, sel.units, drawn)
    drawn.classifiers[name] = classifier_summary(ctx, clf, link_metrics, sel, am_table, am_arrays, counterfactuals)
    drawn.unit_rows[name] = unit_rows(top)


def unit_figures(ctx: Context, name: str, sel: Selectivity, top: pd.DataFrame,
                 drawn: Drawn) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Sweeps, activation maximisation, sweep directions, selectivity and population of one classifier;
    returns the actmax stage's table and arrays (for the summary)."""
    cfg, paths = ctx.cfg, ctx.paths
    images = sweep_images(ctx, name, top["unit"].tolist())
    drawn.resolution = next(iter(images.values())).shape[-2]
    drawn.figures.append((f"{name}: sweeps", "sweeps", figure_sweeps(ctx.cfg.tune.n_steps, images, name, top, paths.figures / f"sweeps-{name}.png")))
    am_table, am_arrays = read_actmax(ctx, name)
    swept = set(analysed_units(cfg, name))
    am_sweeps = {**images, **sweep_images(ctx, name, [int(u) for u in am_arrays["unit"] if u in swept and u not in images])}
    drawn.figures += [
        (f"{name}: activation maximisation", "actmax",
         figure_actmax(ctx.cfg.tune.n_steps, am_sweeps, am_table, am_arrays, name, paths.figure(f"actmax-{name}"))),
        (f"{name}: sweep directions", "directions", figure_directions(am_arrays, name, paths.figure(f"directions-{name}"))),
        (f"{name}: selectivity", "selectivity",
         figure_selectivity(sel.features, top, name, paths.figures / f"selectivity-{name}.png")),
        (f"{name}: population", "population",
         figure_population(sel.population, sel.units, name, cfg.selectivity.faithful_min_spearman,
                           paths.figures / f"population-{name}.png")),
    ]
    return am_table, am_arrays


def counterfactual_figures(ctx: Context, name: str, units: pd.DataFrame, drawn: Drawn) -> dict[str, Any]:
    """The counterfactuals of one classifier and their success per pair; returns their summary."""
    paths = ctx.paths
    cf_items, cf_drivers, _, cf_metrics = read_counterfactuals(ctx, name)
    summary = counterfactual_summary(cf_metrics, label_drivers(cf_drivers, units))
    drawn.figures += [
        (f"{name}: counterfactuals", "counterfactuals",
         figure_counterfactuals(read_counterfactual_images(ctx, name), cf_items, name,
                                paths.figures / f"counterfactuals-{name}.png")),
        (f"{name}: counterfactual success", "counterfactual-pairs",
         figure_pair_matrix(cf_metrics, name, paths.figures / f"counterfactual-pairs-{name}.png")),
    ]
    return summary


def overview_figures(ctx: Context, drawn: Drawn) -> list[Figure]:
    """The figures over all classifiers: side by side, and concept recovery on a world with ground truth."""
    paths = ctx.paths
    figs = [("Classifiers side by side", "population-compare",
             figure_population_compare(drawn.units, drawn.populations, paths.figure("population-compare")))]
    if ctx.cfg.generator.has_ground_truth:  # drawn even when no unit is labelled (then with no bars)
        recovery = pd.concat(drawn.recoveries, ignore_index=True) if drawn.recoveries else empty_table(SELECTIVITY_RECOVERY)
        figs.append(("Concept recovery (ground truth)", "concept-recovery",
                     figure_recovery(recovery, paths.figures / "concept-recovery.png")))
    return figs


def classifier_summary(ctx: Context, clf: ClassifierConfig, lm: dict[str, Any], sel: Selectivity, am_table: pd.DataFrame,
                       am_arrays: dict[str, np.ndarray], counterfactuals: dict[str, Any] | None) -> dict[str, Any]:
    """summary.json's headline numbers of one classifier."""
    cfg, paths, name, units = ctx.cfg, ctx.paths, clf.name, sel.units
    accuracy = None
    if clf.kind in TRAINED_BY_WORKFLOW:
        accuracy = ctx.read("classifier_metrics", classifier=name)["heldout_accuracy"]
    used = lm[cfg.link.method]["test"]
    total = sel.population[(sel.population["part"] == "*") & (sel.population["property"] == "*")].iloc[0]
    return {
        "heldout_accuracy": accuracy,
        "link_method": cfg.link.method,
        "link_r2_test": used["r2"],
        "link_r2_test_ols": lm["ols"]["test"]["r2"],
        "link_r2_test_ridge": lm["ridge"]["test"]["r2"],
        "cycle_agreement_test": used["cycle_agreement"],
        "cycle_feature_correlation_test": used["cycle_feature_correlation"],
        "linear_cka": lm["geometry"]["linear_cka"],
        "units_in_model": unit_count(cfg, name),
        "units_analysed": int(units["unit"].nunique()),
        "faithful_units": int(units["faithful"].sum()),
        "faithful_share": float(units["faithful"].mean()),
        "selective_units": int(total["n_selective"]),
        "selective_share": float(total["share"]),
        "selective_faithful_units": int(total["n_selective_faithful"]),
        "concept_recovery": {
            row.masks: {k: getattr(row, k) for k in ("n_labelled", "part_agreement", "concept_agreement",
                                                     "top3_concept_agreement", "chance_part_agreement",
                                                     "chance_concept_agreement", "chance_top3_concept_agreement",
                                                     "swept_iou",
                                                     "label_agreement_with_truth", "label_in_truth_top3",
                                                     "settled_share", "label_agreement_settled")}
            for row in sel.recovery[sel.recovery["part"] == "all"].itertuples()
        },
        "sweeps": sweep_summary(cfg, units, am_arrays),
        "planted": planted_summary(sel.planted),
        "samples_linked": {"train": lm["n_train"], "test": lm["n_test"]},
        "counterfactual": counterfactuals,
        "actmax": actmax_summary(am_table, paths.root / "benchmarks", name, int(units["unit"].nunique())),
    }


def unit_rows(top: pd.DataFrame) -> list[dict[str, Any]]:
    """report.html's table of a classifier's most selective units."""
    return [
        {
            "unit": int(r.unit),
            "concept": r.concept,
            "explanation": r.concepts or "none",
            "label settled": float(r.label_share),
            "gain": float(r.gain),
            "largest change": f"{r.top_part}.{r.top_property}",
            "effect": float(r.top_delta_std),
            "sign agreement": float(r.top_agreement),
            "selectivity index": float(r.selectivity_index),
            "top factor": getattr(r, "top_factor", "n/a"),
            "factor change (sd)": float(getattr(r, "top_factor_delta_std", float("nan"))),
            "faithfulness": float(r.faithfulness),
            "faithful": bool(r.faithful),
        }
        for r in top.itertuples()
    ]


# ----------------------------------------------------------------------------- report.html

_INLINE = re.compile(r"(\*\*.+?\*\*|``.+?``)")  # reStructuredText's strong and literal text, in captions


class Page(Template):
    """templates/report.html, with its tables, captions and figures."""

    def __init__(self) -> None:
        super().__init__("report.html")

    def table(self, rows: list[dict[str, Any]]) -> str:
        if not rows:
            return ""
        head = "".join(self.fill("column", text=html.escape(str(k))) for k in rows[0])
        body = "".join(self.fill("row", cells="".join(self.fill("cell", text=html.escape(_fmt(v))) for v in row.values()))
                       for row in rows)
        return self.fill("table", head=head, rows=body)

    def caption(self, rst: str) -> str:
        """A caption's reStructuredText (paragraph text with **strong** and ``literal`` parts) as HTML."""
        out = []
        for part in _INLINE.split(" ".join(rst.split())):
            if part.startswith("**") and part.endswith("**") and len(part) > 4:
                out.append(self.fill("strong", text=html.escape(part[2:-2])))
            elif part.startswith("``") and part.endswith("``") and len(part) > 4:
                out.append(self.fill("literal", text=html.escape(part[2:-2])))
            else:
                out.append(html.escape(part))
        return "".join(out)

    def figure(self, title: str, kind: str, png: bytes) -> str:
        """A figure with its title and the caption of its kind (templates/captions/<kind>.rst)."""
        return self.fill("figure", title=html.escape(title), caption=self.caption(figure_caption(kind)),
                         png=base64.b64encode(png).decode())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.3f}"
    return "n/a" if v is None else str(v)


def render_html(run: str, summary: dict[str, Any], figs: list[Figure], unit_rows: dict[str, list[dict[str, Any]]]) -> str:
    """report.html: the summary's tables, then every figure with its title and caption (self-contained)."""
    page, classifiers = Page(), summary["classifiers"]
    headline = [{"classifier": name, **{k: v for k, v in s.items() if not isinstance(v, dict)}} for name, s in classifiers.items()]
    recovery = [
        {"classifier": name, "masks": masks, **values}
        for name, s in classifiers.items() for masks, values in s["concept_recovery"].items()
    ]
    counterfactual_rows = [
        {"classifier": name, **{k: v for k, v in p.items() if k != "drivers"},
         "driving units": "; ".join(f"{d['unit']} ({d['concept']}, {d['fraction']:.0%})" for d in p["drivers"])}
        for name, s in classifiers.items() if s["counterfactual"] for p in s["counterfactual"]["pairs"]
    ]
    actmax_rows = [
        {"classifier": name, "units": s["actmax"]["units"], "steps": s["actmax"]["steps"],
         "actmax / sweep top (median)": s["actmax"]["median_activation_over_sweep_top"],
         "actmax job s / unit": s["actmax"]["timing"]["actmax_job_seconds_per_unit"],
         "tune job s / unit": s["actmax"]["timing"]["tune_job_seconds_per_unit"]}
        for name, s in classifiers.items()
    ]
    return page.fill(
        "page",
        run=html.escape(run),
        generator=html.escape(str(summary["generator"])),
        resolution=html.escape(str(summary["resolution"])),
        classes=html.escape(str(summary["classes"])),
        headline=page.table(headline),
        recovery=page.fill("recovery", table=page.table(recovery)) if recovery else "",
        units="".join(page.fill("classifier-units", name=html.escape(name), table=page.table(rows)) for name, rows in unit_rows.items()),
        counterfactuals=page.table(counterfactual_rows),
        actmax=page.table(actmax_rows),
        figures="".join(page.figure(title, kind, png) for title, kind, png in figs),
        timing=page.table([{"stage": k, **v} for k, v in summary["timing"].items()]),
    )
