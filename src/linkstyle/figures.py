"""The paper-style figures: each takes tables and arrays already read, draws one matplotlib figure and
writes it as PNG (returned, for report.html) and PDF (for papers). The report stage reads the
artifacts and calls these; a notebook can call them on its own tables."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import write_bytes  # noqa: E402
from .selectivity import UNRANKED  # noqa: E402

#: Okabe-Ito: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def unit_caption(info: Any) -> str:
    """A unit's label for figures: its concept, else its largest change; unfaithful units and sweeps that
    barely move their unit (gain below selectivity.min_gain) are flagged."""
    text = info["concept"] if info["selective"] else f"{info['top_part']}.{info['top_property']} (no label)"
    text = text if info["faithful"] else f"{text} [unfaithful]"
    return f"{text} [weak sweep, gain {info['gain']:.2f}]" if info.get("weak_sweep", False) else text


def save(fig: plt.Figure, path: Path) -> bytes:
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


def as_rgb(image: np.ndarray, cmap: str | None = None) -> np.ndarray:
    """An image as float RGB in [0, 1] [H, W, 3]: uint8 scaled, one channel through ``cmap`` (else grey)."""
    x = np.asarray(image)
    x = x.astype(np.float32) / 255 if x.dtype == np.uint8 else np.clip(x.astype(np.float32), 0.0, 1.0)
    if x.ndim == 2:
        return plt.get_cmap(cmap)(x)[..., :3].astype(np.float32) if cmap else np.repeat(x[..., None], 3, -1)
    return x


class ImageGrid:
    """Rows x columns of same-sized images drawn as *one* image with white gaps, and its texts placed
    in the gaps: a figure of a few hundred small axes spends most of its time laying out and drawing
    axes (ticks, titles, tight boxes), one canvas does not. Row labels read horizontally on the left,
    so that long captions do not run into each other as rotated axis labels did."""

    def __init__(self, rows: int, cols: int, shape: tuple[int, int], cell_titles: bool = False, row_group: int = 1,
                 col_group: int = 1) -> None:
        self.h, self.w = int(shape[0]), int(shape[1])
        self.gap = max(1, round(0.06 * self.w))
        self.row_gap = max(1, round((0.22 if cell_titles else 0.06) * self.h))
        # the rows (columns) of one group, e.g. one unit's sweeps or one counterfactual's panels, sit closer together
        self.row_group, self.col_group = row_group, col_group
        self.row_group_gap = 3 * self.row_gap if row_group > 1 else 0
        self.col_group_gap = 3 * self.gap if col_group > 1 else 0
        bottom, right = self.origin(max(rows, 1) - 1, max(cols, 1) - 1)
        self.canvas = np.ones((bottom + self.h, right + self.w, 3), np.float32)
        self.texts: list[tuple[str, tuple[float, float], tuple[float, float], dict[str, Any]]] = []
        self.lines_above = 0  # text lines above the canvas (column titles, first-row cell titles): the title goes higher

    def origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left pixel (y, x) of cell (row, col) on the canvas."""
        return (row * (self.h + self.row_gap) + (row // self.row_group) * self.row_group_gap,
                col * (self.w + self.gap) + (col // self.col_group) * self.col_group_gap)

    def put(self, row: int, col: int, image: np.ndarray, cmap: str | None = None) -> None:
        rgb = as_rgb(image, cmap)
        if rgb.shape[:2] != (self.h, self.w):
            raise ValueError(f"grid cell ({row}, {col}) has shape {rgb.shape[:2]}, the grid's cells {(self.h, self.w)}")
        y, x = self.origin(row, col)
        self.canvas[y : y + self.h, x : x + self.w] = rgb

    def _text(self, text: str, xy: tuple[float, float], offset: tuple[float, float], above: bool = False, **kw: Any) -> None:
        self.texts.append((text, xy, offset, kw))
        if above:
            self.lines_above = max(self.lines_above, text.count("\n") + 1)

    def row_label(self, row: int, text: str, size: float = 7) -> None:
        y, _ = self.origin(row, 0)
        self._text(text, (-0.5, y + self.h / 2), (-4, 0), ha="right", va="center", fontsize=size)

    def col_title(self, col: int, text: str, size: float = 7) -> None:
        _, x = self.origin(0, col)
        self._text(text, (x + self.w / 2, -0.5), (0, 3), above=True, ha="center", va="bottom", fontsize=size)

    def cell_title(self, row: int, col: int, text: str, size: float = 6, loc: str = "center") -> None:
        y, x = self.origin(row, col)
        at = x + (self.w / 2 if loc == "center" else 0)
        self._text(text, (at - 0.5, y - 0.5), (0, 1.5), above=row == 0, ha=loc, va="bottom", fontsize=size)

    def cell_text(self, row: int, col: int, text: str, size: float = 6) -> None:
        y, x = self.origin(row, col)
        self._text(text, (x + self.w / 2, y + self.h / 2), (0, 0), ha="center", va="center", fontsize=size)

    def figure(self, title: str, cell_inches: float = 1.1) -> plt.Figure:
        """The canvas on one axes filling the figure; texts in offset points, so that they keep their
        size whatever the resolution of the images."""
        height, width = self.canvas.shape[:2]
        fig = plt.figure(figsize=(cell_inches * width / (self.w + self.gap), cell_inches * height / (self.w + self.gap)))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(self.canvas)
        ax.set_axis_off()
        for text, xy, offset, kw in self.texts:
            ax.annotate(text, xy=xy, xycoords="data", xytext=offset, textcoords="offset points", **kw)
        ax.annotate(title, xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 6 + 9 * self.lines_above),
                    textcoords="offset points", ha="center", va="bottom", fontsize=9)
        return fig


def figure_sweeps(n_steps: int, images: dict[int, np.ndarray], name: str, top: pd.DataFrame, path: Path) -> bytes:
    k = n_steps
    n_starts = max(v.shape[0] for v in images.values())
    first = next(iter(images.values()))
    grid = ImageGrid(len(top), n_starts * k, first.shape[2:4], col_group=k)
    for row, (_, info) in enumerate(top.iterrows()):
        imgs = images[int(info["unit"])]
        for s in range(min(n_starts, len(imgs))):
            for step in range(k):
                grid.put(row, s * k + step, imgs[s, step])
        grid.row_label(row, f"unit {int(info['unit'])}\n{unit_caption(info)}\neffect {info['top_delta_std']:+.2f}")
    for s in range(n_starts):
        for step in range(k):
            grid.col_title(s * k + step, f"start {s}\nstep {step}")
    return save(grid.figure(f"{name}: most selective units, low -> high activation"), path)


def figure_actmax(n_steps: int, sweeps: dict[int, np.ndarray], table: pd.DataFrame, arrays: dict[str, np.ndarray],
                  name: str, path: Path) -> bytes:
    """Each unit's linking sweep (first start sample) beside its activation-maximising image."""
    k = n_steps
    units = [int(u) for u in arrays["unit"]]
    grid = ImageGrid(len(units), k + 1, arrays["images"].shape[1:3])
    for row, u in enumerate(units):
        info = table.iloc[row]
        for step in range(k):
            if u in sweeps:
                grid.put(row, step, sweeps[u][0, step])
            else:
                grid.cell_text(row, step, "not swept\n(tune.units)")
        grid.put(row, k, arrays["images"][row])
        grid.row_label(row, f"unit {u}\nactmax {info['activation']:.2f}\nsweep top {info['observed_high']:.2f}")
    for step in range(k):
        grid.col_title(step, f"linking\nstep {step}")
    if units:
        grid.col_title(k, f"actmax\n{int(table.iloc[0]['steps'])} steps")
    return save(grid.figure(f"{name}: linking sweeps vs activation maximisation"), path)


def figure_directions(arrays: dict[str, np.ndarray], name: str, path: Path, max_units: int = 6) -> bytes:
    """For each of the report's first units, one row of its sweep per direction, with the gain of each."""
    images, gains = arrays["direction_images"], arrays["direction_gain"]
    modes = [str(m) for m in arrays["directions"]]
    n_units, k = min(max_units, images.shape[1]), images.shape[2]
    grid = ImageGrid(n_units * len(modes), k, images.shape[3:5], row_group=len(modes))
    for i in range(n_units):
        for j, mode in enumerate(modes):
            row = i * len(modes) + j
            for step in range(k):
                grid.put(row, step, images[j, i, step])
            g = gains[j, i]
            grid.row_label(row, f"unit {int(arrays['unit'][i])}\n{mode}" + (f"\ngain {g:.2f}" if np.isfinite(g) else ""),
                           size=6)
    for step in range(k):
        grid.col_title(step, f"step {step}")
    return save(grid.figure(f"{name}: one start, every sweep direction", cell_inches=1.0), path)


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
    return save(fig, path)


def share(v: float) -> str:
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
    axes[2].bar_label(shares, labels=[share(v) for v in per_part["share"]], fontsize=6, padding=1)
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
            axes[3].text(j, i, share(v), ha="center", va="center", fontsize=5,
                         color="black" if v > 0.6 * top else "white")
    axes[3].set_xticks(range(heat.shape[1]), heat.columns, rotation=60, fontsize=7)
    axes[3].set_yticks(range(heat.shape[0]), heat.index, fontsize=8)
    axes[3].set_title("share of units labelled part:property", fontsize=9)
    fig.colorbar(im, ax=axes[3])
    fig.suptitle(f"{name}: population of {len(units)} units", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


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
    return save(fig, path)


def figure_recovery(recovery: pd.DataFrame, path: Path) -> bytes:
    """Concept recovery on the built-in world: does the label name the factor that really changed?"""
    groups = [(c, m) for c, m in recovery[["classifier", "masks"]].drop_duplicates().itertuples(index=False)]
    parts = list(dict.fromkeys(recovery["part"]))
    fig, axes = plt.subplots(1, 3, figsize=(20, 3.6), sharey=True)
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(parts))
    titles = {"part": "part agreement of labels with the dominant ground-truth factor",
              "concept": "concept agreement of labels with the dominant ground-truth factor",
              "top3_concept": "a concept of the dominant factor among the first three items"}
    for ax, what in zip(axes, titles):
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
        ax.set_title(titles[what], fontsize=9)
    axes[0].set_ylabel("share of labelled units", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()  # above the panels: inside, it hid bars
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return save(fig, path)


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
    return save(fig, path)


def figure_counterfactuals(arrays: dict[str, np.ndarray], items: pd.DataFrame, name: str, path: Path,
                           per_row: int = 4, max_pairs: int = 24) -> bytes:
    """One panel per pair: the linked re-rendering of a start sample, its counterfactual, and where they differ."""
    stored = items[items["image"] >= 0]
    first = stored.groupby(["origin", "target"], sort=True).head(1).head(max_pairs)
    rows = max(-(-len(first) // per_row), 1)
    grid = ImageGrid(rows, 3 * per_row, arrays["images_before"].shape[1:3], cell_titles=True, col_group=3)
    for k, item in enumerate(first.itertuples()):
        before, after = arrays["images_before"][item.image], arrays["images_after"][item.image]
        diff = np.abs(as_rgb(after) - as_rgb(before)).mean(-1)
        row, col = divmod(k, per_row)
        grid.put(row, 3 * col, before)
        grid.put(row, 3 * col + 1, after)
        grid.put(row, 3 * col + 2, diff / max(float(diff.max()), 1e-6), cmap="magma")
        mark = "flipped" if item.success else "not flipped"
        grid.cell_title(row, 3 * col, f"{item.origin_name} -> {item.target_name}", size=7, loc="left")
        grid.cell_title(row, 3 * col + 1, f"{mark}, {item.steps} steps")
        grid.cell_title(row, 3 * col + 2, f"|difference|, {item.image_distance:.2f}")
    title = f"{name}: counterfactuals (original re-rendering, counterfactual, difference)"
    return save(grid.figure(title, cell_inches=1.25), path)


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
    return save(fig, path)
