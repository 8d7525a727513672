"""The stage registry (``linkstyle.registry.STAGES``) is the one table of stages: the CLI, the rules (their
files, names, shell lines and rerun params), the digests, the artifacts' origin and the stage modules all
agree with it."""

from __future__ import annotations

import importlib
import inspect
import re
import shlex

import pytest

from linkstyle.artifacts import origin
from linkstyle.cli import build_parser
from linkstyle.config import STAGE_FORMATS, STAGE_SECTIONS, load_config
from linkstyle.io import ArtifactError, Origin, read_json, write_json
from linkstyle.registry import STAGES, UnknownStage, stage

from .conftest import REPO, run_snakemake

RULES = REPO / "workflow" / "rules"
#: A value for each wildcard option, of its type.
VALUES = {"classifier": "resnet18", "cls": 1, "shard": 2}


def rule_blocks(text: str) -> dict[str, str]:
    return {m.group(1): block for block in re.split(r"\n(?=rule )", text) if (m := re.match(r"rule (\w+):", block))}


def test_every_stage_has_its_rule_file_holding_its_rule_alone():
    assert sorted(p.stem for p in RULES.glob("*.smk")) == sorted([*STAGES, "common"])
    assert not re.search(r"^rule ", (RULES / "common.smk").read_text(), re.M)
    for name in STAGES:
        blocks = rule_blocks((RULES / f"{name}.smk").read_text())
        assert list(blocks) == [name]
        block = blocks[name]
        assert f'stage_shell("{name}")' in block  # its shell line, from the registry
        assert f'config=digest("{name}")' in block  # it reruns on the sections its stage reads
        assert f'PATHS.log("{name}"' in block and f'PATHS.benchmark("{name}"' in block


def test_every_stage_has_its_run_function_taking_its_wildcards():
    for s in STAGES.values():
        run = getattr(importlib.import_module(f"linkstyle.stages.{s.module}"), f"run_{s.name}")
        assert len(inspect.signature(run).parameters) == 1 + len(s.wildcards), s.name  # ctx, then the wildcards


@pytest.mark.parametrize("name", list(STAGES))
def test_the_cli_runs_each_stage_with_its_wildcards(name):
    s = STAGES[name]
    args = build_parser().parse_args([name, *(x for w in s.wildcards for x in (f"--{w.name}", str(VALUES[w.name])))])
    assert args.stage == name
    assert [getattr(args, w.name) for w in s.wildcards] == [VALUES[w.name] for w in s.wildcards]
    if s.wildcards:
        with pytest.raises(SystemExit):  # every wildcard is required
            build_parser().parse_args([name])


def test_each_stage_shell_line_runs_the_stage_with_the_rule_wildcards():
    """The rules' shell lines (registry.Stage.shell, filled in as Snakemake would) parse to their stage."""
    for s in STAGES.values():
        filled = s.shell().replace("{params.resolved}", "run.yaml").replace("{threads}", "3").replace("{log}", "x.log")
        for w in s.wildcards:
            filled = filled.replace(f"{{wildcards.{w.rule_name}}}", str(VALUES[w.name]))
        assert "{" not in filled and filled.endswith(" > x.log 2>&1"), filled
        argv = shlex.split(filled.split(" > ")[0])
        assert argv[:3] == ["python", "-m", "linkstyle"]
        args = build_parser().parse_args(argv[3:])
        assert (args.stage, args.threads, args.config) == (s.name, 3, ["run.yaml"])
        assert [getattr(args, w.name) for w in s.wildcards] == [VALUES[w.name] for w in s.wildcards]


def test_the_workflow_runs_every_stage_as_its_rule(tmp_path):
    """Snakemake's own view (a dry-run of the tiny world, every stage planned): each job's shell command runs the
    stage named as its rule, with the job's wildcards, and logs under the rule's name."""
    proc = run_snakemake("--directory", str(tmp_path), "--configfile", str(REPO / ".test" / "config" / "config.yaml"),
                         "-n", "-p", timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = []  # (rule, the job's fields, its shell command), from the job's paragraph
    for paragraph in out.split("\n\n"):
        rule, shell = re.search(r"^(?:local)?rule (\w+):$", paragraph, re.M), re.search(r"^Shell command: (.*)$", paragraph, re.M)
        if rule and shell and rule.group(1) != "all":  # rule all has no command ("None")
            jobs.append((rule.group(1), paragraph, shell.group(1)))
    assert {rule for rule, _, _ in jobs} == set(STAGES)
    for rule, fields, command in jobs:
        found = re.search(r"^\s+wildcards: (.*)$", fields, re.M)
        wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", found.group(1))) if found else {}
        argv = shlex.split(command.split(" > ")[0])
        args = build_parser().parse_args(argv[3:])
        assert args.stage == rule, command
        assert {w.rule_name: str(getattr(args, w.name)) for w in STAGES[rule].wildcards} == wildcards, command
        assert f"/logs/{rule}/" in command


def test_digests_and_origins_come_from_the_registry():
    """Sections and format versions are the registry's; the stage's name is in no digest."""
    cfg = load_config(None)
    assert STAGE_SECTIONS == {n: s.sections for n, s in STAGES.items()}
    assert STAGE_FORMATS == {n: s.format for n, s in STAGES.items() if s.format is not None}
    for name, s in STAGES.items():
        assert cfg.stage_digest(name) == cfg.digest(*s.sections, format_version=s.format)
        made = origin(cfg, name)
        assert made.record() == {"stage": name, "sections": list(s.sections), "digest": cfg.stage_digest(name)}
        assert made.remake.startswith(f"linkstyle {name} --config ")


def test_older_stage_names_resolve_and_their_artifacts_are_still_read(tmp_path):
    """Classifier weights and metrics made before the train stage was named train_classifier record stage
    'train': readers still take them (their digest is the same), and no other stage's."""
    assert stage("train-segmenter") is STAGES["train_segmenter"]
    assert stage("train") is STAGES["train_classifier"] and stage("label export") is STAGES["label_export"]
    cfg = load_config(None, {"results_dir": str(tmp_path)})
    made = origin(cfg, "train", classifier="resnet18")
    assert made.stage == "train_classifier" and made.remake.startswith("linkstyle train_classifier --classifier resnet18 ")
    before = write_json({"heldout_accuracy": 0.9}, tmp_path / "before.json", Origin("train", made.sections, made.digest, ""))
    assert read_json(before, origin=made, keys=("heldout_accuracy",))["heldout_accuracy"] == 0.9
    foreign = write_json({"heldout_accuracy": 0.9}, tmp_path / "foreign.json", Origin("sample", made.sections, made.digest, ""))
    with pytest.raises(ArtifactError, match="was made by stage 'sample', but stage 'train_classifier' makes"):
        read_json(foreign, origin=made, keys=("heldout_accuracy",))
    with pytest.raises(UnknownStage, match="unknown stage 'training'; stages: train_classifier, sample, "):
        stage("training")
