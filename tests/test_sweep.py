from __future__ import annotations

import numpy as np
import pytest

from linkstyle.linking import fit_ols, fit_ridge_cv
from linkstyle.sweep import WithinClass, gain, plan_sweeps, sweep_directions, sweep_values


def _world(n=3000, seed=0):
    """w with class-dependent means; units read w linearly plus noise; unit 3 is a probe of w[0]
    built from the other units (a linear combination of them), as a linear probe in feature space is."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, n)
    means = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    w = means[classes] + rng.normal(size=(n, 4))
    r = np.empty((n, 4))
    r[:, 0] = w[:, 0] + w[:, 1] + 0.3 * rng.normal(size=n)
    r[:, 1] = w[:, 1] - w[:, 2] + 0.3 * rng.normal(size=n)
    r[:, 2] = w[:, 2] + 0.3 * rng.normal(size=n)
    r[:, 3] = r[:, 0] - r[:, 1] - r[:, 2]  # = w0 + w1 - w1 + w2 - w2 + noise: reads w[0]
    return r, w, classes


def test_pattern_is_the_within_class_regression_of_w_on_the_unit():
    r, w, classes = _world()
    stats = WithinClass.of(r, w, classes)
    pattern = stats.pattern()
    # unit 2 reads w[2] alone: its pattern points along w[2], with slope Var(w2) / Var(r2) = 1 / 1.09
    np.testing.assert_allclose(pattern[2], [0, 0, 1 / 1.09, 0], atol=0.05)
    # class means differ along w[0..2]; removing them keeps species differences out of the pattern
    pooled = WithinClass.of(r, w, np.zeros(len(r), int)).pattern()
    assert np.abs(pooled[2, :2]).max() > 0.1 > np.abs(pattern[2, :2]).max()


def test_the_pattern_of_a_probe_names_its_factor_where_the_link_row_does_not():
    r, w, classes = _world()
    link = fit_ols(r, w)
    d_pattern, _ = sweep_directions("pattern", link, r, w, classes, [3])
    d_row, _ = sweep_directions("link_row", link, r, w, classes, [3])
    cos = lambda a, b: abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    axis = np.array([1.0, 0, 0, 0])
    assert cos(d_pattern[0], axis) > 0.95
    assert cos(d_row[0], axis) < 0.9  # a decoder weight: shared with the units it is made of


def test_a_pattern_sweep_moves_the_units_linear_readout_by_its_r2():
    """The identity docs/selectivity.md rests on: along the pattern, the within-class read-out
    b_u = Sigma_w^-1 Cov(w, r_u) changes by b_u . d_u = R^2 of the unit from w, so the expected gain
    of a pattern sweep is the unit's R^2 (1 only for a unit that w explains fully)."""
    r, w, classes = _world()
    r = np.column_stack([r, r[:, 2] + 2.0 * np.random.default_rng(1).normal(size=len(r))])  # a noisy unit
    link = fit_ols(r, w)
    d, r2 = sweep_directions("pattern", link, r, w, classes, range(r.shape[1]))
    stats = WithinClass.of(r, w, classes)
    b = np.linalg.solve(stats.cov_w, stats.cov_wr).T
    np.testing.assert_allclose((b * d).sum(1), r2, rtol=1e-6)
    assert r2[4] < 0.3 < 0.8 < r2[2]  # noise lowers R^2, and with it how far the pattern moves the unit


def test_directed_is_the_least_norm_change_of_w_that_moves_the_units_readout_by_one():
    r, w, classes = _world()
    link = fit_ridge_cv(r, w, [0.1, 1.0, 10.0])[0]
    d, r2 = sweep_directions("directed", link, r, w, classes, [0, 1, 2])
    stats = WithinClass.of(r[:, :3], w, classes)
    b = np.linalg.solve(stats.cov_w, stats.cov_wr).T  # within-class regression of each unit on w
    np.testing.assert_allclose((b * d).sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(d, b / (b**2).sum(1, keepdims=True), rtol=1e-6)  # parallel to b: least norm
    assert (r2 > 0.8).all()


def test_directed_leaves_a_factor_that_only_goes_with_the_unit_alone_where_the_pattern_moves_it():
    """Within class w[1] is correlated with w[0] (rho 0.6); the unit reads w[0] only. The pattern
    (what goes with the unit in the data) moves w[1] too; the directed sweep does not."""
    rng = np.random.default_rng(1)
    n = 4000
    classes = rng.integers(0, 2, n)
    w0 = rng.normal(size=n)
    w = np.stack([w0, 0.6 * w0 + 0.8 * rng.normal(size=n), rng.normal(size=n)], 1) + 2.0 * classes[:, None]
    r = (w[:, 0] + 0.2 * rng.normal(size=n))[:, None]
    link = fit_ols(r, w)
    pattern, _ = sweep_directions("pattern", link, r, w, classes, [0])
    directed, _ = sweep_directions("directed", link, r, w, classes, [0])
    assert abs(pattern[0, 1]) > 0.5 * abs(pattern[0, 0])
    assert abs(directed[0, 1]) < 0.05 * abs(directed[0, 0]) and abs(directed[0, 0] - 1.0) < 0.05


def test_link_row_sweeps_are_the_papers_link_of_r_with_one_unit_set():
    r, w, classes = _world()
    link = fit_ols(r, w)
    low, high = r.min(0), r.max(0)
    plan, _ = plan_sweeps("link_row", link, (r, w, classes), r[:2], [1, 3], low, high, 3)
    for i in range(plan.n_images):
        u, s, k = plan.units[plan.unit_index[i]], plan.start_index[i], plan.step_index[i]
        changed = r[s].copy()
        changed[u] = sweep_values(low[[u]], high[[u]], 3)[0, k]
        np.testing.assert_allclose(plan.latents(slice(i, i + 1)).numpy()[0], link(changed[None])[0], rtol=1e-4, atol=1e-4)


def test_an_images_latent_does_not_depend_on_its_batch():
    r, w, classes = _world()
    link = fit_ols(r, w)
    plan, _ = plan_sweeps("pattern", link, (r, w, classes), r[:3], [0, 2], r.min(0), r.max(0), 4)
    whole = plan.latents(slice(0, plan.n_images)).numpy()
    parts = np.concatenate([plan.latents(slice(i, min(i + 5, plan.n_images))).numpy() for i in range(0, plan.n_images, 5)])
    np.testing.assert_array_equal(whole, parts)


def test_unknown_direction_is_refused():
    r, w, classes = _world(200)
    with pytest.raises(ValueError, match="unknown sweep direction 'sideways'"):
        sweep_directions("sideways", fit_ols(r, w), r, w, classes, [0])


def test_gain_is_realised_over_target_change():
    target = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    realised = np.array([[5.0, 5.5, 6.0], [0.0, 1.0, 2.0]])
    g = gain(target, realised)
    assert g[0] == pytest.approx(0.5) and np.isnan(g[1])
