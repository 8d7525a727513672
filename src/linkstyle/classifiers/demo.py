"""Demo classifiers: torchvision architectures trained by the workflow on the built-in world.

Training images come from seeds at and above 2^31 (see :mod:`linkstyle.seeds`), disjoint
from every analysis sample; each step draws a fresh batch, so there is no fixed
training set to overfit and nothing to store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..config import DEMO_ARCHS
from ..generators.base import Generator
from ..io import ARTIFACT_KEY, Origin, artifact_error, check_origin, missing_error
from ..runtime import batches, progress
from ..seeds import EVAL_SEED_BASE, TRAIN_SEED_BASE, derive
from .wrapper import Classifier

log = logging.getLogger(__name__)

#: The generator already outputs [-1, 1]; mapping it to [0, 1] and normalising by 0.5 restores [-1, 1].
DEMO_MEAN = (0.5, 0.5, 0.5)
DEMO_STD = (0.5, 0.5, 0.5)


def build_demo_net(arch: str, num_classes: int, resolution: int) -> nn.Module:
    """A torchvision architecture sized for small images.

    Below 64 px ResNet-18 drops its stem max-pool so that the last feature map keeps
    2x2 cells instead of collapsing to one.
    """
    if arch not in DEMO_ARCHS:
        raise ValueError(f"unknown demo architecture '{arch}'; valid: {', '.join(DEMO_ARCHS)}")
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if arch == "resnet18" and resolution < 64:
        net.maxpool = nn.Identity()
    return net


def _draw(generator: Generator, seeds: np.ndarray, psi: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels for a block of seeds: the class is a function of the seed, too."""
    classes = torch.as_tensor(seeds % generator.num_classes, dtype=torch.long, device=device)
    z = generator.sample_z(seeds.tolist()).to(device)
    w = generator.mapping(z, classes, truncation_psi=psi)
    return generator.synthesize(w), classes


@dataclass(frozen=True)
class TrainResult:
    accuracy: float
    per_class_accuracy: list[float]
    steps: int
    seconds: float
    final_loss: float


def train_demo(
    generator: Generator,
    *,
    arch: str,
    name: str,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    truncation_psi: float,
    eval_samples: int,
    device: torch.device,
) -> tuple[Classifier, TrainResult]:
    torch.manual_seed(derive(seed, "train", name))
    net = build_demo_net(arch, generator.num_classes, generator.resolution).to(device)
    clf = Classifier(net, name=name, input_size=None, mean=DEMO_MEAN, std=DEMO_STD, class_names=generator.class_names).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    start = time.perf_counter()
    net.train()
    loss_ema = float("nan")
    bar = progress(steps, f"train {name}", unit="step")
    for step in range(steps):
        seeds = TRAIN_SEED_BASE + step * batch_size + np.arange(batch_size, dtype=np.int64)
        with torch.no_grad():
            images, labels = _draw(generator, seeds, truncation_psi, device)
        loss = F.cross_entropy(clf(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
        loss_ema = value if step == 0 else 0.9 * loss_ema + 0.1 * value
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.3f}", refresh=False)
    bar.close()
    net.eval()
    accuracy, per_class = evaluate(clf, generator, eval_samples, truncation_psi, device)
    return clf, TrainResult(accuracy, per_class, steps, time.perf_counter() - start, loss_ema)


@torch.inference_mode()
def evaluate(
    clf: Classifier, generator: Generator, n: int, psi: float, device: torch.device, batch_size: int = 256
) -> tuple[float, list[float]]:
    """Accuracy on images from the held-out evaluation seed range."""
    correct = np.zeros(generator.num_classes)
    total = np.zeros(generator.num_classes)
    for sl in batches(n, batch_size):
        seeds = EVAL_SEED_BASE + np.arange(sl.start, sl.stop, dtype=np.int64)
        images, labels = _draw(generator, seeds, psi, device)
        hit = (clf(images).argmax(1) == labels).cpu().numpy()
        lab = labels.cpu().numpy()
        np.add.at(correct, lab, hit)
        np.add.at(total, lab, 1)
    return float(correct.sum() / total.sum()), (correct / np.maximum(total, 1)).tolist()


def save_demo(clf: Classifier, arch: str, resolution: int, path: str | Path, extra: dict[str, Any]) -> None:
    from ..io import atomic_path

    payload = {
        "arch": arch,
        "num_classes": clf.num_classes,
        "resolution": resolution,
        "class_names": list(clf.class_names),
        "state_dict": clf.net.state_dict(),
        **extra,
    }
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)


def load_demo(path: str | Path, name: str, device: torch.device, origin: Origin | None = None) -> Classifier:
    """Load weights written by ``save_demo``; a missing, damaged or stale file is an ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise missing_error(path, origin)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError... for a damaged file
        text = str(exc).strip().splitlines()
        raise artifact_error(path, f"cannot be read as demo classifier weights ({type(exc).__name__}: "
                                   f"{text[0] if text else ''}): it is corrupted or truncated", origin) from exc
    absent = [k for k in ("arch", "num_classes", "resolution", "class_names", "state_dict") if not isinstance(payload, dict) or k not in payload]
    if absent:
        raise artifact_error(path, f"is not a demo classifier file written by linkstyle train_classifier (no {', '.join(absent)})", origin)
    check_origin(path, payload.get(ARTIFACT_KEY), origin)
    net = build_demo_net(payload["arch"], payload["num_classes"], payload["resolution"])
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise artifact_error(path, f"does not fit a demo {payload['arch']}: {str(exc).splitlines()[0]}", origin) from exc
    clf = Classifier(net, name=name, input_size=None, mean=DEMO_MEAN, std=DEMO_STD, class_names=payload["class_names"])
    return clf.to(device).eval()
