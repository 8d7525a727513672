"""What every benchmark shares: the machine record, alternating timed runs, and the log in docs/benchmarks.md.

Each benchmark prints a table and appends it, with the machine, versions, date and the exact
command, to ``docs/benchmarks.md`` (``--doc -`` skips that; the test suite writes elsewhere).
Ratios come from one process: the two sides run alternately, and each side's median over
``--repeats`` is taken, so that machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DOC = ROOT / "docs" / "benchmarks.md"


def add_common_args(p: argparse.ArgumentParser, repeats: int = 3) -> None:
    p.add_argument("--repeats", type=int, default=repeats, help="timed repetitions of each side (the median is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, or cuda[:N]")
    p.add_argument("--doc", default=str(DOC), help="markdown log to append the result to ('-': print only)")


def add_run_args(p: argparse.ArgumentParser, repeats: int = 3) -> None:
    """The run (its config, whose select and link stages are done) and the classifier a benchmark uses."""
    p.add_argument("--config", default=str(ROOT / "results" / "default" / "config.yaml"),
                   help="a finished run's config (make run writes results/default/config.yaml)")
    p.add_argument("--classifier", default="resnet18")
    add_common_args(p, repeats)


def open_run(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(config, stage context, device) for ``args``, with threads and device set as the stages set them."""
    from linkstyle.config import load_config
    from linkstyle.stages.context import Context

    device = setup(args)
    cfg = load_config(args.config, {"device": args.device})
    return cfg, Context(cfg, threads=args.threads), device


def setup(args: argparse.Namespace) -> Any:
    """Threads, deterministic kernels and the device, as the stages set them."""
    from linkstyle.runtime import resolve_device, setup_torch

    setup_torch(args.threads or os.cpu_count() or 1)
    return resolve_device(args.device)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: Any = None) -> dict[str, Any]:
    """Where and with what a number was measured."""
    import torch

    rec: dict[str, Any] = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cpu",
    }
    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        rec["device"] = f"cuda: {torch.cuda.get_device_name(device)}"
    try:
        rec["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        if dirty:
            rec["commit"] += " with uncommitted changes"
    except (OSError, subprocess.CalledProcessError):
        rec["commit"] = "unknown"
    return rec


def sync(device: Any) -> None:
    if device is not None and getattr(device, "type", "") == "cuda":
        import torch

        torch.cuda.synchronize(device)


def alternate(sides: Mapping[str, Callable[[], Any]], repeats: int, device: Any = None) -> dict[str, list[float]]:
    """Run each side once untimed (warm-up), then all sides in turn ``repeats`` times; seconds per run."""
    for fn in sides.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return " ".join([".venv/bin/python", str(shown), *map(shlex.quote, sys.argv[1:])])


def report(title: str, rows: Sequence[Mapping[str, Any]], args: argparse.Namespace, device: Any = None,
           notes: Sequence[str] = ()) -> str:
    """Print the table and append the section (machine, command, table, notes) to ``args.doc``."""
    table = markdown_table(rows)
    rec = machine(device)
    section = "\n".join([
        f"### {title} ({rec['date']})",
        "",
        f"Machine: {rec['cpu']}; device {rec['device']}; Python {rec['python']}, torch {rec['torch']}; commit {rec['commit']}.",
        "",
        f"`{command_line()}`",
        "",
        table,
        *([""] + [f"- {n}" for n in notes] if notes else []),
        "",
    ])
    print(f"\n{title}\n{table}")
    for n in notes:
        print(f"- {n}")
    if args.doc != "-":
        doc = Path(args.doc)
        if not doc.exists():
            doc.write_text("# Benchmark log\n\nAppended by the scripts in bench/ (see docs/performance.md for the summary).\n\n")
        with open(doc, "a") as fh:
            fh.write("\n" + section)
    return section
