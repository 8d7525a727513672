"""GPU check: the tiny pipeline on CUDA, and synthesis + classification throughput with and without autocast.

    .venv/bin/python bench/gpu_check.py                 # on a CUDA machine (device cuda)
    .venv/bin/python bench/gpu_check.py --device cpu    # the same measurements on the CPU, for comparison
    .venv/bin/python bench/gpu_check.py --skip-workflow # throughput only

Prints one line per measurement and writes them as JSON to --out (default gpu_check.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from linkstyle.classifiers import Classifier  # noqa: E402
from linkstyle.generators.critters import Critters  # noqa: E402
from linkstyle.runtime import autocast  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def throughput(device: torch.device, resolution: int, arch: str, batch: int, precision: str, seconds: float) -> dict:
    gen = Critters(num_classes=5, resolution=resolution, seed=0).to(device)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=5)
    clf = Classifier(net, name=arch, input_size=None if arch == "resnet18" else 224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).to(device)
    z = gen.sample_z(list(range(batch))).to(device)
    w = gen.mapping(z, torch.arange(batch, device=device) % 5, 0.7)
    out = {}
    with autocast(device, precision):
        imgs = gen.synthesize(w)  # what the classifier times on
    for label, fn in (("synthesize", lambda: gen.synthesize(w)), ("classify", lambda: clf.features_and_logits(imgs))):
        with autocast(device, precision):
            fn()  # warm-up (and cuDNN autotuning)
            _sync(device)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                fn()
                n += batch
            _sync(device)
        out[label] = n / (time.perf_counter() - start)
    return out


def run_workflow(device: str) -> dict:
    cfg = {
        "run": "gpu-check",
        "device": device,
        "generator": {"num_classes": 3, "resolution": 32},
        "train": {"steps": 80, "batch_size": 32, "eval_samples": 300, "min_accuracy": 0.6},
        "sample": {"per_class": 60, "per_shard": 60},
        "link": {"cycle_samples": 60},
        "tune": {"units": list(range(16)), "units_per_shard": 8},
    }
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file = Path(tmp) / "cfg.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg))
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        start = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", tmp,
                               "--configfile", str(cfg_file), "--cores", "4", "--quiet"], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        summary = json.loads((Path(tmp) / "results" / "gpu-check" / "summary.json").read_text()) if proc.returncode == 0 else None
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return {"returncode": proc.returncode, "seconds": seconds, "summary": summary}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--skip-workflow", action="store_true")
    ap.add_argument("--out", default="gpu_check.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    print(json.dumps(info))
    results = []
    precisions = ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]
    for resolution, arch, batch in ((64, "resnet18", 256), (256, "resnet50", 64)):
        for precision in precisions:
            r = throughput(device, resolution, arch, batch, precision, args.seconds)
            row = {"resolution": resolution, "classifier": arch, "batch": batch, "precision": precision, **r}
            results.append(row)
            print(f"{resolution:>4}px {arch:<9} batch {batch:<4} {precision}: synthesize {r['synthesize']:9.0f} img/s, "
                  f"classify {r['classify']:9.0f} img/s", flush=True)
    workflow = None if args.skip_workflow else run_workflow(args.device)
    if workflow:
        print(f"tiny workflow on {args.device}: exit {workflow['returncode']} in {workflow['seconds']:.0f} s")
    Path(args.out).write_text(json.dumps({"info": info, "throughput": results, "workflow": workflow}, indent=2))
    return 0 if workflow is None or workflow["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
