"""What every stage needs, built once and lazily: config, paths, device, networks.

Networks (and torch itself) are imported only when a stage asks for them, so CPU-only
stages such as measure and selectivity start in a fraction of a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..artifacts import Located, locate, origin
from ..config import Config
from ..io import Origin
from ..paths import RunPaths

if TYPE_CHECKING:
    import torch

    from ..classifiers import Classifier
    from ..generators import Generator

log = logging.getLogger("linkstyle")


@dataclass
class Context:
    cfg: Config
    threads: int = 0
    _classifiers: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def paths(self) -> RunPaths:
        return RunPaths(self.cfg.run_dir)

    @cached_property
    def device(self) -> "torch.device":
        from ..runtime import resolve_device, setup_torch

        setup_torch(self.threads or self.cfg.threads)
        return resolve_device(self.cfg.device)

    @cached_property
    def generator(self) -> "Generator":
        from ..generators import build_generator

        return build_generator(self.cfg.generator, self.cfg.seed).to(self.device)

    def classifier(self, name: str) -> "Classifier":
        if name not in self._classifiers:
            from ..classifiers import load_classifier

            self._classifiers[name] = load_classifier(self.cfg, name, self.device)
        return self._classifiers[name]

    def origin(self, stage: str, **wildcards: object) -> Origin:
        """What artifacts of ``stage`` record, and what readers of them expect (see artifacts.py)."""
        return origin(self.cfg, stage, **wildcards)

    def locate(self, kind: str, **wildcards: object) -> Located:
        """Artifact ``kind`` (artifacts.ARTIFACTS) at ``wildcards``: its path, the origin it must record, its spec."""
        return locate(self.cfg, kind, **wildcards)

    def read(self, kind: str, *, only: Iterable[str] | None = None, dims: Mapping[str, int] | None = None,
             columns: list[str] | None = None, **wildcards: object) -> Any:
        """Read artifact ``kind`` at ``wildcards`` (its stage's, e.g. ``classifier=, shard=``), checked against the
        origin and the spec its registry entry names (artifacts.Located.read: ``only``, ``dims``, ``columns``)."""
        return self.locate(kind, **wildcards).read(only=only, dims=dims, columns=columns)

    def wrote(self, *paths: object) -> None:
        for p in paths:
            print(f"wrote {p}", flush=True)
