"""linkstyle.cluster without a cluster: resources read from the profile, and the pre-flight checks."""

from __future__ import annotations

import pytest

from linkstyle import cluster
from linkstyle.cluster import ClusterError, JobResources, slurm_problems


def test_a_gpu_rule_gets_the_profiles_gpu_and_more_on_a_retry():
    first = JobResources.from_profile("tune")
    assert (first.gpu, first.cpus_per_task, first.mem_mb, first.runtime) == (1, 4, 16000, 120)
    second = JobResources.from_profile("tune", attempt=2)
    assert (second.mem_mb, second.runtime) == (32000, 240)


def test_a_cpu_rule_gets_no_gpu_and_the_defaults_it_does_not_override():
    res = JobResources.from_profile("select")
    assert (res.gpu, res.cpus_per_task, res.mem_mb, res.runtime) == (0, 1, 16000, 30)
    assert "gpus_per_node" not in res.submitit_parameters() and "slurm_gres" not in res.submitit_parameters()


def test_submitit_parameters_say_the_same_as_the_profile(tmp_path):
    profile = tmp_path / "config.yaml"
    profile.write_text(
        "default-resources: {slurm_account: ag, slurm_partition: cpu, mem_mb: 1000, runtime: 10}\n"
        "set-resources:\n  tune: {slurm_partition: gpu, gpu: 2, gpu_model: a100, constraint: 'a100|h100', cpus_per_task: 8}\n"
    )
    params = JobResources.from_profile("tune", tmp_path).submitit_parameters()
    assert params == {
        "timeout_min": 10, "cpus_per_task": 8, "slurm_mem": "1000M", "tasks_per_node": 1, "nodes": 1,
        "slurm_partition": "gpu", "slurm_account": "ag", "slurm_constraint": "a100|h100", "slurm_gres": "gpu:a100:2",
    }


def test_a_resource_expression_beyond_arithmetic_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("default-resources: {mem_mb: 'max(input.size_mb, 1000)'}\n")
    with pytest.raises(ClusterError, match=r"mem_mb: 'max\(input.size_mb, 1000\)' is not arithmetic on `attempt`"):
        JobResources.from_profile("tune", tmp_path)


def test_a_missing_profile_names_the_file(tmp_path):
    with pytest.raises(ClusterError, match="profile .*nowhere/config.yaml not found"):
        JobResources.from_profile("tune", tmp_path / "nowhere" / "config.yaml")


@pytest.mark.parametrize(
    "missing, status_command, expected",
    [
        ("sbatch", None, "`sbatch` is not on PATH: start the workflow on a login node"),
        ("sinfo", None, "`sinfo` is not on PATH"),
        ("sacct", None, "`sacct` is not on PATH, so the executor falls back to `squeue`"),
    ],
)
def test_missing_slurm_commands_are_named_with_the_fix(missing, status_command, expected):
    problems = slurm_problems(status_command, which=lambda tool: None if tool == missing else f"/usr/bin/{tool}")
    assert len(problems) == 1 and expected in problems[0], problems


def test_analyse_units_refuses_units_the_classifier_does_not_have(tmp_path):
    with pytest.raises(ClusterError, match=r"units \[512, 600\] are not units of classifier 'resnet18' \(valid 0..511\)"):
        cluster.analyse_units(None, "resnet18", [3, 512, 600], folder=tmp_path)
