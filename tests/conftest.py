from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from linkstyle.config import load_yaml
from linkstyle.paths import RunPaths

REPO = Path(__file__).resolve().parents[1]


def snakemake_cmd(*args: str) -> list[str]:
    """Snakemake from the same environment as the tests (so jobs find the same python)."""
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    return [exe, "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO), *args]


def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snakemake(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(*args), cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


#: The tiny world that the workflow tests run end to end: .test/config/config.yaml (the built-in
#: world made small, every key it relies on written out).
TINY = load_yaml(REPO / ".test" / "config" / "config.yaml")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One run of the tiny workflow per test session, shared by every xdist worker (under a file lock)."""
    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else tmp_path_factory.getbasetemp()
    work = shared / "tiny-workflow"
    work.mkdir(exist_ok=True)
    with open(shared / "tiny-workflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cfg_file = work / "tiny.yaml"
            paths = RunPaths(work / "results" / "tiny")
            if not paths.summary.exists():
                cfg_file.write_text(yaml.safe_dump(TINY))
                proc = run_snakemake("--directory", str(work), "--configfile", str(cfg_file), "--cores", "2")
                assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return work, cfg_file, paths
