"""The unit atlas: its data and files (fast), and the real page in a real browser (slow)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linkstyle.atlas import NOT_ANALYSED, classifier_atlas, sprite_sheet, thumbnails, write_atlas

from . import browser

REPO = Path(__file__).resolve().parents[1]


def _units(ids):
    n = len(ids)
    return pd.DataFrame({
        "unit": ids, "concept": ["head:area:+"] + ["none"] * (n - 1), "selective": [True] + [False] * (n - 1),
        "label_share": [0.9] + [np.nan] * (n - 1),
        "faithful": [True] * n, "faithfulness": np.linspace(0, 1, n), "selectivity_index": np.linspace(1, 0, n),
        "top_part": ["head"] * n, "top_property": ["area"] * n, "top_delta_std": np.linspace(3, -3, n),
        "motion_part": ["tail"] * n, "motion": np.full(n, 0.1),
        "concepts": ["head:area:+; tail:angle:-"] + [""] * (n - 1), "gain": np.full(n, 0.4), "weak_sweep": [False] * n,
    })


def _features(ids):
    rows = []
    for u in ids:
        for part, prop, d in (("head", "area", 3.0 - u), ("tail", "angle", -2.0), ("body", "n_components", 9.0), ("leg", "luminance", np.nan)):
            rows.append({"unit": u, "kind": "measure", "part": part, "property": prop, "delta_std": d, "sign_agreement": 1.0,
                         "confidence": 0.9, "ci_low": d - 1.0, "ci_high": d + 1.0})
        rows.append({"unit": u, "kind": "factor", "part": "", "property": "tail_length", "delta_std": 50.0, "sign_agreement": 1.0,
                     "confidence": 1.0, "ci_low": 49.0, "ci_high": 51.0})
    return pd.DataFrame(rows)


def test_every_unit_is_listed_and_units_without_results_say_not_analysed():
    drivers = pd.DataFrame({"origin": [0, 0, 1], "target": [1, 1, 0], "rank": [1, 7, 1], "unit": [2, 3, 3],
                            "count": [4, 1, 3], "fraction": [1.0, 0.25, 0.75], "mean_shift": [0.5, 0.1, -0.2]})
    atlas = classifier_atlas("clf", 6, _units([1, 2, 3]), _features([1, 2, 3]), drivers, {(0, 1): "fox -> cat"},
                             {1: (0, 0), 2: (0, 1), 3: (1, 0)}, steps=3, starts=2, thumb=8, sheets=["a.png", "b.png"])
    c = atlas.columns
    assert c["unit"] == [0, 1, 2, 3, 4, 5]
    assert c["analysed"] == [False, True, True, True, False, False]
    assert c["concept"][0] == NOT_ANALYSED and c["concept"][1] == "head:area:+"
    assert c["label_share"][1] == 0.9 and c["label_share"][2] is None
    assert c["sheet"] == [-1, 0, 0, 1, -1, -1] and c["row"][3] == 0
    assert c["faithfulness"][0] is None  # NaN -> null, valid JSON
    json.dumps(atlas.payload(), allow_nan=False)
    # bars: part measures only (no factors, no component counts, no NaN), largest |change| first
    assert [b[:2] for b in atlas.bars["1"]] == [["head", "area"], ["tail", "angle"]]
    assert [b[:2] for b in atlas.bars["3"]] == [["tail", "angle"], ["head", "area"]]
    # drives: pairs where the unit is among the top 5 drivers, with names where known
    assert atlas.drives == {"2": [["fox -> cat", 1, 1.0, 0.5]], "3": [["1 -> 0", 1, 0.75, -0.2]]}
    empty = classifier_atlas("clf", 3, None, None, None, {}, {}, steps=3, starts=2, thumb=8, sheets=[])
    assert empty.columns["concept"] == [NOT_ANALYSED] * 3 and not any(empty.columns["analysed"])


def test_thumbnails_and_sprite_rows():
    images = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    small = thumbnails(images, 4)
    assert small.shape == (2, 4, 4, 3) and small.dtype == np.uint8
    assert small[0, 0, 0, 0] == round(images[0, :2, :2, 0].mean())
    assert thumbnails(images, 8) is images
    odd = thumbnails(images, 5)
    assert odd.shape == (2, 5, 5, 3)
    sheet = sprite_sheet([np.zeros((6, 4, 4, 3), np.uint8), np.ones((6, 4, 4, 3), np.uint8)])
    assert sheet.shape == (8, 24, 3) and sheet[4:].min() == 1 and sheet[:4].max() == 0


def test_the_atlas_folder_is_swapped_in_whole(tmp_path):
    out = tmp_path / "atlas"
    atlas = classifier_atlas("clf", 2, _units([0, 1]), _features([0, 1]), None, {}, {0: (0, 0), 1: (0, 1)},
                             steps=3, starts=2, thumb=4, sheets=["clf-0.png"])
    sheet = sprite_sheet([np.zeros((6, 4, 4, 3), np.uint8)] * 2)
    write_atlas(out, [atlas], [("clf-0.png", sheet)], "run")
    assert sorted(p.name for p in out.iterdir()) == ["data", "index.html", "sprites"]
    text = (out / "data" / "clf.js").read_text()
    assert text.startswith("window.LINKSTYLE_ATLAS") and '"units_in_model":2' in text

    def broken():
        yield "clf-0.png", sheet
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atlas(out, [atlas], broken(), "run")
    assert (out / "index.html").exists()  # the old atlas is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["atlas"]  # and no half-written folder is left


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_atlas", REPO / "bench" / "bench_atlas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image_widths(driver, selector, timeout=10.0):
    """naturalWidth of every image under ``selector`` once all have finished loading (-1: still loading)."""
    script = f"return [...document.querySelectorAll({json.dumps(selector)})].map(i => i.complete ? i.naturalWidth : -1)"
    end = time.monotonic() + timeout
    widths = driver.execute_script(script)
    while time.monotonic() < end and (not widths or min(widths) < 0):
        time.sleep(0.1)
        widths = driver.execute_script(script)
    return widths


def _console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _ready(driver, timeout=30.0):
    from selenium.webdriver.common.by import By

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1":
            return
        time.sleep(0.05)
    raise AssertionError(f"the atlas did not become ready in {timeout} s; console: {driver.get_log('browser')}")


@pytest.fixture(scope="module")
def driver():
    try:
        d = browser.start()
    except browser.BrowserUnavailable as exc:
        pytest.fail(str(exc))
    yield d
    d.quit()


@pytest.mark.slow
def test_the_atlas_of_the_tiny_run_in_a_real_browser(tiny_run, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, _, paths = tiny_run
    driver.get((paths.atlas / "index.html").as_uri())
    _ready(driver)
    count = driver.find_element(By.ID, "count").text
    assert count == f"{512 + 400 + 528} of {512 + 400 + 528} units", count  # every unit of the three models, analysed (16 each) or not
    rows = driver.find_elements(By.CSS_SELECTOR, "#units tbody tr")
    assert len(rows) == 100
    # search for one unit of one classifier
    Select(driver.find_element(By.ID, "classifier")).select_by_value("resnet18")
    box = driver.find_element(By.ID, "search")
    box.send_keys("7")
    rows = driver.find_elements(By.CSS_SELECTOR, "#units tbody tr")
    assert [(r.get_attribute("data-clf"), r.get_attribute("data-unit")) for r in rows] == [("resnet18", "7")]
    box.clear()
    box.send_keys("x")  # clear() sends no input event; type and delete one
    box.send_keys("\b")
    # sort by faithfulness: analysed units first, in descending order
    Select(driver.find_element(By.ID, "sort")).select_by_value("faithfulness")
    values = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#units tbody tr td:nth-child(6)")][:16]
    numbers = [float(v) for v in values if v != "n/a"]
    assert len(numbers) == 16 and numbers == sorted(numbers, reverse=True), values
    # thumbnails on the index loaded
    widths = _image_widths(driver, "#units img")
    assert len(widths) == 16 and min(widths) > 0, widths
    # open a unit page
    driver.find_element(By.CSS_SELECTOR, "#units tbody tr.unit-row").click()
    assert driver.find_element(By.ID, "unit-view").is_displayed()
    assert driver.find_element(By.ID, "unit-title").text.startswith("resnet18, unit ")
    widths = _image_widths(driver, "#unit-body > div > .strip img")
    assert len(widths) == 2 and min(widths) > 0, widths  # one sweep per start sample, loaded
    assert driver.find_elements(By.CSS_SELECTOR, "#unit-view .bar")
    driver.save_screenshot(str(browser.artifacts_dir() / "atlas-tiny-unit.png"))
    # a unit of the report: its sweeps along every direction, side by side, with their gains
    import pandas as pd

    shown = int(pd.read_parquet(paths.actmax_table("resnet18"))["unit"].iloc[0])
    driver.get((paths.atlas / "index.html").as_uri() + f"#unit/resnet18/{shown}")
    _ready(driver)
    widths = _image_widths(driver, ".directions img")
    assert len(widths) == 3 and min(widths) > 0, widths
    text = driver.find_element(By.CSS_SELECTOR, ".directions").text
    assert all(f"{mode}, gain " in text for mode in ("link_row", "pattern", "directed")), text
    # a unit that was not analysed says so instead of breaking
    driver.get((paths.atlas / "index.html").as_uri() + "#unit/regnet/399")
    _ready(driver)
    assert "not analysed" in driver.find_element(By.ID, "unit-body").text
    assert not _console_errors(driver), driver.get_log("browser")


@pytest.mark.slow
def test_an_atlas_of_four_times_2048_units_loads_and_filters(tmp_path, driver):
    """The issue's size: 4 classifiers x 2,048 units (the load time is measured by bench/bench_atlas.py)."""
    from selenium.webdriver.common.by import By

    out = _bench().synthetic_atlas(tmp_path / "atlas", classifiers=4, units=2048, thumb=16, steps=3)
    driver.get((out / "index.html").as_uri())
    _ready(driver)
    assert driver.find_element(By.ID, "count").text == "8192 of 8192 units"
    driver.find_element(By.ID, "selective").click()
    shown = int(driver.find_element(By.ID, "count").text.split()[0])
    assert 0 < shown < 8192
    assert int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready-ms")) < 10_000
    assert not _console_errors(driver), driver.get_log("browser")
