"""Throughput of the Critters generator: images/s for synthesize and render.

Usage: python bench/bench_critters.py [--resolution 64] [--batch 256] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from linkstyle.generators.critters import Critters, sample_z


def images_per_second(step: Callable[[], object], batch: int, seconds: float) -> tuple[float, int]:
    """Run ``step`` (one warm-up call first) for about ``seconds``; returns (images/s, batches)."""
    step()
    done = 0
    start = time.perf_counter()
    while True:
        step()
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done * batch / elapsed, done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    gen = Critters(num_classes=args.classes, resolution=args.resolution, seed=0)
    z = sample_z(range(args.batch))
    classes = torch.arange(args.batch) % args.classes
    with torch.inference_mode():
        w = gen.mapping(z, classes)
        print(
            f"critters {args.resolution}px, batch {args.batch}, "
            f"torch threads {torch.get_num_threads()}, cpu cores {os.cpu_count()}, "
            f"torch {torch.__version__}"
        )
        for name, step in (
            ("mapping", lambda: gen.mapping(z, classes)),
            ("synthesize", lambda: gen.synthesize(w)),
            ("render (+masks)", lambda: gen.render(w)),
        ):
            rate, batches = images_per_second(step, args.batch, args.seconds)
            print(f"{name:>16}: {rate:10.0f} images/s  ({batches} batches)")


if __name__ == "__main__":
    main()
