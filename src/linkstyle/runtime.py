"""Where and how networks run: device choice, CPU threads, determinism, batching, progress."""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Iterator

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
    _deterministic_kernels()
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _deterministic_kernels() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its import of the
    compiler (``torch._inductor``, whose flag only matters to ``torch.compile``, which no stage
    uses): that import cost 1.3 s of every job's start. Where the compiler is loaded anyway, or
    torch lacks the kernel switch, the public call does both."""
    switch = getattr(torch._C, "_set_deterministic_algorithms", None)
    if switch is None or "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
        return
    switch(True, warn_only=True)


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


#: Seconds between two progress lines in a log file: a cluster log shows life at least this often.
PROGRESS_INTERVAL = 30.0


class LogProgress:
    """Progress for a log file: newline-terminated lines ``desc: done/total (pct), rate, ETA``,
    flushed as written, at most one per ``interval`` seconds (and one at the end). tqdm's bar
    redraws with carriage returns, which a log viewer, ``less`` or ``grep`` show as one long line."""

    def __init__(self, total: int, desc: str, unit: str = "img", interval: float = PROGRESS_INTERVAL,
                 stream: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.interval = int(total), desc, unit, interval
        self.stream, self.clock = stream if stream is not None else sys.stderr, clock
        self.n, self.start = 0, clock()
        self.last = self.start
        self.closed = False
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._write(now)

    def set_postfix(self, refresh: bool = False, **values: object) -> None:
        """As tqdm's: values shown at the end of the next line (e.g. the running loss)."""
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def _write(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        left = (self.total - self.n) / rate if rate > 0 and self.total >= self.n else float("nan")
        eta = "?" if left != left else f"{int(left) // 60}:{int(left) % 60:02d}"
        self.stream.write(f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, {rate:.1f} {self.unit}/s, "
                          f"{int(elapsed) // 60}:{int(elapsed) % 60:02d} elapsed, ETA {eta}"
                          + (f", {self.postfix}" if self.postfix else "") + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(self.clock())

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int, desc: str, unit: str = "img") -> "tqdm | LogProgress":
    """A progress bar on a terminal; in a log file (a Snakemake job, a SLURM job), a line per
    :data:`PROGRESS_INTERVAL` seconds."""
    if not sys.stderr.isatty():
        return LogProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.1, dynamic_ncols=True)
