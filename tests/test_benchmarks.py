"""Every issue-8 benchmark script runs at tiny sizes on the tiny run and logs its table (nothing here is timed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(script: str, work: Path, *args: str, timeout: int = 600) -> str:
    """Run from the tiny workflow's directory, as its config's results folder is relative to it."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--threads", "1", "--device", "cpu", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def logged(doc: Path, title: str) -> str:
    text = doc.read_text()
    assert text.startswith("# Benchmark log")
    section = text[text.index(f"### {title}"):]
    assert "Machine: " in section and "torch " in section and ".venv/bin/python bench/" in section
    return section


@pytest.mark.slow
def test_render_extract_benchmark(tiny_run, tmp_path):
    work, _, paths = tiny_run
    doc = tmp_path / "benchmarks.md"
    out = run_bench("bench_extract.py", work, "--config", str(paths.config), "--images", "6", "--repeats", "1", "--doc", str(doc))
    section = logged(doc, "Render + extract throughput, resnet18 on critters 32 px")
    assert "| official approach (one by one) |" in section and "| ours (batched) |" in section
    assert "| speed-up | " in out and "keep the same correctly classified samples for" in out


@pytest.mark.slow
def test_actmax_benchmark(tiny_run, tmp_path):
    work, _, paths = tiny_run
    doc = tmp_path / "benchmarks.md"
    run_bench("bench_actmax.py", work, "--config", str(paths.config), "--units", "2", "--steps", "4", "--repeats", "1", "--doc", str(doc))
    section = logged(doc, "Unit visualisation cost, resnet18 on critters 32 px")
    assert "| linking: one sweep |" in section and "| linking: every start sample (tune stage) |" in section
    assert "4 forward + 4 backward" in section and "| activation maximisation |" in section


@pytest.mark.slow
def test_overhead_benchmark(tiny_run, tmp_path):
    work, _, paths = tiny_run
    doc = tmp_path / "benchmarks.md"
    run_bench("bench_overhead.py", work, "--config", str(paths.config), "--units", "2", "--repeats", "1", "--doc", str(doc))
    section = logged(doc, "Tune stage vs ceiling, resnet18 on critters 32 px")
    fraction = float(section.split("| fraction of the ceiling | ")[1].split(" |")[0])
    assert 0 < fraction < 5


@pytest.mark.slow
def test_scale_benchmark(tiny_run, tmp_path):
    """Plans the paper presets, runs streamed and in-memory tune jobs, and reads the run's stage timing."""
    work, _, paths = tiny_run
    doc = tmp_path / "benchmarks.md"
    run_bench("bench_scale.py", work, "--config", str(paths.config), "--units", "2", "20", "--compare-in-memory",
              "--repeats", "1", "--doc", str(doc))
    planning = logged(doc, "Scale: planning the paper presets")
    assert all(f"| paper-{p} |" in planning for p in ("birds", "cars", "dogs", "fungi"))
    memory = logged(doc, "Scale: peak memory of one tune job (resnet18)")
    rows = [line for line in memory.splitlines() if line.startswith("| 2 |") or line.startswith("| 20 |")]
    assert len(rows) == 2 and all(len(r.split("|")) == 7 for r in rows)
    stages = logged(doc, "Scale: wall time per stage of the run in")
    assert "| tune |" in stages and "| actmax |" in stages
