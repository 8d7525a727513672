"""A uniform view of any image classifier: ``features(x) -> r`` and ``head(r) -> logits``.

``r`` is the input of the network's last ``nn.Linear`` (the paper's penultimate layer),
captured with a forward pre-hook. This is right for ResNets, RegNets, VGG, AlexNet,
DenseNet and MobileNets alike, where ``children()[:-1]`` is not (VGG/AlexNet keep
two more Linear layers inside ``classifier``; DenseNet applies ReLU + pooling in
``forward``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def last_linear(net: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``net``: the classification head."""
    found = None
    for module in net.modules():
        if isinstance(module, nn.Linear):
            found = module
    if found is None:
        raise ValueError(f"{type(net).__name__} has no nn.Linear layer; cannot locate its penultimate features")
    return found


class Classifier(nn.Module):
    """Wraps a network with its own preprocessing from a generator's [-1, 1] output.

    Preprocessing stays on the tensor's device (resize, then normalise): no PIL round trips.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        input_size: int | None,
        mean: Sequence[float],
        std: Sequence[float],
        class_names: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.net = net.eval()
        self.name = name
        self.input_size = input_size
        self.class_names = tuple(class_names)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.fc = last_linear(net)
        self._captured: torch.Tensor | None = None
        self.fc.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._captured = args[0]

    @property
    def num_units(self) -> int:
        return int(self.fc.in_features)

    @property
    def num_classes(self) -> int:
        return int(self.fc.out_features)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] NCHW -> the network's input (size and normalisation)."""
        x = (images.clamp(-1, 1) + 1) * 0.5
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass giving both the penultimate features and the logits."""
        self._captured = None
        logits = self.net(self.preprocess(images))
        feats = self._captured
        self._captured = None
        if feats is None:
            raise RuntimeError(f"classifier '{self.name}': the last Linear layer was not called in forward")
        return feats.flatten(1), logits

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images)[0]

    def head(self, r: torch.Tensor) -> torch.Tensor:
        return self.fc(r)

    def head_float64(self, r: torch.Tensor) -> torch.Tensor:
        """The logits of features ``r`` computed in float64 (returned as float32): a float32 matrix
        product rounds differently with the batch's size (its blocking changes), so a sweep image's
        class probability would depend on which other images shared its batch; in float64 the
        differences stay far below float32's resolution."""
        return F.linear(r.double(), self.fc.weight.double(), None if self.fc.bias is None else self.fc.bias.double()).float()
