"""Figures, a self-contained report.html and summary.json with the run's headline numbers."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..artifacts import SELECTIVITY_RECOVERY, figure_caption, report_inputs, unit_sweep_images  # noqa: E402
from ..config import ClassifierConfig, Config  # noqa: E402
from ..io import empty_table, missing_error, write_bytes, write_json, write_text  # noqa: E402
from ..pages import Template  # noqa: E402
from ..selectivity import UNRANKED, top_units  # noqa: E402
from ..units import TRAINED_BY_WORKFLOW, analysed_units, counterfactual_classifiers, unit_count  # noqa: E402
from .actmax import read_actmax  # noqa: E402
from .context import Context  # noqa: E402
from .counterfactual import label_drivers, read_counterfactual_images, read_counterfactuals  # noqa: E402

#: Okabe-Ito: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def unit_caption(info: Any) -> str:
    """A unit's label for figures: its concept, else its largest change; unfaithful units and sweeps that
    barely move their unit (gain below selectivity.min_gain) are flagged."""
    text = info["concept"] if info["selective"] else f"{info['top_part']}.{info['top_property']} (no label)"
    text = text if info["faithful"] else f"{text} [unfaithful]"
    return f"{text} [weak sweep, gain {info['gain']:.2f}]" if info.get("weak_sweep", False) else text


def _save(fig: plt.Figure, path: Path) -> bytes:
    """The figure as PNG (returned, for report.html) and as PDF beside it (vector, for papers)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pdf = io.BytesIO()
    fig.savefig(pdf, format="pdf", bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    write_bytes(data, path)
    write_bytes(pdf.getvalue(), path.with_suffix(".pdf"))
    return data


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


def figure_sweeps(ctx: Context, images: dict[int, np.ndarray], name: str, top: pd.DataFrame, path: Path) -> bytes:
    units = top["unit"].tolist()
    k = ctx.cfg.tune.n_steps
    n_starts = max(v.shape[0] for v in images.values())
    fig, axes = plt.subplots(len(units), n_starts * k, figsize=(1.3 * n_starts * k, 1.45 * len(units)), squeeze=False)
    for row, (_, info) in enumerate(top.iterrows()):
        imgs = images[int(info["unit"])]
        for s in range(n_starts):
            for step in range(k):
                ax = axes[row, s * k + step]
                ax.imshow(imgs[s, step] if s < len(imgs) else np.zeros_like(imgs[0, 0]))
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"start {s}\nstep {step}", fontsize=7)
            axes[row, 0].set_ylabel(
                f"unit {int(info['unit'])}\n{unit_caption(info)}\neffect {info['top_delta_std']:+.2f}", fontsize=7
            )
    fig.suptitle(f"{name}: most selective units, low -> high activation", fontsize=9)
    return _save(fig, path)


def figure_actmax(ctx: Context, sweeps: dict[int, np.ndarray], table: pd.DataFrame, arrays: dict[str, np.ndarray],
                  name: str, path: Path) -> bytes:
    """Each unit's linking sweep (first start sample) beside its activation-maximising image."""
    k = ctx.cfg.tune.n_steps
    units = [int(u) for u in arrays["unit"]]
    fig, axes = plt.subplots(len(units), k + 1, figsize=(1.3 * (k + 1), 1.45 * len(units)), squeeze=False)
    for row, u in enumerate(units):
        info = table.iloc[row]
        for step in range(k):
            ax = axes[row, step]
            if u in sweeps:
                ax.imshow(sweeps[u][0, step])
            else:
                ax.text(0.5, 0.5, "not swept\n(tune.units)", ha="center", va="center", fontsize=6, transform=ax.transAxes)
            if row == 0:
                ax.set_title(f"linking\nstep {step}", fontsize=7)
        axes[row, k].imshow(arrays["images"][row])
        if row == 0:
            axes[row, k].set_title(f"actmax\n{int(info['steps'])} steps", fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(f"unit {u}\nactmax {info['activation']:.2f}\nsweep top {info['observed_high']:.2f}", fontsize=7)
    fig.suptitle(f"{name}: linking sweeps vs activation maximisation", fontsize=9)
    return _save(fig, path)


def figure_directions(arrays: dict[str, np.ndarray], name: str, path: Path, max_units: int = 6) -> bytes:
    """For each of the report's first units, one row of its sweep per direction, with the gain of each."""
    images, gains = arrays["direction_images"], arrays["direction_gain"]
    modes = [str(m) for m in arrays["directions"]]
    n_units, k = min(max_units, images.shape[1]), images.shape[2]
    rows = n_units * len(modes)
    fig, axes = plt.subplots(rows, k, figsize=(1.1 * k, 1.05 * rows), squeeze=False)
    for i in range(n_units):
        for j, mode in enumerate(modes):
            row = i * len(modes) + j
            for step in range(k):
                ax = axes[row, step]
                ax.imshow(images[j, i, step])
                ax.set_xticks([])
                ax.set_yticks([])
            g = gains[j, i]
            label = f"unit {int(arrays['unit'][i])}\n{mode}" + (f"\ngain {g:.2f}" if np.isfinite(g) else "")
            axes[row, 0].set_ylabel(label, fontsize=6)
    for step in range(k):
        axes[0, step].set_title(f"step {step}", fontsize=7)
    fig.suptitle(f"{name}: one start, every sweep direction", fontsize=9)
    return _save(fig, path)


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


def figure_selectivity(features: pd.DataFrame, top: pd.DataFrame, name: str, path: Path, bars: int = 8) -> bytes:
    units = top["unit"].tolist()
    cols = min(3, len(units))
    rows = math.ceil(len(units) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.4 * rows), squeeze=False)
    meas = features[(features["kind"] == "measure") & ~features["property"].isin(UNRANKED)]
    for ax, (_, info) in zip(axes.flat, top.iterrows()):
        unit = int(info["unit"])
        f = meas[meas["unit"] == unit].dropna(subset=["delta_std"])
        f = f.reindex(f["delta_std"].abs().sort_values(ascending=False).index).head(bars)[::-1]
        colors = [PALETTE[3] if v > 0 else PALETTE[0] for v in f["delta_std"]]
        ax.barh((f["part"] + "." + f["property"]).tolist(), f["delta_std"], color=colors)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_title(f"unit {unit}: {unit_caption(info)}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("effect: change in spreads over reference images", fontsize=7)
    for ax in list(axes.flat)[len(units):]:
        ax.axis("off")
    fig.suptitle(f"{name}: per-unit change of each part property (first -> last step)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _share(v: float) -> str:
    """A share as a short label: '12%', '0.4%'."""
    return f"{100 * v:.0f}%" if v >= 0.095 else f"{100 * v:.1f}%"


def figure_population(population: pd.DataFrame, units: pd.DataFrame, name: str, threshold: float, path: Path) -> bytes:
    """Faithfulness and selectivity of all units, and which parts and properties the labels name."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8), gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
    axes[0].hist(units["faithfulness"].dropna(), bins=np.linspace(-1, 1, 21), color=PALETTE[0])
    axes[0].axvline(threshold, color=PALETTE[3], lw=1)
    axes[0].set_title(f"faithfulness: {int(units['faithful'].sum())}/{len(units)} units >= {threshold:g}", fontsize=9)
    axes[0].set_xlabel("median Spearman(target, realised)", fontsize=8)
    bins = np.linspace(0, 1, 21)
    for sel, colour, label in ((False, PALETTE[7], "no label"), (True, PALETTE[2], "labelled")):
        axes[1].hist(units.loc[units["selective"] == sel, "selectivity_index"], bins=bins, color=colour, alpha=0.7, label=label)
    axes[1].set_title("selectivity index", fontsize=9)
    axes[1].legend(fontsize=7)
    per_part = population[(population["property"] == "*") & (population["part"] != "*")]
    shares = axes[2].bar(per_part["part"].tolist(), per_part["share"], color=PALETTE[2], label="all units")
    axes[2].bar(per_part["part"].tolist(), per_part["n_selective_faithful"] / max(len(units), 1), color=PALETTE[1], label="faithful")
    axes[2].bar_label(shares, labels=[_share(v) for v in per_part["share"]], fontsize=6, padding=1)
    axes[2].set_title("share of units labelled, per part", fontsize=9)
    axes[2].tick_params(axis="x", rotation=45, labelsize=8)
    axes[2].legend(fontsize=7)
    pairs = population[(population["part"] != "*") & (population["property"] != "*")]
    heat = pairs.pivot_table(index="part", columns="property", values="share", aggfunc="first", sort=False)
    grid = heat.to_numpy(dtype=float)
    im = axes[3].imshow(grid, aspect="auto", cmap="viridis", vmin=0.0)
    top = np.nanmax(grid) if np.isfinite(grid).any() else 0.0
    for (i, j), v in np.ndenumerate(grid):  # the numbers, not only the colours: small shares look alike
        if np.isfinite(v) and v > 0:
            axes[3].text(j, i, _share(v), ha="center", va="center", fontsize=5,
                         color="black" if v > 0.6 * top else "white")
    axes[3].set_xticks(range(heat.shape[1]), heat.columns, rotation=60, fontsize=7)
    axes[3].set_yticks(range(heat.shape[0]), heat.index, fontsize=8)
    axes[3].set_title("share of units labelled part:property", fontsize=9)
    fig.colorbar(im, ax=axes[3])
    fig.suptitle(f"{name}: population of {len(units)} units", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def figure_population_compare(units: dict[str, pd.DataFrame], populations: dict[str, pd.DataFrame], path: Path) -> bytes:
    """The classifiers side by side: how selective their units are, and which parts their labels name."""
    names = list(units)
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.4]})
    bins = np.linspace(0, 1, 26)
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        axes[0].hist(units[name]["selectivity_index"].dropna(), bins=bins, histtype="step", lw=1.5, density=True,
                     color=colour, label=f"{name} ({len(units[name])} units)")
        axes[1].hist(units[name]["faithfulness"].dropna(), bins=np.linspace(-1, 1, 21), histtype="step", lw=1.5,
                     density=True, color=colour, label=name)
    axes[0].set_title("selectivity index (density)", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].set_title("faithfulness (density)", fontsize=9)
    axes[1].set_xlabel("median Spearman(target, realised)", fontsize=8)
    parts = list(dict.fromkeys(p for pop in populations.values() for p in pop["part"] if p != "*"))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(parts))
    for i, name in enumerate(names):
        pop = populations[name]
        per_part = pop[(pop["property"] == "*") & (pop["part"] != "*")].set_index("part").reindex(parts)
        axes[2].bar(x + i * width - 0.4 + width / 2, per_part["share"].fillna(0), width, color=PALETTE[i % len(PALETTE)], label=name)
    axes[2].set_xticks(x, parts, rotation=45, fontsize=8)
    axes[2].set_title("share of units labelled, per part", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.suptitle("classifiers side by side", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def figure_recovery(recovery: pd.DataFrame, path: Path) -> bytes:
    """Concept recovery on the built-in world: does the label name the factor that really changed?"""
    groups = [(c, m) for c, m in recovery[["classifier", "masks"]].drop_duplicates().itertuples(index=False)]
    parts = list(dict.fromkeys(recovery["part"]))
    fig, axes = plt.subplots(1, 2, figsize=(14, 3.6), sharey=True)
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(parts))
    for ax, what in zip(axes, ("part", "concept")):
        for i, (clf, masks) in enumerate(groups):
            rows = recovery[(recovery["classifier"] == clf) & (recovery["masks"] == masks)].set_index("part").reindex(parts)
            pos = x + i * width - 0.4 + width / 2
            values = rows[f"{what}_agreement"]
            bars = ax.bar(pos, values.fillna(0.0), width, color=PALETTE[i % len(PALETTE)], label=f"{clf}, {masks} masks")
            # a zero and a part without labelled units must not look alike
            ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "n/a" for v in values], fontsize=5, padding=2,
                         rotation=90)
            ax.scatter(pos, rows[f"chance_{what}_agreement"], marker="_", color="k", s=60, zorder=3,
                       label="chance" if i == 0 else None)
        ax.set_xticks(x, [f"{p}\n(n={int(recovery.loc[recovery['part'] == p, 'n_labelled'].max())})" for p in parts], fontsize=7)
        ax.set_ylim(0, 1.18)  # room for the values above full bars
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_title(f"{what} agreement of labels with the dominant ground-truth factor", fontsize=9)
    axes[0].set_ylabel("share of labelled units", fontsize=8)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def figure_linking(link_metrics: dict[str, dict[str, Any]], path: Path) -> bytes:
    """Per classifier, on the held-out split: R² of w (OLS, ridge), cycle agreement (the class of the
    re-rendered image), r-correlation (the re-rendered image's features against the original's) and CKA."""
    names = list(link_metrics)
    series = {
        "R² (OLS)": [m["ols"]["test"]["r2"] for m in link_metrics.values()],
        "R² (ridge)": [m["ridge"]["test"]["r2"] for m in link_metrics.values()],
        "cycle agreement (OLS)": [m["ols"]["test"]["cycle_agreement"] for m in link_metrics.values()],
        "cycle agreement (ridge)": [m["ridge"]["test"]["cycle_agreement"] for m in link_metrics.values()],
        "r-correlation (ridge)": [m["ridge"]["test"]["cycle_feature_correlation"] for m in link_metrics.values()],
        "linear CKA(r, w)": [m["geometry"]["linear_cka"] for m in link_metrics.values()],
    }
    fig, ax = plt.subplots(figsize=(2.0 + 2.4 * len(names), 3.6))
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (label, values) in enumerate(series.items()):
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label, color=PALETTE[i % len(PALETTE)])
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(x, names)
    ax.set_ylim(min(0.0, *[v for vs in series.values() for v in vs]), 1.1)
    ax.set_ylabel("held-out score", fontsize=8)
    ax.set_title("linking r -> w on the held-out split", fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def figure_counterfactuals(arrays: dict[str, np.ndarray], items: pd.DataFrame, name: str, path: Path,
                           per_row: int = 4, max_pairs: int = 24) -> bytes:
    """One panel per pair: the linked re-rendering of a start sample, its counterfactual, and where they differ."""
    stored = items[items["image"] >= 0]
    first = stored.groupby(["origin", "target"], sort=True).head(1).head(max_pairs)
    n = max(len(first), 1)
    rows = -(-n // per_row)
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(1.25 * 3 * per_row, 1.55 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, item in enumerate(first.itertuples()):
        before = arrays["images_before"][item.image].astype(np.float32) / 255
        after = arrays["images_after"][item.image].astype(np.float32) / 255
        diff = np.abs(after - before).mean(-1)
        row, col = divmod(k, per_row)
        cells = axes[row, 3 * col : 3 * col + 3]
        cells[0].imshow(before)
        cells[1].imshow(after)
        cells[2].imshow(diff / max(float(diff.max()), 1e-6), cmap="magma")
        mark = "flipped" if item.success else "not flipped"
        cells[0].set_title(f"{item.origin_name} -> {item.target_name}", fontsize=7, loc="left")
        cells[1].set_title(f"{mark}, {item.steps} steps", fontsize=6)
        cells[2].set_title(f"|difference|, {item.image_distance:.2f}", fontsize=6)
    fig.suptitle(f"{name}: counterfactuals (original re-rendering, counterfactual, difference)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def figure_pair_matrix(metrics: dict[str, Any], name: str, path: Path) -> bytes:
    """Success rate per (origin, target) pair, and on the built-in world the cosine between the
    ground-truth factors the counterfactuals change and those that separate the two species."""
    pairs = metrics["pairs"]
    names = list(dict.fromkeys([p["origin_name"] for p in pairs] + [p["target_name"] for p in pairs]))
    index = {c: i for i, c in enumerate(names)}
    panels = [("success_rate", "success rate", "viridis", (0, 1))]
    if any(p.get("factor_cosine") is not None for p in pairs):
        panels.append(("factor_cosine", "factor change vs species separation (cosine)", "RdBu", (-1, 1)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (key, title, cmap, (lo, hi)) in zip(axes[0], panels):
        grid = np.full((len(names), len(names)), np.nan)
        for p in pairs:
            value = p.get(key)
            grid[index[p["origin_name"]], index[p["target_name"]]] = np.nan if value is None else value
        im = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi)
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if key == "success_rate" and v < 0.6 else "k")
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("target", fontsize=8)
        ax.set_ylabel("origin", fontsize=8)
        ax.set_title(f"{name}: {title}", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path)


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
    drawn.figures.append((f"{name}: sweeps", "sweeps", figure_sweeps(ctx, images, name, top, paths.figures / f"sweeps-{name}.png")))
    am_table, am_arrays = read_actmax(ctx, name)
    swept = set(analysed_units(cfg, name))
    am_sweeps = {**images, **sweep_images(ctx, name, [int(u) for u in am_arrays["unit"] if u in swept and u not in images])}
    drawn.figures += [
        (f"{name}: activation maximisation", "actmax",
         figure_actmax(ctx, am_sweeps, am_table, am_arrays, name, paths.figure(f"actmax-{name}"))),
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
                                                     "chance_concept_agreement", "swept_iou",
                                                     "label_agreement_with_truth", "label_in_truth_top3")}
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
