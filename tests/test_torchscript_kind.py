"""Classifier kind 'torchscript': a scripted module exporting features(x) and head(r)."""

from __future__ import annotations

import runpy

import pytest
import torch
import torchvision
from torch import nn

from linkstyle.classifiers.torchscript_kind import (
    DEFAULT_PROBE_SIZE,
    SCRIPT_EXAMPLE,
    ScriptedClassifier,
    load_torchscript,
    torchscript_unit_count,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # FutureWarning or DeprecationWarning


class Tiny(nn.Module):
    """features: [-1, 1] images -> 16 units; head: 16 -> 5 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(16, 5)
        self.num_units = 16
        self.class_names = ["a", "b", "c", "d", "e"]

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x + 1) * 0.5)

    @torch.jit.export
    def head(self, r: torch.Tensor) -> torch.Tensor:
        return self.fc(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FixedSize(nn.Module):
    """No num_units / num_classes attributes; only works at input_size 8 (no pooling): the probe must use it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 7)
        self.input_size = 8

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).flatten(1)

    @torch.jit.export
    def head(self, r: torch.Tensor) -> torch.Tensor:
        return self.fc(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class NoHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class VGGLike(nn.Module):
    """A torchvision-style network scripted as is: 'features' is a submodule, not a method."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _save(module: nn.Module, path) -> None:
    torch.jit.script(module.eval()).save(str(path))


def test_scripted_module_loads_with_its_attributes(tmp_path):
    torch.manual_seed(0)
    _save(Tiny(), tmp_path / "tiny.pt")
    clf = load_torchscript(tmp_path / "tiny.pt", name="tiny", device="cpu")
    assert isinstance(clf, ScriptedClassifier) and not clf.training
    assert (clf.name, clf.num_units, clf.num_classes) == ("tiny", 16, 5)
    assert clf.class_names == ("a", "b", "c", "d", "e")
    x = torch.rand(3, 3, 20, 20) * 2 - 1
    torch.testing.assert_close(clf.preprocess(x), x)  # the module preprocesses itself
    with torch.no_grad():
        r, logits = clf.features_and_logits(x)
        assert r.shape == (3, 16) and logits.shape == (3, 5)
        torch.testing.assert_close(clf.head(clf.features(x)), clf.module(x))
        torch.testing.assert_close(clf(x), logits)
        torch.testing.assert_close(clf.features(x), r)
    assert torchscript_unit_count(tmp_path / "tiny.pt") == 16


def test_missing_widths_are_probed_at_the_module_input_size(tmp_path):
    torch.manual_seed(1)
    _save(FixedSize(), tmp_path / "fixed.pt")
    clf = load_torchscript(str(tmp_path / "fixed.pt"), name="fixed", device=torch.device("cpu"))
    assert (clf.num_units, clf.num_classes, clf.class_names) == (128, 7, ())
    assert torchscript_unit_count(tmp_path / "fixed.pt") == 128
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(clf.head(clf.features(x)), clf.module(x))


def test_probe_defaults_to_64_pixels(tmp_path):
    class At64(FixedSize):
        """Works only on 64x64 images and says nothing about its size or widths."""

        def __init__(self) -> None:
            super().__init__()
            del self.input_size
            self.fc = nn.Linear(2 * 64 * 64, 7)

    _save(At64(), tmp_path / "at64.pt")
    assert DEFAULT_PROBE_SIZE == 64
    clf = load_torchscript(tmp_path / "at64.pt", name="n", device="cpu")
    assert (clf.num_units, clf.num_classes) == (2 * 64 * 64, 7)


def test_missing_head_shows_how_to_script_a_classifier(tmp_path):
    _save(NoHead(), tmp_path / "nohead.pt")
    with pytest.raises(ValueError) as info:
        load_torchscript(tmp_path / "nohead.pt", name="x", device="cpu")
    msg = str(info.value)
    assert "lacks the method head()" in msg and "features()" not in msg.split("linkstyle needs")[0]
    assert "@torch.jit.export" in msg and SCRIPT_EXAMPLE in msg
    with pytest.raises(ValueError, match=r"lacks the method head\(\)"):
        torchscript_unit_count(tmp_path / "nohead.pt")


def test_features_submodule_is_not_taken_for_the_method(tmp_path):
    _save(VGGLike(), tmp_path / "vgglike.pt")
    with pytest.raises(ValueError, match=r"lacks the method features\(\) and head\(\).*'features' is a submodule"):
        load_torchscript(tmp_path / "vgglike.pt", name="x", device="cpu")


def test_missing_file_says_what_it_must_contain(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_torchscript(tmp_path / "absent.pt", name="x", device="cpu")
    msg = str(info.value)
    assert str(tmp_path / "absent.pt") in msg and "features(x)" in msg and "head(r)" in msg and "torch.jit.script" in msg
    with pytest.raises(FileNotFoundError):
        torchscript_unit_count(tmp_path / "absent.pt")


def test_a_state_dict_is_not_a_torchscript_file(tmp_path):
    torch.save(Tiny().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="could not be loaded as a TorchScript module"):
        load_torchscript(tmp_path / "weights.pt", name="x", device="cpu")


def test_features_must_be_flat_when_probed(tmp_path):
    class Maps(FixedSize):
        @torch.jit.export
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(x))

        @torch.jit.export
        def head(self, r: torch.Tensor) -> torch.Tensor:
            return self.fc(r.flatten(1))

    _save(Maps(), tmp_path / "maps.pt")
    with pytest.raises(ValueError, match=r"returned shape \(1, 2, 8, 8\).*\[B, num_units\]"):
        load_torchscript(tmp_path / "maps.pt", name="x", device="cpu")


def test_the_documented_example_works(tmp_path, monkeypatch):
    """SCRIPT_EXAMPLE, as shown in the error message, with random resnet18 weights instead of a download."""
    script = tmp_path / "make_classifier.py"
    script.write_text(SCRIPT_EXAMPLE.replace('weights="IMAGENET1K_V1"', "weights=None").replace("resnet50", "resnet18"))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(2)
    runpy.run_path(str(script), run_name="make_classifier")  # writes classifier.pt
    clf = load_torchscript(tmp_path / "classifier.pt", name="ex", device="cpu")
    assert (clf.num_units, clf.num_classes) == (512, 1000)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        r, logits = clf.features_and_logits(x)
        assert r.shape == (2, 512)
        torch.testing.assert_close(clf.head(clf.features(x)), clf.module(x))
        torch.testing.assert_close(logits, clf.module(x))
        # the same as torchvision's resnet18 holding the scripted weights, on the example's preprocessing
        net = torchvision.models.resnet18(weights=None).eval()
        names = [n for n, _ in net.named_children()]  # body.<i> is the i-th child of the ResNet
        state = {}
        for k, v in clf.module.state_dict().items():
            if k.startswith("body."):
                i, rest = k[len("body."):].split(".", 1)
                state[f"{names[int(i)]}.{rest}"] = v
            elif k.startswith("fc."):
                state[k] = v
        net.load_state_dict(state, strict=True)
        pre = torch.nn.functional.interpolate((x + 1) / 2, size=[224, 224], mode="bilinear", antialias=True)
        pre = (pre - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.testing.assert_close(logits, net(pre))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_module_and_the_probe_run_on_the_device(tmp_path):
    class NoAttrs(Tiny):
        def __init__(self) -> None:
            super().__init__()
            del self.num_units

    _save(NoAttrs(), tmp_path / "noattrs.pt")
    clf = load_torchscript(tmp_path / "noattrs.pt", name="n", device="cuda")
    assert (clf.num_units, clf.num_classes) == (16, 5)  # probed on the GPU
    assert all(t.is_cuda for t in clf.module.state_dict().values())
    x = torch.rand(2, 3, 16, 16, device="cuda") * 2 - 1
    with torch.no_grad():
        r, logits = clf.features_and_logits(x)
    assert r.is_cuda and logits.shape == (2, 5)
    cpu = load_torchscript(tmp_path / "noattrs.pt", name="n", device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(logits.cpu(), cpu(x.cpu()), atol=1e-5, rtol=1e-4)


def test_the_workflow_loader_checks_a_declared_unit_count_and_the_class_set(tmp_path):
    from linkstyle.classifiers import load_classifier
    from linkstyle.config import ConfigError, from_dict

    _save(Tiny(), tmp_path / "tiny.pt")
    spec = {"name": "tiny", "kind": "torchscript", "path": str(tmp_path / "tiny.pt")}
    ok = from_dict({"classifiers": [{**spec, "num_units": 16}], "classes": [0, 4]})
    assert load_classifier(ok, "tiny", torch.device("cpu")).num_units == 16
    wrong_units = from_dict({"classifiers": [{**spec, "num_units": 32}], "classes": [0, 4]})
    with pytest.raises(ConfigError, match="has 16 penultimate units, but its num_units says 32"):
        load_classifier(wrong_units, "tiny", torch.device("cpu"))
    too_few_classes = from_dict({"classifiers": [spec], "generator": {"num_classes": 8}, "classes": [0, 7]})
    with pytest.raises(ConfigError, match=r"has 5 classes, which does not cover the class set \[0, 7\]"):
        load_classifier(too_few_classes, "tiny", torch.device("cpu"))
