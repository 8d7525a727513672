"""Classifier kind ``timm``: offline loading of local weight files, Linear-head features, timm's preprocessing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402  (a dependency of timm)
from timm.data import create_transform, resolve_model_data_config  # noqa: E402

from linkstyle.classifiers.timm_kind import (  # noqa: E402
    load_timm,
    timm_preprocessing,
    timm_unit_count,
    timm_weights_asset,
)
from linkstyle.classifiers.torchvision_kind import TorchvisionClassifier  # noqa: E402

#: two small models: a ResNet and a ConvNeXt (whose Linear sits inside a norm/pool head module)
MODELS = {"resnet18": 512, "convnext_atto": 320}


def _save(net: torch.nn.Module, path: Path) -> Path:
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each model with random weights (seeded), saved once: resnet18 as .safetensors, convnext_atto as .pth."""
    out = {}
    root = tmp_path_factory.mktemp("timm_weights")
    for i, (name, suffix) in enumerate(zip(MODELS, (".safetensors", ".pth"))):
        torch.manual_seed(i)
        net = timm.create_model(name, pretrained=False).eval()
        for m in net.modules():  # non-trivial BatchNorm statistics, so that loading them is checked too
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        out[name] = (net, _save(net, root / f"{name}{suffix}"))
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_loads_local_file_and_features_are_the_input_of_the_last_linear(name, saved):
    ref, path = saved[name]
    clf = load_timm(name, str(path), name_in_config="clf", device="cpu")
    assert isinstance(clf, TorchvisionClassifier) and not clf.training
    assert clf.num_units == timm_unit_count(name) == MODELS[name]
    assert clf.num_classes == 1000
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(clf.net.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert not any(t.is_meta for t in [*clf.net.parameters(), *clf.net.buffers()])

    x = torch.rand(2, 3, 72, 72, generator=torch.Generator().manual_seed(1)) * 2 - 1
    captured = []
    hook = ref.get_classifier().register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        feats, logits = clf.features_and_logits(x)
        expected = ref(clf.preprocess(x))
    hook.remove()
    assert feats.shape == (2, MODELS[name])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats, captured[0].flatten(1), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(clf.head(feats), logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(clf.head(clf.features(x)), clf(x), rtol=1e-5, atol=1e-5)


def test_preprocessing_comes_from_timms_data_config():
    # the tag selects the config: resnet18's default tag a1_in1k uses crop_pct 0.95, bicubic
    net = timm.create_model("resnet18", pretrained=False)
    pre = timm_preprocessing(net)
    assert pre == {"resize_size": 235, "crop_size": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                   "interpolation": "bicubic"}
    net = timm.create_model("resnet50.tv_in1k", pretrained=False)
    assert timm_preprocessing(net)["resize_size"] == 256 and timm_preprocessing(net)["interpolation"] == "bilinear"


def _images() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(160, 160), mode="bilinear", align_corners=False)[0]
    return {
        "noise 256": torch.randint(0, 256, (3, 256, 256), generator=g, dtype=torch.uint8),
        "smooth 160": (smooth * 255).round().to(torch.uint8),
    }


@pytest.mark.parametrize("name", ["resnet18", "resnet50.tv_in1k", "vit_tiny_patch16_224"])
def test_tensor_preprocessing_matches_timms_own_pil_transform(name):
    """Measured against ``timm.data.create_transform(**cfg)`` on PIL images, in 8-bit levels of [0, 1]:
    on smooth images within 1.1 levels (max) everywhere; bilinear on noise: exact at 256 -> 256 (no resize)
    or within 1.1 levels; bicubic on pixel noise: torch's kernel (a=-0.75) differs from PIL's (a=-0.5),
    up to 20 levels at single pixels, 0.37 levels on average (as in torchvision itself)."""
    net = timm.create_model(name, pretrained=False)
    cfg = resolve_model_data_config(net)
    tf = create_transform(**cfg)
    clf = TorchvisionClassifier(torch.nn.Linear(3, 3), name="pre", **timm_preprocessing(net))
    std = torch.tensor(cfg["std"]).view(3, 1, 1)
    for what, u8 in _images().items():
        ours = clf.preprocess((u8.float() / 127.5 - 1)[None])[0]
        via_pil = tf(Image.fromarray(u8.permute(1, 2, 0).numpy()))
        assert ours.shape == via_pil.shape == (3, 224, 224)
        levels = (ours - via_pil).abs() * std * 255
        if what.startswith("smooth") or cfg["interpolation"] == "bilinear":
            assert levels.max() < 1.5 and levels.mean() < 0.5, (what, levels.max().item(), levels.mean().item())
        else:
            assert levels.max() < 25 and levels.mean() < 0.5, (what, levels.max().item(), levels.mean().item())


def test_missing_file_says_what_where_and_the_hub_id_without_fetching(tmp_path, monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        assert not pretrained, "tried to download"
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    path = tmp_path / "nope" / "resnet18.safetensors"
    with pytest.raises(FileNotFoundError) as err:
        load_timm("resnet18", str(path), name_in_config="clf", device="cpu")
    text = str(err.value)
    assert str(path) in text and "timm weights of resnet18" in text and "timm/resnet18.a1_in1k" in text
    assert "allow_download" in text and "'clf'" in text
    with pytest.raises(ValueError, match="weights is required.*timm/resnet18.a1_in1k"):
        load_timm("resnet18", None, name_in_config="clf", device="cpu")


def test_weights_asset_for_doctor(tmp_path, saved):
    info = timm_weights_asset("resnet18", str(saved["resnet18"][1]))
    assert info["present"] is True and info["what"] == "timm weights of resnet18" and info["path"] == str(saved["resnet18"][1])
    assert "timm/resnet18.a1_in1k" in info["source"]
    info = timm_weights_asset("convnext_atto.d2_in1k", str(tmp_path / "x.safetensors"))
    assert info["present"] is False and "timm/convnext_atto.d2_in1k" in info["source"]
    info = timm_weights_asset("resnet18", None)
    assert info["present"] is False and info["path"] is None and "timm/resnet18.a1_in1k" in info["source"]


def test_allow_download_goes_through_timm(monkeypatch, tmp_path):
    calls = []
    real = timm.create_model

    def fake(name, pretrained=False, **kw):
        calls.append(pretrained)
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", fake)
    clf = load_timm("resnet18", str(tmp_path / "absent.safetensors"), name_in_config="c", device="cpu", allow_download=True)
    assert calls[-1] is True and calls.count(True) == 1 and clf.num_units == 512


def test_mismatched_state_dict_lists_missing_and_unexpected_keys(tmp_path, saved):
    state = dict(saved["resnet18"][0].state_dict())
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ValueError, match=r"1 missing key\(s\): layer1\.0\.conv1\.weight; 1 unexpected key\(s\): extra\.weight"):
        load_timm("resnet18", str(path), name_in_config="c", device="cpu")
    other = _save(timm.create_model("resnet34", pretrained=False), tmp_path / "resnet34.pth")
    with pytest.raises(ValueError, match="does not fit the architecture.*unexpected key"):
        load_timm("resnet18", str(other), name_in_config="c", device="cpu")


def test_fine_tuned_head_and_wrapped_checkpoints_load(tmp_path):
    net = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    path = tmp_path / "ft.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    clf = load_timm("resnet18", str(path), name_in_config="c", device="cpu")
    assert clf.num_classes == 7 and clf.num_units == 512


def test_unknown_names_and_heads_without_a_single_linear_are_value_errors():
    with pytest.raises(ValueError, match="unknown timm model 'resnt18'.*resnet18"):
        timm_unit_count("resnt18")
    with pytest.raises(ValueError, match="unknown timm model"):
        load_timm("no_such_model_xyz", "w.safetensors", name_in_config="c", device="cpu")
    with pytest.raises(ValueError, match="unknown pretrained tag 'bogus'.*resnet18.a1_in1k"):
        timm_unit_count("resnet18.bogus")
    with pytest.raises(ValueError, match="2 classifier heads"):
        timm_unit_count("deit_tiny_distilled_patch16_224")


def test_unreadable_file_is_a_value_error(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot be read as a safetensors file"):
        load_timm("resnet18", str(path), name_in_config="c", device="cpu")


def test_module_imports_without_torch():
    code = (
        "import sys\n"
        "import linkstyle.classifiers.timm_kind\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
