"""Where and how networks run: device choice, CPU threads, determinism, batching, progress."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import nullcontext
from typing import Callable, ContextManager, Iterator

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


log = logging.getLogger("linkstyle")


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Mixed precision for synthesis and classifiers ('fp32' leaves everything in float32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def run_batched(
    n: int,
    size: int,
    step: Callable[[slice], None],
    on_done: Callable[[int], None] | None = None,
    setting: str = "batch_size",
) -> int:
    """Call ``step`` on consecutive slices of ``range(n)``; on a CUDA out-of-memory error, halve the
    batch and retry the same slice. Returns the batch size that worked, and logs it when it is
    smaller than asked, naming the config key (``setting``) that would skip the retries next time."""
    asked = size
    start = 0
    while start < n:
        stop = min(n, start + size)
        try:
            step(slice(start, stop))
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            log.warning("out of GPU memory: batch size halved to %d", size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        if on_done is not None:
            on_done(stop - start)
        start = stop
    if size < asked:
        log.warning("batch size %d fits in GPU memory (%s asks for %d); set %s: %d to skip the retries",
                    size, setting, asked, setting, size)
    return size


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
