"""The generator interface every stage relies on.

A generator is a class-conditional map ``z -> w -> image``. Linking works on one
``w`` vector per sample; generators with several style inputs (StyleGAN's
``num_ws``) broadcast it back inside ``synthesize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

import torch


@dataclass(frozen=True)
class GroundTruth:
    """What a procedural world knows exactly about the images it drew.

    ``masks`` holds one part label per pixel (index into ``part_names``, 0 is
    background); ``factors`` holds each generative factor normalised to [0, 1].
    """

    masks: torch.Tensor  # uint8 [B, H, W]
    factors: torch.Tensor  # float32 [B, F]
    part_names: tuple[str, ...]
    factor_names: tuple[str, ...]


@runtime_checkable
class Generator(Protocol):
    z_dim: int
    w_dim: int
    num_ws: int
    num_classes: int
    resolution: int
    class_names: tuple[str, ...]

    def mapping(
        self, z: torch.Tensor, classes: torch.Tensor, truncation_psi: float = 1.0
    ) -> torch.Tensor:
        """``z`` [B, z_dim], ``classes`` long [B] -> ``w`` [B, w_dim]."""

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` [B, w_dim] -> images float [B, 3, H, W] in about [-1, 1]."""

    def render(self, w: torch.Tensor) -> tuple[torch.Tensor, GroundTruth | None]:
        """Images and, where the generator knows it, the ground truth, in one pass."""

    def to(self, device: torch.device | str) -> "Generator": ...


# ----------------------------------------------------------------------------- shared checks
# Every adapter of a real network validates seeds, classes and class names the same way.


def check_seeds(seeds: "Sequence[int]") -> list[int]:
    """Seeds as Python ints in [0, 2**32 - 1] (numpy's RandomState range), or a ValueError."""
    import numpy as np

    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2**32:
            raise ValueError(f"seeds must be integers in [0, 2**32 - 1], got {s!r}")
        out.append(int(s))
    return out


def check_classes(classes: "torch.Tensor | Sequence[int]", batch: int, num_classes: int, what: str = "the network's classes") -> torch.Tensor:
    """Class indices as a long tensor of shape [batch], each in [0, num_classes), or a ValueError."""
    classes = torch.as_tensor(classes)
    if classes.ndim != 1 or classes.shape[0] != batch:
        raise ValueError(f"classes must have shape [{batch}] to match z, got {tuple(classes.shape)}")
    if classes.dtype.is_floating_point or classes.dtype.is_complex or classes.dtype == torch.bool:
        raise ValueError(f"classes must be integer class indices, got dtype {classes.dtype}")
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ValueError(
            f"class indices must be in [0, {num_classes - 1}] for {what}, "
            f"got min {int(classes.min())}, max {int(classes.max())}"
        )
    return classes.long()


def resolve_class_names(names: "Sequence[str] | Mapping[int, str] | None", num_classes: int) -> tuple[str, ...]:
    """A full list of names, or a {index: name} mapping naming some classes (others: ImageNet's names
    for a 1,000-class network, else class_<i>; class_names.fallback_names)."""
    import numpy as np

    from ..class_names import fallback_names

    default = list(fallback_names(num_classes))
    if names is None:
        return tuple(default)
    if isinstance(names, str):
        raise ValueError("class_names must be a list of names or a {index: name} mapping, not a string")
    if isinstance(names, Mapping):
        for key, name in names.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
                raise ValueError(f"class_names keys must be class indices, got {key!r}")
            if not 0 <= int(key) < num_classes:
                raise ValueError(f"class_names: class index {key} is outside [0, {num_classes - 1}]")
            default[int(key)] = str(name)
        return tuple(default)
    if len(names) != num_classes:
        raise ValueError(
            f"class_names has {len(names)} names but the network has {num_classes} "
            "classes; give all of them, or a {index: name} mapping"
        )
    return tuple(str(n) for n in names)
