"""Every bad input a user or a damaged disk can produce ends in one message that says what is wrong
and how to fix it, with exit status 2 and no traceback; nothing partial is left behind.

Each case builds its bad input in a fresh folder and runs the CLI in this process (a stage's own
code path, as a Snakemake job runs it). Artifacts are made small and synthetic with the real
writers, so no workflow has to run first; ``test_the_unbroken_inputs_work`` shows that each
case's inputs work before they are broken.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from linkstyle.artifacts import origin
from linkstyle.cli import main
from linkstyle.config import deep_merge, load_config
from linkstyle.io import write_npz, write_parquet
from linkstyle.measures import STATIC_PROPERTIES
from linkstyle.paths import RunPaths
from linkstyle.selectivity import reference_spread

from .stylegan_standin import write_standin_repo

#: A small world: 3 classes at 32 px, 4 samples per class, 2 units per classifier in one shard.
BASE: dict[str, Any] = {
    "run": "bad",
    "generator": {"num_classes": 3, "resolution": 32, "batch_size": 8},
    "sample": {"per_class": 4, "per_shard": 4},
    "select": {"starts_per_class": 1},
    "tune": {"units": [0, 1], "units_per_shard": 2, "n_steps": 3},
}
N_IMAGES = 2 * 1 * 3  # units x starts x steps of the one tune shard
PART_NAMES = ["body", "head", "tail"]


def write_config(tmp: Path, extra: dict[str, Any] | None = None) -> Path:
    raw = deep_merge(dict(BASE, results_dir=str(tmp / "results")), extra or {})
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def paths_of(cfg_file: Path) -> RunPaths:
    return RunPaths(load_config(cfg_file).run_dir)


def run_ok(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


def make_samples(tmp: Path, extra: dict[str, Any] | None = None) -> Path:
    """A config and the sample shard of class 0 that extract reads."""
    cfg = write_config(tmp, extra)
    run_ok("sample", "--cls", "0", "--shard", "0", "--config", str(cfg), "-q")
    return cfg


def make_tune_shard(tmp: Path, extra: dict[str, Any] | None = None, **changes: Any) -> Path:
    """A config and a synthetic tune shard 0 of resnet18 (arrays and table), as run_tune writes it;
    ``changes`` replace arrays (None drops one)."""
    cfg_file = write_config(tmp, extra)
    cfg = load_config(cfg_file)
    paths = RunPaths(cfg.run_dir)
    rng = np.random.default_rng(0)
    unit = np.repeat([0, 1], 3).astype(np.int64)
    step = np.tile([0, 1, 2], 2).astype(np.int64)
    start = np.zeros(N_IMAGES, dtype=np.int64)
    arrays: dict[str, Any] = {
        "unit": unit, "start": start, "step": step,
        "w": rng.normal(size=(N_IMAGES, 25)).astype(np.float32),
        "images": rng.integers(0, 256, size=(N_IMAGES, 32, 32, 3), dtype=np.uint8),
        "masks": rng.integers(0, len(PART_NAMES), size=(N_IMAGES, 32, 32), dtype=np.uint8),
        "part_names": np.array(PART_NAMES),
    }
    for key, value in changes.items():
        arrays.pop(key) if value is None else arrays.__setitem__(key, value)
    made = origin(cfg, "tune", classifier="resnet18", shard=0)
    write_npz(paths.tune_arrays("resnet18", 0), made, **arrays)
    table = pd.DataFrame({
        "unit": unit, "start": start, "start_seed": np.full(N_IMAGES, 7, dtype=np.int64), "cls": np.zeros(N_IMAGES, dtype=np.int64),
        "step": step, "target": step.astype(np.float32), "realised": (step * 0.5).astype(np.float32),
        "pred": np.zeros(N_IMAGES, dtype=np.int64), "prob_cls": np.full(N_IMAGES, 0.9, dtype=np.float32),
        "unit_r2": np.full(N_IMAGES, 0.5, dtype=np.float32),
        "factor__size": rng.random(N_IMAGES).astype(np.float32),
    })
    write_parquet(table, paths.tune_table("resnet18", 0), made)
    return cfg_file


def make_measured(tmp: Path) -> Path:
    """A tune shard, its measure table and the reference spreads: what selectivity reads (the spreads
    are taken over the shard's own measures, standing in for the reference stage's images)."""
    cfg_file = make_tune_shard(tmp)
    run_ok("measure", "--classifier", "resnet18", "--shard", "0", "--config", str(cfg_file), "-q")
    cfg = load_config(cfg_file)
    paths = RunPaths(cfg.run_dir)
    measured = pd.read_parquet(paths.measure_table("resnet18", 0))
    spreads = reference_spread(measured, None, STATIC_PROPERTIES)
    write_parquet(spreads, paths.reference_spread("resnet18"), origin(cfg, "reference", classifier="resnet18"))
    return cfg_file


def _data_byte(path: Path, size: int) -> int:
    """A byte of stored values: in a Parquet file the last byte of the first column's pages (page
    headers hold statistics that no reader trusts, and their checksum covers only the page data;
    `test_no_flipped_byte_is_read_as_valid_data` covers every region)."""
    if path.suffix != ".parquet":
        return size // 5
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)
    return (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size - 1


def damage(path: Path, how: str) -> None:
    """'garbage': other content; 'truncate': the first half; 'flip': one byte inverted, as a bad disk does."""
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[_data_byte(path, len(data))] ^= 0xFF
    path.write_bytes(b"this is not what it should be\n" * 4 if how == "garbage" else data[: len(data) // 2] if how == "truncate" else data)


def stylegan_config(tmp: Path, pickle_file: Path) -> Path:
    repo = write_standin_repo(tmp / "checkout")
    return write_config(tmp, {
        "generator": {"kind": "stylegan", "pickle": str(pickle_file), "repo": str(repo)},
        "classifiers": [{"name": "tv", "kind": "torchvision", "arch": "resnet18", "weights": str(tmp / "tv.pt")}],
        "measure": {"segmenter": "whole_image"},
    })


def torchvision_config(tmp: Path, weights: Path) -> Path:
    return make_samples(tmp, {"classifiers": [{"name": "tv", "kind": "torchvision", "arch": "resnet18", "weights": str(weights)}]})


def no_file_left(target: str) -> Callable[[Path], None]:
    """After a failed write: neither the artifact nor a temporary file of it exists."""
    def check(tmp: Path) -> None:
        path = tmp / "results" / "bad" / target
        assert not path.exists(), path
        if path.parent.exists():
            assert not list(path.parent.glob(f".{path.name}.*")), list(path.parent.iterdir())
    return check


def enospc_npz(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    def full(fh: Any, **arrays: Any) -> None:
        fh.write(b"PK\x03\x04 half of a shard")
        fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    cfg = write_config(tmp)
    mp.setattr(np, "savez", full)
    return ["sample", "--cls", "0", "--shard", "0", "--config", str(cfg)]


def enospc_parquet(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    import pyarrow.parquet as pq

    def full(table: Any, where: Any, **kwargs: Any) -> None:
        Path(where).write_bytes(b"PAR1 half of a table")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    cfg = make_tune_shard(tmp)
    mp.setattr(pq, "write_table", full)
    return ["measure", "--classifier", "resnet18", "--shard", "0", "--config", str(cfg)]


def read_only_fs(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    cfg = write_config(tmp)
    mp.setattr(tempfile, "mkstemp", refuse)
    return ["sample", "--cls", "0", "--shard", "0", "--config", str(cfg)]


def results_under_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    (tmp / "a-file").write_text("a file, not a folder\n")  # fails for root too, unlike a chmod
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(dict(BASE, results_dir=str(tmp / "a-file" / "results"))))
    return ["sample", "--cls", "0", "--shard", "0", "--config", str(cfg)]


def config_text(text: str) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        (tmp / "config.yaml").write_text(text)
        return ["config", "--config", str(tmp / "config.yaml")]
    return make


def config_keys(extra: dict[str, Any], command: tuple[str, ...] = ("config",)) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        return [*command, "--config", str(write_config(tmp, extra))]
    return make


def tune_npz(**changes: Any) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        return ["measure", "--classifier", "resnet18", "--shard", "0", "--config", str(make_tune_shard(tmp, **changes))]
    return make


def tune_npz_from(extra: dict[str, Any] | None = None, stage: str = "tune", record: bool = True) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    """A tune shard written under another config (``extra``), by another stage, or by plain numpy."""
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        other = make_tune_shard(tmp / "other", extra)
        cfg = make_tune_shard(tmp)
        target = paths_of(cfg).tune_arrays("resnet18", 0)
        arrays = dict(np.load(paths_of(other).tune_arrays("resnet18", 0)))
        arrays.pop("linkstyle_artifact")
        made = origin(load_config(other), stage, classifier="resnet18", shard=0) if record else None
        write_npz(target, made, **arrays)
        return ["measure", "--classifier", "resnet18", "--shard", "0", "--config", str(cfg)]
    return make


def damaged(make_inputs: Callable[[Path], Path], which: Callable[[RunPaths], Path], how: str, command: list[str]) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        cfg = make_inputs(tmp)
        damage(which(paths_of(cfg)), how)
        return [*command, "--config", str(cfg)]
    return make


def rewritten_table(kind: str, change: Callable[[pd.DataFrame], pd.DataFrame], extra: dict[str, Any] | None = None) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    """A measure or tune table of shard 0 rewritten with ``change``, recorded under ``extra``'s config."""
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        cfg = make_measured(tmp)
        paths = paths_of(cfg)
        path = paths.measure_table("resnet18", 0) if kind == "measure" else paths.tune_table("resnet18", 0)
        made_cfg = load_config(cfg, extra) if extra else load_config(cfg)
        write_parquet(change(pd.read_parquet(path)), path, origin(made_cfg, kind, classifier="resnet18", shard=0))
        return ["selectivity", "--classifier", "resnet18", "--config", str(cfg)]
    return make


def weights_file(content: Callable[[Path], None]) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        weights = tmp / "weights.pth"
        content(weights)
        return ["extract", "--cls", "0", "--shard", "0", "--config", str(torchvision_config(tmp, weights))]
    return make


def demo_weights(content: Callable[[Path], None] | None) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        cfg = make_samples(tmp)
        if content is not None:
            path = paths_of(cfg).classifier_weights("resnet18")
            path.parent.mkdir(parents=True)
            content(path)
        return ["extract", "--cls", "0", "--shard", "0", "--config", str(cfg)]
    return make


def truncated_torch_file(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, path)
    damage(path, "truncate")


def stylegan_pickle(content: bytes | None) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        pkl = tmp / "network.pkl"
        if content is not None:
            pkl.write_bytes(content)
        return ["sample", "--cls", "0", "--shard", "0", "--config", str(stylegan_config(tmp, pkl))]
    return make


@dataclass(frozen=True)
class Case:
    make: Callable[[Path, pytest.MonkeyPatch], list[str]]  # builds the bad input, returns the CLI call
    expect: tuple[str, ...]  # regular expressions the message must match: what is wrong, and what to do
    after: Callable[[Path], None] | None = None  # what must (not) be on disk afterwards


SELECT = ["select", "--classifier", "resnet18"]
MEASURE = ["measure", "--classifier", "resnet18", "--shard", "0"]
SELECTIVITY = ["selectivity", "--classifier", "resnet18"]
REMAKE_TUNE = r"Stage 'tune' makes this file: delete it and rerun the workflow, or remake it with `linkstyle tune --classifier resnet18 --shard 0 --config .*config.yaml`"
REMAKE_MEASURE = r"Stage 'measure' makes this file.*`linkstyle measure --classifier resnet18 --shard 0 --config "

CASES: dict[str, Case] = {
    # --- the config file
    "yaml-syntax": Case(config_text("tune: [1, 2\n"), (r"config file .*config.yaml is not valid YAML", r"line 2")),
    "yaml-not-a-mapping": Case(config_text("- run\n- tiny\n"), (r"must hold a mapping of keys, not list",)),
    "config-file-missing": Case(lambda tmp, mp: ["config", "--config", str(tmp / "nope.yaml")], (r"config file .*nope.yaml does not exist",)),
    "unknown-top-key": Case(config_keys({"resluts_dir": "x"}), (r"'resluts_dir' was unexpected", r"did you mean 'results_dir'\?")),
    "unknown-nested-key": Case(config_keys({"tune": {"nsteps": 3}}), (r"tune: .*'nsteps' was unexpected", r"allowed keys: .*n_steps", r"did you mean 'n_steps'\?")),
    "enum-typo": Case(config_keys({"tune": {"bounds": "minmx"}}), (r"tune.bounds: 'minmx' is not allowed; valid values: minmax, percentile; did you mean 'minmax'\?",)),
    "wrong-type-number": Case(config_keys({"tune": {"n_steps": "three"}}), (r"tune.n_steps: 'three' is not of type 'integer' \(Activation values per sweep",)),
    "wrong-type-section": Case(config_keys({"generator": 5}), (r"generator: 5 is not of type 'object'",)),
    "wrong-type-list": Case(config_keys({"classes": "0,1"}), (r"classes: '0,1' is not of type 'array', 'null'", r"null means every class")),
    "wrong-type-in-list": Case(config_keys({"tune": {"units": [3, 3.5]}}), (r"tune.units: 3.5 is not of type 'integer'",)),
    "zero-count": Case(config_keys({"sample": {"per_shard": 0}}), (r"sample.per_shard: 0 is less than the minimum of 1",)),
    "negative-count": Case(config_keys({"tune": {"units_per_shard": -2}}), (r"tune.units_per_shard: -2 is less than the minimum of 1",)),
    "zero-batch": Case(config_keys({"generator": {"batch_size": 0}}), (r"generator.batch_size: 0 is less than the minimum of 1",)),
    "truncation-zero": Case(config_keys({"generator": {"truncation_psi": 0}}), (r"generator.truncation_psi: 0 is less than or equal to the minimum of 0", r"in \(0, 1\]")),
    "truncation-above-one": Case(config_keys({"train": {"truncation_psi": 1.5}}), (r"train.truncation_psi: 1.5 is greater than the maximum of 1", r"in \(0, 1\]")),
    "empty-class-set": Case(config_keys({"classes": []}), (r"classes: \[\] has 0 entries, at least 2 needed", r"null means every class")),
    "class-out-of-range": Case(config_keys({"classes": [0, 7]}), (r"classes: \[7\] out of range; generator 'critters' has num_classes=3 \(valid indices 0..2\)",)),
    "class-negative": Case(config_keys({"classes": [-1, 0]}), (r"classes\[0\]: -1 is less than the minimum of 0",)),
    "duplicate-classifier-names": Case(config_keys({"classifiers": [{"name": "a"}, {"name": "a", "arch": "regnet_x_400mf"}]}),
                                       (r"classifiers: names must be unique, repeated: \['a'\]",)),
    "duplicate-units": Case(config_keys({"tune": {"units": [1, 1]}}), (r"tune.units: \[1, 1\] has non-unique elements",)),
    "unit-out-of-range": Case(config_keys({"tune": {"units": [3, 600]}}, ("units",)),
                              (r"tune.units: \[600\] out of range for classifier 'resnet18', which has 512 units \(valid 0..511\)",)),
    "percentiles-reversed": Case(config_keys({"tune": {"bounds": "percentile", "percentiles": [99, 1]}}), (r"tune.percentiles: lower \(99\) must be below upper \(1\)",)),
    "set-without-value": Case(lambda tmp, mp: ["config", "--set", "tune.n_steps"], (r"--set expects KEY=VALUE",)),
    # --- the stage's options
    "unknown-classifier": Case(lambda tmp, mp: [*SELECT[:1], "--classifier", "vgg", "--config", str(write_config(tmp))],
                               (r"unknown classifier 'vgg'; configured: resnet18, regnet",)),
    "unit-shard-out-of-range": Case(lambda tmp, mp: ["tune", "--classifier", "resnet18", "--shard", "5", "--config", str(write_config(tmp))],
                                    (r"unit shard 5 out of range: classifier 'resnet18' has 1 unit shards \(0..0\)", r"tune.units_per_shard")),
    "class-not-in-class-set": Case(lambda tmp, mp: ["sample", "--cls", "9", "--shard", "0", "--config", str(write_config(tmp))],
                                   (r"class 9 is not in the analysed class set \[0, 1, 2\]",)),
    "sample-shard-out-of-range": Case(lambda tmp, mp: ["sample", "--cls", "0", "--shard", "3", "--config", str(write_config(tmp))],
                                      (r"sample shard 3 out of range: 4 samples per class in shards of 4 are shards 0..0",)),
    # --- files the user provides
    "stylegan-pickle-missing": Case(stylegan_pickle(None), (r"StyleGAN network pickle not found: .*network.pkl", r"never downloads", r"generator.pickle")),
    "stylegan-pickle-truncated": Case(stylegan_pickle(pickle.dumps({"G_ema": list(range(1000))})[:100]),
                                      (r"network.pkl is not a readable pickle", r"completely downloaded\?")),
    "weights-wrong-file-type": Case(weights_file(lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n not weights")),
                                    (r"classifier 'tv' \(torchvision\): .*weights.pth cannot be read as a state dict", r"torch.save\(model.state_dict\(\), path\)")),
    "weights-mismatched-state-dict": Case(weights_file(lambda p: torch.save({"features.0.weight": torch.zeros(3, 3)}, p)),
                                          (r"does not fit the architecture: \d+ missing key\(s\): conv1.weight", r"1 unexpected key\(s\): features.0.weight")),
    "demo-weights-missing": Case(demo_weights(None), (r"missing input .*classifiers/resnet18/weights.pt; stage 'train_classifier' makes it", r"`linkstyle train_classifier --classifier resnet18 --config ")),
    "demo-weights-truncated": Case(demo_weights(truncated_torch_file),
                                   (r"weights.pt: cannot be read as demo classifier weights .*corrupted or truncated", r"remake it with `linkstyle train_classifier --classifier resnet18")),
    "demo-weights-foreign": Case(demo_weights(lambda p: torch.save({"fc.weight": torch.zeros(2, 2)}, p)),
                                 (r"weights.pt: is not a demo classifier file written by linkstyle train_classifier \(no arch, ", r"Stage 'train_classifier' makes this file")),
    # --- artifacts: missing, damaged, or not what the reader needs
    "artifact-missing": Case(lambda tmp, mp: [*MEASURE, "--config", str(write_config(tmp))],
                             (r"missing input .*tune/resnet18/shard-0.npz; stage 'tune' makes it: run `snakemake .*shard-0.npz`", r"`linkstyle tune --classifier resnet18 --shard 0")),
    "npz-garbage": Case(damaged(make_tune_shard, lambda p: p.tune_arrays("resnet18", 0), "garbage", MEASURE),
                        (r"shard-0.npz: cannot be read as NPZ arrays \(.*\): it is corrupted or truncated", REMAKE_TUNE)),
    "npz-truncated": Case(damaged(make_tune_shard, lambda p: p.tune_arrays("resnet18", 0), "truncate", MEASURE),
                          (r"shard-0.npz: cannot be read as NPZ arrays \(.*\): it is corrupted or truncated", REMAKE_TUNE)),
    "npz-bit-flip": Case(damaged(make_tune_shard, lambda p: p.tune_arrays("resnet18", 0), "flip", MEASURE),
                         (r"shard-0.npz: cannot be read as NPZ arrays \(BadZipFile: Bad CRC-32 for file '\w+.npy'\): it is corrupted", REMAKE_TUNE)),
    "npz-array-missing": Case(tune_npz(images=None), (r"shard-0.npz: has no array 'images' \(it holds ", REMAKE_TUNE)),
    "npz-wrong-dtype": Case(tune_npz(images=np.zeros((N_IMAGES, 32, 32, 3), np.float32)), (r"array 'images' has dtype float32, expected uint8", REMAKE_TUNE)),
    "npz-wrong-ndim": Case(tune_npz(images=np.zeros((N_IMAGES, 32, 96), np.uint8)), (r"array 'images' has shape \(6, 32, 96\), expected 4 axes \(n, height, width, 3\)",)),
    "npz-rows-disagree": Case(tune_npz(w=np.zeros((N_IMAGES - 1, 25), np.float32)),
                              (r"array 'w' has 5 along axis 0 \('n'\), but n=6 in array 'unit' \(truncated or mixed-up arrays\)",)),
    "label-map-wrong-size": Case(tune_npz(masks=np.zeros((N_IMAGES, 16, 16), np.uint8)),
                                 (r"array 'masks' has 16 along axis 1 \('height'\), but height=32 in array 'images'", REMAKE_TUNE)),
    "label-map-wrong-values": Case(tune_npz(masks=np.full((N_IMAGES, 32, 32), 5, np.uint8)),
                                   (r"label maps hold part index 5, but only 3 parts are named \(0..2\)", REMAKE_TUNE)),
    "label-map-without-names": Case(tune_npz(part_names=None), (r"holds label maps \('masks'\) but no 'part_names'",)),
    "npz-other-config": Case(tune_npz_from({"tune": {"n_steps": 4}}),
                             (r"shard-0.npz: was made with other settings of tune, precision than the current config \(config digest \w+, now \w+\)", REMAKE_TUNE)),
    "npz-other-stage": Case(tune_npz_from(stage="sample"), (r"was made by stage 'sample', but stage 'tune' makes the file expected here",)),
    "npz-unrecorded": Case(tune_npz_from(record=False), (r"records no producing stage and config digest", REMAKE_TUNE)),
    "parquet-garbage": Case(damaged(make_measured, lambda p: p.measure_table("resnet18", 0), "garbage", SELECTIVITY),
                            (r"measure/resnet18/shard-0.parquet: cannot be read as a Parquet table \(.*\): it is corrupted or truncated", REMAKE_MEASURE)),
    "parquet-truncated": Case(damaged(make_measured, lambda p: p.measure_table("resnet18", 0), "truncate", SELECTIVITY),
                              (r"shard-0.parquet: cannot be read as a Parquet table .*corrupted or truncated", REMAKE_MEASURE)),
    "parquet-bit-flip": Case(damaged(make_measured, lambda p: p.measure_table("resnet18", 0), "flip", SELECTIVITY),
                             (r"shard-0.parquet: cannot be read as a Parquet table \(.*\): it is corrupted or truncated", REMAKE_MEASURE)),
    "parquet-column-missing": Case(rewritten_table("measure", lambda t: t.drop(columns=["area"])), (r"shard-0.parquet: has no column 'area' \(it has ", REMAKE_MEASURE)),
    "parquet-wrong-column-type": Case(rewritten_table("tune", lambda t: t.assign(unit=t["unit"].astype(str))),
                                      (r"tune/resnet18/shard-0.parquet: column 'unit' has type (large_)?string, expected an integer type", REMAKE_TUNE)),
    "parquet-other-config": Case(rewritten_table("measure", lambda t: t, {"measure": {"entropy_radius": 2}}),
                                 (r"was made with other settings of measure than the current config", REMAKE_MEASURE)),
    "parquet-rows-of-other-units": Case(rewritten_table("tune", lambda t: t.assign(unit=t["unit"] + 10)),
                                        (r"tune/resnet18/shard-0.parquet: has 6 rows of units \[10, 11\], expected units \[0, 1\]", REMAKE_TUNE)),
    "json-truncated": Case(lambda tmp, mp: _broken_metrics(tmp), (r"link/resnet18/metrics.json: is not valid JSON .*corrupted or truncated", r"`linkstyle link --classifier resnet18 --config ")),
    # --- the disk
    "disk-full-npz": Case(enospc_npz, (r"cannot write .*samples/class-0/shard-0.npz: No space left on device; the disk is full: free space, or set results_dir",
                                       r"the partial file was removed"), no_file_left("samples/class-0/shard-0.npz")),
    "disk-full-parquet": Case(enospc_parquet, (r"cannot write .*measure/resnet18/shard-0.parquet: No space left on device; the disk is full",),
                              no_file_left("measure/resnet18/shard-0.parquet")),
    "results-under-a-file": Case(results_under_a_file, (r"cannot write .*a-file/results/bad/samples/class-0/shard-0.npz: Not a directory",
                                                        r"part of the path is a file, not a folder: set results_dir")),
    "read-only-filesystem": Case(read_only_fs, (r"cannot write .*shard-0.npz: Read-only file system; the filesystem is read-only: set results_dir to a writable folder",),
                                 no_file_left("samples/class-0/shard-0.npz")),
}


def _broken_metrics(tmp: Path) -> list[str]:
    cfg = write_config(tmp)
    path = paths_of(cfg).link_metrics("resnet18")
    path.parent.mkdir(parents=True)
    path.write_text('{"classifier": "resnet18", "n_train": 1')
    return ["report", "--config", str(cfg)]


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_a_message_the_user_can_act_on(name, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    argv = case.make(tmp_path, monkeypatch)
    capsys.readouterr()
    code = main([*argv, "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"linkstyle {argv[0]}: error: ") and "Traceback" not in err, err
    for pattern in case.expect:
        assert re.search(pattern, err, re.DOTALL), f"{pattern!r} not in:\n{err}"
    if case.after is not None:
        case.after(tmp_path)


def test_the_unbroken_inputs_work(tmp_path):
    """The builders above make inputs that the stages accept, so each case fails for its own damage."""
    run_ok("selectivity", "--classifier", "resnet18", "--config", str(make_measured(tmp_path / "measured")))
    cfg = torchvision_config(tmp_path / "tv", tmp_path / "tv.pth")
    net = __import__("torchvision").models.resnet18(num_classes=3)
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    run_ok("extract", "--cls", "0", "--shard", "0", "--config", str(cfg), "-q")
    assert paths_of(cfg).extract_table(0, 0).is_file()


def test_unexpected_errors_keep_their_traceback(tmp_path, monkeypatch):
    """Only expected failures are shortened: a bug, or an OSError that is not about the user's files, propagates."""
    import linkstyle.stages.sample as sample

    def bug(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(sample, "run_sample", bug)
    with pytest.raises(ZeroDivisionError):
        main(["sample", "--cls", "0", "--shard", "0", "--config", str(write_config(tmp_path))])

    def reset(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError(errno.ECONNRESET, "connection reset")

    monkeypatch.setattr(sample, "run_sample", reset)
    with pytest.raises(ConnectionResetError):
        main(["sample", "--cls", "0", "--shard", "0", "--config", str(write_config(tmp_path))])


@pytest.mark.parametrize("kind", ["parquet", "npz"])
def test_no_flipped_byte_is_read_as_valid_data(tmp_path, kind):
    """Flip one byte at a time across a whole artifact (as a bad disk or network filesystem might):
    every read either fails with an ArtifactError or returns exactly the original data."""
    from linkstyle.artifacts import TUNE_ARRAYS, measure_table
    from linkstyle.io import ArtifactError, read_npz, read_parquet

    cfg_file = make_measured(tmp_path)
    cfg, paths = load_config(cfg_file), paths_of(cfg_file)
    if kind == "parquet":
        path, made = paths.measure_table("resnet18", 0), origin(cfg, "measure", classifier="resnet18", shard=0)
        read = lambda: read_parquet(path, origin=made, schema=measure_table())  # noqa: E731
        same = lambda x, y: x.equals(y)  # noqa: E731
    else:
        path, made = paths.tune_arrays("resnet18", 0), origin(cfg, "tune", classifier="resnet18", shard=0)
        read = lambda: read_npz(path, origin=made, arrays=TUNE_ARRAYS)  # noqa: E731
        same = lambda x, y: x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x)  # noqa: E731
    original, good = path.read_bytes(), read()
    refused = 0
    for offset in range(0, len(original), 11):  # a prime stride: every kind of region, in seconds
        flipped = bytearray(original)
        flipped[offset] ^= 0xFF
        path.write_bytes(flipped)
        try:
            assert same(read(), good), f"byte {offset} flipped: wrong data read as valid"
        except ArtifactError:
            refused += 1
    assert refused > len(original) // 11 // 2  # most bytes are data, and their damage is caught
