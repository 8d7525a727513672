"""Few-shot part segmenter on the built-in world: mean IoU from <= 20 labelled images (issue 5).

Renders critters (5 classes, 64 px, truncation 0.7 as config/config.yaml), trains the
segmenter from the exact masks of the first n of 20 labelled images (n in ``--sizes``), and
scores it on ``--eval-images`` held-out images, once per feature source and n:

* ``image``: the image cues of ``linkstyle.segmenter.image_features`` alone;
* ``image+resnet18-random``: plus the early maps of an untrained demo ResNet-18 (fixed seed);
* ``image+resnet18-trained``: plus those of a demo ResNet-18 trained briefly (``--trained``).

Prints a table and writes bench/measurements/segmenter.json (not with ``--quick``, a smoke
run on tiny sizes, unless ``--out`` is given).

Usage: python bench/bench_segmenter.py [--quick] [--sizes 5,10,20] [--trained] [--threads 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from linkstyle.classifiers.demo import DEMO_MEAN, DEMO_STD, build_demo_net, train_demo
from linkstyle.classifiers.wrapper import Classifier
from linkstyle.generators.critters import PART_NAMES, Critters
from linkstyle.io import write_json
from linkstyle.runtime import batches
from linkstyle.segmenter import (
    DEFAULTS,
    image_features,
    mean_iou,
    predict_masks,
    train_segmenter,
)

OUT = Path(__file__).resolve().parent / "measurements" / "segmenter.json"
TRAIN_SEED0, EVAL_SEED0 = 10_000, 20_000  # disjoint seed ranges; the class is seed % num_classes


def render(gen: Critters, seeds: list[int], psi: float) -> tuple[torch.Tensor, np.ndarray]:
    classes = torch.tensor(seeds) % gen.num_classes
    with torch.inference_mode():
        w = gen.mapping(gen.sample_z(seeds), classes, truncation_psi=psi)
        images, truth = gen.render(w)
    return images, truth.masks.numpy()


def random_resnet18(gen: Critters, seed: int) -> Classifier:
    torch.manual_seed(seed)
    net = build_demo_net("resnet18", gen.num_classes, gen.resolution)
    return Classifier(net, name="resnet18-random", input_size=None, mean=DEMO_MEAN, std=DEMO_STD).eval()


def trained_resnet18(gen: Critters, seed: int, steps: int, psi: float) -> tuple[Classifier, dict[str, Any]]:
    clf, result = train_demo(gen, arch="resnet18", name="resnet18-trained", seed=seed, steps=steps, batch_size=64,
                             lr=3e-3, weight_decay=5e-4, truncation_psi=psi, eval_samples=512, device=torch.device("cpu"))
    return clf.eval(), {"steps": steps, "accuracy": result.accuracy, "seconds": result.seconds}


def run_source(
    name: str, clf: Classifier | None, train: tuple[torch.Tensor, np.ndarray], evaluation: tuple[torch.Tensor, np.ndarray],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Train on the labelled images, then predict the held-out ones chunk by chunk (features
    of hundreds of images with classifier maps take gigabytes)."""
    t0 = time.perf_counter()
    feats = image_features(train[0], clf)
    feature_seconds = time.perf_counter() - t0
    model, info = train_segmenter(feats, train[1], len(PART_NAMES), steps=args.steps, seed=args.seed,
                                  batch_size=args.batch_size, lr=args.lr, width=args.width)
    preds = []
    t0 = time.perf_counter()
    for sl in batches(len(evaluation[1]), 64):
        preds.append(predict_masks(model, image_features(evaluation[0][sl], clf), batch_size=64))
    predict_seconds = time.perf_counter() - t0
    miou, per_part = mean_iou(np.concatenate(preds), evaluation[1], len(PART_NAMES))
    return {
        "source": name,
        "train_images": len(train[1]),
        "channels": int(feats.shape[1]),
        "feature_bytes_per_image": int(feats[0].numel() * 4),
        "mean_iou": miou,
        "iou": dict(zip(PART_NAMES, per_part.tolist())),
        "train_seconds": info["seconds"],
        "train_feature_seconds": feature_seconds,
        "predict_ms_per_image": 1000 * predict_seconds / len(evaluation[1]),
        "final_loss": info["final_loss"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on tiny sizes; writes nothing unless --out")
    parser.add_argument("--sizes", default="5,10,20", help="labelled image counts, comma-separated (nested sets)")
    parser.add_argument("--eval-images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--width", type=int, default=DEFAULTS["width"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--psi", type=float, default=0.7, help="truncation (config/config.yaml: 0.7)")
    parser.add_argument("--trained", action="store_true", help="also: image + a briefly trained demo ResNet-18")
    parser.add_argument("--classifier-steps", type=int, default=200, help="training steps of that ResNet-18")
    parser.add_argument("--sources", default=None, help="comma-separated subset of the sources")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output (default {OUT.relative_to(OUT.parents[2])})")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.eval_images, args.steps, args.classifier_steps = "5", 8, 10, 10
    out = args.out if args.out is not None else (None if args.quick else OUT)
    sizes = sorted({int(n) for n in args.sizes.split(",")})
    if not all(1 <= n <= 200 for n in sizes):
        parser.error("--sizes: between 1 and 200 labelled images (the few-shot target is 20 or fewer)")

    torch.set_num_threads(args.threads)
    gen = Critters(num_classes=5, resolution=64, seed=0)
    train = render(gen, list(range(TRAIN_SEED0, TRAIN_SEED0 + max(sizes))), args.psi)
    evaluation = render(gen, list(range(EVAL_SEED0, EVAL_SEED0 + args.eval_images)), args.psi)

    sources: dict[str, Any] = {"image": lambda: (None, {}), "image+resnet18-random": lambda: (random_resnet18(gen, args.seed), {})}
    if args.trained:
        sources["image+resnet18-trained"] = lambda: trained_resnet18(gen, args.seed, args.classifier_steps, args.psi)
    if args.sources:
        wanted = args.sources.split(",")
        unknown = [s for s in wanted if s not in sources]
        if unknown:
            parser.error(f"unknown source(s) {unknown}; available: {', '.join(sources)}")
        sources = {k: v for k, v in sources.items() if k in wanted}

    header = (f"segmenter: critters 64 px, 5 classes, psi {args.psi}, {','.join(map(str, sizes))} labelled / {args.eval_images} "
              f"held-out images, {args.steps} steps x {args.batch_size}, lr {args.lr}, width {args.width}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus")
    print(header, flush=True)
    results = []
    for name, make in sources.items():
        clf, extra = make()
        for n in sizes:
            row = run_source(name, clf, (train[0][:n], train[1][:n]), evaluation, args)
            row.update({"classifier": extra} if extra else {})
            results.append(row)
            print(f"  {name}, {n} labelled: mean IoU {row['mean_iou']:.3f}, train {row['train_seconds']:.1f} s", flush=True)

    short = [p[:5] for p in PART_NAMES]
    print(f"\n{'source':<24}{'n':>4}{'ch':>5}{'train s':>9}{'ms/img':>8}{'mIoU':>7}" + "".join(f"{s:>7}" for s in short))
    for r in results:
        print(f"{r['source']:<24}{r['train_images']:>4}{r['channels']:>5}{r['train_seconds']:>9.1f}{r['predict_ms_per_image']:>8.2f}"
              f"{r['mean_iou']:>7.3f}" + "".join(f"{r['iou'][p]:>7.3f}" for p in PART_NAMES))

    report = {
        "benchmark": "segmenter",
        "command": "python bench/bench_segmenter.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "torch": torch.__version__,
        "numpy": np.__version__,
        "settings": {"generator": "critters", "resolution": 64, "num_classes": 5, "truncation_psi": args.psi,
                     "train_images": sizes, "eval_images": args.eval_images, "train_seeds_from": TRAIN_SEED0,
                     "eval_seeds_from": EVAL_SEED0, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                     "width": args.width, "seed": args.seed, "quick": args.quick},
        "target": {"mean_iou": 0.80, "max_train_images": 20},
        "parts": list(PART_NAMES),
        "results": results,
    }
    if out is not None:
        write_json(report, out)
        print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
