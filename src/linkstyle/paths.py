"""The artifact layout of one run, in one place: the library and the Snakefile both use it.

Arguments may be real values or Snakemake wildcard patterns such as ``"{clf}"``.
One file per shard, never one per unit or image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    def _p(self, *parts: object) -> Path:
        return self.root.joinpath(*map(str, parts))

    @property
    def config(self) -> Path:
        return self._p("config.yaml")

    def classifier_weights(self, clf: object) -> Path:
        return self._p("classifiers", clf, "weights.pt")

    def classifier_metrics(self, clf: object) -> Path:
        return self._p("classifiers", clf, "metrics.json")

    def planted_spec(self, clf: object) -> Path:
        """Classifier kind 'planted': what each planted unit encodes by construction."""
        return self._p("classifiers", clf, "planted.json")

    def samples(self, cls: object, shard: object) -> Path:
        return self._p("samples", f"class-{cls}", f"shard-{shard}.npz")

    def extract_table(self, cls: object, shard: object) -> Path:
        return self._p("extract", f"class-{cls}", f"shard-{shard}.parquet")

    def extract_arrays(self, cls: object, shard: object) -> Path:
        return self._p("extract", f"class-{cls}", f"shard-{shard}.npz")

    def select_table(self, clf: object) -> Path:
        return self._p("select", clf, "samples.parquet")

    def select_arrays(self, clf: object) -> Path:
        return self._p("select", clf, "arrays.npz")

    def link_model(self, clf: object) -> Path:
        return self._p("link", clf, "model.npz")

    def link_metrics(self, clf: object) -> Path:
        return self._p("link", clf, "metrics.json")

    def tune_table(self, clf: object, shard: object) -> Path:
        return self._p("tune", clf, f"shard-{shard}.parquet")

    def tune_arrays(self, clf: object, shard: object) -> Path:
        return self._p("tune", clf, f"shard-{shard}.npz")

    def measure_table(self, clf: object, shard: object) -> Path:
        return self._p("measure", clf, f"shard-{shard}.parquet")

    def reference_spread(self, clf: object) -> Path:
        """The spread of every measured property and factor over linked held-out images."""
        return self._p("reference", clf, "spread.parquet")

    def selectivity_features(self, clf: object) -> Path:
        return self._p("selectivity", clf, "features.parquet")

    def selectivity_units(self, clf: object) -> Path:
        return self._p("selectivity", clf, "units.parquet")

    def selectivity_explanations(self, clf: object) -> Path:
        """Each unit's ranked explanation: (part, property, sign) with effect, interval, confidence."""
        return self._p("selectivity", clf, "explanations.parquet")

    def selectivity_planted(self, clf: object) -> Path:
        """Classifier kind 'planted': does each planted unit's label name what was planted (no rows otherwise)."""
        return self._p("selectivity", clf, "planted.parquet")

    def selectivity_population(self, clf: object) -> Path:
        return self._p("selectivity", clf, "population.parquet")

    def selectivity_recovery(self, clf: object) -> Path:
        """Built-in world only: how often labels name the ground-truth factor that changed."""
        return self._p("selectivity", clf, "recovery.parquet")

    def counterfactual_items(self, clf: object) -> Path:
        """One row per (start sample, target) item: success, steps, size of the shift, confidences."""
        return self._p("counterfactual", clf, "items.parquet")

    def counterfactual_arrays(self, clf: object) -> Path:
        """Shifts, w before and after, and the stored images (original and counterfactual)."""
        return self._p("counterfactual", clf, "arrays.npz")

    def counterfactual_drivers(self, clf: object) -> Path:
        """Per pair: the units most often among the top shifted units of its successful items."""
        return self._p("counterfactual", clf, "drivers.parquet")

    def counterfactual_factors(self, clf: object) -> Path:
        """Built-in world: per pair, how each ground-truth factor changed vs how it separates the species."""
        return self._p("counterfactual", clf, "factors.parquet")

    def counterfactual_metrics(self, clf: object) -> Path:
        return self._p("counterfactual", clf, "metrics.json")

    def actmax_table(self, clf: object) -> Path:
        """Activation maximisation baseline: per unit, the activation reached and the cost."""
        return self._p("actmax", clf, "units.parquet")

    def actmax_arrays(self, clf: object) -> Path:
        """Activation maximisation baseline: the optimised images and activation histories."""
        return self._p("actmax", clf, "images.npz")

    @property
    def labels_dir(self) -> Path:
        """Images exported for labelling (images/, truth/ on the built-in world, manifest.json)."""
        return self._p("labels")

    @property
    def label_manifest(self) -> Path:
        return self._p("labels", "manifest.json")

    @property
    def label_latents(self) -> Path:
        return self._p("labels", "latents.npz")

    @property
    def segmenter_labels(self) -> Path:
        return self._p("segmenter", "labels.npz")

    @property
    def segmenter_model(self) -> Path:
        return self._p("segmenter", "model.pt")

    @property
    def segmenter_metrics(self) -> Path:
        return self._p("segmenter", "metrics.json")

    @property
    def figures(self) -> Path:
        return self._p("figures")

    def figure(self, name: str, suffix: str = ".png") -> Path:
        """A figure of the report stage (artifacts.figure_files lists them): PNG, and PDF beside it."""
        return self._p("figures", name + suffix)

    @property
    def atlas(self) -> Path:
        """The unit atlas: a static site (index.html, data/, sprites/) that opens from disk."""
        return self._p("atlas")

    @property
    def report(self) -> Path:
        return self._p("report.html")

    @property
    def summary(self) -> Path:
        return self._p("summary.json")

    def log(self, rule: str, *labels: object) -> Path:
        return self._p("logs", rule, "-".join(map(str, labels)) + ".log" if labels else "log.log")

    def benchmark(self, rule: str, *labels: object) -> Path:
        return self._p("benchmarks", rule, "-".join(map(str, labels)) + ".tsv" if labels else "bench.tsv")
