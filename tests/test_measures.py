"""Tests for ``linkstyle.measures`` on hand-built images whose answers are known."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from skimage.color import rgb2lab
from skimage.filters.rank import entropy as sk_entropy
from skimage.measure import regionprops
from skimage.morphology import disk

from linkstyle.measures import (
    MOTION_PROPERTIES,
    PROPERTIES,
    RELATIVE_GREY_MEAN,
    STATIC_PROPERTIES,
    farneback_params,
    grey_uint8,
    lab_ab,
    local_entropy,
    local_entropy_in_parts,
    luminance,
    part_measures,
    part_measures_many,
    relative_grey,
    sweep_motion,
)

P = {name: i for i, name in enumerate(STATIC_PROPERTIES)}
SIZE = 64


def blank(size: int = SIZE, colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    image = np.empty((size, size, 3), np.uint8)
    image[:] = colour
    return image


def measure_one(image: np.ndarray, mask: np.ndarray, num_parts: int, **kw) -> np.ndarray:
    """Properties of one image as ``[num_parts, n_properties]`` float64."""
    return part_measures(image[None], mask[None], num_parts, **kw)[0].astype(np.float64)


def ellipse_mask(centre, axes, angle, size: int = SIZE) -> np.ndarray:
    """``cv2.ellipse`` filled mask (label 1); cv2's angle turns clockwise on screen."""
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1)
    return mask


# ----------------------------------------------------------------- API contract


def test_property_names():
    assert PROPERTIES == (*STATIC_PROPERTIES, *MOTION_PROPERTIES)
    assert MOTION_PROPERTIES == ("motion", "motion_x", "motion_y")
    assert len(STATIC_PROPERTIES) == 17 and len(set(PROPERTIES)) == 20
    assert STATIC_PROPERTIES[1:6] == ("luminance", "lab_a", "lab_b", "chroma", "hue")


def test_shapes_and_dtypes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    masks = rng.integers(0, 4, (3, 20, 24)).astype(np.int64)  # int masks are fine too
    out = part_measures(images, masks, 5)
    assert out.dtype == np.float32 and out.shape == (3, 5, len(STATIC_PROPERTIES))
    motion = sweep_motion(images.reshape(1, 3, 20, 24, 3), masks.reshape(1, 3, 20, 24), 5)
    assert motion.dtype == np.float32 and motion.shape == (1, 3, 5, 3)
    assert part_measures(images[:0], masks[:0], 5).shape == (0, 5, len(STATIC_PROPERTIES))


def test_rejects_bad_input():
    images = np.zeros((1, 8, 8, 3), np.uint8)
    masks = np.zeros((1, 8, 8), np.uint8)
    with pytest.raises(ValueError):
        part_measures(images, masks + 3, 3)  # label out of range
    with pytest.raises(TypeError):
        part_measures(images.astype(np.float32), masks, 3)
    with pytest.raises(TypeError):
        part_measures(images, masks.astype(np.float32), 3)
    with pytest.raises(ValueError):
        part_measures(images, masks[:, :4], 3)


def test_deterministic():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (2, 3, 32, 32)).astype(np.uint8)
    flat_i, flat_m = images.reshape(6, 32, 32, 3), masks.reshape(6, 32, 32)
    np.testing.assert_array_equal(
        part_measures(flat_i, flat_m, 4), part_measures(flat_i, flat_m, 4)
    )
    np.testing.assert_array_equal(sweep_motion(images, masks, 4), sweep_motion(images, masks, 4))


def test_chunking_does_not_change_results(monkeypatch):
    import linkstyle.measures as measures

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (5, 24, 24)).astype(np.uint8)
    whole = part_measures(images, masks, 3)
    monkeypatch.setattr(measures, "_CHUNK_PIXELS", 2 * 24 * 24)  # chunks of 2, 2, 1 images
    monkeypatch.setattr(measures, "_ENTROPY_CHUNK_BYTES", 1)  # one image per entropy chunk
    np.testing.assert_array_equal(part_measures(images, masks, 3), whole)
    per_image = np.concatenate(
        [part_measures(images[i : i + 1], masks[i : i + 1], 3) for i in range(5)]
    )
    np.testing.assert_array_equal(per_image, whole)


# --------------------------------------------------------------- area, luminance


def test_area_of_rectangle_and_disc():
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:20, 5:25] = 1  # 10 x 20 rectangle
    cv2.circle(mask, (45, 45), 10, 2, -1)
    out = measure_one(blank(), mask, 3)
    assert out[1, P["area"]] == pytest.approx(200 / SIZE**2)
    assert out[2, P["area"]] == pytest.approx(math.pi * 10**2 / SIZE**2, rel=0.05)
    assert out[:, P["area"]].sum() == pytest.approx(1.0)


def test_luminance_of_uniform_part():
    image = blank(colour=(10, 10, 10))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:40, 8:40] = 1
    image[8:40, 8:40] = (200, 100, 50)
    out = measure_one(image, mask, 2)
    assert out[1, P["luminance"]] == pytest.approx(
        (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, abs=1e-6
    )
    assert out[0, P["luminance"]] == pytest.approx(10 / 255, abs=1e-6)
    np.testing.assert_allclose(luminance(np.array([[255, 255, 255]], np.uint8)), [1.0], atol=1e-6)
    expected_grey = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert grey_uint8(np.array([[200, 100, 50]], np.uint8))[0] == expected_grey


def test_lab_matches_skimage():
    rng = np.random.default_rng(20)
    images = rng.integers(0, 256, (3, 17, 19, 3), dtype=np.uint8)
    images[0, :5] //= 30  # dark pixels: the linear branch of the Lab curve
    a, b = lab_ab(images)
    lab = rgb2lab(images)
    assert a.shape == b.shape == images.shape[:-1]
    np.testing.assert_allclose(a, lab[..., 1], atol=1e-9)
    np.testing.assert_allclose(b, lab[..., 2], atol=1e-9)
    every = np.stack(np.meshgrid(*[np.arange(0, 256, 5)] * 3), -1).astype(np.uint8)
    np.testing.assert_allclose(np.stack(lab_ab(every), -1), rgb2lab(every)[..., 1:], atol=1e-9)


def test_part_colour_matches_skimage():
    rng = np.random.default_rng(21)
    images = rng.integers(0, 256, (3, 16, 20, 3), dtype=np.uint8)
    masks = _random_labels(rng, (3, 16, 20), 4, True).astype(np.uint8)
    masks[2] = np.minimum(masks[2], 2)  # part 3 absent in image 2
    out = part_measures(images, masks, 4).astype(np.float64)
    lab = rgb2lab(images)
    for i in range(3):
        for part in range(4):
            inside = masks[i] == part
            row = out[i, part]
            if not inside.any():
                assert np.isnan(row[[P["lab_a"], P["lab_b"], P["chroma"], P["hue"]]]).all()
                continue
            mean_a, mean_b = lab[i][inside][:, 1].mean(), lab[i][inside][:, 2].mean()
            assert row[P["lab_a"]] == pytest.approx(mean_a, abs=1e-4)
            assert row[P["lab_b"]] == pytest.approx(mean_b, abs=1e-4)
            assert row[P["chroma"]] == pytest.approx(math.hypot(mean_a, mean_b), abs=1e-4)
            hue = math.degrees(math.atan2(mean_b, mean_a)) % 360
            diff = abs(row[P["hue"]] - hue)
            assert min(diff, 360 - diff) < 1e-3


@pytest.mark.parametrize(
    ("colour", "hue"),
    [
        ((255, 0, 0), 40.0),  # red
        ((255, 255, 0), 102.85),  # yellow
        ((0, 255, 0), 136.02),  # green
        ((0, 255, 255), 196.37),  # cyan
        ((0, 0, 255), 306.28),  # blue
        ((255, 0, 255), 328.24),  # magenta
        ((255, 0, 140), 358.26),  # just below the wrap
        ((255, 0, 128), 2.76),  # just above it
    ],
)
def test_hue_of_pure_colours(colour, hue):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 1
    image = blank(colour=(128, 128, 128))
    image[mask == 1] = colour
    out = measure_one(image, mask, 2)
    assert out[1, P["hue"]] == pytest.approx(hue, abs=0.01)
    l_ab = rgb2lab(np.array([[colour]], np.uint8))[0, 0]
    assert out[1, P["chroma"]] == pytest.approx(math.hypot(l_ab[1], l_ab[2]), abs=1e-3)
    assert out[0, P["chroma"]] < 0.01  # grey background: (almost) no chroma
    assert out[1, P["entropy_max"]] == 0.0 and out[1, P["luminance"]] == pytest.approx(
        luminance(np.array(colour, np.uint8)), abs=1e-6
    )


def test_hue_is_the_hue_of_the_mean_colour():
    """Two hues either side of 0 average to ~0 (the mean a*, b*), not to 180."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 1
    image = blank(colour=(128, 128, 128))
    image[16:48, 16:32] = (255, 0, 128)  # hue 2.8
    image[16:48, 32:48] = (255, 0, 150)  # hue 354.6
    hue = measure_one(image, mask, 2)[1, P["hue"]]
    assert 0 <= hue < 360 and min(hue, 360 - hue) < 3


# -------------------------------------------------------------------- entropy


@pytest.mark.parametrize(
    ("shape", "radius"), [((3, 64, 64), 5), ((2, 17, 29), 3), ((1, 12, 12), 8), ((2, 9, 9), 0)]
)
def test_local_entropy_matches_skimage(shape, radius):
    rng = np.random.default_rng(radius)
    grey = rng.integers(0, 256, shape, dtype=np.uint8)
    grey[:, : shape[1] // 2] //= 64  # few levels in half the image: repeated counts
    expected = np.stack([sk_entropy(g, disk(radius)) for g in grey])
    np.testing.assert_allclose(local_entropy(grey, radius), expected, atol=1e-9)
    np.testing.assert_allclose(local_entropy(grey[0], radius), expected[0], atol=1e-9)


def test_entropy_zero_in_flat_region_higher_in_texture():
    rng = np.random.default_rng(3)
    image = blank(colour=(90, 90, 90))
    image[:, 32:] = rng.integers(0, 256, (SIZE, 32, 3), dtype=np.uint8)  # noise on the right
    image[40:, :20] = 0
    image[40:, :20:2] = 255  # vertical stripes, two grey levels
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:20] = 1  # flat, >= 5 px away from any other content
    mask[8:56, 40:56] = 2  # noise interior
    mask[46:60, 4:14] = 3  # stripe interior
    out = measure_one(image, mask, 4)
    flat, noise, stripes = out[1], out[2], out[3]
    assert flat[P["entropy_max"]] == pytest.approx(0.0, abs=1e-9)
    assert flat[P["entropy_mean"]] == pytest.approx(0.0, abs=1e-9)
    assert flat[P["entropy_std"]] == pytest.approx(0.0, abs=1e-9)
    # 81 values over ~128 relative grey levels (the part's mean on 64): close to log2(81) = 6.3
    assert noise[P["entropy_mean"]] > 5.2
    assert noise[P["entropy_max"]] <= math.log2(81) + 1e-6
    assert stripes[P["entropy_mean"]] == pytest.approx(1.0, abs=0.01)  # two equiprobable levels
    for row in out:
        assert row[P["entropy_min"]] <= row[P["entropy_mean"]] <= row[P["entropy_max"]]


def brute_entropy_in_parts(grey: np.ndarray, labels: np.ndarray, radius: int) -> np.ndarray:
    """Per pixel: Shannon entropy (bits) of the same-label grey values in the disk, one [H, W] image."""
    footprint = disk(radius).astype(bool)
    h, w = grey.shape
    padded_grey = np.pad(grey.astype(np.int64), radius)
    padded_labels = np.pad(labels.astype(np.int64), radius, constant_values=-1)  # -1: outside
    out = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            window = (slice(y, y + 2 * radius + 1), slice(x, x + 2 * radius + 1))
            keep = footprint & (padded_labels[window] == labels[y, x])
            _, counts = np.unique(padded_grey[window][keep], return_counts=True)
            p = counts / counts.sum()
            out[y, x] = -(p * np.log2(p)).sum()
    return out


def _random_labels(rng, shape, parts: int, blocky: bool) -> np.ndarray:
    labels = rng.integers(0, parts, shape)
    if blocky:  # regions of a few pixels instead of salt-and-pepper
        n, h, w = shape
        labels = np.repeat(np.repeat(labels[:, : (h + 2) // 3, : (w + 2) // 3], 3, 1), 3, 2)
        labels = labels[:, :h, :w]
    return labels


@pytest.mark.parametrize(
    ("shape", "radius", "parts", "blocky"),
    [
        ((2, 19, 23), 5, 4, True),
        ((2, 19, 23), 5, 3, False),
        ((3, 10, 13), 2, 3, True),
        ((1, 12, 12), 8, 5, True),
        ((2, 7, 9), 0, 2, False),
        ((1, 1, 1), 3, 1, False),
    ],
)
def test_local_entropy_in_parts_matches_brute_force(shape, radius, parts, blocky):
    rng = np.random.default_rng(10 + radius)
    grey = rng.integers(0, 256, shape, dtype=np.uint8)
    grey[:, : shape[1] // 2] //= 64  # few levels in half the image: repeated counts
    labels = _random_labels(rng, shape, parts, blocky)
    expected = np.stack([brute_entropy_in_parts(g, lab, radius) for g, lab in zip(grey, labels)])
    got = local_entropy_in_parts(grey, labels, parts, radius)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose(
        local_entropy_in_parts(grey[0], labels[0], parts, radius), expected[0], atol=1e-9
    )


def test_local_entropy_in_parts_with_one_label_is_local_entropy():
    rng = np.random.default_rng(11)
    grey = rng.integers(0, 256, (3, 21, 17), dtype=np.uint8)
    grey[:, 5:12] //= 50
    labels = np.zeros(grey.shape, np.uint8)
    np.testing.assert_array_equal(local_entropy_in_parts(grey, labels, 1, 4), local_entropy(grey, 4))
    # Unused labels change nothing either.
    np.testing.assert_array_equal(local_entropy_in_parts(grey, labels, 6, 4), local_entropy(grey, 4))


def test_local_entropy_in_parts_chunking(monkeypatch):
    import linkstyle.measures as measures

    rng = np.random.default_rng(12)
    grey = rng.integers(0, 256, (5, 16, 18), dtype=np.uint8)
    labels = _random_labels(rng, grey.shape, 4, True)
    whole = local_entropy_in_parts(grey, labels, 4, 3)
    monkeypatch.setattr(measures, "_ENTROPY_CHUNK_BYTES", 1)  # one image per chunk
    np.testing.assert_array_equal(local_entropy_in_parts(grey, labels, 4, 3), whole)


def test_entropy_computes_where_numba_finds_no_cache_folder():
    """A read-only install without a home folder has nowhere to cache the compiled kernel: it then
    compiles in each process instead of failing at import (numba raises when it finds no cache
    location; the environment variable below makes it find none)."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from linkstyle.entropy_kernel import sliding_entropy\n"
        "from linkstyle.measures import local_entropy\n"
        "print(type(sliding_entropy._cache).__name__, local_entropy(np.arange(64, dtype=np.uint8).reshape(8, 8), 2)[0, 0])\n"
    )
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "_IPythonCacheLocator"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    name, value = out.stdout.split()
    assert name == "NullCache"
    assert float(value) == pytest.approx(float(local_entropy(np.arange(64, dtype=np.uint8).reshape(8, 8), 2)[0, 0]))


def test_local_entropy_in_parts_rejects_bad_input():
    grey = np.zeros((2, 8, 8), np.uint8)
    labels = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(ValueError):
        local_entropy_in_parts(grey, labels + 3, 3)
    with pytest.raises(ValueError):
        local_entropy_in_parts(grey, labels[:, :4], 3)
    with pytest.raises(TypeError):
        local_entropy_in_parts(grey, labels.astype(np.float32), 3)
    with pytest.raises(TypeError):
        local_entropy_in_parts(grey.astype(np.int16), labels, 3)


def test_entropy_does_not_leak_between_parts():
    """A flat part next to a noisy one has entropy exactly 0, however close the noise is."""
    rng = np.random.default_rng(13)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)  # noisy backdrop (part 0)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(mask, (30, 20), (4, 9), 20, 0, 360, 1, -1)  # a small "ear", thinner than the disk
    mask[40:44, 10:50] = 2  # a thin flat bar, also touching nothing but noise
    image[mask == 1] = (200, 120, 40)
    image[mask == 2] = (30, 60, 90)
    out = measure_one(image, mask, 3)
    for part in (1, 2):
        for name in ("entropy_mean", "entropy_std", "entropy_min", "entropy_max"):
            assert out[part, P[name]] == 0.0, (part, name)
    # The whole-image filter did let the backdrop in.
    whole = local_entropy(grey_uint8(image))
    assert whole[mask == 1].mean() > 2.0
    # The backdrop's own entropy ignores the flat parts: it matches the brute force.
    expected = brute_entropy_in_parts(relative_grey(luminance(image[None]), mask[None], 3)[0], mask, 5)
    assert out[0, P["entropy_mean"]] == pytest.approx(expected[mask == 0].mean(), abs=1e-5)


def test_entropy_statistics_match_brute_force():
    rng = np.random.default_rng(14)
    images = rng.integers(0, 256, (2, 20, 22, 3), dtype=np.uint8)
    images[:, :, :8] //= 40
    masks = _random_labels(rng, (2, 20, 22), 4, True).astype(np.uint8)
    out = part_measures(images, masks, 5, entropy_radius=3).astype(np.float64)
    grey = relative_grey(luminance(images), masks, 5)
    for i in range(2):
        ent = brute_entropy_in_parts(grey[i], masks[i], 3)
        for part in range(5):
            values = ent[masks[i] == part]
            if values.size == 0:
                assert np.isnan(out[i, part, P["entropy_mean"]])
                continue
            for name, value in [
                ("entropy_mean", values.mean()),
                ("entropy_std", values.std()),
                ("entropy_min", values.min()),
                ("entropy_max", values.max()),
            ]:
                assert out[i, part, P[name]] == pytest.approx(value, abs=1e-5), (i, part, name)


def test_entropy_depends_on_each_segmentation():
    """part_measures_many computes the entropy per mask set, not once per image."""
    rng = np.random.default_rng(15)
    images = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    images[:, :, :12] = 100  # flat left half, noisy right half
    halves = np.zeros((2, 24, 24), np.uint8)
    halves[:, :, 12:] = 1
    whole = np.zeros((2, 24, 24), np.uint8)
    split, single = part_measures_many(images, [(halves, 2), (whole, 1)])
    assert (split[:, 0, P["entropy_max"]] == 0).all()  # the flat half on its own
    assert (single[:, 0, P["entropy_max"]] > 3).all()  # the whole image sees the noise
    np.testing.assert_allclose(
        single[:, 0, P["entropy_mean"]],
        local_entropy(relative_grey(luminance(images), whole, 1)).mean(axis=(1, 2)),
        atol=1e-5,
    )


def test_texture_entropy_does_not_change_with_the_parts_brightness():
    """A striped part and a shaded backdrop at twice the brightness have the same texture entropy:
    on absolute grey levels the brighter shading spans twice the levels, and a brightness unit's sweep
    read as a texture change as much as a luminance change (the planted backdrop-luminance unit)."""
    rows = np.arange(SIZE, dtype=np.float64)[:, None] * np.ones((1, SIZE))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[20:44, 16:48] = 1
    stripes = np.where((np.arange(SIZE) // 3) % 2 == 0, 1.0, 0.5)[None, :] * np.ones((SIZE, 1))
    out, absolute = [], []
    for level in (60.0, 120.0):
        grey = level * (1.0 + 0.3 * rows / SIZE)  # a vertical shading of the backdrop
        grey[mask == 1] = (level * stripes)[mask == 1]  # stripes removing half the fur's brightness
        image = np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2)
        out.append(measure_one(image, mask, 2))
        absolute.append(brute_entropy_in_parts(grey_uint8(image), mask, 5)[mask == 0].mean())
    dark, bright = out
    assert bright[0, P["luminance"]] > 1.9 * dark[0, P["luminance"]]
    for name in ("entropy_mean", "entropy_std", "entropy_min", "entropy_max"):
        assert bright[1, P[name]] == pytest.approx(dark[1, P[name]], abs=1e-6), name
    # The shading up to the source's rounding to uint8 (1.36 against 1.43 bits).
    assert bright[0, P["entropy_mean"]] == pytest.approx(dark[0, P["entropy_mean"]], abs=0.1)
    assert bright[1, P["entropy_mean"]] > 0.9  # the stripes are texture: two levels in every window
    # On absolute grey levels the brighter shading is busier: what the relative grey removes.
    assert absolute[1] > absolute[0] + 0.5


def test_relative_grey_puts_each_parts_mean_on_the_same_level():
    lum = np.zeros((1, 4, 4), np.float32)
    lum[0, :, :2], lum[0, :, 2:] = 0.2, 0.8
    lum[0, 0, 0] = 0.4  # part 0 mean 0.225
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, :, 2:] = 1
    grey = relative_grey(lum, masks, 3)  # part 2 absent: no division by zero
    assert (grey[0, :, 2:] == RELATIVE_GREY_MEAN).all()
    assert grey[0, 0, 0] == round(RELATIVE_GREY_MEAN * 0.4 / 0.225)
    assert (relative_grey(np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 2), np.uint8), 1) == 0).all()


# ------------------------------------------------------------------- ellipses


def test_axis_aligned_ellipse():
    centre, axes = (30, 22), (20, 8)
    out = measure_one(blank(), ellipse_mask(centre, axes, 0), 2)[1]
    assert out[P["n_components"]] == 1
    assert out[P["eccentricity"]] == pytest.approx(math.sqrt(1 - (8 / 20) ** 2), abs=0.02)
    assert min(out[P["angle"]], 180 - out[P["angle"]]) < 0.5
    assert out[P["center_x"]] * SIZE == pytest.approx(centre[0] + 0.5, abs=0.5)
    assert out[P["center_y"]] * SIZE == pytest.approx(centre[1] + 0.5, abs=0.5)
    assert out[P["width"]] * SIZE == pytest.approx(2 * axes[0], abs=2)
    assert out[P["height"]] * SIZE == pytest.approx(2 * axes[1], abs=2)

    upright = measure_one(blank(), ellipse_mask(centre, axes, 90), 2)[1]
    assert upright[P["angle"]] == pytest.approx(90, abs=0.5)
    # width is the major axis, whatever its direction
    assert upright[P["width"]] * SIZE == pytest.approx(2 * axes[0], abs=2)
    assert upright[P["eccentricity"]] == pytest.approx(out[P["eccentricity"]], abs=1e-6)


def test_diagonal_angle_is_counter_clockwise_with_y_up():
    # "/" on screen: going right also goes up (to smaller rows) -> 45 degrees.
    slash = np.zeros((SIZE, SIZE), np.uint8)
    cv2.line(slash, (10, 53), (53, 10), 1, 3)
    assert measure_one(blank(), slash, 2)[1, P["angle"]] == pytest.approx(45, abs=1)
    # cv2.ellipse angles turn clockwise on screen, so cv2's 45 is "\" -> 135 here.
    assert measure_one(blank(), ellipse_mask((32, 32), (20, 6), 45), 2)[
        1, P["angle"]
    ] == pytest.approx(135, abs=1)
    assert measure_one(blank(), ellipse_mask((32, 32), (20, 6), -45), 2)[
        1, P["angle"]
    ] == pytest.approx(45, abs=1)


def test_ellipse_matches_skimage_regionprops():
    rng = np.random.default_rng(4)
    for _ in range(5):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        centre = tuple(int(v) for v in rng.integers(20, 44, 2))
        axes = tuple(int(v) for v in rng.integers(3, 15, 2))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        out = measure_one(blank(), mask, 2)[1]
        (rp,) = regionprops(mask)
        assert out[P["eccentricity"]] == pytest.approx(rp.eccentricity, abs=1e-5)
        assert out[P["width"]] * SIZE == pytest.approx(rp.axis_major_length, abs=1e-3)
        assert out[P["height"]] * SIZE == pytest.approx(rp.axis_minor_length, abs=1e-3)
        assert out[P["center_y"]] * SIZE - 0.5 == pytest.approx(rp.centroid[0], abs=1e-3)
        assert out[P["center_x"]] * SIZE - 0.5 == pytest.approx(rp.centroid[1], abs=1e-3)
        # regionprops: orientation from the row axis; ours: from x, counter-clockwise, y up.
        expected = (90 + math.degrees(rp.orientation)) % 180
        diff = abs(out[P["angle"]] - expected)
        assert min(diff, 180 - diff) < 0.01 or rp.eccentricity < 0.05


def test_two_blobs_area_weighted():
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(mask, (15, 15), 5, 1, -1)
    cv2.ellipse(mask, (46, 40), (12, 7), 0, 0, 360, 1, -1)
    labelled = mask.copy()
    labelled[:, 30:] *= 2  # each blob on its own, for the expected values
    both = measure_one(blank(), mask, 2)[1]
    alone = measure_one(blank(), labelled, 3)
    small, large = alone[1], alone[2]
    assert both[P["n_components"]] == 2
    assert both[P["area"]] == pytest.approx(small[P["area"]] + large[P["area"]], abs=1e-7)
    w_small, w_large = small[P["area"]], large[P["area"]]
    for name in ("eccentricity", "center_x", "center_y", "width", "height"):
        expected = (w_small * small[P[name]] + w_large * large[P[name]]) / (w_small + w_large)
        assert both[P[name]] == pytest.approx(expected, abs=1e-5), name


def test_axial_angle_average():
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(mask, (18, 20), (14, 2), -10, 0, 360, 1, -1)  # 10 degrees, y up
    cv2.ellipse(mask, (46, 44), (14, 2), 10, 0, 360, 1, -1)  # 170 degrees
    labelled = mask.copy()
    labelled[32:] *= 2
    alone = measure_one(blank(), labelled, 3)
    assert alone[1, P["angle"]] == pytest.approx(10, abs=1.5)
    assert alone[2, P["angle"]] == pytest.approx(170, abs=1.5)
    angle = measure_one(blank(), mask, 2)[1, P["angle"]]
    assert min(angle, 180 - angle) < 1.5  # not 90


def test_tiny_components_count_but_do_not_shape_the_ellipse():
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(mask, (40, 40), 8, 1, -1)
    mask[3, 3:5] = 1  # 2-pixel speck
    out = measure_one(blank(), mask, 2)[1]
    assert out[P["n_components"]] == 2
    assert out[P["center_x"]] * SIZE == pytest.approx(40.5, abs=1e-4)
    only_speck = np.zeros((SIZE, SIZE), np.uint8)
    only_speck[3, 3:5] = 1
    speck = measure_one(blank(), only_speck, 2)[1]
    assert speck[P["n_components"]] == 1 and speck[P["area"]] > 0
    assert np.isnan(speck[P["eccentricity"] :]).all()


def test_absent_part():
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:20, 10:20] = 1
    out = measure_one(blank(), mask, 3)[2]
    assert out[P["area"]] == 0 and out[P["n_components"]] == 0
    others = [name for name in STATIC_PROPERTIES if name not in ("area", "n_components")]
    assert np.isnan([out[P[name]] for name in others]).all()


def test_separate_images_never_connect():
    # Part 1 touches the bottom edge of image 0 and the top edge of image 1.
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, 12:, 4:12] = 1
    masks[1, :4, 4:12] = 1
    out = part_measures(np.zeros((2, 16, 16, 3), np.uint8), masks, 2)
    np.testing.assert_array_equal(out[:, 1, P["n_components"]], [1, 1])
    np.testing.assert_allclose(out[:, 1, P["center_y"]] * 16, [14.0, 2.0], atol=1e-5)


def test_resolution_independent():
    small = measure_one(blank(64), ellipse_mask((24, 36), (16, 6), 30, 64), 2)[1]
    big = measure_one(blank(256), ellipse_mask((96, 144), (64, 24), 30, 256), 2)[1]
    for name, tol in [
        ("area", 0.01),
        ("center_x", 0.01),
        ("center_y", 0.01),
        ("width", 0.03),
        ("height", 0.03),
    ]:
        assert small[P[name]] == pytest.approx(big[P[name]], abs=tol), name
    assert small[P["angle"]] == pytest.approx(big[P["angle"]], abs=2)
    assert small[P["eccentricity"]] == pytest.approx(big[P["eccentricity"]], abs=0.02)


@settings(max_examples=25, deadline=None)
# Found by hypothesis: an angle of 180 - 1e-14 degrees became 180.0 in float32.
@example(seed=646665, n=3, h=13, w=16, parts=6, blocky=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3),
    h=st.integers(4, 24),
    w=st.integers(4, 24),
    parts=st.integers(1, 6),
    blocky=st.booleans(),
)
def test_invariants(seed, n, h, w, parts, blocky):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    masks = rng.integers(0, parts, (n, h, w)).astype(np.uint8)
    if blocky:  # large connected regions instead of salt-and-pepper
        masks = cv2.resize(
            masks[:, ::4, ::4].transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_NEAREST
        )
        masks = masks.reshape(h, w, n).transpose(2, 0, 1).copy()
    out = part_measures(images, masks, parts).astype(np.float64)
    np.testing.assert_allclose(out[..., P["area"]].sum(axis=1), 1.0, atol=1e-5)
    present = out[..., P["area"]] > 0
    assert ((out[..., P["n_components"]] >= 1) == present).all()
    assert not np.isnan(out[present][:, : P["n_components"] + 1]).any()
    assert np.isnan(
        out[~present][:, [i for i in range(len(STATIC_PROPERTIES)) if i not in (0, P["n_components"])]]
    ).all()
    lum = out[..., P["luminance"]][present]
    assert ((lum >= 0) & (lum <= 1)).all()
    lab_a, lab_b, chroma, hue = out[..., P["lab_a"] : P["hue"] + 1][present].T
    assert (np.abs(lab_a) <= 128).all() and (np.abs(lab_b) <= 128).all()
    np.testing.assert_allclose(chroma, np.hypot(lab_a, lab_b), rtol=1e-5, atol=1e-4)
    assert ((hue >= 0) & (hue < 360)).all()
    ent = out[..., P["entropy_min"] : P["entropy_max"] + 1][present]
    assert (ent >= 0).all() and (ent <= math.log2(81) + 1e-5).all()
    ellipse = out[..., P["eccentricity"] :][present]
    ok = ~np.isnan(ellipse[:, 0])
    ecc, angle, cx, cy, width, height = ellipse[ok].T
    assert ((ecc >= 0) & (ecc <= 1)).all() and ((angle >= 0) & (angle < 180)).all()
    assert ((cx > 0) & (cx < 1) & (cy > 0) & (cy < 1)).all()
    assert (height >= 0).all() and (width * w >= height * h - 1e-4).all()  # major >= minor


# --------------------------------------------------------------------- motion


def _textured_scene(
    shift: int, texture: np.ndarray, scale: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Grey background (0), a textured square moving right by ``shift`` (1), a static one (2).

    Drawn at 64 px, then ``scale`` times larger (``texture`` must have that size)."""
    size = SIZE * scale
    image = blank(size, (128, 128, 128))
    mask = np.zeros((size, size), np.uint8)
    a, b, c, d, sh = (v * scale for v in (10, 30, 8, 28, shift))
    image[a:b, c + sh : d + sh] = texture[a:b, c:d]
    mask[a:b, c + sh : d + sh] = 1
    a, b = 40 * scale, 60 * scale
    c, d = 38 * scale, 58 * scale
    image[a:b, c:d] = texture[a:b, c:d]
    mask[a:b, c:d] = 2
    return image, mask


def _sweep(shifts, scale: int = 1, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), (3, 3), 0)
    texture = cv2.resize(texture, (SIZE * scale, SIZE * scale), interpolation=cv2.INTER_LINEAR)
    frames = [_textured_scene(shift, texture, scale) for shift in shifts]
    return np.stack([f[0] for f in frames])[None], np.stack([f[1] for f in frames])[None]


def test_motion_of_shifted_square():
    images, masks = _sweep((0, 3, 6))
    masks[0, 1:] = 0  # only the step-0 masks may matter
    flow = sweep_motion(images, masks, 4)[0]
    motion, dx, dy = flow[..., 0], flow[..., 1], flow[..., 2]
    np.testing.assert_array_equal(flow[0, :3], 0.0)
    assert motion[1, 1] == pytest.approx(3 / SIZE, rel=0.05)
    assert motion[2, 1] == pytest.approx(6 / SIZE, rel=0.05)
    assert dx[1, 1] == pytest.approx(3 / SIZE, rel=0.05) and dx[2, 1] == pytest.approx(6 / SIZE, rel=0.05)
    assert abs(dy[2, 1]) < 0.05 / SIZE  # moved right, not up or down
    assert motion[1, 2] < 0.05 / SIZE and motion[2, 2] < 0.05 / SIZE  # static square
    assert np.isnan(flow[:, 3]).all()  # part 3 absent at step 0


def test_motion_direction_follows_image_axes():
    images, masks = _sweep((0, 4))
    down = np.stack([images[0, 0], np.roll(images[0, 0], 3, axis=0)])[None]  # step 1: 3 px lower
    flow = sweep_motion(down, masks, 3)[0, 1]
    assert flow[1, 2] == pytest.approx(3 / SIZE, rel=0.1) and abs(flow[1, 1]) < 0.2 / SIZE


def test_motion_is_resolution_independent():
    small = sweep_motion(*_sweep((0, 4)), 3)[0, 1, :, 0]
    big = sweep_motion(*_sweep((0, 4), scale=4), 3)[0, 1, :, 0]  # 256 px, flow at 128 px
    assert big[1] == pytest.approx(4 / SIZE, rel=0.05)
    assert big[1] == pytest.approx(small[1], rel=0.05)
    assert big[2] < 0.05 / SIZE


def test_farneback_params():
    assert farneback_params(64, 64)["levels"] == 2  # coarsest level 32 px
    assert farneback_params(32, 32)["levels"] == 1 and farneback_params(128, 128)["levels"] == 3
    assert farneback_params(64, 64)["winsize"] % 2 == 1


def test_measuring_several_segmentations_at_once_equals_one_at_a_time():
    from linkstyle.measures import part_measures_many, sweep_motion_many

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    a = rng.integers(0, 3, (2, 3, 32, 32)).astype(np.uint8)
    b = rng.integers(0, 5, (2, 3, 32, 32)).astype(np.uint8)
    flat = images.reshape(6, 32, 32, 3)
    both = part_measures_many(flat, [(a.reshape(6, 32, 32), 3), (b.reshape(6, 32, 32), 5)])
    np.testing.assert_array_equal(both[0], part_measures(flat, a.reshape(6, 32, 32), 3))
    np.testing.assert_array_equal(both[1], part_measures(flat, b.reshape(6, 32, 32), 5))
    moved = sweep_motion_many(images, [(a, 3), (b, 5)])
    np.testing.assert_array_equal(moved[0], sweep_motion(images, a, 3))
    np.testing.assert_array_equal(moved[1], sweep_motion(images, b, 5))
