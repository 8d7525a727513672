from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
