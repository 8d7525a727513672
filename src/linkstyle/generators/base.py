"""The generator interface every stage relies on.

A generator is a class-conditional map ``z -> w -> image``. Linking works on one
``w`` vector per sample; generators with several style inputs (StyleGAN's
``num_ws``) broadcast it back inside ``synthesize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
