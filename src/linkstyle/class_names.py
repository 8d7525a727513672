"""A generator's class names where they are known without loading its weights, so a name in the
config (a counterfactual pair) is checked when the config loads instead of hours later."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Mapping

# The class names that StyleGAN-XL's checkout ships for its ImageNet models: a dict literal
# {index: 'first name, synonyms'}.
CHECKOUT_LABELS = Path("media") / "imagenet_idx2labels.txt"


def default_names(num_classes: int) -> tuple[str, ...]:
    """The names of classes nothing names: class_<i>."""
    return tuple(f"class_{i}" for i in range(num_classes))


def checkout_names(root: str | Path, num_classes: int) -> tuple[str, ...] | None:
    """The first name of each class in a StyleGAN checkout's label file; None when the file is
    absent, unreadable or has another number of classes."""
    path = Path(root) / CHECKOUT_LABELS
    if num_classes <= 1 or not path.is_file():
        return None
    try:
        labels = ast.literal_eval(path.read_text())
    except (OSError, ValueError, SyntaxError):
        return None
    if not isinstance(labels, dict) or sorted(labels) != list(range(num_classes)):
        return None
    return tuple(str(labels[i]).split(",")[0].strip() for i in range(num_classes))


def known_class_names(generator: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The names the generator section's network will have: the built-in world's; BigGAN's
    class_<i>; a StyleGAN checkout's label file, else class_<i>. None when the StyleGAN checkout is
    not there yet (doctor reports it; the counterfactual stage checks the names once it loads)."""
    n = int(generator["num_classes"])
    if generator["kind"] == "critters":
        from .generators.critters import CLASS_NAMES

        return tuple(CLASS_NAMES[:n])
    if generator["kind"] == "biggan":
        return default_names(n)
    repo = generator.get("repo")
    if generator["kind"] == "stylegan" and repo and Path(repo).is_dir():
        return checkout_names(repo, n) or default_names(n)
    return None
