"""Counterfactual explanations through the linking map (Linking in Style, Sec. 4.4).

For a sample with penultimate features ``r`` of origin class ``o``, find a shift ``d`` so that
``r' = relu(r - d)`` is classified as the target class ``t``, minimising

    loss = -weight_target * logit_t(r') + weight_origin * logit_o(r')
           - weight_cosine * cos(w(r), w(r')) + l1 * |d|_1 / scale(r)

where the logits come from the classifier's own last Linear (``head``) and ``w(r) = r @ coef +
intercept`` is the linear link. A counterfactual *succeeds* when the image rendered from
``w(r')`` is classified as ``t`` (``check``); each item stops, its ``d`` frozen, at the first
check that sees it succeed, or at ``max_steps``.

Choices, and why:

* **Non-negativity in the loss, not only in the rendering.** The paper's code optimises
  ``r - d`` but renders ``relu(r - d)``, so the optimiser can "succeed" with negative
  features that no image can have. Here the loss sees the very ``r'`` that is rendered.
  Two details make this well behaved: ``d`` is projected after every step onto ``d <= r``
  (so ``r - d >= 0`` and ``d`` *is* the realised shift: no part of it is lost to the
  clipping, and its L1/L0 mean what they say), and the ReLU's subgradient at exactly 0 is
  taken as 1, so a unit at 0 (a dead unit, or one shifted down to 0) can still be switched on
  when the loss asks for it (torch's ``relu`` and ``clamp`` give 0 there and would pin it).
* **Adam, written out, on all items at once.** Every quantity is per item (row), so a batch
  of B items is B independent problems solved in one set of tensor operations; only the
  items still running are updated and checked. The optimiser state lives in float64: the
  batched and the one-item-at-a-time runs then agree to float tolerance (BLAS may sum a
  product in another order for another batch size; in float64 that stays far below what
  could change an Adam step). ``lr`` is relative to each item's feature scale, the mean
  |r| over units: a step moves a unit by at most about ``lr * scale`` (Adam's steps are
  sign-like), so one setting suits classifiers whose features differ in magnitude.
* **L1 as a proximal step.** A subgradient of |d| makes Adam hover around 0 with the size of
  a step, so nothing is ever exactly unshifted. After each Adam step the shift is
  soft-thresholded in Adam's own metric (threshold ``lr * l1 / (sqrt(v_hat) + eps)``), which
  leaves a unit at exactly 0 unless the loss's gradient on it (per unit of relative shift)
  exceeds ``l1``: sparse shifts, with exact zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .errors import LinkstyleError

__all__ = [
    "CounterfactualError",
    "CounterfactualResult",
    "CounterfactualSettings",
    "driving_units",
    "find_counterfactuals",
    "find_counterfactuals_one_by_one",
    "render_and_classify",
]

Check = Callable[[torch.Tensor], torch.Tensor]


class CounterfactualError(LinkstyleError):
    """Inputs a counterfactual search cannot run on; raised before any optimisation."""


@dataclass(frozen=True)
class CounterfactualSettings:
    """Weights of the loss and the optimiser's budget.

    ``weight_*`` are the paper's (1, 0.6, 10). ``lr`` is Adam's step relative to each item's
    feature scale (mean |r|): 0.05 moves every unit by up to 5% of that scale per step, so a
    confident demo classifier (logit margins of 10-20) flips in a few tens of steps and
    ``max_steps=200`` leaves room for the hard items. ``check_every`` trades the cost of
    rendering and classifying (by far the dearest part) against how finely the first success,
    and so the smallest shift, is found. ``l0_tol``: a unit counts as shifted (L0, and the top
    units) when ``|d| > l0_tol * scale``. ``nonnegative=False`` drops the ReLU (and the
    projection) for classifiers whose penultimate features can be negative.
    """

    weight_target: float = 1.0
    weight_origin: float = 0.6
    weight_cosine: float = 10.0
    l1: float = 0.0
    lr: float = 0.05
    max_steps: int = 200
    check_every: int = 10
    top_units: int = 10
    l0_tol: float = 1e-3
    nonnegative: bool = True
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("weight_target", "weight_origin", "weight_cosine", "l1", "lr", "l0_tol", "eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CounterfactualError(f"counterfactual setting {name} must be a finite number, got {value!r}")
        for name in ("l1", "l0_tol"):
            if getattr(self, name) < 0:
                raise CounterfactualError(f"counterfactual setting {name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.eps <= 0:
            raise CounterfactualError(f"counterfactual settings lr and eps must be > 0, got lr={self.lr}, eps={self.eps}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise CounterfactualError(f"counterfactual setting {name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("max_steps", "check_every", "top_units"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise CounterfactualError(f"counterfactual setting {name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class CounterfactualResult:
    """Per item (first axis B), on the CPU. ``r_after = r - shift`` (>= 0 with ``nonnegative``).

    ``steps``: the optimisation step at which success was first seen (0: the unshifted
    rendering already showed the target), or ``max_steps`` for an item that never succeeded.
    ``pred_before`` / ``pred_after``: the class ``check`` saw at step 0 and at the item's last
    check (the head's prediction on ``r'`` when there is no ``check``). Logits and confidences
    (softmax probabilities) are the head's, on ``r`` and on ``r'``. ``cosine``: cos(w, w').
    ``top_units``: the units with the largest |shift|, largest first, -1 where fewer than
    ``top_units`` units moved (|shift| <= l0_tol * scale).
    """

    origin: torch.Tensor  # long [B]
    target: torch.Tensor  # long [B]
    shift: torch.Tensor  # float32 [B, U]
    success: torch.Tensor  # bool [B]
    steps: torch.Tensor  # long [B]
    r_after: torch.Tensor  # float32 [B, U]
    w_before: torch.Tensor  # float32 [B, w_dim]
    w_after: torch.Tensor  # float32 [B, w_dim]
    cosine: torch.Tensor  # float32 [B]
    logits_before: torch.Tensor  # float32 [B, C]
    logits_after: torch.Tensor  # float32 [B, C]
    conf_origin_before: torch.Tensor  # float32 [B]
    conf_origin_after: torch.Tensor
    conf_target_before: torch.Tensor
    conf_target_after: torch.Tensor
    pred_before: torch.Tensor  # long [B]
    pred_after: torch.Tensor  # long [B]
    l1: torch.Tensor  # float32 [B]
    l0: torch.Tensor  # long [B]
    top_units: torch.Tensor  # long [B, k]

    def __len__(self) -> int:
        return int(self.origin.shape[0])

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else float("nan")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as a numpy array (for ``io.write_npz``)."""
        return {f.name: getattr(self, f.name).numpy() for f in fields(self)}

    @classmethod
    def concat(cls, parts: Sequence[CounterfactualResult]) -> CounterfactualResult:
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})


# ----------------------------------------------------------------------------- checks


def _as_tensor(x: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        return x
    raise CounterfactualError(f"{what} must be a torch tensor or numpy array, got {type(x).__name__}")


def _items(idx: torch.Tensor, limit: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return shown + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def _validate(r, origin, target, head, coef, intercept, settings):
    if not isinstance(settings, CounterfactualSettings):
        raise CounterfactualError(f"settings must be a CounterfactualSettings, got {type(settings).__name__}")
    if not isinstance(head, nn.Linear):
        raise CounterfactualError(f"head must be the classifier's last nn.Linear, got {type(head).__name__}")
    r = _as_tensor(r, "r")
    origin = _as_tensor(origin, "origin")
    target = _as_tensor(target, "target")
    coef = _as_tensor(coef, "coef")
    intercept = _as_tensor(intercept, "intercept")
    units, classes = head.in_features, head.out_features
    if r.ndim != 2 or not r.dtype.is_floating_point:
        raise CounterfactualError(f"r must be float features of shape [items, units], got {tuple(r.shape)} {r.dtype}")
    n = r.shape[0]
    if r.shape[1] != units:
        raise CounterfactualError(f"r has {r.shape[1]} units but the head takes {units} inputs: features and head "
                                  "are not from the same classifier")
    if coef.ndim != 2 or coef.shape[0] != units:
        raise CounterfactualError(f"coef must have shape [units={units}, w_dim], got {tuple(coef.shape)}: the link was "
                                  "fitted to another classifier's features")
    if intercept.shape != (coef.shape[1],):
        raise CounterfactualError(f"intercept must have shape [w_dim={coef.shape[1]}] to match coef, got "
                                  f"{tuple(intercept.shape)}")
    for name, cls in (("origin", origin), ("target", target)):
        if cls.ndim != 1 or cls.shape[0] != n:
            raise CounterfactualError(f"{name} must have shape [{n}] (one class per item of r), got {tuple(cls.shape)}")
        if cls.dtype.is_floating_point or cls.dtype.is_complex or cls.dtype == torch.bool:
            raise CounterfactualError(f"{name} must hold integer class indices, got dtype {cls.dtype}")
        bad = torch.nonzero((cls < 0) | (cls >= classes)).flatten()
        if len(bad):
            raise CounterfactualError(f"{name} class out of range [0, {classes - 1}] of the head at item(s) "
                                      f"{_items(bad)} (value {int(cls[bad[0]])})")
    same = torch.nonzero(origin == target).flatten()
    if len(same):
        raise CounterfactualError(f"target equals origin at item(s) {_items(same)} (class {int(origin[same[0]])}): a "
                                  "counterfactual needs another class to reach")
    if n and not bool(torch.isfinite(r).all()):
        raise CounterfactualError("r holds NaN or infinite values")
    if settings.nonnegative and n and float(r.min()) < 0:
        raise CounterfactualError(f"r has negative values (min {float(r.min()):.3g}) but settings.nonnegative is set: "
                                  "these features are not post-ReLU; use CounterfactualSettings(nonnegative=False)")
    return r, origin.long(), target.long(), coef, intercept


# ----------------------------------------------------------------------------- the search


def _relu(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0) with subgradient 1 at exactly 0, so that units at 0 can be switched on."""
    return torch.where(x >= 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def find_counterfactuals(
    r: torch.Tensor | np.ndarray,
    origin: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    head: nn.Linear,
    coef: torch.Tensor | np.ndarray,
    intercept: torch.Tensor | np.ndarray,
    check: Check | None = None,
    settings: CounterfactualSettings | None = None,
) -> CounterfactualResult:
    """Counterfactuals for B items at once: ``r`` [B, U] features, ``origin``/``target`` long [B].

    ``check(w [n, w_dim] float32) -> classes long [n]`` (or logits [n, C]) renders ``w`` and
    classifies the images; it is called on the items still running only, at step 0 and every
    ``check_every`` steps (and at ``max_steps``). ``None`` uses the head's prediction on ``r'``.
    Runs on the head's device; deterministic (no randomness).
    """
    settings = CounterfactualSettings() if settings is None else settings
    r, origin, target, coef, intercept = _validate(r, origin, target, head, coef, intercept, settings)
    device_type = head.weight.device.type
    # Autograd even inside a stage's inference_mode; float64 even inside a stage's autocast
    # (``check`` may turn autocast back on for rendering and classifying).
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type, enabled=False):
        return _search(r, origin, target, head, coef, intercept, check, settings)


def find_counterfactuals_one_by_one(
    r: torch.Tensor | np.ndarray,
    origin: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    head: nn.Linear,
    coef: torch.Tensor | np.ndarray,
    intercept: torch.Tensor | np.ndarray,
    check: Check | None = None,
    settings: CounterfactualSettings | None = None,
) -> CounterfactualResult:
    """The same search, one item at a time (the baseline the batched search is measured against)."""
    settings = CounterfactualSettings() if settings is None else settings
    r, origin, target, coef, intercept = _validate(r, origin, target, head, coef, intercept, settings)
    if len(r) == 0:
        return find_counterfactuals(r, origin, target, head, coef, intercept, check, settings)
    parts = [find_counterfactuals(r[i : i + 1], origin[i : i + 1], target[i : i + 1], head, coef, intercept, check, settings)
             for i in range(len(r))]
    return CounterfactualResult.concat(parts)


def _search(r, origin, target, head, coef, intercept, check, s: CounterfactualSettings) -> CounterfactualResult:
    dev = head.weight.device
    f64 = torch.float64
    weight = head.weight.detach().to(dev, f64).clone()
    bias = head.bias.detach().to(dev, f64).clone() if head.bias is not None else torch.zeros(weight.shape[0], dtype=f64, device=dev)
    coef = coef.detach().to(dev, f64).clone()
    intercept = intercept.detach().to(dev, f64).clone()
    r = r.detach().to(dev, f64).clone()
    origin, target = origin.to(dev), target.to(dev)
    n, units = r.shape
    relu = _relu if s.nonnegative else (lambda x: x)

    w0 = r @ coef + intercept
    scale = r.abs().mean(1)
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    d = torch.zeros_like(r)
    m1 = torch.zeros_like(r)
    m2 = torch.zeros_like(r)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    success = torch.zeros(n, dtype=torch.bool, device=dev)
    steps = torch.full((n,), s.max_steps, dtype=torch.long, device=dev)
    pred = torch.full((n,), -1, dtype=torch.long, device=dev)

    def predict(idx: torch.Tensor) -> torch.Tensor:
        rp = relu(r[idx] - d[idx])
        if check is None:
            return (rp @ weight.T + bias).argmax(1)
        with torch.no_grad():
            out = check((rp @ coef + intercept).float())
        out = torch.as_tensor(out).to(dev)
        if out.ndim == 2:
            out = out.argmax(1)
        if out.shape != (len(idx),):
            raise CounterfactualError(f"check must return one class per w (shape [{len(idx)}]) or logits "
                                      f"[{len(idx)}, classes], got {tuple(out.shape)}")
        return out.long()

    def record(idx: torch.Tensor, step: int) -> None:
        p = predict(idx)
        pred[idx] = p
        hit = idx[p == target[idx]]
        success[hit] = True
        done[hit] = True
        steps[hit] = step

    everyone = torch.arange(n, device=dev)
    if n:
        record(everyone, 0)
    pred_before = pred.clone()
    for step in range(1, s.max_steps + 1):
        idx = everyone[~done]
        if len(idx) == 0:
            break
        da = d[idx].requires_grad_(True)
        rp = relu(r[idx] - da)
        logits = rp @ weight.T + bias
        cos = F.cosine_similarity(rp @ coef + intercept, w0[idx], dim=1, eps=1e-12)
        loss = (-s.weight_target * logits.gather(1, target[idx, None])[:, 0]
                + s.weight_origin * logits.gather(1, origin[idx, None])[:, 0]
                - s.weight_cosine * cos).sum()
        (grad,) = torch.autograd.grad(loss, da)
        with torch.no_grad():
            m1[idx] = m1_i = s.beta1 * m1[idx] + (1 - s.beta1) * grad
            m2[idx] = m2_i = s.beta2 * m2[idx] + (1 - s.beta2) * grad * grad
            denom = (m2_i / (1 - s.beta2**step)).sqrt() + s.eps
            new = da.detach() - (s.lr * scale[idx, None]) * (m1_i / (1 - s.beta1**step)) / denom
            if s.l1 > 0:  # proximal step for l1 * |d| / scale in Adam's metric
                new = new.sign() * (new.abs() - s.lr * s.l1 / denom).clamp_min(0)
            if s.nonnegative:  # keep r - d >= 0: d is then exactly the realised shift
                new = torch.minimum(new, r[idx])
            d[idx] = new
        if step % s.check_every == 0 or step == s.max_steps:
            record(idx, step)

    with torch.no_grad():
        r_after = relu(r - d)
        shift = r - r_after
        w_after = r_after @ coef + intercept
        logits_before = r @ weight.T + bias
        logits_after = r_after @ weight.T + bias
        p_before, p_after = logits_before.softmax(1), logits_after.softmax(1)
        rows = everyone
        moved = shift.abs() > s.l0_tol * scale[:, None]
        k = min(s.top_units, units)
        order = torch.sort(shift.abs(), dim=1, descending=True, stable=True).indices[:, :k]
        top = torch.where(moved.gather(1, order), order, torch.full_like(order, -1))
        out = {
            "origin": origin, "target": target, "shift": shift, "success": success, "steps": steps, "r_after": r_after,
            "w_before": w0, "w_after": w_after,
            "cosine": F.cosine_similarity(w_after, w0, dim=1, eps=1e-12),
            "logits_before": logits_before, "logits_after": logits_after,
            "conf_origin_before": p_before[rows, origin], "conf_origin_after": p_after[rows, origin],
            "conf_target_before": p_before[rows, target], "conf_target_after": p_after[rows, target],
            "pred_before": pred_before, "pred_after": pred,
            "l1": shift.abs().sum(1), "l0": moved.sum(1), "top_units": top,
        }
    return CounterfactualResult(**{
        key: v.detach().cpu().float() if v.dtype == f64 else v.detach().cpu() for key, v in out.items()
    })


# ----------------------------------------------------------------------------- helpers


def render_and_classify(generator, classifier: nn.Module, batch_size: int = 256, precision: str = "fp32") -> Check:
    """A ``check`` for :func:`find_counterfactuals`: ``w`` -> ``generator.synthesize`` -> the
    classifier's predicted class, in batches of ``batch_size`` (halved on CUDA out-of-memory),
    on the device of ``w`` (the head's: keep generator, classifier and head together), under
    the workflow's ``precision`` ('fp32', 'bf16', 'fp16')."""
    from .runtime import autocast, run_batched

    @torch.inference_mode()
    def check(w: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(w), dtype=torch.long)

        def step(sl: slice) -> None:
            with autocast(w.device, precision):
                logits = classifier(generator.synthesize(w[sl]))
            out[sl] = logits.float().argmax(1).cpu()

        run_batched(len(w), batch_size, step, setting="counterfactual batch_size")
        return out

    return check


def driving_units(shifts: torch.Tensor | np.ndarray, top_k: int = 10) -> pd.DataFrame:
    """Across the counterfactuals of one (origin, target) pair (``shifts`` [N, U], e.g. the
    successful rows of ``CounterfactualResult.shift``): how often each unit is among an item's
    ``top_k`` units by |shift| (units with a zero shift never count).

    Columns: ``unit``, ``count``, ``fraction`` (count / N), ``mean_shift`` (mean signed shift
    over all N items; positive means the unit is *lowered*: r' = r - shift) and
    ``mean_shift_when_top``. Sorted by count, then |mean_shift|, descending; units never in a
    top set are left out.
    """
    d = torch.as_tensor(np.asarray(shifts) if not isinstance(shifts, torch.Tensor) else shifts).detach().cpu().double()
    if d.ndim != 2:
        raise CounterfactualError(f"shifts must have shape [items, units], got {tuple(d.shape)}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise CounterfactualError(f"top_k must be an integer >= 1, got {top_k!r}")
    n, units = d.shape
    columns = ["unit", "count", "fraction", "mean_shift", "mean_shift_when_top"]
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("unit", "count") else "float64") for c in columns})
    k = min(int(top_k), units)
    order = torch.sort(d.abs(), dim=1, descending=True, stable=True).indices[:, :k]
    in_top = torch.zeros_like(d, dtype=torch.bool)
    in_top.scatter_(1, order, True)
    in_top &= d != 0
    count = in_top.sum(0)
    mean = d.mean(0)
    when_top = (d * in_top).sum(0) / count.clamp_min(1)
    table = pd.DataFrame({
        "unit": np.arange(units), "count": count.numpy().astype(np.int64), "fraction": (count.double() / n).numpy(),
        "mean_shift": mean.numpy(), "mean_shift_when_top": when_top.numpy(),
    })
    table = table[table["count"] > 0]
    table = table.assign(_abs=table["mean_shift"].abs()).sort_values(["count", "_abs", "unit"], ascending=[False, False, True],
                                                                        kind="stable")
    return table.drop(columns="_abs").reset_index(drop=True)
