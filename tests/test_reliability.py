"""Nothing is lost and nothing wrong looks right: kills, reruns, config changes and concurrent runs.

The slow tests run the real workflow on the tiny world of ``conftest.TINY`` and compare their
artifacts, content for content, with the shared uninterrupted run ``tiny_run``. Shard invariance
is tested in test_workflow.py, bad inputs in test_bad_inputs.py, the OOM retry in test_runtime.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

from linkstyle.artifacts import origin
from linkstyle.config import STAGE_SECTIONS, deep_merge, load_config
from linkstyle.io import ArtifactError, read_npz
from linkstyle.paths import RunPaths
from linkstyle.registry import STAGES

from .compare import assert_same_artifacts, assert_same_file
from .conftest import REPO, TINY, run_env, run_snakemake, snakemake_cmd

TUNE_JOBS = 9  # 3 classifiers x 3 unit shards


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name]


# ----------------------------------------------------------------------------- digests


def test_rules_rerun_on_the_sections_their_artifacts_record(repo):
    """Each rule's rerun param is the digest of its own stage (registry.STAGES: the rule's name is the stage's),
    the one its artifacts record."""
    found: dict[str, str | None] = {}
    for smk in sorted((repo / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            rule = re.match(r"rule (\w+):", block)
            if rule:
                digest = re.search(r'config=digest\("(\w+)"\)', block)
                found[rule.group(1)] = digest.group(1) if digest else None
    assert found == {r: r for r in found}
    assert set(found) == set(STAGE_SECTIONS) == set(STAGES)


# ----------------------------------------------------------------------------- determinism


@contextmanager
def torch_threads() -> Iterator[None]:
    """Stages set torch's thread count (as their jobs do); give the test process its own back."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_two_runs_of_one_config_give_identical_artifacts(tiny_run, tmp_path):
    """The workflow makes every stage from sample to link again, from the first run's trained weights:
    samples, features, selection and link are bit for bit the first run's. Training is repeated in
    test_training_twice_gives_identical_weights, tune onwards in the kill test below."""
    shared, _, tiny = tiny_run
    work = tmp_path / "copy"
    shutil.copytree(shared, work, symlinks=True)
    paths = RunPaths(work / "results" / "tiny")
    for sub in ("samples", "extract", "select", "link"):
        shutil.rmtree(paths.root / sub)
    targets = [str(f(name).relative_to(work)) for name in ("resnet18", "regnet", "planted")
               for f in (paths.link_model, paths.link_metrics)]
    proc = run_snakemake(*targets, "--directory", str(work), "--configfile", str(work / "tiny.yaml"), "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    n = assert_same_artifacts(tiny.root, paths.root, ["classifiers", "samples", "extract", "select", "link"])
    assert n == 7 + 3 + 6 + 6 + 6  # classifiers (the planted one with its spec), samples, extract, select, link


def test_training_twice_gives_identical_weights(tmp_path):
    from linkstyle.cli import main

    raw = {
        "generator": {"num_classes": 3, "resolution": 32},
        "classifiers": [{"name": "net", "arch": "resnet18"}],
        "train": {"steps": 4, "batch_size": 8, "eval_samples": 12, "min_accuracy": 0.0},
    }
    runs = []
    for run in ("first", "second"):
        cfg_file = tmp_path / f"{run}.yaml"
        cfg_file.write_text(yaml.safe_dump(dict(raw, results_dir=str(tmp_path / run))))
        with torch_threads():
            assert main(["train_classifier", "--classifier", "net", "--config", str(cfg_file), "--threads", "2", "-q"]) == 0
        runs.append(RunPaths(load_config(cfg_file).run_dir))
    assert_same_file(runs[0].classifier_weights("net"), runs[1].classifier_weights("net"))
    assert_same_file(runs[0].classifier_metrics("net"), runs[1].classifier_metrics("net"))


# ----------------------------------------------------------------------------- kill and resume


@pytest.mark.slow
def test_a_run_killed_during_tune_resumes_to_the_artifacts_of_an_uninterrupted_run(tiny_run, tmp_path):
    """From the tiny run with tune and everything after it gone, run the workflow and SIGKILL Snakemake's
    whole process group as soon as the first of the 9 tune shards is written (others in flight or
    pending); resume as a user would: --unlock, then --rerun-incomplete."""
    shared, _, tiny = tiny_run
    work = tmp_path / "copy"
    shutil.copytree(shared, work, symlinks=True)  # keeps mtimes and Snakemake's metadata
    paths = RunPaths(work / "results" / "tiny")
    for sub in ("tune", "measure", "selectivity", "figures"):
        shutil.rmtree(paths.root / sub)
    paths.report.unlink()
    paths.summary.unlink()
    args = ("--directory", str(work), "--configfile", str(work / "tiny.yaml"))
    log = work / "killed-attempt.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(snakemake_cmd(*args, "--cores", "2"), cwd=REPO, env=run_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not list(paths.root.glob("tune/*/shard-*.parquet")):
                assert proc.poll() is None, f"the run ended before a tune shard was written:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no tune shard within 10 minutes"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and every job it started
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    at_kill = list(paths.root.glob("tune/*/shard-*.parquet"))
    assert 0 < len(at_kill) < TUNE_JOBS, at_kill  # killed in the middle of tune

    # The killed run's lock is still there: a rerun is refused until the user says the run is dead.
    refused = run_snakemake(*args, "--cores", "2", "--rerun-incomplete")
    assert refused.returncode != 0 and "--unlock" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert run_snakemake(*args, "--unlock").returncode == 0
    resumed = run_snakemake(*args, "--cores", "2", "--rerun-incomplete")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    n = assert_same_artifacts(tiny.root, paths.root, ["tune", "measure", "selectivity"])
    assert n == 2 * TUNE_JOBS + TUNE_JOBS + 3 * 6  # tune table + arrays, measure table, 6 selectivity tables each
    assert_same_file(tiny.summary, paths.summary)
    assert not temp_files(paths.root)  # the killed jobs' temporary files were cleared when their shards were rewritten


# A tune job streams its arrays into parts and packs them into the NPZ member by member
# (io.NpzWriter): stop it after the first member, with the rest still to come.
HALF_WRITE = """
import sys, time, zipfile
real_write = zipfile.ZipFile.write
def write(self, *args, **kwargs):
    real_write(self, *args, **kwargs)
    self.fp.flush()
    print("half written", flush=True)
    time.sleep(600)
zipfile.ZipFile.write = write
from linkstyle.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_only_a_temporary_file_that_is_never_taken_as_output(tiny_run, tmp_path):
    """SIGKILL a tune job while half its shard is on disk: the shard is absent (readers and Snakemake
    see a missing file, not a short one), and rerunning the job writes it whole and clears the leftover."""
    _, _, tiny = tiny_run
    cfg = load_config(None, dict(TINY, results_dir=str(tmp_path)))
    paths = RunPaths(cfg.run_dir)
    for sub in ("classifiers", "select", "link"):
        shutil.copytree(tiny.root / sub, paths.root / sub)
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.raw))
    job = ["tune", "--classifier", "resnet18", "--shard", "0", "--config", str(cfg_file), "--threads", "1", "-q"]
    proc = subprocess.Popen([sys.executable, "-c", HALF_WRITE, *job], env=run_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "half written\n", proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    shard = paths.tune_arrays("resnet18", 0)
    assert not shard.exists() and not paths.tune_table("resnet18", 0).exists()
    (leftover,) = shard.parent.glob(f".{shard.name}.*.tmp.npz")
    assert 0 < leftover.stat().st_size < tiny.tune_arrays("resnet18", 0).stat().st_size
    with pytest.raises(ArtifactError, match=r"missing input .*tune/resnet18/shard-0.npz; stage 'tune' makes it"):
        read_npz(shard, origin=origin(cfg, "tune", classifier="resnet18", shard=0))

    rerun = subprocess.run([sys.executable, "-m", "linkstyle", *job], env=run_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not leftover.exists() and not temp_files(paths.root)
    assert_same_file(tiny.tune_arrays("resnet18", 0), shard)
    assert_same_file(tiny.tune_table("resnet18", 0), paths.tune_table("resnet18", 0))


# ----------------------------------------------------------------------------- reruns and locks


def _planned(proc: subprocess.CompletedProcess) -> dict[str, int]:
    rules = {"train_classifier", "sample", "extract", "select", "link", "tune", "measure", "reference", "selectivity", "report"}
    jobs = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in rules and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.mark.slow
def test_a_config_change_reruns_only_the_stages_that_read_it(tiny_run, tmp_path):
    shared, _, _ = tiny_run
    work = tmp_path / "copy"
    shutil.copytree(shared, work, symlinks=True)  # keeps mtimes and Snakemake's metadata
    for change, expected in [
        ({"report": {"top_units": 3}}, {"report": 1}),
        ({"measure": {"entropy_radius": 3}}, {"measure": 9, "reference": 3, "selectivity": 3, "report": 1}),
        ({"link": {"cycle_samples": 30}}, {"link": 3, "tune": 9, "measure": 9, "reference": 3, "selectivity": 3, "report": 1}),
    ]:
        cfg = work / "changed.yaml"
        cfg.write_text(yaml.safe_dump(deep_merge(TINY, change)))
        proc = run_snakemake("--directory", str(work), "--configfile", str(cfg), "-n", "--quiet", "rules")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert _planned(proc) == expected, (change, proc.stdout + proc.stderr)


#: Put on PYTHONPATH, this holds every `linkstyle sample` job until the file $HOLD_UNTIL exists.
HOLD_SAMPLE_JOBS = """
import os, time
if {b"linkstyle", b"sample"} <= set(open("/proc/self/cmdline", "rb").read().split(b"\\0")):
    while not os.path.exists(os.environ["HOLD_UNTIL"]):
        time.sleep(0.05)
"""


@pytest.mark.slow
def test_a_run_folder_in_use_is_refused_while_another_run_name_proceeds(tiny_run, tmp_path):
    """While one Snakemake process works on a run (its sample jobs held), a second one on the same run
    is refused by the lock; a run with another name in the same working directory runs to the end in
    the meantime, and writes only its own folder."""
    _, _, tiny = tiny_run
    configs = {}
    for run in ("tiny", "other"):
        configs[run] = tmp_path / f"{run}.yaml"
        configs[run].write_text(yaml.safe_dump(dict(TINY, run=run)))
    mine, theirs = RunPaths(tmp_path / "results" / "tiny"), RunPaths(tmp_path / "results" / "other")
    targets = [str(mine.samples(c, 0).relative_to(tmp_path)) for c in range(3)]
    base = ("--directory", str(tmp_path), "--cores", "1")
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(HOLD_SAMPLE_JOBS)
    go = tmp_path / "go"
    env = dict(run_env(), PYTHONPATH=str(hold), HOLD_UNTIL=str(go))
    # targets first: --configfile takes every word after it
    first = subprocess.Popen(snakemake_cmd(*targets, *base, "--configfile", str(configs["tiny"])), cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / ".snakemake" / "locks").glob("*")):
            assert first.poll() is None, first.stdout.read() if first.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        same = run_snakemake(*targets, *base, "--configfile", str(configs["tiny"]))
        other = run_snakemake(str(theirs.samples(0, 0).relative_to(tmp_path)), *base, "--configfile", str(configs["other"]))
        first_still_running = first.poll() is None and not any(mine.samples(c, 0).exists() for c in range(3))
        go.touch()
        first_out, _ = first.communicate(timeout=300)
    finally:
        go.touch()
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert same.returncode != 0 and "Directory cannot be locked" in same.stdout + same.stderr, same.stdout + same.stderr
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert first_still_running  # both verdicts came while the first run held its lock, its jobs unfinished
    assert first.returncode == 0, first_out[-3000:]
    for c in range(3):
        assert_same_file(tiny.samples(c, 0), mine.samples(c, 0))
    assert_same_file(tiny.samples(0, 0), theirs.samples(0, 0))
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["other", "tiny"]
