"""Pipeline stages: each is a function of (config, wildcards) that writes its artifacts atomically.

The Snakemake rules and the CLI call these and nothing else; which stages there are, and which module
holds each, is the stage registry (``linkstyle.registry.STAGES``).
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from ..config import Config


def run_stage(config: "Config | str | Path | None", stage: str, *wildcards: object,
              overrides: Mapping[str, Any] | None = None, threads: int = 0) -> None:
    """Run stage ``stage`` (``run_<name>`` of ``linkstyle.stages.<module>``, registry.STAGES; its CLI alias
    works too) with its wildcards, as its rule does.

    ``config`` is a loaded Config or a config file (None: the schema defaults) with ``overrides`` laid over it.
    """
    from ..config import Config, load_config
    from ..registry import stage as find_stage
    from .context import Context

    entry = find_stage(stage)
    cfg = config if isinstance(config, Config) else load_config(config, dict(overrides or {}))
    run = getattr(importlib.import_module(f".{entry.module}", __package__), f"run_{entry.name}")
    start = time.perf_counter()
    run(Context(cfg, threads=threads), *wildcards)
    logging.getLogger("linkstyle").info("%s done in %.1f s", entry.name, time.perf_counter() - start)
