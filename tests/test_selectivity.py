from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkstyle.stages.selectivity import _axial_delta, _faithfulness, _labels, _Moments, _sweep_deltas


def test_angle_changes_wrap_modulo_180():
    np.testing.assert_allclose(_axial_delta(np.array([170.0, 10.0, 45.0]), np.array([10.0, 170.0, 90.0])), [20.0, -20.0, 45.0])


def test_sweep_deltas_average_over_starts_and_skip_missing_parts():
    values = np.zeros((2, 3, 3, 2))  # units, starts, steps, features
    values[0, :, -1, 0] = [1.0, 2.0, 3.0]
    values[1, 0, :, 1] = np.nan  # part absent in one start
    values[1, 1:, -1, 1] = 4.0
    deltas, counts = _sweep_deltas(values, np.array([False, False]))
    np.testing.assert_allclose(deltas, [[2.0, 0.0], [0.0, 4.0]])
    np.testing.assert_array_equal(counts, [[3, 3], [3, 2]])


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


def test_faithfulness_of_a_unit_that_follows_its_sweep_exactly():
    target = np.tile(np.linspace(0, 2, 3), (1, 4, 1))  # 1 unit, 4 starts, 3 steps
    baseline = np.arange(4.0)[None, :, None] * 10  # starts differ a lot in baseline
    f = _faithfulness(_tune(target, target + baseline), 1, 4, 3)
    assert f.loc[0, "realised_corr"] == pytest.approx(1.0)
    assert f.loc[0, "rise_ratio"] == pytest.approx(1.0)
    assert f.loc[0, "monotonic"] == 1.0 and f.loc[0, "class_kept"] == 1.0


def test_faithfulness_of_a_unit_that_ignores_its_sweep():
    target = np.tile(np.linspace(0, 2, 3), (1, 4, 1))
    realised = np.random.default_rng(0).normal(size=target.shape) * 0.01
    f = _faithfulness(_tune(target, realised, pred=np.ones(12, int)), 1, 4, 3)
    assert abs(f.loc[0, "rise_ratio"]) < 0.05
    assert f.loc[0, "class_kept"] == 0.0


def test_labels_pick_the_largest_ranked_change():
    index = pd.DataFrame(
        {
            "kind": ["measure", "measure", "measure", "factor", "factor"],
            "part": ["head", "tail", "tail", "", ""],
            "property": ["area", "n_components", "length", "hue", "pose"],
        }
    )
    delta_std = np.array([[0.5, 9.0, -2.0, 0.1, 3.0]])
    labels = _labels(delta_std, index)
    assert labels.loc[0, "top_measure"] == "tail.length"  # n_components is never a label
    assert labels.loc[0, "top_measure_delta_std"] == -2.0
    assert labels.loc[0, "top_factor"] == "pose"
    assert labels.loc[0, "measure_selectivity"] == pytest.approx(2.0 / 2.5)


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
