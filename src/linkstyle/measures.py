"""Per-part image measurements for "Linking in Style" (Wehrheim et al., 2024).

Every render is cut into semantic parts by a label mask; each part is then
described by a fixed vector of scalar properties so that a sweep along a
classifier unit can be summarised as "which part changes, and how". All
functions are batched numpy-in / numpy-out; nothing loops over pixels or
connected components in Python.

Conventions
-----------
Images are ``uint8 [..., H, W, 3]`` RGB, masks are integer ``[..., H, W]`` with
labels ``0 .. num_parts-1``. Pixel ``(row y, column x)`` has its centre at
``(x + 0.5, y + 0.5)`` in a frame where the image spans ``[0, W] x [0, H]``.

Static properties (``STATIC_PROPERTIES``, in this order)
--------------------------------------------------------
area
    Fraction of the image's pixels carrying the label. If it is 0 the part is
    *absent*: every other property is NaN, except ``n_components = 0``.
luminance
    Mean over the part of ``0.299 R + 0.587 G + 0.114 B`` with RGB in [0, 1].
lab_a, lab_b
    Mean over the part of the CIELAB a* (green - / red +) and b* (blue - /
    yellow +) coordinates, exactly as ``skimage.color.rgb2lab`` (sRGB,
    illuminant D65, 2 degree observer; see ``lab_ab``). Roughly in [-128, 128].
chroma
    ``hypot(lab_a, lab_b)``: the chroma of the part's mean colour (>= 0; not
    the mean of the pixels' chromas, so a part made of two opposite hues has a
    low chroma).
hue
    ``atan2(lab_b, lab_a)`` in degrees in [0, 360): the CIELAB hue angle of
    the part's mean colour (sRGB red is 40, yellow 103, green 136, cyan 196,
    blue 306, magenta 328). It is *circular* with period 360 (359 and 1 are
    2 apart), so consumers take circular differences (``(b - a + 180) % 360 -
    180``) and circular means, as for the axial ``angle`` with period 180. For an
    achromatic part (chroma near 0) the hue is ill-defined and noisy (pure
    greys have ``|a*|, |b*| < 0.01``, not 0), so read it together with chroma.
entropy_mean, entropy_std, entropy_min, entropy_max
    Local Shannon entropy (bits) of the part's *relative* grey image, *within
    the part*: each pixel's luminance divided by its part's mean luminance,
    quantised so that the mean falls on grey level ``RELATIVE_GREY_MEAN``
    (``relative_grey``; steps of 1/64 of the mean, a Weber fraction). Texture
    is then a property of the part's contrast pattern alone, not of its
    brightness: a stripe pattern or a shading at twice the brightness has the
    same entropy (on absolute grey levels a brighter shaded backdrop spans more
    levels, so its "texture" rose with its luminance as much as its luminance
    did; grey-scale invariance as in Ojala, Pietikainen & Maenpaa, 2002, IEEE
    TPAMI 24:971-987). For a pixel of part P, the grey-level
    histogram of the pixels of P in the disk of radius ``entropy_radius``
    around it (``skimage.morphology.disk``); pixels of other parts and pixels
    outside the image are left out of the window (``local_entropy_in_parts``).
    So texture just outside a part (a busy backdrop next to an ear) never
    leaks into it, and a uniformly coloured part has entropy exactly 0
    whatever surrounds it. Near a part's border (and in parts thinner than
    the disk) the window holds fewer pixels, so the entropy there is at most
    ``log2`` of that count. Then the mean / population std / min / max over
    the part's pixels are taken. With a single part (the whole image) this is exactly
    ``skimage.filters.rank.entropy(relative_grey(...), disk(r))`` (``local_entropy``).
n_components
    Number of 8-connected components of the part's mask (all sizes).
eccentricity, angle, center_x, center_y, width, height
    Each connected component of at least ``MIN_ELLIPSE_PIXELS`` pixels gets
    the ellipse with the same second moments as its pixel set (as
    ``skimage.measure.regionprops``: full axis lengths ``4 sqrt(lambda)`` of
    the pixel-coordinate covariance eigenvalues, no pixel-area correction).

    - eccentricity: ``sqrt(1 - lambda_min / lambda_max)`` in [0, 1]
      (0 for a disc, 1 only for a segment of collinear pixels).
    - angle: direction of the major axis in degrees in [0, 180), measured
      from the image x axis (pointing right) *counter-clockwise as seen on
      screen* (y up), so a "/" diagonal is 45 and a "\\" diagonal is 135.
      A disc (equal eigenvalues) reports 0; for near-discs the angle is
      ill-defined and noisy, so read it together with the eccentricity.
    - center_x, center_y: centroid divided by the image width / height, with
      the pixel-centre convention above; center_y grows *downwards* (image
      rows), unlike the angle's y-up convention.
    - width, height: full major / minor axis length divided by the image
      width / height respectively (identical scaling for square images).

    A part made of several components (legs, ears) gets the mean over
    components weighted by component area; the angle is axial data, so it is
    averaged as ``0.5 * arg(sum w exp(2 i angle))`` (10 and 170 degrees
    average to 0, not 90). If no component reaches ``MIN_ELLIPSE_PIXELS``
    the six ellipse properties are NaN.

Motion (``sweep_motion``, ``MOTION_PROPERTIES``)
-------------------------------------------------
Dense Farneback optical flow (``cv2.calcOpticalFlowFarneback`` on the grey
images) from step 0 of a sweep to step k, summarised over the part's pixels
*at step 0* (0 at k = 0, NaN where the part is absent at step 0):

- motion: mean flow magnitude, in image widths;
- motion_x, motion_y: mean displacement (the mean flow vector), in image
  widths / heights; x grows to the right and y *downwards*, like center_x and
  center_y, so a part that moves right and up has motion_x > 0, motion_y < 0.
  Its direction ``atan2(-motion_y, motion_x)`` is reported by the selectivity
  stage in the angle's convention (counter-clockwise, y up). The magnitude is
  never smaller than the displacement's length; the two differ when a part
  deforms (a part growing evenly has magnitude > 0, displacement ~ 0).

Images above 128 px are downscaled for the flow. See ``farneback_params`` and
``sweep_motion`` for the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from skimage import measure
from skimage.morphology import disk

__all__ = [
    "MIN_ELLIPSE_PIXELS",
    "MOTION_PROPERTIES",
    "PROPERTIES",
    "STATIC_PROPERTIES",
    "farneback_params",
    "grey_uint8",
    "lab_ab",
    "local_entropy",
    "local_entropy_in_parts",
    "luminance",
    "part_measures",
    "part_measures_many",
    "relative_grey",
    "sweep_motion",
    "sweep_motion_many",
]

STATIC_PROPERTIES: tuple[str, ...] = (
    "area",
    "luminance",
    "lab_a",
    "lab_b",
    "chroma",
    "hue",
    "entropy_mean",
    "entropy_std",
    "entropy_min",
    "entropy_max",
    "n_components",
    "eccentricity",
    "angle",
    "center_x",
    "center_y",
    "width",
    "height",
)
MOTION_PROPERTIES: tuple[str, ...] = ("motion", "motion_x", "motion_y")
PROPERTIES: tuple[str, ...] = (*STATIC_PROPERTIES, *MOTION_PROPERTIES)

MIN_ELLIPSE_PIXELS = 3
"""Components smaller than this are ignored for the ellipse: their moments are degenerate."""

_LUMA = (0.299, 0.587, 0.114)
# sRGB (D65) -> CIE XYZ and the D65 white for the 2 degree observer, as skimage.color.rgb2lab.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_IDX = {name: i for i, name in enumerate(STATIC_PROPERTIES)}
# Pixels per chunk in ``part_measures`` (128 images at 64 px): temporaries stay in cache.
_CHUNK_PIXELS = 2**19
# Memory for one chunk of padded part-and-grey codes in ``local_entropy_in_parts``.
_ENTROPY_CHUNK_BYTES = 8 * 2**20


# --------------------------------------------------------------------------- grey


def luminance(images: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[..., 3]`` -> float32 luma ``0.299 R + 0.587 G + 0.114 B`` in [0, 1]."""
    images = np.asarray(images)
    if images.shape[-1:] != (3,):
        raise ValueError(f"images must end in an RGB axis of size 3, got shape {images.shape}")
    weights = np.array(_LUMA, np.float32) / np.float32(255.0)
    return images.astype(np.float32) @ weights  # float32 whatever numpy's promotion rules


def grey_uint8(images: np.ndarray) -> np.ndarray:
    """RGB -> uint8 grey with the same luma formula (input of the entropy filter and the flow)."""
    return _luma_to_uint8(luminance(images))


def _luma_to_uint8(luma: np.ndarray) -> np.ndarray:
    return np.rint(luma * np.float32(255.0)).clip(0, 255).astype(np.uint8)


#: The grey level a part's mean luminance falls on in ``relative_grey``: levels up to 4x the mean
#: stay distinct (the darkest stripes, shadings and speckles of a part lie well inside), and a step is
#: 1/64 of the mean, coarser than uint8 for parts brighter than 0.25 and so immune to their rounding.
RELATIVE_GREY_MEAN = 64


def relative_grey(luma: np.ndarray, masks: np.ndarray, num_parts: int) -> np.ndarray:
    """uint8 ``[N, H, W]``: each pixel's luma over the mean luma of its part (in its image), times
    ``RELATIVE_GREY_MEAN``, rounded; 0 in a part whose mean is 0 (black).

    The texture entropy's input: a part's texture must not change when only its brightness does."""
    luma = np.asarray(luma, np.float32)
    n_img = luma.shape[0]
    seg = np.arange(n_img, dtype=np.intp)[:, None, None] * num_parts + masks.astype(np.intp)
    n_seg = n_img * num_parts
    total = np.bincount(seg.ravel(), luma.ravel().astype(np.float64), n_seg)
    count = np.bincount(seg.ravel(), minlength=n_seg)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(total > 0, RELATIVE_GREY_MEAN * count / total, 0.0).astype(np.float32)
    return np.rint(luma * gain[seg]).clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------- colour


def _srgb_linear_table() -> np.ndarray:
    """uint8 sRGB value -> linear intensity in [0, 1] (the sRGB transfer curve, as skimage)."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)


_SRGB_LINEAR = _srgb_linear_table()
# Rows of the XYZ matrix divided by the white point: RGB_linear -> (X/Xn, Y/Yn, Z/Zn).
_XYZN_FROM_RGB = np.array(_XYZ_FROM_RGB) / np.array(_WHITE_D65)[:, None]


def lab_ab(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 ``[..., 3]`` -> CIELAB ``(a*, b*)``, each float64 ``[...]``.

    The same conversion as ``skimage.color.rgb2lab`` (sRGB, illuminant D65, 2 degree
    observer): ``a* = 500 (f(X/Xn) - f(Y/Yn))``, ``b* = 200 (f(Y/Yn) - f(Z/Zn))`` with
    ``f(t) = t^(1/3)`` above 0.008856 and ``7.787 t + 16/116`` below. The sRGB
    linearisation is a 256-entry table; L* is not computed (luminance covers it).
    """
    images = np.asarray(images)
    if images.shape[-1:] != (3,):
        raise ValueError(f"images must end in an RGB axis of size 3, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    lead = images.shape[:-1]
    linear = _SRGB_LINEAR.take(images.reshape(-1, 3).T)  # planar [3, pixels]: faster below
    t = _XYZN_FROM_RGB @ linear
    f = np.cbrt(t)
    dark = t <= 0.008856
    f[dark] = 7.787 * t[dark] + 16.0 / 116.0
    a = f[0] - f[1]
    a *= 500.0
    b = f[1] - f[2]
    b *= 200.0
    return a.reshape(lead), b.reshape(lead)


# ------------------------------------------------------------------------ entropy


def _entropy_tables(size: int) -> tuple[np.ndarray, float]:
    """Fixed-point ``c log2 c`` table for window counts ``c = 0 .. size + 1``.

    Returns ``(table, scale)``: ``table[c] = round(scale * c log2 c)`` as int64, ``scale`` a power
    of two that keeps every sum of entries over a window far inside int64 (below ``2**62`` over
    the bit length of ``size + 1``). Integer sums are exact, so a running sum never drifts and a
    uniform window gives exactly 0 bits; the rounding of the table costs at most ``1 / scale``
    bits (``3e-14`` for radius 5, ``4e-9`` for 100).
    """
    counts = np.arange(size + 2, dtype=np.float64)
    clogc = np.zeros_like(counts)
    clogc[1:] = counts[1:] * np.log2(counts[1:])
    room = 62 - (size + 1).bit_length()
    scale = 2.0 ** math.floor(math.log2((2.0**room - 2.0 * (size + 2)) / max(clogc[-1], 1.0)))
    return np.rint(clogc * scale).astype(np.int64), scale


def _disk_rows(r: int) -> tuple[int, np.ndarray]:
    """Pixels of ``disk(r)`` and the half-width of each of its ``2r + 1`` rows."""
    footprint = disk(r).astype(bool)
    return int(footprint.sum()), footprint.sum(axis=1) // 2


def _check_grey(grey: np.ndarray, radius: int) -> tuple[np.ndarray, bool]:
    """Validate the entropy filters' input; returns ``[N, H, W]`` and whether it was 2-D."""
    grey = np.asarray(grey)
    if grey.dtype != np.uint8:
        raise TypeError(f"grey must be uint8, got {grey.dtype}")
    squeeze = grey.ndim == 2
    if squeeze:
        grey = grey[None]
    if grey.ndim != 3:
        raise ValueError(f"grey must be [N, H, W] or [H, W], got shape {grey.shape}")
    if radius < 0:
        raise ValueError("radius must be >= 0")
    return grey, squeeze


def local_entropy(grey: np.ndarray, radius: int = 5) -> np.ndarray:
    """Local Shannon entropy (bits) of uint8 grey images ``[N, H, W]`` (or ``[H, W]``) in a disk.

    Gives the same values as ``skimage.filters.rank.entropy(img, disk(radius))``
    (pixels outside the image do not count): ``local_entropy_in_parts`` with one part.
    """
    grey, squeeze = _check_grey(grey, radius)
    out = _sliding_entropy(grey, np.zeros(grey.shape, np.uint8), 1, radius)
    return out[0] if squeeze else out


def local_entropy_in_parts(
    grey: np.ndarray, labels: np.ndarray, num_parts: int, radius: int = 5
) -> np.ndarray:
    """Local entropy (bits) of every pixel over the pixels of its own part only.

    ``grey`` uint8 and ``labels`` integer, both ``[N, H, W]`` (or ``[H, W]``), labels in
    ``0 .. num_parts-1``. For a pixel of label ``P`` the window is the disk of ``radius``
    around it restricted to the pixels labelled ``P`` (pixels outside the image or of
    another label are left out), and its grey-level histogram gives the Shannon entropy.
    With a single label this is ``local_entropy``, bit for bit.

    skimage's rank filter walks all 256 histogram bins with a ``log`` per pixel; here the
    histogram of every (row, part) slides along the row and ``S = sum_g c_g log2 c_g`` is kept
    up to date from a fixed-point table (``_entropy_tables``), so each pixel costs ``2 (2r + 1)``
    table updates, and ``H = log2 n - S / n`` is exact where it is 0 (``entropy_kernel``).
    """
    grey, squeeze = _check_grey(grey, radius)
    labels = np.asarray(labels)
    if squeeze:
        labels = labels[None]
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer, got {labels.dtype}")
    if labels.shape != grey.shape:
        raise ValueError(f"labels shape {labels.shape} does not match grey {grey.shape}")
    if num_parts < 1:
        raise ValueError("num_parts must be >= 1")
    if labels.size and (labels.min() < 0 or labels.max() >= num_parts):
        raise ValueError(f"labels must lie in [0, {num_parts - 1}]")
    out = _sliding_entropy(grey, labels, num_parts, radius)
    return out[0] if squeeze else out


def _sliding_entropy(grey: np.ndarray, labels: np.ndarray, num_parts: int, r: int) -> np.ndarray:
    """Checked ``[N, H, W]`` input -> entropies, in chunks of images whose padded codes take
    about ``_ENTROPY_CHUNK_BYTES``."""
    from .entropy_kernel import sliding_entropy

    n_img, h, w = grey.shape
    size, half = _disk_rows(r)
    table, scale = _entropy_tables(size)
    inc = np.zeros_like(table)
    inc[:-1] = table[1:] - table[:-1]  # change of c log c when a count goes c -> c + 1
    dec = np.zeros_like(table)
    dec[1:] = table[:-1] - table[1:]  # ... and c -> c - 1
    inv_n = np.zeros(size + 1)
    inv_n[1:] = 1.0 / (np.arange(1, size + 1) * scale)
    out = np.empty((n_img, h, w), np.float64)
    padded = (h + 2 * r, w + 2 * r + 1)
    step = max(1, _ENTROPY_CHUNK_BYTES // (4 * padded[0] * padded[1]))
    # Part num_parts codes the margin: counted as the window slides over it, never read.
    codes = np.full((min(step, n_img), *padded), num_parts * 256, np.int32)
    for i0 in range(0, n_img, step):
        chunk = slice(i0, i0 + step)
        n = len(grey[chunk])
        inner = codes[:n, r : r + h, r + 1 : r + 1 + w]
        inner[...] = labels[chunk]
        inner *= 256
        inner += grey[chunk]
        sliding_entropy(codes[:n], r, num_parts + 1, half.astype(np.int64), inc, dec, table, inv_n, out[chunk])
    return out


# ----------------------------------------------------------------------- ellipses


class _Grid:
    """Pixel coordinates of a stack of images laid out as a label canvas, reused across chunks.

    The canvas stacks the images vertically with one separator row below each, so an
    8-connected labelling of the whole canvas never joins two images. Arrays are flat
    over ``[n_img, H + 1, W]``; any prefix of ``n * (H + 1) * W`` entries describes the
    first ``n`` images, so the last (shorter) chunk reuses them.
    """

    def __init__(self, n_img: int, h: int, w: int) -> None:
        x = np.arange(w, dtype=np.float64)
        y = np.arange(h + 1, dtype=np.float64)
        self.x = np.tile(x, n_img * (h + 1))
        self.y = np.tile(np.repeat(y, w), n_img)
        self.xx = self.x * self.x
        self.yy = self.y * self.y
        self.xy = self.x * self.y
        self.image = np.repeat(np.arange(n_img, dtype=np.intp), (h + 1) * w)


def _component_ellipses(
    masks: np.ndarray, num_parts: int, grid: _Grid | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of every part of every image, with their moment ellipses.

    One ``skimage.measure.label`` call labels the regions of equal mask value on the
    separator canvas (see ``_Grid``), so all parts of all images are done at once;
    moments then come from ``np.bincount`` over the component labels.

    Returns ``n_components`` float64 ``[N * P]`` (index ``n * P + part``), and for the
    components kept for the ellipse (>= MIN_ELLIPSE_PIXELS): their segment index and
    a float64 ``[C, 7]`` table ``(pixels, eccentricity, angle_rad, cx, cy, major, minor)``
    in pixel units, angle counter-clockwise with y up.
    """
    n_img, h, w = masks.shape
    n_seg = n_img * num_parts
    if grid is None:
        grid = _Grid(n_img, h, w)
    size = n_img * (h + 1) * w
    separator = num_parts  # never a part label; the canvas background
    canvas = np.full((n_img, h + 1, w), separator, np.uint8 if num_parts < 255 else np.int32)
    canvas[:, :h] = masks
    labels, count = measure.label(
        canvas.reshape(-1, w), background=separator, connectivity=2, return_num=True
    )
    labels = labels.ravel()
    comp_part = np.zeros(count + 1, np.intp)
    comp_part[labels] = canvas.ravel()
    comp_img = np.zeros(count + 1, np.intp)
    comp_img[labels] = grid.image[:size]
    seg = (comp_img * num_parts + comp_part)[1:]  # label 0 is the separator
    n_components = np.bincount(seg, minlength=n_seg).astype(np.float64)

    def moment(weights: np.ndarray | None) -> np.ndarray:
        sums = np.bincount(labels, None if weights is None else weights[:size], count + 1)
        return sums[1:].astype(np.float64)

    m = moment(None)
    keep = m >= MIN_ELLIPSE_PIXELS
    # Raw moments: pixel coordinates are small integers, so float64 keeps the
    # variances accurate to ~1e-9 px^2 even for 3-pixel components.
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = moment(grid.x) / m
        my = moment(grid.y) / m
        var_x = np.maximum(moment(grid.xx) / m - mx * mx, 0.0)
        var_y = np.maximum(moment(grid.yy) / m - my * my, 0.0)
        cov = moment(grid.xy) / m - mx * my
        mean = 0.5 * (var_x + var_y)
        spread = np.hypot(0.5 * (var_x - var_y), cov)
        lam1 = mean + spread
        lam2 = np.maximum(mean - spread, 0.0)
        ecc = np.where(lam1 > 0, np.sqrt(np.clip(1.0 - lam2 / lam1, 0.0, 1.0)), 0.0)
    # Major-axis direction in image coordinates (y down), then flipped to y up.
    angle = -0.5 * np.arctan2(2.0 * cov, var_x - var_y)
    table = np.stack(
        [m, ecc, angle, mx + 0.5, my + 0.5, 4.0 * np.sqrt(lam1), 4.0 * np.sqrt(lam2)], axis=1
    )
    return n_components, seg[keep], table[keep]


def _circular_degrees(radians: np.ndarray) -> np.ndarray:
    """Direction (radians, any range) -> degrees in [0, 360); NaN stays NaN."""
    deg = np.mod(np.degrees(radians), 360.0)
    return np.where(deg >= 360.0, 0.0, deg)  # np.mod(-tiny, 360) rounds to 360


def _axial_degrees(radians: np.ndarray) -> np.ndarray:
    """Axial angle (radians, any range) -> degrees in [0, 180)."""
    deg = np.mod(np.degrees(radians), 180.0)
    return np.where(deg >= 180.0, 0.0, deg)  # np.mod(-tiny, 180) rounds to 180


# ------------------------------------------------------------------------- public


def _check_pair(images: np.ndarray, masks: np.ndarray, num_parts: int, lead: int) -> None:
    """Validate shapes/dtypes/labels once, so errors are clear instead of silently wrong."""
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    if not np.issubdtype(masks.dtype, np.integer):
        raise TypeError(f"masks must be integer labels, got {masks.dtype}")
    if images.ndim != lead + 3 or images.shape[-1] != 3:
        raise ValueError(f"images must have {lead + 3} dims ending in RGB, got {images.shape}")
    if masks.shape != images.shape[:-1]:
        raise ValueError(f"masks shape {masks.shape} does not match images {images.shape}")
    if num_parts < 1:
        raise ValueError("num_parts must be >= 1")
    if masks.size and (masks.min() < 0 or masks.max() >= num_parts):
        raise ValueError(f"mask labels must lie in [0, {num_parts - 1}]")


def part_measures(
    images: np.ndarray, masks: np.ndarray, num_parts: int, *, entropy_radius: int = 5
) -> np.ndarray:
    """Static properties of every part of every image (see the module docstring).

    ``images`` uint8 ``[N, H, W, 3]``, ``masks`` integer ``[N, H, W]`` with labels in
    ``0 .. num_parts-1``. Returns float32 ``[N, num_parts, len(STATIC_PROPERTIES)]``.
    """
    return part_measures_many(images, [(masks, num_parts)], entropy_radius=entropy_radius)[0]


def part_measures_many(
    images: np.ndarray, mask_sets: Sequence[tuple[np.ndarray, int]], *, entropy_radius: int = 5
) -> list[np.ndarray]:
    """``part_measures`` of the same images under several segmentations (e.g. a segmenter's and
    the exact masks): luminance and CIELAB colour are computed once; the local entropy, which
    only counts a part's own pixels, once per segmentation (most of the cost).

    Work is done in chunks of about ``_CHUNK_PIXELS`` pixels: the per-pixel temporaries then
    stay in cache, which is ~2x faster than one huge batch.
    """
    images = np.asarray(images)
    sets = [(np.asarray(m), int(p)) for m, p in mask_sets]
    for masks, num_parts in sets:
        _check_pair(images, masks, num_parts, lead=1)
    n_img, h, w = images.shape[:3]
    outs = [np.empty((n_img, p, len(STATIC_PROPERTIES)), np.float32) for _, p in sets]
    step = max(1, _CHUNK_PIXELS // max(h * w, 1))
    grid = _Grid(min(step, n_img), h, w) if n_img else None
    for i0 in range(0, n_img, step):
        chunk = slice(i0, i0 + step)
        lum = luminance(images[chunk])
        colour = lab_ab(images[chunk])
        for out, (masks, num_parts) in zip(outs, sets):
            grey = relative_grey(lum, masks[chunk], num_parts)
            if num_parts == 1:  # the same values, without the per-label bookkeeping
                ent = local_entropy(grey, entropy_radius)
            else:
                ent = local_entropy_in_parts(grey, masks[chunk], num_parts, entropy_radius)
            out[chunk] = _measure_chunk(lum, colour, ent.ravel(), masks[chunk], num_parts, grid)
    return outs


def _measure_chunk(
    lum: np.ndarray,
    colour: tuple[np.ndarray, np.ndarray],
    ent: np.ndarray,
    masks: np.ndarray,
    num_parts: int,
    grid: _Grid | None,
) -> np.ndarray:
    """``part_measures`` for one chunk of images, from its luma, CIELAB ``(a*, b*)`` and flat
    per-part local entropy, as float32 ``[n, P, n_properties]``."""
    n_img, h, w = masks.shape
    n_seg = n_img * num_parts
    out = np.full((n_seg, len(STATIC_PROPERTIES)), np.nan, np.float64)
    seg = (np.arange(n_img, dtype=np.intp)[:, None] * num_parts + masks.reshape(n_img, -1)).ravel()
    pixels = np.bincount(seg, minlength=n_seg).astype(np.float64)
    present = pixels > 0
    with np.errstate(divide="ignore"):
        inv = np.where(present, 1.0 / pixels, np.nan)

    out[:, _IDX["area"]] = pixels / (h * w)
    out[:, _IDX["luminance"]] = np.bincount(seg, lum.ravel(), n_seg) * inv
    mean_a = np.bincount(seg, colour[0].ravel(), n_seg) * inv
    mean_b = np.bincount(seg, colour[1].ravel(), n_seg) * inv
    out[:, _IDX["lab_a"]] = mean_a
    out[:, _IDX["lab_b"]] = mean_b
    out[:, _IDX["chroma"]] = np.hypot(mean_a, mean_b)
    out[:, _IDX["hue"]] = _circular_degrees(np.arctan2(mean_b, mean_a))  # NaN stays NaN

    ent_mean = np.bincount(seg, ent, n_seg) * inv
    dev = ent - np.nan_to_num(ent_mean).take(seg)
    out[:, _IDX["entropy_mean"]] = ent_mean
    out[:, _IDX["entropy_std"]] = np.sqrt(np.bincount(seg, dev * dev, n_seg) * inv)
    lo = np.full(n_seg, np.inf)
    hi = np.full(n_seg, -np.inf)
    np.minimum.at(lo, seg, ent)
    np.maximum.at(hi, seg, ent)
    out[:, _IDX["entropy_min"]] = np.where(present, lo, np.nan)
    out[:, _IDX["entropy_max"]] = np.where(present, hi, np.nan)

    n_components, comp_seg, table = _component_ellipses(masks, num_parts, grid)
    out[:, _IDX["n_components"]] = n_components
    weight = table[:, 0]
    total = np.bincount(comp_seg, weight, n_seg)
    with np.errstate(divide="ignore"):
        inv_total = np.where(total > 0, 1.0 / total, np.nan)

    def wmean(values: np.ndarray) -> np.ndarray:
        """Area-weighted mean over each part's components."""
        return np.bincount(comp_seg, weight * values, n_seg) * inv_total

    out[:, _IDX["eccentricity"]] = wmean(table[:, 1])
    doubled = 2.0 * table[:, 2]  # axial data: average the doubled angle on the circle
    sum_cos = np.bincount(comp_seg, weight * np.cos(doubled), n_seg)
    sum_sin = np.bincount(comp_seg, weight * np.sin(doubled), n_seg)
    out[:, _IDX["angle"]] = np.where(
        total > 0, _axial_degrees(0.5 * np.arctan2(sum_sin, sum_cos)), np.nan
    )
    out[:, _IDX["center_x"]] = wmean(table[:, 3]) / w
    out[:, _IDX["center_y"]] = wmean(table[:, 4]) / h
    out[:, _IDX["width"]] = wmean(table[:, 5]) / w
    out[:, _IDX["height"]] = wmean(table[:, 6]) / h
    result = out.astype(np.float32)
    angle = result[:, _IDX["angle"]]
    angle[angle >= 180.0] = 0.0  # 179.999999... rounds up to 180 in float32
    hue = result[:, _IDX["hue"]]
    hue[hue >= 360.0] = 0.0  # likewise 359.999999...
    return result.reshape(n_img, num_parts, len(STATIC_PROPERTIES))


def farneback_params(height: int, width: int) -> dict[str, Any]:
    """Farneback parameters for a ``height x width`` flow, tuned on 32-256 px textured scenes.

    - ``levels``: enough pyramid levels for the coarsest to be 32 px (64 px -> 2,
      128 px -> 3); OpenCV never goes below 32 px anyway;
    - ``winsize`` 7: the same window at every level; a wider one (tried: 9-29)
      smears the flow of a part over its neighbours and its background, which
      made 6-8 px shifts at 64 px read 25-40 % short;
    - ``iterations`` 5, ``poly_n`` 7 with ``poly_sigma`` 1.5 (OpenCV's
      recommended pair for the larger neighbourhood), Gaussian window,
      ``pyr_scale`` 0.5. At 64 px this recovers shifts of 1-6 px within 1-2 %
      and 8 px within ~10 %, with < 0.01 px on static textured parts.
    """
    side = max(1, min(height, width))
    levels = max(1, math.floor(math.log2(max(side / 32.0, 1.0))) + 1)
    return {
        "pyr_scale": 0.5,
        "levels": levels,
        "winsize": 7,
        "iterations": 5,
        "poly_n": 7,
        "poly_sigma": 1.5,
        "flags": cv2.OPTFLOW_FARNEBACK_GAUSSIAN,
    }


def sweep_motion(
    images: np.ndarray,
    masks: np.ndarray,
    num_parts: int,
    *,
    max_flow_side: int = 128,
    flow_params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Optical flow of each part from step 0 to every step of each sweep.

    ``images`` uint8 ``[S, K, H, W, 3]``, ``masks`` integer ``[S, K, H, W]``. Returns
    float32 ``[S, K, num_parts, 3]`` holding ``MOTION_PROPERTIES``: mean flow magnitude
    (image widths), mean x displacement (widths) and mean y displacement (heights, y
    down), each averaged over the part's pixels at step 0; 0 at k = 0, NaN at every
    k where the part is absent at step 0. Only the step-0 masks are used.

    Images whose longer side exceeds ``max_flow_side`` are downscaled (area
    interpolation) to that size for the flow, and the flow is brought back to full
    resolution bilinearly: Farneback's fixed window and 32 px coarsest level
    otherwise underestimate large motions at 256 px (by ~20 % for a shift of 10 %
    of the width), and it is 4x cheaper. ``flow_params`` overrides
    ``farneback_params`` of the flow resolution.
    """
    return sweep_motion_many(images, [(masks, num_parts)], max_flow_side=max_flow_side, flow_params=flow_params)[0]


def sweep_motion_many(
    images: np.ndarray,
    mask_sets: Sequence[tuple[np.ndarray, int]],
    *,
    max_flow_side: int = 128,
    flow_params: Mapping[str, Any] | None = None,
) -> list[np.ndarray]:
    """``sweep_motion`` under several segmentations; the flow, all of the cost, is computed once."""
    images = np.asarray(images)
    sets = [(np.asarray(m), int(p)) for m, p in mask_sets]
    for masks, num_parts in sets:
        _check_pair(images, masks, num_parts, lead=2)
    n_sweeps, n_steps, h, w = images.shape[:4]
    n_comp = len(MOTION_PROPERTIES)
    outs = [np.zeros((n_sweeps, n_steps, p, n_comp), np.float32) for _, p in sets]
    if n_sweeps * n_steps * h * w == 0:
        return outs
    scale = min(1.0, max_flow_side / max(h, w))
    flow_w, flow_h = max(1, round(w * scale)), max(1, round(h * scale))
    params = dict(farneback_params(flow_h, flow_w))
    params.update(flow_params or {})
    # Per step: magnitude / flow width, dx / flow width, dy / flow height (resolution-free units).
    planes = np.zeros((n_comp, n_steps, h, w), np.float32)
    for s in range(n_sweeps):  # one cv2 call per image pair is unavoidable
        grey = grey_uint8(images[s])
        if scale < 1.0:
            grey = np.stack(
                [cv2.resize(g, (flow_w, flow_h), interpolation=cv2.INTER_AREA) for g in grey]
            )
        for k in range(1, n_steps):
            flow = cv2.calcOpticalFlowFarneback(grey[0], grey[k], None, **params)
            dx = flow[..., 0] / np.float32(flow_w)
            dy = flow[..., 1] / np.float32(flow_h)
            comps = (cv2.magnitude(flow[..., 0], flow[..., 1]) / np.float32(flow_w), dx, dy)
            for c, plane in enumerate(comps):
                if scale < 1.0:
                    plane = cv2.resize(plane, (w, h), interpolation=cv2.INTER_LINEAR)
                planes[c, k] = plane
        for out, (masks, num_parts) in zip(outs, sets):
            # Every step of the sweep at once, over the part regions at step 0.
            step_index = np.arange(n_steps, dtype=np.intp)[:, None] * num_parts
            seg = (step_index + masks[s, 0].reshape(1, -1)).ravel()
            pixels = np.bincount(seg, minlength=n_steps * num_parts)
            with np.errstate(divide="ignore", invalid="ignore"):
                for c in range(n_comp):
                    sums = np.bincount(seg, planes[c].ravel(), n_steps * num_parts)
                    out[s, :, :, c] = (sums / pixels).reshape(n_steps, num_parts)
    return outs
