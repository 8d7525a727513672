from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from linkstyle.config import deep_merge, load_yaml
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


#: The tiny world that the workflow tests run end to end (about 1.5 minutes on 2 cores): the
#: built-in world (config/config.yaml) made small. A --configfile replaces config/config.yaml, so
#: the file the tests write holds the whole merge, as library calls load it.
TINY = deep_merge(load_yaml(REPO / "config" / "config.yaml"), {
    "run": "tiny",
    "generator": {"num_classes": 3, "resolution": 32},
    "classifiers": [{"name": "resnet18", "kind": "demo", "arch": "resnet18"},
                    {"name": "regnet", "kind": "demo", "arch": "regnet_x_400mf"},
                    {"name": "planted", "kind": "planted", "base": "resnet18"}],
    "train": {"steps": 80, "batch_size": 32, "eval_samples": 300, "min_accuracy": 0.6},
    "sample": {"per_class": 60, "per_shard": 60},
    "select": {"starts_per_class": 2},
    "link": {"cycle_samples": 60},
    "tune": {"units": list(range(16)), "units_per_shard": 6, "batch_size": 64},
    # The whole labelling loop: exported exact masks stand in for an annotator; measured on both.
    "measure": {"segmenter": "learned"},
    "segmentation": {"export_images": 8, "sweep_images": 4, "steps": 60, "heldout_images": 24},
    # every ordered pair of the 3 species, 4 start samples each; the built-in world's weights
    # (the 80-step tiny RegNet moves slowly at the default lr 0.01: 0.25 success against 0.79 at 0.05)
    "counterfactual": {"samples_per_pair": 4, "weight_cosine": 1.0, "weight_other": 1.0, "lr": 0.05, "images_per_pair": 2},
    "actmax": {"steps": 24, "batch_size": 8},
})


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
