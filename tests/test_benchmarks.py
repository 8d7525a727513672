"""Every issue-8 benchmark script runs at tiny sizes on the tiny run and logs its table (nothing here is timed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(tiny_run, tmp_path: Path, script: str, *args: str, timeout: int = 600) -> tuple[str, Path]:
    """One repetition on the tiny run's resnet18, 1 CPU thread, logged to a fresh file: (stdout, log file).

    Runs from the tiny workflow's directory, as its config's results folder is relative to it."""
    work, _, paths = tiny_run
    doc = tmp_path / "benchmarks.md"
    cmd = [sys.executable, str(REPO / "bench" / script), "--config", str(paths.config), "--threads", "1",
           "--device", "cpu", "--repeats", "1", "--doc", str(doc), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, doc


def logged(doc: Path, title: str) -> str:
    text = doc.read_text()
    assert text.startswith("# Benchmark log")
    section = text[text.index(f"### {title}"):]
    assert "Machine: " in section and "torch " in section and ".venv/bin/python bench/" in section
    return section


@pytest.mark.slow
def test_render_extract_benchmark(tiny_run, tmp_path):
    out, doc = run_bench(tiny_run, tmp_path, "bench_extract.py", "--images", "6")
    section = logged(doc, "Render + extract throughput, resnet18 on critters 32 px")
    assert "| official approach (one by one) |" in section and "| ours (batched) |" in section
    assert "| speed-up | " in out and "keep the same correctly classified samples for" in out


@pytest.mark.slow
def test_actmax_benchmark(tiny_run, tmp_path):
    _, doc = run_bench(tiny_run, tmp_path, "bench_actmax.py", "--units", "2", "--steps", "4")
    section = logged(doc, "Unit visualisation cost, resnet18 on critters 32 px")
    assert "| linking: one sweep |" in section and "| linking: every start sample (tune stage) |" in section
    assert "4 forward + 4 backward" in section and "| activation maximisation |" in section


@pytest.mark.slow
def test_overhead_benchmark(tiny_run, tmp_path):
    _, doc = run_bench(tiny_run, tmp_path, "bench_overhead.py", "--units", "2")
    section = logged(doc, "Tune stage vs ceiling, resnet18 on critters 32 px")
    fraction = float(section.split("| fraction of the ceiling | ")[1].split(" |")[0])
    assert 0 < fraction < 5


@pytest.mark.slow
def test_scale_benchmark(tiny_run, tmp_path):
    """Plans the paper presets, runs streamed and in-memory tune jobs, and reads the run's stage timing."""
    _, doc = run_bench(tiny_run, tmp_path, "bench_scale.py", "--units", "2", "20", "--compare-in-memory")
    planning = logged(doc, "Scale: planning the paper presets")
    assert all(f"| paper-{p} |" in planning for p in ("birds", "cars", "dogs", "fungi"))
    memory = logged(doc, "Scale: peak memory of one tune job (resnet18)")
    rows = [line for line in memory.splitlines() if line.startswith("| 2 |") or line.startswith("| 20 |")]
    assert len(rows) == 2 and all(len(r.split("|")) == 7 for r in rows)
    stages = logged(doc, "Scale: wall time per stage of the run in")
    assert "| tune |" in stages and "| actmax |" in stages
