# Shared by every rule: the validated config, the artifact layout, the jobs' Python path, the input functions.
import os
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from linkstyle.config import from_dict, with_locations  # noqa: E402
from linkstyle.errors import LinkstyleError  # noqa: E402
from linkstyle.io import write_text  # noqa: E402
from linkstyle.paths import RunPaths  # noqa: E402
from linkstyle.registry import STAGES  # noqa: E402
from linkstyle.units import TRAINED_BY_WORKFLOW, counterfactual_classifiers, unit_shards  # noqa: E402
from linkstyle.artifacts import CAPTIONS, figure_files, report_inputs  # noqa: E402
from snakemake.io import report as for_report  # noqa: E402  (`report` would open a directive)

try:
    CFG = from_dict(config)
    SHARDS = {c.name: len(unit_shards(CFG, c.name)) for c in CFG.classifiers}
except LinkstyleError as exc:
    # One message naming file and line, without the traceback line Snakemake adds to an error raised
    # while it parses (a job on a cluster node parses this file too, so the message reaches its log).
    _files = workflow.overwrite_configfiles or [Path(workflow.basedir) / "config/config.yaml"]
    _where = with_locations(str(exc), _files, workflow.config_settings.config, "--config")
    print(f"Error in the config: {_where}", file=sys.stderr)
    sys.exit(1)

PATHS = RunPaths(CFG.run_dir)
CLASSIFIERS = [c.name for c in CFG.classifiers]
TRAINED = [c.name for c in CFG.classifiers if c.kind in TRAINED_BY_WORKFLOW]
SEARCHED = counterfactual_classifiers(CFG)  # the classifiers with counterfactuals

# Every stage reads the resolved config (defaults filled in) from the run folder. It is written in
# `onstart` (after Snakemake has locked the run folder; never by a dry-run, which must not change the
# config under a running workflow), and only when its content changes; reruns are driven by the
# per-rule params below.
_RESOLVED = yaml.safe_dump(CFG.raw, sort_keys=False)
CONFIG = str(PATHS.config)


def write_resolved_config():
    if not PATHS.config.exists() or PATHS.config.read_text() != _RESOLVED:
        try:
            write_text(_RESOLVED, PATHS.config)
        except LinkstyleError as exc:  # e.g. an unwritable results folder
            raise WorkflowError(str(exc)) from None


# Jobs run `python -m linkstyle <stage>`: without conda, Snakemake's own Python (so `.venv/bin/snakemake`
# needs no PATH prefix); with --sdm conda, the env's, whose activation goes first on PATH. The env does
# not install the package, so this checkout's src/ goes first on every job's Python path, local or
# on a cluster node (where Snakemake parses this file again before the job).
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), *filter(None, [os.environ.get("PATH")])]),
    PYTHONPATH=os.pathsep.join([str(Path(workflow.basedir) / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
)


wildcard_constraints:
    clf="|".join(CLASSIFIERS),
    cls=r"\d+",
    shard=r"\d+",


def digest(stage):
    """Rerun a rule when, and only when, the config sections its stage reads change (registry.STAGES,
    the same digest its artifacts record)."""
    return CFG.stage_digest(stage)


def stage_shell(stage):
    """A rule's shell line, from the stage registry: `python -m linkstyle <stage> --config ... --threads ...`
    with the stage's wildcards as options (registry.Stage.shell)."""
    return STAGES[stage].shell()


def classifier_spec(wildcards):
    return repr(CFG.classifier(wildcards.clf))


onstart:
    write_resolved_config()
    # Before the first job (never in a dry-run): every file the config needs must be there and fit
    # the config (class counts of the generator and of classifier heads).
    from linkstyle.doctor import assets, missing, report

    _missing = missing(assets(CFG, deep=True))
    if _missing:
        raise WorkflowError(
            "files this config needs are missing or do not fit it (see `linkstyle doctor --config FILE`):\n"
            + report(_missing)
        )
    # With the SLURM executor: the commands it needs, and accounting for its status checks
    # (without it the run would wait for ever on jobs it cannot see finish).
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        from linkstyle.cluster import slurm_problems

        _requested = {"slurm_partition": {}, "slurm_account": {}}
        for _job in workflow.dag.needrun_jobs():
            for _key, _seen in _requested.items():
                if _job.resources.get(_key):
                    _seen.setdefault(str(_job.resources.get(_key)), set()).add(_job.rule.name)
        _problems = slurm_problems(getattr(workflow.executor_settings, "status_command", None), _requested)
        if _problems:
            raise WorkflowError(
                "SLURM cannot run this workflow from here:\n" + "\n".join(f"- {p}" for p in _problems)
            )


# ----------------------------------------------------------------------------- the rules' input functions

# Every figure, marked for `snakemake --report` with its caption (package data: src/linkstyle/templates/captions/
# <kind>.rst, which report.html shows too).
FIGURES = figure_files(CFG)


def trained_base(wildcards):
    """A planted classifier is fitted on its base's trained network."""
    clf = CFG.classifier(wildcards.clf)
    return [PATHS.classifier_weights(clf.base)] if clf.kind == "planted" else []


def train_spec(wildcards):
    """The classifier's entry (without the units analysed, which never change training), and a planted one's base."""
    clf = CFG.classifier(wildcards.clf)
    spec = classifier_spec(wildcards)
    return f"{spec} base={clf.base!r}" if clf.kind == "planted" else spec


def figure_outputs():
    return [
        for_report(
            PATHS.figure(name),
            caption=f"../../src/linkstyle/{CAPTIONS}/{kind}.rst",  # relative to workflow/rules/report.smk
            category=category,
            subcategory=clf or "all classifiers",
            labels={"figure": kind, "classifier": clf or "all"},
        )
        for name, kind, category, clf in FIGURES
    ]


def report_input_files(wildcards=None):
    """What the report reads (artifacts.report_inputs, which the report stage checks before drawing)."""
    return [needed.path for needed in report_inputs(CFG)]


# The learned part segmenter, for the stages that segment images (measure, reference) when measure.segmenter asks for it.
SEGMENTER = [PATHS.segmenter_model] if CFG.measure.segmenter == "learned" else []


def classifier_weights(wildcards=None):
    return [PATHS.classifier_weights(name) for name in TRAINED]


def user_label_maps(wildcards=None):
    """The annotator's PNG label maps: a change to any of them reruns the import."""
    if not CFG.segmentation.labels:
        return []
    return sorted(str(p) for p in Path(CFG.segmentation.labels).glob("*.png"))


def swept_label_inputs(wildcards=None):
    """The sweeps that segmentation.sweep_images draws images to label from (none when it is 0)."""
    if not CFG.segmentation.sweep_images:
        return []
    return [PATHS.tune_arrays(c, s) for c in CLASSIFIERS for s in range(SHARDS[c])]


def unit_shard_files(path_of):
    def files(wildcards):
        return [path_of(wildcards.clf, s) for s in range(SHARDS[wildcards.clf])]

    return files


def planted_spec(wildcards):
    """A planted classifier's record of what it planted (kind 'planted'): written with its weights, by the same job."""
    return [PATHS.classifier_weights(wildcards.clf)] if CFG.classifier(wildcards.clf).kind == "planted" else []
