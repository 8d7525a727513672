"""Activation maximisation: the baseline that linking is compared against.

It optimises the *image* (no generator involved) so that one penultimate unit of the
classifier rises, as feature-visualisation libraries such as Lucent do: the image is a
Fourier spectrum scaled by 1/frequency (so that Adam's steps favour smooth images), its
colours are decorrelated with ImageNet's colour covariance, a sigmoid keeps it in range,
and every step sees a randomly shifted, scaled and rotated copy (transformation
robustness). Linking renders a unit's sweep in ``tune.n_steps`` generator passes; this
takes ``steps`` forward *and* backward passes of the classifier (512 by default):
``bench/bench_actmax.py`` measures the two side by side.

A unit that is zero on the nearly grey starting image gets no gradient through the ReLUs in
front of it and would never move; as Lucid does, the first ``redirect_steps`` steps therefore let
a ReLU pass the gradients that would raise its negative inputs, for every image whose ordinary
ReLU gradient is zero (``redirected_relus``).

Every image of a batch optimises its own unit and draws its initial spectrum and its
transformations from its own seed, so a unit's result does not depend on which units share
its batch (up to float rounding).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .classifiers.wrapper import Classifier
from .runtime import batches, progress
from .seeds import derive

#: Square root of ImageNet's RGB covariance (as an SVD factor, from Olah et al. 2017, "Feature
#: Visualization"): optimising in this basis decorrelates the colour channels.
IMAGENET_COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
#: Lucent's default transformation ranges at 224 px, as fractions of the image side (8 px jitter,
#: 12 px padding) and as scale factors and degrees.
JITTER_FRACTION = 8 / 224
SCALES = (0.9, 1.1)
MAX_DEGREES = 10.0


@dataclass(frozen=True)
class ActmaxSettings:
    steps: int = 512
    lr: float = 0.05
    decorrelate: bool = True
    transforms: bool = True
    batch_size: int = 16
    history_every: int = 16
    redirect_steps: int = 16


@dataclass(frozen=True)
class ActmaxResult:
    units: np.ndarray  # int64 [U]
    images: np.ndarray  # uint8 [U, H, W, 3]
    activation: np.ndarray  # float32 [U]: the unit on its final, untransformed image
    history: np.ndarray  # float32 [U, steps // history_every]: the unit on the transformed image
    seconds: float  # wall time of the optimisation, all units

    @property
    def seconds_per_unit(self) -> float:
        return self.seconds / max(1, len(self.units))


class FourierImage(nn.Module):
    """A batch of images parameterised by their spectra, scaled by 1/frequency, in decorrelated colour."""

    def __init__(self, spectra: torch.Tensor, size: int, decorrelate: bool) -> None:
        super().__init__()
        self.size = size
        self.decorrelate = decorrelate
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freq = torch.sqrt(fx**2 + fy**2)
        self.register_buffer("scale", 1.0 / torch.clamp(freq, min=1.0 / size))
        color = torch.tensor(IMAGENET_COLOR_SQRT)
        self.register_buffer("color", color / color.norm(dim=0).max())
        self.spectra = nn.Parameter(spectra)  # [B, 3, size, size // 2 + 1, 2]

    @staticmethod
    def init_spectra(seeds: Sequence[int], size: int, std: float = 0.01) -> torch.Tensor:
        shape = (3, size, size // 2 + 1, 2)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) * std for s in seeds])

    def forward(self) -> torch.Tensor:
        """Images in [0, 1], NCHW."""
        spectrum = torch.view_as_complex(self.spectra) * self.scale
        x = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4.0
        if self.decorrelate:
            x = torch.einsum("bchw,dc->bdhw", x, self.color)
        return torch.sigmoid(x)


class PixelImage(nn.Module):
    """Plain pixels behind a sigmoid: the parameterisation without the Fourier and colour tricks."""

    def __init__(self, pixels: torch.Tensor) -> None:
        super().__init__()
        self.pixels = nn.Parameter(pixels)

    @staticmethod
    def init_pixels(seeds: Sequence[int], size: int, std: float = 0.01) -> torch.Tensor:
        return torch.stack([torch.randn((3, size, size), generator=torch.Generator().manual_seed(s)) * std for s in seeds])

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.pixels)


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward pass, for an image that gets no gradient through it, lets through the
    components that would raise a negative input (Lucid's redirected ReLU gradient)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        relu_grad = grad * (x > 0)
        redirected = grad * ((x <= 0) & (grad < 0))  # descending this gradient raises x
        stuck = relu_grad.flatten(1).abs().sum(1) == 0
        return torch.where(stuck.view(-1, *[1] * (grad.dim() - 1)), redirected, relu_grad)


@contextmanager
def redirected_relus(net: nn.Module) -> Iterator[None]:
    """Every ``nn.ReLU`` module of ``net`` runs as :class:`_RedirectedReLU` inside the block (not in place).

    Functional ReLUs and TorchScript modules (whose ReLUs are compiled in) keep their ordinary gradient."""
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    for m in relus:
        m.forward = _RedirectedReLU.apply  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in relus:
            del m.forward


def transform_params(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """Per image and step: shift x, shift y (fractions of the side), scale, angle (radians); one stream per seed."""
    rows = []
    for s in seeds:
        g = torch.Generator().manual_seed(s + 1)
        shift = (torch.rand(steps, 2, generator=g) * 2 - 1) * JITTER_FRACTION * 2  # grid coordinates span 2
        scale = SCALES[0] + torch.rand(steps, 1, generator=g) * (SCALES[1] - SCALES[0])
        angle = (torch.rand(steps, 1, generator=g) * 2 - 1) * math.radians(MAX_DEGREES)
        rows.append(torch.cat([shift, scale, angle], dim=1))
    return torch.stack(rows, dim=1)  # [steps, B, 4]


def transform(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Shift, scale and rotate each image by its own parameters, in one resampling; uncovered borders are grey."""
    shift, scale, angle = params[:, :2], params[:, 2], params[:, 3]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def unit_seeds(seed: int, classifier: str, units: Sequence[int]) -> list[int]:
    return [derive(seed, "actmax", classifier, int(u)) % (2**31) for u in units]


def _unit_values(clf: Classifier, images01: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    feats = clf.features(images01 * 2 - 1)
    return feats[torch.arange(len(units), device=feats.device), units]


def maximise_batch(clf: Classifier, units: Sequence[int], size: int, settings: ActmaxSettings,
                   seeds: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimise one image per unit; returns images in [0, 1], the final activations and the history."""
    unit_t = torch.as_tensor(list(units), dtype=torch.long, device=device)
    if settings.decorrelate:
        param: nn.Module = FourierImage(FourierImage.init_spectra(seeds, size), size, True).to(device)
    else:
        param = PixelImage(PixelImage.init_pixels(seeds, size)).to(device)
    params = transform_params(seeds, settings.steps).to(device) if settings.transforms else None
    opt = torch.optim.Adam(param.parameters(), lr=settings.lr)
    n_hist = settings.steps // settings.history_every
    history = torch.zeros(len(units), n_hist)
    for step in range(settings.steps):
        opt.zero_grad(set_to_none=True)
        img = param()
        if params is not None:
            img = transform(img, params[step])
        with redirected_relus(clf) if step < settings.redirect_steps else nullcontext():
            values = _unit_values(clf, img, unit_t)
            (-values.sum()).backward()
        opt.step()
        if (step + 1) % settings.history_every == 0 and step // settings.history_every < n_hist:
            history[:, step // settings.history_every] = values.detach().float().cpu()
    with torch.no_grad():
        final = param()
        activation = _unit_values(clf, final, unit_t).float().cpu()
    return final.detach(), activation, history


def maximise(clf: Classifier, units: Sequence[int], size: int, *, settings: ActmaxSettings = ActmaxSettings(),
             seed: int = 0, device: torch.device | str = "cpu") -> ActmaxResult:
    """Activation-maximising images of ``units`` (penultimate units of ``clf``), ``size`` px square, in batches."""
    device = torch.device(device)
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < clf.num_units]
    if bad:
        raise ValueError(f"units {bad[:5]} are outside classifier '{clf.name}' (units 0..{clf.num_units - 1})")
    if settings.steps < 1 or settings.batch_size < 1:
        raise ValueError("actmax needs steps >= 1 and batch_size >= 1")
    seeds = unit_seeds(seed, clf.name, units)
    images = np.empty((len(units), size, size, 3), dtype=np.uint8)
    activation = np.empty(len(units), dtype=np.float32)
    history = np.empty((len(units), settings.steps // settings.history_every), dtype=np.float32)
    trainable = [p.requires_grad for p in clf.parameters()]
    clf.requires_grad_(False)  # gradients flow to the image only
    start = time.perf_counter()
    try:
        with progress(len(units), f"actmax {clf.name}", unit="unit") as bar:
            for sl in batches(len(units), settings.batch_size):
                img, act, hist = maximise_batch(clf, units[sl], size, settings, seeds[sl], device)
                images[sl] = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                activation[sl], history[sl] = act.numpy(), hist.numpy()
                bar.update(sl.stop - sl.start)
    finally:
        for p, flag in zip(clf.parameters(), trainable):
            p.requires_grad_(flag)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return ActmaxResult(np.asarray(units, dtype=np.int64), images, activation, history, time.perf_counter() - start)
