"""Step 3 of the paper: sweep one unit over its observed range, map to ``w``, render.

Every sweep of unit ``u`` from start sample ``s`` is the line

    w(t) = link(r_s) + (t - r_s[u]) * d_u,    t in linspace(low_u, high_u, n_steps)

through the linked latent of the start sample. The *direction* ``d_u`` decides what the sweep
shows (``tune.direction``; docs/selectivity.md):

- ``link_row`` (the paper): ``d_u`` is row ``u`` of the link's coefficients, i.e. ``link(r)`` with
  unit ``u`` set to ``t`` and every other unit fixed. A link row is a *decoder* weight: it says
  how the link reads unit ``u`` in the company of all the others, not what goes with the unit.
  Where units are correlated (a unit that is a combination of others is the extreme case) the
  row can point anywhere (Haufe et al., 2014, NeuroImage 87:96-110).
- ``pattern``: the *encoding* direction, the change of ``w`` that goes with a unit change of
  ``r_u`` in the data, ``Cov(w, r_u) / Var(r_u)`` (Haufe's activation pattern; for an OLS link
  it is the pattern of the link itself, since the link's residual is uncorrelated with ``r``).
  Both moments are taken *within class* (each class's mean removed), so that the differences
  between species that happen to go with the unit do not leak into its sweep.
- ``directed``: the smallest (Euclidean) change of ``w`` that changes the within-class linear
  regression of ``r_u`` on ``w`` (the unit's read-out of ``w``, ``b_u = Sigma_w^-1 Cov(w, r_u)``)
  by one unit: ``b_u / |b_u|^2``. It moves ``w`` only along what the unit reads, so factors that
  merely go with the unit in the data (correlated within class) stay put; it is the attribute
  normal of InterFaceGAN (Shen et al., 2020, CVPR), taken within class.

All three are functions of the unit alone and of the linked samples, never of which other units
are analysed, so a unit's sweep is the same in any shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from .linking import LinearLink, within_class
from .runtime import autocast, run_batched

Direction = Literal["link_row", "pattern", "directed"]
DIRECTIONS: tuple[str, ...] = ("link_row", "pattern", "directed")


@dataclass(frozen=True)
class WithinClass:
    """Moments of (w, r) with each class's mean removed, pooled over classes."""

    cov_wr: np.ndarray  # [w_dim, units]: Cov(w, r_u)
    var_r: np.ndarray  # [units]
    cov_w: np.ndarray  # [w_dim, w_dim]

    @classmethod
    def of(cls, r: np.ndarray, w: np.ndarray, classes: np.ndarray) -> "WithinClass":
        rc, wc = within_class(r, classes), within_class(w, classes)
        dof = max(len(r) - len(np.unique(classes)), 1)
        return cls(wc.T @ rc / dof, (rc**2).sum(0) / dof, wc.T @ wc / dof)

    def pattern(self) -> np.ndarray:
        """[units, w_dim]: Cov(w, r_u) / Var(r_u); zero for a unit that does not vary."""
        var = self.var_r
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(var[:, None] > 0, self.cov_wr.T / var[:, None], 0.0)

    def readout(self) -> np.ndarray:
        """[units, w_dim]: ``b_u``, the least-squares regression of r_u on w (within class)."""
        # Solve instead of invert; a tiny ridge keeps a rank-deficient w (e.g. constant dims) solvable.
        eye = np.eye(len(self.cov_w)) * (1e-9 * max(np.trace(self.cov_w), 1e-12) / len(self.cov_w))
        return np.linalg.solve(self.cov_w + eye, self.cov_wr).T

    def r2(self) -> np.ndarray:
        """[units]: share of Var(r_u) explained by a linear function of w (within class)."""
        explained = (self.cov_wr.T * self.readout()).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.var_r > 0, np.clip(explained / self.var_r, 0.0, 1.0), 0.0)

    def directed(self) -> np.ndarray:
        """[units, w_dim]: ``b_u / |b_u|^2``, the least-norm change of w that moves b_u' w by one."""
        b = self.readout()
        norm2 = (b**2).sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(norm2 > 0, b / norm2, 0.0)


def sweep_directions(mode: str, link: LinearLink, r: np.ndarray, w: np.ndarray, classes: np.ndarray,
                     units: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Directions ``d_u`` [len(units), w_dim] of ``units`` and each unit's within-class R^2 from ``w``.

    ``r``, ``w``, ``classes``: the linked (training) samples the link was fitted on.
    """
    if mode not in DIRECTIONS:
        raise ValueError(f"unknown sweep direction '{mode}'; valid: {', '.join(DIRECTIONS)}")
    idx = np.asarray(units, dtype=np.int64)
    stats = WithinClass.of(r[:, idx], w, classes)
    r2 = stats.r2()
    if mode == "link_row":
        return np.asarray(link.coef, np.float64)[idx], r2
    return (stats.pattern() if mode == "pattern" else stats.directed()), r2


def sweep_values(low: np.ndarray, high: np.ndarray, n_steps: int) -> np.ndarray:
    """[units, n_steps] target activations, evenly spaced from ``low`` to ``high``."""
    frac = np.linspace(0.0, 1.0, n_steps)
    return (low[:, None] + (high - low)[:, None] * frac[None]).astype(np.float32)


@dataclass
class SweepPlan:
    """Everything one batch of sweeps needs: which (unit, start, step) each image is, and its ``w``."""

    units: np.ndarray  # [U] unit ids
    values: np.ndarray  # [U, K] target activations
    directions: np.ndarray  # [U, w_dim]
    w_start: np.ndarray  # [S, w_dim] link(r_s)
    r_start: np.ndarray  # [S, U] each start's own value of each swept unit

    def __post_init__(self) -> None:
        n_u, n_s, k = len(self.units), len(self.w_start), self.values.shape[1]
        grid = np.meshgrid(np.arange(n_u), np.arange(n_s), np.arange(k), indexing="ij")
        self.unit_index, self.start_index, self.step_index = (a.reshape(-1) for a in grid)

    @property
    def n_images(self) -> int:
        return len(self.unit_index)

    def latents(self, sl: slice) -> torch.Tensor:
        """``w`` of images ``sl`` (float32 [n, w_dim]), computed in float64 so every image's ``w`` is
        the same whatever batch it falls in."""
        ui, si, ki = self.unit_index[sl], self.start_index[sl], self.step_index[sl]
        shift = self.values[ui, ki].astype(np.float64) - self.r_start[si, ui].astype(np.float64)
        w = self.w_start[si].astype(np.float64) + shift[:, None] * self.directions[ui]
        return torch.from_numpy(w.astype(np.float32))


def plan_sweeps(mode: str, link: LinearLink, linked: tuple[np.ndarray, np.ndarray, np.ndarray],
                r_starts: np.ndarray, units: Sequence[int], low: np.ndarray, high: np.ndarray,
                n_steps: int) -> tuple[SweepPlan, np.ndarray]:
    """The sweeps of ``units`` from each start (``r_starts`` [S, all units]); also each unit's R^2 from w.

    ``linked``: (r, w, classes) of the samples the link was fitted on; ``low``/``high``: all units' bounds.
    """
    idx = np.asarray(units, dtype=np.int64)
    directions, r2 = sweep_directions(mode, link, *linked, idx)
    w_start = link(np.asarray(r_starts, np.float64))
    plan = SweepPlan(idx, sweep_values(low[idx], high[idx], n_steps), np.asarray(directions, np.float64),
                     np.asarray(w_start, np.float64), np.asarray(r_starts, np.float32)[:, idx])
    return plan, r2


@dataclass(frozen=True)
class Rendered:
    """One batch of swept images: what the classifier made of them, and what to store."""

    sl: slice
    images: torch.Tensor
    w: torch.Tensor
    realised: np.ndarray  # the swept unit's own activation on each image
    pred: np.ndarray
    probs: torch.Tensor  # softmax over classes, on the device
    truth: object | None  # the generator's GroundTruth, if it has one


@torch.inference_mode()
def render_sweeps(plan: SweepPlan, generator, classifier, device: torch.device, precision: str, batch_size: int,
                  on_batch: Callable[[Rendered], None], on_done: Callable[[int], None] | None = None) -> None:
    """Render every image of ``plan`` in batches and hand each batch to ``on_batch``."""
    unit_ids = torch.from_numpy(plan.units)

    def step(sl: slice) -> None:
        w = plan.latents(sl).to(device, non_blocking=True)
        with autocast(device, precision):
            img, truth = generator.render(w)
            feats, _ = classifier.features_and_logits(img)
        rows = torch.arange(len(w), device=device)
        own = unit_ids[torch.from_numpy(plan.unit_index[sl])].to(device)
        probs = classifier.head_float64(feats).softmax(1)  # independent of the batch's make-up
        on_batch(Rendered(sl, img, w, feats[rows, own].float().cpu().numpy(), probs.argmax(1).cpu().numpy(),
                          probs, truth))

    run_batched(plan.n_images, batch_size, step, on_done, setting="tune.batch_size")


def gain(target: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """Realised change / target change of each sweep (last step minus first), along the last axis;
    NaN where the target does not change (a dead unit)."""
    span = target[..., -1] - target[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span != 0, (realised[..., -1] - realised[..., 0]) / span, np.nan)
