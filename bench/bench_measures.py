"""Speed benchmark for ``linkstyle.measures`` on synthetic part-segmented images.

Usage (from the repo root)::

    PYTHONPATH=src .venv/bin/python bench/bench_measures.py [--n 2048] [--size 64] [--parts 8] [--sets 2]

Images are random ellipses and rectangles (one per part, later ones occluding
earlier ones) filled with a flat colour plus noise, over a noisy background
(part 0); sweeps move and resize the shapes a little at each step. Times are
for one thread (BLAS/OpenCV pinned to 1 unless ``--threads`` says otherwise);
both wall-clock and process CPU time are printed because the host may be shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _pin_threads(n: int) -> None:
    """Pin native thread pools before numpy/cv2 are imported, so the numbers are per core."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=2048, help="images for part_measures")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--parts", type=int, default=8, help="number of part labels (0 = background)")
    p.add_argument("--sets", type=int, default=2, help="mask sets for part_measures_many")
    p.add_argument("--sweeps", type=int, default=256, help="sweeps for sweep_motion")
    p.add_argument("--steps", type=int, default=3, help="steps K per sweep")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    _pin_threads(ARGS.threads)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from linkstyle import measures  # noqa: E402


def draw_scene(
    shapes: np.ndarray, colours: np.ndarray, size: int, noise: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One image and its mask from per-part shape parameters ``(kind, cx, cy, a, b, angle)``."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = colours[0]
    mask = np.zeros((size, size), np.uint8)
    for part in range(1, len(shapes)):
        kind, cx, cy, a, b, angle = shapes[part]
        layer = np.zeros((size, size), np.uint8)
        centre = (int(round(cx)), int(round(cy)))
        axes = (max(1, int(round(a))), max(1, int(round(b))))
        if kind < 0.5:
            cv2.ellipse(layer, centre, axes, float(angle), 0, 360, 1, -1)
        else:
            box = cv2.boxPoints((centre, (2.0 * axes[0], 2.0 * axes[1]), float(angle)))
            cv2.fillPoly(layer, [np.round(box).astype(np.int32)], 1)
        on = layer.astype(bool)
        image[on] = colours[part]
        mask[on] = part
    noisy = image.astype(np.int16) + noise
    return noisy.clip(0, 255).astype(np.uint8), mask


def make_dataset(
    rng: np.random.Generator, n: int, size: int, parts: int, steps: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``steps == 1``: images [n, H, W, 3], masks [n, H, W]; else [n, steps, ...] sweeps."""
    images = np.empty((n, steps, size, size, 3), np.uint8)
    masks = np.empty((n, steps, size, size), np.uint8)
    for i in range(n):
        shapes = np.stack(
            [
                rng.random(parts),
                rng.uniform(0.1, 0.9, parts) * size,
                rng.uniform(0.1, 0.9, parts) * size,
                rng.uniform(0.04, 0.25, parts) * size,
                rng.uniform(0.04, 0.15, parts) * size,
                rng.uniform(0, 180, parts),
            ],
            axis=1,
        )
        colours = rng.integers(0, 256, (parts, 3))
        noise = rng.normal(0, 12, (size, size, 3)).astype(np.int16)
        drift = rng.normal(0, 0.02 * size, (parts, 2))
        for k in range(steps):
            moved = shapes.copy()
            moved[:, 1:3] += k * drift
            images[i, k], masks[i, k] = draw_scene(moved, colours, size, noise)
    if steps == 1:
        return images[:, 0], masks[:, 0]
    return images, masks


def best_of(repeats: int, fn, *args, **kwargs) -> tuple[float, float]:
    """Best (wall, cpu) seconds over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn(*args, **kwargs)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def split_stages(
    args: argparse.Namespace, images: np.ndarray, masks: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Time per-part entropy, colour, labelling/ellipses and the rest of ``part_measures``.

    The expensive stages are re-run on the chunks ``part_measures`` uses; the rest
    is timed by running ``part_measures`` with those stages replaced by look-ups of
    their precomputed results, so no number is a noisy difference. The whole-image
    ``local_entropy`` (no longer part of ``part_measures``) is timed for comparison.
    """
    step = max(1, measures._CHUNK_PIXELS // (args.size * args.size))
    grey = measures.grey_uint8(images)
    grid = measures._Grid(min(step, args.n), args.size, args.size)
    starts = range(0, args.n, step)
    entropies = [
        measures.local_entropy_in_parts(grey[i : i + step], masks[i : i + step], args.parts, 5)
        for i in starts
    ]
    colours = [measures.lab_ab(images[i : i + step]) for i in starts]
    ellipses = [measures._component_ellipses(masks[i : i + step], args.parts, grid) for i in starts]

    def entropy_stage() -> None:
        for i in starts:
            measures.local_entropy_in_parts(grey[i : i + step], masks[i : i + step], args.parts, 5)

    def whole_entropy_stage() -> None:
        for i in starts:
            measures.local_entropy(grey[i : i + step], 5)

    def colour_stage() -> None:
        for i in starts:
            measures.lab_ab(images[i : i + step])

    def ellipse_stage() -> None:
        for i in starts:
            measures._component_ellipses(masks[i : i + step], args.parts, grid)

    def rest_stage() -> None:
        cached = iter(entropies), iter(colours), iter(ellipses)
        names = ("local_entropy_in_parts", "lab_ab", "_component_ellipses")
        real = [getattr(measures, name) for name in names]
        for name, values in zip(names, cached):
            setattr(measures, name, lambda *a, _values=values, **k: next(_values))
        try:
            measures.part_measures(images, masks, args.parts)
        finally:
            for name, fn in zip(names, real):
                setattr(measures, name, fn)

    return {
        "entropy in parts": best_of(args.repeats, entropy_stage),
        "colour (Lab)": best_of(args.repeats, colour_stage),
        "labels+ellipses": best_of(args.repeats, ellipse_stage),
        "rest": best_of(args.repeats, rest_stage),
    }, best_of(args.repeats, whole_entropy_stage)


def main(args: argparse.Namespace) -> None:
    cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    images, masks = make_dataset(rng, args.n, args.size, args.parts)
    sweep_images, sweep_masks = make_dataset(rng, args.sweeps, args.size, args.parts, args.steps)
    print(
        f"data: {args.n} images + {args.sweeps}x{args.steps} sweep images at {args.size}px, "
        f"{args.parts} parts, threads={args.threads} (generated in {time.perf_counter() - t0:.1f}s)"
    )

    total = best_of(args.repeats, measures.part_measures, images, masks, args.parts)
    # Further mask sets: the same masks shifted by 1, 2, ... px, like a segmenter's.
    sets = [(np.roll(masks, k, axis=2), args.parts) for k in range(args.sets)]
    many = best_of(args.repeats, measures.part_measures_many, images, sets)
    stages, whole_entropy = split_stages(args, images, masks)
    motion = best_of(args.repeats, measures.sweep_motion, sweep_images, sweep_masks, args.parts)

    print(
        f"part_measures: {args.n / total[0]:8.0f} images/s wall, "
        f"{args.n / total[1]:8.0f} images/s cpu"
    )
    stage_sum = sum(cpu for _, cpu in stages.values())
    for name, (wall, cpu) in stages.items():
        print(
            f"  {name:16s} {1e3 * wall / args.n:6.3f} ms/image wall, "
            f"{1e3 * cpu / args.n:6.3f} ms/image cpu ({100 * cpu / stage_sum:4.1f}% of cpu)"
        )
    print(
        f"  (whole-image local_entropy, for comparison: {1e3 * whole_entropy[0] / args.n:6.3f} ms/image "
        f"wall, {1e3 * whole_entropy[1] / args.n:6.3f} ms/image cpu)"
    )
    print(
        f"part_measures_many, {args.sets} mask sets: {args.n / many[0]:8.0f} images/s wall, "
        f"{args.n / many[1]:8.0f} images/s cpu"
    )
    print(
        f"sweep_motion:  {args.sweeps / motion[0]:8.1f} sweeps/s wall, "
        f"{args.sweeps / motion[1]:8.1f} sweeps/s cpu (K={args.steps}, "
        f"{1e3 * motion[0] / (args.sweeps * (args.steps - 1)):.2f} ms per flow pair)"
    )


if __name__ == "__main__":
    main(ARGS)
