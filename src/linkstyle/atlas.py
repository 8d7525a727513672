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

from .pages import Template

#: Per-unit fields of the index, in the order of the data file's columns.
UNIT_FIELDS = ("unit", "analysed", "concept", "label_share", "concepts", "selective", "faithful", "faithfulness", "gain", "weak_sweep",
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
        keep = ["unit", "concept", "label_share", "concepts", "selective", "faithful", "faithfulness", "gain", "weak_sweep",
                "selectivity_index", "top_part", "top_property", "top_delta_std", "motion_part", "motion"]
        table = table.merge(units[keep], on="unit", how="left")
        table["analysed"] = table["concept"].notna()
    else:
        for col in ("concept", "concepts", "top_part", "top_property", "motion_part"):
            table[col] = None
        for col in ("selective", "faithful", "weak_sweep"):
            table[col] = False
        for col in ("label_share", "faithfulness", "gain", "selectivity_index", "top_delta_std", "motion"):
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
    """The atlas page (templates/atlas.html, package data: an editor and a linter read it as HTML)."""
    page = Template("atlas.html")
    scripts = "".join(page.fill("data", name=html.escape(c)) for c in classifiers)
    return page.fill("page", run=html.escape(run), scripts=scripts)
