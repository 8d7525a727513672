from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkstyle.linking import (
    LinearLink,
    cosine_similarity,
    distance_correlation,
    fit_ols,
    fit_ridge_cv,
    linear_cka,
    r2_score,
    row_correlation,
)


def _data(n=400, units=30, w_dim=8, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(n, units)) * rng.uniform(0.1, 5, size=units) + rng.normal(size=units)
    coef = rng.normal(size=(units, w_dim))
    w = r @ coef + 3.0 + noise * rng.normal(size=(n, w_dim))
    return r, w, coef


def test_ols_recovers_an_exact_linear_map():
    r, w, coef = _data()
    link = fit_ols(r, w)
    np.testing.assert_allclose(link.coef, coef, atol=1e-8)
    np.testing.assert_allclose(link.intercept, 3.0, atol=1e-7)
    assert r2_score(w, link(r)) == pytest.approx(1.0)


def test_ridge_prefers_a_small_penalty_on_clean_data_and_a_larger_one_on_noise():
    r, w, _ = _data()
    clean, _ = fit_ridge_cv(r, w, [1e-3, 1.0, 100.0, 1e4], folds=5)
    assert clean.alpha == 1e-3
    rng = np.random.default_rng(1)
    r_noise = rng.normal(size=(60, 200))
    w_noise = r_noise[:, :1] + rng.normal(size=(60, 3)) * 3
    noisy, scores = fit_ridge_cv(r_noise, w_noise, [1e-3, 1.0, 100.0, 1e4], folds=5)
    assert noisy.alpha >= 100.0
    assert set(scores) == {1e-3, 1.0, 100.0, 1e4}


def test_ridge_is_deterministic_and_roundtrips_through_arrays():
    r, w, _ = _data(noise=0.5)
    a, _ = fit_ridge_cv(r, w, [0.1, 10.0], folds=4, seed=3)
    b, _ = fit_ridge_cv(r, w, [0.1, 10.0], folds=4, seed=3)
    np.testing.assert_array_equal(a.coef, b.coef)
    c = LinearLink.from_arrays(a.to_arrays())
    assert c.method == "ridge" and c.alpha == a.alpha
    np.testing.assert_allclose(c(r.astype(np.float32)), a(r), rtol=1e-4, atol=1e-3)


def test_ridge_handles_dead_units():
    r, w, _ = _data()
    r[:, 0] = 1.0
    link, _ = fit_ridge_cv(r, w, [1.0], folds=3)
    assert np.isfinite(link.coef).all()


def test_r2_of_the_mean_is_zero():
    y = np.random.default_rng(0).normal(size=(50, 3))
    assert r2_score(y, np.broadcast_to(y.mean(0), y.shape)) == pytest.approx(0.0)


def test_cka_is_one_for_rotations_and_low_for_independent_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 10))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert linear_cka(x, x @ q * 2.5 + 1) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(300, 10))) < 0.2


def test_distance_correlation_sees_shared_geometry():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    assert distance_correlation(x, x * 3) == pytest.approx(1.0)
    assert abs(distance_correlation(x, rng.normal(size=(200, 5)))) < 0.2


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.floats(0.1, 10))
def test_cosine_and_row_correlation_are_scale_invariant(dim, scale):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(20, dim))
    b = rng.normal(size=(20, dim))
    np.testing.assert_allclose(cosine_similarity(a, b * scale), cosine_similarity(a, b), atol=1e-9)
    np.testing.assert_allclose(row_correlation(a, a * scale + 1), 1.0, atol=1e-9)


def test_an_unusable_link_stops_with_its_numbers():
    from linkstyle.config import from_dict
    from linkstyle.stages.link import LinkUnusable, check_usable

    cfg = from_dict({})  # 5 classes: chance cycle agreement 0.2

    def metrics(r2: float, cycle: float) -> dict:
        return {"classifier": "c", "n_train": 57, "n_test": 14, "units": 64,
                "ridge": {"test": {"r2": r2, "cycle_agreement": cycle}}}

    check_usable(cfg, metrics(0.3, 0.9))
    with pytest.raises(LinkUnusable) as err:
        check_usable(cfg, metrics(-0.005, 0.0))
    text = str(err.value)
    assert "R^2 on the 14 held-out samples is -0.005" in text and "cycle agreement is 0.000" in text
    assert "(link.min_cycle_agreement: 0.200, chance)" in text and "57 samples for 64 units" in text
    with pytest.raises(LinkUnusable, match="cycle agreement is 0.200"):
        check_usable(cfg, metrics(0.3, 0.2))  # at chance is not above it
    check_usable(from_dict({"link": {"min_test_r2": -1.0, "min_cycle_agreement": 0.0}}), metrics(-0.005, 0.1))
