"""Linear linking maps ``r -> w`` and the measures of how well two spaces line up.

The paper fits ordinary least squares; ridge with a cross-validated penalty is the
better-behaved choice when units outnumber samples. Both are closed form (one SVD per
fold serves every penalty), so fitting takes seconds even for thousands of units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class LinearLink:
    """``w = r @ coef + intercept``; ``coef`` is [units, w_dim] in the raw units of ``r``.

    ``back_coef`` [w_dim, units] and ``back_intercept`` [units], when fitted, map the other way,
    ``r_hat = w @ back_coef + back_intercept``: the features a rendering of ``w`` is expected to
    have. Counterfactuals score a shift through it (r -> w -> r_hat -> logits), so that only the
    part of a shift that changes the image can change the class (see counterfactual.py).
    """

    coef: np.ndarray
    intercept: np.ndarray
    method: str
    alpha: float = 0.0
    back_coef: np.ndarray | None = None
    back_intercept: np.ndarray | None = None
    back_alpha: float = 0.0

    def __call__(self, r: np.ndarray) -> np.ndarray:
        return r @ self.coef + self.intercept

    def back(self, w: np.ndarray) -> np.ndarray:
        """The features expected of a rendering of ``w``."""
        if self.back_coef is None or self.back_intercept is None:
            raise ValueError("this link has no back map w -> r (fit one with with_back)")
        return w @ self.back_coef + self.back_intercept

    def with_back(self, back: "LinearLink") -> "LinearLink":
        """This link with ``back`` (a map fitted from w to r) as its back map."""
        if back.coef.shape != self.coef.shape[::-1]:
            raise ValueError(f"back map has shape {back.coef.shape}, expected {self.coef.shape[::-1]} (w_dim, units)")
        return replace(self, back_coef=back.coef, back_intercept=back.intercept, back_alpha=back.alpha)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "coef": self.coef.astype(np.float32),
            "intercept": self.intercept.astype(np.float32),
            "method": np.array(self.method),
            "alpha": np.array(self.alpha, dtype=np.float64),
        }
        if self.back_coef is not None and self.back_intercept is not None:
            arrays["back_coef"] = self.back_coef.astype(np.float32)
            arrays["back_intercept"] = self.back_intercept.astype(np.float32)
            arrays["back_alpha"] = np.array(self.back_alpha, dtype=np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "LinearLink":
        has_back = "back_coef" in arrays and "back_intercept" in arrays
        return cls(
            coef=arrays["coef"].astype(np.float32),
            intercept=arrays["intercept"].astype(np.float32),
            method=str(arrays["method"]),
            alpha=float(arrays["alpha"]),
            back_coef=arrays["back_coef"].astype(np.float32) if has_back else None,
            back_intercept=arrays["back_intercept"].astype(np.float32) if has_back else None,
            back_alpha=float(arrays["back_alpha"]) if has_back and "back_alpha" in arrays else 0.0,
        )


def _standardise(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = r.mean(0)
    scale = r.std(0)
    scale[scale < 1e-8] = 1.0  # dead units: keep them, they just get no weight
    return (r - mean) / scale, mean, scale


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Coefficients [alphas, features, targets] for centred ``x``, ``y`` via one SVD."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    shrink = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # [A, k]
    return np.einsum("kf,ak,kt->aft", vt, shrink, uty)


def fit_ols(r: np.ndarray, w: np.ndarray) -> LinearLink:
    """Least squares with an intercept (minimum-norm solution when units outnumber samples)."""
    r = r.astype(np.float64)
    w = w.astype(np.float64)
    r_mean, w_mean = r.mean(0), w.mean(0)
    coef, *_ = np.linalg.lstsq(r - r_mean, w - w_mean, rcond=None)
    return LinearLink(coef, w_mean - r_mean @ coef, "ols")


def fit_ridge_cv(
    r: np.ndarray, w: np.ndarray, alphas: tuple[float, ...] | list[float], folds: int = 5, seed: int = 0
) -> tuple[LinearLink, dict[float, float]]:
    """Ridge on standardised units; the penalty maximising mean held-out R^2 over ``folds``."""
    r = r.astype(np.float64)
    w = w.astype(np.float64)
    alphas_arr = np.asarray(sorted(alphas), dtype=np.float64)
    n = len(r)
    if n < folds:
        raise ValueError(f"ridge cross-validation needs at least {folds} samples, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = np.arange(n) % folds
    scores = np.zeros(len(alphas_arr))
    for k in range(folds):
        tr, va = fold_of != k, fold_of == k
        xs, mean, scale = _standardise(r[tr])
        ym = w[tr].mean(0)
        path = _ridge_path(xs, w[tr] - ym, alphas_arr)
        xv = (r[va] - mean) / scale
        for i in range(len(alphas_arr)):
            scores[i] += r2_score(w[va], xv @ path[i] + ym) / folds
    best = float(alphas_arr[int(np.argmax(scores))])
    xs, mean, scale = _standardise(r)
    ym = w.mean(0)
    beta = _ridge_path(xs, w - ym, np.array([best]))[0]
    coef = beta / scale[:, None]
    return LinearLink(coef, ym - mean @ coef, "ridge", best), dict(zip(alphas_arr.tolist(), scores.tolist()))


def within_class(x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``x`` (float64) with each class's mean removed: what varies within a class, not between classes."""
    out = np.array(x, dtype=np.float64)
    for c in np.unique(classes):
        rows = classes == c
        out[rows] -= out[rows].mean(0)
    return out


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over target dimensions of 1 - SS_res / SS_tot (as scikit-learn's 'uniform_average')."""
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    ok = ss_tot > 0
    return float(np.mean(1 - ss_res[ok] / ss_tot[ok]))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation (e.g. a sample's r against the r of its re-rendered image)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return cosine_similarity(a, b)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al., 2019) between two sets of rows."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    xty = np.linalg.norm(x.T @ y) ** 2
    return float(xty / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def distance_correlation(x: np.ndarray, y: np.ndarray, max_points: int = 1000, seed: int = 0) -> float:
    """Pearson correlation of pairwise Euclidean distances: do both spaces order samples alike?"""
    if len(x) > max_points:
        idx = np.random.default_rng(seed).choice(len(x), max_points, replace=False)
        x, y = x[idx], y[idx]
    iu = np.triu_indices(len(x), k=1)
    dx = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))[iu]
    dy = np.sqrt(((y[:, None] - y[None]) ** 2).sum(-1))[iu]
    return float(np.corrcoef(dx, dy)[0, 1])
