"""Unit tests for the procedural Critters generator."""

from __future__ import annotations

import pytest
import torch

from linkstyle.generators.base import Generator, GroundTruth
from linkstyle.generators.critters import (
    _LABEL,
    _LAYERS,
    _MASK_CODE,
    CLASS_NAMES,
    FACTOR_NAMES,
    FACTOR_RANGES,
    PART_NAMES,
    Critters,
    sample_z,
)

F = {name: i for i, name in enumerate(FACTOR_NAMES)}
P = {name: i for i, name in enumerate(PART_NAMES)}


@pytest.fixture(scope="module")
def gen() -> Critters:
    return Critters(num_classes=5, resolution=64, seed=0)


@pytest.fixture(scope="module")
def batch(gen: Critters) -> tuple[torch.Tensor, torch.Tensor]:
    """w for 40 samples of each species, at truncation 1."""
    classes = torch.arange(gen.num_classes).repeat_interleave(40)
    return gen.mapping(sample_z(range(len(classes))), classes), classes


def _with_logit(gen: Critters, w: torch.Tensor, factor: str, value: float) -> torch.Tensor:
    """w with one factor's logit set, all other factors kept."""
    logits = gen.w_to_logits(w).clone()
    logits[:, F[factor]] = value
    return gen.logits_to_w(logits)


def test_interface(gen: Critters) -> None:
    assert isinstance(gen, Generator)
    assert (gen.z_dim, gen.w_dim, gen.num_ws) == (32, len(FACTOR_NAMES), 1)
    assert 20 <= len(FACTOR_NAMES) <= 25 and len(set(FACTOR_NAMES)) == len(FACTOR_NAMES)
    assert PART_NAMES == ("background", "body", "head", "ear", "eye", "nose", "leg", "tail")
    assert gen.class_names == CLASS_NAMES[:5] and len(set(CLASS_NAMES)) == len(CLASS_NAMES) >= 10
    assert all(lo < hi for lo, hi in FACTOR_RANGES.values())
    assert gen.w_avg.shape == (5, gen.w_dim)
    assert gen.to("cpu") is gen


def test_mask_codes_follow_painters_order() -> None:
    codes = [_MASK_CODE[name] for name in _LAYERS]
    assert codes == sorted(codes) and len(set(codes)) == len(codes)
    assert all(_MASK_CODE[name] % 8 == _LABEL[name] for name in _LAYERS)


def test_same_seed_is_bit_identical_and_other_seed_differs() -> None:
    z, classes = sample_z(range(20)), torch.arange(20) % 4
    a, b, c = (Critters(4, 64, seed=s) for s in (7, 7, 8))
    wa, wb, wc = (g.mapping(z, classes) for g in (a, b, c))
    assert torch.equal(wa, wb)
    ia, ta = a.render(wa)
    ib, tb = b.render(wb)
    assert (
        torch.equal(ia, ib)
        and torch.equal(ta.masks, tb.masks)
        and torch.equal(ta.factors, tb.factors)
    )
    assert not torch.allclose(wa, wc)
    assert not torch.allclose(ia, c.synthesize(wc))
    # Same instance, same input, again: still identical.
    assert torch.equal(a.synthesize(wa), ia)


@pytest.mark.parametrize("res", [32, 64, 128])
def test_shapes_dtypes_ranges(res: int) -> None:
    g = Critters(num_classes=3, resolution=res, seed=1)
    w = g.mapping(sample_z(range(70)), torch.arange(70) % 3)  # 70: several blocks at 64, 128 px
    assert w.shape == (70, g.w_dim) and w.dtype == torch.float32
    images, gt = g.render(w)
    assert isinstance(gt, GroundTruth)
    assert images.shape == (70, 3, res, res) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0 and torch.isfinite(images).all()
    assert images.std() > 0.1
    assert gt.masks.shape == (70, res, res) and gt.masks.dtype == torch.uint8
    assert int(gt.masks.max()) < len(PART_NAMES)
    assert gt.factors.shape == (70, len(FACTOR_NAMES)) and gt.factors.dtype == torch.float32
    assert gt.factors.min() >= 0.0 and gt.factors.max() <= 1.0
    assert gt.part_names == PART_NAMES and gt.factor_names == FACTOR_NAMES
    assert torch.equal(g.synthesize(w), images)
    assert torch.equal(g.ground_truth(w).masks, gt.masks)
    empty = g.synthesize(w[:0])
    assert empty.shape == (0, 3, res, res)


def test_truncation(gen: Critters) -> None:
    z, classes = sample_z(range(30)), torch.arange(30) % 5
    w1 = gen.mapping(z, classes)
    assert torch.equal(gen.mapping(z, classes, truncation_psi=1.0), w1)
    assert torch.equal(gen.mapping(z, classes, truncation_psi=0.0), gen.w_avg[classes])
    half = gen.mapping(z, classes, truncation_psi=0.5)
    torch.testing.assert_close(half, 0.5 * (w1 + gen.w_avg[classes]))
    far = gen.mapping(z, classes, truncation_psi=0.3)
    assert ((far - gen.w_avg[classes]).norm(dim=1) < (w1 - gen.w_avg[classes]).norm(dim=1)).all()


def test_w_avg_is_the_class_mean(gen: Critters) -> None:
    classes = torch.full((4000,), 2)
    w = gen.mapping(sample_z(range(4000)), classes)
    spread = w.std(dim=0).mean()
    assert (w.mean(dim=0) - gen.w_avg[2]).abs().max() < 0.1 * spread


def test_factors_round_trip(gen: Critters) -> None:
    logits = torch.linspace(-3, 3, 4 * gen.w_dim).reshape(4, gen.w_dim)
    w = logits @ gen.rotation.T + gen.offset  # w = R logits + t
    torch.testing.assert_close(gen.logits_to_w(logits), w)
    torch.testing.assert_close(gen.w_to_logits(w), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gen.factors(w), torch.sigmoid(logits), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        gen.ground_truth(w).factors, torch.sigmoid(logits), atol=1e-6, rtol=1e-5
    )
    # R is orthogonal and entangles: every w coordinate mixes many factors.
    torch.testing.assert_close(
        gen.rotation @ gen.rotation.T, torch.eye(gen.w_dim), atol=1e-5, rtol=0
    )
    assert ((gen.rotation.abs() > 0.02).sum(dim=1) >= gen.w_dim // 2).all()


def test_every_w_coordinate_changes_the_image(
    gen: Critters, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    w0 = batch[0][:1].repeat(gen.w_dim, 1)
    base = gen.synthesize(w0)
    moved = gen.synthesize(w0 + 1.0 * torch.eye(gen.w_dim))
    assert ((moved - base).abs().flatten(1).amax(dim=1) > 0.05).all()


def test_parts_present_and_inside_frame(
    gen: Critters, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    masks = gen.ground_truth(batch[0]).masks
    present = torch.stack([(masks == k).flatten(1).any(dim=1) for k in range(len(PART_NAMES))], 1)
    rate = present.float().mean(dim=0)
    assert (
        rate[[P["background"], P["body"], P["head"], P["ear"], P["leg"], P["tail"]]] >= 0.98
    ).all(), rate
    assert (rate[[P["eye"], P["nose"]]] >= 0.9).all(), rate
    critter = masks > 0
    border = (
        critter[:, 0].any(1)
        | critter[:, -1].any(1)
        | critter[:, :, 0].any(1)
        | critter[:, :, -1].any(1)
    )
    assert border.float().mean() <= 0.01
    area = critter.flatten(1).float().mean(dim=1)
    assert (area > 0.03).all() and (area < 0.4).all()


def test_masks_agree_with_colours(gen: Critters, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, gt = gen.render(batch[0])

    def mean_colour(img: torch.Tensor, mask: torch.Tensor, part: str) -> torch.Tensor:
        return img[:, mask == P[part]].mean(dim=1)

    body_vs_bg = eye_vs_head = 0
    for img, mask in zip(images, gt.masks, strict=True):
        body_vs_bg += int(
            (mean_colour(img, mask, "body") - mean_colour(img, mask, "background")).abs().max()
            > 0.1
        )
        if (mask == P["eye"]).any():
            eye_vs_head += int(
                (mean_colour(img, mask, "eye") - mean_colour(img, mask, "head")).abs().max() > 0.2
            )
    assert body_vs_bg >= 0.9 * len(images)
    assert eye_vs_head >= 0.9 * len(images)
    # The backdrop is a vertical gradient: away from the critter, each row is flat.
    critter = (gt.masks > 0).float()[:, None]
    far = torch.nn.functional.max_pool2d(critter, 7, stride=1, padding=3)[:, 0] == 0  # [B, H, W]
    far = far[:, None].expand_as(images)
    top = torch.where(far, images, -torch.inf).amax(dim=3)
    bottom = torch.where(far, images, torch.inf).amin(dim=3)
    some = far.any(dim=3)
    assert some.float().mean() > 0.9
    assert (top - bottom)[some].max() < 2e-3
    # ... and lighter at the top than at the bottom.
    assert (images[:, :, 0].mean(dim=(1, 2)) > images[:, :, -1].mean(dim=(1, 2))).all()


def test_tail_length_grows_the_tail(
    gen: Critters, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    w = batch[0][::4]
    short = gen.ground_truth(_with_logit(gen, w, "tail_length", -2.0)).masks
    long = gen.ground_truth(_with_logit(gen, w, "tail_length", 2.0)).masks
    grow = (long == P["tail"]).flatten(1).sum(1) - (short == P["tail"]).flatten(1).sum(1)
    assert (grow > 0).all()


def test_ear_size_grows_the_ears(gen: Critters, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    w = batch[0][::4]
    small = gen.ground_truth(_with_logit(gen, w, "ear_size", -2.0)).masks
    big = gen.ground_truth(_with_logit(gen, w, "ear_size", 2.0)).masks
    assert ((big == P["ear"]).flatten(1).sum(1) > (small == P["ear"]).flatten(1).sum(1)).all()


def test_hue_changes_body_but_not_background(
    gen: Critters, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    w = batch[0][::4]
    logits = gen.w_to_logits(w)
    a_img, a_gt = gen.render(_with_logit(gen, w, "hue", -1.5))
    b_img, b_gt = gen.render(_with_logit(gen, w, "hue", 1.5))
    assert torch.equal(a_gt.masks, b_gt.masks)  # colour does not move geometry
    diff = (a_img - b_img).abs().amax(dim=1)  # [B, H, W]
    body = a_gt.masks == P["body"]
    assert (torch.stack([d[m].mean() for d, m in zip(diff, body, strict=True)]) > 0.05).all()
    # Background well away from the critter is untouched.
    critter = (a_gt.masks > 0).float()[:, None]
    near = torch.nn.functional.max_pool2d(critter, 7, stride=1, padding=3)[:, 0] > 0
    assert diff[~near].max() < 1e-3
    assert torch.isfinite(logits).all()


def test_position_x_moves_the_body_right(
    gen: Critters, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    w = batch[0][::4]
    res = gen.resolution
    cols = torch.arange(res, dtype=torch.float32)

    def centroid(wx: torch.Tensor) -> torch.Tensor:
        body = (gen.ground_truth(wx).masks == P["body"]).float()
        return (body.sum(dim=1) * cols).sum(dim=1) / body.sum(dim=(1, 2))

    left, right = (
        centroid(_with_logit(gen, w, "position_x", -2.0)),
        centroid(_with_logit(gen, w, "position_x", 2.0)),
    )
    lo, hi = FACTOR_RANGES["position_x"]
    expected = (
        (hi - lo) * (torch.sigmoid(torch.tensor(2.0)) - torch.sigmoid(torch.tensor(-2.0))) * res / 2
    )
    torch.testing.assert_close(right - left, expected.expand_as(left), atol=0.5, rtol=0.0)


def test_species_differ(gen: Critters, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    w, classes = batch
    values = gen.factors(w)
    means = torch.stack([values[classes == c].mean(dim=0) for c in range(gen.num_classes)])
    gaps = (means[:, None] - means[None, :]).abs().amax(dim=2)
    off_diagonal = gaps[~torch.eye(gen.num_classes, dtype=torch.bool)]
    assert off_diagonal.min() > 0.2
    # Images differ too: species mean images are far apart.
    images = gen.synthesize(w)
    mean_images = torch.stack([images[classes == c].mean(dim=0) for c in range(gen.num_classes)])
    assert (mean_images[0] - mean_images[1]).abs().mean() > 0.01
    # Within a species there is real variation.
    assert values[classes == 0].std(dim=0).mean() > 0.05


def test_invalid_arguments(gen: Critters) -> None:
    with pytest.raises(ValueError, match=r"resolution .*\[32, 256\]"):
        Critters(resolution=16)
    with pytest.raises(ValueError, match=r"resolution .*\[32, 256\]"):
        Critters(resolution=512)
    with pytest.raises(ValueError, match="num_classes"):
        Critters(num_classes=1)
    with pytest.raises(ValueError, match="num_classes"):
        Critters(num_classes=len(CLASS_NAMES) + 1)
    z = sample_z(range(3))
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 4\]"):
        gen.mapping(z, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 4\]"):
        gen.mapping(z, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="integer"):
        gen.mapping(z, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        gen.mapping(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"z must be .*\[B, 32\]"):
        gen.mapping(torch.zeros(3, 31), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"w must be .*\[B, 25\]"):
        gen.synthesize(torch.zeros(3, 24))
    with pytest.raises(ValueError, match="non-negative"):
        sample_z([1, -2])


def test_sample_z_is_batch_independent(gen: Critters) -> None:
    alone = sample_z([5])
    inside = sample_z([9, 5, 1])
    assert alone.shape == (1, 32) and inside.shape == (3, 32) and alone.dtype == torch.float32
    assert torch.equal(alone[0], inside[1])
    assert not torch.equal(inside[0], inside[1])
    assert torch.equal(gen.sample_z([9, 5, 1]), inside)
    # So is w, bit for bit, and the image up to float rounding.
    w_alone = gen.mapping(alone, torch.tensor([3]))
    w_inside = gen.mapping(inside, torch.tensor([0, 3, 1]))
    assert torch.equal(w_alone[0], w_inside[1])
    torch.testing.assert_close(
        gen.synthesize(w_alone)[0], gen.synthesize(w_inside)[1], atol=1e-4, rtol=0.0
    )


def test_synthesize_is_differentiable(
    gen: Critters, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    w = batch[0][:4].clone().requires_grad_(True)
    gen.synthesize(w).square().mean().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_follows_the_module_to_another_device() -> None:
    # The meta device rejects any CPU tensor mixed in, so this catches
    # constants created on the wrong device without needing a GPU.
    g = Critters(num_classes=3, resolution=32).to("meta")
    images, gt = g.render(torch.zeros(70, g.w_dim, device="meta"))
    assert images.device.type == gt.masks.device.type == "meta"
    assert images.shape == (70, 3, 32, 32) and gt.masks.shape == (70, 32, 32)
    assert g.sample_z([1, 2]).device.type == "cpu"  # seeds and files live on the CPU
