from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from linkstyle.counterfactual import (
    CounterfactualError,
    CounterfactualSettings,
    SearchProblem,
    adam_step,
    counterfactual_loss,
    driving_units,
    find_counterfactuals,
    find_counterfactuals_one_by_one,
    linear_head,
    search,
)
from linkstyle.errors import LinkstyleError

REPO = Path(__file__).resolve().parents[1]


def _openblas():
    """numpy's bundled OpenBLAS (best effort: None where it is not found)."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            libs = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in libs:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get, put = f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}"
                if hasattr(lib, get) and hasattr(lib, put):
                    return getattr(lib, get), getattr(lib, put)
    return None


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors and matrices: one thread each for torch and numpy's BLAS. Under ``pytest -n 2``
    on 2 cores, more threads stall each other (a 240 x 512 ridge fit then takes 15 s, not 0.7)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    blas = _openblas()
    blas_before = blas[0]() if blas else None
    if blas:
        blas[1](1)
    yield
    torch.set_num_threads(before)
    if blas:
        blas[1](blas_before)


def synthetic(n=24, units=32, classes=4, w_dim=6, seed=0):
    """A random head and link, post-ReLU features, each item's origin its head prediction."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(units, classes)
    with torch.no_grad():
        head.weight.copy_(0.3 * torch.randn(classes, units, generator=g))
        head.bias.copy_(0.1 * torch.randn(classes, generator=g))
    r = torch.relu(torch.randn(n, units, generator=g) + 0.3)
    coef = 0.2 * torch.randn(units, w_dim, generator=g)
    intercept = torch.randn(w_dim, generator=g)
    with torch.no_grad():
        origin = head(r).argmax(1)
    target = (origin + 1) % classes
    return r, origin, target, head, coef, intercept


def linear_check(w_dim=6, classes=4, seed=1):
    """A stand-in for render + classify: a fixed linear classifier of w."""
    a = torch.randn(w_dim, classes, generator=torch.Generator().manual_seed(seed))
    return lambda w: (w.double() @ a.double()).argmax(1)


def test_the_loss_is_the_papers_equation_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]], dtype=torch.float64)
    w_after = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    w_before = torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    origin, target = torch.tensor([0, 2]), torch.tensor([1, 3])
    cos = torch.tensor([1 / 2**0.5, 1.0], dtype=torch.float64)
    # the paper's weights (1, 0.6, 10): -logit_t + 0.6 logit_o - 10 cos
    paper = torch.tensor([-2.0 + 0.6 * 1.0, -0.0 + 0.6 * 2.0], dtype=torch.float64) - 10 * cos
    torch.testing.assert_close(counterfactual_loss(logits, w_after, w_before, origin, target), paper)
    # weight_other adds the strongest class that is neither origin nor target (item 0: class 3; item 1: class 0)
    got = counterfactual_loss(logits, w_after, w_before, origin, target, weight_target=2.0, weight_origin=0.5,
                              weight_cosine=3.0, weight_other=1.5)
    want = torch.tensor([-2 * 2.0 + 0.5 * 1.0 + 1.5 * 4.0, -2 * 0.0 + 0.5 * 2.0 + 1.5 * 0.5], dtype=torch.float64) - 3 * cos
    torch.testing.assert_close(got, want)
    # with two classes there is no third one to push down
    two = counterfactual_loss(logits[:, :2], w_after, w_before, torch.tensor([0, 1]), torch.tensor([1, 0]), weight_other=5.0)
    torch.testing.assert_close(two, torch.tensor([-2.0 + 0.6, -0.5 - 0.6], dtype=torch.float64) - 10 * cos)


def test_the_optimiser_step_is_adam_then_l1_prox_then_projection():
    s = CounterfactualSettings(lr=0.1, l1=0.0, nonnegative=False)
    d, zeros = torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)
    grad = torch.tensor([[2.0, -0.5, 1e-3]], dtype=torch.float64)
    scale = torch.tensor([4.0], dtype=torch.float64)
    r = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    new, m1, m2 = adam_step(d, zeros, zeros, grad, r, scale, 1, s)
    torch.testing.assert_close(m1, 0.1 * grad)
    torch.testing.assert_close(m2, 0.001 * grad**2)
    # Adam's first step is sign-like: lr * scale against the gradient's sign
    torch.testing.assert_close(new, -0.1 * 4.0 * grad / (grad.abs() + s.eps))
    # L1's proximal step keeps a unit only where |gradient| * scale exceeds l1, shrunk by lr * l1 / (|g| + eps) ...
    sparse, _, _ = adam_step(d, zeros, zeros, grad, r, scale, 1, CounterfactualSettings(lr=0.1, l1=1.0, nonnegative=False))
    torch.testing.assert_close(sparse[0, :2], new[0, :2] - torch.sign(new[0, :2]) * 0.1 * 1.0 / (grad[0, :2].abs() + s.eps))
    assert sparse[0, 2] == 0
    # ... and the projection keeps r - d >= 0: d may not exceed r
    big = torch.tensor([[-50.0, 0.0, 0.0]], dtype=torch.float64)
    capped, _, _ = adam_step(d, zeros, zeros, big, r, scale, 1, CounterfactualSettings(lr=1.0))
    assert capped[0, 0] == 1.0


def test_search_problem_is_checked_once_and_shared_by_both_searches():
    import inspect

    r, origin, target, head, coef, intercept = synthetic(n=3)
    s = CounterfactualSettings(max_steps=15, check_every=5)
    problem = SearchProblem.of(r.numpy(), origin, target, head, coef, intercept, linear_check(), s)
    assert isinstance(problem.r, torch.Tensor) and problem.origin.dtype == torch.long and len(problem) == 3
    one = problem.item(1)
    assert len(one) == 1 and torch.equal(one.r, problem.r[1:2]) and one.head is head and one.settings is s
    ref = find_counterfactuals(r, origin, target, head, coef, intercept, linear_check(), s)
    got = search(problem)
    for name, value in ref.to_arrays().items():
        np.testing.assert_array_equal(got.to_arrays()[name], value, err_msg=name)
    params = list(inspect.signature(find_counterfactuals).parameters)
    assert params == list(inspect.signature(find_counterfactuals_one_by_one).parameters) == [
        "r", "origin", "target", "head", "coef", "intercept", "check", "settings", "back", "render", "render_batch"]
    assert SearchProblem.of(r, origin, target, head, coef, intercept).settings == CounterfactualSettings()
    with pytest.raises(CounterfactualError, match="render_batch"):
        SearchProblem.of(r, origin, target, head, coef, intercept, render=lambda w: w, render_batch=0)


def test_the_optimiser_flips_most_items_of_a_synthetic_problem():
    r, origin, target, head, coef, intercept = synthetic()
    s = CounterfactualSettings(max_steps=100, check_every=5, lr=0.05)
    res = find_counterfactuals(r, origin, target, head, coef, intercept, None, s)
    assert len(res) == len(r) and res.success_rate >= 0.9
    ok = res.success
    with torch.no_grad():
        after = head(res.r_after)
    assert (after[ok].argmax(1) == target[ok]).all()
    torch.testing.assert_close(res.logits_after, after, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res.logits_before, head(r).detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res.r_after, r - res.shift, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.w_after, res.r_after @ coef + intercept, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res.l1, res.shift.abs().sum(1))
    assert (res.r_after >= 0).all() and (res.shift <= r).all()
    assert res.shift.dtype == torch.float32 and res.top_units.shape == (len(r), s.top_units)
    assert ((res.steps[ok] % s.check_every) == 0).all() and (res.steps[~ok] == s.max_steps).all()
    assert (res.pred_after[ok] == target[ok]).all() and (res.pred_before == origin).all()
    rows = torch.arange(len(r))
    torch.testing.assert_close(res.conf_target_after, after.softmax(1)[rows, target])
    torch.testing.assert_close(res.conf_origin_before, head(r).detach().softmax(1)[rows, origin])
    assert (res.conf_target_after[ok] > res.conf_target_before[ok]).all()
    # the top units are those with the largest |shift|, largest first
    first = res.top_units[:, 0]
    assert (res.shift.abs()[rows, first] == res.shift.abs().max(1).values).all()


@pytest.mark.parametrize("with_check", [False, True])
def test_batched_results_match_one_item_at_a_time(with_check):
    r, origin, target, head, coef, intercept = synthetic(n=12)
    check = linear_check() if with_check else None
    s = CounterfactualSettings(max_steps=60, check_every=3, l1=0.02, lr=0.05)
    batched = find_counterfactuals(r, origin, target, head, coef, intercept, check, s)
    single = find_counterfactuals_one_by_one(r, origin, target, head, coef, intercept, check, s)
    assert 0 < batched.success.sum() and (batched.success == single.success).all()
    for name, value in batched.to_arrays().items():
        other = single.to_arrays()[name]
        if value.dtype.kind in "fc":
            np.testing.assert_allclose(value, other, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(value, other, err_msg=name)


def test_items_stop_at_their_first_success_and_only_running_items_are_checked():
    r, origin, target, head, coef, intercept = synthetic(n=16)
    base = linear_check()
    sizes = []

    def check(w):
        sizes.append(len(w))
        return base(w)

    s = CounterfactualSettings(max_steps=40, check_every=4, lr=0.02)
    res = find_counterfactuals(r, origin, target, head, coef, intercept, check, s)
    assert 0 < res.success.sum() < len(r)  # some finish early, some run on: the test means something
    # call j is at step j * check_every and sees exactly the items not stopped before it
    expected = [int((res.steps >= j * s.check_every).sum()) for j in range(s.max_steps // s.check_every + 1)]
    assert sizes == expected[: len(sizes)]
    # a frozen item's shift no longer changes: a longer run leaves it as it was
    longer = find_counterfactuals(r, origin, target, head, coef, intercept, base, CounterfactualSettings(max_steps=80, check_every=4, lr=0.02))
    ok = res.success
    torch.testing.assert_close(longer.shift[ok], res.shift[ok], rtol=0, atol=0)
    assert (longer.steps[ok] == res.steps[ok]).all()
    assert not torch.equal(longer.shift[~ok], res.shift[~ok])


def tiny_problem(weight, bias, r):
    head = nn.Linear(len(r[0]), len(weight))
    with torch.no_grad():
        head.weight.copy_(torch.tensor(weight))
        head.bias.copy_(torch.tensor(bias))
    return torch.tensor(r), head, torch.eye(len(r[0])), torch.zeros(len(r[0]))


def test_the_relu_is_in_the_loss_so_negative_features_never_count_as_a_flip():
    # logit_target = -r0 - 0.5: only r0 < -0.5, which no image can have, would reach the target.
    r, head, coef, intercept = tiny_problem([[0.0, 0.0], [-1.0, 0.0]], [0.0, -0.5], [[1.0, 1.0]])
    o, t = torch.tensor([0]), torch.tensor([1])
    s = CounterfactualSettings(weight_cosine=0.0, max_steps=100, check_every=5, lr=0.05)
    res = find_counterfactuals(r, o, t, head, coef, intercept, None, s)
    assert not res.success[0]
    assert res.r_after[0, 0] == 0.0 and (res.r_after >= 0).all()  # pushed to the bound, not past it
    assert res.shift[0, 0] == pytest.approx(1.0)  # the realised shift: nothing lost to clipping
    assert res.logits_after[0, 1] == pytest.approx(-0.5)
    # The paper's loss (no ReLU) claims a flip with a negative feature, which rendering clips away.
    naive = find_counterfactuals(r, o, t, head, coef, intercept, None, CounterfactualSettings(weight_cosine=0.0, max_steps=100, check_every=5, lr=0.05, nonnegative=False))
    assert naive.success[0] and naive.r_after[0, 0] < -0.5
    with torch.no_grad():
        assert head(torch.relu(naive.r_after)).argmax(1)[0] == 0  # what the image would be classified as


def test_a_unit_at_zero_can_be_switched_on():
    # Only raising the silent unit 1 above 1 flips the head; relu's zero gradient at 0 would pin it.
    r, head, coef, intercept = tiny_problem([[0.0, 0.0], [0.0, 1.0]], [1.0, 0.0], [[1.0, 0.0]])
    res = find_counterfactuals(r, torch.tensor([0]), torch.tensor([1]), head, coef, intercept, None,
                               CounterfactualSettings(weight_cosine=0.0, max_steps=200, check_every=1, lr=0.05))
    assert res.success[0] and res.r_after[0, 1] > 1.0 and res.shift[0, 1] < 0
    assert res.top_units[0, 0] == 1


def test_l1_gives_sparser_shifts():
    r, origin, target, head, coef, intercept = synthetic(n=24, units=64)
    dense = find_counterfactuals(r, origin, target, head, coef, intercept, None, CounterfactualSettings(max_steps=200, lr=0.05))
    sparse = find_counterfactuals(r, origin, target, head, coef, intercept, None, CounterfactualSettings(max_steps=200, l1=0.2, lr=0.05))
    assert sparse.success_rate >= 0.75
    assert sparse.l0.float().mean() < 0.5 * dense.l0.float().mean()
    assert (sparse.shift == 0).float().mean() > 0.5  # exact zeros from the proximal step
    # padding of the top units where fewer units moved
    few = sparse.l0 < sparse.top_units.shape[1]
    assert few.any() and (sparse.top_units[few][:, -1] == -1).all()


def bad_check(w):
    raise AssertionError("check must not be called before the inputs are validated")


def test_clear_errors_before_any_optimisation():
    r, origin, target, head, coef, intercept = synthetic(n=6)
    same = target.clone()
    same[[1, 4]] = origin[[1, 4]]
    with pytest.raises(CounterfactualError, match=r"target equals origin at item\(s\) 1, 4"):
        find_counterfactuals(r, origin, same, head, coef, intercept, bad_check)
    with pytest.raises(CounterfactualError, match=r"target class out of range \[0, 3\].*item\(s\) 2"):
        out = target.clone()
        out[2] = 4
        find_counterfactuals(r, origin, out, head, coef, intercept, bad_check)
    with pytest.raises(CounterfactualError, match="origin class out of range"):
        find_counterfactuals(r, origin - 10, target, head, coef, intercept, bad_check)
    with pytest.raises(CounterfactualError, match="r has 31 units but the head takes 32"):
        find_counterfactuals(r[:, :31], origin, target, head, coef, intercept, bad_check)
    with pytest.raises(CounterfactualError, match="coef must have shape"):
        find_counterfactuals(r, origin, target, head, coef[:20], intercept, bad_check)
    with pytest.raises(CounterfactualError, match="intercept must have shape"):
        find_counterfactuals(r, origin, target, head, coef, intercept[:3], bad_check)
    with pytest.raises(CounterfactualError, match=r"origin must have shape \[6\]"):
        find_counterfactuals(r, origin[:5], target, head, coef, intercept, bad_check)
    with pytest.raises(CounterfactualError, match="integer class indices"):
        find_counterfactuals(r, origin.float(), target, head, coef, intercept, bad_check)
    with pytest.raises(CounterfactualError, match="negative values"):
        find_counterfactuals(r - 1, origin, target, head, coef, intercept, bad_check)
    with pytest.raises(CounterfactualError, match="target equals origin"):
        find_counterfactuals_one_by_one(r, origin, same, head, coef, intercept, bad_check)
    for bad in ({"max_steps": 0}, {"lr": 0.0}, {"l1": -1.0}, {"check_every": 1.5}, {"weight_cosine": float("nan")}):
        with pytest.raises(CounterfactualError):
            CounterfactualSettings(**bad)
    assert issubclass(CounterfactualError, LinkstyleError)


def test_numpy_inputs_empty_batches_inference_mode_and_autocast():
    r, origin, target, head, coef, intercept = synthetic(n=4)
    s = CounterfactualSettings(max_steps=20)
    ref = find_counterfactuals(r, origin, target, head, coef, intercept, None, s)
    with torch.inference_mode():  # as inside a workflow stage
        res = find_counterfactuals(r.numpy(), origin.numpy(), target.numpy(), head, coef.numpy(), intercept.numpy(), None, s)
    torch.testing.assert_close(res.shift, ref.shift)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a stage's mixed precision leaves the search in float64
        res = find_counterfactuals(r, origin, target, head, coef, intercept, None, s)
    torch.testing.assert_close(res.shift, ref.shift)
    empty = find_counterfactuals(r[:0], origin[:0], target[:0], head, coef, intercept, bad_check, s)
    assert len(empty) == 0 and empty.shift.shape == (0, 32)
    assert len(find_counterfactuals_one_by_one(r[:0], origin[:0], target[:0], head, coef, intercept, bad_check, s)) == 0


def test_scoring_through_the_back_map_ignores_shifts_the_rendering_cannot_see():
    """Units 8 and 9 are functions of the image (of w), but the link reads units 0-3 only, and the
    head reads units 8 and 9 only. Scored on r' (the paper's loss) the optimiser raises unit 8,
    the head says "target", and w, so the 'image', never moves; through the back map it must
    move w, and the rendering follows."""
    units, w_dim = 16, 4
    g = torch.Generator().manual_seed(3)
    u, v = torch.randn(w_dim, generator=g), torch.randn(w_dim, generator=g)
    coef = torch.zeros(units, w_dim)
    coef[:w_dim] = torch.eye(w_dim)
    back_coef = torch.zeros(w_dim, units)
    back_coef[:, :w_dim] = torch.eye(w_dim)
    back_coef[:, 9], back_coef[:, 8] = u, v
    head = nn.Linear(units, 3)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[1, 9] = head.weight[2, 8] = 5.0
        head.bias.zero_()
    check = lambda w: torch.stack([torch.zeros(len(w)), 5 * w @ u, 5 * w @ v], 1).argmax(1)  # noqa: E731
    w = torch.randn(60, w_dim, generator=g)
    r = torch.zeros(60, units)
    r[:, :w_dim] = w.clamp_min(0) + 0.1
    w = r[:, :w_dim]
    r[:, 9], r[:, 8] = (w @ u).clamp_min(0), (w @ v).clamp_min(0)
    origin = check(w)
    keep = origin != 2
    r, origin = r[keep], origin[keep]
    target = torch.full_like(origin, 2)
    s = CounterfactualSettings(weight_cosine=0.0, max_steps=150, check_every=5, lr=0.05)
    paper = find_counterfactuals(r, origin, target, head, coef, torch.zeros(w_dim), check, s)
    back = find_counterfactuals(r, origin, target, head, coef, torch.zeros(w_dim), check, s,
                                back=(back_coef, torch.zeros(units)))
    assert len(r) >= 20 and paper.success_rate == 0.0 and back.success_rate >= 0.9, (back.success_rate, paper.success_rate)
    assert (paper.logits_after.argmax(1) == 2).all()  # the head was fooled; the 'image' was not
    torch.testing.assert_close(paper.w_after, paper.w_before)
    # the loss's logits are the head's on the back-mapped features
    expected = (back.w_after @ back_coef) @ head.weight.detach().T + head.bias.detach()
    torch.testing.assert_close(back.logits_after, expected, rtol=1e-4, atol=1e-4)


def test_scoring_the_rendering_checks_every_step_and_matches_one_by_one():
    r, origin, target, head, coef, intercept = synthetic(n=10)
    a = torch.randn(coef.shape[1], 4, generator=torch.Generator().manual_seed(1))
    calls = []

    def render(w):  # differentiable 'generator + classifier' of w
        calls.append(len(w))
        return torch.tanh(w) @ a * 3

    check = lambda w: render(w)  # noqa: E731
    s = CounterfactualSettings(max_steps=60, check_every=20, lr=0.02, weight_cosine=1.0, weight_other=1.0)
    res = find_counterfactuals(r, origin, target, head, coef, intercept, check, s, render=render, render_batch=3)
    assert max(calls) <= 10 and 3 in calls  # the loss renders in chunks of render_batch
    assert res.success.sum() >= 5
    ok = res.success & (res.steps > 0)
    assert (res.steps[ok] % s.check_every != 0).any()  # stopped between the periodic checks: the loss's own render
    with torch.no_grad():
        assert (render(res.w_after[res.success]).argmax(1) == target[res.success]).all()
        torch.testing.assert_close(res.conf_target_after[res.success],
                                   render(res.w_after[res.success]).softmax(1)[torch.arange(int(res.success.sum())), target[res.success]],
                                   rtol=1e-4, atol=1e-5)
    # Without a separate check (as the workflow runs it), the rendering is the check, and the
    # confidences are the rendered images' from the start.
    own = find_counterfactuals(r, origin, target, head, coef, intercept, None, s, render=render, render_batch=4)
    assert (own.success == res.success).all() and torch.isfinite(own.conf_target_before).all()
    with torch.no_grad():
        torch.testing.assert_close(own.conf_target_before, render(own.w_before).softmax(1)[torch.arange(len(r)), target],
                                   rtol=1e-4, atol=1e-5)
    single = find_counterfactuals_one_by_one(r, origin, target, head, coef, intercept, check, s, render=render)
    assert (res.success == single.success).all() and (res.steps == single.steps).all()
    np.testing.assert_allclose(res.shift.numpy(), single.shift.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(CounterfactualError, match="not both"):
        find_counterfactuals(r, origin, target, head, coef, intercept, check, s, render=render,
                             back=(coef.T, torch.zeros(coef.shape[0])))
    with pytest.raises(CounterfactualError, match="render_batch"):
        find_counterfactuals(r, origin, target, head, coef, intercept, check, s, render=render, render_batch=0)
    with pytest.raises(CounterfactualError, match="back map must have shapes"):
        find_counterfactuals(r, origin, target, head, coef, intercept, check, s, back=(coef, torch.zeros(3)))


def test_weight_other_and_the_cosine_halflife_change_the_loss():
    r, origin, target, head, coef, intercept = synthetic(n=12)
    base = CounterfactualSettings(max_steps=30, check_every=5)
    runs = {k: find_counterfactuals(r, origin, target, head, coef, intercept, None, CounterfactualSettings(
        max_steps=30, check_every=5, **kw)) for k, kw in
        {"base": {}, "other": {"weight_other": 2.0}, "halflife": {"cosine_halflife": 5.0}}.items()}
    assert not torch.equal(runs["base"].shift, runs["other"].shift)
    assert not torch.equal(runs["base"].shift, runs["halflife"].shift)
    # releasing the cosine term lets w travel further
    assert float(runs["halflife"].cosine.mean()) < float(runs["base"].cosine.mean())
    for bad in ({"weight_other": -1.0}, {"cosine_halflife": 0.0}, {"cosine_halflife": True}):
        with pytest.raises(CounterfactualError):
            CounterfactualSettings(**bad)
    assert base.weight_other == 0.0 and base.cosine_halflife is None  # the paper's loss by default


class _ScriptedLike(nn.Module):
    """A classifier seen only through head(r) (as a TorchScript one is)."""

    def __init__(self, head_fn, units=6, classes=3):
        super().__init__()
        self.head_fn, self.num_units, self.num_classes, self.name = head_fn, units, classes, "scripted"
        self.anchor = nn.Parameter(torch.zeros(1))

    def head(self, r):
        return self.head_fn(r)


def test_linear_head_from_fc_or_recovered_from_an_affine_head():
    fc = nn.Linear(6, 3)
    holder = nn.Module()
    holder.fc = fc
    assert linear_head(holder) is fc
    lin = nn.Linear(6, 3)
    recovered = linear_head(_ScriptedLike(lin))
    torch.testing.assert_close(recovered.weight, lin.weight.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(recovered.bias, lin.bias.detach(), rtol=1e-5, atol=1e-5)
    mlp = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(CounterfactualError, match="not a linear layer"):
        linear_head(_ScriptedLike(mlp))
    with pytest.raises(CounterfactualError, match="no linear head"):
        linear_head(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_driving_units_counts_top_units_across_items():
    shifts = torch.tensor([[3.0, 0.0, -1.0, 0.5], [0.0, 2.0, -3.0, 0.1], [1.0, 0.0, -2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    table = driving_units(shifts, top_k=2)
    assert table["unit"].tolist() == [2, 0, 1]
    assert table["count"].tolist() == [3, 2, 1]
    np.testing.assert_allclose(table["fraction"], [0.75, 0.5, 0.25])
    np.testing.assert_allclose(table["mean_shift"], [-1.5, 1.0, 0.5])
    np.testing.assert_allclose(table["mean_shift_when_top"], [-2.0, 2.0, 2.0])
    only = driving_units(np.array([[0.0, 0.0, 5.0, 0.0]]), top_k=3)  # zero shifts never count
    assert only["unit"].tolist() == [2] and only["count"].tolist() == [1]
    assert driving_units(np.zeros((0, 4))).empty
    with pytest.raises(CounterfactualError):
        driving_units(shifts, top_k=0)


@pytest.mark.slow
def test_counterfactuals_between_two_species_of_the_builtin_world():
    from linkstyle.classifiers.demo import train_demo
    from linkstyle.counterfactual import linear_head, render_and_classify, rendered_logits
    from linkstyle.generators.critters import Critters
    from linkstyle.linking import fit_ridge_cv
    from linkstyle.seeds import sample_seeds

    gen = Critters(num_classes=3, resolution=32, seed=0)
    clf, trained = train_demo(gen, arch="resnet18", name="cf", seed=0, steps=60, batch_size=32, lr=3e-3,
                              weight_decay=5e-4, truncation_psi=1.0, eval_samples=90, device=torch.device("cpu"))
    assert trained.accuracy > 0.8

    def features(cls, start, stop):
        with torch.inference_mode():
            w = gen.mapping(gen.sample_z(sample_seeds(0, cls, start, stop).tolist()),
                            torch.full((stop - start,), cls), truncation_psi=0.7)
            return clf.features(gen.synthesize(w)), w

    link_r, link_w = zip(*(features(c, 0, 80) for c in range(3)))
    link, _ = fit_ridge_cv(torch.cat(link_r).numpy(), torch.cat(link_w).numpy(), (0.1, 1.0, 10.0, 100.0), folds=5)
    # Held-out samples of each species, each to become each other species, all in one batch.
    pairs = [(o, t) for o in range(3) for t in range(3) if o != t]
    held = [features(c, 80, 86)[0] for c in range(3)]
    r = torch.cat([held[o] for o, _ in pairs])
    origin = torch.tensor([o for o, _ in pairs]).repeat_interleave(6)
    target = torch.tensor([t for _, t in pairs]).repeat_interleave(6)
    check = render_and_classify(gen, clf)
    head = linear_head(clf)
    assert head is clf.fc
    # The workflow's default: logits of the rendered image itself; and the paper's loss on r' for comparison.
    settings = CounterfactualSettings(weight_cosine=1.0, weight_other=1.0, lr=0.01)
    res = find_counterfactuals(r, origin, target, head, link.coef, link.intercept, check, settings,
                               render=rendered_logits(gen, clf), render_batch=16)
    paper = find_counterfactuals(r, origin, target, head, link.coef, link.intercept, check, CounterfactualSettings(lr=0.05))
    per_pair = [float(res.success[(origin == o) & (target == t)].float().mean()) for o, t in pairs]
    assert (res.pred_before == origin).float().mean() >= 0.9  # the linked re-rendering starts in the origin class
    assert res.success_rate >= 0.85, per_pair
    assert res.success_rate > paper.success_rate + 0.2, (res.success_rate, paper.success_rate)
    ok = res.success
    assert (res.steps[ok] < 200).all() and (res.pred_after[ok] == target[ok]).all()
    assert (check(res.w_after[ok]).argmax(1) == target[ok]).all()  # re-rendered: the target species
    # Confidences are the rendered images': the target's rose on every success.
    assert (res.conf_target_after[ok] > res.conf_target_before[ok]).all()
    table = driving_units(res.shift[ok & (origin == 2) & (target == 0)], top_k=5)
    assert len(table) and table["count"].iloc[0] >= 1


def test_benchmark_quick_run(tmp_path):
    out = tmp_path / "cf.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_counterfactual.py"), "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "speed-up" in proc.stdout
    (record,) = json.loads(out.read_text())
    assert record["quick"] and record["runs"]["batched"]["items"] == 4
    assert record["agreement"]["same_success"] == 1.0 and record["speedup_per_item"] > 0
    assert {"machine", "torch", "date", "settings"} <= set(record)
