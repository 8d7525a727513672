"""Which units of which classifier are analysed, and in which shards.

Known without loading weights or importing torch, because Snakemake needs the shard
count when it builds the DAG, before anything is trained.
"""

from __future__ import annotations

from typing import Callable

from .config import DEMO_UNITS, ClassifierConfig, Config, ConfigError

#: Kinds whose weights the workflow trains itself (rule train_classifier).
TRAINED_BY_WORKFLOW = frozenset({"demo", "planted"})
#: Kinds the workflow searches no counterfactuals for: a planted classifier classifies exactly as its
#: base (its planted units weigh nothing in the head), so its counterfactuals would repeat the base's.
NO_COUNTERFACTUALS = frozenset({"planted"})
#: Units a planted classifier appends to its base's penultimate layer
#: (= len(classifiers.planted.PLANTED_UNITS), which imports torch; checked there).
PLANTED_UNIT_COUNT = 16

def _torchvision_units(cfg: Config, clf: ClassifierConfig) -> int:
    from .classifiers.torchvision_kind import torchvision_unit_count

    try:
        return clf.num_units or torchvision_unit_count(clf.arch)
    except ValueError as exc:
        raise ConfigError(f"classifiers '{clf.name}': {exc}") from None


def _timm_units(cfg: Config, clf: ClassifierConfig) -> int:
    from .classifiers.timm_kind import timm_unit_count

    try:
        return clf.num_units or timm_unit_count(clf.arch)
    except ValueError as exc:
        raise ConfigError(f"classifiers '{clf.name}': {exc}") from None


def _torchscript_units(cfg: Config, clf: ClassifierConfig) -> int:
    if clf.num_units:
        return clf.num_units
    from .classifiers.torchscript_kind import torchscript_unit_count

    try:
        return torchscript_unit_count(clf.path)  # type: ignore[arg-type]
    except FileNotFoundError as exc:
        raise ConfigError(
            f"classifiers '{clf.name}': {exc}; or give num_units in its config entry so the DAG builds without the file"
        ) from None


def _planted_units(cfg: Config, clf: ClassifierConfig) -> int:
    return unit_count(cfg, str(clf.base)) + PLANTED_UNIT_COUNT


UNIT_COUNTERS: dict[str, Callable[[Config, ClassifierConfig], int]] = {
    "demo": lambda cfg, clf: DEMO_UNITS[clf.arch],
    "planted": _planted_units,
    "torchvision": _torchvision_units,
    "timm": _timm_units,
    "torchscript": _torchscript_units,
}


def unit_count(cfg: Config, name: str) -> int:
    """Units of the penultimate layer of classifier ``name``."""
    clf = cfg.classifier(name)
    try:
        counter = UNIT_COUNTERS[clf.kind]
    except KeyError:
        raise ConfigError(f"classifiers: unknown classifier kind '{clf.kind}'; valid kinds: {', '.join(UNIT_COUNTERS)}") from None
    return counter(cfg, clf)


def planted_units(cfg: Config, name: str) -> list[int]:
    """The indices of a planted classifier's planted units: the last PLANTED_UNIT_COUNT of its layer."""
    clf = cfg.classifier(name)
    if clf.kind != "planted":
        raise ConfigError(f"classifier '{name}' has kind '{clf.kind}': only kind 'planted' has planted units")
    count = unit_count(cfg, name)
    return list(range(count - PLANTED_UNIT_COUNT, count))


def analysed_units(cfg: Config, name: str) -> list[int]:
    """The unit indices the config asks for, checked against the classifier's unit count.

    The classifier's own ``units`` key decides when set; unset, ``tune.units`` does, except for
    kind planted, whose default is its planted units."""
    clf = cfg.classifier(name)
    count = unit_count(cfg, name)
    if clf.units is not None:
        choice, key = clf.units, f"classifiers[{cfg.classifiers.index(clf)}].units"
    elif clf.kind == "planted":
        choice, key = "planted", ""
    else:
        choice, key = cfg.tune.units, "tune.units"
    if choice == "all":
        return list(range(count))
    if choice == "planted":
        return planted_units(cfg, name)
    bad = [u for u in choice if u >= count]
    if bad:
        raise ConfigError(
            f"{key}: {bad} out of range for classifier '{name}', which has {count} units (valid 0..{count - 1})"
        )
    return sorted(choice)


def counterfactual_classifiers(cfg: Config) -> list[str]:
    """The classifiers whose counterfactuals the workflow searches."""
    return [c.name for c in cfg.classifiers if c.kind not in NO_COUNTERFACTUALS]


def unit_shards(cfg: Config, name: str) -> list[list[int]]:
    units = analysed_units(cfg, name)
    size = cfg.tune.units_per_shard
    return [units[i : i + size] for i in range(0, len(units), size)]
