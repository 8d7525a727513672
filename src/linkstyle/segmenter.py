"""A few-shot part segmenter: a small CNN trained from 5-20 hand-labelled images.

Real generators come without part masks, so measuring how a unit changes the object's
parts needs a segmenter. Labels are expensive, so it learns from very few images: the
network is small and sees rich per-pixel inputs (the image itself, cheap colour and
position cues, and optionally the early maps of the analysed classifier or the
generator's own synthesis maps), all at image resolution.

Features are stacks float32 [N, C, H, W]; masks are uint8 [N, H, W] part indices.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .classifiers.wrapper import Classifier
from .errors import LinkstyleError
from .io import write_bytes
from .runtime import batches

__all__ = [
    "DEFAULTS",
    "PartSegmenter",
    "SegmenterError",
    "classifier_maps",
    "drop_fragments",
    "generator_features",
    "image_features",
    "load_segmenter",
    "mean_iou",
    "predict_masks",
    "save_segmenter",
    "train_segmenter",
]

#: Channels of ``image_features`` before any classifier maps: RGB, RGB minus the image's median
#: colour (d), RGB minus its 5x5 local mean (h, high-pass), pixel coordinates in [-1, 1].
IMAGE_CHANNELS = ("r", "g", "b", "dr", "dg", "db", "hr", "hg", "hb", "x", "y")

#: Training defaults, chosen on the built-in world (bench/bench_segmenter.py). Width 16, not 32:
#: mean IoU 0.855 instead of 0.878 from 20 images, at about a third of the cost per predicted
#: image, which keeps the measure stage near the cost of rendering + classifying (issue 5).
DEFAULTS: dict[str, Any] = {
    "steps": 600,
    "batch_size": 4,
    "lr": 6e-3,
    "width": 16,
    "dilations": (1, 2, 4, 8, 1),
}

_FORMAT = "linkstyle-segmenter-1"
#: Images per forward pass on CPU: at 64 px the activations of 16 images stay in cache, and run
#: about 1.2x faster than 64 at a time (the labels do not depend on the batch).
CPU_BATCH = 16


class SegmenterError(LinkstyleError):
    """A segmenter file or feature source that cannot be used."""


# ----------------------------------------------------------------------------- features


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Local mean over a size x size window, edges replicated (no dark frame)."""
    pad = size // 2
    return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size, stride=1)


def _pixel_cues(images: torch.Tensor) -> torch.Tensor:
    """RGB, RGB minus the image's median colour (the backdrop, for object-centred images),
    RGB minus its 5x5 local mean (edges and small blobs such as eyes), and pixel coordinates.

    The median-subtracted colour makes the cue independent of each image's backdrop, which
    a handful of labelled images cannot cover."""
    n, _, h, w = images.shape
    x = images.clamp(-1, 1).float()
    median = x.flatten(2).median(dim=2).values[:, :, None, None]
    ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1).expand(n, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w).expand(n, 1, h, w)
    return torch.cat([x, x - median, x - _box_mean(x, 5), xs, ys], dim=1)


def classifier_maps(classifier: Classifier, images: torch.Tensor, max_stride: int = 8) -> list[torch.Tensor]:
    """The early feature maps of any torchvision-like network, one per stride up to ``max_stride``.

    Forward hooks on every module record 4-D outputs; for each stride (input size / map size)
    the last map produced at that stride is kept: the deepest representation at that
    resolution (ResNet: stem ReLU, layer1, layer2; RegNet: stem, block1, block2; MobileNet:
    the last block of each stage). Deeper maps are too coarse to place 2-pixel parts. Keeping
    the last module's output also means later in-place ops (ReLU) cannot have changed it.
    The network runs in eval mode (BatchNorm statistics untouched), then gets its mode back.
    """
    x = classifier.preprocess(images)
    size = x.shape[-1]
    found: dict[int, torch.Tensor] = {}

    def record(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] > 0:
            stride = size / output.shape[-1]
            if 1.0 <= stride <= max_stride + 1e-6:
                found[round(stride)] = output

    handles = [m.register_forward_hook(record) for m in classifier.net.modules() if m is not classifier.net]
    was_training = classifier.net.training
    try:
        classifier.net.eval()
        classifier.net(x)
    finally:
        classifier.net.train(was_training)
        for h in handles:
            h.remove()
    return [found[s] for s in sorted(found)]


def image_features(
    images: torch.Tensor,
    classifier: Classifier | None = None,
    *,
    max_stride: int = 8,
    batch_size: int = 64,
) -> torch.Tensor:
    """Per-pixel inputs float32 [N, C, H, W] for images in [-1, 1]: the ``IMAGE_CHANNELS`` cues,
    then (with a classifier) its early maps (``classifier_maps``) upsampled bilinearly.

    The result lies on the images' device; the classifier runs on its own. 4 bytes per channel
    and pixel: 11 channels at 64 px are 180 kB per image; with a ResNet-18's maps (267
    channels) 4.4 MB, so compute the features of many images in chunks."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    out = []
    with torch.inference_mode():
        for sl in batches(images.shape[0], batch_size):
            x = images[sl].float()
            parts = [_pixel_cues(x)]
            if classifier is not None:
                for m in classifier_maps(classifier, x.to(classifier.mean.device), max_stride):
                    m = F.interpolate(m.float(), size=(h, w), mode="bilinear", align_corners=False)
                    parts.append(m.to(x.device))
            out.append(torch.cat(parts, dim=1))
    return torch.cat(out) if out else torch.empty(0, len(IMAGE_CHANNELS), h, w)


def generator_features(
    generator: Any, w: torch.Tensor, layers: Sequence[str] | None = None, *, size: int | None = None, batch_size: int = 16
) -> torch.Tensor:
    """The generator's synthesis maps for ``w`` (``generator.features(w, layers)``), each resized
    bilinearly to ``size`` (default: the image resolution) and concatenated in layer order:
    float32 [N, C, size, size].

    StyleGAN has thousands of channels over all layers; at 256 px and up, choose ``layers`` or
    a smaller ``size`` (and predict at that size), or the stack takes gigabytes per image."""
    feats = getattr(generator, "features", None)
    if not callable(feats):
        raise SegmenterError(
            f"generator {type(generator).__name__} has no features(w, layers) method, so its synthesis maps "
            "cannot feed the segmenter; use image features (segmenter features: image) instead"
        )
    res = int(size if size is not None else generator.resolution)
    out = []
    with torch.inference_mode():
        for sl in batches(w.shape[0], batch_size):
            maps = feats(w[sl], layers)
            if not maps:
                raise ValueError(f"generator {type(generator).__name__} returned no feature maps for layers {layers}")
            out.append(torch.cat(
                [F.interpolate(m.float(), size=(res, res), mode="bilinear", align_corners=False) for m in maps.values()],
                dim=1,
            ))
    if not out:
        raise ValueError("w is empty")
    return torch.cat(out)


# ----------------------------------------------------------------------------- model


class PartSegmenter(nn.Module):
    """Dilated 3x3 convolutions at full resolution with residual links, then a 1x1 classifier.

    Full resolution keeps 2-pixel parts (eyes, noses) separable; dilations 1, 2, 4, 8, 1 give a
    receptive field of 33 pixels, enough to tell a head from a body by context.
    Inputs are standardised per channel with statistics of the training features, stored
    as buffers so a saved model needs nothing else.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, in_channels: int, num_parts: int, width: int = DEFAULTS["width"], dilations: Sequence[int] = DEFAULTS["dilations"]
    ) -> None:
        super().__init__()
        self.in_channels, self.num_parts, self.width = int(in_channels), int(num_parts), int(width)
        self.dilations = tuple(int(d) for d in dilations)
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, in_channels, 1, 1))
        self.stem = nn.Conv2d(in_channels, width, 1)
        self.blocks = nn.ModuleList(
            nn.Conv2d(width, width, 3, padding=d, dilation=d, padding_mode="replicate") for d in self.dilations
        )
        self.head = nn.Conv2d(width, num_parts, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU in place on each convolution's fresh output: the same values, one temporary less per
        # block (a quarter of the inference time at 64 px on CPU).
        h = self.stem((x - self.mean) / self.std).relu_()
        for conv in self.blocks:
            h = h + conv(h).relu_()
        return self.head(h)

    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "num_parts": self.num_parts, "width": self.width,
                "dilations": list(self.dilations)}


# ----------------------------------------------------------------------------- training


def _as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).to(dtype)


def _check(features: torch.Tensor, masks: torch.Tensor, num_parts: int) -> None:
    if features.ndim != 4:
        raise ValueError(f"features must be [N, C, H, W], got {tuple(features.shape)}")
    if masks.shape != (features.shape[0], *features.shape[2:]):
        raise ValueError(f"masks {tuple(masks.shape)} do not match features {tuple(features.shape)} ([N, H, W])")
    if features.shape[0] == 0:
        raise ValueError("no training images")
    if int(masks.max()) >= num_parts:
        raise ValueError(f"mask values up to {int(masks.max())}, but num_parts is {num_parts}")


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, flip: bool, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image horizontal flips and integer shifts (edge-replicated), the same for features and masks."""
    if flip:
        f = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(f[:, None, None, None], x.flip(-1), x)
        y = torch.where(f[:, None, None], y.flip(-1), y)
    if shift > 0:
        xs, ys = [], []
        h, w = x.shape[-2:]
        for i, (dy, dx) in enumerate(torch.randint(-shift, shift + 1, (x.shape[0], 2), generator=gen).tolist()):
            rows = (torch.arange(h) - dy).clamp(0, h - 1)
            cols = (torch.arange(w) - dx).clamp(0, w - 1)
            xs.append(x[i][:, rows][:, :, cols])
            ys.append(y[i][rows][:, cols])
        x, y = torch.stack(xs), torch.stack(ys)
    return x, y


def _soft_dice(logits: torch.Tensor, target: torch.Tensor, num_parts: int) -> torch.Tensor:
    """1 - mean soft Dice over the parts present in the batch: scale-free, so a 4-pixel eye
    counts as much as the backdrop."""
    p = logits.softmax(1)
    t = F.one_hot(target.long(), num_parts).permute(0, 3, 1, 2).to(p.dtype)
    inter = (p * t).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + t.sum((0, 2, 3))
    present = t.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1.0 - dice[present].mean()


def train_segmenter(
    features: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    num_parts: int,
    *,
    steps: int = DEFAULTS["steps"],
    seed: int = 0,
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    width: int = DEFAULTS["width"],
    dilations: Sequence[int] = DEFAULTS["dilations"],
    flip: bool = False,
    shift: int = 2,
    dice_weight: float = 1.0,
    class_power: float = 0.5,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[PartSegmenter, dict[str, Any]]:
    """Fit a ``PartSegmenter`` to features [N, C, H, W] and masks [N, H, W]; deterministic from ``seed`` on CPU.

    Loss: cross-entropy weighted by (pixel frequency)^-``class_power`` plus ``dice_weight`` x soft
    Dice, so that parts of a few pixels are learned, not drowned by the backdrop. AdamW with a
    warm-up + cosine schedule; each step draws ``batch_size`` images with a flip/shift augmentation.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    device = torch.device(device)
    x_all = _as_tensor(features, torch.float32)
    y_all = _as_tensor(masks, torch.long)
    _check(x_all, y_all, num_parts)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):  # layer initialisation draws from the global generator: seed it, then restore it
        torch.manual_seed(int(seed))
        model = PartSegmenter(x_all.shape[1], num_parts, width, dilations)
    with torch.no_grad():  # per-channel statistics without a transposed copy of the (possibly wide) stack
        var, mean = torch.var_mean(x_all, dim=(0, 2, 3))
        model.mean.copy_(mean.view(1, -1, 1, 1))
        model.std.copy_(var.sqrt().clamp(min=1e-4).view(1, -1, 1, 1))
    model.to(device).train()
    counts = torch.bincount(y_all.flatten(), minlength=num_parts).double()
    freq = counts / counts.sum()
    weight = torch.where(counts > 0, freq.clamp(min=1e-8) ** -class_power, torch.zeros_like(freq))
    weight = (weight / (weight * freq).sum()).float().to(device)  # the average pixel weighs 1
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine to zero: any step count works
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))
    )
    n = x_all.shape[0]
    start = time.perf_counter()
    losses = []
    order = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        if order.numel() < batch_size:  # epochs of shuffled images, so every image is seen equally
            order = torch.cat([order, *[torch.randperm(n, generator=gen) for _ in range(math.ceil(batch_size / n))]])
        idx, order = order[:batch_size], order[batch_size:]
        x, y = _augment(x_all[idx], y_all[idx], gen, flip, shift)
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y, weight=weight)
        if dice_weight:
            loss = loss + dice_weight * _soft_dice(logits, y, num_parts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    info = {
        "steps": steps, "seed": int(seed), "batch_size": batch_size, "lr": lr, "width": width,
        "dilations": list(dilations), "flip": flip, "shift": shift, "dice_weight": dice_weight,
        "class_power": class_power, "train_images": n, "in_channels": int(x_all.shape[1]),
        "num_parts": num_parts, "seconds": time.perf_counter() - start,
        "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
    }
    return model, info


def predict_masks(model: PartSegmenter, features: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Part index per pixel, uint8 [N, H, W]."""
    x_all = _as_tensor(features, torch.float32)
    device = model.mean.device
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_BATCH)
    out = []
    model.eval()
    # Channels-last runs the full-resolution convolutions ~1.5x faster on CPU, same labels.
    fast = model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for sl in batches(x_all.shape[0], batch_size):
            x = x_all[sl].to(device).contiguous(memory_format=torch.channels_last)
            out.append(fast(x).argmax(1).to(torch.uint8).cpu())
    if not out:
        return np.zeros((0, *x_all.shape[2:]), dtype=np.uint8)
    return torch.cat(out).numpy()


def drop_fragments(masks: np.ndarray, min_fraction: float) -> np.ndarray:
    """Label maps [N, H, W] with every connected piece of a part that is smaller than ``min_fraction``
    of that part's largest piece (in the same image) given to the nearest kept pixel's part.

    A segmenter's stray islands are few pixels each, yet on images far from its training data (the
    ends of a sweep) they multiply: on RegNet's sweeps the body had 1.1 pieces at the start and 1.9
    at the end, against 1.0 in the exact masks, and the spread of texture entropy over the body's
    pixels rose five times as much as on the exact masks, so that islands, not the image, won labels.
    Parts made of several pieces of like size (legs, eyes) keep them all. 0 keeps every pixel.
    """
    from scipy import ndimage
    from skimage.measure import label

    masks = np.asarray(masks)
    if min_fraction <= 0 or masks.size == 0:
        return masks
    n_img, h, w = masks.shape
    # All images in one labelling: stacked into one canvas with a separator row below each, so
    # that 4-connected pieces of equal label never join across images.
    canvas = np.full((n_img, h + 1, w), -1, np.int16)
    canvas[:, :h] = masks
    pieces = label(canvas.reshape(-1, w), background=-1, connectivity=1).ravel()
    sizes = np.bincount(pieces)
    owner = np.zeros(len(sizes), np.intp)
    owner[pieces] = np.arange(len(pieces))  # any one pixel of each piece
    part = canvas.ravel()[owner].astype(np.intp)
    image = owner // ((h + 1) * w)
    slots = max(int(masks.max()) + 1, 1)
    largest = np.zeros(n_img * slots, np.int64)
    np.maximum.at(largest, (image * slots + part)[1:], sizes[1:])
    kept = sizes >= min_fraction * largest[image * slots + part]
    keep = kept[pieces].reshape(n_img, h + 1, w)[:, :h]
    out = masks.copy()
    for i in np.flatnonzero(~keep.reshape(n_img, -1).all(1)):
        nearest = ndimage.distance_transform_edt(~keep[i], return_distances=False, return_indices=True)
        out[i] = masks[i][nearest[0], nearest[1]]
    return out


def mean_iou(pred: np.ndarray, truth: np.ndarray, num_parts: int) -> tuple[float, np.ndarray]:
    """Intersection over union per part, pooled over all pixels of all images, and their mean.

    A part absent from both ``pred`` and ``truth`` has IoU NaN and is left out of the mean.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} differ in shape")
    p = pred.reshape(-1).astype(np.int64)
    t = truth.reshape(-1).astype(np.int64)
    if p.size and (p.max() >= num_parts or t.max() >= num_parts or p.min() < 0 or t.min() < 0):
        raise ValueError(f"labels must be in 0..{num_parts - 1}")
    conf = np.bincount(t * num_parts + p, minlength=num_parts * num_parts).reshape(num_parts, num_parts)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        per_part = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    valid = ~np.isnan(per_part)
    return (float(per_part[valid].mean()) if valid.any() else float("nan")), per_part


# ----------------------------------------------------------------------------- files


def save_segmenter(path: str | Path, model: PartSegmenter, meta: Mapping[str, Any] | None = None) -> Path:
    """Weights, architecture and ``meta`` (parts, feature source...) in one file, written atomically."""
    payload = {"format": _FORMAT, "config": model.config(), "state_dict": model.state_dict(), "meta": dict(meta or {})}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return write_bytes(buf.getvalue(), path)


def load_segmenter(
    path: str | Path, remake: str = "train the segmenter again", device: torch.device | str = "cpu"
) -> tuple[PartSegmenter, dict[str, Any]]:
    """A model written by ``save_segmenter`` and its meta; a missing or damaged file is a
    ``SegmenterError`` naming the file and ``remake``, the command that makes it again."""
    path = Path(path)
    fix = f"; remake it with `{remake}`"
    if not path.is_file():
        raise SegmenterError(f"{path}: segmenter file not found" + fix)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file fails in many ways (RuntimeError, UnpicklingError, EOFError...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise SegmenterError(f"{path}: cannot be read as a segmenter ({type(exc).__name__}: {first}), "
                             "it is corrupted or truncated" + fix) from exc
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise SegmenterError(f"{path}: is not a segmenter written by linkstyle ({_FORMAT})" + fix)
    try:
        cfg = payload["config"]
        model = PartSegmenter(cfg["in_channels"], cfg["num_parts"], cfg["width"], cfg["dilations"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise SegmenterError(f"{path}: segmenter weights do not fit its recorded architecture "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})" + fix) from exc
    return model.to(device).eval(), dict(payload.get("meta") or {})
