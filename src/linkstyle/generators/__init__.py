"""Generators by kind. New kinds register a builder here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import ConfigError, GeneratorConfig
from .base import Generator, GroundTruth


def _critters(cfg: GeneratorConfig, seed: int) -> Generator:
    from .critters import Critters

    return Critters(num_classes=cfg.num_classes, resolution=cfg.resolution, seed=seed)


def _checked(load: Callable[[], Generator], cfg: GeneratorConfig, source: object) -> Generator:
    """Load a real network; loader problems become config errors, and its class count must match the config."""
    try:
        gen = load()
    except ValueError as exc:
        raise ConfigError(f"generator: {exc}") from None
    if gen.num_classes != cfg.num_classes:
        raise ConfigError(
            f"generator.num_classes: the network in {source} has {gen.num_classes} classes, the config says {cfg.num_classes}"
        )
    return gen


def _stylegan(cfg: GeneratorConfig, seed: int) -> Generator:
    from ..io import check_sha256
    from .stylegan import load_stylegan

    if cfg.pickle and Path(cfg.pickle).is_file():
        check_sha256(cfg.pickle, cfg.sha256, "generator.sha256")  # before anything is unpickled
    return _checked(lambda: load_stylegan(cfg.pickle, cfg.repo), cfg, cfg.pickle)  # type: ignore[arg-type]


def _biggan(cfg: GeneratorConfig, seed: int) -> Generator:
    from .biggan import load_biggan

    return _checked(lambda: load_biggan(cfg.weights_dir, truncation=cfg.truncation_psi), cfg, cfg.weights_dir)  # type: ignore[arg-type]


GENERATOR_KINDS: dict[str, Callable[[GeneratorConfig, int], Generator]] = {
    "critters": _critters,
    "stylegan": _stylegan,
    "biggan": _biggan,
}


def build_generator(cfg: GeneratorConfig, seed: int) -> Generator:
    try:
        builder = GENERATOR_KINDS[cfg.kind]
    except KeyError:
        raise ConfigError(
            f"generator.kind: unknown generator '{cfg.kind}'; valid kinds: {', '.join(GENERATOR_KINDS)}"
        ) from None
    return builder(cfg, seed)


__all__ = ["Generator", "GroundTruth", "GENERATOR_KINDS", "build_generator"]
