"""Overhead: the tune stage end to end against the ceiling of its inputs.

End to end: ``tune_units``, a tune job's whole work after start-up (read the select arrays and the
link, build every target ``r``, map to ``w``, render with masks, classify, record realised
activations, write the table and the streamed NPZ). Ceiling: the same ``w`` (precomputed) through
raw batched ``synthesize`` and one classifier forward per batch, in inference mode, storing nothing.
Same batch size, device and threads, alternating.

    .venv/bin/python bench/bench_overhead.py --config results/default/config.yaml --classifier resnet18 \\
        --units 64 --repeats 3

Issue 8's target: the tune stage at 0.8 of the ceiling or better.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import add_run_args, alternate, median, open_run, report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=64, help="units swept per repetition (one default shard)")
    add_run_args(p)
    args = p.parse_args()
    cfg, ctx, device = open_run(args)

    import torch

    from linkstyle.runtime import autocast, batches
    from linkstyle.stages.tune import sweep_units, tune_units

    gen, clf = ctx.generator, ctx.classifier(args.classifier)
    units = list(range(args.units))
    _, arrays = sweep_units(ctx, args.classifier, units, label="bench inputs")
    w_all = torch.from_numpy(arrays["w"])  # exactly the tune stage's w
    n = len(w_all)
    tmp = tempfile.TemporaryDirectory(prefix="linkstyle-bench-")
    out = Path(tmp.name)

    def end_to_end() -> None:
        tune_units(ctx, args.classifier, units, out / "shard.parquet", out / "shard.npz", label="bench tune")

    @torch.inference_mode()
    def ceiling() -> None:
        for sl in batches(n, cfg.tune.batch_size):
            with autocast(device, cfg.precision):  # the same precision as the tune stage
                clf.features_and_logits(gen.synthesize(w_all[sl].to(device)))

    times = alternate({"tune stage, end to end": end_to_end, "ceiling: synthesize + classify": ceiling}, args.repeats, device)
    rate = {k: n / median(v) for k, v in times.items()}
    fraction = rate["tune stage, end to end"] / rate["ceiling: synthesize + classify"]
    rows = [{"what": k, "images / s (median)": v} for k, v in rate.items()]
    rows.append({"what": "fraction of the ceiling", "images / s (median)": f"{fraction:.2f}"})
    npz = (out / "shard.npz").stat().st_size / 2**20
    report(f"Tune stage vs ceiling, {args.classifier} on {cfg.generator.kind} {gen.resolution} px", rows, args, device, notes=[
        f"{args.units} units x {n // args.units} images = {n} images per repetition, batch {cfg.tune.batch_size}, "
        f"median of {args.repeats}, alternating; the tune stage also writes {npz:.0f} MiB of arrays per repetition.",
    ])
    tmp.cleanup()


if __name__ == "__main__":
    main()
