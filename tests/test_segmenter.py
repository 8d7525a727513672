"""The few-shot part segmenter: features, training on critters, determinism, files, IoU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from linkstyle.classifiers.demo import DEMO_MEAN, DEMO_STD, build_demo_net
from linkstyle.classifiers.wrapper import Classifier
from linkstyle.errors import LinkstyleError
from linkstyle.generators.critters import PART_NAMES, Critters
from linkstyle.segmenter import (
    IMAGE_CHANNELS,
    PartSegmenter,
    SegmenterError,
    classifier_maps,
    drop_fragments,
    generator_features,
    image_features,
    load_segmenter,
    mean_iou,
    predict_masks,
    save_segmenter,
    train_segmenter,
)

REPO = Path(__file__).resolve().parents[1]
K = len(PART_NAMES)


@pytest.fixture(scope="module")
def gen() -> Critters:
    return Critters(num_classes=5, resolution=64, seed=0)


def _render(gen: Critters, seeds: range) -> tuple[torch.Tensor, np.ndarray]:
    classes = torch.tensor(list(seeds)) % gen.num_classes
    with torch.inference_mode():
        w = gen.mapping(gen.sample_z(list(seeds)), classes, truncation_psi=0.7)
        images, truth = gen.render(w)
    return images, truth.masks.numpy()


@pytest.fixture(scope="module")
def data(gen: Critters) -> dict[str, np.ndarray | torch.Tensor]:
    train_images, train_masks = _render(gen, range(100, 110))
    test_images, test_masks = _render(gen, range(500, 540))
    return {"x": image_features(train_images), "y": train_masks, "xt": image_features(test_images), "yt": test_masks}


@pytest.fixture(scope="module")
def trained(data) -> tuple[PartSegmenter, dict]:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return train_segmenter(data["x"], data["y"], K, steps=150, seed=0)


# ----------------------------------------------------------------------------- IoU


def test_mean_iou_by_hand() -> None:
    truth = np.array([[[0, 0, 1, 1], [0, 0, 1, 2]]], dtype=np.uint8)
    pred = np.array([[[0, 1, 1, 1], [0, 0, 1, 1]]], dtype=np.uint8)
    miou, per = mean_iou(pred, truth, 4)
    # part 0: 3 hit, union 4; part 1: 3 hit, union 5 + ... ; part 2: 0 / 1; part 3 absent from both
    np.testing.assert_allclose(per[:3], [3 / 4, 3 / 5, 0.0])
    assert np.isnan(per[3])
    assert miou == pytest.approx((3 / 4 + 3 / 5 + 0) / 3)
    assert mean_iou(truth, truth, 4)[0] == 1.0
    # pooled over images, not averaged per image
    a = np.zeros((2, 2, 2), np.uint8)
    b = a.copy()
    a[0, 0, 0] = 1  # truth has part 1 in image 0 only; prediction misses it
    b[1, 0, 0] = 1  # and predicts it in image 1 only
    assert mean_iou(b, a, 2)[1][1] == 0.0
    with pytest.raises(ValueError, match="shape"):
        mean_iou(a, a[:1], 2)
    with pytest.raises(ValueError, match="0..1"):
        mean_iou(a + 2, a, 2)


# ----------------------------------------------------------------------------- features


def test_drop_fragments_by_hand() -> None:
    """Islands go to the part around them; pieces of like size (two eyes) stay; 0 keeps all."""
    m = np.zeros((1, 16, 16), np.uint8)
    m[0, 2:10, 2:10] = 1  # a body of 64 px
    m[0, 12:16, 4:16] = 2  # part 2: 48 px ...
    m[0, 4, 4] = 2  # ... and a 1-px island of it inside the body
    m[0, 0, 15] = 1  # a 1-px island of the body in the background
    m[0, 11, 0:2] = 3
    m[0, 14, 0:2] = 3  # two 2-px pieces of part 3: both kept
    out = drop_fragments(m, 0.05)
    assert out[0, 4, 4] == 1 and out[0, 0, 15] == 0
    assert (out[0, 11, 0:2] == 3).all() and (out[0, 14, 0:2] == 3).all()
    assert (out != m).sum() == 2
    assert (drop_fragments(m, 0.0) == m).all()
    # Exact masks of the built-in world barely change (< 0.5% of pixels): a rule for noise, not for parts.
    gen = Critters(num_classes=5, resolution=64, seed=0)
    seeds = list(range(300, 332))
    with torch.inference_mode():
        _, truth = gen.render(gen.mapping(gen.sample_z(seeds), torch.tensor(seeds) % 5, truncation_psi=0.7))
    masks = truth.masks.numpy().astype(np.uint8)
    assert (drop_fragments(masks, 0.05) != masks).mean() < 0.005


def _drop_fragments_one_image_at_a_time(masks: np.ndarray, min_fraction: float) -> np.ndarray:
    """The rule as its docstring states it, image by image and part by part."""
    from scipy import ndimage

    out = masks.copy()
    for i, m in enumerate(masks):
        keep = np.zeros(m.shape, bool)
        for part in np.unique(m):
            pieces, n = ndimage.label(m == part)
            sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
            keep |= np.isin(pieces, np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1)
        if not keep.all():
            nearest = ndimage.distance_transform_edt(~keep, return_distances=False, return_indices=True)
            out[i] = m[nearest[0], nearest[1]]
    return out


@pytest.mark.parametrize("min_fraction", [0.05, 0.3, 1.0])
def test_drop_fragments_labels_all_images_at_once_as_one_at_a_time(min_fraction: float) -> None:
    """One labelling of the stacked images: pieces touching the next image's top row stay apart."""
    rng = np.random.default_rng(5)
    masks = rng.integers(0, 4, (12, 9, 11)).astype(np.uint8)
    masks[3:6] = rng.integers(0, 2, (3, 9, 11))  # large pieces running to the images' edges
    np.testing.assert_array_equal(drop_fragments(masks, min_fraction),
                                  _drop_fragments_one_image_at_a_time(masks, min_fraction))


def test_image_features_shape(data) -> None:
    x = data["x"]
    assert x.dtype == torch.float32 and x.shape == (10, len(IMAGE_CHANNELS), 64, 64)
    assert torch.isfinite(x).all()


def test_classifier_maps_keep_one_map_per_stride() -> None:
    """ResNet-18 at 64 px: stem ReLU (stride 2), layer1 (4), layer2 (8); nothing coarser."""
    torch.manual_seed(0)
    clf = Classifier(build_demo_net("resnet18", 5, 64), name="r", input_size=None, mean=DEMO_MEAN, std=DEMO_STD).eval()
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        maps = classifier_maps(clf, images)
        stacked = image_features(images, clf, batch_size=2)
    assert [tuple(m.shape) for m in maps] == [(3, 64, 32, 32), (3, 64, 16, 16), (3, 128, 8, 8)]
    with torch.inference_mode():
        expected = clf.net.layer2(clf.net.layer1(clf.net.maxpool(clf.net.relu(clf.net.bn1(clf.net.conv1(clf.preprocess(images)))))))
    torch.testing.assert_close(maps[2], expected)
    assert stacked.shape == (3, len(IMAGE_CHANNELS) + 256, 64, 64)


def test_classifier_maps_other_architecture() -> None:
    """The hooks are generic: a MobileNet gives its own maps at strides 2, 4 and 8."""
    torch.manual_seed(0)
    clf = Classifier(build_demo_net("mobilenet_v3_small", 5, 64), name="m", input_size=None, mean=DEMO_MEAN, std=DEMO_STD).eval()
    with torch.inference_mode():
        maps = classifier_maps(clf, torch.zeros(2, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [32, 16, 8]


class _FakeStyleGAN:
    resolution = 16

    def features(self, w: torch.Tensor, layers=None) -> dict[str, torch.Tensor]:
        maps = {"b4": w[:, :2, None, None].expand(-1, -1, 4, 4), "b16": w[:, :3, None, None].expand(-1, -1, 16, 16) * 2}
        return {k: v for k, v in maps.items() if layers is None or k in layers}


def test_generator_features(gen: Critters) -> None:
    w = torch.arange(15.0).view(3, 5)
    f = generator_features(_FakeStyleGAN(), w, batch_size=2)
    assert f.shape == (3, 5, 16, 16) and f.dtype == torch.float32
    torch.testing.assert_close(f[:, 2:, 5, 7], 2 * w[:, :3])
    torch.testing.assert_close(f[:, :2, 0, 0], w[:, :2])
    assert generator_features(_FakeStyleGAN(), w, ["b4"]).shape == (3, 2, 16, 16)
    assert generator_features(_FakeStyleGAN(), w, size=8).shape == (3, 5, 8, 8)
    with pytest.raises(SegmenterError, match="Critters has no features.*use image features") as info:
        generator_features(gen, torch.zeros(1, gen.w_dim))
    assert isinstance(info.value, LinkstyleError)


# ----------------------------------------------------------------------------- training


def test_learns_critter_parts(trained, data) -> None:
    """10 labelled images, 150 steps: every part clearly above chance (all-background scores 0.11)."""
    model, info = trained
    pred = predict_masks(model, data["xt"], batch_size=16)
    assert pred.dtype == np.uint8 and pred.shape == data["yt"].shape
    miou, per = mean_iou(pred, data["yt"], K)
    assert miou > 0.65, (miou, per)  # width 16: 0.74-0.77 over seeds 0-2, tail 0.50-0.64 (width 32: 0.81-0.82)
    assert np.all(per > 0.4), per
    assert info["train_images"] == 10 and info["steps"] == 150 and np.isfinite(info["final_loss"])


def test_deterministic_from_seed(data) -> None:
    x, y = data["x"][:4], data["y"][:4]
    a, _ = train_segmenter(x, y, K, steps=8, seed=3, width=8)
    b, _ = train_segmenter(x.numpy(), y, K, steps=8, seed=3, width=8)
    c, _ = train_segmenter(x, y, K, steps=8, seed=4, width=8)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    logits = [m(data["xt"][:4]).detach() for m in (a, b, c)]
    assert torch.equal(logits[0], logits[1]) and not torch.equal(logits[0], logits[2])
    assert np.array_equal(predict_masks(a, data["xt"][:4]), predict_masks(b, data["xt"][:4]))


def test_train_rejects_bad_inputs(data) -> None:
    with pytest.raises(ValueError, match="do not match"):
        train_segmenter(data["x"][:3], data["y"][:2], K, steps=1)
    with pytest.raises(ValueError, match="num_parts is 4"):
        train_segmenter(data["x"][:3], data["y"][:3], 4, steps=1)


def test_standardisation_is_stored(trained, data) -> None:
    model, _ = trained
    flat = data["x"].transpose(0, 1).reshape(data["x"].shape[1], -1)
    torch.testing.assert_close(model.mean.flatten(), flat.mean(1))
    assert {"mean", "std"} <= set(dict(model.named_buffers()))


# ----------------------------------------------------------------------------- files


def test_save_load_round_trip(trained, data, tmp_path: Path) -> None:
    model, _ = trained
    path = tmp_path / "seg" / "segmenter.pt"
    save_segmenter(path, model, {"parts": list(PART_NAMES), "features": "image"})
    loaded, meta = load_segmenter(path)
    assert meta == {"parts": list(PART_NAMES), "features": "image"}
    assert np.array_equal(predict_masks(loaded, data["xt"][:8]), predict_masks(model, data["xt"][:8]))
    assert not list(path.parent.glob("*.tmp*"))


def test_load_errors(trained, tmp_path: Path) -> None:
    remake = "linkstyle segment --config config.yaml"
    missing = tmp_path / "none.pt"
    with pytest.raises(SegmenterError, match=rf"none\.pt: segmenter file not found; remake it with `{remake}`"):
        load_segmenter(missing, remake)
    bad = tmp_path / "bad.pt"
    save_segmenter(bad, trained[0])
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(SegmenterError, match=r"bad\.pt: cannot be read as a segmenter .*corrupted or truncated; remake it"):
        load_segmenter(bad, remake)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(SegmenterError, match=r"other\.pt: is not a segmenter written by linkstyle"):
        load_segmenter(other)


# ----------------------------------------------------------------------------- benchmark


def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "segmenter.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_segmenter.py"), "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "image+resnet18-random" in done.stdout
    report = json.loads(out.read_text())
    assert report["settings"]["quick"] is True and report["parts"] == list(PART_NAMES)
    assert [r["source"] for r in report["results"]] == ["image", "image+resnet18-random"]
    assert all(set(r["iou"]) == set(PART_NAMES) and 0 <= r["mean_iou"] <= 1 for r in report["results"])
