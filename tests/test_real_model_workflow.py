"""The whole workflow through the real-model adapters: a StyleGAN pickle from a stand-in checkout
(official layout and call signatures) and a TorchScript classifier built and scripted here."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from linkstyle.generators.stylegan import load_stylegan

from .conftest import run_snakemake
from .stylegan_standin import write_standin_pickle, write_standin_repo


class ThumbNet(nn.Module):
    """8x8 thumbnails -> 64 random ReLU features -> a least-squares linear head."""

    def __init__(self, proj: torch.Tensor, bias: torch.Tensor, head: nn.Linear):
        super().__init__()
        self.register_buffer("proj", proj)
        self.register_buffer("bias", bias)
        self.fc = head
        self.num_units = proj.shape[1]
        self.num_classes = head.out_features
        self.input_size = 32

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        t = F.adaptive_avg_pool2d(x.clamp(-1, 1), 8).flatten(1)
        return torch.relu(t @ self.proj + self.bias)

    @torch.jit.export
    def head(self, r: torch.Tensor) -> torch.Tensor:
        return self.fc(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _fit_classifier(gen, n_per_class: int = 200) -> tuple[nn.Module, float]:
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(3 * 64, 64, generator=g) / 8
    bias = torch.randn(64, generator=g) * 0.1
    seeds = list(range(10_000, 10_000 + n_per_class * gen.num_classes))
    classes = torch.arange(len(seeds)) % gen.num_classes
    with torch.no_grad():
        images = gen.synthesize(gen.mapping(gen.sample_z(seeds), classes, 0.7))
        net = ThumbNet(proj, bias, nn.Linear(64, gen.num_classes))
        r = net.features(images)
        x = torch.cat([r, torch.ones(len(r), 1)], 1)
        sol = torch.linalg.lstsq(x, F.one_hot(classes, gen.num_classes).float()).solution
        net.fc.weight.copy_(sol[:-1].T)
        net.fc.bias.copy_(sol[-1])
        accuracy = (net(images).argmax(1) == classes).float().mean().item()
    return net, accuracy


@pytest.fixture(scope="module")
def real_model_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("real-models")
    repo = write_standin_repo(work / "stylegan-xl", variant="xl", num_classes=3, resolution=32)
    pkl = write_standin_pickle(repo, work / "G.pkl")
    gen = load_stylegan(pkl, repo)
    net, accuracy = _fit_classifier(gen)
    assert accuracy > 0.8, accuracy
    torch.jit.script(net).save(str(work / "thumbnet.pt"))
    cfg = {
        "run": "standin",
        "generator": {"kind": "stylegan", "pickle": str(pkl), "repo": str(repo), "num_classes": 3, "batch_size": 64},
        "classifiers": [{"name": "thumbnet", "kind": "torchscript", "path": str(work / "thumbnet.pt"), "num_units": 64}],
        "sample": {"per_class": 80, "per_shard": 40},
        "link": {"cycle_samples": 40},
        "tune": {"units_per_shard": 32},
        "measure": {"segmenter": "whole_image"},
    }
    cfg_file = work / "standin.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake("--directory", str(work), "--configfile", str(cfg_file), "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work / "results" / "standin", repo, pkl


@pytest.mark.slow
def test_standin_stylegan_and_torchscript_classifier_run_end_to_end(real_model_run):
    root, _, _ = real_model_run
    summary = json.loads((root / "summary.json").read_text())
    s = summary["classifiers"]["thumbnet"]
    assert s["units_in_model"] == 64 and s["units_analysed"] == 64
    assert s["heldout_accuracy"] is None  # not trained by the workflow: no held-out accuracy to report
    assert s["link_r2_test"] > 0.3, s
    assert s["cycle_agreement_test"] > 0.6, s
    assert summary["resolution"] == 32
    measures = pd.read_parquet(root / "measure" / "thumbnet" / "shard-0.parquet")
    assert list(measures["part"].cat.categories) == ["image"]
    assert np.allclose(measures["area"], 1.0)
    images = np.load(root / "tune" / "thumbnet" / "shard-1.npz")["images"]
    assert images.shape == (32 * 6 * 3, 32, 32, 3)


@pytest.mark.slow
def test_convert_stylegan_cli_keeps_a_loadable_generator(real_model_run, tmp_path):
    _, repo, pkl = real_model_run
    out = tmp_path / "G_ema.pkl"
    proc = subprocess.run([sys.executable, "-m", "linkstyle", "convert-stylegan", str(pkl), str(out), "--repo", str(repo)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    a, b = load_stylegan(pkl, repo), load_stylegan(out, repo)
    w = a.mapping(a.sample_z([1, 2]), torch.tensor([0, 2]), 0.7)
    torch.testing.assert_close(a.synthesize(w), b.synthesize(w))
