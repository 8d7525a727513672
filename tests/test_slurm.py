"""The workflow and the submitit API against a real single-node SLURM (see tests/slurm_cluster.py).

One cluster serves the whole module (session-scoped, so that xdist batching never tears it down
between two of its tests); `make test` keeps the module on one worker (`--dist loadfile`).
Where this machine cannot run the cluster (not root, no apt-get), every test here is skipped
with the reason, never passed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from linkstyle.config import deep_merge, load_config
from linkstyle.paths import RunPaths
from linkstyle.units import unit_shards

from . import slurm_cluster
from .compare import assert_same_artifacts, assert_same_file
from .conftest import REPO, TINY, run_env, snakemake_cmd

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    try:
        c = slurm_cluster.start(root)
    except slurm_cluster.ClusterUnavailable as exc:
        slurm_cluster.stop(root)
        pytest.skip(f"no real SLURM here: {exc}")
    yield c
    slurm_cluster.stop(root)


def make_profile(folder: Path, **extra) -> Path:
    """profiles/slurm with the test cluster's answers to its ADAPT keys (tests/slurm/override.yaml)."""
    base = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    override = yaml.safe_load((REPO / "tests" / "slurm" / "override.yaml").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(deep_merge(deep_merge(base, override), extra), sort_keys=False))
    return folder


def start_snakemake(cluster, work: Path, profile: Path, log: Path, *args: str) -> subprocess.Popen:
    """Snakemake in the background, as a user starts it: its own session, SIGINT left to its default."""
    cmd = snakemake_cmd("--directory", str(work), "--configfile", str(work / "tiny.yaml"), "--profile", str(profile), *args)
    return subprocess.Popen(
        cmd, cwd=REPO, env=cluster.env(run_env()), stdout=log.open("w"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_until(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    """Wait for snakemake; past the timeout stop it as a user would (SIGINT cancels its jobs) and fail."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        pytest.fail(f"snakemake did not finish within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def running(cluster, rule: str) -> list[dict[str, str]]:
    return [j for j in cluster.queue() if j["state"] == "RUNNING" and rule in j["comment"]]


def _cwd(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def our_jobs(cluster) -> list[dict[str, str]]:
    return [j for j in cluster.queue() if j["comment"].startswith("rule_")]


@pytest.fixture(scope="session")
def slurm_run(cluster, tiny_run, tmp_path_factory):
    """The tiny workflow through profiles/slurm: stopped with SIGINT while it tunes, started again,
    one tune job's stage killed on the way (and retried); what each step saw.

    To keep CI short it starts from the shared local run's classifiers, samples, features and links
    (with Snakemake's records of them); the unit analysis runs on SLURM: the reference spreads, every
    tune shard (a GPU rule), measure, selectivity, actmax, the atlas and the report.
    """
    local_work, _, local = tiny_run
    work = tmp_path_factory.mktemp("slurm-run")
    shutil.copytree(local_work, work, symlinks=True, dirs_exist_ok=True)  # keeps mtimes and .snakemake records
    paths = RunPaths(work / "results" / "tiny")
    for stage in ("reference", "tune", "measure", "selectivity"):
        shutil.rmtree(paths.root / stage)
    for path in (paths.report, paths.summary):
        path.unlink()
    profile = make_profile(work / "profile")
    seen: dict[str, object] = {"work": work, "paths": paths, "cluster": cluster}

    first_log = work / "first.log"
    # The first run queries no job status before it is stopped (all its jobs are submitted within about
    # 15 s). Snakemake's remote executor takes the jobs out of its list of active jobs while it queries
    # their status and puts them back afterwards, so a Ctrl-C during a query cancels only the jobs
    # outside it (snakemake-interface-executor-plugins 9.x, docs/hpc.md): this test once left 8 of 12
    # jobs queued that way. The race is upstream's, not what this test is about. After Ctrl-C Snakemake
    # waits out the pending sleep of its status thread (up to these 90 s) before it exits.
    first_profile = make_profile(work / "profile-first", **{"slurm-init-seconds-before-status-checks": 90})
    proc = start_snakemake(cluster, work, first_profile, first_log)
    # Interrupt once every job that can start (each tune shard and each classifier's reference spread;
    # neither needs the other) is submitted and a tune job runs. Snakemake (9.27, plugin 2.8.0) can
    # still submit a job whose submission was under way when Ctrl-C came, and never cancels it
    # (docs/hpc.md); that race is not what this test is about. (Waiting for the tune jobs alone once
    # let the last reference job's submission meet the Ctrl-C, and that job was left running.)
    cfg = load_config(None, TINY)
    expected = {
        "slurm_logs/rule_tune/": sum(len(unit_shards(cfg, c.name)) for c in cfg.classifiers),
        "slurm_logs/rule_reference/": len(cfg.classifiers),
    }

    def all_submitted_and_a_tune_job_running():
        log = first_log.read_text() if first_log.exists() else ""
        if any(log.count(where) < n for where, n in expected.items()):
            return None
        return running(cluster, "rule_tune")

    seen["interrupted"] = wait_until(
        "every tune and reference job submitted, a tune job running", all_submitted_and_a_tune_job_running, proc, first_log
    )
    proc.send_signal(signal.SIGINT)
    seen["first_rc"] = finish(proc, first_log, 240)
    seen["left_in_queue"] = our_jobs(cluster)
    seen["first_run_jobs"] = {j["id"] for j in cluster.accounting()}
    done = [paths.root / stage for stage in ("classifiers", "samples", "extract", "select", "link")]
    seen["done_before"] = {p: p.stat().st_mtime_ns for d in done for p in d.rglob("*") if p.is_file()}

    second_log = work / "second.log"
    proc = start_snakemake(cluster, work, profile, second_log)
    victim = wait_until("a tune job running", lambda: running(cluster, "rule_tune"), proc, second_log)[0]
    # Kill its stage as the kernel's OOM killer or a crash would (SIGKILL, no clean-up): the
    # SLURM job fails and the profile's retries resubmit it. (A job cancelled by hand with
    # scancel is not used here: plugin 2.8.0 misreads sacct's "CANCELLED by <uid>", see docs/hpc.md.)
    clf, shard = victim["comment"].removeprefix("rule_tune_wildcards_").rsplit("_", 1)
    pattern = f"linkstyle tune .*--classifier {clf} --shard {shard}"

    def stage_pids() -> list[str]:  # only this run's (other tests may run the same stage locally)
        pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        return [p for p in pids if _cwd(p) == str(work)]

    pid = wait_until("its stage process", stage_pids, proc, second_log)[0]
    os.kill(int(pid), signal.SIGKILL)
    seen["killed"] = victim
    seen["second_rc"] = finish(proc, second_log, 600)
    seen["first_log"], seen["second_log"] = first_log.read_text(), second_log.read_text()
    seen["accounting"] = cluster.accounting()
    return seen


def test_sigint_cancels_every_slurm_job_of_the_run(slurm_run):
    assert slurm_run["interrupted"], "no job was running when the run was stopped"
    assert slurm_run["first_rc"] != 0
    assert slurm_run["left_in_queue"] == [], slurm_run["left_in_queue"]
    cancelled = {j["id"] for j in slurm_run["accounting"] if j["state"].startswith("CANCELLED")}
    assert {j["id"] for j in slurm_run["interrupted"]} <= cancelled, slurm_run["accounting"]


def test_resumed_run_does_only_what_was_missing(slurm_run):
    second = slurm_run["second_log"]
    for rule in ("train_classifier", "sample", "extract", "select", "link"):
        assert f"rule {rule}:" not in second, f"the resumed run ran {rule} again"
    done = slurm_run["done_before"]
    assert len(done) > 10 and all(p.stat().st_mtime_ns == t for p, t in done.items())
    assert "rule tune:" in second and "rule report:" in second


def test_a_killed_job_is_retried_and_the_run_completes(slurm_run):
    assert slurm_run["second_rc"] == 0, slurm_run["second_log"][-4000:]
    victim = slurm_run["killed"]
    jobs = [j for j in slurm_run["accounting"] if j["comment"] == victim["comment"] and j["id"] not in slurm_run["first_run_jobs"]]
    killed = [j for j in jobs if j["id"] == victim["id"]]
    # The killed job ends FAILED, or "CANCELLED by 0" when the executor's status check saw it fail while
    # SLURM was still completing it and cancelled it (seen under load); a later job of the same rule
    # and wildcards completes. (A job the first run's Ctrl-C left behind can appear here too, cancelled.)
    assert len(killed) == 1 and (killed[0]["state"] == "FAILED" or killed[0]["state"].startswith("CANCELLED")), jobs
    later = [j for j in jobs if int(j["id"].split("_")[0]) > int(victim["id"].split("_")[0])]
    assert later and later[-1]["state"] == "COMPLETED", jobs


def test_slurm_results_equal_the_local_run(slurm_run, tiny_run):
    _, _, local = tiny_run
    stages = ["reference", "tune", "measure", "selectivity"]
    assert assert_same_artifacts(local.root, slurm_run["paths"].root, stages) > 30
    assert_same_file(local.summary, slurm_run["paths"].summary)


# ------------------------------------------------------------------ the submitit API (linkstyle.cluster)


def test_analyse_units_runs_an_array_of_jobs_and_matches_the_workflow(slurm_run, tmp_path):
    import pandas as pd

    from linkstyle import cluster

    work, paths = slurm_run["work"], slurm_run["paths"]
    units = [0, 3, 5, 7, 11]
    profile = make_profile(tmp_path / "profile")
    table = cluster.analyse_units(work / "tiny.yaml", "resnet18", units, folder=tmp_path / "jobs", units_per_job=2,
                                  profile=profile, overrides={"results_dir": str(work / "results")})
    assert sorted(table["unit"]) == units
    def tasks():  # a task's result file exists a moment before SLURM records the task as ended
        jobs = [j for j in slurm_run["cluster"].accounting() if j["name"] == "linkstyle-units-resnet18"]
        return jobs if jobs and all(j["state"] not in ("PENDING", "RUNNING") for j in jobs) else None

    deadline = time.monotonic() + 60
    while not tasks() and time.monotonic() < deadline:
        time.sleep(1)
    jobs = tasks()
    assert jobs and [j["state"] for j in jobs] == ["COMPLETED"] * 3, jobs  # one array of 3 tasks
    assert len({j["id"].split("_")[0] for j in jobs}) == 1, jobs
    workflow = pd.read_parquet(paths.selectivity_units("resnet18")).set_index("unit").loc[units]
    for column in ("faithfulness", "realised_rise", "class_kept"):
        np.testing.assert_array_equal(table.set_index("unit")[column].to_numpy(), workflow[column].to_numpy(), column)
    assert all(Path(p).exists() for p in table["sweeps"])


def test_a_job_that_raises_sends_its_error_back(cluster, tmp_path):
    from linkstyle import cluster as api

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    job = api.submit_stage(tmp_path / "tiny.yaml", "tune", "resnet18", 99, folder=tmp_path / "jobs",
                           profile=make_profile(tmp_path / "profile"), overrides={"results_dir": str(tmp_path / "results")})
    with pytest.raises(api.ClusterError, match=r"failed: LinkstyleError: unit shard 99 out of range: .*\n\(its log: .*log.err\)"):
        api.result(job)


# ------------------------------------------------------------------ what SLURM cannot give


@pytest.mark.parametrize(
    "override, message",
    [
        ({"default-resources": {"slurm_partition": "nosuch"}}, "partition 'nosuch' (slurm_partition of rule(s) sample) does not exist on this cluster, whose partitions are: debug"),
        ({"default-resources": {"slurm_account": "nosuch"}}, "account 'nosuch' (slurm_account of rule(s) sample) is not one of yours on this cluster: linkstyle, root"),
    ],
    ids=["missing-partition", "unknown-account"],
)
def test_resources_slurm_cannot_give_fail_before_any_job(cluster, tmp_path, override, message):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    profile = make_profile(tmp_path / "profile", **override)
    target = str(RunPaths(tmp_path / "results" / "tiny").samples(0, 0).relative_to(tmp_path))
    log = tmp_path / "run.log"
    proc = start_snakemake(cluster, tmp_path, profile, log, target)
    rc = finish(proc, log, 120)
    out = log.read_text()
    assert rc != 0 and message in out, out[-3000:]
    assert not [j for j in cluster.accounting() if j["workdir"] == str(tmp_path)], "a job was submitted"
    assert not (tmp_path / "results" / "tiny" / "samples").exists()


def test_accounting_that_does_not_answer_is_caught_before_any_job(cluster, tmp_path):
    """With slurmdbd stopped sacct fails, and the executor would wait for ever (slurmdbd is started again after)."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    pid = int((cluster.root / "run" / "slurmdbd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while slurm_cluster._port_open(slurm_cluster.DBD_PORT) and time.monotonic() < deadline:
        time.sleep(0.2)
    log = tmp_path / "run.log"
    try:
        proc = start_snakemake(cluster, tmp_path, make_profile(tmp_path / "profile"), log)
        rc = finish(proc, log, 180)
    finally:
        slurm_cluster.start_accounting(cluster)
    out = log.read_text()
    assert rc != 0 and "SLURM accounting does not answer" in out and "slurm-status-command: squeue" in out, out[-3000:]
    assert not (tmp_path / "results" / "tiny" / "classifiers").exists()
