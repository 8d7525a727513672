"""Sweeps that follow the classifier's own unit through the rendering, against the `pattern` line.

Usage (from the repo root, after ``make run``)::

    PYTHONPATH=src .venv/bin/python bench/rendered_path.py [--classifier resnet18] [--units 16] [--substeps 8]

`tune.direction` offers straight lines in ``w``. Along `pattern` a unit moves by about its
within-class R^2 from ``w`` (docs/selectivity.md, "Why pattern moves a unit by about its R^2"),
because a line follows the unit's *linear* read-out. This script asks whether a path that follows
the classifier itself does better: from each start's linked latent ``link(r_s)`` it walks towards
the unit's lowest and highest observed activation in ``--substeps`` steps per side, each step the
least change of ``w`` in the data's within-class metric (``Sigma_w``: the natural gradient, Amari,
1998, Neural Computation 10:251-276) that moves the rendered image's unit to the next intermediate
target (a Newton step on the unit's gradient through the generator and the classifier). It prints,
for the path and for the `pattern` line over the same (unit, start) pairs: the median gain
(realised / target change), the share of end images still classified as the start's class, and
the median Mahalanobis length of the sweep in ``w``.

Random units (seeded) of a demo classifier, or the planted units of a ``planted`` one. The `pattern`
sweeps are the tune stage's own (``sweep.plan_sweeps``), from the same starts. The path costs
2 x ``--substeps`` forward and backward passes per sweep, against 3 forward passes for a line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from linkstyle.config import load_config  # noqa: E402
from linkstyle.stages.context import Context  # noqa: E402
from linkstyle.stages.link import load_link, read_select  # noqa: E402
from linkstyle.sweep import WithinClass, plan_sweeps  # noqa: E402
from linkstyle.units import planted_units  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--classifier", default="resnet18")
    p.add_argument("--units", type=int, default=16, help="random units of a demo classifier (seed 0)")
    p.add_argument("--substeps", type=int, default=8, help="Newton steps per side of each sweep")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = load_config([args.config], {})
    ctx = Context(cfg, threads=2)
    name = args.classifier
    table, arrays = read_select(ctx, name)
    starts = table.index[table["start"]].to_numpy()
    start_cls = torch.from_numpy(table["cls"].to_numpy()[starts])
    link = load_link(ctx, name)
    train = (table["split"] == "train").to_numpy()
    r, w, cls = arrays["r"][train], arrays["w"][train], table["cls"].to_numpy()[train]
    if ctx.cfg.classifier(name).kind == "planted":
        units = np.array(planted_units(cfg, name))
    else:
        units = np.sort(np.random.default_rng(0).choice(r.shape[1], args.units, replace=False))
    cov_w = torch.tensor(WithinClass.of(r[:, units], w, cls).cov_w, dtype=torch.float64)
    cov_inv = torch.linalg.inv(cov_w)
    generator, classifier = ctx.generator, ctx.classifier(name)
    # The pattern sweeps' two ends (n_steps=2): unit-major, then start, as the pairs below.
    plan, _ = plan_sweeps("pattern", link, (r, w, cls), arrays["r"][starts], units, arrays["unit_low"],
                          arrays["unit_high"], 2)

    n_u, n_s = len(units), len(starts)
    ui, si = np.repeat(np.arange(n_u), n_s), np.tile(np.arange(n_s), n_u)
    unit_ids = torch.from_numpy(units[ui])
    rows = torch.arange(len(ui))
    w0 = torch.from_numpy(plan.w_start)[si]
    low = torch.tensor(plan.values[ui, 0], dtype=torch.float64)
    high = torch.tensor(plan.values[ui, 1], dtype=torch.float64)

    def respond(wb: torch.Tensor, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The swept unit's activation on each rendered image, its gradient in w, the predicted class."""
        wb = wb.detach().float().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            feats, logits = classifier.features_and_logits(generator.synthesize(wb))
            act = feats[rows, unit_ids]
            g = torch.autograd.grad(act.sum(), wb)[0].double() if grad else None
        return act.detach().double(), g, logits.argmax(1)

    def mahalanobis(dw: torch.Tensor) -> np.ndarray:
        return torch.sqrt(((dw @ cov_inv) * dw).sum(1)).numpy()

    t0 = time.perf_counter()
    a0, _, _ = respond(w0)
    ends = {}
    for side, target in (("low", low), ("high", high)):
        wc = w0.clone()
        for k in range(1, args.substeps + 1):
            goal = a0 + (target - a0) * k / args.substeps
            act, g, _ = respond(wc, grad=True)
            assert g is not None
            step = g @ cov_w  # Sigma_w g: the steepest ascent in the data's metric
            wc = wc + ((goal - act) / (step * g).sum(1).clamp_min(1e-12))[:, None] * step
        ends[side] = (wc, *respond(wc)[::2])
    seconds = time.perf_counter() - t0

    line = plan.latents(slice(None)).reshape(n_u * n_s, 2, -1).double()
    lines = {"low": (line[:, 0], *respond(line[:, 0])[::2]), "high": (line[:, 1], *respond(line[:, 1])[::2])}

    print(f"{name}: {n_u} units x {n_s} starts, path of {args.substeps} steps per side in {seconds:.1f} s")
    for label, e in (("path through the rendering", ends), ("pattern line", lines)):
        gain = ((e["high"][1] - e["low"][1]) / (high - low)).numpy()
        kept = np.mean([(e[s][2] == start_cls[si]).float().mean().item() for s in e])
        print(f"  {label:27s} median gain {np.median(gain):.3f}   in the start's class {kept:.3f}   "
              f"median Mahalanobis length {np.median(mahalanobis(e['high'][0] - e['low'][0])):.2f}")


if __name__ == "__main__":
    main()
