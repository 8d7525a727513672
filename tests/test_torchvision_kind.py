"""Classifier kind 'torchvision': offline weights, strict loading, penultimate hook, preprocessing.

No weights are downloaded: every test saves random weights itself, under the official
file names, in a temporary TORCH_HOME.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.models import get_model_weights, get_weight

from linkstyle.classifiers import last_linear
from linkstyle.classifiers.torchvision_kind import (
    TORCHVISION_UNITS,
    TorchvisionClassifier,
    load_torchvision,
    resolve_weights,
    supported_archs,
    torchvision_unit_count,
    weights_asset,
)

#: The penultimate widths the analysis relies on (DESIGN.md section 5).
EXPECTED_UNITS = {"resnet18": 512, "resnet50": 2048, "vgg16": 4096, "alexnet": 4096, "densenet201": 1920}

#: Small sizes keep the big networks fast; the weights' own sizes are tested separately.
SMALL = {"resize_size": 72, "crop_size": 64}

_DENSENET_NEW_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12])\.(weight|bias|running_mean|running_var)$")


def _official_path(torch_home: Path, arch: str, name: str = "IMAGENET1K_V1") -> Path:
    url = get_model_weights(arch)[name].url
    return torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]


def _randomise_batchnorm(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial running statistics, so that loading them is really checked."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _legacy_densenet_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the official densenet files hold: 'norm.1'-style keys, no num_batches_tracked."""
    return {
        _DENSENET_NEW_KEY.sub(r"\1.\2.\3", k): v for k, v in state.items() if not k.endswith("num_batches_tracked")
    }


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    return home


class _Official(dict):
    """Random networks saved under their official IMAGENET1K_V1 file names, each built on first use
    (once per module, and per xdist worker only for the architectures that worker runs)."""

    def __init__(self, torch_home: Path) -> None:
        super().__init__()
        self.torch_home = torch_home

    def __missing__(self, arch: str) -> torch.nn.Module:
        torch.manual_seed(100 + list(EXPECTED_UNITS).index(arch))
        with torch.no_grad():
            net = torchvision.models.get_model(arch, weights=None).eval()
            _randomise_batchnorm(net, torch.Generator().manual_seed(0))
        state = net.state_dict()
        if arch == "densenet201":
            state = _legacy_densenet_state(state)
        torch.save(state, _official_path(self.torch_home, arch))
        if arch == "resnet50":  # the same weights as V2, for the V2 / DEFAULT preprocessing checks
            torch.save(state, _official_path(self.torch_home, arch, "IMAGENET1K_V2"))
        self[arch] = net
        return net


@pytest.fixture(scope="module")
def official(torch_home) -> dict[str, torch.nn.Module]:
    return _Official(torch_home)


def _manual_penultimate(arch: str, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the last Linear, computed by hand from torchvision's modules."""
    if arch.startswith("resnet"):
        return torch.nn.Sequential(*list(net.children())[:-1])(x).flatten(1)  # ... layer4, avgpool
    if arch in ("vgg16", "alexnet"):
        return net.classifier[:-1](torch.flatten(net.avgpool(net.features(x)), 1))  # classifier[6]'s input
    if arch == "densenet201":
        return F.adaptive_avg_pool2d(F.relu(net.features(x)), 1).flatten(1)
    raise AssertionError(arch)


# --------------------------------------------------------------------------- loading real architectures


def test_official_file_names_are_the_ones_torchvision_caches(torch_home):
    _, path = resolve_weights("resnet50", "IMAGENET1K_V1", str(torch_home))
    assert path == torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth"  # the paper's pretrained=True
    _, path = resolve_weights("densenet201", "IMAGENET1K_V1", str(torch_home))
    assert path.name == "densenet201-c1103571.pth"


@pytest.mark.parametrize("arch", list(EXPECTED_UNITS))
def test_loads_official_file_and_hooks_the_input_of_the_last_linear(arch, official, torch_home):
    net = official[arch]
    clf = load_torchvision(arch, "IMAGENET1K_V1", name=arch, device="cpu", torch_home=str(torch_home), **SMALL)
    assert isinstance(clf, TorchvisionClassifier) and not clf.training and not clf.net.training
    assert clf.num_units == TORCHVISION_UNITS[arch] == EXPECTED_UNITS[arch] == torchvision_unit_count(arch)
    assert clf.num_classes == 1000 and len(clf.class_names) == 1000
    for (k, a), b in zip(net.state_dict().items(), clf.net.state_dict().values()):
        assert torch.equal(a, b), k

    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        r = clf.features(x)
        pre = clf.preprocess(x)
        expected_logits = net(pre)  # the raw torchvision model on the same input
        expected_r = _manual_penultimate(arch, net, pre)
        head_of_features = clf.head(r)
    assert pre.shape == (2, 3, 64, 64)
    assert r.shape == (2, EXPECTED_UNITS[arch]) and head_of_features.shape == (2, 1000)
    assert (r >= 0).all()  # after the last ReLU in every one of these
    torch.testing.assert_close(head_of_features, expected_logits)
    torch.testing.assert_close(r, expected_r)


def test_preprocessing_comes_from_the_weights_transforms(official, torch_home):
    home = str(torch_home)
    official["resnet18"], official["resnet50"]  # noqa: B018 (saves their files)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    v1 = load_torchvision("resnet18", "IMAGENET1K_V1", name="r18", device="cpu", torch_home=home)
    assert (v1.resize_size, v1.crop_size, v1.interpolation) == (256, 224, "bilinear")
    torch.testing.assert_close(v1.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(v1.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert v1.preprocess(x).shape == (1, 3, 224, 224)
    v2 = load_torchvision("resnet50", "IMAGENET1K_V2", name="r50", device="cpu", torch_home=home)
    assert (v2.resize_size, v2.crop_size) == (232, 224)
    default = load_torchvision("resnet50", "DEFAULT", name="r50", device="cpu", torch_home=home)
    assert default.resize_size == 232  # DEFAULT is V2 for resnet50
    with torch.no_grad():
        torch.testing.assert_close(v2(x), default(x))
        torch.testing.assert_close(v2(x), official["resnet50"](v2.preprocess(x)))


# --------------------------------------------------------------------------- preprocessing vs torchvision's own pipeline

#: One 8-bit level after normalisation: 1 / 255 / min(std) = 0.0175. The PIL path rounds to
#: uint8 after resizing, ours stays in float, so at most one level apart (measured: max
#: 0.0175, mean 0.0052-0.0055 on noise and smooth images; exact where no resize is needed).
PIL_MAX, PIL_MEAN = 0.018, 0.007
#: torchvision's uint8 tensor path rounds too, but with the same kernel: half a level (measured max 0.0088).
U8_MAX, U8_MEAN = 0.0095, 0.005


def _images() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 3, 8, 12, generator=g), size=(200, 300), mode="bicubic", align_corners=False)
    return {
        "noise 200x300 (upsampled)": torch.randint(0, 256, (3, 200, 300), generator=g, dtype=torch.uint8),
        "noise 300x200 (upsampled)": torch.randint(0, 256, (3, 300, 200), generator=g, dtype=torch.uint8),
        "generator-like 64x64 (upsampled)": torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8),
        "noise 512x384 (downsampled, antialiased)": torch.randint(0, 256, (3, 512, 384), generator=g, dtype=torch.uint8),
        "generator-like 512x512 (downsampled, antialiased)": torch.randint(0, 256, (3, 512, 512), generator=g, dtype=torch.uint8),
        "smooth 200x300": (smooth.clamp(0, 1)[0] * 255).round().to(torch.uint8),
    }


def _classifier_for(weights_name: str) -> tuple[TorchvisionClassifier, torch.nn.Module]:
    tf = get_weight(weights_name).transforms()
    clf = TorchvisionClassifier(
        torch.nn.Linear(3, 3), name="pre", resize_size=tf.resize_size[0], crop_size=tf.crop_size[0],
        mean=tf.mean, std=tf.std, interpolation=tf.interpolation.value,
    )
    return clf, tf


def _ours(clf: TorchvisionClassifier, u8: torch.Tensor) -> torch.Tensor:
    return clf.preprocess((u8.float() / 127.5 - 1)[None])[0]  # as a generator's [-1, 1] image


@pytest.mark.parametrize("weights_name", ["ResNet50_Weights.IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V2", "VGG16_Weights.IMAGENET1K_V1"])
def test_tensor_preprocessing_matches_torchvision_pil_pipeline(weights_name):
    clf, tf = _classifier_for(weights_name)
    for what, u8 in _images().items():
        ours = _ours(clf, u8)
        via_pil = tf(Image.fromarray(u8.permute(1, 2, 0).numpy()))
        via_u8 = tf(u8)
        via_float = tf(u8.float() / 255)
        assert ours.shape == via_pil.shape == (3, tf.crop_size[0], tf.crop_size[0]), what
        d_pil, d_u8 = (ours - via_pil).abs(), (ours - via_u8).abs()
        assert d_pil.max() < PIL_MAX and d_pil.mean() < PIL_MEAN, (what, d_pil.max().item(), d_pil.mean().item())
        assert d_u8.max() < U8_MAX and d_u8.mean() < U8_MEAN, (what, d_u8.max().item(), d_u8.mean().item())
        torch.testing.assert_close(ours, via_float, atol=1e-5, rtol=0)  # same float operations


def test_no_resize_needed_is_an_exact_centre_crop():
    clf, tf = _classifier_for("ResNet50_Weights.IMAGENET1K_V1")
    u8 = torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(_ours(clf, u8), tf(Image.fromarray(u8.permute(1, 2, 0).numpy())), atol=1e-6, rtol=0)


def test_bicubic_weights_match_torchvision_tensor_path():
    """Bicubic presets (EfficientNet): torch's kernel (a=-0.75) differs from PIL's (a=-0.5) on
    pixel noise, as in torchvision itself; on smooth images both agree within about one level."""
    clf, tf = _classifier_for("EfficientNet_B0_Weights.IMAGENET1K_V1")
    assert clf.interpolation == "bicubic"
    for what, u8 in _images().items():
        d_u8 = (_ours(clf, u8) - tf(u8)).abs()
        assert d_u8.max() < U8_MAX and d_u8.mean() < U8_MEAN, (what, d_u8.max().item())
    u8 = _images()["smooth 200x300"]
    d_pil = (_ours(clf, u8) - tf(Image.fromarray(u8.permute(1, 2, 0).numpy()))).abs()
    assert d_pil.max() < 0.025 and d_pil.mean() < PIL_MEAN


def test_preprocessing_is_differentiable_and_clamps_input():
    clf, _ = _classifier_for("ResNet50_Weights.IMAGENET1K_V1")
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    clf.preprocess(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(clf.preprocess(torch.full((1, 3, 8, 8), 3.0)), clf.preprocess(torch.ones(1, 3, 8, 8)))


# --------------------------------------------------------------------------- errors and other weights


def test_missing_weights_file_says_what_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_torchvision("resnet50", "IMAGENET1K_V1", name="rn50", device="cpu", torch_home=str(tmp_path))
    msg = str(info.value)
    path = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert str(path) in msg
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in msg
    assert "ImageNet weights IMAGENET1K_V1 of torchvision resnet50" in msg
    assert "$TORCH_HOME/hub/checkpoints/" in msg and "allow_download: true" in msg and "rn50" in msg
    assert not path.exists()  # nothing downloaded


def test_weights_asset_for_doctor(tmp_path, official, torch_home):
    missing = weights_asset("resnet50", "IMAGENET1K_V1", str(tmp_path))
    assert missing == {
        "what": "ImageNet weights IMAGENET1K_V1 of torchvision resnet50",
        "path": str(tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"),
        "present": False,
        "source": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    }
    official["resnet50"]  # noqa: B018 (saves its file)
    assert weights_asset("resnet50", "IMAGENET1K_V1", str(torch_home))["present"] is True
    assert weights_asset("resnet50", "DEFAULT", str(tmp_path))["what"] == "ImageNet weights DEFAULT (= IMAGENET1K_V2) of torchvision resnet50"
    local = weights_asset("vgg16", str(tmp_path / "mine.pth"))
    assert local["present"] is False and local["path"] == str(tmp_path / "mine.pth")
    assert weights_asset("alexnet", None)["path"] is None
    assert not any(tmp_path.rglob("*.pth"))


def test_allow_download_goes_through_torchvision_into_the_checkpoint_dir(tmp_path, monkeypatch):
    """The download path itself is torchvision's; here it is replaced so that nothing is fetched."""
    calls = []
    state = torchvision.models.resnet18(weights=None).state_dict()

    def fake_get_state_dict(self, *args, **kwargs):
        calls.append((self, kwargs))
        return state

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fake_get_state_dict)
    clf = load_torchvision("resnet18", "IMAGENET1K_V1", name="r", device="cpu", allow_download=True, torch_home=str(tmp_path))
    assert clf.num_units == 512
    (member, kwargs), = calls
    assert member.name == "IMAGENET1K_V1" and kwargs["model_dir"] == str(tmp_path / "hub" / "checkpoints")


def test_torch_home_defaults_to_torch_hub_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    member, path = resolve_weights("alexnet", "IMAGENET1K_V1")
    assert path == Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert path.parent == tmp_path / "hub" / "checkpoints"


def test_weights_names_and_paths_are_told_apart(tmp_path):
    member, path = resolve_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V1", str(tmp_path))
    assert member is get_weight("ResNet50_Weights.IMAGENET1K_V1") and path.name == "resnet50-0676ba61.pth"
    assert resolve_weights("resnet50", "DEFAULT", str(tmp_path))[0].name == "IMAGENET1K_V2"
    assert resolve_weights("resnet50", "imagenet1k_v1", str(tmp_path))[0].name == "IMAGENET1K_V1"
    assert resolve_weights("resnet50", None) == (None, None)
    assert resolve_weights("resnet50", "ft/best.pth") == (None, Path("ft/best.pth"))
    with pytest.raises(ValueError, match=r"IMAGENET1K_V2.*valid: IMAGENET1K_V1, DEFAULT"):
        resolve_weights("resnet18", "IMAGENET1K_V2")  # resnet18 has V1 only
    with pytest.raises(ValueError, match="not a weights name"):
        resolve_weights("resnet18", "ResNet50_Weights.IMAGENET1K_V1")


def test_unknown_and_headless_architectures_are_value_errors():
    with pytest.raises(ValueError, match=r"unknown torchvision classification architecture 'resnet51'.*resnet50.*vgg16"):
        load_torchvision("resnet51", "IMAGENET1K_V1", name="x", device="cpu")
    with pytest.raises(ValueError, match="no nn.Linear"):
        torchvision_unit_count("squeezenet1_1")
    with pytest.raises(ValueError, match="unknown torchvision"):
        weights_asset("fasterrcnn_resnet50_fpn", "DEFAULT")  # a detection model, not a classifier


def _resnet18_state(num_classes: int = 1000, seed: int = 7) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes).eval()
    return net, net.state_dict()


def test_mismatched_state_dict_lists_missing_and_unexpected_keys(tmp_path):
    _, state = _resnet18_state()
    del state["fc.bias"]
    state["bogus.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as info:
        load_torchvision("resnet18", str(tmp_path / "bad.pth"), name="x", device="cpu")
    msg = str(info.value)
    assert "1 missing key(s): fc.bias" in msg and "1 unexpected key(s): bogus.weight" in msg and "bad.pth" in msg


def test_long_key_lists_are_truncated_with_a_count(tmp_path):
    _, state = _resnet18_state()
    gone = [k for k in state if k.startswith("layer4.")]
    state = {k: v for k, v in state.items() if k not in gone}
    torch.save(state, tmp_path / "short.pth")
    counted = [k for k in gone if not k.endswith("num_batches_tracked")]  # BatchNorm refills those itself
    with pytest.raises(ValueError, match=rf"{len(counted)} missing key\(s\): .*and {len(counted) - 10} more; 0 unexpected key\(s\): none"):
        load_torchvision("resnet18", str(tmp_path / "short.pth"), name="x", device="cpu")


def test_shape_mismatch_is_a_value_error(tmp_path):
    _, state = _resnet18_state()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="size mismatch for conv1.weight"):
        load_torchvision("resnet18", str(tmp_path / "shape.pth"), name="x", device="cpu")


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "dataparallel"])
def test_fine_tuned_head_loads_from_an_explicit_path(tmp_path, wrap):
    net, state = _resnet18_state(num_classes=10)
    payload = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "optimizer": {}},
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(payload, tmp_path / "finetuned.pt")
    clf = load_torchvision("resnet18", str(tmp_path / "finetuned.pt"), name="ft", device="cpu")
    assert clf.num_classes == 10 and clf.num_units == 512 and clf.class_names == ()
    assert (clf.resize_size, clf.crop_size) == (256, 224)  # the architecture's IMAGENET1K_V1 preset
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(clf.head(clf.features(x)), net(clf.preprocess(x)))


def test_explicit_path_with_1000_classes_and_overrides(tmp_path):
    net, state = _resnet18_state()
    torch.save(state, tmp_path / "r18.pth")
    clf = load_torchvision("resnet18", str(tmp_path / "r18.pth"), name="p", device=torch.device("cpu"), **SMALL)
    assert clf.num_classes == 1000 and len(clf.class_names) == 1000 and clf.class_names[0] == "tench"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net(clf.preprocess(x)))
    assert next(clf.parameters()).device.type == "cpu"


def test_missing_explicit_path_and_non_state_dict_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"state-dict file of torchvision resnet18 .*nope\.pth"):
        load_torchvision("resnet18", str(tmp_path / "nope.pth"), name="x", device="cpu")
    torch.save(torchvision.models.resnet18(weights=None), tmp_path / "module.pth")  # a whole pickled module
    with pytest.raises(ValueError, match=r"state_dict\(\)"):
        load_torchvision("resnet18", str(tmp_path / "module.pth"), name="x", device="cpu")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        load_torchvision("resnet18", str(tmp_path / "meta.pth"), name="x", device="cpu")


def test_random_weights_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="linkstyle.classifiers.torchvision_kind"):
        clf = load_torchvision("resnet18", None, name="dbg", device="cpu")
    assert "RANDOM weights" in caplog.text and clf.num_classes == 1000


def test_googlenet_is_built_as_torchvision_builds_it_for_weights(tmp_path):
    torch.manual_seed(3)
    net = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).eval()
    _official_path(tmp_path, "googlenet").parent.mkdir(parents=True)
    torch.save(net.state_dict(), _official_path(tmp_path, "googlenet"))  # the official file holds the aux heads
    clf = load_torchvision("googlenet", "IMAGENET1K_V1", name="g", device="cpu", torch_home=str(tmp_path), **SMALL)
    assert clf.net.transform_input and clf.net.aux1 is None and clf.num_units == 1024 == TORCHVISION_UNITS["googlenet"]
    net.transform_input = True
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net(clf.preprocess(x)))


# --------------------------------------------------------------------------- the unit table


@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")
def test_unit_table_matches_torchvision():
    assert set(TORCHVISION_UNITS) <= set(supported_archs())
    for arch, units in TORCHVISION_UNITS.items():
        if arch.startswith("regnet") and arch not in ("regnet_x_400mf", "regnet_y_400mf"):
            continue  # RegNet does not build on the meta device; the big ones are slow on the CPU
        try:
            with torch.device("meta"):
                net = torchvision.models.get_model(arch, weights=None)
        except (NotImplementedError, RuntimeError):
            net = torchvision.models.get_model(arch, weights=None)
        assert last_linear(net).in_features == units, arch


def test_unit_count_builds_architectures_missing_from_the_table(monkeypatch):
    import linkstyle.classifiers.torchvision_kind as tvk

    monkeypatch.delitem(tvk.TORCHVISION_UNITS, "resnet34")
    monkeypatch.delitem(tvk.TORCHVISION_UNITS, "regnet_x_400mf")
    assert torchvision_unit_count("resnet34") == 512
    assert torchvision_unit_count("regnet_x_400mf") == 400
    assert torchvision_unit_count("ResNet50") == 2048  # names are case-insensitive


def test_module_imports_without_torch():
    """The Snakefile reads unit counts at parse time: the module itself needs no torch to import."""
    path = Path(__file__).resolve().parents[1] / "src" / "linkstyle" / "classifiers" / "torchvision_kind.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('tvk', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch imported'\n"
        "print(m.TORCHVISION_UNITS['densenet201'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1920"


# --------------------------------------------------------------------------- on a GPU (skipped without one)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["resnet50", "vgg16", "densenet201"])
def test_on_cuda_preprocessing_and_features_match_the_cpu(arch, official, torch_home, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare float32 with float32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    official[arch]  # noqa: B018 (saves its file)
    cpu = load_torchvision(arch, "IMAGENET1K_V1", name=arch, device="cpu", torch_home=str(torch_home))
    gpu = load_torchvision(arch, "IMAGENET1K_V1", name=arch, device="cuda", torch_home=str(torch_home))
    assert all(t.is_cuda for t in gpu.state_dict().values())
    g = torch.Generator().manual_seed(5)
    for size in (256, 128):  # a generator's output, and a smaller one that is upsampled
        x = torch.rand(4, 3, size, size, generator=g) * 2 - 1
        with torch.no_grad():
            pre_c, pre_g = cpu.preprocess(x), gpu.preprocess(x.cuda())
            (r_c, l_c), (r_g, l_g) = cpu.features_and_logits(x), gpu.features_and_logits(x.cuda())
        assert pre_g.is_cuda and r_g.is_cuda
        pre_err = (pre_g.cpu() - pre_c).abs().max().item()
        r_err = ((r_g.cpu() - r_c).abs().max() / r_c.abs().max()).item()
        l_err = ((l_g.cpu() - l_c).abs().max() / l_c.abs().max()).item()
        print(f"\n{arch} {size}px cuda vs cpu: preprocess max {pre_err:.2e}, features rel {r_err:.2e}, logits rel {l_err:.2e}")
        assert pre_err < 1e-4 and r_err < 1e-3 and l_err < 1e-3
    x = (torch.rand(1, 3, 256, 256, generator=g) * 2 - 1).cuda().requires_grad_()
    gpu.head(gpu.features(x))[0, 0].backward()  # the counterfactual search differentiates through all of it
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
