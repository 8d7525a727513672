"""Classifiers by kind. New kinds register a loader and a unit counter here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..config import ClassifierConfig, Config, ConfigError
from .demo import load_demo
from .wrapper import Classifier, last_linear


def classifier_dir(cfg: Config, name: str) -> Path:
    return cfg.run_dir / "classifiers" / name


def _load_demo(cfg: Config, clf: ClassifierConfig, device: torch.device) -> Classifier:
    return load_demo(classifier_dir(cfg, clf.name) / "weights.pt", clf.name, device)


CLASSIFIER_KINDS: dict[str, Callable[[Config, ClassifierConfig, torch.device], Classifier]] = {"demo": _load_demo}


def _check_kind(kind: str) -> None:
    if kind not in CLASSIFIER_KINDS:
        raise ConfigError(f"classifiers: unknown classifier kind '{kind}'; valid kinds: {', '.join(CLASSIFIER_KINDS)}")


def load_classifier(cfg: Config, name: str, device: torch.device) -> Classifier:
    clf = cfg.classifier(name)
    _check_kind(clf.kind)
    return CLASSIFIER_KINDS[clf.kind](cfg, clf, device)


__all__ = [
    "Classifier",
    "CLASSIFIER_KINDS",
    "classifier_dir",
    "last_linear",
    "load_classifier",
]
