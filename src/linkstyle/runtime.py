"""Where and how networks run: device choice, CPU threads, determinism, batching, progress."""

from __future__ import annotations

import os
import sys
from typing import Iterator

import torch
from tqdm import tqdm

from .config import ConfigError


def resolve_device(spec: str) -> torch.device:
    """'auto' -> first CUDA GPU if any, else CPU; an explicit CUDA request without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{spec}' requested but no CUDA GPU is visible; set device: cpu or auto")
    return torch.device(spec)


def setup_torch(threads: int = 0) -> None:
    """Deterministic kernels and a fixed CPU thread count (0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def progress(total: int, desc: str, unit: str = "img") -> tqdm:
    """A progress bar on stderr that stays readable in log files (no bar redraw storms)."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        mininterval=2.0 if not sys.stderr.isatty() else 0.1,
        dynamic_ncols=True,
    )
