"""Figures, a self-contained report.html and summary.json with the run's headline numbers."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..artifacts import CLASSIFIER_METRICS, LINK_METRICS, SELECTIVITY_FEATURES, SELECTIVITY_UNITS, TUNE_ARRAYS  # noqa: E402
from ..io import read_json, read_npz, read_parquet, write_bytes, write_json, write_text  # noqa: E402
from ..units import TRAINED_BY_WORKFLOW, analysed_units, unit_count  # noqa: E402
from .context import Context  # noqa: E402
from .selectivity import UNRANKED  # noqa: E402

#: A sweep counts as faithful when the classifier's own unit follows the target this closely.
FAITHFUL_CORR = 0.5


def top_units(units: pd.DataFrame, n: int) -> pd.DataFrame:
    """The units whose sweep changes one measured property most, among the faithful ones."""
    faithful = units[units["realised_corr"] >= FAITHFUL_CORR]
    pool = faithful if len(faithful) >= n else units
    score = pool["top_measure_delta_std"].abs() * pool["measure_selectivity"]
    return pool.assign(score=score).sort_values("score", ascending=False).head(n)


def _save(fig: plt.Figure, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    write_bytes(data, path)
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
        arrays = read_npz(ctx.paths.tune_arrays(name, shard), origin=ctx.origin("tune", classifier=name, shard=shard), arrays=TUNE_ARRAYS)
        for u in wanted:
            sel = np.flatnonzero((arrays["unit"] == u) & (arrays["start"] < starts))
            imgs = arrays["images"][sel]
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
                f"unit {int(info['unit'])}\n{info['top_measure']}\n{info['top_measure_delta_std']:+.2f} sd", fontsize=7
            )
    fig.suptitle(f"{name}: most selective units, low -> high activation", fontsize=9)
    return _save(fig, path)


def figure_selectivity(features: pd.DataFrame, top: pd.DataFrame, name: str, path: Path, bars: int = 8) -> bytes:
    units = top["unit"].tolist()
    cols = min(3, len(units))
    rows = math.ceil(len(units) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.4 * rows), squeeze=False)
    meas = features[(features["kind"] == "measure") & ~features["property"].isin(UNRANKED)]
    for ax, unit in zip(axes.flat, units):
        f = meas[meas["unit"] == unit].dropna(subset=["delta_std"])
        f = f.reindex(f["delta_std"].abs().sort_values(ascending=False).index).head(bars)[::-1]
        colors = ["tab:red" if v > 0 else "tab:blue" for v in f["delta_std"]]
        ax.barh((f["part"] + "." + f["property"]).tolist(), f["delta_std"], color=colors)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_title(f"unit {unit}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("change, sd of the property", fontsize=7)
    for ax in list(axes.flat)[len(units):]:
        ax.axis("off")
    fig.suptitle(f"{name}: per-unit change of each part property (first -> last step)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def figure_population(features: pd.DataFrame, units: pd.DataFrame, name: str, path: Path) -> bytes:
    meas = features[(features["kind"] == "measure") & ~features["property"].isin(UNRANKED)]
    heat = meas.assign(mag=meas["delta_std"].abs()).pivot_table(index="part", columns="property", values="mag", aggfunc="mean", observed=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [1, 1, 2]})
    axes[0].hist(units["realised_corr"].dropna(), bins=20, range=(-1, 1), color="tab:gray")
    axes[0].axvline(FAITHFUL_CORR, color="tab:red", lw=1)
    axes[0].set_title("faithfulness: corr(target, realised)", fontsize=9)
    axes[0].set_xlabel("correlation", fontsize=8)
    parts = units["top_measure"].str.split(".").str[0].value_counts()
    axes[1].bar(parts.index.tolist(), parts.values, color="tab:green")
    axes[1].set_title("part changed most, per unit", fontsize=9)
    axes[1].tick_params(axis="x", rotation=45, labelsize=8)
    im = axes[2].imshow(heat.to_numpy(), aspect="auto", cmap="magma")
    axes[2].set_xticks(range(heat.shape[1]), heat.columns, rotation=60, fontsize=7)
    axes[2].set_yticks(range(heat.shape[0]), heat.index, fontsize=8)
    axes[2].set_title("mean |change| (sd) over units", fontsize=9)
    fig.colorbar(im, ax=axes[2])
    fig.suptitle(f"{name}: population of {len(units)} units", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def figure_linking(link_metrics: dict[str, dict[str, Any]], path: Path) -> bytes:
    names = list(link_metrics)
    series = {
        "R² ols": [m["ols"]["test"]["r2"] for m in link_metrics.values()],
        "R² ridge": [m["ridge"]["test"]["r2"] for m in link_metrics.values()],
        "cycle ols": [m["ols"]["test"]["cycle_agreement"] for m in link_metrics.values()],
        "cycle ridge": [m["ridge"]["test"]["cycle_agreement"] for m in link_metrics.values()],
        "CKA(r, w)": [m["geometry"]["linear_cka"] for m in link_metrics.values()],
    }
    fig, ax = plt.subplots(figsize=(1.8 + 2.2 * len(names), 3.2))
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label)
    ax.set_xticks(x, names)
    ax.set_ylim(min(0.0, *[v for vs in series.values() for v in vs]), 1.0)
    ax.set_title("linking quality on the held-out split", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def stage_timing(bench_dir: Path) -> dict[str, dict[str, float]]:
    """Wall time summed over jobs and the largest resident memory, per rule (from Snakemake's benchmarks)."""
    out: dict[str, dict[str, float]] = {}
    for tsv in sorted(bench_dir.glob("*/*.tsv")):
        row = pd.read_csv(tsv, sep="\t").iloc[-1]
        entry = out.setdefault(tsv.parent.name, {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
        entry["jobs"] += 1
        entry["seconds"] += float(row["s"])
        rss = pd.to_numeric(row.get("max_rss"), errors="coerce")
        if np.isfinite(rss):
            entry["max_rss_mb"] = max(entry["max_rss_mb"], float(rss))
    return out


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.3f}"
    return "n/a" if v is None else str(v)


def run_report(ctx: Context) -> None:
    cfg, paths = ctx.cfg, ctx.paths
    figs: list[tuple[str, str, bytes]] = []
    link_metrics = {
        c.name: read_json(paths.link_metrics(c.name), origin=ctx.origin("link", classifier=c.name), keys=LINK_METRICS)
        for c in cfg.classifiers
    }
    figs.append(("Linking quality", "OLS and ridge maps r -> w on the test split.", figure_linking(link_metrics, paths.figures / "linking.png")))
    summary_clf: dict[str, Any] = {}
    unit_rows: dict[str, list[dict[str, Any]]] = {}
    for clf in cfg.classifiers:
        name = clf.name
        made = ctx.origin("selectivity", classifier=name)
        units = read_parquet(paths.selectivity_units(name), origin=made, schema=SELECTIVITY_UNITS)
        features = read_parquet(paths.selectivity_features(name), origin=made, schema=SELECTIVITY_FEATURES)
        top = top_units(units, cfg.report.top_units)
        images = sweep_images(ctx, name, top["unit"].tolist())
        resolution = next(iter(images.values())).shape[-2]
        figs.append((f"{name}: sweeps", "Each row is one unit swept from its lowest to its highest observed activation, for two start samples.",
                     figure_sweeps(ctx, images, name, top, paths.figures / f"sweeps-{name}.png")))
        figs.append((f"{name}: selectivity", "Largest changes of part properties along each sweep, in standard deviations of the property.",
                     figure_selectivity(features, top, name, paths.figures / f"selectivity-{name}.png")))
        figs.append((f"{name}: population", "Faithfulness of all sweeps, the part each unit changes most, and the mean change per part and property.",
                     figure_population(features, units, name, paths.figures / f"population-{name}.png")))
        accuracy = None
        if clf.kind in TRAINED_BY_WORKFLOW:
            accuracy = read_json(paths.classifier_metrics(name), origin=ctx.origin("train", classifier=name),
                                 keys=CLASSIFIER_METRICS)["heldout_accuracy"]
        lm = link_metrics[name]
        used = lm[cfg.link.method]["test"]
        summary_clf[name] = {
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
            "faithful_units": int((units["realised_corr"] >= FAITHFUL_CORR).sum()),
            "samples_linked": {"train": lm["n_train"], "test": lm["n_test"]},
        }
        unit_rows[name] = [
            {
                "unit": int(r.unit),
                "largest change": r.top_measure,
                "change (sd)": float(r.top_measure_delta_std),
                "top factor": getattr(r, "top_factor", "n/a"),
                "factor change (sd)": float(getattr(r, "top_factor_delta_std", float("nan"))),
                "faithfulness": float(r.realised_corr),
            }
            for r in top.itertuples()
        ]
    timing = stage_timing(paths.root / "benchmarks")
    summary = {
        "run": cfg.run,
        "generator": cfg.generator.kind,
        "resolution": int(resolution),
        "classes": list(cfg.classes),
        "classifiers": summary_clf,
        "timing": timing,
        "peak_job_rss_mb": max((t["max_rss_mb"] for t in timing.values()), default=None),
    }
    write_json(summary, paths.summary, ctx.origin("report"))
    write_text(_html(cfg.run, summary, figs, unit_rows), paths.report)
    ctx.wrote(paths.figures, paths.summary, paths.report)


def _html(run: str, summary: dict[str, Any], figs: list[tuple[str, str, bytes]], unit_rows: dict[str, list[dict[str, Any]]]) -> str:
    headline = [
        {"classifier": name, **{k: v for k, v in s.items() if not isinstance(v, dict)}}
        for name, s in summary["classifiers"].items()
    ]
    timing = [{"stage": k, **v} for k, v in summary["timing"].items()]
    sections = "".join(
        f"<section><h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p>{_img(data, title)}</section>" for title, caption, data in figs
    )
    units = "".join(f"<h3>{html.escape(name)}</h3>{_table(rows)}" for name, rows in unit_rows.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>linkstyle report: {html.escape(run)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }} section {{ margin-bottom: 2rem; }}
</style></head><body>
<h1>linkstyle report: run <code>{html.escape(run)}</code></h1>
<p>Generator <b>{html.escape(str(summary['generator']))}</b> at {summary['resolution']} px, classes {summary['classes']}.</p>
<h2>Headline</h2>{_table(headline)}
<h2>Most selective units</h2>{units}
{sections}
<h2>Timing per stage</h2>{_table(timing)}
</body></html>
"""
