"""Classifier kind ``torchscript``: any network, scripted with two exported methods.

The file (``torch.jit.save`` of a scripted module) must provide

- ``features(x) -> r``: images ``x`` as the generator makes them, NCHW float in [-1, 1],
  to the penultimate features ``r`` of shape ``[B, num_units]`` (the module does its own
  resizing and normalisation);
- ``head(r) -> logits``: ``[B, num_units]`` to ``[B, num_classes]``, the last layer alone;

and may carry the integer attributes ``num_units``, ``num_classes`` and ``input_size``,
and a ``class_names`` list of strings. Where ``num_units`` / ``num_classes`` are absent
they are inferred by running ``features`` and ``head`` once on one zero image of
``input_size`` x ``input_size`` pixels (64 when ``input_size`` is absent too).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

DEFAULT_PROBE_SIZE = 64

SCRIPT_EXAMPLE = '''\
import torch, torchvision
class ForLinkstyle(torch.nn.Module):  # features(x): images in [-1, 1] -> r [B, num_units]; head(r) -> logits
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.body, self.fc = torch.nn.Sequential(*list(net.children())[:-1]), net.fc  # a ResNet: all but fc
        self.num_units, self.num_classes, self.input_size = net.fc.in_features, net.fc.out_features, 224
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate((x + 1) / 2, size=[224, 224], mode="bilinear", antialias=True)
        return self.body((x - self.mean) / self.std).flatten(1)
    @torch.jit.export
    def head(self, r: torch.Tensor) -> torch.Tensor:
        return self.fc(r)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
torch.jit.script(ForLinkstyle(torchvision.models.resnet50(weights="IMAGENET1K_V1").eval())).save("classifier.pt")'''

_REQUIRED = ("features", "head")


def _has_method(module: Any, method: str) -> bool:
    """A compiled method, not a submodule of that name (torchvision VGG/DenseNet have a ``features`` submodule)."""
    attr = getattr(module, method, None)
    return attr is not None and callable(attr) and not isinstance(attr, nn.Module)


def _int_attr(module: Any, attr: str) -> int | None:
    value = getattr(module, attr, None)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value)


def _read(path: str | Path, device: torch.device | str | None) -> torch.jit.ScriptModule:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"TorchScript classifier file not found at {path}; it must hold a module saved with "
            f"torch.jit.script(model).save(path) that exports features(x) -> r (images in [-1, 1] to "
            f"[B, num_units]) and head(r) -> logits (see linkstyle.classifiers.torchscript_kind)"
        )
    try:
        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; it still loads, and we say what we need
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated")  # Future- or DeprecationWarning
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as exc:
        raise ValueError(
            f"{path} could not be loaded as a TorchScript module ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            f"save the model with torch.jit.script(model).save(path), e.g.\n{SCRIPT_EXAMPLE}"
        ) from exc
    missing = [m for m in _REQUIRED if not _has_method(module, m)]
    if missing:
        which = " and ".join(f"{m}()" for m in missing)
        clash = [m for m in missing if isinstance(getattr(module, m, None), nn.Module)]
        note = f" ('{clash[0]}' is a submodule there, not a method: wrap the network as below)" if clash else ""
        raise ValueError(
            f"TorchScript classifier {path} lacks the method {which}{note}. linkstyle needs features(x) -> r "
            f"(images in [-1, 1] to [B, num_units]) and head(r) -> logits, exported with @torch.jit.export. "
            f"For example:\n{SCRIPT_EXAMPLE}"
        )
    return module.eval()


class ScriptedClassifier(nn.Module):
    """A scripted module seen through :class:`~linkstyle.classifiers.wrapper.Classifier`'s interface."""

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        *,
        name: str,
        num_units: int | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.module = module.eval()
        self.name = name
        units = num_units if num_units is not None else _int_attr(module, "num_units")
        classes = num_classes if num_classes is not None else _int_attr(module, "num_classes")
        if units is None or classes is None:
            units, classes = self._probe(units, classes)
        self._num_units = int(units)
        self._num_classes = int(classes)
        names = class_names if class_names is not None else getattr(module, "class_names", ())
        self.class_names = tuple(str(c) for c in names) if isinstance(names, (list, tuple)) else ()

    def _probe(self, units: int | None, classes: int | None) -> tuple[int, int]:
        """Run features/head once on a zero image of ``input_size`` (else 64) pixels to read the widths."""
        size = _int_attr(self.module, "input_size") or DEFAULT_PROBE_SIZE
        device = next((t.device for t in [*self.module.parameters(), *self.module.buffers()]), torch.device("cpu"))
        with torch.no_grad():
            r = self.module.features(torch.zeros(1, 3, size, size, device=device))
            if r.ndim != 2:
                raise ValueError(
                    f"classifier '{self.name}': features(x) returned shape {tuple(r.shape)}; it must return "
                    f"[B, num_units] (flatten it in the scripted module)"
                )
            logits = self.module.head(r)
        return (units if units is not None else int(r.shape[1])), (classes if classes is not None else int(logits.shape[-1]))

    @property
    def num_units(self) -> int:
        return self._num_units

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Identity: the scripted module does its own preprocessing."""
        return images

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.module.features(images)
        return r, self.module.head(r)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.module.features(images)

    def head(self, r: torch.Tensor) -> torch.Tensor:
        return self.module.head(r)

    def head_float64(self, r: torch.Tensor) -> torch.Tensor:
        """The scripted head as it is (it need not be linear, nor accept float64): unlike the
        wrapped networks' heads, its result may vary in the last bits with the batch's size."""
        return self.module.head(r).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images)[1]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_units={self.num_units}, num_classes={self.num_classes}"


def load_torchscript(path: str | Path, *, name: str, device: torch.device | str) -> ScriptedClassifier:
    """Load a scripted classifier onto ``device`` (eval mode); see the module docstring for what it must export."""
    return ScriptedClassifier(_read(path, device), name=name).to(device).eval()


def torchscript_unit_count(path: str | Path) -> int:
    """``num_units`` of a scripted classifier: its attribute, or from one probe on the CPU."""
    module = _read(path, "cpu")
    units = _int_attr(module, "num_units")
    if units is not None:
        return units
    return ScriptedClassifier(module, name=Path(path).stem).num_units


__all__ = ["SCRIPT_EXAMPLE", "ScriptedClassifier", "load_torchscript", "torchscript_unit_count"]
