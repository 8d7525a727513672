"""Scale: planning the largest paper preset, a tune job's memory against its number of units, and the
default run's wall time per stage.

1. ``snakemake -n --profile profiles/slurm`` on every paper preset (best of ``--repeats``; no
   weights needed), the largest one named.
2. Peak resident memory of a tune job sweeping 64, 512 and 2,048 units (``--units``): each in a fresh
   process that runs ``tune_units`` (the job's work after reading its config) into a temporary
   folder and reports its own ``ru_maxrss``. Units beyond the classifier's width repeat (unit
   ``i mod width``): the work and the output are the same size as for distinct units. With
   ``--in-memory`` the job keeps every array until the end, as tune did before it streamed.
3. The wall time and peak memory of each stage of a finished run, from Snakemake's benchmark files.

    .venv/bin/python bench/bench_scale.py --config results/default/config.yaml --classifier resnet18
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_run_args, open_run, report


def child(args: argparse.Namespace) -> None:
    """One tune job of ``args.child`` units; prints its peak RSS and wall time as JSON."""
    start = time.perf_counter()
    import numpy as np

    from linkstyle.io import write_npz, write_parquet
    from linkstyle.stages.tune import sweep_units, tune_units

    _, ctx, _ = open_run(args)  # tune_rss passes --threads 1 unless told otherwise
    width = ctx.classifier(args.classifier).num_units
    units = (np.arange(args.child) % width).tolist()
    with tempfile.TemporaryDirectory(prefix="linkstyle-bench-") as tmp:
        table, arrays = Path(tmp) / "shard.parquet", Path(tmp) / "shard.npz"
        if args.in_memory:
            out, data = sweep_units(ctx, args.classifier, units, label=f"tune {args.child} units")
            write_npz(arrays, None, **data)
            write_parquet(out, table)
        else:
            tune_units(ctx, args.classifier, units, table, arrays, label=f"tune {args.child} units")
        size = arrays.stat().st_size
    print(json.dumps({"units": args.child, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": time.perf_counter() - start, "npz_mb": size / 2**20}))


def tune_rss(args: argparse.Namespace, units: int, in_memory: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(units), "--config", args.config, "--classifier", args.classifier,
           "--threads", str(args.threads or 1), "--device", args.device, "--doc", "-"] + (["--in-memory"] if in_memory else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"tune job of {units} units failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, nargs="+", default=[64, 512, 2048], help="tune job sizes")
    p.add_argument("--compare-in-memory", action="store_true", help="also run each size without streaming")
    p.add_argument("--parts", default="dag,memory,stages",
                   help="comma-separated: dag (plan the presets), memory (tune jobs), stages (the run's time per stage)")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    add_run_args(p)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    device = None
    notes = []

    parts = set(args.parts.split(","))
    if "dag" in parts:
        from bench_dag import PRESETS, count, plan

        plans = []
        with tempfile.TemporaryDirectory() as tmp:
            for preset in PRESETS:
                best, out = min((plan(preset, Path(tmp)) for _ in range(args.repeats)), key=lambda t: t[0])
                plans.append({"preset": preset.stem, "dry-run s (best)": round(best, 2), **count(out)})
        rows = [{k: v for k, v in r.items() if k != "rules"} for r in plans]
        largest = max(plans, key=lambda r: r["jobs"])
        report("Scale: planning the paper presets", rows, args, device, notes=[
            f"Largest preset: {largest['preset']}, {largest['jobs']} jobs planned in {largest['dry-run s (best)']} s "
            f"(best of {args.repeats}; target at most 10 s)."])

    rows = []
    for units in args.units if "memory" in parts else []:
        streamed = tune_rss(args, units, in_memory=False)
        row = {"units in the job": units, "peak RSS MB (streamed)": streamed["max_rss_mb"], "job s": streamed["seconds"],
               "arrays written MB": streamed["npz_mb"]}
        if args.compare_in_memory:
            row["peak RSS MB (in memory)"] = tune_rss(args, units, in_memory=True)["max_rss_mb"]
        rows.append(row)
    if rows:
        growth = rows[-1]["peak RSS MB (streamed)"] - rows[0]["peak RSS MB (streamed)"]
        notes.append(f"From {args.units[0]} to {args.units[-1]} units the streamed job's peak RSS grows by {growth:.0f} MB "
                     f"while its arrays grow by {rows[-1]['arrays written MB'] - rows[0]['arrays written MB']:.0f} MB.")
        report(f"Scale: peak memory of one tune job ({args.classifier})", rows, args, device, notes=notes + [
            "Each size in a fresh process, 1 torch thread; the job's table and NPZ written to a temporary folder."])
    if "stages" not in parts:
        return

    from linkstyle.config import load_config
    from linkstyle.paths import RunPaths
    from linkstyle.stages.report import stage_timing

    run_dir = RunPaths(load_config(args.config).run_dir)
    timing = stage_timing(run_dir.root / "benchmarks")
    if timing:
        stage_rows = [{"stage": k, "jobs": v["jobs"], "seconds (summed over jobs)": v["seconds"],
                       "peak RSS MB": v["max_rss_mb"]} for k, v in timing.items()]
        report(f"Scale: wall time per stage of the run in {run_dir.root}", stage_rows, args, device, notes=[
            "From Snakemake's benchmark files of the last run; jobs of different stages overlap on the cores."])


if __name__ == "__main__":
    main()
