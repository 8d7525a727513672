"""Unit visualisation cost: a linking sweep against activation maximisation of the same units.

Linking: the tune stage's ``sweep_units`` (per start sample, ``tune.n_steps`` images: map r -> w,
render, classify once to record the realised activation; no gradients), timed twice: one sweep
per unit (one start sample: the visualisation) and the tune stage's full analysis (every start
sample, for the consistency test).
Activation maximisation: ``linkstyle.actmax.maximise`` (Lucent-style: Fourier image in decorrelated
colour, random shift/scale/rotation, Adam, ``--steps`` forward and backward passes). Both batched
over the same units, on the same classifier and device, alternating; seconds per unit.

    .venv/bin/python bench/bench_actmax.py --config results/default/config.yaml --classifier resnet18 \\
        --units 16 --repeats 3

Issue 8's target: linking at least 100x cheaper per unit.
"""

from __future__ import annotations

import argparse
import dataclasses

from common import add_run_args, alternate, median, open_run, report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=16, help="units visualised per repetition (the first ones)")
    p.add_argument("--steps", type=int, default=512, help="activation maximisation steps (Lucent's default: 512)")
    add_run_args(p)
    args = p.parse_args()
    cfg, ctx, device = open_run(args)

    import numpy as np

    from linkstyle.actmax import maximise
    from linkstyle.stages.actmax import settings_of
    from linkstyle.stages.tune import sweep_units

    clf = ctx.classifier(args.classifier)
    units = list(range(args.units))
    settings = dataclasses.replace(settings_of(ctx), steps=args.steps, batch_size=min(args.units, cfg.actmax.batch_size))
    results: dict[str, object] = {}

    def linking_one() -> None:
        results["one"] = sweep_units(ctx, args.classifier, units, label="bench one sweep", max_starts=1)

    def linking() -> None:
        results["linking"] = sweep_units(ctx, args.classifier, units, label="bench linking")

    def actmax() -> None:
        results["actmax"] = maximise(clf, units, ctx.generator.resolution, settings=settings, seed=cfg.seed, device=device)

    sides = {"linking: one sweep": linking_one, "linking: every start sample (tune stage)": linking,
             "activation maximisation": actmax}
    times = alternate(sides, args.repeats, device)
    per_unit = {k: median(v) / args.units for k, v in times.items()}
    am = results["actmax"]
    rows = []
    for name, key in (("linking: one sweep", "one"), ("linking: every start sample (tune stage)", "linking")):
        table, arrays = results[key]
        top = table[table["step"] == cfg.tune.n_steps - 1].groupby("unit")["realised"].median()
        images = len(arrays["unit"]) // args.units
        rows.append({"method": name, "s / unit (median)": per_unit[name],
                     "network passes / unit": f"{images} renders + {images} forward",
                     "unit's activation (median over units)": float(np.median(top.to_numpy())),
                     "actmax costs": f"{per_unit['activation maximisation'] / per_unit[name]:.0f}x"})
    rows.append({"method": "activation maximisation", "s / unit (median)": per_unit["activation maximisation"],
                 "network passes / unit": f"{args.steps} forward + {args.steps} backward",
                 "unit's activation (median over units)": float(np.median(am.activation)), "actmax costs": "1x"})
    starts = len(results["linking"][1]["unit"]) // args.units // cfg.tune.n_steps
    report(f"Unit visualisation cost, {args.classifier} on {cfg.generator.kind} {ctx.generator.resolution} px", rows, args, device, notes=[
        f"{args.units} units per repetition, median of {args.repeats}, the three alternating. Linking: "
        f"1 or {starts} start samples x {cfg.tune.n_steps} steps per unit, batch {cfg.tune.batch_size}; "
        f"actmax: {args.steps} steps, batch {settings.batch_size}, lr {settings.lr}.",
        "Activation: linking's is the realised activation at the sweep's top step (median over start samples), "
        "actmax's the unit on its final image; actmax optimises exactly this number, linking stays on the generator's images.",
    ])


if __name__ == "__main__":
    main()
