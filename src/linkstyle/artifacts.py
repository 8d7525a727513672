"""What each artifact holds and which stage makes it: the contract between a writer and its readers.

Writers record ``origin(cfg, stage, ...)`` in what they write. Every artifact that is read is declared
once in ``ARTIFACTS`` (its RunPaths method, the stage that makes it, its format and spec), and read
through ``read(cfg, kind, ...)`` (``Context.read`` in the stages), which places it, expects that stage's
origin and checks that spec: an artifact from another stage, another config, or a damaged file is
refused with a message that names the file and the command that remakes it (see ``io.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, NamedTuple, Sequence, Union

import numpy as np

from .config import Config
from .errors import LinkstyleError
from .io import Array, Columns, Origin, read_json, read_npz, read_parquet
from .paths import RunPaths
from .registry import STAGES
from .registry import stage as find_stage
from .units import TRAINED_BY_WORKFLOW, counterfactual_classifiers, unit_shards


def origin(cfg: Config, stage: str, **wildcards: object) -> Origin:
    """The origin of an artifact of ``stage`` (registry.STAGES); ``wildcards`` are that stage's CLI options."""
    made_by = find_stage(stage)
    options = "".join(f" --{k} {v}" for k, v in wildcards.items())
    remake = f"linkstyle {made_by.name}{options} --config {RunPaths(cfg.run_dir).config}"
    return Origin(made_by.name, made_by.sections, cfg.stage_digest(made_by.name), remake, made_by.recorded_as,
                  tuple((k, str(v)) for k, v in wildcards.items()))


_ROWS = ("n",)

SAMPLES: dict[str, Array] = {
    "seed": Array("int64", _ROWS),
    "cls": Array("int64", _ROWS),
    "z": Array("f", ("n", None)),
    "w": Array("f", ("n", "w_dim")),
}

EXTRACT_TABLE: Columns = {
    "seed": "i", "cls": "i", "classifier": "str", "pred": "i", "prob_pred": "f", "prob_true": "f", "correct": "b",
}


def extract_arrays(classifiers: Iterable[str]) -> dict[str, Array]:
    """One feature array per classifier, all over the same samples."""
    return {
        "seed": Array("int64", _ROWS),
        "w": Array("f", ("n", "w_dim")),
        **{f"r__{name}": Array("f", ("n", None)) for name in classifiers},
    }


SELECT_TABLE: Columns = {"seed": "i", "cls": "i", "pred": "i", "prob_pred": "f", "split": "str", "start": "b"}

SELECT_ARRAYS: dict[str, Array] = {
    "seed": Array("int64", _ROWS),
    "w": Array("f", ("n", "w_dim")),
    "r": Array("f", ("n", "units")),
    "unit_low": Array("f", ("units",)),
    "unit_high": Array("f", ("units",)),
}

LINK_MODEL: dict[str, Array] = {
    "coef": Array("f", ("units", "w_dim")),
    "intercept": Array("f", ("w_dim",)),
    "method": Array("U", ()),
    "alpha": Array("f", ()),
    # w -> r, for counterfactuals (linking.LinearLink.back)
    "back_coef": Array("f", ("w_dim", "units")),
    "back_intercept": Array("f", ("units",)),
    "back_alpha": Array("f", ()),
}

LINK_METRICS = ("n_train", "n_test", "ols", "ridge", "geometry")
CLASSIFIER_METRICS = ("heldout_accuracy",)

TUNE_TABLE: Columns = {
    "unit": "i", "start": "i", "start_seed": "i", "cls": "i", "step": "i",
    "target": "f", "realised": "f", "pred": "i", "prob_cls": "f", "unit_r2": "f",
}

#: Images are uint8 NHWC; label maps (masks) hold a part index per pixel, one map per image.
TUNE_ARRAYS: dict[str, Array] = {
    "unit": Array("i", _ROWS),
    "start": Array("i", _ROWS),
    "step": Array("i", _ROWS),
    "w": Array("f", ("n", None)),
    "images": Array("uint8", ("n", "height", "width", 3)),
    "masks": Array("uint8", ("n", "height", "width"), optional=True),
    "part_names": Array("U", ("parts",), optional=True),
}


def measure_table() -> Columns:
    """Built on call: the property list lives in measures.py, which imports scikit-image."""
    from .measures import PROPERTIES

    return {"unit": "i", "start": "i", "step": "i", "masks": "category", "part": "category", "present": "b",
            **{p: "f" for p in PROPERTIES}, "truth_iou": "f"}


REFERENCE_SPREAD: Columns = {
    "masks": "str", "kind": "str", "part": "str", "property": "str", "spread": "f", "n": "i",
}

SELECTIVITY_FEATURES: Columns = {
    "unit": "i", "kind": "str", "part": "str", "property": "str", "delta": "f", "delta_std": "f",
    "ci_low": "f", "ci_high": "f", "confidence": "f", "sign_agreement": "f", "n_starts": "i", "faithful": "b",
}

SELECTIVITY_UNITS: Columns = {
    "unit": "i", "n_starts": "i", "faithfulness": "f", "faithful": "b", "realised_rise": "f", "rise_ratio": "f",
    "gain": "f", "weak_sweep": "b", "monotonic": "f", "class_kept": "f", "top_part": "str", "top_property": "str",
    "top_confidence": "f", "top_delta_std": "f", "top_agreement": "f", "selectivity_index": "f", "concept": "str",
    "selective": "b", "label_share": "f", "concepts": "str", "n_concepts": "i", "motion_part": "str", "motion": "f",
    "motion_direction": "f",
}

SELECTIVITY_EXPLANATIONS: Columns = {
    "unit": "i", "rank": "i", "part": "str", "property": "str", "sign": "str", "effect": "f", "ci_low": "f",
    "ci_high": "f", "confidence": "f", "concept": "str",
}

SELECTIVITY_PLANTED: Columns = {
    "masks": "str", "unit": "i", "name": "str", "group": "str", "kind": "str", "label": "str", "hit": "b",
    "hit_rank": "i", "expected": "str",
}

SELECTIVITY_POPULATION: Columns = {
    "classifier": "str", "part": "str", "property": "str", "n_units": "i", "n_faithful": "i", "n_selective": "i",
    "n_selective_faithful": "i", "share": "f", "share_faithful": "f",
}

SELECTIVITY_RECOVERY: Columns = {
    "classifier": "str", "masks": "str", "part": "str", "n_units": "i", "n_labelled": "i", "part_agreement": "f",
    "concept_agreement": "f", "top3_concept_agreement": "f", "chance_part_agreement": "f",
    "chance_concept_agreement": "f", "chance_top3_concept_agreement": "f", "swept_iou": "f", "label_agreement_with_truth": "f", "label_in_truth_top3": "f",
    "settled_share": "f", "label_agreement_settled": "f",
}

COUNTERFACTUAL_ITEMS: Columns = {
    "item": "i", "origin": "i", "target": "i", "origin_name": "str", "target_name": "str", "seed": "i",
    "split": "str", "success": "b", "steps": "i", "l1": "f", "l1_relative": "f", "l0": "i", "cosine": "f",
    "image_distance": "f", "conf_origin_before": "f", "conf_origin_after": "f", "conf_target_before": "f",
    "conf_target_after": "f", "pred_before": "i", "pred_after": "i", "top_units": "str", "image": "i",
}

#: ``images_*`` hold the stored items only (``image_item``: their item numbers).
COUNTERFACTUAL_ARRAYS: dict[str, Array] = {
    "item": Array("i", _ROWS),
    "shift": Array("f", ("n", "units")),
    "w_before": Array("f", ("n", "w_dim")),
    "w_after": Array("f", ("n", "w_dim")),
    "top_units": Array("i", ("n", None)),
    "image_item": Array("i", ("images",)),
    "images_before": Array("uint8", ("images", "height", "width", 3)),
    "images_after": Array("uint8", ("images", "height", "width", 3)),
}

COUNTERFACTUAL_DRIVERS: Columns = {
    "origin": "i", "target": "i", "rank": "i", "unit": "i", "count": "i", "fraction": "f", "mean_shift": "f",
    "mean_shift_when_top": "f",
}

COUNTERFACTUAL_FACTORS: Columns = {
    "origin": "i", "target": "i", "factor": "str", "change": "f", "separation": "f", "rank_change": "i",
    "rank_separation": "i",
}

COUNTERFACTUAL_METRICS = ("classifier", "items", "success_rate", "pairs")

ACTMAX_TABLE: Columns = {
    "unit": "i", "activation": "f", "observed_high": "f", "steps": "i",
}

ACTMAX_ARRAYS: dict[str, Array] = {
    "unit": Array("i", _ROWS),
    "images": Array("uint8", ("n", "height", "width", 3)),
    "activation": Array("f", _ROWS),
    "history": Array("f", ("n", None)),
    # the same units swept from the first start sample along every sweep direction (sweep.DIRECTIONS)
    "directions": Array("U", ("directions",)),
    "direction_images": Array("uint8", ("directions", "n", "steps", "height", "width", 3)),
    "direction_gain": Array("f", ("directions", "n")),
}


def unit_sweep_images(arrays: Mapping[str, np.ndarray], unit: int, starts: int) -> np.ndarray:
    """The images of ``unit``'s sweeps in tune arrays (TUNE_ARRAYS): from its first ``starts`` start samples
    (fewer where fewer were swept), ordered by start, then step: [found starts * tune.n_steps, H, W, 3]."""
    rows = np.flatnonzero((arrays["unit"] == unit) & (arrays["start"] < starts))
    return arrays["images"][rows[np.lexsort((arrays["step"][rows], arrays["start"][rows]))]]


# ----------------------------------------------------------------------------- the artifact registry

#: What a reader checks: NPZ arrays, table columns, JSON keys, or a builder of either from the config
#: (for specs that depend on it, or that import something heavy); None: nothing beyond the origin.
Spec = Union[Mapping[str, Array], Sequence[str], Callable[[Config], Mapping[str, Any]], None]


@dataclass(frozen=True)
class Artifact:
    """One kind of artifact. ``path``: the RunPaths method (or property, for a stage without wildcards)
    that places it, and the kind's name; its arguments are the producing ``stage``'s wildcards
    (registry.Stage.wildcards), in order, which are also the CLI options its origin's remake command names.
    ``format``: how it is stored; ``spec``: NPZ arrays (npz), columns (parquet) or keys (json)."""

    path: str
    stage: str
    format: Literal["npz", "parquet", "json"]
    spec: Spec = None

    @property
    def wildcards(self) -> tuple[str, ...]:
        return tuple(w.name for w in STAGES[self.stage].wildcards)

    def spec_for(self, cfg: Config) -> Any:
        return self.spec(cfg) if callable(self.spec) else self.spec

    def place(self, paths: RunPaths, **wildcards: object) -> Path:
        """Its file in the run at ``paths``, for exactly its stage's ``wildcards`` (by their CLI names)."""
        if set(wildcards) != set(self.wildcards):
            raise TypeError(f"artifact '{self.path}' (stage {self.stage}) takes wildcards {self.wildcards}, "
                            f"got {tuple(wildcards)}")
        where = getattr(paths, self.path)
        return where(*(wildcards[w] for w in self.wildcards)) if self.wildcards else where


def _extract_arrays(cfg: Config) -> dict[str, Array]:
    return extract_arrays(c.name for c in cfg.classifiers)


def _measure_table(cfg: Config) -> Columns:
    return measure_table()


#: Every artifact a stage reads, by kind (= its RunPaths method). A new artifact: its path in paths.py,
#: its spec above, its entry here; its writer records ``ctx.origin(<stage>, ...)`` and its readers call
#: ``ctx.read(<kind>, ...)``.
ARTIFACTS: dict[str, Artifact] = {a.path: a for a in (
    Artifact("classifier_metrics", "train_classifier", "json", CLASSIFIER_METRICS),
    Artifact("planted_spec", "train_classifier", "json", ("units",)),
    Artifact("samples", "sample", "npz", SAMPLES),
    Artifact("extract_table", "extract", "parquet", EXTRACT_TABLE),
    Artifact("extract_arrays", "extract", "npz", _extract_arrays),
    Artifact("select_table", "select", "parquet", SELECT_TABLE),
    Artifact("select_arrays", "select", "npz", SELECT_ARRAYS),
    Artifact("link_model", "link", "npz", LINK_MODEL),
    Artifact("link_metrics", "link", "json", LINK_METRICS),
    Artifact("tune_table", "tune", "parquet", TUNE_TABLE),
    Artifact("tune_arrays", "tune", "npz", TUNE_ARRAYS),
    Artifact("label_latents", "label_export", "npz"),
    Artifact("segmenter_labels", "label_import", "npz"),
    Artifact("measure_table", "measure", "parquet", _measure_table),
    Artifact("reference_spread", "reference", "parquet", REFERENCE_SPREAD),
    Artifact("selectivity_features", "selectivity", "parquet", SELECTIVITY_FEATURES),
    Artifact("selectivity_units", "selectivity", "parquet", SELECTIVITY_UNITS),
    Artifact("selectivity_explanations", "selectivity", "parquet", SELECTIVITY_EXPLANATIONS),
    Artifact("selectivity_planted", "selectivity", "parquet", SELECTIVITY_PLANTED),
    Artifact("selectivity_population", "selectivity", "parquet", SELECTIVITY_POPULATION),
    Artifact("selectivity_recovery", "selectivity", "parquet", SELECTIVITY_RECOVERY),
    Artifact("counterfactual_items", "counterfactual", "parquet", COUNTERFACTUAL_ITEMS),
    Artifact("counterfactual_arrays", "counterfactual", "npz", COUNTERFACTUAL_ARRAYS),
    Artifact("counterfactual_drivers", "counterfactual", "parquet", COUNTERFACTUAL_DRIVERS),
    Artifact("counterfactual_factors", "counterfactual", "parquet", COUNTERFACTUAL_FACTORS),
    Artifact("counterfactual_metrics", "counterfactual", "json", COUNTERFACTUAL_METRICS),
    Artifact("actmax_table", "actmax", "parquet", ACTMAX_TABLE),
    Artifact("actmax_arrays", "actmax", "npz", ACTMAX_ARRAYS),
)}


class Located(NamedTuple):
    """One artifact of a run: its kind, its file, the origin it must record, and its spec (for this config)."""

    artifact: Artifact
    path: Path
    origin: Origin
    spec: Any

    def read(self, *, only: Iterable[str] | None = None, dims: Mapping[str, int] | None = None,
             columns: list[str] | None = None) -> Any:
        """Read and check it against its kind's spec: NPZ arrays as a dict (``only``: check just these of
        the spec's arrays; ``dims``: sizes the arrays must have), a Parquet table as a DataFrame
        (``columns``: read only these), JSON as what it holds."""
        kind, spec = self.artifact, self.spec
        if kind.format == "npz":
            if only is not None:
                spec = {k: (spec or {})[k] for k in only}
            return read_npz(self.path, origin=self.origin, arrays=spec, dims=dims)
        if only is not None or dims is not None or (columns is not None and kind.format != "parquet"):
            raise TypeError(f"artifact '{kind.path}' ({kind.format}): only, dims and columns do not apply")
        if kind.format == "parquet":
            return read_parquet(self.path, columns, origin=self.origin, schema=spec)
        return read_json(self.path, origin=self.origin, keys=spec or ())


def locate(cfg: Config, kind: str, **wildcards: object) -> Located:
    """Artifact ``kind`` (an ARTIFACTS key) of ``cfg``'s run at ``wildcards`` (its stage's wildcards by their
    CLI names, e.g. ``classifier=, shard=``): where it is and the origin it must record."""
    if kind not in ARTIFACTS:
        raise LinkstyleError(f"unknown artifact '{kind}'; artifacts: {', '.join(ARTIFACTS)}")
    art = ARTIFACTS[kind]
    path = art.place(RunPaths(cfg.run_dir), **wildcards)
    return Located(art, path, origin(cfg, art.stage, **{w: wildcards[w] for w in art.wildcards}), art.spec_for(cfg))


#: Every figure of a run: (file stem, classifier or None, report category). The report stage draws
#: exactly these (PNG for the report, PDF for papers) and the report rule declares them, each with
#: its caption (figure_caption) for `snakemake --report` and report.html.
FIGURE_KINDS = (
    ("linking", False, "Linking"),
    ("sweeps", True, "Units"),
    ("selectivity", True, "Units"),
    ("population", True, "Population"),
    ("population-compare", False, "Population"),
    ("actmax", True, "Units"),
    ("directions", True, "Units"),
    ("counterfactuals", True, "Counterfactuals"),
    ("counterfactual-pairs", True, "Counterfactuals"),
    ("concept-recovery", False, "Ground truth"),
)

#: Where each figure kind's caption lives, inside the package: ``<CAPTIONS>/<kind>.rst`` (package data),
#: the one text that `snakemake --report` (workflow/rules/common.smk) and report.html both show.
CAPTIONS = "templates/captions"


def figure_caption(kind: str) -> str:
    """The caption of a figure kind, as reStructuredText (one paragraph: **strong** and ``literal`` markup)."""
    return resources.files("linkstyle").joinpath(f"{CAPTIONS}/{kind}.rst").read_text(encoding="utf-8")


def figure_files(cfg: Config) -> list[tuple[str, str, str, str | None]]:
    """(file name without suffix, kind, category, classifier) of every figure the report draws for ``cfg``."""
    out = []
    for kind, per_classifier, category in FIGURE_KINDS:
        if kind == "concept-recovery" and not cfg.generator.has_ground_truth:
            continue  # ground truth only on the built-in world
        if per_classifier:
            out += [(f"{kind}-{c.name}", kind, category, c.name) for c in cfg.classifiers
                    if category != "Counterfactuals" or c.name in counterfactual_classifiers(cfg)]
        else:
            out.append((kind, kind, category, None))
    return out


class ReportInput(NamedTuple):
    """An artifact the report stage reads, and the stage (with its wildcards) that makes it."""

    path: Path
    stage: str
    wildcards: dict[str, object]


def report_inputs(cfg: Config) -> list[ReportInput]:
    """Everything the report reads: the report rule's inputs (workflow/rules/report.smk), and what the
    report stage checks before it draws anything (stages/report.require_inputs)."""
    paths, names = RunPaths(cfg.run_dir), [c.name for c in cfg.classifiers]

    def needs(kind: str, **wildcards: object) -> ReportInput:
        return ReportInput(ARTIFACTS[kind].place(paths, **wildcards), ARTIFACTS[kind].stage, wildcards)

    def each(classifiers: Iterable[str], *kinds: str) -> list[ReportInput]:
        return [needs(kind, classifier=c) for kind in kinds for c in classifiers]

    return [
        *each([c.name for c in cfg.classifiers if c.kind in TRAINED_BY_WORKFLOW], "classifier_metrics"),
        *each(names, "link_metrics"),
        *each(names, "selectivity_units", "selectivity_features", "selectivity_population", "selectivity_recovery",
              "selectivity_planted", "selectivity_explanations"),
        *[needs("tune_arrays", classifier=c, shard=s) for c in names for s in range(len(unit_shards(cfg, c)))],
        *each(counterfactual_classifiers(cfg), "counterfactual_items", "counterfactual_arrays", "counterfactual_drivers",
              "counterfactual_factors", "counterfactual_metrics"),
        *each(names, "actmax_table", "actmax_arrays"),
    ]
