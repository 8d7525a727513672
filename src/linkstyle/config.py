"""Configuration: one JSON schema, validated before any work starts, read into frozen dataclasses.

The schema (``schemas/config.schema.yaml``, also at ``workflow/schemas/``) is the single
source of keys, defaults and descriptions; Snakemake and the CLI both go through
:func:`load_config`, so a bad key fails the same way in both, before any job runs.

One merge, everywhere: the schema's defaults, then the config files in the order given. With no
file, the workflow and the CLI take the built-in world (:data:`BUILTIN_CONFIG`); a file given
replaces it rather than being laid over it, so a preset never inherits the built-in world's
settings (e.g. its counterfactual loss weights) for keys it leaves out.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import jsonschema
import yaml

from .class_names import CRITTER_NAMES, class_index, known_class_names
from .errors import LinkstyleError
from .registry import STAGES

#: The built-in world: what ``snakemake`` and ``linkstyle`` run when no config file is given.
BUILTIN_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"

#: Sample seeds of the analysis stay below this; demo-classifier training draws above it.
ANALYSIS_SEED_LIMIT = 2**31
SEEDS_PER_CLASS = 1_000_000
CRITTERS_MAX_CLASSES = len(CRITTER_NAMES)
#: Penultimate width of each demo architecture (checked against torchvision by the tests).
# Generator kinds by what they can do; code asks for a capability (GeneratorConfig.has_ground_truth),
# never for a kind by name, so a new world with ground truth is one entry here.
GROUND_TRUTH_KINDS = frozenset({"critters"})
BUILTIN_KINDS = frozenset({"critters"})
DEMO_UNITS = {"resnet18": 512, "regnet_x_400mf": 400, "mobilenet_v3_small": 1024}
DEMO_ARCHS = tuple(DEMO_UNITS)
#: The config sections (or single ``section.key`` entries) each stage reads, and the format versions of
#: stages whose artifacts changed shape: both from the stage registry (registry.STAGES), which says why.
#: The rules pass ``stage_digest(stage)`` as a param, so a change reruns exactly the stages that read it,
#: and every artifact records the same digest, so a stale artifact is refused when read.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {s.name: s.sections for s in STAGES.values()}
STAGE_FORMATS: dict[str, int] = {s.name: s.format for s in STAGES.values() if s.format is not None}


class ConfigError(LinkstyleError, ValueError):
    """A configuration problem, phrased so the user knows which key to change and how."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("linkstyle").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_class: type) -> type:
    """A validator that fills in each property's default before validating it."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from validate_properties(validator, properties, instance, subschema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _describe(schema_root: dict[str, Any], path: list[Any]) -> str:
    node: dict[str, Any] = schema_root
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    return str(node.get("description", "")).strip()


def _key(path: list[Any]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[") or "<top level>"


def validate(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``raw`` against the schema, fill defaults, and check cross-key rules.

    Returns a new dict; raises :class:`ConfigError` listing every problem.
    """
    cfg = copy.deepcopy(dict(raw or {}))
    root = schema()
    errors = sorted(_Validator(root).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            path = list(err.absolute_path)
            if err.validator == "additionalProperties":
                allowed = sorted(err.schema.get("properties", {}))
                unknown = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
                lines.append(f"{_key(path)}: {err.message}; allowed keys: {', '.join(allowed)}{did_you_mean(unknown, allowed)}")
                continue
            if err.validator == "enum":
                valid = [str(v) for v in err.validator_value]
                typo = [err.instance] if isinstance(err.instance, str) else []
                lines.append(
                    f"{_key(path)}: {err.instance!r} is not allowed; valid values: " + ", ".join(valid) + did_you_mean(typo, valid)
                )
                continue
            message = err.message
            # Of alternatives (tune.units: 'all' or a list), report what broke in the one of the value's type.
            wrong_type = {e.relative_schema_path[0] for e in err.context or [] if e.validator == "type" and not e.relative_path}
            same_type = [e for e in err.context or [] if e.relative_schema_path[0] not in wrong_type]
            if err.validator in ("oneOf", "anyOf") and same_type:
                message = jsonschema.exceptions.best_match(same_type).message
            if err.validator == "minItems":
                message = f"{err.instance!r} has {len(err.instance)} entries, at least {err.validator_value} needed"
            hint = _describe(root, [p for p in path])
            lines.append(f"{_key(path)}: {message}" + (f" ({hint})" if hint else ""))
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(lines))
    _check_cross_keys(cfg)
    return cfg


def did_you_mean(given: list[str], valid: list[str]) -> str:
    """'; did you mean 'n_steps'?' for near misses, so a typo is fixed without reading the schema."""
    pairs = [(g, m[0]) for g in given if (m := difflib.get_close_matches(g, valid, n=1, cutoff=0.6))]
    if not pairs:
        return ""
    if len(given) == 1:
        return f"; did you mean '{pairs[0][1]}'?"
    return "; did you mean " + ", ".join(f"'{m}' for '{g}'" for g, m in pairs) + "?"


#: ``counterfactual.pairs: all`` makes n * (n - 1) pairs; beyond this many classes, list them ('auto' takes the
#: pairs among the first this many classes).
MAX_CLASSES_FOR_ALL_PAIRS = 10


def _counterfactual_problems(cfg: dict[str, Any]) -> list[str]:
    """Pairs given as indices, and as names where the names are known without weights (class_names.py),
    are checked here, so a typo fails before any job; other names are checked by the stage."""
    pairs = cfg["counterfactual"]["pairs"]
    classes = cfg["classes"] if cfg["classes"] is not None else list(range(cfg["generator"]["num_classes"]))
    if pairs == "auto":
        return []
    if pairs == "all":
        if len(classes) > MAX_CLASSES_FOR_ALL_PAIRS:
            return [f"counterfactual.pairs: 'all' would make {len(classes) * (len(classes) - 1)} pairs of the "
                    f"{len(classes)} analysed classes (at most {MAX_CLASSES_FOR_ALL_PAIRS} classes); list the pairs, "
                    "e.g. [[207, 208], [208, 207]], or use 'auto' (the pairs among the first "
                    f"{MAX_CLASSES_FOR_ALL_PAIRS} classes)"]
        return []
    problems = []
    names = known_class_names(cfg["generator"]) if any(isinstance(v, str) for pair in pairs for v in pair) else None
    for i, pair in enumerate(pairs):
        for end, given in zip(("origin", "target"), pair):
            value, shown = given, f"{given}"
            if isinstance(given, str) and names is not None:
                found = class_index(given, names)
                if found is None:
                    owner = "critters world's" if cfg["generator"]["kind"] == "critters" else "generator's"
                    shown_names = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                    problems.append(f"counterfactual.pairs[{i}]: unknown {end} class name {given!r}; the "
                                    f"{owner} {len(names)} classes are {shown_names}"
                                    + did_you_mean([given], list(names)))
                    continue
                value = found
                shown = f"{given!r} (index {value})"
            if isinstance(value, int) and value not in classes:
                problems.append(f"counterfactual.pairs[{i}]: {end} class {shown} is not among the analysed classes "
                                f"{_short(classes)} (key 'classes')")
        if pair[0] == pair[1]:
            problems.append(f"counterfactual.pairs[{i}]: origin and target are both {pair[0]!r}; a counterfactual "
                            "needs another class to reach")
    return problems


def _short(values: list[int], limit: int = 12) -> str:
    return str(values) if len(values) <= limit else f"[{', '.join(map(str, values[:limit]))}, ...]"


def _planted_problems(cfg: dict[str, Any], i: int) -> list[str]:
    """``base`` and ``units: planted`` of classifier entry ``i``: a planted classifier extends a demo one."""
    clf = cfg["classifiers"][i]
    kind, base = clf["kind"], clf["base"]
    demos = [c["name"] for c in cfg["classifiers"] if c["kind"] == "demo"]
    example = f"base: {demos[0]}" if demos else "base: resnet18, with {name: resnet18, kind: demo, arch: resnet18} in classifiers"
    problems = []
    if clf["units"] == "planted" and kind != "planted":
        problems.append(f"classifiers[{i}].units: 'planted' selects the planted units of kind 'planted'; classifier "
                        f"'{clf['name']}' has kind '{kind}': use 'all', a list of unit indices, or null (tune.units)")
    if kind != "planted":
        if base is not None:
            problems.append(f"classifiers[{i}].base: only kind 'planted' extends a base classifier; remove it from "
                            f"'{clf['name']}' (kind '{kind}')")
        return problems
    if cfg["generator"]["kind"] not in GROUND_TRUTH_KINDS:
        problems.append(f"classifiers[{i}]: kind 'planted' reads the critters world's colours and factors; it cannot "
                        f"run with generator '{cfg['generator']['kind']}'")
    if base is None:
        problems.append(f"classifiers[{i}].base: required for kind 'planted': the name of a kind 'demo' classifier of "
                        f"this config whose network the planted units extend, e.g. {example}")
        return problems
    entry = next((c for c in cfg["classifiers"] if c["name"] == base), None)
    if entry is None:
        problems.append(f"classifiers[{i}].base: '{base}' is not a classifier of this config (configured: "
                        f"{', '.join(c['name'] for c in cfg['classifiers'])}); name a kind 'demo' classifier, e.g. {example}")
    elif entry["kind"] != "demo":
        problems.append(f"classifiers[{i}].base: '{base}' has kind '{entry['kind']}', but a planted classifier extends "
                        f"a kind 'demo' classifier (trained by the workflow on the critters world), e.g. {example}")
    return problems


def _check_cross_keys(cfg: dict[str, Any]) -> None:
    problems = []
    gen = cfg["generator"]
    if cfg["classes"] is not None:
        bad = [c for c in cfg["classes"] if c >= gen["num_classes"]]
        if bad:
            problems.append(
                f"classes: {bad} out of range; generator '{gen['kind']}' has num_classes="
                f"{gen['num_classes']} (valid indices 0..{gen['num_classes'] - 1})"
            )
    if gen["kind"] == "critters" and gen["num_classes"] > CRITTERS_MAX_CLASSES:
        problems.append(f"generator.num_classes: the critters world has at most {CRITTERS_MAX_CLASSES} species, got {gen['num_classes']}")
    for key in {"stylegan": ("pickle", "repo"), "biggan": ("weights_dir",)}.get(gen["kind"], ()):
        if not gen[key]:
            problems.append(f"generator.{key}: required for generator.kind '{gen['kind']}' ({_describe(schema(), ['generator', key])})")
    if gen["kind"] not in GROUND_TRUTH_KINDS and cfg["measure"]["segmenter"] == "ground_truth":
        problems.append(f"measure.segmenter: 'ground_truth' needs the critters world's exact masks; for {gen['kind']} use "
                        "'learned' (a few-shot segmenter on your label maps, docs/segmentation.md) or 'whole_image'")
    if gen["kind"] not in GROUND_TRUTH_KINDS and cfg["measure"]["segmenter"] == "learned" and not cfg["measure"]["parts"]:
        problems.append("measure.parts: required with measure.segmenter 'learned' on a real generator: the part names of "
                        "your label maps in the order of their pixel values, e.g. [background, body, head, leg, tail]")
    for i, clf in enumerate(cfg["classifiers"]):
        kind, arch = clf["kind"], clf["arch"]
        if kind == "demo" and arch not in DEMO_ARCHS:
            problems.append(f"classifiers[{i}].arch: '{arch}' is not a demo architecture; valid: {', '.join(DEMO_ARCHS)}")
        if kind == "demo" and gen["kind"] not in GROUND_TRUTH_KINDS:
            problems.append(f"classifiers[{i}]: kind 'demo' is trained on the critters world only; use torchvision or torchscript with '{gen['kind']}'")
        if kind == "torchscript" and not clf["path"]:
            problems.append(f"classifiers[{i}].path: required for kind 'torchscript' (the scripted module file)")
        if kind == "torchvision" and not clf["weights"]:
            problems.append(f"classifiers[{i}].weights: required for kind 'torchvision', e.g. IMAGENET1K_V1 or a state-dict path")
        if kind == "timm" and not clf["weights"] and not clf["allow_download"]:
            problems.append(f"classifiers[{i}].weights: required for kind 'timm' (a local .safetensors / .pth file)")
        problems += _planted_problems(cfg, i)
    names = [c["name"] for c in cfg["classifiers"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"classifiers: names must be unique, repeated: {dupes}")
    smp = cfg["sample"]
    if smp["per_class"] > SEEDS_PER_CLASS:
        problems.append(f"sample.per_class: at most {SEEDS_PER_CLASS} (seeds are laid out per class)")
    last = smp["first_seed"] + SEEDS_PER_CLASS * gen["num_classes"]
    if last > ANALYSIS_SEED_LIMIT:
        problems.append(
            f"sample.first_seed: {smp['first_seed']} makes analysis seeds reach {last}, past 2^31 where "
            "training seeds begin; choose a smaller first_seed"
        )
    problems += _counterfactual_problems(cfg)
    lo, hi = cfg["tune"]["percentiles"]
    if cfg["tune"]["bounds"] == "percentile" and not lo < hi:
        problems.append(f"tune.percentiles: lower ({lo}) must be below upper ({hi})")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- typed view


@dataclass(frozen=True)
class GeneratorConfig:
    kind: str
    num_classes: int
    resolution: int
    truncation_psi: float
    batch_size: int
    pickle: str | None = None
    repo: str | None = None
    weights_dir: str | None = None
    sha256: str | None = None

    @property
    def has_ground_truth(self) -> bool:
        """Exact part masks and generative factors for every image: truth validation, planted units,
        demo classifiers and automatic label maps need them."""
        return self.kind in GROUND_TRUTH_KINDS

    @property
    def is_builtin(self) -> bool:
        """Part of linkstyle: no weights or checkout to provide."""
        return self.kind in BUILTIN_KINDS


@dataclass(frozen=True)
class ClassifierConfig:
    name: str
    kind: str
    arch: str
    weights: str | None = None
    path: str | None = None
    num_units: int | None = None
    allow_download: bool = False
    # Out of repr, which is the train_classifier rule's rerun param (common.smk classifier_spec): the units analysed
    # never change a trained classifier, and older entries keep their param (common.smk train_spec adds base).
    base: str | None = field(default=None, repr=False)
    units: str | tuple[int, ...] | None = field(default=None, repr=False)
    sha256: str | None = field(default=None, repr=False)  # checked on load; never changes the network


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    truncation_psi: float
    eval_samples: int
    min_accuracy: float


@dataclass(frozen=True)
class SampleConfig:
    per_class: int
    per_shard: int
    first_seed: int

    @property
    def shards_per_class(self) -> int:
        return -(-self.per_class // self.per_shard)


@dataclass(frozen=True)
class SelectConfig:
    test_fraction: float
    starts_per_class: int
    max_per_class: int | None = None


@dataclass(frozen=True)
class LinkConfig:
    method: str
    ridge_alphas: tuple[float, ...]
    cv_folds: int
    cycle_samples: int
    min_test_r2: float = 0.0
    min_cycle_agreement: float | None = None


@dataclass(frozen=True)
class TuneConfig:
    units: str | tuple[int, ...]
    n_steps: int
    bounds: str
    percentiles: tuple[float, float]
    units_per_shard: int
    batch_size: int
    direction: str = "pattern"


@dataclass(frozen=True)
class MeasureConfig:
    segmenter: str
    entropy_radius: int
    min_fragment: float = 0.05
    parts: tuple[str, ...] | None = None
    validate_with_truth: bool = True


@dataclass(frozen=True)
class SegmentationConfig:
    export_images: int
    labels: str | None
    min_labelled: int
    features: str
    steps: int
    batch_size: int
    heldout_images: int
    sweep_images: int = 0


@dataclass(frozen=True)
class SelectivityConfig:
    faithful_min_spearman: float
    min_effect: float
    min_confidence: float
    min_selectivity: float
    min_gain: float
    bootstrap: int
    max_concepts: int
    reference_images: int


@dataclass(frozen=True)
class CounterfactualConfig:
    pairs: str | tuple[tuple[int | str, int | str], ...]
    samples_per_pair: int
    logits_from: str
    weight_target: float
    weight_origin: float
    weight_cosine: float
    weight_other: float
    cosine_halflife: float | None
    l1: float
    lr: float
    max_steps: int
    check_every: int
    top_units: int
    batch_size: int
    images_per_pair: int


@dataclass(frozen=True)
class ActmaxConfig:
    units: str | tuple[int, ...]
    steps: int
    lr: float
    decorrelate: bool
    transforms: bool
    redirect_steps: int
    batch_size: int


@dataclass(frozen=True)
class ReportConfig:
    top_units: int


@dataclass(frozen=True)
class Config:
    run: str
    results_dir: str
    device: str
    threads: int
    seed: int
    generator: GeneratorConfig
    classes: tuple[int, ...]
    classifiers: tuple[ClassifierConfig, ...]
    train: TrainConfig
    sample: SampleConfig
    select: SelectConfig
    link: LinkConfig
    tune: TuneConfig
    measure: MeasureConfig
    segmentation: SegmentationConfig
    selectivity: SelectivityConfig
    counterfactual: CounterfactualConfig
    actmax: ActmaxConfig
    report: ReportConfig
    precision: str = "fp32"
    raw: dict[str, Any] = field(repr=False, compare=False, hash=False, default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.results_dir) / self.run

    def classifier(self, name: str) -> ClassifierConfig:
        for clf in self.classifiers:
            if clf.name == name:
                return clf
        raise ConfigError(
            f"unknown classifier '{name}'; configured: {', '.join(c.name for c in self.classifiers)}"
        )

    def digest(self, *sections: str, format_version: int | None = None) -> str:
        """Short hash of some sections (top-level keys, or ``section.key`` for one key of a section)
        and of an artifact format version: Snakemake params use it to rerun only what changed."""

        def value(key: str) -> Any:
            head, _, tail = key.partition(".")
            section = self.raw.get(head)
            return section.get(tail) if tail and isinstance(section, Mapping) else section

        payload: dict[str, Any] = {s: value(s) for s in sorted(sections)}
        if format_version is not None:
            payload["__format__"] = format_version
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def stage_digest(self, stage: str) -> str:
        """The digest of the sections ``stage`` reads and of its format version (registry.STAGES; not of its
        name): its rule's param, and the record in its artifacts."""
        entry = STAGES[stage]
        return self.digest(*entry.sections, format_version=entry.format)


def from_dict(raw: Mapping[str, Any] | None) -> Config:
    cfg = validate(raw)
    gen = cfg["generator"]
    classes = tuple(cfg["classes"]) if cfg["classes"] is not None else tuple(range(gen["num_classes"]))
    tune = dict(cfg["tune"])
    tune["units"] = tune["units"] if tune["units"] == "all" else tuple(tune["units"])
    tune["percentiles"] = tuple(tune["percentiles"])
    link = dict(cfg["link"])
    link["ridge_alphas"] = tuple(float(a) for a in link["ridge_alphas"])
    return Config(
        run=cfg["run"],
        results_dir=cfg["results_dir"],
        device=cfg["device"],
        precision=cfg["precision"],
        threads=cfg["threads"],
        seed=cfg["seed"],
        generator=GeneratorConfig(**gen),
        classes=classes,
        classifiers=tuple(ClassifierConfig(**{**c, "units": c["units"] if c["units"] is None or isinstance(c["units"], str)
                                                else tuple(c["units"])}) for c in cfg["classifiers"]),
        train=TrainConfig(**cfg["train"]),
        sample=SampleConfig(**cfg["sample"]),
        select=SelectConfig(**cfg["select"]),
        link=LinkConfig(**link),
        tune=TuneConfig(**tune),
        measure=MeasureConfig(**{**cfg["measure"], "parts": tuple(cfg["measure"]["parts"]) if cfg["measure"]["parts"] else None}),
        segmentation=SegmentationConfig(**cfg["segmentation"]),
        selectivity=SelectivityConfig(**cfg["selectivity"]),
        counterfactual=CounterfactualConfig(**{
            **cfg["counterfactual"],
            "pairs": cfg["counterfactual"]["pairs"] if isinstance(cfg["counterfactual"]["pairs"], str)
            else tuple(tuple(p) for p in cfg["counterfactual"]["pairs"]),
        }),
        actmax=ActmaxConfig(**{**cfg["actmax"], "units": cfg["actmax"]["units"] if isinstance(cfg["actmax"]["units"], str)
                               else tuple(cfg["actmax"]["units"])}),
        report=ReportConfig(**cfg["report"]),
        raw=cfg,
    )


def load_config(path: str | Path | Sequence[str | Path] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Read YAML config files (one path, several merged in order, or none: all schema defaults),
    apply ``overrides`` on top, validate. A problem names the file and line that set the key."""
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    raw: dict[str, Any] = {}
    for one in paths:
        raw = deep_merge(raw, load_yaml(one))
    if overrides:
        raw = deep_merge(raw, overrides)
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(with_locations(str(exc), paths, overrides)) from None


def with_locations(message: str, files: Sequence[str | Path], overrides: Mapping[str, Any] | None = None,
                   overrides_flag: str = "--set") -> str:
    """Append `(file:line)` to each `  - key: problem` line of a config error, naming the last of
    ``files`` that sets the key (or its nearest parent), so a user edits the right line; a key that
    the command line's ``overrides`` set is named as such."""
    trees = []
    for f in files:
        try:
            trees.append((Path(f), yaml.compose(Path(f).read_text())))
        except (OSError, yaml.YAMLError):
            continue
    out = []
    for line in message.splitlines():
        key = line[4:].split(":", 1)[0] if line.startswith("  - ") else ""
        where = [f"{f}:{hit}" for f, tree in trees if key and (hit := _line_of(tree, key)) is not None]
        if key and overrides and _sets(overrides, key):
            where.append(overrides_flag)
        out.append(f"{line} ({where[-1]})" if where else line)
    return "\n".join(out)


def _key_parts(key: str) -> list[str]:
    return [p for p in key.replace("[", ".[").split(".") if p]


def _sets(mapping: Any, key: str) -> bool:
    """Whether the nested ``mapping`` holds the whole dotted ``key``."""
    for part in _key_parts(key):
        if isinstance(mapping, list) and part.startswith("[") and part[1:-1].isdigit() and int(part[1:-1]) < len(mapping):
            mapping = mapping[int(part[1:-1])]
        elif isinstance(mapping, Mapping) and part in mapping:
            mapping = mapping[part]
        else:
            return False
    return True


def _line_of(node: Any, key: str) -> int | None:
    """1-based line of the deepest node on the dotted ``key`` (e.g. `counterfactual.pairs[0]`) that
    the YAML tree holds; None when not even its first part is there."""
    line = None
    for part in _key_parts(key):
        if isinstance(node, yaml.SequenceNode) and part.startswith("[") and part[1:-1].isdigit():
            items = node.value
            index = int(part[1:-1])
            if index >= len(items):
                break
            node = items[index]
        elif isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not match:
                break
            node = match[-1][1]
            line = match[-1][0].start_mark.line + 1
            continue
        else:
            break
        line = node.start_mark.line + 1
    return line


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
