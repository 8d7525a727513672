"""How fast the unit atlas loads its index in headless chromium, at the issue's size.

Builds a synthetic atlas of ``--classifiers`` x ``--units`` units (random selectivity results,
sprite sheets of ``--thumb`` px thumbnails, one per 128 units as the paper presets shard them),
opens it ``--repeats`` times from disk in Debian's chromium (tests/browser.py) and reports the
time from navigation to a ready index (data files parsed, 100 rows drawn), median and max.

    .venv/bin/python bench/bench_atlas.py                      # 4 x 2,048 units
    .venv/bin/python bench/bench_atlas.py --units 256 --repeats 2 --out /tmp/atlas.json   # quick

Appends a record to ``bench/measurements/atlas.json``. The issue's target: under 2 s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from linkstyle.atlas import classifier_atlas, sprite_sheet, write_atlas  # noqa: E402

PARTS = ("background", "body", "head", "ear", "eye", "leg", "tail", "nose")
PROPERTIES = ("area", "luminance", "entropy_mean", "eccentricity", "angle", "center_x", "center_y", "motion")
SHARD = 128


def synthetic_atlas(out: Path, classifiers: int = 4, units: int = 2048, thumb: int = 32, steps: int = 3,
                    starts: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    atlases, sheets = [], []
    for c in range(classifiers):
        name = f"clf{c}"
        ids = np.arange(units)
        part = rng.choice(PARTS, units)
        prop = rng.choice(PROPERTIES, units)
        selective = rng.random(units) < 0.3
        table = pd.DataFrame({
            "unit": ids, "concept": np.where(selective, [f"{p}:{q}:+" for p, q in zip(part, prop)], "none"),
            "selective": selective, "faithful": rng.random(units) < 0.7, "faithfulness": rng.uniform(-1, 1, units),
            "selectivity_index": rng.random(units), "top_part": part, "top_property": prop,
            "top_delta_std": rng.normal(0, 2, units), "motion_part": rng.choice(PARTS, units), "motion": rng.random(units) / 10,
            "gain": rng.uniform(0, 1, units), "weak_sweep": rng.random(units) < 0.2,
        })
        table["concepts"] = np.where(selective, table["concept"] + "; body:area:-", "")
        table["label_share"] = np.where(selective, 1.0, np.nan)
        feats = pd.DataFrame({
            "unit": np.repeat(ids, 10), "kind": "measure", "part": rng.choice(PARTS, units * 10),
            "property": rng.choice(PROPERTIES, units * 10), "delta_std": rng.normal(0, 1.5, units * 10),
            "sign_agreement": rng.random(units * 10), "confidence": rng.random(units * 10),
        })
        feats["ci_low"], feats["ci_high"] = feats["delta_std"] - 0.5, feats["delta_std"] + 0.5
        drivers = pd.DataFrame({"origin": 0, "target": 1, "rank": np.arange(1, 11), "unit": rng.choice(ids, 10, replace=False),
                                "count": 5, "fraction": 0.5, "mean_shift": 0.1})
        n_sheets = -(-units // SHARD)
        rows = {int(u): (int(u) // SHARD, int(u) % SHARD) for u in ids}
        atlases.append(classifier_atlas(name, units, table, feats, drivers, {(0, 1): "fox -> cat"}, rows, steps=steps,
                                        starts=starts, thumb=thumb, sheets=[f"{name}-{k}.png" for k in range(n_sheets)]))
        for k in range(n_sheets):
            n = min(SHARD, units - k * SHARD)
            shade = rng.integers(0, 255, (n, 1, 1, 1, 3), dtype=np.uint8)
            cells = np.broadcast_to(shade, (n, starts * steps, thumb, thumb, 3)).copy()
            sheets.append((f"{name}-{k}.png", sprite_sheet(list(cells))))
    return write_atlas(out, atlases, sheets, "synthetic")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifiers", type=int, default=4)
    p.add_argument("--units", type=int, default=2048)
    p.add_argument("--thumb", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "bench" / "measurements" / "atlas.json"))
    args = p.parse_args(argv)
    from tests import browser

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        site = synthetic_atlas(Path(tmp) / "atlas", args.classifiers, args.units, args.thumb)
        build = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
        data = sum(f.stat().st_size for f in (site / "data").iterdir())
        driver = browser.start()
        try:
            ready, index = [], []
            for _ in range(args.repeats):
                driver.get("about:blank")
                driver.get((site / "index.html").as_uri())
                body = driver.find_element("tag name", "body")
                assert body.get_attribute("data-ready") == "1", driver.get_log("browser")
                ready.append(int(body.get_attribute("data-ready-ms")))
                index.append(int(body.get_attribute("data-load-ms")))
            count = driver.find_element("id", "count").text
            version = driver.capabilities.get("browserVersion")
        finally:
            driver.quit()
    record = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "browser": f"chromium {version} (headless)", "classifiers": args.classifiers, "units_per_classifier": args.units,
        "thumb_px": args.thumb, "repeats": args.repeats, "count_shown": count, "build_seconds": build,
        "site_mb": size / 2**20, "data_mb": data / 2**20,
        "ready_ms_median": statistics.median(ready), "ready_ms_max": max(ready), "index_ms_median": statistics.median(index),
    }
    print(f"atlas of {args.classifiers} x {args.units} units ({count}): built in {build:.1f} s, {size / 2**20:.1f} MB "
          f"({data / 2**20:.2f} MB data); ready after {record['ready_ms_median']:.0f} ms median, {record['ready_ms_max']} ms max "
          f"(index built in {record['index_ms_median']:.0f} ms) in {record['browser']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.is_file() else []
    out.write_text(json.dumps([*old, record], indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
