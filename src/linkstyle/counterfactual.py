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

* **What the logits are taken of.** ``r`` has hundreds or thousands of units, ``w`` far fewer
  dimensions: most directions of a shift leave ``w``, and so the image, unchanged, yet the
  head reads them. Scored on ``r'`` itself (the paper's loss: neither ``back`` nor ``render``),
  the optimiser finds such directions: the head soon says "target" while the rendering does
  not change class, or lands in a third class. Two remedies:

  - ``back = (B, b)``, a linear map ``w -> r`` fitted on the same samples
    (``LinearLink.back``): the logits are the head's on ``r_hat = w(r') @ B + b``, the
    features a rendering of ``w(r')`` is expected to have. Only the part of a shift that
    changes ``w`` counts, at no extra cost; but the loss is then linear in ``w``, and where
    the classes are not linearly separable in ``w`` its ray can pass into a third class.
  - ``render(w) -> logits``, differentiable (generator, then classifier): the logits of the
    image itself, the very thing the success check looks at. The dearest per step (a forward
    and a backward pass through both networks, in chunks of ``render_batch`` items), and the
    only one that follows the classifier's real, curved boundaries.

  bench/bench_counterfactual.py measures the success and cost of all three side by side.

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

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ParamSpec

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
    "SearchProblem",
    "adam_step",
    "counterfactual_loss",
    "driving_units",
    "find_counterfactuals",
    "find_counterfactuals_one_by_one",
    "linear_head",
    "render_and_classify",
    "rendered_logits",
    "search",
]

Check = Callable[[torch.Tensor], torch.Tensor]
Render = Callable[[torch.Tensor], torch.Tensor]


class CounterfactualError(LinkstyleError):
    """Inputs a counterfactual search cannot run on; raised before any optimisation."""


@dataclass(frozen=True)
class CounterfactualSettings:
    """Weights of the loss and the optimiser's budget.

    ``weight_*`` are the paper's (1, 0.6, 10; ``weight_other`` 0 and no ``cosine_halflife``).
    ``lr`` is Adam's step relative to each item's feature scale (mean |r|): 0.01 moves every
    unit by up to 1% of that scale per step. Adam's first steps are sign-like, moving every unit
    alike, so a large step sends ``w`` off in a crude direction, past the target class into a
    third one; on the built-in world 0.005-0.01 flipped more items, with smaller shifts, than
    0.05 (docs/counterfactuals.md). ``check_every`` trades the cost of rendering and classifying
    (by far the dearest part) against how finely the first success, and so the smallest shift,
    is found (scoring the rendering checks at every step anyway). ``l0_tol``: a unit counts as
    shifted (L0, and the top units) when ``|d| > l0_tol * scale``. ``nonnegative=False`` drops
    the ReLU (and the projection) for classifiers whose penultimate features can be negative.
    """

    weight_target: float = 1.0
    weight_origin: float = 0.6
    weight_cosine: float = 10.0
    weight_other: float = 0.0
    cosine_halflife: float | None = None
    l1: float = 0.0
    lr: float = 0.01
    max_steps: int = 200
    check_every: int = 10
    top_units: int = 10
    l0_tol: float = 1e-3
    nonnegative: bool = True
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("weight_target", "weight_origin", "weight_cosine", "weight_other", "l1", "lr", "l0_tol", "eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CounterfactualError(f"counterfactual setting {name} must be a finite number, got {value!r}")
        for name in ("weight_other", "l1", "l0_tol"):
            if getattr(self, name) < 0:
                raise CounterfactualError(f"counterfactual setting {name} must be >= 0, got {getattr(self, name)}")
        if self.cosine_halflife is not None and (isinstance(self.cosine_halflife, bool) or not isinstance(
                self.cosine_halflife, (int, float)) or not self.cosine_halflife > 0):
            raise CounterfactualError(f"counterfactual setting cosine_halflife must be a number > 0 or None, got "
                                      f"{self.cosine_halflife!r}")
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
    ``top_units`` units moved (|shift| <= l0_tol * scale). ``logits_*`` are the loss's: the head's
    on ``r``/``r'``, or on their back-mapped features with ``back``. ``conf_*`` are the rendered
    images' (softmax of ``check``'s logits at step 0 and at the item's last check) when ``check``
    returns logits, else softmax of ``logits_*``.
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


# ----------------------------------------------------------------------------- the problem


def _as_tensor(x: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        return x
    raise CounterfactualError(f"{what} must be a torch tensor or numpy array, got {type(x).__name__}")


def _items(idx: torch.Tensor, limit: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return shown + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def _validate_back(back: Any, units: int, w_dim: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    if back is None:
        return None
    if not isinstance(back, (tuple, list)) or len(back) != 2:
        raise CounterfactualError("back must be a pair (back_coef [w_dim, units], back_intercept [units]) or None")
    b_coef, b_int = _as_tensor(back[0], "back_coef"), _as_tensor(back[1], "back_intercept")
    if tuple(b_coef.shape) != (w_dim, units) or tuple(b_int.shape) != (units,):
        raise CounterfactualError(f"back map must have shapes [w_dim={w_dim}, units={units}] and [units={units}], got "
                                  f"{tuple(b_coef.shape)} and {tuple(b_int.shape)}: it was fitted to another link")
    return b_coef, b_int


def _validate(r: Any, origin: Any, target: Any, head: Any, coef: Any, intercept: Any, settings: Any
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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


@dataclass(frozen=True, eq=False)
class SearchProblem:
    """One search, checked: built by :meth:`of` (the arguments of :func:`find_counterfactuals`), so
    that the batched search and the one-by-one baseline share one argument list and one set of checks.

    Tensors as given, on the caller's device and dtype: ``r`` float [B, U], ``origin``/``target``
    long [B], ``coef`` [U, w_dim], ``intercept`` [w_dim]; at most one of ``back`` and ``render``.
    """

    r: torch.Tensor
    origin: torch.Tensor
    target: torch.Tensor
    head: nn.Linear
    coef: torch.Tensor
    intercept: torch.Tensor
    check: Check | None
    settings: CounterfactualSettings
    back: tuple[torch.Tensor, torch.Tensor] | None
    render: Render | None
    render_batch: int

    @classmethod
    def of(
        cls,
        r: torch.Tensor | np.ndarray,
        origin: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray,
        head: nn.Linear,
        coef: torch.Tensor | np.ndarray,
        intercept: torch.Tensor | np.ndarray,
        check: Check | None = None,
        settings: CounterfactualSettings | None = None,
        back: tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray] | None = None,
        render: Render | None = None,
        render_batch: int = 64,
    ) -> SearchProblem:
        """Every check a search needs, made before any optimisation (see find_counterfactuals)."""
        settings = CounterfactualSettings() if settings is None else settings
        r_, origin_, target_, coef_, intercept_ = _validate(r, origin, target, head, coef, intercept, settings)
        back_ = _validate_back(back, head.in_features, coef_.shape[1])
        if back_ is not None and render is not None:
            raise CounterfactualError("give back (the back map) or render (the rendered image's logits), not both")
        if render is not None and not callable(render):
            raise CounterfactualError(f"render must be a callable w -> logits, got {type(render).__name__}")
        if isinstance(render_batch, bool) or not isinstance(render_batch, (int, np.integer)) or render_batch < 1:
            raise CounterfactualError(f"render_batch must be an integer >= 1, got {render_batch!r}")
        return cls(r_, origin_, target_, head, coef_, intercept_, check, settings, back_, render, int(render_batch))

    def __len__(self) -> int:
        return int(self.r.shape[0])

    def item(self, i: int) -> SearchProblem:
        """Item ``i`` alone: the one-by-one baseline solves these."""
        one = slice(i, i + 1)
        return replace(self, r=self.r[one], origin=self.origin[one], target=self.target[one])


# ----------------------------------------------------------------------------- the loss and the step


def counterfactual_loss(
    logits: torch.Tensor,
    w_after: torch.Tensor,
    w_before: torch.Tensor,
    origin: torch.Tensor,
    target: torch.Tensor,
    *,
    weight_target: float = 1.0,
    weight_origin: float = 0.6,
    weight_cosine: float = 10.0,
    weight_other: float = 0.0,
) -> torch.Tensor:
    """The loss of Linking in Style (Wehrheim et al. 2024, Sec. 4.4), per item [n]:

        loss = -weight_target * logit_t + weight_origin * logit_o - weight_cosine * cos(w(r), w(r'))
               + weight_other * max_{c not in {o, t}} logit_c

    ``logits`` [n, C] are the loss's view of the shifted item (the head's on ``r'``, on the
    back-mapped features, or the rendered image's), ``w_after = w(r')``, ``w_before = w(r)``.
    Raising the target's logit and lowering the origin's pushes the item across the boundary;
    the cosine keeps ``w(r')`` pointing where ``w(r)`` did, so the image stays the same sample.
    The last term (ours, 0 in the paper, only with more than 2 classes) pushes down the
    strongest third class, which otherwise catches items on their way. The L1 penalty is not
    here: it is taken as a proximal step (:func:`adam_step`), which leaves exact zeros.
    """
    logit_t = logits.gather(1, target[:, None])[:, 0]
    logit_o = logits.gather(1, origin[:, None])[:, 0]
    cos = F.cosine_similarity(w_after, w_before, dim=1, eps=1e-12)
    loss = -weight_target * logit_t + weight_origin * logit_o - weight_cosine * cos
    if weight_other > 0 and logits.shape[1] > 2:
        others = logits.scatter(1, torch.stack([origin, target], 1), float("-inf"))
        loss = loss + weight_other * others.max(1).values
    return loss


def adam_step(d: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, grad: torch.Tensor, r: torch.Tensor,
              scale: torch.Tensor, step: int, s: CounterfactualSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adam's step ``step`` (1-based) on the shifts ``d`` [n, U], row by row; returns the new shift
    and moments. Steps are relative to each row's feature ``scale`` so that one ``lr`` suits
    every classifier; L1 is a proximal step in Adam's metric so that unneeded units stay exactly
    0; the projection onto ``d <= r`` (with ``nonnegative``) makes ``d`` the realised shift."""
    m1 = s.beta1 * m1 + (1 - s.beta1) * grad
    m2 = s.beta2 * m2 + (1 - s.beta2) * grad * grad
    denom = (m2 / (1 - s.beta2**step)).sqrt() + s.eps
    new = d - (s.lr * scale[:, None]) * (m1 / (1 - s.beta1**step)) / denom
    if s.l1 > 0:  # proximal step for l1 * |d| / scale
        new = new.sign() * (new.abs() - s.lr * s.l1 / denom).clamp_min(0)
    if s.nonnegative:
        new = torch.minimum(new, r)
    return new, m1, m2


def _pair_probs(logits: torch.Tensor, origin: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities [n, 2] of each row's origin and target class."""
    prob = logits.double().softmax(1)
    return torch.stack([prob.gather(1, origin[:, None])[:, 0], prob.gather(1, target[:, None])[:, 0]], 1)


def _relu(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0) with subgradient 1 at exactly 0, so that units at 0 can be switched on."""
    return torch.where(x >= 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


# ----------------------------------------------------------------------------- the search

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _scorer(problem: SearchProblem, weight: torch.Tensor, bias: torch.Tensor) -> Score:
    """The loss's logits of ``(r', w(r'))``, as ``back`` / ``render`` choose (module docs)."""
    render, back = problem.render, problem.back
    if render is not None:
        def score(rp: torch.Tensor, wp: torch.Tensor) -> torch.Tensor:
            return render(wp.float()).double()
    elif back is None:
        def score(rp: torch.Tensor, wp: torch.Tensor) -> torch.Tensor:
            return rp @ weight.T + bias
    else:  # the head on the back-mapped features, folded into one affine map of w
        w_head = back[0].detach().to(weight.device, torch.float64) @ weight.T
        b_head = back[1].detach().to(weight.device, torch.float64) @ weight.T + bias

        def score(rp: torch.Tensor, wp: torch.Tensor) -> torch.Tensor:
            return wp @ w_head + b_head
    return score


@dataclass(eq=False)
class _Search:
    """A batched search under way: the problem in float64 on the head's device (float64 keeps
    batched and one-by-one runs in step), and per item its shift, Adam's moments and outcome."""

    problem: SearchProblem
    r: torch.Tensor  # float64 [B, U]
    origin: torch.Tensor
    target: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor
    classes: int
    score: Score
    w0: torch.Tensor  # w(r)
    scale: torch.Tensor  # mean |r| per item (1 where r is 0)
    d: torch.Tensor  # the shift: r' = relu(r - d)
    m1: torch.Tensor
    m2: torch.Tensor
    done: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor
    pred: torch.Tensor
    rendered_p: torch.Tensor  # check's p(origin), p(target) at each item's latest check
    latest: torch.Tensor  # without a check, the loss's logits at each item's latest check

    @classmethod
    def start(cls, problem: SearchProblem) -> _Search:
        dev, f64, head = problem.head.weight.device, torch.float64, problem.head
        weight = head.weight.detach().to(dev, f64).clone()
        bias = (head.bias.detach().to(dev, f64).clone() if head.bias is not None
                else torch.zeros(weight.shape[0], dtype=f64, device=dev))
        coef = problem.coef.detach().to(dev, f64).clone()
        intercept = problem.intercept.detach().to(dev, f64).clone()
        r = problem.r.detach().to(dev, f64).clone()
        n, classes = r.shape[0], weight.shape[0]
        scale = r.abs().mean(1)
        return cls(
            problem, r, problem.origin.to(dev), problem.target.to(dev), coef, intercept, classes,
            _scorer(problem, weight, bias), w0=r @ coef + intercept,
            scale=torch.where(scale > 1e-12, scale, torch.ones_like(scale)),
            d=torch.zeros_like(r), m1=torch.zeros_like(r), m2=torch.zeros_like(r),
            done=torch.zeros(n, dtype=torch.bool, device=dev), success=torch.zeros(n, dtype=torch.bool, device=dev),
            steps=torch.full((n,), problem.settings.max_steps, dtype=torch.long, device=dev),
            pred=torch.full((n,), -1, dtype=torch.long, device=dev),
            rendered_p=torch.full((n, 2), float("nan"), dtype=f64, device=dev),
            latest=torch.full((n, classes), float("nan"), dtype=f64, device=dev),
        )

    def shifted(self, r: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """r' = relu(r - d), the features the rendering sees (no ReLU without ``nonnegative``)."""
        return _relu(r - d) if self.problem.settings.nonnegative else r - d

    def score_chunked(self, rp: torch.Tensor, wp: torch.Tensor) -> torch.Tensor:
        """The loss's logits without gradients, ``render_batch`` items at a time when rendering."""
        with torch.no_grad():
            if self.problem.render is None or len(rp) == 0:
                return self.score(rp, wp)
            chunk = self.problem.render_batch
            return torch.cat([self.score(a, b) for a, b in zip(rp.split(chunk), wp.split(chunk))])

    def predict(self, idx: torch.Tensor) -> torch.Tensor:
        """The class of items ``idx`` at their current shift: ``check``'s, else the loss's own."""
        rp = self.shifted(self.r[idx], self.d[idx])
        wp = rp @ self.coef + self.intercept
        if self.problem.check is None:
            self.latest[idx] = self.score_chunked(rp, wp)
            return self.latest[idx].argmax(1)
        with torch.no_grad():
            out = self.problem.check(wp.float())
        out = torch.as_tensor(out).to(self.r.device)
        if out.ndim == 2 and out.shape == (len(idx), self.classes):
            self.rendered_p[idx] = _pair_probs(out, self.origin[idx], self.target[idx])
            out = out.argmax(1)
        if out.shape != (len(idx),):
            raise CounterfactualError(f"check must return logits [{len(idx)}, {self.classes}] or one class per w "
                                      f"(shape [{len(idx)}]), got {tuple(out.shape)}")
        return out.long()

    def record(self, idx: torch.Tensor, step: int) -> None:
        """Check items ``idx``; those now in the target class succeed and stop."""
        p = self.predict(idx)
        self.pred[idx] = p
        hit = idx[p == self.target[idx]]
        self.success[hit] = True
        self.done[hit] = True
        self.steps[hit] = step

    def gradient(self, idx: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """d loss / d shift of items ``idx`` (a sum of per-item terms, so chunks are exact), and the
        loss's logits at the current shift (detached)."""
        s = self.problem.settings
        weight_cosine = s.weight_cosine * (0.5 ** ((step - 1) / s.cosine_halflife) if s.cosine_halflife else 1.0)
        chunk = self.problem.render_batch if self.problem.render is not None else max(len(idx), 1)
        grads, seen = [], []
        for part in idx.split(chunk):
            da = self.d[part].requires_grad_(True)
            rp = self.shifted(self.r[part], da)
            wp = rp @ self.coef + self.intercept
            logits = self.score(rp, wp)
            loss = counterfactual_loss(logits, wp, self.w0[part], self.origin[part], self.target[part],
                                       weight_target=s.weight_target, weight_origin=s.weight_origin,
                                       weight_cosine=weight_cosine, weight_other=s.weight_other)
            grads.append(torch.autograd.grad(loss.sum(), da)[0])
            seen.append(logits.detach())
        return torch.cat(grads), torch.cat(seen)

    def stop_rendered(self, idx: torch.Tensor, grad: torch.Tensor, seen: torch.Tensor,
                      step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scoring the rendering has just classified every running item at its current shift (after
        ``step - 1`` updates): a free check that stops an item the moment its image shows the
        target, rather than letting it overshoot to the next check. Returns the items going on."""
        hit = seen.argmax(1) == self.target[idx]
        if not bool(hit.any()):
            return idx, grad
        won = idx[hit]
        self.rendered_p[won] = _pair_probs(seen[hit], self.origin[won], self.target[won])
        self.latest[won] = seen[hit]
        self.pred[won], self.success[won], self.done[won], self.steps[won] = self.target[won], True, True, step - 1
        return idx[~hit], grad[~hit]

    def step(self, idx: torch.Tensor, grad: torch.Tensor, step: int) -> None:
        with torch.no_grad():
            self.d[idx], self.m1[idx], self.m2[idx] = adam_step(self.d[idx], self.m1[idx], self.m2[idx], grad,
                                                                self.r[idx], self.scale[idx], step, self.problem.settings)

    def result(self, pred_before: torch.Tensor, rendered_p_before: torch.Tensor,
               logits_before: torch.Tensor) -> CounterfactualResult:
        """The outcome per item, from its frozen shift and what was seen at step 0 (``*_before``)."""
        s, check = self.problem.settings, self.problem.check
        with torch.no_grad():
            r_after = self.shifted(self.r, self.d)
            shift = self.r - r_after
            w_after = r_after @ self.coef + self.intercept
            if check is None:  # every item's state at step 0 and at its end was scored on the way
                logits_after = self.latest
            else:
                logits_before, logits_after = self.score_chunked(self.r, self.w0), self.score_chunked(r_after, w_after)
            conf = self.confidences(logits_before, logits_after, rendered_p_before)
            moved = shift.abs() > s.l0_tol * self.scale[:, None]
            k = min(s.top_units, self.r.shape[1])
            order = torch.sort(shift.abs(), dim=1, descending=True, stable=True).indices[:, :k]
            top = torch.where(moved.gather(1, order), order, torch.full_like(order, -1))
            out = {
                "origin": self.origin, "target": self.target, "shift": shift, "success": self.success,
                "steps": self.steps, "r_after": r_after, "w_before": self.w0, "w_after": w_after,
                "cosine": F.cosine_similarity(w_after, self.w0, dim=1, eps=1e-12),
                "logits_before": logits_before, "logits_after": logits_after, **conf,
                "pred_before": pred_before, "pred_after": self.pred,
                "l1": shift.abs().sum(1), "l0": moved.sum(1), "top_units": top,
            }
        return CounterfactualResult(**{
            key: v.detach().cpu().float() if v.dtype == torch.float64 else v.detach().cpu() for key, v in out.items()
        })

    def confidences(self, logits_before: torch.Tensor, logits_after: torch.Tensor,
                    rendered_p_before: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rendered images' p(origin), p(target) where ``check`` gave logits at step 0 and at
        every item's last check (what the success check saw), else the loss's logits' softmax."""
        n = len(self.r)
        if n and self.problem.check is not None and not bool(
                torch.isnan(rendered_p_before).any() | torch.isnan(self.rendered_p).any()):
            return {"conf_origin_before": rendered_p_before[:, 0], "conf_origin_after": self.rendered_p[:, 0],
                    "conf_target_before": rendered_p_before[:, 1], "conf_target_after": self.rendered_p[:, 1]}
        p_before, p_after = logits_before.softmax(1), logits_after.softmax(1)
        rows = torch.arange(n, device=self.r.device)
        return {"conf_origin_before": p_before[rows, self.origin], "conf_origin_after": p_after[rows, self.origin],
                "conf_target_before": p_before[rows, self.target], "conf_target_after": p_after[rows, self.target]}


def _search(problem: SearchProblem) -> CounterfactualResult:
    """Adam on every running item at once; each stops at its first success or at ``max_steps``."""
    s, render, check = problem.settings, problem.render, problem.check
    run = _Search.start(problem)
    everyone = torch.arange(len(problem), device=run.r.device)
    if len(problem):
        run.record(everyone, 0)
    before = run.pred.clone(), run.rendered_p.clone(), run.latest.clone()
    for step in range(1, s.max_steps + 1):
        idx = everyone[~run.done]
        if len(idx) == 0:
            break
        grad, seen = run.gradient(idx, step)
        if render is not None:
            idx, grad = run.stop_rendered(idx, grad, seen, step)
            if len(idx) == 0:
                continue
        run.step(idx, grad, step)
        # Without a separate check, scoring the rendering already checks every step: only the
        # state after the last step is left to look at.
        periodic = step % s.check_every == 0 and not (render is not None and check is None)
        if periodic or step == s.max_steps:
            run.record(idx, step)
    return run.result(*before)


def search(problem: SearchProblem) -> CounterfactualResult:
    """The batched search of a checked problem, all items at once. Autograd even inside a stage's
    inference_mode; float64 even inside its autocast (``check`` may turn autocast back on)."""
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(problem.head.weight.device.type,
                                                                          enabled=False):
        return _search(problem)


_P = ParamSpec("_P")


def _takes_arguments_of(
    of: Callable[_P, SearchProblem],
) -> Callable[[Callable[[SearchProblem], CounterfactualResult]], Callable[_P, CounterfactualResult]]:
    """Give a function of a SearchProblem the arguments of ``of``, so that the long argument list
    is written (and checked) once, in :meth:`SearchProblem.of`."""

    def decorate(solve: Callable[[SearchProblem], CounterfactualResult]) -> Callable[_P, CounterfactualResult]:
        @functools.wraps(solve)
        def called(*args: _P.args, **kwargs: _P.kwargs) -> CounterfactualResult:
            return solve(of(*args, **kwargs))

        called.__signature__ = inspect.signature(of).replace(  # type: ignore[attr-defined]
            return_annotation="CounterfactualResult")
        return called

    return decorate


@_takes_arguments_of(SearchProblem.of)
def find_counterfactuals(problem: SearchProblem) -> CounterfactualResult:
    """Counterfactuals for B items at once: ``r`` [B, U] features, ``origin``/``target`` long [B],
    ``head`` the classifier's last Linear, ``coef`` / ``intercept`` the link ``w = r @ coef + intercept``.

    ``check(w [n, w_dim] float32) -> logits [n, C]`` (or classes long [n]) renders ``w`` and
    classifies the images; it is called on the items still running only, at step 0 and every
    ``check_every`` steps (and at ``max_steps``). ``None`` uses the loss's own prediction: with
    ``render``, that is the rendered image's class, seen at every step at no extra cost.
    ``back``: ``(back_coef [w_dim, U], back_intercept [U])`` scores the shift through the back
    map; ``render``: ``w [n, w_dim] float32 -> logits [n, C]``, differentiable, scores the
    rendered image itself, ``render_batch`` items per forward/backward pass (module docs).
    Neither: the paper's loss on ``r'``. Runs on the head's device; deterministic. The arguments
    are :meth:`SearchProblem.of`'s; :func:`search` takes a built problem.
    """
    return search(problem)


@_takes_arguments_of(SearchProblem.of)
def find_counterfactuals_one_by_one(problem: SearchProblem) -> CounterfactualResult:
    """The same search, one item at a time: the baseline the batched search is measured against."""
    if len(problem) == 0:
        return search(problem)
    return CounterfactualResult.concat([search(problem.item(i)) for i in range(len(problem))])


# ----------------------------------------------------------------------------- helpers


def render_and_classify(generator, classifier: nn.Module, batch_size: int = 256, precision: str = "fp32") -> Check:
    """A ``check`` for :func:`find_counterfactuals`: ``w`` -> ``generator.synthesize`` -> the
    classifier's logits (float32, on the CPU), in batches of ``batch_size`` (halved on CUDA out-of-memory),
    on the device of ``w`` (the head's: keep generator, classifier and head together), under
    the workflow's ``precision`` ('fp32', 'bf16', 'fp16')."""
    from .runtime import autocast, run_batched

    @torch.inference_mode()
    def check(w: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(w), classifier.num_classes, dtype=torch.float32)

        def step(sl: slice) -> None:
            with autocast(w.device, precision):
                logits = classifier(generator.synthesize(w[sl]))
            out[sl] = logits.float().cpu()

        run_batched(len(w), batch_size, step, setting="counterfactual batch_size")
        return out

    return check


def linear_head(classifier: nn.Module, rtol: float = 1e-4) -> nn.Linear:
    """The classifier's last layer as an ``nn.Linear``: its ``fc`` where that is one (every
    torchvision/timm/demo classifier), else recovered from its ``head(r)`` (a scripted module)
    by probing it at 0 and at each unit vector, then checked on random features: a head that
    is not affine in ``r`` (an MLP, a normalisation) is refused, since the loss assumes one."""
    fc = getattr(classifier, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc
    head = getattr(classifier, "head", None)
    name = getattr(classifier, "name", type(classifier).__name__)
    units, classes = getattr(classifier, "num_units", None), getattr(classifier, "num_classes", None)
    if not callable(head) or not isinstance(units, int) or not isinstance(classes, int):
        raise CounterfactualError(f"classifier '{name}' exposes no linear head (an nn.Linear 'fc', or head(r) with "
                                  "num_units and num_classes); counterfactuals need the last layer's weights")
    device = next((t.device for t in [*classifier.parameters(), *classifier.buffers()]), torch.device("cpu"))
    with torch.no_grad():
        probe = torch.cat([torch.zeros(1, units), torch.eye(units)]).to(device)
        out = torch.cat([head(probe[i : i + 1024]).float() for i in range(0, len(probe), 1024)])
        if out.shape != (units + 1, classes):
            raise CounterfactualError(f"classifier '{name}': head(r) returned shape {tuple(out.shape[1:])} per row, "
                                      f"expected [{classes}] logits")
        bias, weight = out[0], (out[1:] - out[0]).T
        r = torch.rand(8, units, generator=torch.Generator().manual_seed(0)).to(device) * 2
        got, want = head(r).float(), r @ weight.T + bias
        err = float((got - want).abs().max())
        if not err <= rtol * max(1.0, float(got.abs().max())):
            raise CounterfactualError(f"classifier '{name}': head(r) is not a linear layer (off by up to {err:.3g} from "
                                      "the affine map through its probes); counterfactuals need a linear last layer")
    linear = nn.Linear(units, classes).to(device)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear.requires_grad_(False)


def rendered_logits(generator, classifier: nn.Module, precision: str = "fp32") -> Render:
    """A differentiable ``render`` for :func:`find_counterfactuals`: ``w`` -> image -> the classifier's logits
    (float32), under the workflow's ``precision``; keep ``w``, generator and classifier on one device."""
    from .runtime import autocast

    def render(w: torch.Tensor) -> torch.Tensor:
        with autocast(w.device, precision):
            return classifier(generator.synthesize(w)).float()

    return render


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
