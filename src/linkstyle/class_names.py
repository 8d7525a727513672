"""A generator's class names where they are known without loading its weights, so a name in the
config (a counterfactual pair) is checked when the config loads instead of hours later."""

from __future__ import annotations

import ast
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

# The class names that StyleGAN-XL's checkout ships for its ImageNet models: a dict literal
# {index: 'first name, synonyms'}.
CHECKOUT_LABELS = Path("media") / "imagenet_idx2labels.txt"


#: The built-in critters world's species, in class order (``generators.critters`` uses them; kept
#: here, free of torch, so that a config's class names are checked in a fraction of a second).
CRITTER_NAMES: tuple[str, ...] = (
    "fox",
    "cat",
    "mouse",
    "lizard",
    "badger",
    "otter",
    "deer",
    "hare",
    "wolf",
    "lynx",
    "ferret",
    "boar",
    "goat",
    "stoat",
    "mole",
    "shrew",
)

#: A class-conditional generator with this many classes is taken to be an ImageNet-1k one (BigGAN,
#: StyleGAN-XL), whose classes are named without its weights by ``imagenet_names()``.
IMAGENET_CLASSES = 1000


def default_names(num_classes: int) -> tuple[str, ...]:
    """The names of classes nothing names: class_<i>."""
    return tuple(f"class_{i}" for i in range(num_classes))


@cache
def imagenet_names() -> tuple[str, ...]:
    """ImageNet-1k's class names in index order (package data ``data/imagenet_classes.txt``)."""
    text = resources.files("linkstyle").joinpath("data", "imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line and not line.startswith("#"))
    if len(names) != IMAGENET_CLASSES:
        raise RuntimeError(f"linkstyle's data/imagenet_classes.txt has {len(names)} names, not "
                           f"{IMAGENET_CLASSES}: the installed package is damaged; reinstall it")
    return names


def fallback_names(num_classes: int) -> tuple[str, ...]:
    """Names for a network whose files name no classes: ImageNet's for 1,000 classes, else class_<i>."""
    return imagenet_names() if num_classes == IMAGENET_CLASSES else default_names(num_classes)


def class_index(name: str, names: tuple[str, ...]) -> int | None:
    """The index of a class name as the config gives it: the exact name first, then ignoring case
    (ImageNet has 'Cardigan', the corgi, and 'cardigan', the jacket); where a name repeats, its last
    class. None when no class has it."""
    exact = {known: i for i, known in enumerate(names)}
    folded = {known.lower(): i for i, known in enumerate(names)}
    return exact.get(name, folded.get(name.lower()))


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
    (``fallback_names``); a StyleGAN checkout's label file, else ``fallback_names``. Without the
    StyleGAN checkout: ImageNet's for 1,000 classes (StyleGAN-XL's label file lists the same classes),
    else None (doctor reports the checkout; the counterfactual stage checks the names once it loads)."""
    n = int(generator["num_classes"])
    if generator["kind"] == "critters":
        return CRITTER_NAMES[:n]
    if generator["kind"] == "biggan":
        return fallback_names(n)
    repo = generator.get("repo")
    if generator["kind"] == "stylegan" and repo and Path(repo).is_dir():
        return checkout_names(repo, n) or fallback_names(n)
    if generator["kind"] == "stylegan" and n == IMAGENET_CLASSES:
        return imagenet_names()
    return None
