"""The pipeline's stages, each named once: the one table the CLI, the rules and the digests are derived from.

A stage's name is its Snakemake rule (``workflow/rules/<name>.smk``; SLURM profiles key resources by
it), its canonical CLI subcommand (``linkstyle <name>``) and its function ``run_<name>`` in
``linkstyle.stages.<module>``. Its config sections make the digest its rule reruns on and its artifacts
record (``config.Config.stage_digest``). Adding a stage: an entry here, ``run_<name>`` in its module,
``workflow/rules/<name>.smk``, and its test (docs/architecture.md).

Nothing heavy is imported here: config.py, the CLI and the Snakefile import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .errors import LinkstyleError


class Wildcard(NamedTuple):
    """A wildcard of a stage: the CLI option ``--<name>`` of type ``type``."""

    name: str
    type: type
    help: str

    @property
    def rule_name(self) -> str:
        """The rule's wildcard (``{wildcards.<rule_name>}``) that fills this option."""
        return RULE_WILDCARDS.get(self.name, self.name)


#: CLI options whose rule wildcard is spelled otherwise (the rules' paths use ``{clf}``).
RULE_WILDCARDS = {"classifier": "clf"}

CLASSIFIER = Wildcard("classifier", str, "classifier name from the config")
CLS = Wildcard("cls", int, "class index")
SAMPLE_SHARD = Wildcard("shard", int, "sample shard index")
UNIT_SHARD = Wildcard("shard", int, "unit shard index")


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    ``sections``: the config sections (or single ``section.key`` entries) the stage reads; their digest
    is its rule's rerun param and the record in its artifacts, so a change reruns exactly the stages
    that read it and a stale artifact is refused when read. ``format``: the version of its artifacts'
    layout, part of that digest (None: never changed), so that results of an older linkstyle are rerun by
    Snakemake (and refused when read) instead of half-fitting; the stage's name is in no digest. ``alias``: the CLI spelling the stage had before
    its name was its rule's; still accepted (``label export`` is the ``label`` group's ``export``), and the
    spelling its rule's shell line keeps, because Snakemake reruns a rule whose shell text changed (rerun
    trigger ``code``), and renaming it would rerun every finished workflow from that stage on.
    ``recorded_as``: older stage names in artifacts' origin records, which readers still accept.
    """

    name: str
    module: str
    help: str
    wildcards: tuple[Wildcard, ...]
    sections: tuple[str, ...]
    format: int | None = None
    alias: str | None = None
    recorded_as: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        """What the rule's shell line runs after ``python -m linkstyle``: the alias if any, else the name."""
        return self.alias or self.name

    def shell(self) -> str:
        """The rule's shell line; its flags fill the stage's CLI options from the rule's wildcards."""
        flags = "".join(f" --{w.name} {{wildcards.{w.rule_name}}}" for w in self.wildcards)
        return f"python -m linkstyle {self.command} --config {{params.resolved}} --threads {{threads}}{flags} > {{log}} 2>&1"


_LABELS = ("seed", "generator", "classes", "measure.parts", "segmentation.export_images", "segmentation.sweep_images")

#: Every stage, in pipeline order.
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("train_classifier", "train",
          "Train a demo classifier on the built-in world (fails if held-out accuracy < train.min_accuracy), or plant "
          "units into a trained one (kind planted).",
          (CLASSIFIER,), ("seed", "generator", "train"), alias="train", recorded_as=("train",)),
    Stage("sample", "sample", "Draw the latents w of one shard of one class (fixed distinct seeds).",
          (CLS, SAMPLE_SHARD), ("seed", "generator", "sample")),
    Stage("extract", "extract",
          "Render one sample shard and record every classifier's features r, prediction and probability.",
          (CLS, SAMPLE_SHARD), ("seed", "generator", "classifiers", "precision")),
    # Of tune, select reads the sweep bounds only: a new shard size or direction keeps the selection
    # (and so the link, counterfactuals and every shard's sweeps that do not change).
    Stage("select", "select",
          "Keep a classifier's correctly classified samples, split train/test by seed, set sweep bounds.",
          (CLASSIFIER,), ("select", "tune.bounds", "tune.percentiles")),
    # link 2: the link model holds the back map w -> r.
    Stage("link", "link",
          "Fit r -> w by OLS and by ridge (CV); report R^2, cosine, cycle consistency and CKA on the test split.",
          (CLASSIFIER,), ("link", "precision"), format=2),
    # tune 2: sweeps along tune.direction, with each unit's R^2 from w.
    Stage("tune", "tune", "Sweep every unit of one unit shard over its range, render, and record the realised activation.",
          (CLASSIFIER, UNIT_SHARD), ("tune", "precision"), format=2),
    # The labelling loop reads single keys, so that pointing segmentation.labels at your maps keeps
    # the exported images, and tuning the training keeps both.
    Stage("label_export", "segment",
          "Render segmentation.export_images images (and segmentation.sweep_images from the sweeps) into "
          "<run>/labels/images/, and their exact masks into labels/truth/ on the built-in world.",
          (), _LABELS, alias="label export"),
    Stage("label_import", "segment",
          "Check the PNG label maps in segmentation.labels against the exported images and measure.parts, "
          "and pack them for training.",
          (), (*_LABELS, "segmentation.labels", "segmentation.min_labelled"), alias="label import"),
    Stage("train_segmenter", "segment",
          "Train the few-shot part segmenter on the imported label maps (and score it on held-out "
          "exact masks on the built-in world).",
          (), ("seed", "generator", "classes", "measure.parts", "segmentation"), alias="train-segmenter"),
    # measure 2: entropy inside the part, CIELAB colour; 3: entropy of the part's relative grey (brightness-free).
    Stage("measure", "measure", "Measure area, luminance, entropy, ellipse and motion of every part in one tuned shard.",
          (CLASSIFIER, UNIT_SHARD), ("measure",), format=3),
    # The spreads that scale every unit's changes: the segmentation and measures, and how many images.
    # reference 2: the measures of measure 3.
    Stage("reference", "reference",
          "Render, segment and measure linked held-out samples: the spread of every property that scales "
          "each unit's changes.",
          (CLASSIFIER,), ("seed", "measure", "selectivity.reference_images", "generator.batch_size", "precision"),
          format=2),
    # selectivity 2: effects in reference spreads, ranked explanations with bootstrap confidence, gain;
    # 3: the backdrop's shape leaves the explanations; 4: recovery's label_in_truth_top3; 5: each label's
    # share of bootstrap resamples (label_share) and recovery's agreement of settled labels; 6: recovery's
    # chance level of the top 3 (chance_top3_concept_agreement); 7: a half turn of a measured angle or hue is no change (NaN).
    Stage("selectivity", "selectivity",
          "Reduce all measured shards to per-unit changes, faithfulness, concept labels and population shares.",
          (CLASSIFIER,), ("seed", "selectivity"), format=7),
    Stage("counterfactual", "counterfactual",
          "Find feature shifts that make the rendered image change class, for every configured class pair, "
          "and what they change.",
          (CLASSIFIER,), ("counterfactual", "generator.batch_size", "precision")),
    # and the report's units swept from one start along every direction (tune's steps, bounds, batches);
    # actmax 2: with the units' sweeps along every direction.
    Stage("actmax", "actmax",
          "Activation maximisation (the baseline visualisation): optimise one image per unit of actmax.units "
          "so that the unit rises, no generator involved.",
          (CLASSIFIER,), ("actmax", "report.top_units", "selectivity", "tune.n_steps", "tune.batch_size", "precision"),
          format=2),
    Stage("atlas", "atlas", "Write the unit atlas: a static site of every unit of every classifier that opens from disk.",
          (), ("tune",)),
    Stage("report", "report", "Draw the figures and write report.html and summary.json.", (), ("report",)),
)}


class UnknownStage(LinkstyleError, KeyError):
    """A stage name that is no stage's name, alias or former name."""

    def __str__(self) -> str:
        return str(self.args[0])


def stage(name: str) -> Stage:
    """The stage called ``name``: its name, its CLI alias, or a name its artifacts recorded before."""
    if name in STAGES:
        return STAGES[name]
    for s in STAGES.values():
        if name == s.alias or name in s.recorded_as:
            return s
    raise UnknownStage(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
