from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkstyle.config import SelectivityConfig, load_config
from linkstyle.measures import PROPERTIES
from linkstyle.stages.selectivity import (
    NO_CONCEPT,
    _axial_delta,
    _faithfulness,
    _labels,
    _Moments,
    _selectivity_index,
    _spearman_rows,
    _sweep_deltas,
    concept_recovery,
    population,
    summarise,
)

CRIT = SelectivityConfig(faithful_min_spearman=0.5, min_effect=0.5, min_sign_agreement=0.8, min_selectivity=0.2)


def test_angle_changes_wrap_modulo_180():
    np.testing.assert_allclose(_axial_delta(np.array([170.0, 10.0, 45.0]), np.array([10.0, 170.0, 90.0])), [20.0, -20.0, 45.0])


def test_sweep_deltas_average_over_starts_and_skip_missing_parts():
    values = np.zeros((2, 3, 3, 2))  # units, starts, steps, features
    values[0, :, -1, 0] = [1.0, 2.0, 3.0]
    values[1, 0, :, 1] = np.nan  # part absent in one start
    values[1, 1:, -1, 1] = 4.0
    deltas, counts, agree = _sweep_deltas(values, np.array([False, False]))
    np.testing.assert_allclose(deltas, [[2.0, 0.0], [0.0, 4.0]])
    np.testing.assert_array_equal(counts, [[3, 3], [3, 2]])
    np.testing.assert_allclose(agree, [[1.0, 0.0], [0.0, 1.0]])  # no change: no sign to agree with


def test_sign_agreement_counts_starts_that_go_the_mean_way():
    values = np.zeros((1, 5, 2, 1))
    values[0, :, 1, 0] = [1.0, 2.0, 3.0, -0.5, 1.0]
    _, _, agree = _sweep_deltas(values, np.array([False]))
    assert agree[0, 0] == pytest.approx(0.8)


def _tune(target, realised, pred=None, cls=None):
    n = target.size
    return pd.DataFrame(
        {
            "target": target.reshape(-1),
            "realised": realised.reshape(-1),
            "pred": np.zeros(n, int) if pred is None else pred.reshape(-1),
            "cls": np.zeros(n, int) if cls is None else cls.reshape(-1),
        }
    )


def test_spearman_rows():
    a = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    b = np.array([[1.0, 5.0, 9.0], [3.0, 2.0, 1.0], [7.0, 7.0, 7.0]])
    rho = _spearman_rows(a, b)
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0) and np.isnan(rho[2])
    assert _spearman_rows(np.array([0.0, 1, 2, 3]), np.array([0.0, 10, 11, 1000])) == pytest.approx(1.0)  # ranks, not values


def test_faithfulness_of_a_unit_that_follows_its_sweep_exactly():
    target = np.tile(np.linspace(0, 2, 3), (1, 4, 1))  # 1 unit, 4 starts, 3 steps
    baseline = np.arange(4.0)[None, :, None] * 10  # starts differ a lot in baseline
    f = _faithfulness(_tune(target, target + baseline), 1, 4, 3, 0.5)
    assert f.loc[0, "faithfulness"] == pytest.approx(1.0) and f.loc[0, "faithful"]
    assert f.loc[0, "rise_ratio"] == pytest.approx(1.0)
    assert f.loc[0, "monotonic"] == 1.0 and f.loc[0, "class_kept"] == 1.0


def test_faithfulness_is_the_median_over_starts():
    target = np.tile(np.linspace(0, 2, 3), (1, 5, 1))
    realised = target.copy()
    realised[0, :2] = realised[0, :2, ::-1]  # two of five starts go the wrong way
    f = _faithfulness(_tune(target, realised), 1, 5, 3, 0.5)
    assert f.loc[0, "faithfulness"] == pytest.approx(1.0) and f.loc[0, "faithful"]
    realised[0, 2] = realised[0, 2, ::-1]  # now three of five
    f = _faithfulness(_tune(target, realised), 1, 5, 3, 0.5)
    assert f.loc[0, "faithfulness"] == pytest.approx(-1.0) and not f.loc[0, "faithful"]


def test_faithfulness_of_a_unit_that_ignores_its_sweep():
    target = np.tile(np.linspace(0, 2, 3), (1, 4, 1))
    realised = np.zeros_like(target)  # a dead unit: no correlation at all
    f = _faithfulness(_tune(target, realised, pred=np.ones(12, int)), 1, 4, 3, 0.5)
    assert np.isnan(f.loc[0, "faithfulness"]) and not f.loc[0, "faithful"]
    assert f.loc[0, "rise_ratio"] == 0.0 and f.loc[0, "class_kept"] == 0.0


def test_selectivity_index():
    si = _selectivity_index(np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0], [3.0, 1.0, np.nan], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(si, [0.0, 1.0, 0.5, 0.0])


INDEX = pd.DataFrame(
    {
        "kind": ["measure", "measure", "measure", "measure", "factor", "factor"],
        "part": ["head", "tail", "tail", "tail", "", ""],
        "property": ["area", "n_components", "width", "motion", "hue", "pose"],
    }
)


def test_labels_pick_the_largest_ranked_change():
    delta_std = np.array([[0.5, 9.0, -2.0, 7.0, 0.1, 3.0]])
    agree = np.ones_like(delta_std)
    labels = _labels(delta_std, agree, INDEX, CRIT)
    assert labels.loc[0, "top_part"] == "tail" and labels.loc[0, "top_property"] == "width"  # counts and motion never label
    assert labels.loc[0, "top_delta_std"] == -2.0
    assert labels.loc[0, "top_factor"] == "pose"
    assert labels.loc[0, "selectivity_index"] == pytest.approx((2.0 - 0.5) / 2.5)
    assert labels.loc[0, "concept"] == "tail:width:-" and labels.loc[0, "selective"]


@pytest.mark.parametrize("change, agreement, why", [(0.4, 1.0, "too small"), (2.0, 0.6, "inconsistent"), (0.6, 1.0, "unselective")])
def test_labels_say_none_when_a_test_fails(change, agreement, why):
    delta_std = np.array([[0.55 if why == "unselective" else 0.1, 0.0, change, 0.0, 0.0, 0.0]])
    labels = _labels(delta_std, np.full_like(delta_std, agreement), INDEX, CRIT)
    assert labels.loc[0, "concept"] == NO_CONCEPT and not labels.loc[0, "selective"], why


def test_population_shares():
    units = pd.DataFrame({"selective": [True, True, False, True], "faithful": [True, False, True, True],
                          "top_part": ["head", "head", "tail", "tail"], "top_property": ["area", "area", "width", "width"]})
    pop = population(units, INDEX).set_index(["part", "property"])
    assert pop.loc[("head", "area"), "n_selective"] == 2 and pop.loc[("head", "area"), "n_selective_faithful"] == 1
    assert pop.loc[("tail", "width"), "share"] == 0.25
    assert pop.loc[("*", "*"), "n_selective"] == 3 and pop.loc[("*", "*"), "share_faithful"] == pytest.approx(2 / 3)
    assert ("tail", "motion") not in pop.index  # never a label


def test_concept_recovery_counts_matches_and_chance():
    concepts = {"ear_size": (("ear", "area"), ("ear", "width")), "hue": (("body", "luminance"), ("head", "luminance"))}
    units = pd.DataFrame({
        "selective": [True, True, True, True, False],
        "top_part": ["ear", "ear", "head", "body", "ear"],
        "top_property": ["area", "angle", "luminance", "area", "area"],
        "top_factor": ["ear_size", "ear_size", "hue", "hue", "hue"],
    })
    rec = concept_recovery(units, concepts, "truth").set_index("part")
    assert rec.loc["all", "n_labelled"] == 4
    assert rec.loc["all", "part_agreement"] == 1.0  # ear, ear, head (fur), body
    assert rec.loc["all", "concept_agreement"] == 0.5  # ear:area and head:luminance
    assert rec.loc["ear", "concept_agreement"] == 0.5 and rec.loc["body", "n_labelled"] == 2
    assert 0 < rec.loc["all", "chance_part_agreement"] < 1


def test_summarise_labels_a_unit_that_grows_one_part():
    """Two units x 4 starts x 3 steps: unit 7 grows the ear, unit 9 changes nothing in particular.

    As in real sweeps, start samples differ far more from each other than the steps of one sweep
    do (the spread that normalises every change is mostly between starts)."""
    cfg = load_config(None, {"tune": {"n_steps": 3}})
    rng = np.random.default_rng(0)
    k, n_s, parts = 3, 4, ["background", "ear"]
    rows = []
    offset = rng.normal(0, 0.1, (n_s, len(parts), len(PROPERTIES)))
    for unit in (7, 9):
        for s in range(n_s):
            for step in range(k):
                for i, part in enumerate(parts):
                    vals = {p: offset[s, i, j] + rng.normal(0, 0.005) for j, p in enumerate(PROPERTIES)}
                    if unit == 7 and part == "ear":
                        vals["area"] += 0.15 * step
                    rows.append({"unit": unit, "start": s, "step": step, "masks": "truth", "part": part, **vals})
    meas = pd.DataFrame(rows)
    meas["part"] = pd.Categorical(meas["part"], categories=parts)
    meas["masks"] = pd.Categorical(meas["masks"])
    t = np.linspace(0, 1, k)
    tune = pd.DataFrame([{"unit": u, "start": s, "step": j, "target": t[j], "realised": t[j] * (1 if u == 7 else -1),
                          "pred": 0, "cls": 0} for u in (7, 9) for s in range(n_s) for j in range(k)])
    out = summarise(cfg, [([7, 9], tune, meas)])
    u = out.units.set_index("unit")
    assert u.loc[7, "concept"] == "ear:area:+" and u.loc[7, "faithful"]
    assert not u.loc[9, "faithful"]
    assert set(out.features.columns) >= {"unit", "part", "property", "delta_std", "sign_agreement", "faithful"}
    assert len(out.features) == 2 * len(parts) * len(PROPERTIES)
    assert out.population.set_index(["part", "property"]).loc[("ear", "area"), "n_selective"] >= 1


def test_running_moments_match_numpy_and_ignore_nan():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    x[::7, 1] = np.nan
    m = _Moments()
    m.add(x[:40].reshape(4, 10, 3))  # 4 units of 10 rows
    m.add(x[40:].reshape(6, 10, 3))
    np.testing.assert_allclose(m.std(), np.nanstd(x, axis=0), rtol=1e-10)


def test_running_moments_do_not_depend_on_how_units_are_split_into_shards():
    rng = np.random.default_rng(1)
    x = rng.lognormal(sigma=3.0, size=(12, 9, 4))  # wide range: float64 sums round differently by order
    stds = []
    for cuts in ([12], [5, 7], [1] * 12, [3, 3, 3, 3]):
        m, start = _Moments(), 0
        for n in cuts:
            m.add(x[start : start + n])
            start += n
        stds.append(m.std())
    for other in stds[1:]:
        np.testing.assert_array_equal(other, stds[0])
