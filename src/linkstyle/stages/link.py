"""Fit r -> w (OLS as in the paper, and ridge), and judge both on the held-out split."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..errors import LinkstyleError
from ..io import write_json, write_npz
from ..linking import (
    LinearLink,
    cosine_similarity,
    distance_correlation,
    fit_ols,
    fit_ridge_cv,
    linear_cka,
    r2_score,
    row_correlation,
)
from ..runtime import autocast, run_batched
from ..seeds import derive
from .context import Context

log = logging.getLogger("linkstyle")


@torch.inference_mode()
def cycle_consistency(ctx: Context, name: str, link: LinearLink, r: np.ndarray, cls: np.ndarray) -> dict[str, float]:
    """Render the predicted w of each sample, classify it: same class? same features?"""
    gen, clf = ctx.generator, ctx.classifier(name)
    w_pred = torch.from_numpy(link(r).astype(np.float32))
    agree = np.empty(len(r), dtype=bool)
    corr = np.empty(len(r))

    def step(sl: slice) -> None:
        with autocast(ctx.device, ctx.cfg.precision):
            images = gen.synthesize(w_pred[sl].to(ctx.device))
            r2, logits = clf.features_and_logits(images)
        agree[sl] = logits.argmax(1).cpu().numpy() == cls[sl]
        corr[sl] = row_correlation(r[sl], r2.float().cpu().numpy())

    run_batched(len(r), ctx.cfg.generator.batch_size, step, setting="generator.batch_size")
    return {"cycle_agreement": float(agree.mean()), "cycle_feature_correlation": float(corr.mean())}


def evaluate_link(link: LinearLink, r: np.ndarray, w: np.ndarray) -> dict[str, float]:
    pred = link(r)
    return {
        "r2": r2_score(w, pred),
        "cosine": float(cosine_similarity(pred, w).mean()),
        "cosine_centred": float(cosine_similarity(pred - w.mean(0), w - w.mean(0)).mean()),
    }


def run_link(ctx: Context, name: str) -> None:
    cfg, paths = ctx.cfg, ctx.paths
    table, arrays = read_select(ctx, name)
    train = (table["split"] == "train").to_numpy()
    r, w = arrays["r"].astype(np.float64), arrays["w"].astype(np.float64)
    if train.sum() < r.shape[1]:
        log.warning("classifier '%s': %d linked samples for %d units: the link is underdetermined (OLS interpolates, "
                    "ridge leans on its penalty); draw more with sample.per_class", name, int(train.sum()), r.shape[1])
    links = {"ols": fit_ols(r[train], w[train])}
    links["ridge"], cv_scores = fit_ridge_cv(
        r[train], w[train], cfg.link.ridge_alphas, cfg.link.cv_folds, seed=derive(cfg.seed, "link", name) % 2**32
    )
    # The back map w -> r (for counterfactuals): ridge too, cross-validated on the same folds' seed.
    back, back_cv = fit_ridge_cv(
        w[train], r[train], cfg.link.ridge_alphas, cfg.link.cv_folds, seed=derive(cfg.seed, "link", name, "back") % 2**32
    )
    test_idx = np.flatnonzero(~train)
    cycle_idx = test_idx[: cfg.link.cycle_samples]
    cls = table["cls"].to_numpy()
    metrics: dict[str, Any] = {
        "classifier": name,
        "n_train": int(train.sum()),
        "n_test": int((~train).sum()),
        "units": int(r.shape[1]),
        "w_dim": int(w.shape[1]),
        "method_used": cfg.link.method,
        "ridge_alpha": links["ridge"].alpha,
        "ridge_cv_r2": {str(a): s for a, s in cv_scores.items()},
        "geometry": {
            "linear_cka": linear_cka(r[~train], w[~train]),
            "distance_correlation": distance_correlation(r[~train], w[~train], seed=cfg.seed),
        },
    }
    for method, link in links.items():
        metrics[method] = {
            "train": evaluate_link(link, r[train], w[train]),
            "test": {
                **evaluate_link(link, r[~train], w[~train]),
                **cycle_consistency(ctx, name, link, r[cycle_idx].astype(np.float32), cls[cycle_idx]),
                "cycle_samples": int(len(cycle_idx)),
            },
        }
    metrics["back"] = {
        "alpha": back.alpha,
        "cv_r2": {str(a): v for a, v in back_cv.items()},
        "train_r2": r2_score(r[train], back(w[train])),
        "test_r2": r2_score(r[~train], back(w[~train])),
    }
    check_usable(cfg, metrics)
    made = ctx.origin("link", classifier=name)
    write_npz(paths.link_model(name), made, **links[cfg.link.method].with_back(back).to_arrays())
    write_json(metrics, paths.link_metrics(name), made)
    ctx.wrote(paths.link_model(name), paths.link_metrics(name))


class LinkUnusable(LinkstyleError):
    """A link no better than chance: every later stage would read noise."""


def check_usable(cfg: Config, metrics: dict[str, Any]) -> None:
    """Stop at the link, with its numbers, when it is no better than chance (``link.min_test_r2``,
    ``link.min_cycle_agreement``) instead of sweeping, measuring and explaining noise for hours."""
    test = metrics[cfg.link.method]["test"]
    floor = cfg.link.min_cycle_agreement if cfg.link.min_cycle_agreement is not None else 1.0 / len(cfg.classes)
    problems = []
    if not test["r2"] > cfg.link.min_test_r2:
        problems.append(f"R^2 on the {metrics['n_test']} held-out samples is {test['r2']:.3f} (link.min_test_r2: "
                        f"{cfg.link.min_test_r2})")
    if not test["cycle_agreement"] > floor:
        problems.append(f"cycle agreement is {test['cycle_agreement']:.3f} (link.min_cycle_agreement: {floor:.3f}"
                        f"{', chance' if cfg.link.min_cycle_agreement is None else ''})")
    if problems:
        raise LinkUnusable(
            f"classifier '{metrics['classifier']}': the {cfg.link.method} link from r to w is unusable: "
            + "; ".join(problems) + f". It was fitted on {metrics['n_train']} samples for {metrics['units']} units; "
            "draw more samples (sample.per_class), check that the classifier gets the rendered images right "
            "(select), or lower the floors if you mean to go on"
        )


def read_select(ctx: Context, name: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The selected samples of classifier ``name``: table and arrays, checked to belong together."""
    table = ctx.read("select_table", classifier=name)
    return table, ctx.read("select_arrays", classifier=name, dims={"n": len(table)})


def load_link(ctx: Context, name: str, dims: dict[str, int] | None = None) -> LinearLink:
    """The fitted map; ``dims`` (units, w_dim) are checked against the arrays it is applied to."""
    return LinearLink.from_arrays(ctx.read("link_model", classifier=name, dims=dims))
