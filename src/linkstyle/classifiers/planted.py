"""Planted units: a demo classifier extended by units whose meaning is known by construction.

``kind: planted`` takes a trained ``kind: demo`` classifier (its ``base``) and appends
``PLANTED_COUNT`` units to its penultimate layer::

    r = [r_base (the base's penultimate features), 8 image statistics, 8 factor probes]

The last ``nn.Linear`` maps ``r`` to the logits with the base's weights on ``r_base`` and zeros
on the planted units, so the network classifies exactly like its base, and the
:class:`~linkstyle.classifiers.wrapper.Classifier` wrapper reads ``r`` as usual (the input of the
last Linear). Every planted unit is computed from the [-1, 1] image alone, in torch, batched:

* *image statistics* read the pixels directly. The critters backdrop has HSV saturation exactly
  0.22 everywhere and a known vertical shading, its critter fur 0.30-0.95 (``critters._colours``),
  so a soft foreground mask (:func:`foreground_mask`) separates the critter from its backdrop;
  the statistics are means over one or the other; the critter's colour and texture over its
  interior only (the mask eroded by a pixel), since the rim's pixels blend fur and backdrop.
* *factor probes* are ridge regressions from ``r_base`` to one ground-truth factor of the
  critters world, fitted on training-range images that the base never saw: each is an exact
  linear combination of the base's units. They are fitted *within class* (each class's mean of
  features and factor removed) on images whose factors are *decorrelated* (each factor's logits
  shuffled among the images of one class): fitted on the world as it is, a probe of tail length
  learns to read the species (whose tails differ) and the factors that go with tail length within
  a species (stripe frequency, hue), and its sweep shows those instead of the tail.

Each unit is standardised over the fitting images, and carries its expected meaning in the
measure vocabulary ((part, property, sign) triples, :data:`PLANTED_UNITS`): the explanation
chain (link, sweep, render, segment, measure, select) must name that meaning for the unit.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..generators.base import Generator
from ..io import ARTIFACT_KEY, Origin, artifact_error, atomic_path, check_origin, missing_error, read_json, write_json
from ..linking import r2_score, within_class
from ..runtime import batches, progress
from ..seeds import EVAL_SEED_BASE, TRAIN_SEED_BASE, derive
from ..units import PLANTED_UNIT_COUNT
from .demo import DEMO_MEAN, DEMO_STD, build_demo_net
from .wrapper import Classifier, last_linear

# ----------------------------------------------------------------------------- the planted units

#: Parts whose pixels are painted with the critter's body colour (critters ``_FUR``).
FUR_PARTS = ("body", "head", "ear", "leg", "tail")
#: Every critter part, background excluded.
CRITTER_PARTS = ("body", "head", "ear", "eye", "nose", "leg", "tail")
#: The measure vocabulary the expected meanings are written in (part properties of measures.py).
PLANTED_PROPERTIES = (
    "area", "luminance", "lab_a", "lab_b", "chroma", "hue", "entropy_mean", "entropy_std", "entropy_min",
    "entropy_max", "eccentricity", "angle", "center_x", "center_y", "width", "height",
)
STATISTIC, PROBE = "statistic", "probe"

Meaning = tuple[tuple[str, str, str], ...]


def _each(parts: Sequence[str], properties: Sequence[str], sign: str = "+") -> Meaning:
    return tuple((p, q, sign) for p in parts for q in properties)


@dataclass(frozen=True)
class PlantedUnit:
    """One planted unit: what it computes and what its explanation must say.

    ``expected``: acceptable (part, property, sign) triples; an explanation that names any one of
    them (with its sign: '+' the property grows as the unit grows) names the planted property.
    ``factor``: for probes, the critters factor (``FACTOR_NAMES``) the probe regresses on.
    """

    name: str
    group: str
    kind: str
    expected: Meaning
    factor: str | None = None


PLANTED_UNITS: tuple[PlantedUnit, ...] = (
    PlantedUnit("backdrop_luminance", "backdrop", STATISTIC, (("background", "luminance", "+"),)),
    PlantedUnit("backdrop_lab_b", "backdrop", STATISTIC, (("background", "lab_b", "+"),)),
    PlantedUnit("critter_x", "position", STATISTIC,
                _each(CRITTER_PARTS, ("center_x",)) + (("background", "center_x", "-"),)),
    PlantedUnit("critter_y", "position", STATISTIC,
                _each(CRITTER_PARTS, ("center_y",)) + (("background", "center_y", "-"),)),
    PlantedUnit("critter_area", "size", STATISTIC, _each(FUR_PARTS, ("area", "width", "height"))),
    PlantedUnit("critter_luminance", "colour", STATISTIC, _each(FUR_PARTS, ("luminance",))),
    PlantedUnit("critter_lab_a", "colour", STATISTIC, _each(FUR_PARTS, ("lab_a",))),
    PlantedUnit("critter_texture", "texture", STATISTIC,
                _each(("body", "tail"), ("entropy_mean", "entropy_std", "entropy_max"))),
    # A probe's expected meaning is its factor's: the (part, property) pairs the world says that factor
    # changes (critters FACTOR_CONCEPTS, which concept recovery scores against), each with the sign it
    # has for every species (hue's CIELAB a*/b* turn either way, so only hue itself is listed): a
    # brighter fur comes with darker eyes and nose, a brighter backdrop with a stronger shading.
    # Probes of the factors the default base network carries (within-class cross-validated R^2 0.5-0.95
    # from ResNet-18's features; docs/selectivity.md): a probe of a factor the network barely carries
    # (ear size, R^2 0.01) correlates with its factor at 0.1 and is mostly other things, so its meaning
    # is not known. Signs as the world renders them (tests/test_planted.py measures them): y grows
    # upwards in the factors and downwards in center_y; a raised nose turns the body's axis counter-clockwise;
    # the tail is too thin for its stripes to change its local entropy.
    PlantedUnit("probe_position_x", "probe", PROBE, _each(CRITTER_PARTS, ("center_x",)), "position_x"),
    PlantedUnit("probe_position_y", "probe", PROBE, _each(CRITTER_PARTS, ("center_y",), "-"), "position_y"),
    PlantedUnit("probe_pose", "probe", PROBE,
                _each(("body", "head"), ("angle",)) + _each(("head", "ear", "eye", "nose"), ("center_y",), "-")
                + (("tail", "center_y", "+"),), "pose"),
    PlantedUnit("probe_hue", "probe", PROBE, _each(FUR_PARTS, ("hue",)), "hue"),
    PlantedUnit("probe_luminance", "probe", PROBE,
                _each(FUR_PARTS, ("luminance",)) + _each(("eye", "nose"), ("luminance",), "-"), "luminance"),
    PlantedUnit("probe_stripe_contrast", "probe", PROBE,
                _each(["body"], ("entropy_mean", "entropy_std", "entropy_max"))
                + _each(("body", "tail"), ("luminance",), "-"), "stripe_contrast"),
    PlantedUnit("probe_background_luminance", "probe", PROBE,
                _each(["background"], ("luminance", "entropy_mean", "entropy_min", "entropy_max")),
                "background_luminance"),
    PlantedUnit("probe_saturation", "probe", PROBE,
                _each(FUR_PARTS, ("chroma",)) + _each(FUR_PARTS, ("luminance",), "-"), "saturation"),
)
STATISTIC_UNITS = tuple(u for u in PLANTED_UNITS if u.kind == STATISTIC)
PROBE_UNITS = tuple(u for u in PLANTED_UNITS if u.kind == PROBE)
PROBE_FACTORS = tuple(str(u.factor) for u in PROBE_UNITS)
assert len(PLANTED_UNITS) == PLANTED_UNIT_COUNT and PLANTED_UNITS[: len(STATISTIC_UNITS)] == STATISTIC_UNITS

#: Probes are fitted on training-range seeds from here on: far above the demo training's
#: TRAIN_SEED_BASE + steps * batch_size, below the evaluation seeds at TRAIN_SEED_BASE + 2^30.
PLANTED_SEED_OFFSET = 2**29
#: Most images the standardisation and the probes are fitted on (fewer when the base was trained on fewer).
PLANTED_FIT_IMAGES = 4096
#: Ridge penalties tried per probe (on standardised base units), chosen by 5-fold cross-validation.
PROBE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))
PROBE_CV_FOLDS = 5

# ----------------------------------------------------------------------------- pixels -> statistics

#: The critters backdrop: HSV saturation 0.22 everywhere, brightness scaled by 1 + 0.15 y (y the
#: frame coordinate, up, in [-1, 1]; critters ``_colours``: background row and 0.3 * sky * y).
BACKDROP_SATURATION = 0.22
BACKDROP_SHADING = 0.15
#: Critter fur has HSV saturation at least this (critters FACTOR_RANGES['saturation']).
FUR_MIN_SATURATION = 0.30
_LUMA = (0.299, 0.587, 0.114)
# sRGB (D65) -> XYZ, and the D65 white point: the constants of skimage.color.rgb2lab.
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE = (0.95047, 1.0, 1.08883)
_EPS = 1e-6


def _rgb01(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] NCHW -> [0, 1] NCHW float32."""
    return (images.float().clamp(-1.0, 1.0) + 1.0) * 0.5


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] [N, 3, H, W] -> CIELAB (L*, a*, b*) [N, 3, H, W], D65, as skimage's rgb2lab."""
    rgb = rgb.float()
    lin = torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
    white = torch.tensor(_WHITE, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,njhw->nihw", m, lin) / white
    delta = 6.0 / 29.0
    f = torch.where(xyz > delta**3, xyz.clamp(min=delta**3) ** (1.0 / 3.0), xyz / (3 * delta**2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def _saturation(rgb: torch.Tensor) -> torch.Tensor:
    """HSV saturation [N, H, W] of [0, 1] RGB."""
    top = rgb.amax(1)
    return (top - rgb.amin(1)) / top.clamp(min=1e-4)


def _wmean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-image weighted mean over H, W: values [N, ..., H, W], weight [N, H, W]."""
    while weight.ndim < values.ndim:
        weight = weight.unsqueeze(1)
    return (values * weight).sum((-2, -1)) / weight.sum((-2, -1)).clamp(min=_EPS)


def foreground_mask(images: torch.Tensor) -> torch.Tensor:
    """A soft mask [N, H, W] in [0, 1] of the critter (1) against its backdrop (0), from the pixels alone.

    Two cues, each exact for the interior of a region and a guess only at its one-pixel rim:

    * saturation: fur has HSV saturation >= 0.30, the backdrop exactly 0.22; the threshold lies
      halfway between 0.22 and the fur's mean saturation in this image (a blend of a strongly
      saturated critter with its backdrop passes a fixed threshold well before it is half critter);
    * colour: the backdrop is one colour shaded by 1 + 0.15 y, estimated from the pixels of
      saturation 0.22; a pixel's distance from it, relative to the largest distance in its 3x3
      neighbourhood, estimates how much of it is critter, which finds dark critters, whose blends
      with a bright backdrop keep the backdrop's saturation, and the near-black eyes.

    The mask is their maximum. Against the exact masks (label != 0) its IoU is about 0.95 at
    64 px and 0.86 at 32 px (tests/test_planted.py; the rim is a larger share of a smaller image).
    """
    rgb = _rgb01(images)
    n, _, h, _ = rgb.shape
    sat = _saturation(rgb)
    y = 1.0 - (2.0 * torch.arange(h, dtype=rgb.dtype, device=rgb.device) + 1.0) / h
    shade = (1.0 + BACKDROP_SHADING * y).view(1, 1, h, 1)
    flat = rgb / shade
    candidate = torch.exp(-(((sat - BACKDROP_SATURATION) / 0.01) ** 2))
    sky = _wmean(flat, candidate)
    for _ in range(2):  # drop the rim pixels that pass the saturation test by chance
        off = (flat - sky[:, :, None, None]).abs().amax(1)
        sky = _wmean(flat, candidate * torch.exp(-((off / 0.02) ** 2)))
    distance = torch.sqrt(((rgb - sky[:, :, None, None] * shade) ** 2).sum(1) + 1e-12)
    local = F.max_pool2d(distance[:, None], 3, stride=1, padding=1)[:, 0]
    share = distance / local.clamp(min=1e-3)
    by_colour = torch.sigmoid((share - 0.5) / 0.05) * torch.sigmoid((local - 0.05) / 0.01)
    fur = torch.sigmoid((sat - FUR_MIN_SATURATION) / 0.005)
    fur_sat = ((sat * fur).sum((1, 2)) + FUR_MIN_SATURATION * 1e-3) / (fur.sum((1, 2)) + 1e-3)
    threshold = 0.5 * (BACKDROP_SATURATION + fur_sat)
    by_saturation = torch.sigmoid((sat - threshold.view(n, 1, 1)) / 0.005)
    return torch.maximum(by_colour, by_saturation)


def image_statistics(images: torch.Tensor) -> torch.Tensor:
    """The raw (unstandardised) image statistics [N, 8] of [-1, 1] images, in STATISTIC_UNITS order."""
    rgb = _rgb01(images)
    _, _, h, w = rgb.shape
    fg = foreground_mask(images)
    bg = 1.0 - fg
    luma = sum(c * rgb[:, i] for i, c in enumerate(_LUMA))
    lab = srgb_to_lab(rgb)
    xs = ((torch.arange(w, dtype=rgb.dtype, device=rgb.device) + 0.5) / w).view(1, 1, w)
    ys = ((torch.arange(h, dtype=rgb.dtype, device=rgb.device) + 0.5) / h).view(1, h, 1)
    # Colour and texture from the fur's interior only (the soft mask eroded by a pixel): the rim's pixels
    # blend fur and backdrop, so statistics over them rose with the backdrop's brightness (the texture
    # spread's within-class correlation with background_luminance was 0.46-0.52, its top factor in two
    # of five species; the mean luminance's up to 0.35; tests/test_planted.py).
    core = -F.max_pool2d(-fg[:, None], 3, stride=1, padding=1)[:, 0]
    critter_luma = _wmean(luma, core)
    spread = torch.sqrt((_wmean(luma * luma, core) - critter_luma**2).clamp(min=0.0) + 1e-10)
    return torch.stack(
        [
            _wmean(luma, bg),  # backdrop_luminance
            _wmean(lab[:, 2], bg),  # backdrop_lab_b
            _wmean(xs.expand_as(fg), fg),  # critter_x
            _wmean(ys.expand_as(fg), fg),  # critter_y (rows grow downwards)
            fg.mean((1, 2)),  # critter_area
            critter_luma,  # critter_luminance
            _wmean(lab[:, 1], core),  # critter_lab_a
            spread,  # critter_texture
        ],
        dim=1,
    )


# ----------------------------------------------------------------------------- the network


def _split_last_linear(net: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """``net`` with its last Linear replaced by an identity (so it returns that Linear's input), and the Linear."""
    fc = last_linear(net)
    name = next(n for n, m in net.named_modules() if m is fc)
    parent_name, _, attr = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, attr, nn.Identity())
    return net, fc


class PlantedNet(nn.Module):
    """The base's trunk, the planted units, and a head that reads only the base's units.

    Takes the [-1, 1] image (the demo wrapper's normalisation, mean = std = 0.5, restores it).
    """

    stat_mean: torch.Tensor
    stat_std: torch.Tensor
    probe_weight: torch.Tensor
    probe_bias: torch.Tensor

    def __init__(self, trunk: nn.Module, base_units: int, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.base_units = int(base_units)
        n_stat, n_probe = len(STATISTIC_UNITS), len(PROBE_UNITS)
        self.register_buffer("stat_mean", torch.zeros(n_stat))
        self.register_buffer("stat_std", torch.ones(n_stat))
        self.register_buffer("probe_weight", torch.zeros(n_probe, base_units))
        self.register_buffer("probe_bias", torch.zeros(n_probe))
        # Registered last: the wrapper reads r as the input of the last Linear.
        self.fc = nn.Linear(base_units + PLANTED_UNIT_COUNT, num_classes)

    def base_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).flatten(1)

    def planted(self, x: torch.Tensor, r_base: torch.Tensor) -> torch.Tensor:
        stats = (image_statistics(x) - self.stat_mean) / self.stat_std
        probes = F.linear(r_base, self.probe_weight.to(r_base.dtype), self.probe_bias.to(r_base.dtype))
        return torch.cat([stats.to(r_base.dtype), probes], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r_base = self.base_features(x)
        return self.fc(torch.cat([r_base, self.planted(x, r_base)], dim=1))


def build_planted_net(arch: str, num_classes: int, resolution: int) -> PlantedNet:
    """An untrained planted network of the demo architecture ``arch`` (weights come from a file or ``plant``)."""
    trunk, fc = _split_last_linear(build_demo_net(arch, num_classes, resolution))
    return PlantedNet(trunk, fc.in_features, num_classes)


def plant(base: Classifier, name: str | None = None) -> Classifier:
    """A planted classifier on a copy of ``base``'s network: the head copies the base's, planted units
    are not yet fitted (zero probes, statistics unscaled); :func:`fit_planted` fits them."""
    if tuple(base.mean.flatten().tolist()) != DEMO_MEAN or tuple(base.std.flatten().tolist()) != DEMO_STD:
        raise ValueError(f"classifier '{base.name}' is not a demo classifier (its input normalisation differs)")
    # (the memo keeps the wrapper's capture hook on the copied head from copying the whole wrapper)
    trunk, fc = _split_last_linear(copy.deepcopy(base.net, memo={id(base): base}).cpu())
    net = PlantedNet(trunk, fc.in_features, fc.out_features)
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.weight[:, : fc.in_features] = fc.weight
        net.fc.bias.copy_(fc.bias)
    device = base.fc.weight.device
    clf = Classifier(net, name=name or base.name, input_size=None, mean=DEMO_MEAN, std=DEMO_STD,
                     class_names=base.class_names)
    return clf.to(device).eval()


def probe_linear(clf: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
    """(coef [base_units, probes], bias [probes]): each probe unit is ``r_base @ coef + bias``."""
    net = _planted_net(clf)
    return net.probe_weight.T, net.probe_bias


def _planted_net(clf: Classifier) -> PlantedNet:
    if not isinstance(clf.net, PlantedNet):
        raise ValueError(f"classifier '{clf.name}' has no planted units")
    return clf.net


# ----------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class PlantedFit:
    """What fitting found: probe penalties and cross-validated R^2, and the standardisation."""

    fit_images: int
    first_seed: int
    probe_alpha: dict[str, float]
    probe_cv_r2: dict[str, float]
    unit_mean: list[float]  # raw mean of each planted unit over the fitting images
    unit_std: list[float]


def _ridge_fits(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge coefficients [alphas, features, targets] for centred ``x``, ``y``, from one eigendecomposition
    of the Gram matrix (features are few next to images, so this beats an SVD of ``x``)."""
    # torch's eigh: numpy's OpenBLAS threads would fight torch's idle-spinning ones (a second instead of 0.1 s)
    evals_t, evecs_t = torch.linalg.eigh(torch.from_numpy(x.T @ x))
    evals, evecs = evals_t.numpy(), evecs_t.numpy()
    proj = evecs.T @ (x.T @ y)  # [k, t]
    shrink = 1.0 / (np.clip(evals, 0.0, None)[None, :] + alphas[:, None])  # [A, k]
    return np.matmul(evecs[None], shrink[:, :, None] * proj[None])


def ridge_per_target(
    x: np.ndarray, y: np.ndarray, alphas: Sequence[float], folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge from standardised ``x`` to each column of ``y`` with its own penalty, the one of highest mean
    held-out R^2 over ``folds`` folds. Returns coef [features, targets] and intercept [targets] in the raw
    units of ``x``, and each target's penalty and cross-validated R^2."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    grid = np.asarray(sorted(alphas), dtype=np.float64)
    n = len(x)
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    scores = np.zeros((len(grid), y.shape[1]))
    for k in range(folds):
        tr, va = fold_of != k, fold_of == k
        mean, scale = x[tr].mean(0), x[tr].std(0)
        scale[scale < 1e-8] = 1.0
        ym = y[tr].mean(0)
        path = _ridge_fits((x[tr] - mean) / scale, y[tr] - ym, grid)
        pred = np.matmul(((x[va] - mean) / scale)[None], path) + ym  # [A, n, t]
        ss_tot = ((y[va] - y[va].mean(0)) ** 2).sum(0)
        scores += (1.0 - ((pred - y[va]) ** 2).sum(1) / np.maximum(ss_tot, 1e-12)) / folds
    best = scores.argmax(0)
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-8] = 1.0
    ym = y.mean(0)
    path = _ridge_fits((x - mean) / scale, y - ym, grid)
    beta = path[best, :, np.arange(y.shape[1])].T  # [features, targets]
    coef = beta / scale[:, None]
    return coef, ym - mean @ coef, grid[best], scores[best, np.arange(y.shape[1])]


def _render(generator: Generator, seeds: np.ndarray, psi: float, device: torch.device):
    """Images, labels, exact part masks and factors of a block of seeds (classes as demo training draws them)."""
    classes = torch.as_tensor(seeds % generator.num_classes, dtype=torch.long, device=device)
    z = generator.sample_z(seeds.tolist()).to(device)
    w = generator.mapping(z, classes, truncation_psi=psi)
    images, truth = generator.render(w)
    return images, classes, truth


def _render_decorrelated(generator: Generator, seeds: np.ndarray, psi: float, device: torch.device, seed: int):
    """As :func:`_render`, with each factor's logits shuffled among the images of each class (one
    permutation per factor and class, from ``seed``): every factor keeps its distribution within a
    class, and no factor carries information about another one any more."""
    classes = torch.as_tensor(seeds % generator.num_classes, dtype=torch.long, device=device)
    z = generator.sample_z(seeds.tolist()).to(device)
    logits = generator.w_to_logits(generator.mapping(z, classes, truncation_psi=psi))
    rng = np.random.default_rng(seed)
    shuffled = logits.clone()
    for c in torch.unique(classes).tolist():
        rows = torch.nonzero(classes == c)[:, 0]
        for j in range(logits.shape[1]):
            shuffled[rows, j] = logits[rows[torch.from_numpy(rng.permutation(len(rows))).to(device)], j]
    images, truth = generator.render(generator.logits_to_w(shuffled))
    return images, classes, truth


def _factor_index(generator: Generator) -> list[int]:
    names = list(getattr(generator, "factor_names", ()))
    missing = [f for f in PROBE_FACTORS if f not in names]
    if missing:
        raise ValueError(f"planted probes need the critters world's factors; the generator has no {', '.join(missing)}")
    return [names.index(f) for f in PROBE_FACTORS]


def fit_planted(
    base: Classifier,
    generator: Generator,
    *,
    fit_images: int,
    truncation_psi: float,
    device: torch.device,
    first_seed: int = TRAIN_SEED_BASE + PLANTED_SEED_OFFSET,
    batch_size: int = 256,
    seed: int = 0,
    name: str | None = None,
) -> tuple[Classifier, PlantedFit]:
    """Plant units into ``base``: fit probes (ridge, penalty by cross-validation) and the standardisation
    on ``fit_images`` images of seeds ``first_seed..``, drawn as demo training draws (all classes pooled)
    with their factors decorrelated within class; the probes are fitted within class."""
    if fit_images < 2 * PROBE_CV_FOLDS:
        raise ValueError(f"fitting planted units needs at least {2 * PROBE_CV_FOLDS} images, got {fit_images}")
    index = _factor_index(generator)
    clf = plant(base, name)
    net = _planted_net(clf)
    if not hasattr(generator, "w_to_logits"):
        raise ValueError("planted probes need a generator with factor logits (the critters world)")
    feats, stats, factors, labels = [], [], [], []
    bar = progress(fit_images, f"plant units in {base.name}")
    with torch.inference_mode():  # (the network itself is made outside: it must stay differentiable)
        for sl in batches(fit_images, batch_size):
            seeds = first_seed + np.arange(sl.start, sl.stop, dtype=np.int64)
            images, classes, truth = _render_decorrelated(generator, seeds, truncation_psi, device,
                                                          derive(seed, "planted-decorrelate", sl.start))
            x = clf.preprocess(images)
            labels.append(classes.cpu().numpy())
            feats.append(net.base_features(x).double().cpu().numpy())
            stats.append(image_statistics(x).double().cpu().numpy())
            factors.append(truth.factors[:, index].double().cpu().numpy())
            bar.update(sl.stop - sl.start)
    bar.close()
    r_base, raw_stats, y = np.concatenate(feats), np.concatenate(stats), np.concatenate(factors)
    classes = np.concatenate(labels)
    coef, _, best, scores = ridge_per_target(within_class(r_base, classes), within_class(y, classes),
                                             PROBE_ALPHAS, PROBE_CV_FOLDS, derive(seed, "planted"))
    intercept = y.mean(0) - r_base.mean(0) @ coef
    alphas = {f: float(a) for f, a in zip(PROBE_FACTORS, best)}
    cv = {f: float(v) for f, v in zip(PROBE_FACTORS, scores)}
    raw_probes = r_base @ coef + intercept
    raw = np.concatenate([raw_stats, raw_probes], axis=1)
    mean, std = raw.mean(0), raw.std(0)
    std = np.where(std > 1e-8, std, 1.0)  # a constant unit stays 0 rather than blowing up
    ns = len(STATISTIC_UNITS)
    with torch.no_grad():
        net.stat_mean.copy_(torch.as_tensor(mean[:ns]))
        net.stat_std.copy_(torch.as_tensor(std[:ns]))
        net.probe_weight.copy_(torch.as_tensor((coef / std[ns:]).T))
        net.probe_bias.copy_(torch.as_tensor((intercept - mean[ns:]) / std[ns:]))
    fit = PlantedFit(fit_images, int(first_seed), alphas, cv, mean.tolist(), std.tolist())
    return clf, fit


@torch.inference_mode()
def check_planted(
    clf: Classifier,
    base: Classifier,
    generator: Generator,
    fit: PlantedFit,
    n: int,
    psi: float,
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, Any]:
    """On held-out evaluation images (the seeds demo evaluation uses): each probe's R^2 against its
    factor, the foreground mask's IoU against the exact masks (soft and thresholded at 0.5, pooled
    over images), and how exactly the planted classifier agrees with its base."""
    index = _factor_index(generator)
    net = _planted_net(clf)
    ns, b = len(STATISTIC_UNITS), net.base_units
    mean, std = np.asarray(fit.unit_mean[ns:]), np.asarray(fit.unit_std[ns:])
    preds, truths, labels = [], [], []
    inter = union = inter_hard = union_hard = 0.0
    agree, max_diff = 0, 0.0
    for sl in batches(n, batch_size):
        seeds = EVAL_SEED_BASE + np.arange(sl.start, sl.stop, dtype=np.int64)
        images, classes, truth = _render(generator, seeds, psi, device)
        labels.append(classes.cpu().numpy())
        r, logits = clf.features_and_logits(images)
        base_logits = base(images)
        agree += int((logits.argmax(1) == base_logits.argmax(1)).sum())
        max_diff = max(max_diff, float((logits - base_logits).abs().max()))
        preds.append(r[:, b + ns :].double().cpu().numpy() * std + mean)
        truths.append(truth.factors[:, index].double().cpu().numpy())
        fg = foreground_mask(images).double()
        exact = (truth.masks != 0).to(fg.device, fg.dtype)
        inter += float((fg * exact).sum())
        union += float((fg + exact - fg * exact).sum())
        hard = (fg > 0.5).double()
        inter_hard += float((hard * exact).sum())
        union_hard += float(((hard + exact) > 0).double().sum())
    pred, true, classes = np.concatenate(preds), np.concatenate(truths), np.concatenate(labels)
    pred_wc, true_wc = within_class(pred, classes), within_class(true, classes)
    return {
        "probe_r2": {f: r2_score(true[:, [j]], pred[:, [j]]) for j, f in enumerate(PROBE_FACTORS)},
        # what a sweep (within class) sees: the probe's slope is fitted within class, its offsets are not
        "probe_r2_within_class": {f: float(np.corrcoef(true_wc[:, j], pred_wc[:, j])[0, 1] ** 2)
                                  for j, f in enumerate(PROBE_FACTORS)},
        "foreground_iou": inter / max(union, _EPS),
        "foreground_iou_thresholded": inter_hard / max(union_hard, _EPS),
        "base_agreement": agree / n,
        "max_logit_difference": max_diff,
    }


# ----------------------------------------------------------------------------- the spec and the files


def planted_spec_path(weights: str | Path) -> Path:
    """``planted.json`` beside a planted classifier's ``weights.pt``."""
    return Path(weights).with_name("planted.json")


def planted_spec(base_units: int, probe_r2: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One entry per planted unit: its index in r, name, group, kind, expected meaning and probe R^2."""
    probe_r2 = probe_r2 or {}
    return [
        {
            "unit": base_units + k,
            "name": u.name,
            "group": u.group,
            "kind": u.kind,
            "expected": [list(t) for t in u.expected],
            "probe_r2": None if u.factor is None else probe_r2.get(u.factor),
            "factor": u.factor,
        }
        for k, u in enumerate(PLANTED_UNITS)
    ]


_SPEC_KEYS = ("unit", "name", "group", "kind", "expected", "probe_r2")


def write_planted_spec(spec: list[dict[str, Any]], path: str | Path, classifier: str, base: str | None,
                       origin: Origin | None = None) -> Path:
    """``planted.json``: ``{"classifier", "base", "units": spec}``, atomically, with the artifact origin
    (the train stage writes one for every classifier it trains: an empty list for kind demo)."""
    return write_json({"classifier": classifier, "base": base, "units": spec}, path, origin)


def load_planted_spec(path: str | Path, origin: Origin | None = None) -> list[dict[str, Any]]:
    """The planted units of a classifier, from its ``planted.json`` (``planted_spec_path``): a list of
    ``{unit, name, group, kind, expected: [[part, property, sign], ...], probe_r2, factor}``, in unit order.

    With ``origin`` (``artifacts.origin(cfg, 'train_classifier', classifier=name)``) the file must come from the
    current config's train stage."""
    path = Path(path)
    return check_planted_spec(read_json(path, origin=origin, keys=("units",)), path, origin)


def check_planted_spec(data: dict[str, Any], path: Path, origin: Origin | None = None) -> list[dict[str, Any]]:
    """The planted-unit list of a read ``planted.json`` (artifacts.ARTIFACTS['planted_spec']), each entry checked."""
    units = data["units"]
    bad = [i for i, u in enumerate(units if isinstance(units, list) else [None])
           if not isinstance(u, dict) or any(k not in u for k in _SPEC_KEYS)]
    if not isinstance(units, list) or bad:
        raise artifact_error(path, f"is not a planted-unit list (entries {bad} lack one of {', '.join(_SPEC_KEYS)})", origin)
    return units


#: Bumped when an image statistic's definition changes: weights standardised with another definition's
#: mean and spread are refused, not silently misread. 2: the critter's colour and texture inside the eroded fur mask.
STATISTICS_VERSION = 2

_PAYLOAD = ("kind", "arch", "num_classes", "resolution", "class_names", "base", "base_units", "state_dict")


def save_planted(clf: Classifier, arch: str, resolution: int, base: str, path: str | Path, extra: dict[str, Any]) -> None:
    """The whole planted network (trunk, planted units, head) in one file: it loads without the base's file."""
    net = _planted_net(clf)
    payload = {
        "kind": "planted",
        "arch": arch,
        "num_classes": clf.num_classes,
        "resolution": resolution,
        "class_names": list(clf.class_names),
        "base": base,
        "base_units": net.base_units,
        "planted": [u.name for u in PLANTED_UNITS],
        "statistics_version": STATISTICS_VERSION,
        "state_dict": net.state_dict(),
        **extra,
    }
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)


def load_planted(path: str | Path, name: str, device: torch.device, origin: Origin | None = None,
                 base: str | None = None) -> Classifier:
    """Load weights written by ``save_planted``; a missing, damaged, stale or foreign file is an ArtifactError.

    With ``base``, the file must have been planted into that classifier."""
    path = Path(path)
    if not path.is_file():
        raise missing_error(path, origin)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError... for a damaged file
        text = str(exc).strip().splitlines()
        raise artifact_error(path, f"cannot be read as planted classifier weights ({type(exc).__name__}: "
                                   f"{text[0] if text else ''}): it is corrupted or truncated", origin) from exc
    absent = [k for k in _PAYLOAD if not isinstance(payload, dict) or k not in payload]
    if absent or payload.get("kind") != "planted":
        raise artifact_error(path, f"is not a planted classifier file written by linkstyle train_classifier "
                                   f"(no {', '.join(absent) or 'kind planted'})", origin)
    check_origin(path, payload.get(ARTIFACT_KEY), origin)
    if base is not None and payload["base"] != base:
        raise artifact_error(path, f"holds units planted into classifier '{payload['base']}', but the config's base "
                                   f"is '{base}'", origin)
    if payload.get("planted") != [u.name for u in PLANTED_UNITS]:
        raise artifact_error(path, "holds other planted units than this linkstyle plants (written by another version)", origin)
    version = payload.get("statistics_version", 1)  # files from before the statistics were versioned: 1
    if version != STATISTICS_VERSION:
        raise artifact_error(path, f"was planted with image statistics of version {version}, this linkstyle "
                                   f"computes version {STATISTICS_VERSION} (written by another version)", origin)
    net = build_planted_net(payload["arch"], payload["num_classes"], payload["resolution"])
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise artifact_error(path, f"does not fit a planted {payload['arch']}: {str(exc).splitlines()[0]}", origin) from exc
    clf = Classifier(net, name=name, input_size=None, mean=DEMO_MEAN, std=DEMO_STD, class_names=payload["class_names"])
    return clf.to(device).eval()


def fit_image_count(train_steps: int, train_batch_size: int) -> int:
    """Images the planted units are fitted on: PLANTED_FIT_IMAGES, or as many as the base was trained on
    when that is fewer (at least 512)."""
    return int(min(PLANTED_FIT_IMAGES, max(512, train_steps * train_batch_size)))


__all__ = [
    "PLANTED_UNITS",
    "PlantedNet",
    "PlantedUnit",
    "build_planted_net",
    "check_planted",
    "check_planted_spec",
    "fit_planted",
    "foreground_mask",
    "image_statistics",
    "load_planted",
    "load_planted_spec",
    "plant",
    "planted_spec",
    "planted_spec_path",
    "probe_linear",
    "save_planted",
    "srgb_to_lab",
    "write_planted_spec",
]
