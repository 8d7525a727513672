"""Batched counterfactuals vs the same optimisation one item at a time, side by side.

On the built-in world (Critters, 5 species, 64 px) with a demo ResNet-18: the trained weights
of ``--weights`` (default: results/default/classifiers/resnet18/weights.pt where it exists),
else a ResNet-18 trained here for ``--train-steps``. A ridge link is fitted on ``--link-samples``
analysis samples; the items are other samples of each origin species whose image and whose
linked re-rendering ``w(r)`` the classifier both assigns to the origin. Every ``check`` renders
``w(r')`` with the generator and classifies it. Batched and one-by-one runs alternate (their
order swapped every repeat) so that machine noise hits both alike; medians over ``--repeats``.

    .venv/bin/python bench/bench_counterfactual.py                 # the measurement
    .venv/bin/python bench/bench_counterfactual.py --quick --out /tmp/cf.json   # smoke run, ~10-15 s

Prints a table and appends a record to ``bench/measurements/counterfactual.json`` (a list).
The issue's target: batched at least 5x faster per item than one item at a time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_WEIGHTS = ROOT / "results" / "default" / "classifiers" / "resnet18" / "weights.pt"
DEFAULT_OUT = ROOT / "bench" / "measurements" / "counterfactual.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="demo classifier weights (linkstyle train_classifier); default: "
                   "results/default/classifiers/resnet18/weights.pt if present, else train one here")
    p.add_argument("--train-steps", type=int, default=150, help="steps when training a classifier here")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--items", type=int, default=64, help="items in all, spread evenly over the pairs")
    p.add_argument("--pairs", default="0:1,1:2,2:3,3:4", help="origin:target pairs, comma separated")
    p.add_argument("--link-samples", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--logits-from", choices=("rendering", "back_map", "features"), default="rendering",
                   help="what the loss scores (counterfactual.logits_from; 'features' is the paper's loss)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-cosine", type=float, default=1.0,
                   help="the built-in world's default (config/config.yaml); the paper's 10 pins critters' w")
    p.add_argument("--weight-other", type=float, default=1.0, help="the built-in world's default; 0 is the paper's loss")
    p.add_argument("--l1", type=float, default=0.0)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--check-every", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="tiny smoke run: 3 classes at 32 px, a net trained for 10 "
                   "steps, 4 items, one repeat; writes JSON only with --out")
    p.add_argument("--out", default=None, help=f"JSON file to append to (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if args.quick:
        args.classes, args.resolution, args.items, args.pairs = 3, 32, 4, "0:1,1:2"
        args.link_samples, args.repeats, args.train_steps, args.max_steps = 90, 1, 10, 30
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):  # before numpy loads: more threads than cores stall
        os.environ.setdefault(var, str(args.threads))
    import numpy as np
    import torch

    from linkstyle.classifiers.demo import load_demo, train_demo
    from linkstyle.counterfactual import (
        CounterfactualSettings,
        find_counterfactuals,
        find_counterfactuals_one_by_one,
        render_and_classify,
        rendered_logits,
    )
    from linkstyle.generators.critters import Critters
    from linkstyle.linking import fit_ridge_cv, r2_score
    from linkstyle.seeds import sample_seeds

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    pairs = [tuple(int(c) for c in p.split(":")) for p in args.pairs.split(",")]
    gen = Critters(num_classes=args.classes, resolution=args.resolution, seed=0)

    weights = Path(args.weights) if args.weights else (DEFAULT_WEIGHTS if not args.quick and DEFAULT_WEIGHTS.is_file() else None)
    t0 = time.perf_counter()
    if weights is not None:
        clf = load_demo(weights, "resnet18", device)
        source = str(weights.resolve().relative_to(ROOT) if weights.resolve().is_relative_to(ROOT) else weights)
        if clf.num_classes != args.classes:
            sys.exit(f"{weights} has {clf.num_classes} classes, the benchmark's world {args.classes}: pass --classes")
    else:
        clf, trained = train_demo(gen, arch="resnet18", name="resnet18", seed=0, steps=args.train_steps,
                                  batch_size=16 if args.quick else 32, lr=3e-3, weight_decay=5e-4, truncation_psi=1.0,
                                  eval_samples=30 if args.quick else 500, device=device)
        source = f"trained here: {args.train_steps} steps, held-out accuracy {trained.accuracy:.3f}"
    clf.eval()
    print(f"classifier: {source} ({time.perf_counter() - t0:.0f} s)", flush=True)

    # Link samples and candidate items: analysis seeds of each class, truncation 0.7 as in the default config.
    psi = 0.7
    per_class = args.link_samples // args.classes
    want = -(-args.items // len(pairs))
    spare = max(4 * want, 16)

    @torch.inference_mode()
    def features(seeds: np.ndarray, cls: int):
        classes = torch.full((len(seeds),), cls, dtype=torch.long)
        w = gen.mapping(gen.sample_z(seeds.tolist()), classes, truncation_psi=psi)
        r, logits = clf.features_and_logits(gen.synthesize(w))
        return r, w, logits.argmax(1)

    link_r, link_w = [], []
    for c in range(args.classes):
        r, w, _ = features(sample_seeds(0, c, 0, per_class), c)
        link_r.append(r.numpy())
        link_w.append(w.numpy())
    r_all, w_all = np.concatenate(link_r), np.concatenate(link_w)
    alphas = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    link, _ = fit_ridge_cv(r_all, w_all, alphas, folds=5, seed=0)
    back, _ = fit_ridge_cv(w_all, r_all, alphas, folds=5, seed=0)
    check = render_and_classify(gen, clf)
    clf.requires_grad_(False)

    items_r, origin, target, start_ok, held_r, held_w = [], [], [], 0, [], []
    for o, t in pairs:
        r, w, pred = features(sample_seeds(0, o, per_class, per_class + spare), o)
        held_r.append(r.numpy())
        held_w.append(w.numpy())
        rec = check(torch.from_numpy(link(r.numpy().astype(np.float64)).astype(np.float32))).argmax(1)
        ok = torch.nonzero((pred == o) & (rec == o)).flatten()
        rest = torch.nonzero(~((pred == o) & (rec == o))).flatten()
        take = torch.cat([ok, rest])[:want]
        start_ok += int(min(len(ok), want))
        items_r.append(r[take])
        origin += [o] * len(take)
        target += [t] * len(take)
    r_items = torch.cat(items_r)[: args.items]
    origin_t = torch.tensor(origin[: args.items])
    target_t = torch.tensor(target[: args.items])
    n = len(r_items)
    link_r2 = r2_score(np.concatenate(held_w), link(np.concatenate(held_r).astype(np.float64)))

    settings = CounterfactualSettings(lr=args.lr, weight_cosine=args.weight_cosine, weight_other=args.weight_other,
                                      l1=args.l1, max_steps=args.max_steps, check_every=args.check_every)
    # As the stage does: scoring the rendering checks every step itself, so it needs no separate check.
    scoring = {"rendering": {"render": rendered_logits(gen, clf), "render_batch": 256, "check": None},
               "back_map": {"back": (back.coef, back.intercept)}, "features": {}}[args.logits_from]
    call = {"head": clf.fc, "coef": link.coef, "intercept": link.intercept, "check": check, "settings": settings, **scoring}
    find_counterfactuals(r_items[:2], origin_t[:2], target_t[:2], **{**call, "settings": CounterfactualSettings(max_steps=2)})

    times: dict[str, list[float]] = {"batched": [], "one_by_one": []}
    results = {}
    runs = {"batched": find_counterfactuals, "one_by_one": find_counterfactuals_one_by_one}
    for rep in range(args.repeats):
        for name in (("batched", "one_by_one") if rep % 2 == 0 else ("one_by_one", "batched")):
            t0 = time.perf_counter()
            results[name] = runs[name](r_items, origin_t, target_t, **call)
            times[name].append(time.perf_counter() - t0)
            print(f"  repeat {rep + 1}: {name:<11} {times[name][-1]:8.2f} s", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    bat, one = results["batched"], results["one_by_one"]
    rows = {}
    for name in ("one_by_one", "batched"):
        res = results[name]
        rows[name] = {
            "items": n, "seconds": med[name], "seconds_per_item": med[name] / n,
            "success_rate": res.success_rate, "median_steps": float(res.steps.float().median()),
            "median_steps_successful": float(res.steps[res.success].float().median()) if bool(res.success.any()) else None,
        }
    speedup = med["one_by_one"] / med["batched"]
    agree = {
        "same_success": float((bat.success == one.success).float().mean()),
        "same_steps": float((bat.steps == one.steps).float().mean()),
        "max_abs_shift_difference": float((bat.shift - one.shift).abs().max()),
    }
    per_pair = {f"{o}->{t}": float(bat.success[(origin_t == o) & (target_t == t)].float().mean()) for o, t in pairs}

    print(f"\ncounterfactuals ({args.logits_from}): {n} items over pairs {args.pairs}, critters {args.classes} classes {args.resolution} px, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{'run':<12}{'items':>6}{'seconds':>10}{'s / item':>10}{'speed-up':>10}{'success':>9}{'median steps':>14}")
    for name in ("one_by_one", "batched"):
        row = rows[name]
        sp = 1.0 if name == "one_by_one" else speedup
        print(f"{name:<12}{n:>6}{row['seconds']:>10.2f}{row['seconds_per_item']:>10.3f}{sp:>9.1f}x"
              f"{row['success_rate']:>9.2f}{row['median_steps']:>14.0f}")
    print(f"agreement batched vs one-by-one: success {agree['same_success']:.2f}, steps {agree['same_steps']:.2f}, "
          f"max |shift difference| {agree['max_abs_shift_difference']:.2e}")
    print(f"success per pair (batched): {per_pair}; items whose image and re-rendering start in the origin class: "
          f"{start_ok}/{n}; link R^2 on the items {link_r2:.3f}")

    record = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
        "device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "command": " ".join(["bench/bench_counterfactual.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "classifier": source, "classes": args.classes, "resolution": args.resolution,
        "pairs": args.pairs, "logits_from": args.logits_from, "link_samples": len(r_all), "link_alpha": link.alpha, "link_r2_items": link_r2,
        "items_start_in_origin": start_ok, "repeats": args.repeats,
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "runs": rows, "speedup_per_item": speedup, "seconds_all_repeats": times,
        "agreement": agree, "success_per_pair": per_pair,
    }
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_OUT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(out.read_text()) if out.is_file() else []
        out.write_text(json.dumps([*(old if isinstance(old, list) else [old]), record], indent=2) + "\n")
        print(f"appended to {out}")
    return record


if __name__ == "__main__":
    main()
