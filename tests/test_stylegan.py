"""StyleGAN adapter, loaded from a stand-in checkout and pickles (tests/stylegan_standin.py)."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from linkstyle.generators.base import Generator
from linkstyle.generators.stylegan import (
    StyleGAN,
    StyleGANLoadError,
    convert_stylegan,
    custom_ops_fallback,
    load_stylegan,
    official_modules,
)

from .stylegan_standin import STANDIN_URL, write_standin_pickle, write_standin_repo

# Tests switch between stand-in checkouts; the adapter warns each time (tested once below).
pytestmark = pytest.mark.filterwarnings("ignore:replacing already imported modules:RuntimeWarning")

XL_LAYERS = {  # name: (channels, size after cropping) for resolution 32, num_ws 6, margin 10
    "input": (16, 8),
    "L0_28_16": (16, 8),
    "L1_36_16": (16, 16),
    "L2_52_16": (16, 32),
    "L3_32_16": (16, 32),
    "L4_32_3": (3, 32),
}


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """(checkout, pickle) per case; each pickle is built in its own Python process."""
    root = tmp_path_factory.mktemp("stylegan")
    cases = {
        "xl": (dict(variant="xl"), False),
        "sg3": (dict(variant="sg3"), False),
        "global": (dict(variant="global"), False),
        "broken": (dict(variant="xl"), True),  # same network as "xl", D cannot be unpickled
        "uncond": (dict(variant="xl", num_classes=0, resolution=16, z_dim=8, w_dim=12, num_ws=7), False),
    }
    out = {}
    for name, (kwargs, broken) in cases.items():
        repo = write_standin_repo(root / f"repo_{name}", **kwargs)
        out[name] = (repo, write_standin_pickle(repo, root / f"{name}.pkl", with_broken_discriminator=broken))
    return out


def _load(nets: dict[str, tuple[Path, Path]], name: str, **kwargs: object) -> StyleGAN:
    repo, pkl = nets[name]
    return load_stylegan(pkl, repo, **kwargs)


def _batch(gen: StyleGAN, n: int = 6, psi: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    classes = torch.arange(n) % gen.num_classes
    return gen.mapping(gen.sample_z(range(n)), classes, truncation_psi=psi), classes


# ---------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", ["xl", "sg3", "global"])
def test_load_reads_everything_from_the_network(nets, name) -> None:
    path_before = list(sys.path)
    gen = _load(nets, name)
    assert sys.path == path_before
    assert isinstance(gen, Generator)
    assert (gen.z_dim, gen.w_dim, gen.num_ws, gen.num_classes, gen.resolution) == (16, 16, 6, 3, 32)
    assert gen.variant == ("xl" if name == "xl" else "global")  # from w_avg's shape: per-class centres or one
    assert gen.G.mapping.w_avg.shape == ((3, 16) if name == "xl" else (16,))
    assert gen.G.standin_role == "G_ema"  # not the pickle's G
    assert gen.class_names == ("class_0", "class_1", "class_2")
    assert not gen.G.training and not any(p.requires_grad for p in gen.G.parameters())
    assert gen.train() is gen and gen.training and not gen.G.training  # G stays in eval mode
    assert gen.to("cpu") is gen and gen.device == torch.device("cpu")


def test_other_shapes_and_unconditional_network(nets) -> None:
    gen = _load(nets, "uncond")
    assert (gen.z_dim, gen.w_dim, gen.num_ws, gen.resolution) == (8, 12, 7, 16)
    assert (gen.c_dim, gen.num_classes, gen.variant) == (0, 1, "global")  # w_avg is [w_dim]
    w, _ = _batch(gen, 4, psi=0.0)
    assert torch.equal(w, gen.G.mapping.w_avg.expand(4, -1))
    assert gen.synthesize(w).shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\[0, 0\].*unconditional"):
        gen.mapping(gen.sample_z([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="unconditional"):
        StyleGAN(gen.G, class_names=["cat", "dog"])
    feats = gen.features(w[:1])
    layers = dict(gen.G.synthesis.named_children())
    assert list(feats) == list(layers)
    for name, f in feats.items():  # cropped to the sampling rate: 4, 4, 8, 16, 16, 16, 16
        rate = getattr(layers[name], "out_sampling_rate", getattr(layers[name], "sampling_rate", None))
        assert f.shape[2:] == (rate, rate), name
    assert [f.shape[-1] for f in feats.values()] == [4, 4, 8, 16, 16, 16, 16]


def test_class_names(nets, tmp_path) -> None:
    gen = _load(nets, "xl", class_names=["fox", "cat", "mouse"])
    assert gen.class_names == ("fox", "cat", "mouse")
    assert StyleGAN(gen.G, class_names={1: "cat"}).class_names == ("class_0", "cat", "class_2")
    with pytest.raises(ValueError, match="3 classes"):
        StyleGAN(gen.G, class_names=["fox", "cat"])
    with pytest.raises(ValueError, match=r"outside \[0, 2\]"):
        StyleGAN(gen.G, class_names={3: "owl"})
    # A StyleGAN-XL checkout ships ImageNet labels; they name the classes when they fit c_dim.
    repo = shutil.copytree(nets["xl"][0], tmp_path / "repo_labels")
    (repo / "media").mkdir()
    (repo / "media" / "imagenet_idx2labels.txt").write_text(
        "{0: 'tench, Tinca tinca',\n 1: 'goldfish, Carassius auratus',\n 2: 'great white shark, white shark'}\n"
    )
    gen = load_stylegan(nets["xl"][1], repo)
    assert gen.class_names == ("tench", "goldfish", "great white shark")


def test_switching_checkouts_warns_and_keeps_old_networks_working(nets) -> None:
    first = _load(nets, "xl")
    w, _ = _batch(first, 2)
    before = first.synthesize(w)
    with pytest.warns(RuntimeWarning, match="replacing already imported modules"):
        _load(nets, "global")
    assert sys.modules["legacy"].__file__ == str(nets["global"][0] / "legacy.py")
    assert torch.equal(first.synthesize(w), before)


# ---------------------------------------------------------------------------- latents


@pytest.mark.parametrize("name", ["xl", "sg3", "global"])
def test_truncation_towards_the_right_centre(nets, name) -> None:
    gen = _load(nets, name)
    z = gen.sample_z(range(6))
    classes = torch.tensor([0, 1, 2, 2, 1, 0])
    w_avg = gen.G.mapping.w_avg
    centre = w_avg[classes] if name == "xl" else w_avg.expand(6, -1)
    assert torch.equal(gen.mapping(z, classes, truncation_psi=0.0), centre)
    w1 = gen.mapping(z, classes)
    c = torch.nn.functional.one_hot(classes, 3).float()
    assert torch.equal(w1, gen.G.mapping(z, c)[:, 0])  # untruncated: the network's own w
    w_half = gen.mapping(z, classes, truncation_psi=0.5)
    torch.testing.assert_close(w_half, centre + 0.5 * (w1 - centre))
    # ... which is what the network's own truncation does to every row
    ws = gen.G.mapping(z, c, truncation_psi=0.5)
    torch.testing.assert_close(ws, w_half[:, None].expand(-1, gen.num_ws, -1))
    assert w_half.dtype == torch.float32 and w_half.shape == (6, 16)
    if name == "xl":  # per-class centres really differ
        assert not torch.allclose(w_avg[0], w_avg[1], atol=0.1)


def test_sample_z_is_per_seed(nets) -> None:
    gen = _load(nets, "xl")
    z = gen.sample_z([3, 4, 5])
    assert z.dtype == torch.float32 and z.device.type == "cpu" and z.shape == (3, 16)
    assert torch.equal(z[1], gen.sample_z([4])[0])
    assert torch.equal(z, gen.sample_z([3, 4, 5]))
    expected = np.random.RandomState(4).randn(16).astype(np.float32)  # as the official gen_images.py
    assert torch.equal(z[1], torch.from_numpy(expected))
    assert not torch.equal(z[0], z[1])
    assert gen.sample_z([]).shape == (0, 16)
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ValueError, match="seeds"):
            gen.sample_z([bad])


def test_mapping_validates_inputs(nets) -> None:
    gen = _load(nets, "xl")
    z = gen.sample_z([0, 1])
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 2\].*max 3"):
        gen.mapping(z, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        gen.mapping(z, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="integer"):
        gen.mapping(z, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \[2\]"):
        gen.mapping(z, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        gen.mapping(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        gen.synthesize(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="truncation_cutoff"):
        StyleGAN(gen.G, truncation_cutoff=3)
    assert StyleGAN(gen.G, truncation_cutoff=6).truncation_cutoff == 6
    with pytest.raises(ValueError, match="no attribute 'z_dim'"):
        StyleGAN(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------- images


@pytest.mark.parametrize("name", ["xl", "sg3", "global"])
def test_synthesize(nets, name) -> None:
    gen = _load(nets, name)
    w, _ = _batch(gen, 6, psi=0.7)
    img = gen.synthesize(w)
    assert img.shape == (6, 3, 32, 32) and img.dtype == torch.float32
    assert torch.isfinite(img).all() and img.abs().max() <= 1.0 and img.std() > 0.2
    assert torch.equal(gen.synthesize(w), img)  # same w, same image (constant noise)
    images, truth = gen.render(w)
    assert truth is None and torch.equal(images, img)
    torch.testing.assert_close(gen.synthesize(w[2:3]), img[2:3], atol=1e-5, rtol=0)  # batch-independent
    assert (gen.synthesize(w + 0.05 * torch.randn_like(w)) - img).abs().mean() < (
        gen.synthesize(torch.roll(w, 1, 0)) - img
    ).abs().mean()  # smooth in w
    if name == "global":  # the network does have noise, so constant noise matters
        ws = w[:, None].repeat(1, gen.num_ws, 1)
        assert not torch.equal(gen.G.synthesis(ws, noise_mode="random"), gen.G.synthesis(ws, noise_mode="random"))


def test_gradients_reach_w(nets) -> None:
    gen = _load(nets, "xl")
    w, _ = _batch(gen, 2)
    w = w.clone().requires_grad_(True)
    gen.synthesize(w).square().mean().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["xl", "sg3", "global"])
def test_classes_are_visibly_different(nets, name) -> None:
    """A nearest-class-mean classifier on 8x8 thumbnails tells the stand-in's classes apart."""
    gen = _load(nets, name)
    n = 60
    classes = torch.arange(3).repeat_interleave(n)
    with torch.no_grad():
        images = gen.synthesize(gen.mapping(gen.sample_z(range(1000, 1000 + 3 * n)), classes))
    x = torch.nn.functional.avg_pool2d(images, 4).flatten(1)
    train = torch.arange(3 * n) % 2 == 0
    means = torch.stack([x[train & (classes == k)].mean(0) for k in range(3)])
    accuracy = (torch.cdist(x[~train], means).argmin(1) == classes[~train]).float().mean()
    assert accuracy >= 0.9


# ---------------------------------------------------------------------------- features


@pytest.mark.parametrize("name", ["xl", "sg3"])
def test_features_are_cropped_of_their_margin(nets, name) -> None:
    gen = _load(nets, name)
    assert gen.feature_layers == tuple(XL_LAYERS)
    w, _ = _batch(gen, 2)
    raw = {}
    hooks = [
        layer.register_forward_hook(lambda m, a, out, name=name: raw.__setitem__(name, out))
        for name, layer in gen.G.synthesis.named_children()
    ]
    feats = gen.features(w)
    for h in hooks:
        h.remove()
    assert list(feats) == list(XL_LAYERS)
    for name, (channels, size) in XL_LAYERS.items():
        assert feats[name].shape == (2, channels, size, size), name
        margin = (raw[name].shape[-1] - size) // 2
        assert margin == (10 if raw[name].shape[-1] != 32 else 0), name
        assert torch.equal(feats[name], raw[name][:, :, margin : margin + size, margin : margin + size])
    # the last map is the image before the output nonlinearity: nothing was cut off it
    torch.testing.assert_close(torch.tanh(0.5 * feats["L4_32_3"]), gen.synthesize(w))
    some = gen.features(w, layers=["L1_36_16", "input"])
    assert list(some) == ["L1_36_16", "input"] and torch.equal(some["input"], feats["input"])
    with pytest.raises(ValueError, match="unknown synthesis layer.*available: input, L0_28_16"):
        gen.features(w, layers=["L9"])
    with pytest.raises(RuntimeError, match="whole number of pixels"):
        gen.feature_margin(gen.G.synthesis.L0_28_16, 27, 27)


def test_features_of_blocks_have_no_margin(nets) -> None:
    gen = _load(nets, "global")
    w, _ = _batch(gen, 2)
    feats = gen.features(w)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        f"b{r}": (2, 16, r, r) for r in (4, 8, 16, 32)
    }  # the x of each block's (x, img), uncropped
    assert not torch.equal(feats["b32"], gen.features(torch.roll(w, 1, 0))["b32"])


# ---------------------------------------------------------------------------- pickles


def test_unloadable_discriminator_is_skipped(nets) -> None:
    repo, pkl = nets["broken"]
    path_before = list(sys.path)
    with pytest.warns(RuntimeWarning, match=r"No module named 'standin_missing_dependency'\); read G_ema alone, skipping D"):
        gen = load_stylegan(pkl, repo)
    assert sys.path == path_before
    assert gen.G.standin_role == "G_ema"
    reference = _load(nets, "xl")  # the same network, pickled with a working D
    w, _ = _batch(reference, 4, psi=0.7)
    assert torch.equal(gen.mapping(reference.sample_z(range(4)), torch.arange(4) % 3, 0.7), w)
    assert torch.equal(gen.synthesize(w), reference.synthesize(w))


def test_standin_pickle_needs_its_checkout(nets, tmp_path) -> None:
    """Like an official pickle: the network classes come from the checkout's modules."""
    code = f"import pickle; pickle.load(open({str(nets['xl'][1])!r}, 'rb'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "No module named 'torch_utils'" in done.stderr


def test_generator_that_cannot_be_rebuilt_names_convert(nets, tmp_path) -> None:
    repo = shutil.copytree(nets["xl"][0], tmp_path / "repo_without_ops")
    (repo / "torch_utils" / "ops" / "bias_act.py").unlink()  # G_ema's module imports it
    path_before = list(sys.path)
    with pytest.raises(StyleGANLoadError, match=r"G_ema itself could not be rebuilt.*bias_act") as info:
        load_stylegan(nets["xl"][1], repo)
    assert "linkstyle convert-stylegan" in str(info.value)
    assert sys.path == path_before


def test_convert_keeps_only_the_generator(nets, tmp_path) -> None:
    repo, pkl = nets["broken"]
    out = tmp_path / "slim.pkl"
    with pytest.warns(RuntimeWarning, match="skipping D"):
        assert convert_stylegan(pkl, out, repo) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slim.pkl"]  # no temporary left
    with official_modules(repo) as legacy, open(out, "rb") as f:
        data = legacy.load_network_pkl(f)  # the official loader reads it (it checks G, D, G_ema)
    assert data["G"] is data["G_ema"] and list(data["D"].children()) == []
    assert data["augment_pipe"] is None and data["training_set_kwargs"]["resolution"] == 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback needed any more
        slim = load_stylegan(out, repo)
    with pytest.warns(RuntimeWarning, match="skipping D"):
        original = load_stylegan(pkl, repo)
    w, _ = _batch(original, 4, psi=0.7)
    assert torch.equal(slim.synthesize(w), original.synthesize(w))
    assert torch.equal(slim.G.mapping.w_avg, original.G.mapping.w_avg)
    with pytest.raises(ValueError, match="overwrite its input"):
        convert_stylegan(out, out, repo)
    with pytest.raises(FileNotFoundError, match="output folder"):
        convert_stylegan(pkl, tmp_path / "missing" / "x.pkl", repo)


def test_clear_errors(nets, tmp_path) -> None:
    repo, pkl = nets["xl"]
    path_before = list(sys.path)
    missing = tmp_path / "imagenet256.pkl"
    with pytest.raises(FileNotFoundError) as info:
        load_stylegan(missing, repo)
    text = str(info.value)
    assert str(missing) in text and "G_ema" in text and STANDIN_URL in text and "never downloads" in text

    with pytest.raises(FileNotFoundError, match=r"checkout not found.*git clone https://github.com/autonomousvision/stylegan-xl"):
        load_stylegan(pkl, tmp_path / "no_such_checkout")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing legacy.py, dnnlib/__init__.py.*git clone"):
        load_stylegan(pkl, tmp_path / "empty")
    no_legacy = shutil.copytree(repo, tmp_path / "repo_no_legacy")
    (no_legacy / "legacy.py").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing legacy.py"):
        load_stylegan(pkl, no_legacy)

    needs_more = shutil.copytree(repo, tmp_path / "repo_needs_more")
    legacy_py = needs_more / "legacy.py"
    legacy_py.write_text("import click_not_installed_here\n" + legacy_py.read_text())
    with pytest.raises(ImportError, match=r"click_not_installed_here.*checkout's own requirements"):
        load_stylegan(pkl, needs_more)

    # A module the network's own code imports while it is rebuilt (stylegan3's torch_utils imports
    # pkg_resources): the error names it first, and says the environment, not the file, is the problem.
    # The pickle carries its modules' source, so the module goes missing between pickling and loading.
    needs_module = shutil.copytree(repo, tmp_path / "repo_needs_module")
    (needs_module / "pkg_resources_not_here.py").write_text("")
    networks_py = needs_module / "training" / "networks.py"
    networks_py.write_text(networks_py.read_text().replace("import numpy as np\n", "import numpy as np\nimport pkg_resources_not_here  # noqa: F401\n", 1))
    needs_pkl = write_standin_pickle(needs_module, tmp_path / "needs_module.pkl")
    (needs_module / "pkg_resources_not_here.py").unlink()
    with pytest.raises(StyleGANLoadError, match=r"lacks the module 'pkg_resources_not_here'.*\[stylegan\]") as err:
        load_stylegan(needs_pkl, needs_module)
    assert str(err.value).index("lacks the module") < str(err.value).index("legacy.load_network_pkl")
    assert "convert-stylegan" not in str(err.value)

    no_g_ema = tmp_path / "no_g_ema.pkl"
    no_g_ema.write_bytes(pickle.dumps({"G": torch.nn.Linear(2, 2), "D": torch.nn.Linear(2, 2)}))
    with pytest.raises(ValueError, match=r"no_g_ema.pkl holds no 'G_ema' generator \(found \['D', 'G'\]\)"):
        load_stylegan(no_g_ema, repo)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="garbage.pkl is not a readable pickle"):
        load_stylegan(garbage, repo)
    assert sys.path == path_before


def test_custom_ops_fallback(nets) -> None:
    repo, _ = nets["xl"]
    gen = _load(nets, "xl")
    ops = sys.modules["torch_utils.ops.bias_act"]
    assert Path(ops.__file__).parent == repo / "torch_utils" / "ops"
    assert ops._init._linkstyle_fallback and ops.build_attempts == 0
    gen.synthesize(_batch(gen, 1)[0])
    assert ops.build_attempts == 0  # on the CPU the op never tries to build its plugin
    with pytest.warns(RuntimeWarning, match="'bias_act' failed to build.*reference implementation"):
        assert ops._init() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ops._init() is False  # no second build, no second warning
    assert ops.build_attempts == 1
    original = ops._init.__wrapped__
    assert custom_ops_fallback() == ["bias_act"]  # idempotent: still one wrapper
    assert ops._init.__wrapped__ is original and not hasattr(original, "_linkstyle_fallback")
    fresh = _load(nets, "global")  # another checkout: its own, unwrapped module
    ops2 = sys.modules["torch_utils.ops.bias_act"]
    assert ops2 is not ops and ops2._init._linkstyle_fallback
    custom_ops_fallback(force_reference=True)
    assert ops2._init() is False and ops2.build_attempts == 0  # reference ops without building
    assert fresh.synthesize(_batch(fresh, 1)[0]).shape == (1, 3, 32, 32)
