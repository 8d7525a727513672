"""The real workflow, end to end, on a tiny built-in world (slow), and its dry-runs (fast)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linkstyle.config import load_config
from linkstyle.measures import PROPERTIES
from linkstyle.paths import RunPaths

from .conftest import REPO, TINY, run_snakemake

N_PARTS = 8


def test_dry_run_of_the_default_config_plans_every_stage(tmp_path):
    proc = run_snakemake("--directory", str(tmp_path), "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    # two demo classifiers and the planted one (16 units in one tune shard; no counterfactuals: it classifies as its base);
    # 128 units a shard: 4 of ResNet-18's 512, 4 of RegNet's 400, 1 planted
    for rule, count in {"train_classifier": 3, "sample": 5, "extract": 5, "select": 3, "link": 3, "tune": 9, "measure": 9,
                        "reference": 3, "selectivity": 3, "counterfactual": 2, "actmax": 3, "report": 1, "atlas": 1}.items():
        assert any(line.split() == [rule, str(count)] for line in out.splitlines()), f"{rule} x{count} not planned:\n{out}"


def test_dry_run_rejects_a_bad_config_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tune:\n  bounds: median\n")
    proc = run_snakemake("--directory", str(tmp_path), "--configfile", str(bad), "-n")
    assert proc.returncode != 0
    # one message that names file and line, without Snakemake's traceback line into the rule files
    assert f"tune.bounds: 'median' is not allowed; valid values: minmax, percentile ({bad}:2)" in proc.stderr
    assert "Traceback" not in proc.stderr and "common.smk" not in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_tiny_workflow_summary_has_the_headline_numbers(tiny_run):
    _, _, paths = tiny_run
    summary = json.loads(paths.summary.read_text())
    assert set(summary["classifiers"]) == {"resnet18", "regnet", "planted"}
    for name, s in summary["classifiers"].items():
        assert s["heldout_accuracy"] >= 0.6, (name, s)
        assert s["units_analysed"] == 16  # tune.units for the demo ones; the 16 planted units for planted
        assert s["units_in_model"] == {"resnet18": 512, "regnet": 400, "planted": 528}[name]
        assert s["sweeps"]["direction"] == "pattern" and np.isfinite(s["sweeps"]["median_gain"])
        assert s["link_r2_test"] > 0.2, (name, s)
        assert s["cycle_agreement_test"] > 0.6, (name, s)
        assert 0 <= s["faithful_units"] <= 16 and 0 <= s["selective_units"] <= 16
        assert s["selective_share"] == pytest.approx(s["selective_units"] / 16)
        assert set(s["concept_recovery"]) == {"segmenter", "truth"}  # the learned segmenter, validated on the truth
        assert (s["planted"] is None) == (name != "planted")
        assert (s["counterfactual"] is None) == (name == "planted")  # it classifies exactly as its base
    planted = summary["classifiers"]["planted"]["planted"]
    assert set(planted) == {"segmenter", "truth"}
    assert planted["truth"]["n_planted"] == 16 and 0 <= planted["truth"]["label_accuracy"] <= 1
    for stage in ("train_classifier", "sample", "extract", "select", "link", "tune", "measure", "selectivity",
                  "label_export", "label_import", "train_segmenter"):
        assert summary["timing"][stage]["seconds"] > 0
    assert 0 < summary["peak_job_rss_mb"] < 4096
    html = paths.report.read_text()
    assert html.count("<img") >= 8 and "Headline" in html and "Concept recovery" in html


@pytest.mark.slow
def test_tiny_workflow_trains_the_segmenter_from_exported_label_maps(tiny_run):
    _, _, paths = tiny_run
    exported = sorted(p.name for p in (paths.labels_dir / "images").glob("*.png"))
    assert len(exported) == 8 and exported == sorted(p.name for p in (paths.labels_dir / "truth").glob("*.png"))
    metrics = json.loads(paths.segmenter_metrics.read_text())
    assert metrics["labelled_images"] == 8 and metrics["features"] == "image"
    assert metrics["heldout"]["images"] == 24 and 0.0 < metrics["heldout"]["mean_iou"] <= 1.0
    measures = pd.read_parquet(paths.measure_table("resnet18", 0))
    assert set(measures["masks"]) == {"segmenter", "truth"}
    # the segmenter's masks differ from the truth's somewhere, but measure the same images and parts
    seg, truth = (measures[measures["masks"] == m].reset_index(drop=True) for m in ("segmenter", "truth"))
    assert (seg[["unit", "start", "step"]] == truth[["unit", "start", "step"]]).all().all()
    assert list(seg["part"].astype(str)) == list(truth["part"].astype(str))


@pytest.mark.slow
def test_tiny_workflow_analyses_every_unit_with_every_measure(tiny_run):
    _, _, paths = tiny_run
    for name in ("resnet18", "regnet", "planted"):
        units = pd.read_parquet(paths.selectivity_units(name))
        assert sorted(units["unit"]) == (list(range(512, 528)) if name == "planted" else list(range(16)))
        explained = pd.read_parquet(paths.selectivity_explanations(name))
        first = explained[explained["rank"] == 1].set_index("unit")["concept"]
        assert (units.set_index("unit")["concept"][units.set_index("unit")["selective"]] == first.reindex(
            units.loc[units["selective"], "unit"])).all()  # the label is the explanation's first item
        assert units["gain"].notna().any() and units["weak_sweep"].dtype == bool
        assert units["faithfulness"].dropna().between(-1, 1).all()
        assert set(units["concept"][units["selective"]].str.count(":")) <= {2}
        assert (units["concept"][~units["selective"]] == "none").all()
        population = pd.read_parquet(paths.selectivity_population(name))
        total = population[(population["part"] == "*") & (population["property"] == "*")].iloc[0]
        assert total["n_selective"] == units["selective"].sum() and total["n_units"] == 16
        recovery = pd.read_parquet(paths.selectivity_recovery(name))
        assert set(recovery["masks"]) == {"segmenter", "truth"} and "all" in set(recovery["part"])
        feats = pd.read_parquet(paths.selectivity_features(name))
        measures = feats[feats["kind"] == "measure"]
        assert len(measures) == 16 * N_PARTS * len(PROPERTIES)
        assert feats[feats["kind"] == "factor"]["property"].nunique() >= 15
        # body area is measured in every sweep: a finite change for every unit
        body_area = measures[(measures["part"] == "body") & (measures["property"] == "area")]
        assert np.isfinite(body_area["delta"]).all()


@pytest.mark.slow
def test_tiny_workflow_finds_counterfactuals_for_every_pair(tiny_run):
    _, _, paths = tiny_run
    summary = json.loads(paths.summary.read_text())
    pairs = [(o, t) for o in range(3) for t in range(3) if o != t]
    for name in ("resnet18", "regnet"):
        items = pd.read_parquet(paths.counterfactual_items(name))
        assert len(items) == 6 * 4 and set(zip(items["origin"], items["target"])) == set(pairs)
        assert (items["origin"] != items["target"]).all() and (items["split"] == "test").mean() > 0.5
        ok = items[items["success"]]
        assert len(ok) >= 0.5 * len(items), items.groupby(["origin", "target"])["success"].mean()
        assert (ok["pred_after"] == ok["target"]).all() and (ok["steps"] <= 200).all()
        assert (ok["conf_target_after"] > ok["conf_target_before"]).all()
        assert (ok["l0"] > 0).all() and (ok["image_distance"] > 0).all() and ok["top_units"].str.len().gt(0).all()
        arrays = np.load(paths.counterfactual_arrays(name))
        assert arrays["shift"].shape == (24, {"resnet18": 512, "regnet": 400}[name])
        assert arrays["images_before"].shape == (6 * 2, 32, 32, 3) and (items["image"] >= 0).sum() == 12
        drivers = pd.read_parquet(paths.counterfactual_drivers(name))
        assert set(zip(drivers["origin"], drivers["target"])) == set(zip(ok["origin"], ok["target"]))
        assert (drivers.groupby(["origin", "target"])["rank"].min() == 1).all()
        factors = pd.read_parquet(paths.counterfactual_factors(name))
        assert len(factors) == 6 * 25 and factors["separation"].notna().all()
        metrics = json.loads(paths.counterfactual_metrics(name).read_text())
        assert metrics["success_rate"] == pytest.approx(items["success"].mean()) and len(metrics["pairs"]) == 6
        cf = summary["classifiers"][name]["counterfactual"]
        assert cf["success_rate"] == pytest.approx(metrics["success_rate"]) and len(cf["pairs"]) == 6
        assert cf["logits_from"] == "rendering" and cf["mean_factor_cosine"] is not None
        # driving units carry their selectivity label where the unit was analysed (units 0-15 here)
        labels = {d["concept"] for p in cf["pairs"] for d in p["drivers"]}
        assert labels and all(isinstance(c, str) for c in labels)
        assert (paths.figures / f"counterfactuals-{name}.png").stat().st_size > 0
    assert "Counterfactuals per class pair" in paths.report.read_text()


def test_every_figure_caption_has_one_home_that_both_reports_read():
    """The caption of each figure kind is package data, read by report.html and by `snakemake --report`."""
    from linkstyle.artifacts import FIGURE_KINDS, figure_caption
    from linkstyle.stages.report import Page

    assert sorted(p.name for p in (REPO / "workflow" / "report").glob("*.rst")) == ["workflow.rst"]
    page = Page()
    for kind, *_ in FIGURE_KINDS:
        text = figure_caption(kind)
        assert text.startswith("**") and len(text) > 100, kind
        shown = page.figure(f"{kind} <title>", kind, b"png")
        assert "**" not in shown and "``" not in shown and "&lt;title&gt;" in shown and "__" not in shown, kind
    assert "<template" not in page.page and "<!--" not in page.page


def test_report_inputs_list_every_artifact_the_report_reads_once():
    """One list (artifacts.report_inputs) gives the report rule's inputs and report.require_inputs's checks."""
    from linkstyle.artifacts import origin, report_inputs
    from linkstyle.units import unit_shards

    cfg = load_config(REPO / ".test" / "config" / "config.yaml")
    needed = report_inputs(cfg)
    assert len({n.path for n in needed}) == len(needed)
    tune = [n for n in needed if n.stage == "tune"]
    assert len(tune) == sum(len(unit_shards(cfg, c.name)) for c in cfg.classifiers)
    assert {n.stage for n in needed} == {"train_classifier", "link", "selectivity", "tune", "counterfactual", "actmax"}
    for n in needed:  # each names a stage and the options that remake it
        assert origin(cfg, n.stage, **n.wildcards).remake.startswith("linkstyle ")


@pytest.mark.slow
def test_tiny_workflow_draws_every_figure_as_png_and_pdf_for_the_snakemake_report(tiny_run, tmp_path):
    work, cfg_file, paths = tiny_run
    from linkstyle.artifacts import figure_files

    names = [name for name, *_ in figure_files(load_config(cfg_file))]
    assert "concept-recovery" in names and "directions-regnet" in names and len(names) == 22  # 7 per demo classifier, 5 planted, 3
    assert "counterfactuals-planted" not in names and "directions-planted" in names
    for name in names:
        assert paths.figure(name).read_bytes()[:4] == b"\x89PNG"
        assert paths.figure(name, ".pdf").read_bytes()[:4] == b"%PDF"
    out = tmp_path / "report.zip"
    proc = run_snakemake("--directory", str(work), "--configfile", str(cfg_file), "--report", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import zipfile

    with zipfile.ZipFile(out) as z:
        listed = "\n".join(z.namelist())
        assert all(f"{name}.png" in listed for name in names), listed
        captions = "".join(z.read(n).decode(errors="ignore") for n in z.namelist() if n.endswith((".html", ".js")))
    assert "species really differ" in captions  # the counterfactual-pairs caption


@pytest.mark.slow
def test_counterfactual_stage_rejects_bad_pairs_before_optimising(tiny_run):
    _, cfg_file, paths = tiny_run
    before = paths.counterfactual_items("resnet18").stat().st_mtime_ns

    def run(pairs):
        return subprocess.run([sys.executable, "-m", "linkstyle", "counterfactual", "--config", str(cfg_file),
                               "--classifier", "resnet18", "--set", f"counterfactual.pairs={pairs}"],
                              capture_output=True, text=True, cwd=tiny_run[0], timeout=300)

    unknown = run("[[fox, kat]]")
    # (a name of the built-in world is checked when the config loads, before the stage starts)
    assert unknown.returncode == 2 and "unknown target class name 'kat'" in unknown.stderr and "did you mean 'cat'" in unknown.stderr
    same = run("[[fox, 0]]")
    assert same.returncode == 2 and "are the same class (0)" in same.stderr
    outside = run("[[0, 4]]")
    assert outside.returncode == 2 and "target class 4 is not among the analysed classes" in outside.stderr
    assert paths.counterfactual_items("resnet18").stat().st_mtime_ns == before  # nothing rewritten


@pytest.mark.slow
def test_tiny_workflow_shards_hold_images_of_the_right_shape(tiny_run):
    _, _, paths = tiny_run
    arrays = np.load(paths.tune_arrays("resnet18", 0))
    n = 6 * 6 * 3  # units in shard x (3 classes x 2 starts) x steps
    assert arrays["images"].shape == (n, 32, 32, 3) and arrays["images"].dtype == np.uint8
    assert arrays["masks"].shape == (n, 32, 32) and arrays["masks"].max() < N_PARTS
    table = pd.read_parquet(paths.tune_table("resnet18", 2))
    assert sorted(table["unit"].unique()) == [12, 13, 14, 15]
    # the sweep sets the target activation from low to high for every unit and start
    steps = table.pivot_table(index=["unit", "start"], columns="step", values="target")
    assert (steps[2] >= steps[0]).all()


@pytest.mark.slow
def test_tiny_workflow_leaves_logs_and_no_temporary_files(tiny_run):
    work, _, paths = tiny_run
    assert not [p for p in paths.root.rglob("*") if ".tmp" in p.name]
    for rule in ("train_classifier", "sample", "extract", "select", "link", "tune", "measure", "selectivity", "report",
                 "label_export", "label_import", "train_segmenter", "counterfactual", "atlas"):
        logs = list((paths.root / "logs" / rule).glob("*.log"))
        assert logs and all(p.stat().st_size > 0 for p in logs), rule


@pytest.mark.slow
def test_rerun_recomputes_only_what_is_missing(tiny_run, tmp_path):
    """As after a run stopped while measuring: one shard and everything downstream absent."""
    shared, _, _ = tiny_run
    work = tmp_path / "copy"
    shutil.copytree(shared, work, symlinks=True)  # keeps mtimes and Snakemake's metadata
    cfg_file, paths = work / "tiny.yaml", RunPaths(work / "results" / "tiny")
    args = ("--directory", str(work), "--configfile", str(cfg_file))
    proc = run_snakemake(*args, "-n", "--quiet", "rules")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    for path in (paths.measure_table("regnet", 1), paths.selectivity_units("regnet"), paths.selectivity_features("regnet"), paths.report, paths.summary):
        path.unlink()
    proc = run_snakemake(*args, "-n", "--quiet", "rules")
    planned = {tuple(line.split()) for line in (proc.stdout + proc.stderr).splitlines()}
    assert {("measure", "1"), ("selectivity", "1"), ("actmax", "1"), ("report", "1"), ("atlas", "1"), ("total", "6")} <= planned, planned
    proc = run_snakemake(*args, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert paths.measure_table("regnet", 1).exists() and paths.summary.exists()


def _shards(paths: RunPaths, kind: str, name: str, keys: list[str]) -> pd.DataFrame:
    """Every unit shard's table of one kind, in one frame sorted by ``keys``."""
    files = sorted((paths.root / kind / name).glob("shard-*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("units, units_per_shard, n_shards", [(None, 16, 1), (None, 2, 8), ([5], 64, 1)])
def test_results_do_not_depend_on_the_shard_size_or_the_other_units(tiny_run, tmp_path, units, units_per_shard, n_shards):
    """Re-tune the tiny run's 16 units (3 shards of 6) in 1 and in 8 shards, and unit 5 alone, from the same
    link, through the library calls: every sweep, measure and selectivity number of a unit is bitwise the
    same, its ranked explanation included."""
    import torch

    from linkstyle.stages.context import Context
    from linkstyle.stages.measure import run_measure
    from linkstyle.stages.select import run_select
    from linkstyle.stages.selectivity import run_selectivity
    from linkstyle.stages.tune import run_tune
    from linkstyle.units import unit_shards

    _, _, paths = tiny_run
    tune = dict(TINY["tune"], units_per_shard=units_per_shard, **({"units": units} if units else {}))
    raw = dict(TINY, results_dir=str(tmp_path), tune=tune)
    cfg = load_config(None, raw)
    assert len(unit_shards(cfg, "resnet18")) == n_shards
    other = RunPaths(cfg.run_dir)
    for sub in ("classifiers", "extract", "link", "segmenter", "reference"):
        shutil.copytree(paths.root / sub, other.root / sub)
    threads = torch.get_num_threads()
    ctx = Context(cfg, threads=1)  # as the workflow's tune jobs (threads: 1)
    try:
        run_select(ctx, "resnet18")  # select records the tune section it reads (bounds), so it is redone, cheaply
        for shard in range(n_shards):
            run_tune(ctx, "resnet18", shard)
            run_measure(ctx, "resnet18", shard)
        run_selectivity(ctx, "resnet18")
    finally:
        torch.set_num_threads(threads)
    keys = ["unit", "start", "step"]

    def mine(frame: pd.DataFrame) -> pd.DataFrame:
        return (frame[frame["unit"].isin(units)] if units else frame).reset_index(drop=True)

    pd.testing.assert_frame_equal(mine(_shards(paths, "tune", "resnet18", keys)), _shards(other, "tune", "resnet18", keys),
                                  check_exact=True)
    pd.testing.assert_frame_equal(mine(_shards(paths, "measure", "resnet18", keys + ["part"])),
                                  _shards(other, "measure", "resnet18", keys + ["part"]), check_exact=True)
    for table in (RunPaths.selectivity_features, RunPaths.selectivity_units, RunPaths.selectivity_explanations):
        pd.testing.assert_frame_equal(mine(pd.read_parquet(table(paths, "resnet18"))), pd.read_parquet(table(other, "resnet18")),
                                      check_exact=True)


@pytest.mark.slow
def test_measure_vs_tune_benchmark_runs_on_the_tiny_run(tiny_run, tmp_path):
    import subprocess
    import sys

    from .conftest import REPO

    _, _, paths = tiny_run
    out = tmp_path / "ratio.jsonl"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_measure_vs_tune.py"), "--config", str(paths.config),
                           "--classifier", "resnet18", "--units", "2", "--repeats", "1", "--out", str(out)],
                          capture_output=True, text=True, cwd=paths.root.parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["segmenter"] == "learned" and result["images_per_repeat"] == 2 * 6 * 3
    assert result["tune_ms_per_image"] > 0 and result["measure_ms_per_image"] > 0


@pytest.mark.slow
def test_figures_name_the_stage_to_run_when_an_artifact_is_missing(tiny_run, tmp_path):
    shared, _, _ = tiny_run
    work = tmp_path / "copy"
    shutil.copytree(shared, work, symlinks=True)
    cfg_file, paths = work / "tiny.yaml", RunPaths(work / "results" / "tiny")
    paths.counterfactual_metrics("regnet").unlink()
    before = paths.figure("linking").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "linkstyle", "report", "--config", str(cfg_file)], cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "counterfactual/regnet/metrics.json" in proc.stderr and "linkstyle counterfactual --classifier regnet" in proc.stderr
    assert paths.figure("linking").stat().st_mtime_ns == before  # checked before drawing anything


def test_jobs_run_with_snakemakes_own_python_without_a_path_prefix(tmp_path):
    """`.venv/bin/snakemake` alone: the jobs find the venv's Python (and this checkout's package)
    although the venv is not on PATH and the system Python has no torch."""
    cfg = load_config(REPO / ".test" / "config" / "config.yaml")
    target = str(RunPaths(cfg.run_dir).samples(0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), target, "--directory", str(tmp_path),
                           "--configfile", str(REPO / ".test" / "config" / "config.yaml"), "--cores", "1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (tmp_path / target).exists()
