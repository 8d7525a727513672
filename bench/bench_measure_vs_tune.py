"""Does measuring keep up with tuning? Per image: measure stage vs render + classify (tune stage).

Runs on an existing run folder (the select and link artefacts, and the segmenter where
``measure.segmenter`` is ``learned``), in one process, alternating the two stages so that
machine noise hits both alike; one thread each, as in the workflow's rules.

    .venv/bin/python bench/bench_measure_vs_tune.py --config results/default/config.yaml \\
        --classifier resnet18 --units 16 --repeats 3 [--set measure.segmenter=ground_truth]

Prints a table and appends a JSON line to ``bench/measurements/measure_vs_tune.jsonl``.
Issue 5's target: the ratio measure / tune per image is below 1 on CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--classifier", required=True)
    p.add_argument("--units", type=int, default=16, help="units swept per repetition (from unit 0)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, as the CLI's")
    p.add_argument("--out", default=str(ROOT / "bench" / "measurements" / "measure_vs_tune.jsonl"))
    args = p.parse_args()

    import torch

    from linkstyle.cli import overrides_from
    from linkstyle.config import load_config
    from linkstyle.stages.context import Context
    from linkstyle.stages.measure import measure_sweeps
    from linkstyle.stages.tune import sweep_units

    cfg = load_config(args.config, overrides_from(args.set))
    ctx = Context(cfg, threads=args.threads)
    units = list(range(args.units))
    sweep_units(ctx, args.classifier, units[:1])  # warm-up: networks loaded, first-call costs paid
    tune_s, meas_s, n_images = [], [], 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _, arrays = sweep_units(ctx, args.classifier, units, label="bench tune")
        tune_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        measure_sweeps(ctx, arrays)
        meas_s.append(time.perf_counter() - t0)
        n_images = len(arrays["images"])
    tune_ms = 1000 * statistics.median(tune_s) / n_images
    meas_ms = 1000 * statistics.median(meas_s) / n_images
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), {platform.processor() or 'cpu'}",
        "torch": torch.__version__,
        "config": args.config, "overrides": args.set, "classifier": args.classifier,
        "segmenter": cfg.measure.segmenter, "resolution": cfg.generator.resolution,
        "images_per_repeat": n_images, "repeats": args.repeats,
        "tune_ms_per_image": tune_ms, "measure_ms_per_image": meas_ms, "ratio_measure_over_tune": meas_ms / tune_ms,
    }
    print(f"{'stage':<10}{'ms / image (median of ' + str(args.repeats) + ')':>32}")
    print(f"{'tune':<10}{tune_ms:>32.2f}")
    print(f"{'measure':<10}{meas_ms:>32.2f}   ({cfg.measure.segmenter} masks)")
    print(f"ratio measure / tune: {meas_ms / tune_ms:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
