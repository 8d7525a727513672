"""What every stage needs, built once and lazily: config, paths, device, networks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ..classifiers import Classifier, load_classifier
from ..config import Config
from ..generators import Generator, build_generator
from ..paths import RunPaths
from ..runtime import resolve_device, setup_torch

log = logging.getLogger("linkstyle")


@dataclass
class Context:
    cfg: Config
    threads: int = 0
    _classifiers: dict[str, Classifier] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        setup_torch(self.threads or self.cfg.threads)

    @cached_property
    def paths(self) -> RunPaths:
        return RunPaths(self.cfg.run_dir)

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.cfg.device)

    @cached_property
    def generator(self) -> Generator:
        return build_generator(self.cfg.generator, self.cfg.seed).to(self.device)

    def classifier(self, name: str) -> Classifier:
        if name not in self._classifiers:
            self._classifiers[name] = load_classifier(self.cfg, name, self.device)
        return self._classifiers[name]

    def wrote(self, *paths: object) -> None:
        for p in paths:
            print(f"wrote {p}", flush=True)
