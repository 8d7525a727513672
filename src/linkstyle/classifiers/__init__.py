"""Classifiers by kind. A new kind registers its loader here and its unit counter in ``units.py``.

Importing this package does not import torch (the Snakefile reaches ``torchvision_kind``'s unit
table through it at parse time); loaders import what they need when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..config import ClassifierConfig, Config, ConfigError

if TYPE_CHECKING:
    import torch

    from .wrapper import Classifier


def __getattr__(name: str) -> Any:
    if name in ("Classifier", "last_linear"):
        from . import wrapper

        return getattr(wrapper, name)
    if name == "load_planted_spec":
        from .planted import load_planted_spec

        return load_planted_spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def classifier_dir(cfg: Config, name: str) -> Path:
    return cfg.run_dir / "classifiers" / name


def _load_demo(cfg: Config, clf: ClassifierConfig, device: torch.device) -> Classifier:
    from ..artifacts import origin
    from .demo import load_demo

    made = origin(cfg, "train_classifier", classifier=clf.name)
    return load_demo(classifier_dir(cfg, clf.name) / "weights.pt", clf.name, device, made)


def _load_planted(cfg: Config, clf: ClassifierConfig, device: torch.device) -> Classifier:
    """A planted classifier from its own weights file alone (it holds the base network too)."""
    from ..artifacts import origin
    from ..io import artifact_error
    from ..units import unit_count
    from .planted import load_planted

    made = origin(cfg, "train_classifier", classifier=clf.name)
    path = classifier_dir(cfg, clf.name) / "weights.pt"
    planted = load_planted(path, clf.name, device, made, base=clf.base)
    if planted.num_units != unit_count(cfg, clf.name):
        raise artifact_error(path, f"has {planted.num_units} units, but base '{clf.base}' ({cfg.classifier(str(clf.base)).arch}) "
                                   f"makes {unit_count(cfg, clf.name)}: planted into another base network", made)
    return planted


def _pinned(clf: ClassifierConfig, path: str | Path | None) -> None:
    """The file a classifier loads, checked against its ``sha256`` before it is read."""
    from ..io import check_sha256

    if clf.sha256 and path is not None and Path(path).is_file():
        check_sha256(path, clf.sha256, f"classifiers[{clf.name}].sha256")


def _load_torchvision(cfg: Config, clf: ClassifierConfig, device: torch.device) -> Classifier:
    from .torchvision_kind import load_torchvision, weights_asset

    _pinned(clf, weights_asset(clf.arch, clf.weights)["path"])
    return load_torchvision(clf.arch, clf.weights, name=clf.name, device=device, allow_download=clf.allow_download)


def _load_timm(cfg: Config, clf: ClassifierConfig, device: torch.device) -> Classifier:
    from .timm_kind import load_timm

    _pinned(clf, clf.weights)
    return load_timm(clf.arch, clf.weights, name_in_config=clf.name, device=device, allow_download=clf.allow_download)


def _load_torchscript(cfg: Config, clf: ClassifierConfig, device: torch.device) -> Classifier:
    from .torchscript_kind import load_torchscript

    _pinned(clf, clf.path)
    return load_torchscript(clf.path, name=clf.name, device=device)  # type: ignore[return-value,arg-type]


CLASSIFIER_KINDS: dict[str, Callable[[Config, ClassifierConfig, torch.device], Classifier]] = {
    "demo": _load_demo,
    "torchvision": _load_torchvision,
    "timm": _load_timm,
    "torchscript": _load_torchscript,
    "planted": _load_planted,
}


def _check_kind(kind: str) -> None:
    if kind not in CLASSIFIER_KINDS:
        raise ConfigError(f"classifiers: unknown classifier kind '{kind}'; valid kinds: {', '.join(CLASSIFIER_KINDS)}")


def load_classifier(cfg: Config, name: str, device: torch.device) -> Classifier:
    """Load a configured classifier and check it against what the config expects of it."""
    spec = cfg.classifier(name)
    _check_kind(spec.kind)
    try:
        clf = CLASSIFIER_KINDS[spec.kind](cfg, spec, device)
    except ValueError as exc:  # loaders say what is wrong with the file; the config names it
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"classifier '{name}' ({spec.kind}): {exc}") from exc
    # Declared counts plan the DAG without the model; every other count is read from tables
    # checked by the tests, or from this very model.
    if spec.num_units is not None and clf.num_units != spec.num_units:
        raise ConfigError(
            f"classifier '{name}' has {clf.num_units} penultimate units, but its num_units says {spec.num_units}"
        )
    if clf.num_classes <= max(cfg.classes):
        raise ConfigError(
            f"classifier '{name}' has {clf.num_classes} classes, which does not cover the class set {list(cfg.classes)}"
        )
    return clf


__all__ = [
    "Classifier",
    "CLASSIFIER_KINDS",
    "classifier_dir",
    "last_linear",
    "load_classifier",
    "load_planted_spec",
]
