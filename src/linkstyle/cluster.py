"""Run linkstyle work on SLURM from Python (a notebook, a script) through submitit.

The jobs get the resources the workflow's profile gives the same rule (profiles/slurm), so a
notebook user and ``snakemake --profile profiles/slurm`` ask the cluster for the same things.

    from linkstyle import cluster
    table = cluster.analyse_units("config/config.yaml", "resnet18", range(50), folder="slurm-jobs")

Also here: the checks that a SLURM installation can run the workflow at all (``slurm_problems``),
which the workflow makes before its first job when it runs with the SLURM executor.
"""

from __future__ import annotations

import ast
import operator
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import yaml

from .errors import LinkstyleError

if TYPE_CHECKING:
    import pandas as pd

#: The profile the workflow ships; a user's own copy can be passed instead.
DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "slurm" / "config.yaml"


class ClusterError(LinkstyleError):
    """SLURM cannot run this work (missing commands, no accounting, a job that failed)."""


# ----------------------------------------------------------------------------- resources


_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def _evaluate(value: Any, attempt: int, where: str) -> Any:
    """A profile resource: a number, a plain string, or arithmetic on `attempt` ("30 * attempt")."""
    if not isinstance(value, str):
        return value

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id == "attempt":
            return attempt
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            return _ARITHMETIC[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError

    try:
        return ev(ast.parse(value, mode="eval").body)
    except (SyntaxError, ValueError):
        if any(ch in value for ch in "*+()"):
            raise ClusterError(f"{where}: '{value}' is not arithmetic on `attempt` that linkstyle.cluster can evaluate; "
                               "use a number or an expression such as '4000 * attempt'") from None
        return value  # a partition, account, GPU model or constraint


@dataclass(frozen=True)
class JobResources:
    """What one SLURM job asks for, in the profile's terms (memory in MB, runtime in minutes)."""

    cpus_per_task: int = 1
    mem_mb: int = 4000
    runtime: int = 30
    gpu: int = 0
    gpu_model: str | None = None
    slurm_partition: str | None = None
    slurm_account: str | None = None
    constraint: str | None = None

    @classmethod
    def from_profile(cls, rule: str, profile: str | Path = DEFAULT_PROFILE, attempt: int = 1) -> "JobResources":
        """``default-resources`` overlaid with ``set-resources[rule]``, as Snakemake combines them."""
        path = Path(profile)
        if path.is_dir():
            path = path / "config.yaml"
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ClusterError(f"profile {path} not found; pass the config.yaml of your SLURM profile (see docs/hpc.md)") from None
        merged = {**(data.get("default-resources") or {}), **((data.get("set-resources") or {}).get(rule) or {})}
        known = {f for f in cls.__dataclass_fields__}
        values = {k: _evaluate(v, attempt, f"{path}: {rule}.{k}") for k, v in merged.items() if k in known}
        threads = (data.get("set-threads") or {}).get(rule)
        if threads and "cpus_per_task" not in values:
            values["cpus_per_task"] = int(threads)
        return cls(**values)

    def submitit_parameters(self) -> dict[str, Any]:
        """The same request in submitit's AutoExecutor terms."""
        params: dict[str, Any] = {
            "timeout_min": int(self.runtime),
            "cpus_per_task": int(self.cpus_per_task),
            "slurm_mem": f"{int(self.mem_mb)}M",
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if self.slurm_partition:
            params["slurm_partition"] = self.slurm_partition
        if self.slurm_account:
            params["slurm_account"] = self.slurm_account
        if self.constraint:
            params["slurm_constraint"] = self.constraint
        if self.gpu:
            if self.gpu_model:
                params["slurm_gres"] = f"gpu:{self.gpu_model}:{int(self.gpu)}"
            else:
                params["gpus_per_node"] = int(self.gpu)
        return params


# ----------------------------------------------------------------------------- checks


def slurm_problems(
    status_command: str | None = None,
    requested: Mapping[str, Mapping[str, Iterable[str]]] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> list[str]:
    """What would stop the SLURM executor from running or following jobs here, each with its fix.

    ``requested`` maps "slurm_partition" / "slurm_account" to {value: rules asking for it}. A
    partition or account SLURM does not know would otherwise surface only when the first job is
    submitted (and, for grouped jobs, Snakemake drops SLURM's message). The executor follows its
    jobs with ``sacct`` unless told to use ``squeue``; where accounting is off, sacct fails on
    every call and the run would wait for ever, so that is caught here too.
    """
    requested = requested or {}
    problems = []
    for tool in ("sbatch", "squeue", "scancel", "sinfo"):
        if which(tool) is None:
            problems.append(f"`{tool}` is not on PATH: start the workflow on a login node of the cluster "
                            "(or load its SLURM module) so that sbatch, squeue, scancel and sinfo are found")
    if status_command != "squeue" and which("sacct") is None:
        problems.append("`sacct` is not on PATH, so the executor falls back to `squeue` for job status, which forgets "
                        "finished jobs after SLURM's MinJobAge; if your cluster has no accounting, set "
                        "`slurm-status-command: squeue` in the profile (docs/hpc.md, 'No accounting')")
    if problems:
        return problems
    proc = _query(["sinfo", "--noheader", "--format=%P"])
    if proc.returncode != 0:
        return [f"`sinfo` failed, so SLURM's controller cannot be reached from here: {proc.stderr.strip()}"]
    partitions = sorted({p.strip().rstrip("*") for p in proc.stdout.split()})
    for name, rules in sorted((requested.get("slurm_partition") or {}).items()):
        if name not in partitions:
            problems.append(f"partition '{name}' (slurm_partition of rule(s) {', '.join(sorted(rules))}) does not exist "
                            f"on this cluster, whose partitions are: {', '.join(partitions)}. Set slurm_partition in your "
                            "profile to one of them (docs/hpc.md, 'The keys you must adapt')")
    if status_command != "squeue":
        proc = _query(["sacct", "--noheader", "-X", "--starttime=now", "--format=JobID"])
        if proc.returncode != 0:
            problems.append(f"SLURM accounting does not answer (`sacct` said: {(proc.stderr or proc.stdout).strip()}), "
                            "and the executor follows its jobs with sacct: it would wait for ever. Ask your admins "
                            "whether accounting (slurmdbd) is enabled, or set `slurm-status-command: squeue` in the "
                            "profile (docs/hpc.md, 'No accounting')")
    accounts = requested.get("slurm_account") or {}
    if accounts and which("sacctmgr") is not None:
        import getpass

        proc = _query(["sacctmgr", "--noheader", "--parsable2", "show", "associations", f"user={getpass.getuser()}", "format=account"])
        mine = sorted({a.strip() for a in proc.stdout.split() if a.strip()})
        if proc.returncode == 0 and mine:  # where associations cannot be listed, SLURM decides at submission
            for name, rules in sorted(accounts.items()):
                if name not in mine:
                    problems.append(f"account '{name}' (slurm_account of rule(s) {', '.join(sorted(rules))}) is not one of "
                                    f"yours on this cluster: {', '.join(mine)}. Set slurm_account in your profile "
                                    "(`sacctmgr show assoc user=$USER format=account` lists yours)")
    return problems


def _query(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 1, "", f"`{' '.join(cmd)}` did not answer within 60 s")


# ----------------------------------------------------------------------------- submitit


def executor(folder: str | Path, resources: JobResources, name: str = "linkstyle", cluster: str | None = None):
    """A submitit executor asking for ``resources``; ``cluster="local"`` runs jobs as local processes (no SLURM)."""
    try:
        import submitit
    except ImportError:
        raise ClusterError("linkstyle.cluster needs submitit: pip install 'linkstyle[cluster]'") from None
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params = resources.submitit_parameters()
    if ex.cluster != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    ex.update_parameters(name=name, **params)
    return ex


def result(job: Any) -> Any:
    """A job's return value; a job that raised comes back as ClusterError with its message and log."""
    import submitit

    try:
        return job.result()
    except submitit.core.utils.FailedJobError as exc:
        # submitit's message holds the job's traceback between dashed lines; its last line is the exception
        parts = str(exc).split("-" * 22)
        trace = parts[1] if len(parts) >= 3 else str(exc)
        lines = [ln.strip() for ln in trace.splitlines() if ln.strip()] or ["no message"]
        message = re.sub(r"^[\w.]*\.(\w+): ", r"\1: ", lines[-1])
        raise ClusterError(f"SLURM job {job.job_id} failed: {message}\n(its log: {job.paths.stderr})") from exc
    except submitit.core.utils.UncompletedJobError as exc:
        raise ClusterError(f"SLURM job {job.job_id} ended without a result (killed, out of time or memory?): {exc}\n"
                           f"(its log: {job.paths.stdout})") from exc


def submit_stage(config: str | Path, stage: str, *wildcards: object, folder: str | Path, profile: str | Path = DEFAULT_PROFILE,
                 overrides: Mapping[str, Any] | None = None, cluster: str | None = None):
    """Send one workflow stage (as its rule runs it, e.g. ``"tune", "resnet18", 0``) to SLURM, with the profile's
    resources of its rule (the stage's name); returns the job."""
    from .registry import stage as find_stage
    from .stages import run_stage

    name = find_stage(stage).name
    resources = JobResources.from_profile(name, profile)
    ex = executor(folder, resources, name=f"linkstyle-{name}", cluster=cluster)
    return ex.submit(run_stage, str(config), name, *wildcards, overrides=dict(overrides or {}), threads=resources.cpus_per_task)


def analyse_units(config: str | Path, classifier: str, units: Iterable[int], *, folder: str | Path,
                  units_per_job: int | None = None, profile: str | Path = DEFAULT_PROFILE,
                  overrides: Mapping[str, Any] | None = None, cluster: str | None = None) -> "pd.DataFrame":
    """Sweep, render and measure these units of one classifier on SLURM (an array of jobs, each with
    the profile's ``tune`` resources) and summarise them as the workflow's selectivity stage does.

    Needs the run's select and link artefacts (run the workflow up to ``link`` first). Each job
    writes its sweep images to ``<folder>/sweeps-<first unit>.npz`` for viewing; the returned
    table has one row per unit (faithfulness and labels, as in ``selectivity/<clf>/units.parquet``)
    and its ``features`` attribute holds the per-(part, property) changes.
    """
    from .config import load_config
    from .units import unit_count

    cfg = load_config(config, dict(overrides or {}))
    cfg.classifier(classifier)  # unknown names fail here, listing the configured ones
    wanted = sorted({int(u) for u in units})
    count = unit_count(cfg, classifier)
    bad = [u for u in wanted if not 0 <= u < count]
    if not wanted or bad:
        raise ClusterError(f"analyse_units: units {bad or '[]'} are not units of classifier '{classifier}' (valid 0..{count - 1})")
    size = units_per_job or cfg.tune.units_per_shard
    chunks = [wanted[i : i + size] for i in range(0, len(wanted), size)]
    resources = JobResources.from_profile("tune", profile)
    ex = executor(folder, resources, name=f"linkstyle-units-{classifier}", cluster=cluster)
    n = len(chunks)
    jobs = ex.map_array(_sweep_and_measure, [str(config)] * n, [classifier] * n, chunks,
                        [str(Path(folder).resolve())] * n, [dict(overrides or {})] * n, [resources.cpus_per_task] * n)
    from .seeds import derive
    from .selectivity import summarise
    from .stages.context import Context
    from .stages.selectivity import factor_periods, primary_mask_source, read_spread

    blocks = [result(job) for job in jobs]
    primary = primary_mask_source(cfg)
    spread = read_spread(Context(cfg), classifier)  # the reference stage's: a unit's numbers match the workflow's
    summary = summarise(cfg.selectivity, cfg.tune.n_steps,
                        [(units, tune, meas[meas["masks"] == primary]) for units, tune, meas in blocks],
                        spread[spread["masks"] == primary], derive(cfg.seed, "selectivity", classifier) % 2**63,
                        factor_periods(cfg))
    table = summary.units
    table.attrs["features"] = summary.features
    table["sweeps"] = [str(Path(folder).resolve() / f"sweeps-{chunk[0]}.npz") for chunk in chunks for _ in chunk]
    return table


def _sweep_and_measure(config: str, classifier: str, units: Sequence[int], folder: str, overrides: dict, threads: int):
    """One job of analyse_units: tune and measure ``units``; the images go to a file, the tables back."""
    from .config import load_config
    from .io import write_npz
    from .stages.context import Context
    from .stages.measure import measure_sweeps
    from .stages.tune import sweep_units

    ctx = Context(load_config(config, overrides), threads=threads)
    table, arrays = sweep_units(ctx, classifier, list(units))
    measured = measure_sweeps(ctx, arrays)
    write_npz(Path(folder) / f"sweeps-{units[0]}.npz", **{k: v for k, v in arrays.items() if k in ("unit", "start", "step", "images", "w")})
    return list(units), table, measured
