"""The unit atlas: a static site that opens from disk (file://, no server) to browse every unit.

Layout of ``atlas/``:

- ``index.html``: the page (plain HTML, CSS and JavaScript, no framework);
- ``data/<classifier>.js``: one JSON document per classifier, columnar (one array per field,
  which parses fast and stays small at thousands of units), assigned to a global because
  browsers refuse ``fetch`` of ``file://`` URLs;
- ``sprites/<classifier>-<sheet>.png``: thumbnails, one row per unit (its sweep for each start
  sample, low to high activation), a few sheets per classifier rather than a file per image.

Units the selectivity stage has not analysed are listed as "not analysed" with no images.
The whole folder is written next to the old one and swapped in by renames, so a reader never
sees half an atlas.
"""

from __future__ import annotations

import html
import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

#: Per-unit fields of the index, in the order of the data file's columns.
UNIT_FIELDS = ("unit", "analysed", "concept", "concepts", "selective", "faithful", "faithfulness", "gain", "weak_sweep",
               "selectivity_index", "top_part", "top_property", "top_delta_std", "motion_part", "motion", "sheet", "row")
NOT_ANALYSED = "not analysed"
#: Bars per unit on its page: its largest changes of (part, property).
BARS_PER_UNIT = 10


@dataclass
class ClassifierAtlas:
    """Everything the atlas shows of one classifier (built by :func:`classifier_atlas`)."""

    name: str
    units_in_model: int
    steps: int
    starts: int
    thumb: int
    columns: dict[str, list[Any]]
    bars: dict[str, list[list[Any]]]
    drives: dict[str, list[list[Any]]]
    sheets: list[str] = field(default_factory=list)
    #: The report's units swept from one start along every direction (the actmax stage's): the
    #: directions, their sprite sheet (one row per unit, the directions side by side) and, per unit,
    #: its row there and the gain of each direction.
    directions: list[str] = field(default_factory=list)
    direction_sheet: str | None = None
    direction_rows: dict[str, list[Any]] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {"name": self.name, "units_in_model": self.units_in_model, "steps": self.steps, "starts": self.starts,
                "thumb": self.thumb, "sheets": self.sheets, "columns": self.columns, "bars": self.bars,
                "drives": self.drives, "directions": self.directions, "direction_sheet": self.direction_sheet,
                "direction_rows": self.direction_rows}


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN becomes null, numpy types become Python ones."""
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return round(value, 4) if np.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def classifier_atlas(name: str, units_in_model: int, units: pd.DataFrame | None, features: pd.DataFrame | None,
                     drivers: pd.DataFrame | None, pair_names: dict[tuple[int, int], str], sprite_rows: dict[int, tuple[int, int]],
                     steps: int, starts: int, thumb: int, sheets: list[str], top_drivers: int = 5) -> ClassifierAtlas:
    """The index of every unit of a classifier: its selectivity results where it was analysed,
    "not analysed" otherwise; the bars of its largest changes; the counterfactual pairs it drives
    (among the ``top_drivers`` units of a pair); where its thumbnails are (``sprite_rows``: unit ->
    (sheet, row))."""
    table = pd.DataFrame({"unit": np.arange(units_in_model)})
    if units is not None and len(units):
        keep = ["unit", "concept", "concepts", "selective", "faithful", "faithfulness", "gain", "weak_sweep",
                "selectivity_index", "top_part", "top_property", "top_delta_std", "motion_part", "motion"]
        table = table.merge(units[keep], on="unit", how="left")
        table["analysed"] = table["concept"].notna()
    else:
        for col in ("concept", "concepts", "top_part", "top_property", "motion_part"):
            table[col] = None
        for col in ("selective", "faithful", "weak_sweep"):
            table[col] = False
        for col in ("faithfulness", "gain", "selectivity_index", "top_delta_std", "motion"):
            table[col] = np.nan
        table["analysed"] = False
    table["concept"] = table["concept"].where(table["analysed"], NOT_ANALYSED)
    table["selective"] = table["selective"].where(table["analysed"], False).astype(bool)
    table["faithful"] = table["faithful"].where(table["analysed"], False).astype(bool)
    table["sheet"] = [sprite_rows.get(u, (-1, -1))[0] for u in table["unit"]]
    table["row"] = [sprite_rows.get(u, (-1, -1))[1] for u in table["unit"]]
    columns = {f: [_clean(v) for v in table[f].tolist()] for f in UNIT_FIELDS}

    bars: dict[str, list[list[Any]]] = {}
    if features is not None and len(features):
        parts = features[(features["kind"] == "measure") & (features["property"] != "n_components")]
        parts = parts[np.isfinite(parts["delta_std"])]
        ranked = parts.assign(_abs=parts["delta_std"].abs()).sort_values(["unit", "_abs"], ascending=[True, False])
        for unit, rows in ranked.groupby("unit", sort=False):
            top = rows.head(BARS_PER_UNIT)
            bars[str(int(unit))] = [[str(p), str(q), _clean(d), _clean(c), _clean(lo), _clean(hi)] for p, q, d, c, lo, hi in
                                    zip(top["part"], top["property"], top["delta_std"], top["confidence"], top["ci_low"],
                                        top["ci_high"])]

    drives: dict[str, list[list[Any]]] = {}
    if drivers is not None and len(drivers):
        top = drivers[drivers["rank"] <= top_drivers]
        for d in top.itertuples():
            pair = pair_names.get((int(d.origin), int(d.target)), f"{int(d.origin)} -> {int(d.target)}")
            drives.setdefault(str(int(d.unit)), []).append([pair, int(d.rank), _clean(d.fraction), _clean(d.mean_shift)])
    return ClassifierAtlas(name, units_in_model, steps, starts, thumb, columns, bars, drives, sheets)


def thumbnails(images: np.ndarray, thumb: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> [N, thumb, thumb, 3], area-averaged (or repeated when upscaling)."""
    n, h, w, _ = images.shape
    if h == thumb and w == thumb:
        return images
    if h % thumb == 0 and w % thumb == 0:
        f, g = h // thumb, w // thumb
        return images.reshape(n, thumb, f, thumb, g, 3).mean((2, 4)).round().astype(np.uint8)
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((thumb, thumb), Image.BILINEAR)) for im in images])


def sprite_sheet(strips: Sequence[np.ndarray]) -> np.ndarray:
    """One row per unit: each strip [cells, thumb, thumb, 3] laid side by side."""
    rows = [np.concatenate(list(s), axis=1) for s in strips]
    return np.concatenate(rows, axis=0)


def write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)


def write_atlas(out_dir: str | Path, atlases: Sequence[ClassifierAtlas], sheets: Iterable[tuple[str, np.ndarray]],
                run: str) -> Path:
    """Write the site into a fresh folder next to ``out_dir``, then swap it in."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp")
    (tmp / "data").mkdir(parents=True)
    (tmp / "sprites").mkdir()
    try:
        for file, sheet in sheets:
            write_png(sheet, tmp / "sprites" / file)
        for atlas in atlases:
            text = json.dumps(atlas.payload(), separators=(",", ":"), allow_nan=False)
            (tmp / "data" / f"{atlas.name}.js").write_text(
                "window.LINKSTYLE_ATLAS = window.LINKSTYLE_ATLAS || {};\n"
                f"window.LINKSTYLE_ATLAS[{json.dumps(atlas.name)}] = {text};\n")
        (tmp / "index.html").write_text(index_html(run, [a.name for a in atlases]))
        old = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.old")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def index_html(run: str, classifiers: Sequence[str]) -> str:
    scripts = "\n".join(f'<script src="data/{html.escape(c)}.js"></script>' for c in classifiers)
    return _PAGE.replace("__RUN__", html.escape(run)).replace("__SCRIPTS__", scripts)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>linkstyle atlas: __RUN__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
header { padding: 0.6rem 1rem; background: #f3f3f3; border-bottom: 1px solid #ccc; }
header h1 { font-size: 1.1rem; margin: 0 0 0.4rem; }
.controls { display: flex; flex-wrap: wrap; gap: 0.6rem; align-items: center; font-size: 0.85rem; }
.controls input[type=search] { width: 16rem; }
main { padding: 0.5rem 1rem; }
table { border-collapse: collapse; font-size: 0.8rem; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.15rem 0.5rem; text-align: left; vertical-align: middle; }
th { position: sticky; top: 0; background: #fafafa; }
tr.unit-row { cursor: pointer; } tr.unit-row:hover { background: #eef5fb; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.na { color: #999; }
.strip { display: inline-block; overflow: hidden; vertical-align: middle; position: relative; }
.strip img { position: absolute; left: 0; image-rendering: auto; }
.pager { margin: 0.5rem 0; font-size: 0.85rem; display: flex; gap: 0.6rem; align-items: center; }
#unit-view { display: none; }
#unit-view h2 { font-size: 1.05rem; margin: 0.5rem 0; }
.bars { margin: 0.5rem 0; }
.bar-row { display: flex; align-items: center; font-size: 0.8rem; margin: 2px 0; }
.bar-label { width: 26rem; }
.bar-track { position: relative; width: 320px; height: 12px; background: #f1f1f1; }
.bar { position: absolute; top: 0; height: 12px; }
.pos { background: #0072B2; } .neg { background: #D55E00; }
.facts td { border: none; padding: 0.1rem 0.6rem 0.1rem 0; }
.badge { display: inline-block; padding: 0 0.4rem; border-radius: 0.6rem; font-size: 0.75rem; background: #e8e8e8; }
.badge.yes { background: #cfe8d6; } .badge.no { background: #f6d7c7; }
</style></head>
<body data-ready="0">
<header>
<h1>linkstyle atlas: run <code>__RUN__</code></h1>
<div class="controls">
  <label>search <input id="search" type="search" placeholder="unit id or concept, e.g. 12 or head:area"></label>
  <label>classifier <select id="classifier"><option value="">all</option></select></label>
  <label>part <select id="part"><option value="">any</option></select></label>
  <label>property <select id="property"><option value="">any</option></select></label>
  <label><input id="selective" type="checkbox"> selective only</label>
  <label>sort <select id="sort">
    <option value="selectivity">selectivity index</option>
    <option value="faithfulness">faithfulness</option>
    <option value="change">largest change</option>
    <option value="unit">unit</option>
  </select></label>
  <span id="count"></span>
</div>
</header>
<main>
<div id="index-view">
  <div class="pager"><button id="prev">previous</button><span id="page"></span><button id="next">next</button></div>
  <table id="units"><thead><tr><th>classifier</th><th>unit</th><th>sweep (start 1, low to high)</th><th>concept</th>
  <th class="num">selectivity</th><th class="num">faithfulness</th><th>largest change</th><th class="num">change (sd)</th>
  <th>drives</th></tr></thead><tbody></tbody></table>
</div>
<div id="unit-view">
  <p><a href="#" id="back">&larr; all units</a></p>
  <h2 id="unit-title"></h2>
  <div id="unit-body"></div>
</div>
</main>
__SCRIPTS__
<script>
"use strict";
(function () {
  const t0 = performance.now();
  const DATA = window.LINKSTYLE_ATLAS || {};
  const PAGE = 100;
  const rows = [];
  const parts = new Set(), props = new Set();
  for (const [name, d] of Object.entries(DATA)) {
    const c = d.columns, n = c.unit.length;
    for (let i = 0; i < n; i++) {
      const r = {clf: name, data: d};
      for (const key in c) r[key] = c[key][i];
      r.drives = d.drives[String(r.unit)] || [];
      r.bars = d.bars[String(r.unit)] || [];
      r.search = (name + " " + r.unit + " " + r.concept + " " + (r.concepts || "")).toLowerCase();
      if (r.top_part) parts.add(r.top_part);
      if (r.top_property) props.add(r.top_property);
      rows.push(r);
    }
  }
  const $ = (id) => document.getElementById(id);
  const fill = (sel, values) => { for (const v of [...values].sort()) { const o = document.createElement("option"); o.value = v; o.textContent = v; sel.appendChild(o); } };
  fill($("classifier"), Object.keys(DATA)); fill($("part"), parts); fill($("property"), props);
  let page = 0, shown = rows;
  const fmt = (v, digits) => v === null || v === undefined ? "n/a" : Number(v).toFixed(digits);
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[ch]));

  function strip(r, start, scale) {
    const d = r.data, cells = d.steps, size = d.thumb * scale;
    if (r.sheet < 0) return '<span class="na">no images</span>';
    const src = "sprites/" + d.sheets[r.sheet];
    const left = -start * cells * size, top = -r.row * size;
    return '<span class="strip" style="width:' + (cells * size) + 'px;height:' + size + 'px">' +
      '<img alt="sweep of unit ' + r.unit + '" src="' + src + '" style="top:' + top + 'px;left:' + left + 'px;width:' +
      (d.steps * d.starts * size) + 'px"></span>';
  }

  function apply() {
    const q = $("search").value.trim().toLowerCase(), clf = $("classifier").value, part = $("part").value,
      prop = $("property").value, sel = $("selective").checked, sort = $("sort").value;
    shown = rows.filter((r) => (!clf || r.clf === clf) && (!part || r.top_part === part) && (!prop || r.top_property === prop) &&
      (!sel || r.selective) && (!q || (/^\\d+$/.test(q) ? String(r.unit) === q : r.search.includes(q))));
    const key = {selectivity: "selectivity_index", faithfulness: "faithfulness", change: "top_delta_std", unit: "unit"}[sort];
    const val = (r) => { const v = r[key]; return v === null || v === undefined ? -Infinity : (key === "top_delta_std" ? Math.abs(v) : v); };
    shown.sort(sort === "unit" ? (a, b) => a.clf.localeCompare(b.clf) || a.unit - b.unit : (a, b) => val(b) - val(a) || a.unit - b.unit);
    page = 0; render();
  }

  function render() {
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    $("count").textContent = shown.length + " of " + rows.length + " units";
    $("page").textContent = "page " + (page + 1) + " of " + pages;
    const html = [];
    for (const r of shown.slice(page * PAGE, (page + 1) * PAGE)) {
      const cls = r.analysed ? "" : ' class="na"';
      html.push('<tr class="unit-row" data-clf="' + esc(r.clf) + '" data-unit="' + r.unit + '"><td>' + esc(r.clf) + "</td><td>" + r.unit +
        "</td><td>" + strip(r, 0, 0.5) + "</td><td" + cls + ">" + esc(r.concept) + (r.analysed && !r.faithful ? " [unfaithful]" : "") +
        '</td><td class="num">' + fmt(r.selectivity_index, 2) + '</td><td class="num">' + fmt(r.faithfulness, 2) + "</td><td>" +
        (r.top_part ? esc(r.top_part + "." + r.top_property) : "") + '</td><td class="num">' + fmt(r.top_delta_std, 2) + "</td><td>" +
        esc(r.drives.map((x) => x[0]).join(", ")) + "</td></tr>");
    }
    $("units").tBodies[0].innerHTML = html.join("");
  }

  function showUnit(clf, unit) {
    const r = rows.find((x) => x.clf === clf && x.unit === unit);
    if (!r) { location.hash = ""; return; }
    $("index-view").style.display = "none"; $("unit-view").style.display = "block";
    $("unit-title").textContent = clf + ", unit " + unit + ": " + r.concept;
    const out = [];
    if (!r.analysed) {
      out.push('<p class="na">This unit was not analysed (it is not in tune.units); run the workflow with it to see its sweeps.</p>');
    } else {
      out.push("<h3>Sweeps (low to high activation), one row per start sample</h3>");
      for (let s = 0; s < r.data.starts; s++) out.push("<div>" + strip(r, s, 1.5) + "</div>");
      const dir = r.data.direction_rows[String(r.unit)];
      if (dir) {
        const d = r.data, size = d.thumb * 1.5, cells = d.steps, all = d.directions.length * cells * size;
        out.push('<h3>Along every sweep direction (first start sample; the analysis uses tune.direction)</h3><div class="directions">');
        d.directions.forEach((mode, j) => {
          out.push('<div><span class="strip" style="width:' + (cells * size) + "px;height:" + size + 'px"><img alt="' + esc(mode) +
            " sweep of unit " + r.unit + '" src="sprites/' + d.direction_sheet + '" style="top:' + (-dir[0] * size) + "px;left:" +
            (-j * cells * size) + "px;width:" + all + 'px"></span> ' + esc(mode) + ", gain " + fmt(dir[1][j], 2) + "</div>");
        });
        out.push("</div>");
      }
      out.push('<table class="facts">' +
        "<tr><td>faithful</td><td><span class=\\"badge " + (r.faithful ? "yes" : "no") + '">' + (r.faithful ? "yes" : "no") + "</span> (Spearman " + fmt(r.faithfulness, 2) + ")</td></tr>" +
        "<tr><td>gain</td><td>" + fmt(r.gain, 2) + " (realised change of the unit / target change, median over start samples)" +
          (r.weak_sweep ? ' <span class="badge no">weak sweep</span>' : "") + "</td></tr>" +
        "<tr><td>selectivity index</td><td>" + fmt(r.selectivity_index, 3) + (r.selective ? " (labelled)" : "") + "</td></tr>" +
        "<tr><td>motion</td><td>" + (r.motion_part ? esc(r.motion_part) + ", " + fmt(r.motion, 3) + " image widths" : "n/a") + "</td></tr></table>");
      out.push("<h3>Explanation (ranked: part, property, direction)</h3>" + (r.concepts ? "<ol>" +
        r.concepts.split("; ").map((c) => "<li>" + esc(c) + "</li>").join("") + "</ol>" : "<p>none: no change stands out</p>"));
      out.push("<h3>Largest changes (in spreads of each property over reference images; 95% bootstrap interval, confidence)</h3><div class=\\"bars\\">");
      const top = Math.max(1e-9, ...r.bars.map((b) => Math.abs(b[2] || 0)));
      for (const b of r.bars) {
        const w = Math.abs(b[2] || 0) / top * 150, pos = (b[2] || 0) >= 0;
        out.push('<div class="bar-row"><span class="bar-label">' + esc(b[0] + "." + b[1]) + " " + fmt(b[2], 2) +
          ' [' + fmt(b[4], 2) + ', ' + fmt(b[5], 2) + '], confidence ' + fmt(b[3], 2) + '</span><span class="bar-track"><span class="bar ' + (pos ? "pos" : "neg") +
          '" style="left:' + (pos ? 160 : 160 - w) + "px;width:" + w + 'px"></span></span></div>');
      }
      out.push("</div>");
    }
    out.push("<h3>Counterfactuals it drives</h3>");
    out.push(r.drives.length ? "<ul>" + r.drives.map((x) => "<li>" + esc(x[0]) + ": rank " + x[1] + ", among the top shifted units in " +
      fmt(100 * x[2], 0) + "% of the pair's counterfactuals (mean shift " + fmt(x[3], 3) + ")</li>").join("") + "</ul>"
      : '<p class="na">none (not among the top driving units of any pair)</p>');
    $("unit-body").innerHTML = out.join("");
  }

  function route() {
    const m = location.hash.match(/^#unit\\/([^/]+)\\/(\\d+)$/);
    if (m) { showUnit(decodeURIComponent(m[1]), Number(m[2])); return; }
    $("unit-view").style.display = "none"; $("index-view").style.display = "block";
  }

  $("search").addEventListener("input", apply);
  for (const id of ["classifier", "part", "property", "selective", "sort"]) $(id).addEventListener("change", apply);
  $("prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
  $("next").addEventListener("click", () => { page += 1; render(); });
  $("units").addEventListener("click", (e) => {
    const tr = e.target.closest("tr.unit-row");
    if (tr) location.hash = "#unit/" + encodeURIComponent(tr.dataset.clf) + "/" + tr.dataset.unit;
  });
  $("back").addEventListener("click", (e) => { e.preventDefault(); location.hash = ""; });
  window.addEventListener("hashchange", route);
  apply(); route();
  document.body.dataset.loadMs = String(Math.round(performance.now() - t0));  // building the index
  document.body.dataset.readyMs = String(Math.round(performance.now()));  // since navigation began (data files parsed)
  document.body.dataset.ready = "1";
})();
</script>
</body></html>
"""
