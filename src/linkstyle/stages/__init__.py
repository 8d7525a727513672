"""Pipeline stages: each is a function of (config, wildcards) that writes its artifacts atomically.

The Snakemake rules and the CLI call these and nothing else.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from ..config import Config

#: Stage -> the Snakemake rule that runs it (and whose profile resources it gets on SLURM).
RULE_OF_STAGE = {"train": "train_classifier"}
#: Stages that share a module with others (default: module ``stages.<stage>``).
MODULE_OF_STAGE = {"label_export": "segment", "label_import": "segment", "train_segmenter": "segment"}


def run_stage(config: "Config | str | Path | None", stage: str, *wildcards: object,
              overrides: Mapping[str, Any] | None = None, threads: int = 0) -> None:
    """Run stage ``stage`` (``run_<stage>`` of ``linkstyle.stages.<module>``) with its wildcards, as its rule does.

    ``config`` is a loaded Config or a config file (None: the schema defaults) with ``overrides`` laid over it.
    """
    from ..config import Config, load_config
    from .context import Context

    cfg = config if isinstance(config, Config) else load_config(config, dict(overrides or {}))
    module = importlib.import_module(f".{MODULE_OF_STAGE.get(stage, stage)}", __package__)
    run = getattr(module, f"run_{stage}")
    start = time.perf_counter()
    run(Context(cfg, threads=threads), *wildcards)
    logging.getLogger("linkstyle").info("%s done in %.1f s", stage, time.perf_counter() - start)
