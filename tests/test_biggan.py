"""BigGAN adapter, on a small random pytorch-pretrained-BigGAN saved like the official folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pbg = pytest.importorskip("pytorch_pretrained_biggan")

from linkstyle.generators.base import Generator  # noqa: E402
from linkstyle.generators.biggan import (  # noqa: E402
    OFFICIAL_WEIGHTS,
    BigGAN,
    BigGANLoadError,
    biggan_asset,
    load_biggan,
)

Z_DIM = 16
CONFIG = dict(
    output_dim=32,
    z_dim=Z_DIM,
    class_embed_dim=Z_DIM,
    channel_width=4,
    num_classes=1000,
    # (up-sample?, in, out) in units of channel_width: 4 -> 8 -> 16 -> 32 px, ends at 1 * width
    layers=[(True, 16, 8), (False, 8, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)],
    attention_layer_position=2,
    eps=1e-4,
    n_stats=51,
)


def _random_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = pbg.BigGAN(pbg.BigGANConfig.from_dict(CONFIG))
    with torch.no_grad():
        for name, buf in model.named_buffers():
            # distinct batch-norm statistics per truncation level, so truncation matters
            if name.endswith("running_means"):
                buf.normal_(0, 0.3)
            elif name.endswith("running_vars"):
                buf.uniform_(0.5, 2.0)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)  # attention on
        # the unconditional last batch norm's affine parameters are left uninitialised
        model.generator.bn.weight.uniform_(0.5, 1.5)
        model.generator.bn.bias.normal_(0, 0.1)
        # converge the spectral norms' power iteration (it runs once per training-mode
        # forward); with the random initial vectors the eval-mode weights blow up
        model.train()
        cond = torch.randn(1, 2 * Z_DIM)
        for _ in range(30):
            model.generator(cond, 1.0)
    return model.eval()


def _write(folder: Path, model: torch.nn.Module, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or CONFIG))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    model = _random_model()
    return _write(tmp_path_factory.mktemp("biggan"), model), model


def test_load_shapes_and_protocol(saved):
    folder, _ = saved
    G = load_biggan(folder, truncation=0.7)
    assert isinstance(G, Generator)
    assert (G.z_dim, G.w_dim, G.num_ws, G.num_classes, G.resolution) == (Z_DIM, 2 * Z_DIM, 1, 1000, 32)
    assert len(G.class_names) == 1000 and G.class_names[3] == "tiger shark"  # ImageNet's names
    assert G.truncation == 0.7
    z = G.sample_z([1, 2, 3])
    assert z.shape == (3, Z_DIM) and z.dtype == torch.float32
    w = G.mapping(z, torch.tensor([0, 5, 999]), 0.7)
    assert w.shape == (3, 2 * Z_DIM)
    img, gt = G.render(w)
    assert gt is None and img.shape == (3, 3, 32, 32) and img.dtype == torch.float32
    assert float(img.min()) >= -1.0 and float(img.max()) <= 1.0
    assert float(img.std()) > 0
    assert G.to("cpu") is G


def test_round_trip_equals_package_forward(saved):
    folder, reference = saved
    for t in (1.0, 0.7, 0.4):
        G = load_biggan(folder, truncation=t)
        z = G.sample_z([10, 11])
        classes = torch.tensor([7, 42])
        ours = G.synthesize(G.mapping(z, classes, t))
        one_hot = torch.from_numpy(pbg.one_hot_from_int([7, 42], batch_size=2)).float()
        noise = torch.from_numpy(pbg.truncated_noise_sample(batch_size=1, dim_z=Z_DIM, truncation=t, seed=10))
        noise = torch.cat([noise, torch.from_numpy(pbg.truncated_noise_sample(1, Z_DIM, t, seed=11))])
        with torch.no_grad():
            theirs = reference(noise, one_hot, t)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_w_layout_is_scaled_z_then_embedding(saved):
    G = load_biggan(saved[0])
    z = G.sample_z([4, 5])
    w = G.mapping(z, torch.tensor([3, 8]), 0.5)
    torch.testing.assert_close(w[:, :Z_DIM], 0.5 * z)
    torch.testing.assert_close(w[:, Z_DIM:], G.model.embeddings.weight[:, [3, 8]].T)


def test_determinism_and_batch_independence(saved):
    G = load_biggan(saved[0], truncation=0.7)
    a = G.sample_z([3, 9, 2**32 - 1])
    b = G.sample_z([2**32 - 1])
    torch.testing.assert_close(a[2:], b)
    torch.testing.assert_close(G.sample_z([9]), a[1:2])
    assert not torch.equal(a[0], a[1])
    assert float(a.abs().max()) <= 2.0  # truncated normal on [-2, 2]
    assert G.sample_z([]).shape == (0, Z_DIM)
    w = G.mapping(a, torch.tensor([1, 2, 3]), 0.7)
    one = G.synthesize(w)
    torch.testing.assert_close(one, G.synthesize(w), rtol=0, atol=0)
    torch.testing.assert_close(one[1:2], G.synthesize(w[1:2]), rtol=1e-5, atol=1e-6)
    G.train()  # stays eval: spectral norm must not update its vectors
    assert not G.model.training
    torch.testing.assert_close(one, G.synthesize(w), rtol=0, atol=0)
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ValueError, match="seeds"):
            G.sample_z([bad])


def test_psi_behaviour(saved):
    G = load_biggan(saved[0], truncation=0.7)
    z = G.sample_z([1, 2])
    classes = torch.tensor([5, 5])
    centre = G.mapping(z, classes, 0.0)
    torch.testing.assert_close(centre[0], centre[1])  # psi 0: the class centre, z-free
    assert torch.count_nonzero(centre[:, :Z_DIM]) == 0
    full, half = G.mapping(z, classes, 1.0), G.mapping(z, classes, 0.5)
    torch.testing.assert_close(half[:, :Z_DIM], 0.5 * full[:, :Z_DIM])
    torch.testing.assert_close(half[:, Z_DIM:], full[:, Z_DIM:])
    # the generator's batch-norm truncation is the adapter's, not part of w
    other = load_biggan(saved[0], truncation=1.0)
    assert not torch.allclose(G.synthesize(half), other.synthesize(half))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="truncation_psi"):
            G.mapping(z, classes, bad)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="truncation"):
            load_biggan(saved[0], truncation=bad)


def test_input_validation(saved):
    G = load_biggan(saved[0])
    z = G.sample_z([1])
    with pytest.raises(ValueError, match="class indices"):
        G.mapping(z, torch.tensor([1000]))
    with pytest.raises(ValueError, match="integer class"):
        G.mapping(z, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="shape"):
        G.mapping(z, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"z must be"):
        G.mapping(torch.zeros(1, Z_DIM + 1), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"w must be"):
        G.synthesize(torch.zeros(1, Z_DIM))
    named = load_biggan(saved[0], class_names={207: "retriever"})
    assert named.class_names[207] == "retriever" and named.class_names[0] == "tench"
    with pytest.raises(ValueError, match="1000 classes"):
        BigGAN(_random_model(), class_names=["a", "b"])


def test_gradient_flows_to_w(saved):
    G = load_biggan(saved[0])
    w = G.mapping(G.sample_z([1]), torch.tensor([3])).requires_grad_(True)
    G.synthesize(w).mean().backward()
    assert w.grad is not None and float(w.grad.abs().sum()) > 0


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_biggan(tmp_path / "nope")
    text = str(info.value)
    assert "not found" in text and str(tmp_path / "nope") in text
    for weights_url, config_url in OFFICIAL_WEIGHTS.values():
        assert weights_url in text and config_url in text
    assert "s3.amazonaws.com/models.huggingface.co/biggan/biggan-deep-256-pytorch_model.bin" in text
    # a shortcut name is only ever a (missing) local folder: nothing is fetched
    with pytest.raises(FileNotFoundError, match="biggan-deep-256"):
        load_biggan("biggan-deep-256")
    (tmp_path / "only_config").mkdir()
    (tmp_path / "only_config" / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(FileNotFoundError, match="no pytorch_model.bin"):
        load_biggan(tmp_path / "only_config")
    (tmp_path / "only_weights").mkdir()
    (tmp_path / "only_weights" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_biggan(tmp_path / "only_weights")


def test_strict_loading_errors(tmp_path):
    model = _random_model()
    state = model.state_dict()
    folder = _write(tmp_path / "partial", model)
    partial = {k: v for k, v in state.items() if not k.startswith("generator.conv_to_rgb")}
    partial["extra.weight"] = torch.zeros(1)
    torch.save(partial, folder / "pytorch_model.bin")
    with pytest.raises(BigGANLoadError, match=r"missing keys: generator\.conv_to_rgb.*unexpected keys: extra\.weight"):
        load_biggan(folder)
    wide = _write(tmp_path / "wide", model, dict(CONFIG, channel_width=8))
    with pytest.raises(BigGANLoadError, match="does not match"):
        load_biggan(wide)
    bad_json = _write(tmp_path / "badjson", model)
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(BigGANLoadError, match="config.json"):
        load_biggan(bad_json)
    wrong_dim = _write(tmp_path / "dim", model, dict(CONFIG, output_dim=128))
    with pytest.raises(ValueError, match="output_dim is 128"):
        load_biggan(wrong_dim)


def test_asset(saved, tmp_path):
    present = biggan_asset(saved[0])
    assert present["present"] is True and present["path"] == str(saved[0])
    assert set(present) == {"what", "path", "present", "source"}
    absent = biggan_asset(tmp_path / "none")
    assert absent["present"] is False
    assert "biggan-deep-512-pytorch_model.bin" in absent["source"]
