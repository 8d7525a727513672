"""How far each measured property moves, in reference spreads, per reference spread of one factor.

Usage (from the repo root, after ``make run``)::

    PYTHONPATH=src .venv/bin/python bench/factor_sensitivity.py [--run results/default] [--classifier regnet]

Concept recovery asks whether a unit's label names a concept of the factor that changed most along
its sweeps, both in reference spreads (``selectivity.py``). A label can only do that if each
factor's own concepts move about as much per spread of the factor as the concepts of the others.
For the first ``--images`` held-out samples of the classifier (their ``w``), this script moves one
factor at a time (its logit by ``--step``, the other factors fixed), renders, measures with the
exact masks, and divides each property's mean change, in its reference spread, by the factor's
mean change in its own. Per factor it prints the largest such ratio among the factor's own
concepts (``FACTOR_CONCEPTS``) and the two largest among the other properties. A factor whose own
concepts move by 0.4 per spread while another factor's move by 1.0 loses every near-tie to it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from linkstyle.config import load_config  # noqa: E402
from linkstyle.generators.critters import FACTOR_CONCEPTS, FACTOR_NAMES, PART_NAMES  # noqa: E402
from linkstyle.measures import STATIC_PROPERTIES, part_measures  # noqa: E402
from linkstyle.selectivity import BACKDROP, GEOMETRY, PERIODS, circular_difference  # noqa: E402
from linkstyle.stages.context import Context  # noqa: E402
from linkstyle.stages.tune import to_uint8  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, default=ROOT / "results" / "default")
    p.add_argument("--classifier", default="regnet")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--step", type=float, default=0.3, help="change of one factor's logit")
    args = p.parse_args()

    ctx = Context(load_config(str(args.run / "config.yaml")), threads=1)
    gen = ctx.generator
    arrays = np.load(args.run / "select" / args.classifier / "arrays.npz")
    table = pd.read_parquet(args.run / "select" / args.classifier / "samples.parquet")
    rows = np.flatnonzero((table["split"] == "test").to_numpy())[: args.images]
    spread = pd.read_parquet(args.run / "reference" / args.classifier / "spread.parquet")
    spread = spread[spread["masks"] == "truth"]
    scale = {(k, p, q): s for k, p, q, s in spread[["kind", "part", "property", "spread"]].itertuples(index=False)}

    def measure(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            images, truth = gen.render(w)
        masks = truth.masks.numpy().astype(np.uint8)
        return part_measures(to_uint8(images), masks, len(PART_NAMES)), truth.factors.numpy().astype(np.float64)

    w = torch.from_numpy(arrays["w"][rows].astype(np.float32))
    logits = gen.w_to_logits(w)
    before, f_before = measure(w)
    out = []
    for fi, factor in enumerate(FACTOR_NAMES):
        moved = logits.clone()
        moved[:, fi] += args.step
        after, f_after = measure(gen.logits_to_w(moved))
        factor_change = (f_after[:, fi] - f_before[:, fi]).mean() / scale[("factor", "", factor)]
        change = (after - before).astype(np.float64)
        for qi, prop in enumerate(STATIC_PROPERTIES):
            if prop in PERIODS:
                change[..., qi] = circular_difference(before[..., qi], after[..., qi], PERIODS[prop])
        mean = np.nanmean(change, 0)
        own = set(FACTOR_CONCEPTS[factor])
        for pi, part in enumerate(PART_NAMES):
            for qi, prop in enumerate(STATIC_PROPERTIES):
                s = scale.get(("measure", part, prop), np.nan)
                if prop == "n_components" or (part == BACKDROP and prop in GEOMETRY) or not np.isfinite(s):
                    continue
                out.append((factor, f"{part}:{prop}", (part, prop) in own, mean[pi, qi] / s / factor_change))
    res = pd.DataFrame(out, columns=["factor", "property", "own", "ratio"])
    res["size"] = res["ratio"].abs()
    print(f"{args.classifier}: property change / factor change, both in reference spreads "
          f"({len(rows)} held-out samples, logit step {args.step}, exact masks)")
    print("| factor | largest of its own concepts | largest two of the other properties |\n| --- | --- | --- |")
    for factor, g in res.groupby("factor", sort=False):
        g = g.sort_values("size", ascending=False)
        own, other = g[g["own"]].head(1), g[~g["own"]].head(2)
        first = f"`{own['property'].iloc[0]}` {own['ratio'].iloc[0]:+.2f}" if len(own) else "-"
        print(f"| {factor} | {first} | " + ", ".join(f"`{r.property}` {r.ratio:+.2f}" for r in other.itertuples()) + " |")


if __name__ == "__main__":
    main()
