"""Classifier kind ``timm``: a timm (pytorch-image-models) model with weights from a local file.

``name`` is a timm model name, best with its pretrained tag (``resnet50.a1_in1k``): the tag
selects the preprocessing (input size, crop_pct, interpolation, mean/std) that goes with those
weights. ``weights`` is the path of a local file (``.safetensors``, or a state dict in
``.pth`` / ``.bin`` / ...): it is required, because nothing is fetched at run time unless the
config says ``allow_download: true`` (then timm downloads the tag's weights from the Hugging
Face hub itself). The hub id of the official weights (``timm/resnet50.a1_in1k``) is printed
in errors and by ``linkstyle doctor``, never fetched.

The network is built with ``pretrained=False`` (on the meta device where that works) and the
file loaded strictly, key mismatches listed as a ValueError. A fine-tuned head with any
number of classes loads too.

Preprocessing comes from timm's own data config (``timm.data.resolve_model_data_config``)
and is timm's eval transform done on tensors on the images' device, from the generator's
[-1, 1] output: resize the shorter side to ``floor(input_size / crop_pct)`` (antialiased),
centre-crop ``input_size``, normalise. It reuses torchvision_kind's ``TorchvisionClassifier``.
On square images (what generators give) timm's crop modes ``center``, ``squash`` and
``border`` coincide; this is ``center``.

Like torchvision_kind, this module imports neither torch nor timm at import time.
"""

from __future__ import annotations

import difflib
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .torchvision_kind import _load_strict, _read_state_dict, _strip_prefix, _unwrap_state_dict

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from .wrapper import Classifier

log = logging.getLogger(__name__)

_SAFETENSORS_SUFFIXES = (".safetensors",)
_TENSOR_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


# --------------------------------------------------------------------------- architectures


def _create(name: str, *, meta: bool, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``; unknown names and tags are ValueErrors with suggestions."""
    import timm
    import torch

    arch, _, tag = str(name).strip().partition(".")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean: {', '.join(close)}?" if close else "; see timm.list_models() for the valid names"
        raise ValueError(f"unknown timm model '{name}'{hint}")
    try:
        if meta:
            try:
                with torch.device("meta"):
                    net = timm.create_model(name, pretrained=False, **kwargs)
            except (NotImplementedError, RuntimeError, TypeError):  # an initialiser that needs real tensors
                return timm.create_model(name, pretrained=False, **kwargs)
            persistent = net.state_dict().keys()
            if any(k not in persistent for k, _ in net.named_buffers()):
                # non-persistent buffers (e.g. relative position indices) are computed at build time,
                # no checkpoint fills them: build for real
                return timm.create_model(name, pretrained=False, **kwargs)
            return net
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as exc:
        if tag and "tag" in str(exc).lower():
            tags = timm.list_pretrained(f"{arch}.*")
            raise ValueError(
                f"unknown pretrained tag '{tag}' of timm model '{arch}'; valid: {', '.join(tags) or 'none'}"
            ) from None
        raise


def _head(net: nn.Module, name: str) -> nn.Linear:
    """The last nn.Linear, checked to be the model's classifier (not a Linear inside the body)."""
    from .wrapper import last_linear

    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    if isinstance(classifier, (tuple, list)):
        raise ValueError(
            f"timm model '{name}' has {len(classifier)} classifier heads (e.g. a distilled model) whose outputs are combined; "
            f"it has no single penultimate feature vector, choose another model"
        )
    try:
        head = last_linear(net)
    except ValueError:
        head = None
    if head is None or (classifier is not None and all(m is not head for m in classifier.modules())):
        raise ValueError(
            f"timm model '{name}' has no nn.Linear classification head (its classifier is "
            f"{type(classifier).__name__ if classifier is not None else 'unknown'}), "
            f"so it has no penultimate feature vector; choose another model"
        )
    return head


def timm_unit_count(name: str) -> int:
    """Penultimate width of a timm model (``in_features`` of its Linear head), without any weights."""
    net = _create(name, meta=True)
    return int(_head(net, name).in_features)


# --------------------------------------------------------------------------- weights


def _source(net: nn.Module) -> str:
    """Where the official weights of this model (and tag) come from: printed, never fetched."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    hub = cfg.get("hf_hub_id")
    if hub:
        filename = cfg.get("hf_hub_filename") or "model.safetensors"
        return f"Hugging Face hub {hub} (https://huggingface.co/{hub}, file {filename})"
    if cfg.get("url"):
        return str(cfg["url"])
    return "no official weights known to timm for this model: a file you provide, saved with safetensors.torch.save_file(model.state_dict(), path)"


def _what(name: str) -> str:
    return f"timm weights of {name}"


def timm_weights_asset(name: str, weights: str | None) -> dict[str, Any]:
    """What the weights are, where they must be, whether they are there, and where they come from.

    For ``linkstyle doctor``: never downloads, never reads the file.
    """
    net = _create(name, meta=True)
    _head(net, name)
    if weights is None:
        return {
            "what": f"{_what(name)} (weights not set)",
            "path": None,
            "present": False,
            "source": f"set weights to a local .safetensors/.pth file; official weights: {_source(net)}",
        }
    path = Path(str(weights)).expanduser()
    return {"what": _what(name), "path": str(path), "present": path.is_file(), "source": _source(net)}


def _read_weights(path: Path, what: str) -> dict[str, Any]:
    if path.suffix.lower() in _SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise ValueError(f"{what} at {path} cannot be read as a safetensors file ({type(exc).__name__}: {exc})") from exc
        return _unwrap_state_dict(state, f"{what} at {path}")
    return _read_state_dict(path, what)


def _missing_weights_error(name: str, path: Path, net: nn.Module, clf_name: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"classifier '{clf_name}': {_what(name)} not found at {path}. "
        f"The official weights are on the {_source(net)}: download the file where there is internet and place it "
        f"at that path, or set allow_download: true in this classifier's config to let timm download it."
    )


# --------------------------------------------------------------------------- the classifier


def timm_preprocessing(net: nn.Module) -> dict[str, Any]:
    """TorchvisionClassifier arguments from timm's data config of ``net`` (its eval transform)."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(net)
    _, height, width = cfg["input_size"]
    if height != width:
        raise ValueError(f"timm model input size {height}x{width} is not square; only square inputs are supported")
    interpolation = cfg.get("interpolation") or "bilinear"
    if interpolation not in _TENSOR_INTERPOLATIONS:
        raise ValueError(
            f"timm interpolation '{interpolation}' has no tensor implementation; supported: {', '.join(_TENSOR_INTERPOLATIONS)}"
        )
    crop_pct = cfg.get("crop_pct") or 0.875  # timm's DEFAULT_CROP_PCT
    return {
        "resize_size": math.floor(height / crop_pct),
        "crop_size": int(height),
        "mean": tuple(cfg["mean"]),
        "std": tuple(cfg["std"]),
        "interpolation": interpolation,
    }


def load_timm(
    name: str,
    weights: str | None,
    *,
    name_in_config: str,
    device: torch.device | str,
    allow_download: bool = False,
) -> Classifier:
    """A timm classifier with weights from a local file (or, if allowed, downloaded by timm), in eval mode on ``device``."""
    import timm

    from .torchvision_kind import TorchvisionClassifier

    net = _create(name, meta=True)
    _head(net, name)
    path = None if weights is None else Path(str(weights)).expanduser()
    if path is not None and path.is_file():
        what = f"{_what(name)} ({path})"
        state = _strip_prefix(_read_weights(path, _what(name)))
        head_name = next(n for n, m in net.named_modules() if m is _head(net, name))
        head_weight = state.get(f"{head_name}.weight")
        num_classes = int(_head(net, name).out_features)
        if getattr(head_weight, "ndim", 0) == 2 and int(head_weight.shape[0]) != num_classes:
            net = _create(name, meta=True, num_classes=int(head_weight.shape[0]))  # a fine-tuned head
        _load_strict(net, state, what)
    elif allow_download:
        log.warning("classifier '%s': timm downloads %s from the %s", name_in_config, _what(name), _source(net))
        net = timm.create_model(name, pretrained=True)
    elif path is None:
        raise ValueError(
            f"classifier '{name_in_config}': weights is required for kind 'timm' (a local .safetensors/.pth file of {name}; "
            f"official weights: {_source(net)}), or set allow_download: true"
        )
    else:
        raise _missing_weights_error(name, path, net, name_in_config)

    net.eval()
    clf = TorchvisionClassifier(net, name=name_in_config, **timm_preprocessing(net))
    return clf.to(device).eval()


__all__ = ["load_timm", "timm_preprocessing", "timm_unit_count", "timm_weights_asset"]
