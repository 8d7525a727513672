"""Critters: a procedural, class-conditional world of little four-legged animals.

Every pixel is an exact, known function of 25 named factors, so what a linked
unit encodes can be scored against ground truth (part masks and factor values)
instead of against a learned generator's guesses.

The latent ``w`` is entangled on purpose, like StyleGAN's W: it is a fixed random
rotation (plus offset) of the factor logits, so every ``w`` coordinate mixes all
factors while ``factors(w)`` still recovers them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from linkstyle.class_names import CRITTER_NAMES
from linkstyle.generators.base import GroundTruth

__all__ = [
    "CIRCULAR_FACTORS",
    "CLASS_NAMES",
    "FACTOR_CONCEPTS",
    "FACTOR_NAMES",
    "FACTOR_RANGES",
    "MAX_RESOLUTION",
    "MIN_RESOLUTION",
    "PART_NAMES",
    "Z_DIM",
    "Critters",
    "sample_z",
]

PART_NAMES: tuple[str, ...] = (
    "background",
    "body",
    "head",
    "ear",
    "eye",
    "nose",
    "leg",
    "tail",
)

# Physical range of each factor: value v in [0, 1] maps to lo + v * (hi - lo).
# Lengths are in frame units (the image spans [-1, 1]), angles in radians,
# colours in HSV units, stripe frequency in cycles per frame unit.
FACTOR_RANGES: dict[str, tuple[float, float]] = {
    "body_length": (0.260, 0.440),  # half-length of the body ellipse
    "body_height": (0.130, 0.230),  # half-height of the body ellipse
    "pose": (-0.30, 0.30),  # body rotation, positive = nose up
    "head_size": (0.105, 0.175),  # head radius (ellipse 1.25r x 0.95r)
    "head_angle": (-0.25, 1.05),  # neck direction above the body axis
    "ear_size": (0.060, 0.140),  # ear half-length (half-width 0.45x)
    "ear_angle": (-0.50, 0.70),  # ear tilt from upright, positive = backwards
    "eye_size": (0.028, 0.050),  # eye radius
    "nose_size": (0.025, 0.048),  # nose radius
    "leg_length": (0.080, 0.280),  # leg length below the body
    "leg_width": (0.026, 0.054),  # leg half-width
    "leg_spread": (0.30, 0.70),  # leg pair offset, fraction of body half-length
    "tail_length": (0.080, 0.460),  # tail length from its root
    "tail_angle": (-0.50, 1.30),  # tail direction above straight back
    "tail_width": (0.024, 0.064),  # tail half-width at the root
    "hue": (0.0, 1.0),  # body hue (cyclic: 0 and 1 are both red)
    "saturation": (0.30, 0.95),  # body saturation
    "luminance": (0.35, 0.95),  # body HSV value
    "stripe_contrast": (0.0, 0.75),  # fraction of luminance the stripes remove
    "stripe_frequency": (2.0, 7.0),  # stripe cycles per frame unit
    "stripe_angle": (-1.0, 1.0),  # stripe tilt in the body frame, 0 = upright
    "position_x": (-0.150, 0.150),  # body centre is at x = 0.08 + this
    "position_y": (-0.120, 0.120),  # body centre is at y = -0.02 + this (up)
    "background_hue": (0.0, 1.0),  # backdrop hue, at a fixed low saturation (0.22)
    "background_luminance": (0.35, 0.85),  # backdrop HSV value mid-height; +-15% top/bottom
}
FACTOR_NAMES: tuple[str, ...] = tuple(FACTOR_RANGES)

_SHAPE = ("area", "width", "height", "eccentricity")
_FUR = ("body", "head", "ear", "leg", "tail")  # painted with the body colour
_TEXTURE = ("entropy_mean", "entropy_std", "entropy_min", "entropy_max")
_HUE = ("luminance", "lab_a", "lab_b", "hue")  # what turning a colour's hue changes
_SATURATION = ("luminance", "chroma", "lab_a", "lab_b")  # ... and its saturation


def _pairs(parts: Sequence[str], properties: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((p, q) for p in parts for q in properties)


#: What each factor changes in the image, as (part, property) pairs of :mod:`linkstyle.measures`,
#: the first pair naming the part the factor belongs to. The selectivity stage scores a unit's
#: image-domain label against the factor that changed most along its sweep (concept recovery).
FACTOR_CONCEPTS: dict[str, tuple[tuple[str, str], ...]] = {
    "body_length": _pairs(["body"], _SHAPE),
    "body_height": _pairs(["body"], _SHAPE),
    # A rotation about the body's centre: the head end (head, ears, eye, nose) rises as the tail end sinks.
    "pose": _pairs(["body"], ("angle",)) + _pairs(["head", "tail"], ("center_y", "angle"))
    + _pairs(["ear", "eye", "nose"], ("center_y",)) + _pairs(["ear"], ("angle",)),
    "head_size": _pairs(["head"], _SHAPE),
    "head_angle": _pairs(["head"], ("center_x", "center_y", "angle")),
    "ear_size": _pairs(["ear"], _SHAPE),
    "ear_angle": _pairs(["ear"], ("angle", "center_x", "center_y", "eccentricity")),
    "eye_size": _pairs(["eye"], _SHAPE),
    "nose_size": _pairs(["nose"], _SHAPE),
    "leg_length": _pairs(["leg"], (*_SHAPE, "center_y")),
    "leg_width": _pairs(["leg"], _SHAPE),
    "leg_spread": _pairs(["leg"], ("center_x", "width", "eccentricity", "area")),
    "tail_length": _pairs(["tail"], (*_SHAPE, "center_x", "center_y")),
    "tail_angle": _pairs(["tail"], ("angle", "center_x", "center_y", "width", "height")),
    "tail_width": _pairs(["tail"], _SHAPE),
    "hue": _pairs(_FUR, _HUE),
    "saturation": _pairs(_FUR, _SATURATION),
    "luminance": _pairs(_FUR, ("luminance",)) + _pairs(["eye", "nose"], ("luminance",)),
    "stripe_contrast": _pairs(["body", "tail"], (*_TEXTURE, "luminance")),
    "stripe_frequency": _pairs(["body", "tail"], _TEXTURE),
    "stripe_angle": _pairs(["body", "tail"], _TEXTURE),
    "position_x": _pairs(["body", "head", "ear", "eye", "nose", "leg", "tail", "background"], ("center_x",)),
    "position_y": _pairs(["body", "head", "ear", "eye", "nose", "leg", "tail", "background"], ("center_y",)),
    "background_hue": _pairs(["background"], _HUE),
    "background_luminance": _pairs(["background"], ("luminance", *_TEXTURE)),
}

#: Factors that are angles on a colour wheel: 0 and 1 are the same red, so their spread over images is
#: taken modulo 1. Along a sweep (a straight line in w) each factor, a sigmoid of a linear function of w,
#: moves monotonically inside (0, 1), so a sweep's change of a hue is its plain difference.
CIRCULAR_FACTORS: dict[str, float] = {"hue": 1.0, "background_hue": 1.0}

CLASS_NAMES = CRITTER_NAMES  # kept in class_names.py, so that checking a config needs no torch

Z_DIM = 32
MIN_RESOLUTION, MAX_RESOLUTION = 32, 256

_F = {name: i for i, name in enumerate(FACTOR_NAMES)}
# Factors that set species apart by design: each gets evenly spaced prototype
# levels dealt out to the species, so every pair differs visibly.
_SIGNATURE = (
    "hue",
    "body_length",
    "body_height",
    "tail_length",
    "ear_size",
    "stripe_contrast",
    "leg_length",
)
# Nuisance factors: the same distribution for every species, so that the class
# must be read off the critter, not off where it stands or the backdrop.
_NUISANCE = ("pose", "position_x", "position_y", "background_hue", "background_luminance")
_SIGNATURE_LEVEL = 2.0  # signature logits span [-2, 2]
_PROTO_STD = 0.9  # other species-specific logits ~ N(0, 0.9^2)
_SPREAD = 0.65  # within-species spread of a logit
_NUISANCE_SPREAD = 1.2
_BACKGROUND_HUE_SPREAD = 1.8  # backdrops take most hues
_HIDDEN = 64  # width of the mapping's hidden layer
_AVG_SAMPLES = 4096  # z per class for the truncation centre
_EDGE_PX = 0.35  # logistic edge scale, in pixels: about one pixel of blur
_LAYERS = ("tail", "leg", "body", "head", "ear", "eye", "nose")  # painter's order
_LABEL = {name: PART_NAMES.index(name) for name in _LAYERS}
_BLOCK_PIXELS = 64 * 64 * 64  # pixels per block of pixel work: 1 MiB float planes
_ROW_BLOCK = 2048  # rows per block in the mapping's multiply-sums
_TINY = 1e-12  # keeps sqrt and rsqrt (and their gradients) finite at 0
# Mask codes rise in painter's order and equal the part label mod 8.
_MASK_CODE = {"tail": 7, "leg": 14, "body": 17, "head": 18, "ear": 19, "eye": 20, "nose": 21}


def sample_z(seeds: Sequence[int], z_dim: int = Z_DIM) -> torch.Tensor:
    """One z per seed, each from its own generator, so a seed's z does not
    depend on which batch it is drawn in."""
    rows = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must be non-negative integers, got {s!r}")
        rows.append(np.random.default_rng(int(s)).standard_normal(z_dim))
    if not rows:
        return torch.empty(0, z_dim)
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def _rowwise(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x @ m.T as a broadcast multiply-sum: unlike a BLAS matmul, each row's
    result does not depend on the batch around it, so seeds reproduce exactly."""
    if x.shape[0] <= _ROW_BLOCK:
        return (x[:, None, :] * m).sum(dim=-1)
    return torch.cat([_rowwise(x[i : i + _ROW_BLOCK], m) for i in range(0, x.shape[0], _ROW_BLOCK)])


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[B] h, s, v in [0, 1] -> [B, 3] rgb in [0, 1]."""
    n = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device)
    k = torch.remainder(n + 6.0 * h[:, None], 6.0)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[:, None] - (v * s)[:, None] * ramp


def _frame(
    ox: torch.Tensor,
    oy: torch.Tensor,
    angle: torch.Tensor,
    s1: torch.Tensor | float,
    s2: torch.Tensor | float,
) -> torch.Tensor:
    """Affine rows [B, 2, 3] taking (x, y, 1) to local (along, across) coordinates,
    divided by s1 and s2, for a frame at (ox, oy) rotated by ``angle``."""
    c, s = torch.cos(angle), torch.sin(angle)
    if isinstance(s1, torch.Tensor):
        s1 = s1[..., None]
    if isinstance(s2, torch.Tensor):
        s2 = s2[..., None]
    row1 = torch.stack([c, s, -(ox * c + oy * s)], dim=-1) / s1
    row2 = torch.stack([-s, c, ox * s - oy * c], dim=-1) / s2
    return torch.stack([row1, row2], dim=1)


def _quadric_coefficients(
    frame: torch.Tensor, kp: torch.Tensor, kq: torch.Tensor, const: float
) -> torch.Tensor:
    """kp P^2 + kq Q^2 + const for affine fields P, Q (``frame`` [B, 2, 3]) as
    coefficients [B, 6] of x^2, x, 1, y^2, y and x * y."""
    (ap, bp, cp), (aq, bq, cq) = frame[:, 0].unbind(1), frame[:, 1].unbind(1)
    return torch.stack(
        [
            kp * ap * ap + kq * aq * aq,
            2.0 * (kp * ap * cp + kq * aq * cq),
            kp * cp * cp + kq * cq * cq + const,
            kp * bp * bp + kq * bq * bq,
            2.0 * (kp * bp * cp + kq * bq * cq),
            2.0 * (kp * ap * bp + kq * aq * bq),
        ],
        dim=1,
    )


def _ellipse_quadrics(ellipses: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], edge: float) -> list[torch.Tensor]:
    """Per ellipse (frame, semi-axes) two [B, 6] quadrics: |p / r|^2 (inside) and (edge |p / r^2|)^2 (the
    soft edge's width in the ellipse's own units); stacked by the caller."""
    quadrics = []
    for frame, semi_a, semi_b in ellipses:
        one = torch.ones_like(semi_a)
        quadrics.append(_quadric_coefficients(frame, one, one, 0.0))
        quadrics.append(_quadric_coefficients(frame, (edge / semi_a) ** 2, (edge / semi_b) ** 2, 0.0))
    return quadrics


class Critters(nn.Module):
    """Procedural side views of four-legged critters, one species per class.

    ``w`` [B, w_dim] fully determines an image; ``mapping`` turns (z, class) into
    ``w`` through a fixed smooth nonlinear map, so ``w`` clouds are curved and
    class-dependent like a real generator's.
    """

    z_dim: int = Z_DIM
    num_ws: int = 1
    part_names: tuple[str, ...] = PART_NAMES
    factor_names: tuple[str, ...] = FACTOR_NAMES

    proto: torch.Tensor
    spread: torch.Tensor
    embed: torch.Tensor
    lift: torch.Tensor
    mix: torch.Tensor
    rotation: torch.Tensor
    offset: torch.Tensor
    w_avg: torch.Tensor
    factor_lo: torch.Tensor
    factor_span: torch.Tensor
    xs: torch.Tensor
    ys: torch.Tensor
    xy: torch.Tensor

    def __init__(self, num_classes: int = 5, resolution: int = 64, seed: int = 0) -> None:
        super().__init__()
        if isinstance(resolution, bool) or not isinstance(resolution, int):
            raise ValueError(f"resolution must be an int in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]")
        if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            raise ValueError(
                f"resolution must be in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution}"
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise ValueError(f"num_classes must be an int in [2, {len(CLASS_NAMES)}]")
        if not 2 <= num_classes <= len(CLASS_NAMES):
            raise ValueError(f"num_classes must be in [2, {len(CLASS_NAMES)}], got {num_classes}")
        self.num_classes = num_classes
        self.resolution = resolution
        self.seed = int(seed)
        self.w_dim = len(FACTOR_NAMES)
        self.class_names = CLASS_NAMES[:num_classes]

        g = torch.Generator().manual_seed(self.seed)
        nf, nc = self.w_dim, num_classes

        proto = _PROTO_STD * torch.randn(nc, nf, generator=g)
        levels = torch.linspace(-_SIGNATURE_LEVEL, _SIGNATURE_LEVEL, nc)
        for name in _SIGNATURE:
            proto[:, _F[name]] = levels[torch.randperm(nc, generator=g)]
        spread = torch.full((nf,), _SPREAD)
        for name in _NUISANCE:
            proto[:, _F[name]] = 0.0
            spread[_F[name]] = _NUISANCE_SPREAD
        spread[_F["background_hue"]] = _BACKGROUND_HUE_SPREAD

        lift = torch.randn(_HIDDEN, Z_DIM, generator=g)
        embed = 0.5 * torch.randn(nc, _HIDDEN, generator=g)
        mix = torch.randn(nf, _HIDDEN, generator=g)
        rotation, upper = torch.linalg.qr(torch.randn(nf, nf, generator=g))
        rotation = rotation * torch.sign(torch.diagonal(upper))[None, :]
        offset = 0.5 * torch.randn(nf, generator=g)
        z_avg = torch.randn(nc, _AVG_SAMPLES, Z_DIM, generator=g)

        self.register_buffer("proto", proto)
        self.register_buffer("spread", spread)
        self.register_buffer("embed", embed)
        self.register_buffer("lift", lift)
        self.register_buffer("rotation", rotation)
        self.register_buffer("offset", offset)
        # Scale the mixing rows so each factor's logit has unit spread before
        # ``spread`` is applied, measured on the same fixed z set as w_avg.
        classes = torch.arange(nc).repeat_interleave(_AVG_SAMPLES)
        hidden = self._hidden(z_avg.reshape(-1, Z_DIM), classes, exact=False)
        mix = mix / (hidden @ mix.T).std(dim=0)[:, None]
        self.register_buffer("mix", mix)
        w_all = self._map(z_avg.reshape(-1, Z_DIM), classes, exact=False)
        self.register_buffer("w_avg", w_all.reshape(nc, _AVG_SAMPLES, nf).mean(dim=1))

        lo = torch.tensor([FACTOR_RANGES[n][0] for n in FACTOR_NAMES])
        hi = torch.tensor([FACTOR_RANGES[n][1] for n in FACTOR_NAMES])
        self.register_buffer("factor_lo", lo)
        self.register_buffer("factor_span", hi - lo)

        # Pixel centres; y points up, so row 0 (the top) has the largest y. The
        # drawing is separable: affine and quadratic fields are sums of an x
        # part, a y part and (for rotated quadrics) a multiple of x * y.
        ticks = (torch.arange(resolution, dtype=torch.float32) * 2.0 + 1.0) / resolution - 1.0
        self.register_buffer("xs", ticks.clone(), persistent=False)
        self.register_buffer("ys", -ticks, persistent=False)
        self.register_buffer("xy", -ticks[:, None] * ticks[None, :], persistent=False)
        self.edge = _EDGE_PX * 2.0 / resolution

    # ------------------------------------------------------------------ latents

    def sample_z(self, seeds: Sequence[int]) -> torch.Tensor:
        """Batch-independent z [N, z_dim], one per seed, on the CPU (where seeds
        and files live); ``mapping`` moves it to the module's device."""
        return sample_z(seeds, self.z_dim)

    def _hidden(self, z: torch.Tensor, classes: torch.Tensor, exact: bool = True) -> torch.Tensor:
        lin = _rowwise(z, self.lift) if exact else z @ self.lift.T
        return torch.tanh(lin / math.sqrt(Z_DIM) + self.embed[classes])

    def _map(self, z: torch.Tensor, classes: torch.Tensor, exact: bool = True) -> torch.Tensor:
        """The untruncated mapping; ``exact=False`` uses BLAS, for statistics only."""
        mm = _rowwise if exact else lambda x, m: x @ m.T
        logits = self.proto[classes] + self.spread * mm(self._hidden(z, classes, exact), self.mix)
        return mm(logits, self.rotation) + self.offset

    def mapping(
        self, z: torch.Tensor, classes: torch.Tensor, truncation_psi: float = 1.0
    ) -> torch.Tensor:
        """``z`` [B, z_dim], ``classes`` long [B] -> ``w`` [B, w_dim]; truncation
        pulls towards the class centre ``w_avg[c]``."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor of shape [B, {self.z_dim}], got {shape}")
        device = self.proto.device
        classes = torch.as_tensor(classes, device=device)
        if classes.ndim != 1 or classes.shape[0] != z.shape[0]:
            raise ValueError(
                f"classes must have shape [{z.shape[0]}] to match z, got {tuple(classes.shape)}"
            )
        if (
            classes.dtype.is_floating_point
            or classes.dtype.is_complex
            or classes.dtype == torch.bool
        ):
            raise ValueError(f"classes must be integer class indices, got dtype {classes.dtype}")
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise ValueError(
                f"class indices must be in [0, {self.num_classes - 1}], "
                f"got min {int(classes.min())}, max {int(classes.max())}"
            )
        classes = classes.long()
        w = self._map(z.to(device=device, dtype=self.proto.dtype), classes)
        if truncation_psi != 1.0:
            centre = self.w_avg[classes]
            w = centre + truncation_psi * (w - centre)
        return w

    def logits_to_w(self, logits: torch.Tensor) -> torch.Tensor:
        """Factor logits [B, F] -> w; lets callers set a factor directly."""
        logits = logits.to(device=self.proto.device, dtype=self.proto.dtype)
        return _rowwise(logits, self.rotation) + self.offset

    def w_to_logits(self, w: torch.Tensor) -> torch.Tensor:
        """The inverse of ``logits_to_w``: R is orthogonal, so R^T undoes it."""
        return _rowwise(self._check_w(w) - self.offset, self.rotation.T)

    def factors(self, w: torch.Tensor) -> torch.Tensor:
        """Each factor in [0, 1] (index into ``FACTOR_NAMES``) for ``w`` [B, w_dim].

        The sigmoid runs in float64: torch's CPU kernel gives the elements of a batch's vectorised
        part and of its scalar tail results one float32 ulp apart, so a row's factors would depend
        on the batch around it; in float64 that difference vanishes when rounding back."""
        logits = self.w_to_logits(w)
        return torch.sigmoid(logits.double()).to(logits.dtype)

    def _check_w(self, w: torch.Tensor) -> torch.Tensor:
        if not isinstance(w, torch.Tensor) or w.ndim != 2 or w.shape[1] != self.w_dim:
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"w must be a tensor of shape [B, {self.w_dim}], got {shape}")
        return w.to(device=self.proto.device, dtype=self.proto.dtype)

    # ---------------------------------------------------------------- drawing

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` [B, w_dim] -> images float32 [B, 3, H, W] in [-1, 1]."""
        images, _, _ = self._draw(w, image=True, masks=False)
        assert images is not None
        return images

    def render(self, w: torch.Tensor) -> tuple[torch.Tensor, GroundTruth]:
        """Images and the exact part masks and factors, from one geometry pass."""
        images, masks, factors = self._draw(w, image=True, masks=True)
        assert images is not None and masks is not None
        return images, GroundTruth(masks, factors, PART_NAMES, FACTOR_NAMES)

    def ground_truth(self, w: torch.Tensor) -> GroundTruth:
        """Masks and factors without painting the image."""
        _, masks, factors = self._draw(w, image=False, masks=True)
        assert masks is not None
        return GroundTruth(masks, factors, PART_NAMES, FACTOR_NAMES)

    def _draw(
        self, w: torch.Tensor, image: bool, masks: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        values = self.factors(w)
        layout = self._layout(values)
        images: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        # Pixel work in blocks of images keeps each per-layer plane cache-sized.
        step = max(1, _BLOCK_PIXELS // self.resolution**2)
        for i in range(0, max(values.shape[0], 1), step):
            img, lab = self._pixels({k: t[i : i + step] for k, t in layout.items()}, image, masks)
            images += [img] if img is not None else []
            labels += [lab] if lab is not None else []
        return (
            torch.cat(images) if image else None,
            torch.cat(labels) if masks else None,
            values,
        )

    def _layout(self, values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image geometry and colours ([B, ...] each) from factor values."""
        phys = self.factor_lo + values * self.factor_span
        f = dict(zip(FACTOR_NAMES, phys.unbind(dim=1), strict=True))
        edge = self.edge
        a, b = f["body_length"], f["body_height"]
        zero = torch.zeros_like(a)
        th = f["pose"]
        cth, sth = torch.cos(th), torch.sin(th)
        cx = f["position_x"] + 0.08  # the head side is shorter than the tail side
        cy = f["position_y"] - 0.02

        def world(px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return cx + cth * px - sth * py, cy + sth * px + cth * py

        # The neck leaves the shoulder in direction head_angle; the head tilts
        # along with it, but less.
        hr, phi = f["head_size"], f["head_angle"]
        nx, ny = 0.62 * a, 0.25 * b
        neck_len = 0.065 + 0.9 * hr
        hx, hy = nx + neck_len * torch.cos(phi), ny + neck_len * torch.sin(phi)
        psi = 0.35 * phi - 0.1
        cpsi, spsi = torch.cos(psi), torch.sin(psi)
        head_a, head_b = 1.25 * hr, 0.95 * hr

        def on_head(qx: torch.Tensor, qy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return world(hx + cpsi * qx - spsi * qy, hy + spsi * qx + cpsi * qy)

        # Two ears stand on the crown, tilted by ear_angle.
        es, tilt = f["ear_size"], f["ear_angle"]
        ear_dir = th + psi + 0.5 * math.pi + tilt
        ears = []
        for beta in (1.25, 1.80):
            ex = 0.9 * head_a * math.cos(beta) - 0.8 * es * torch.sin(tilt)
            ey = 0.9 * head_b * math.sin(beta) + 0.8 * es * torch.cos(tilt)
            ears.append(_frame(*on_head(ex, ey), ear_dir, es, 0.45 * es))

        # Legs hang from inside the body, perpendicular to its axis; the tail
        # leaves the rump tail_angle above straight back.
        leg_top = -0.3 * b
        tw, tl = f["tail_width"], f["tail_length"]
        eye = on_head(0.38 * head_a, 0.30 * head_b)
        nose = on_head(0.97 * head_a, 0.12 * head_b)
        # Ellipses are unit discs in their own frame: affine rows P, Q [B, 2, 3].
        ellipses = [
            (_frame(cx, cy, th, a, b), a, b),  # body
            (_frame(*on_head(zero, zero), th + psi, head_a, head_b), head_a, head_b),
            (ears[0], es, 0.45 * es),
            (ears[1], es, 0.45 * es),
        ]
        # Built here, before the capsules: autograd sums the gradients a tensor gets from several uses in
        # the order the uses were made, so moving this changes gradients in their last bits (and with them
        # every counterfactual search through the rendering), though not one rendered pixel.
        quadrics = _ellipse_quadrics(ellipses, edge)
        # Capsules run along their frame's first axis, in edge units.
        capsules = torch.cat(
            [
                _frame(*world(nx, ny), th + phi, edge, edge),  # neck
                # legs: along = down, across = body x
                _frame(*world(zero, leg_top), th - 0.5 * math.pi, edge, edge),
                _frame(*world(-0.85 * a, 0.15 * b), th + math.pi - f["tail_angle"], edge, edge),
            ],
            dim=1,
        )
        stripe = _frame(
            cx, cy, th + f["stripe_angle"], 1.0 / (2.0 * math.pi * f["stripe_frequency"]), 1.0
        )
        return {
            "quadrics": torch.stack(quadrics, dim=1),  # [B, 8, 6]
            "capsules": capsules,  # [B, 6, 3]
            "stripe": stripe[:, 0],  # [B, 3] phase row
            "neck": torch.stack([neck_len, 0.55 * hr], dim=1) / edge,
            "leg": torch.stack([f["leg_spread"] * a, 1.4 * f["leg_width"], 0.7 * b + f["leg_length"], f["leg_width"]],
                               dim=1) / edge,
            "tail": torch.stack([tl / edge, tw / edge, 0.5 * tw / tl], dim=1),
            "eye": torch.stack([eye[0], eye[1], f["eye_size"]], dim=1) / edge,
            "nose": torch.stack([nose[0], nose[1], f["nose_size"]], dim=1) / edge,
            "colours": self._colours(f),
        }

    def _colours(self, f: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, 3, 9] colours of the paint rows (see ``_pixels``), mapped to [-1, 1]."""
        body = _hsv_to_rgb(f["hue"], f["saturation"], f["luminance"])
        k = f["stripe_contrast"][:, None]
        head = torch.clamp(body * 1.08, max=1.0)
        bright = (f["luminance"] > 0.5)[:, None]

        def rgb(*c: float) -> torch.Tensor:
            return torch.tensor(c, dtype=body.dtype, device=body.device)

        eye = torch.where(bright, rgb(0.06, 0.05, 0.05), rgb(0.97, 0.92, 0.55))
        nose = torch.where(bright, rgb(0.22, 0.10, 0.10), rgb(0.90, 0.55, 0.60))
        sky = _hsv_to_rgb(
            f["background_hue"], torch.full_like(f["hue"], 0.22), f["background_luminance"]
        )
        # Stripes scale the fur by 1 - k (1 + sin) / 2: the constant half goes
        # into the fur row, the sine half into a row of its own.
        return torch.stack(
            [
                2.0 * body * (1.0 - 0.5 * k) - 1.0,  # fur (body, neck, tail)
                -k * body,  # fur * sin(stripe phase)
                1.4 * body - 1.0,  # legs, darker
                2.0 * head - 1.0,
                1.5 * body - 1.0,  # ears, darker
                2.0 * eye - 1.0,
                2.0 * nose - 1.0,
                2.0 * sky - 1.0,  # background
                0.3 * sky,  # background * y: lighter towards the top
            ],
            dim=2,
        )

    # Pixel stage: each op below is one pass over a [b, H, W] plane; per-image
    # coefficients are [b, ...] and broadcast.

    def _plane(self, row: torch.Tensor) -> torch.Tensor:
        """Affine field a x + b y + c for rows [b, 3]."""
        fx = row[:, 0:1] * self.xs + row[:, 2:3]
        fy = row[:, 1:2] * self.ys
        return fx[:, None, :] + fy[:, :, None]

    def _quadric(self, c: torch.Tensor) -> torch.Tensor:
        """Quadratic field from coefficients [b, 6] (see ``_quadric_coefficients``)."""
        x2, x1, x0, y2, y1, xy = (c[:, i, None] for i in range(6))
        fx = (x2 * self.xs + x1) * self.xs + x0
        fy = (y2 * self.ys + y1) * self.ys
        return (fx[:, None, :] + fy[:, :, None]).addcmul_(xy[:, :, None], self.xy)

    def _ellipse(self, radial: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        """Signed distance / edge, approximated as k0 (1 - k0) / k1 with
        k0 = |p / r|, k1 = |p / r^2|: exact on circles and on the axes, so edges
        stay about a pixel wide, and fall off fast, even on long thin ellipses."""
        k0 = torch.sqrt(self._quadric(radial).clamp(min=_TINY))
        return (k0 - k0 * k0) * torch.rsqrt(self._quadric(slope).clamp(min=_TINY))

    def _circle(self, c: torch.Tensor) -> torch.Tensor:
        """Signed distance / edge for discs c = (x, y, r), in edge units."""
        dx = self.xs / self.edge - c[:, 0:1]
        dy = self.ys / self.edge - c[:, 1:2]
        dist2 = (dx * dx + _TINY)[:, None, :] + (dy * dy)[:, :, None]
        return c[:, 2, None, None] - torch.sqrt(dist2)

    @staticmethod
    def _capsule(
        along: torch.Tensor,
        across: torch.Tensor,
        length: torch.Tensor,
        radius: torch.Tensor,
        taper: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Signed distance / edge to the segment [0, length] on the along axis,
        radius shrinking by ``taper`` per unit along; all in edge units, [b]."""
        length, radius = length[:, None, None], radius[:, None, None]
        t = torch.minimum(along.clamp(min=0.0), length)
        gap = along - t
        dist2 = torch.addcmul(across * across, gap, gap)
        if dist2.requires_grad:  # sqrt has an infinite slope at 0
            dist2 = dist2.clamp(min=_TINY)
        dist = torch.sqrt(dist2)
        if taper is not None:
            radius = torch.addcmul(radius, t, taper[:, None, None], value=-1.0)
        return radius - dist

    def _pixels(
        self, lay: dict[str, torch.Tensor], image: bool, masks: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        q = lay["quadrics"].unbind(dim=1)
        cap = lay["capsules"].unbind(dim=1)
        neck, leg, tail = lay["neck"], lay["leg"], lay["tail"]
        body = torch.maximum(
            self._ellipse(q[0], q[1]),
            self._capsule(self._plane(cap[0]), self._plane(cap[1]), neck[:, 0], neck[:, 1]),
        )
        # Four legs as one capsule: fold body x onto |x|, then onto the pair.
        pair, half_gap = leg[:, 0, None, None], leg[:, 1, None, None]
        across = ((self._plane(cap[3]).abs() - pair).abs() - half_gap).abs()
        logits = {
            "tail": self._capsule(
                self._plane(cap[4]), self._plane(cap[5]), tail[:, 0], tail[:, 1], tail[:, 2]
            ),
            "leg": self._capsule(self._plane(cap[2]), across, leg[:, 2], leg[:, 3]),
            "body": body,
            "head": self._ellipse(q[2], q[3]),
            "ear": torch.maximum(self._ellipse(q[4], q[5]), self._ellipse(q[6], q[7])),
            "eye": self._circle(lay["eye"]),
            "nose": self._circle(lay["nose"]),
        }

        labels = None
        if masks:
            # Codes rise in painter's order and are = label (mod 8), so the
            # top-most covering part is the max code, masked to 3 bits.
            labels = torch.zeros(body.shape, dtype=torch.uint8, device=body.device)
            for name in _LAYERS:
                labels = torch.maximum(
                    labels, (logits[name] > 0).to(torch.uint8).mul_(_MASK_CODE[name])
                )
            labels = labels.bitwise_and_(7)
        if not image:
            return None, labels

        # Front-to-back transmittance gives each layer's visible weight; the
        # image is the colour-weighted sum of those weights.
        weights: dict[str, torch.Tensor] = {}
        trans: torch.Tensor | None = None
        for name in reversed(_LAYERS):
            alpha = torch.sigmoid(logits[name])
            weights[name] = alpha if trans is None else alpha * trans
            trans = 1.0 - alpha if trans is None else trans - weights[name]
        assert trans is not None
        fur = weights["body"] + weights["tail"]
        # sin(A(x) + B(y)) = sin A cos B + cos A sin B: two passes instead of a plane and a sin.
        row = lay["stripe"]
        ax = row[:, 0:1] * self.xs + row[:, 2:3]
        by = row[:, 1:2] * self.ys
        wave = (torch.sin(ax)[:, None, :] * torch.cos(by)[:, :, None]).addcmul_(
            torch.cos(ax)[:, None, :], torch.sin(by)[:, :, None]
        )
        paint = (
            fur,
            fur * wave,
            weights["leg"],
            weights["head"],
            weights["ear"],
            weights["eye"],
            weights["nose"],
            trans,
            trans * self.ys[:, None],
        )
        colours = lay["colours"][:, :, :, None, None]  # [b, 3, 9, 1, 1]
        img = colours[:, :, 0] * paint[0][:, None]
        for k in range(1, len(paint)):
            img.addcmul_(colours[:, :, k], paint[k][:, None])
        return img.clamp_(-1.0, 1.0), labels
