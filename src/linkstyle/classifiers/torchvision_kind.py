"""Classifier kind ``torchvision``: a torchvision ImageNet model with weights from a local file.

Weights are never fetched at run time unless the config says ``allow_download: true``.
``weights`` is either the name of a torchvision weights enum member (``IMAGENET1K_V1``,
``IMAGENET1K_V2``, ``DEFAULT``, or qualified as ``ResNet50_Weights.IMAGENET1K_V1``), looked
up as ``$TORCH_HOME/hub/checkpoints/<official file name>`` (the place torchvision itself
caches downloads), or the path of a state-dict file (a fine-tuned head with any number of
classes loads too), or ``None`` for random weights (tests and debugging only).

Preprocessing follows the weights' own ``transforms()`` (resize the shorter side with
antialiasing, centre crop, normalise), done on tensors on the images' device, from the
generator's [-1, 1] output.

This module imports neither torch nor torchvision at import time: the workflow reads
:data:`TORCHVISION_UNITS` while Snakemake parses the Snakefile. ``TorchvisionClassifier``
is therefore created on first access (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from urllib.parse import urlparse

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn
    from torchvision.models import WeightsEnum

    from .wrapper import Classifier

log = logging.getLogger(__name__)

#: Penultimate width (``in_features`` of the last ``nn.Linear``) of every torchvision
#: classification model that has a Linear head (torchvision 0.29; checked by the tests).
TORCHVISION_UNITS: dict[str, int] = {
    "alexnet": 4096,
    "convnext_tiny": 768, "convnext_small": 768, "convnext_base": 1024, "convnext_large": 1536,
    "densenet121": 1024, "densenet161": 2208, "densenet169": 1664, "densenet201": 1920,
    "efficientnet_b0": 1280, "efficientnet_b1": 1280, "efficientnet_b2": 1408, "efficientnet_b3": 1536,
    "efficientnet_b4": 1792, "efficientnet_b5": 2048, "efficientnet_b6": 2304, "efficientnet_b7": 2560,
    "efficientnet_v2_s": 1280, "efficientnet_v2_m": 1280, "efficientnet_v2_l": 1280,
    "googlenet": 1024,
    "inception_v3": 2048,
    "maxvit_t": 512,
    "mnasnet0_5": 1280, "mnasnet0_75": 1280, "mnasnet1_0": 1280, "mnasnet1_3": 1280,
    "mobilenet_v2": 1280, "mobilenet_v3_small": 1024, "mobilenet_v3_large": 1280,
    "regnet_x_400mf": 400, "regnet_x_800mf": 672, "regnet_x_1_6gf": 912, "regnet_x_3_2gf": 1008,
    "regnet_x_8gf": 1920, "regnet_x_16gf": 2048, "regnet_x_32gf": 2520,
    "regnet_y_400mf": 440, "regnet_y_800mf": 784, "regnet_y_1_6gf": 888, "regnet_y_3_2gf": 1512,
    "regnet_y_8gf": 2016, "regnet_y_16gf": 3024, "regnet_y_32gf": 3712, "regnet_y_128gf": 7392,
    "resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048,
    "resnext50_32x4d": 2048, "resnext101_32x8d": 2048, "resnext101_64x4d": 2048,
    "wide_resnet50_2": 2048, "wide_resnet101_2": 2048,
    "shufflenet_v2_x0_5": 1024, "shufflenet_v2_x1_0": 1024, "shufflenet_v2_x1_5": 1024, "shufflenet_v2_x2_0": 2048,
    "swin_t": 768, "swin_s": 768, "swin_b": 1024, "swin_v2_t": 768, "swin_v2_s": 768, "swin_v2_b": 1024,
    "vgg11": 4096, "vgg11_bn": 4096, "vgg13": 4096, "vgg13_bn": 4096,
    "vgg16": 4096, "vgg16_bn": 4096, "vgg19": 4096, "vgg19_bn": 4096,
    "vit_b_16": 768, "vit_b_32": 768, "vit_l_16": 1024, "vit_l_32": 1024, "vit_h_14": 1280,
}

#: Classification models whose classifier is a 1x1 convolution: no Linear layer, no penultimate vector.
NO_LINEAR_HEAD = frozenset({"squeezenet1_0", "squeezenet1_1"})

#: Wrappers that training scripts commonly put around a state dict.
CHECKPOINT_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")

_STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
_MAX_KEYS_SHOWN = 10


# --------------------------------------------------------------------------- architectures


def supported_archs() -> list[str]:
    """torchvision classification models with a Linear head (what this kind can load)."""
    import torchvision

    return sorted(set(torchvision.models.list_models(module=torchvision.models)) - NO_LINEAR_HEAD)


def _check_arch(arch: str) -> str:
    key = str(arch).strip().lower()
    if key in TORCHVISION_UNITS:
        return key
    if key in NO_LINEAR_HEAD:
        raise ValueError(
            f"torchvision architecture '{arch}' classifies with a 1x1 convolution and has no nn.Linear head, "
            f"so it has no penultimate feature vector; choose another: {', '.join(supported_archs())}"
        )
    supported = supported_archs()
    if key not in supported:
        raise ValueError(f"unknown torchvision classification architecture '{arch}'; supported: {', '.join(supported)}")
    return key


def _build_kwargs(arch: str, *, pretrained: bool, crop_size: int | None, state_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Constructor arguments that torchvision's builders set themselves when given weights.

    The network is built with ``weights=None`` and loaded here, so these must be repeated:
    Inception/GoogLeNet's input transform and auxiliary heads, and ViT/MaxViT's input size.
    """
    kwargs: dict[str, Any] = {}
    if arch in ("googlenet", "inception_v3"):
        aux_prefix = "aux1." if arch == "googlenet" else "AuxLogits."
        kwargs["transform_input"] = pretrained
        kwargs["aux_logits"] = any(k.startswith(aux_prefix) for k in state_keys)
        kwargs["init_weights"] = False
    elif arch.startswith("vit_") and crop_size is not None:
        kwargs["image_size"] = crop_size
    elif arch.startswith("maxvit_") and crop_size is not None:
        kwargs["input_size"] = (crop_size, crop_size)
    return kwargs


def _skeleton(arch: str, **kwargs: Any) -> nn.Module:
    """The architecture without weights: on the meta device (no memory, no init) where it builds there."""
    import torch
    import torchvision

    try:
        with torch.device("meta"):
            return torchvision.models.get_model(arch, weights=None, **kwargs)
    except (NotImplementedError, RuntimeError):  # a few initialisers (RegNet) need real tensors
        return torchvision.models.get_model(arch, weights=None, **kwargs)


def _head_name(net: nn.Module) -> str:
    from .wrapper import last_linear

    head = last_linear(net)
    return next(name for name, module in net.named_modules() if module is head)


def torchvision_unit_count(arch: str) -> int:
    """Penultimate width of a torchvision architecture, without any weights.

    From :data:`TORCHVISION_UNITS`; an architecture missing from the table (a newer
    torchvision) is built on the meta device and its last Linear's ``in_features`` read.
    """
    key = _check_arch(arch)
    if key in TORCHVISION_UNITS:
        return TORCHVISION_UNITS[key]
    from .wrapper import last_linear

    return int(last_linear(_skeleton(key, **_build_kwargs(key, pretrained=False, crop_size=None))).in_features)


# --------------------------------------------------------------------------- weights


def checkpoint_dir(torch_home: str | Path | None = None) -> Path:
    """``$TORCH_HOME/hub/checkpoints``: where torchvision caches (and here looks up) official weights."""
    if torch_home is not None:
        return Path(torch_home).expanduser() / "hub" / "checkpoints"
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _weights_enum_member(arch: str, weights: str) -> WeightsEnum | None:
    """The enum member named by ``weights`` (``IMAGENET1K_V1``, ``DEFAULT``, ``ResNet50_Weights.IMAGENET1K_V1``), or None."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    name = weights.strip()
    if "." in name:
        prefix, _, member = name.rpartition(".")
        if prefix != enum.__name__:
            return None
        name = member
    return enum.__members__.get(name) or enum.__members__.get(name.upper())


def _looks_like_path(weights: str) -> bool:
    return (
        "/" in weights
        or "\\" in weights
        or weights.startswith(("~", "."))
        or weights.lower().endswith(_STATE_DICT_SUFFIXES)
        or Path(weights).expanduser().exists()
    )


def resolve_weights(arch: str, weights: str | None, torch_home: str | None = None) -> tuple[WeightsEnum | None, Path | None]:
    """What ``weights`` names: ``(enum member, its file under $TORCH_HOME/hub/checkpoints)``,
    ``(None, path)`` for a state-dict file, or ``(None, None)`` for random weights.

    A name that is neither a weights name of ``arch`` nor looks like a path is a ValueError
    listing the valid names.
    """
    key = _check_arch(arch)
    if weights is None:
        return None, None
    weights = str(weights)
    member = _weights_enum_member(key, weights)
    if member is not None:
        return member, checkpoint_dir(torch_home) / Path(urlparse(member.url).path).name
    if _looks_like_path(weights):
        return None, Path(weights).expanduser()
    from torchvision.models import get_model_weights

    enum = get_model_weights(key)
    names = ", ".join(list(enum.__members__))
    raise ValueError(
        f"'{weights}' is not a weights name of torchvision {key} (valid: {names}, or {enum.__name__}.<name>) "
        f"nor the path of a state-dict file (.pth/.pt)"
    )


def _describe(arch: str, member: WeightsEnum, requested: str | None = None) -> str:
    if requested is not None and requested.rpartition(".")[2].upper() == "DEFAULT":
        return f"ImageNet weights DEFAULT (= {member.name}) of torchvision {arch}"
    return f"ImageNet weights {member.name} of torchvision {arch}"


def weights_asset(arch: str, weights: str | None, torch_home: str | None = None) -> dict[str, Any]:
    """What the weights are, where they must be, whether they are there, and where they come from.

    For ``linkstyle doctor``: never downloads, never reads the file.
    """
    key = _check_arch(arch)
    member, path = resolve_weights(key, weights, torch_home)
    if member is not None:
        assert path is not None
        return {"what": _describe(key, member, weights), "path": str(path), "present": path.is_file(), "source": member.url}
    if path is not None:
        return {
            "what": f"state dict of torchvision {key} (local file)",
            "path": str(path),
            "present": path.is_file(),
            "source": "a file you provide, saved with torch.save(model.state_dict(), path); "
            "or set weights to an official name such as IMAGENET1K_V1",
        }
    return {
        "what": f"random weights of torchvision {key} (weights: null, for tests and debugging only)",
        "path": None,
        "present": True,
        "source": "nothing to fetch; set weights to an official name such as IMAGENET1K_V1 or to a state-dict file",
    }


def _missing_weights_error(what: str, member: WeightsEnum, path: Path, name: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"classifier '{name}': {what} not found at {path}. "
        f"The official file is {member.url}: download it where there is internet and place it at that path "
        f"(the file keeps its official name {path.name} in $TORCH_HOME/hub/checkpoints/, here {path.parent}; "
        f"set torch_home or the TORCH_HOME environment variable to look elsewhere), "
        f"or give the path of a state-dict file as weights, "
        f"or set allow_download: true in this classifier's config to let torchvision download it."
    )


def _unwrap_state_dict(obj: Any, source: str) -> dict[str, Any]:
    """The state dict inside a checkpoint: plain, or under 'state_dict' / 'model' / 'model_state_dict'."""
    import torch

    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # type: ignore[return-value]
        inner = next((obj[k] for k in CHECKPOINT_WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, torch.nn.Module):
        hint = "it holds a whole module: save model.state_dict() instead, or script it and use kind: torchscript"
    elif isinstance(obj, Mapping):
        hint = f"top-level keys: {_shorten(sorted(map(str, obj)))}; expected parameter names or a {'/'.join(CHECKPOINT_WRAPPER_KEYS)} entry"
    else:
        hint = f"it holds a {type(obj).__name__}"
    raise ValueError(f"{source} is not a state dict ({hint})")


def _strip_prefix(state: dict[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Drop the prefix ``nn.DataParallel`` / DDP put on every key (only when every key has it)."""
    if not state or not all(k.startswith(prefix) for k in state):
        return state
    out: dict[str, Any] = OrderedDict((k[len(prefix):], v) for k, v in state.items())
    return out


_DENSENET_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _fix_legacy_keys(arch: str, state: dict[str, Any]) -> dict[str, Any]:
    """The official DenseNet files use the old key names 'norm.1', 'conv.2', ... (as torchvision's own loader fixes)."""
    if not arch.startswith("densenet"):
        return state
    out: dict[str, Any] = OrderedDict()
    for k, v in state.items():
        m = _DENSENET_LEGACY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def _shorten(keys: Sequence[str], limit: int = _MAX_KEYS_SHOWN) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "") if keys else "none"


def _read_state_dict(path: Path, what: str) -> dict[str, Any]:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as exc:
        raise ValueError(
            f"{what} at {path} cannot be read as a state dict ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"save it with torch.save(model.state_dict(), path)"
        ) from exc
    return _unwrap_state_dict(obj, f"{what} at {path}")


def _load_strict(net: nn.Module, state: Mapping[str, Any], what: str) -> None:
    """``load_state_dict(strict=True)``, with key mismatches listed first as a ValueError.

    A network built on the meta device takes the checkpoint's tensors (``assign=True``,
    cast to the network's dtypes): no initialisation, no copy.
    """
    reference = net.state_dict()
    expected = reference.keys()
    # BatchNorm fills num_batches_tracked itself for checkpoints older than its version 2 (torchvision's own files).
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{what} does not fit the architecture: {len(missing)} missing key(s): {_shorten(missing)}; "
            f"{len(unexpected)} unexpected key(s): {_shorten(unexpected)}"
        )
    on_meta = any(t.is_meta for t in reference.values())
    if on_meta:
        cast: dict[str, Any] = OrderedDict(
            (k, v.to(reference[k].dtype) if v.is_floating_point() and reference[k].is_floating_point() else v)
            for k, v in state.items()
        )
        metadata = getattr(state, "_metadata", None)
        if metadata is not None:
            cast._metadata = metadata  # type: ignore[attr-defined]
        state = cast
    try:
        net.load_state_dict(state, strict=True, assign=on_meta)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{what} does not fit the architecture: {exc}") from None
    left = [name for name, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:  # cannot happen with torchvision's models; never hand out a half-built network
        raise RuntimeError(f"{what}: tensors not filled by the checkpoint: {_shorten(left)}")


# --------------------------------------------------------------------------- the classifier


def _make_classifier_class() -> type:
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    from .wrapper import Classifier

    class TorchvisionClassifier(Classifier):
        """A :class:`Classifier` with torchvision's ImageNet preprocessing, on tensors.

        From [-1, 1]: to [0, 1], resize the shorter side to ``resize_size`` (antialiased,
        ``interpolation`` as in the weights' transforms; clipped to [0, 1] like the 8-bit
        paths), centre-crop ``crop_size``, normalise by ``mean`` / ``std``. Matches the
        weights' own PIL pipeline within one 8-bit level (the PIL path rounds to uint8
        after resizing; this one does not). Differentiable; stays on the images' device.
        ``resize_size=None`` skips the resize.
        """

        def __init__(
            self,
            net: nn.Module,
            *,
            name: str,
            resize_size: int | None = 256,
            crop_size: int = 224,
            mean: Sequence[float] = (0.485, 0.456, 0.406),
            std: Sequence[float] = (0.229, 0.224, 0.225),
            interpolation: str = "bilinear",
            class_names: Sequence[str] = (),
        ) -> None:
            super().__init__(net, name=name, input_size=crop_size, mean=mean, std=std, class_names=class_names)
            self.resize_size = None if resize_size is None else int(resize_size)
            self.crop_size = int(crop_size)
            self.interpolation = InterpolationMode(interpolation).value

        def preprocess(self, images: torch.Tensor) -> torch.Tensor:
            x = (images.clamp(-1, 1) + 1) * 0.5
            if self.resize_size is not None:
                x = TF.resize(x, [self.resize_size], interpolation=InterpolationMode(self.interpolation), antialias=True)
                x = x.clamp(0, 1)  # bicubic overshoots; PIL and torchvision's uint8 path clip, as here
            x = TF.center_crop(x, [self.crop_size])
            return (x - self.mean) / self.std

        def extra_repr(self) -> str:
            return f"name={self.name!r}, resize_size={self.resize_size}, crop_size={self.crop_size}, interpolation={self.interpolation}"

    TorchvisionClassifier.__module__ = __name__
    return TorchvisionClassifier


_CLASS_CACHE: dict[str, type] = {}


def __getattr__(attr: str) -> Any:  # PEP 562: define the torch-based class on first use
    if attr == "TorchvisionClassifier":
        if attr not in _CLASS_CACHE:
            _CLASS_CACHE[attr] = _make_classifier_class()
        return _CLASS_CACHE[attr]
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _preset(arch: str, member: WeightsEnum | None) -> WeightsEnum:
    """Whose transforms to use: the named weights, else the classic IMAGENET1K_V1 (resize 256 / crop 224 for most), else DEFAULT."""
    if member is not None:
        return member
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    return enum.__members__.get("IMAGENET1K_V1") or enum.DEFAULT


def _read_weights(key: str, member: Any, path: Path | None, weights: str | None, *, name: str,
                  allow_download: bool) -> tuple[str, dict[str, Any] | None]:
    """(what was read, for messages; its state dict): the named weights' file (downloaded only if
    allowed), a state-dict file, or nothing for random weights."""
    state: dict[str, Any] | None
    if member is not None:
        assert path is not None
        described = _describe(key, member, weights)
        what = f"{described} ({path})"
        if path.is_file():
            state = _read_state_dict(path, described)
        elif allow_download:
            log.warning("classifier '%s': downloading %s from %s to %s", name, described, member.url, path.parent)
            state = member.get_state_dict(progress=True, check_hash=True, model_dir=str(path.parent), map_location="cpu")
        else:
            raise _missing_weights_error(described, member, path, name)
    elif path is not None:
        what = f"state dict of torchvision {key} ({path})"
        if not path.is_file():
            raise FileNotFoundError(
                f"classifier '{name}': state-dict file of torchvision {key} given as weights not found at {path}; "
                f"give the path of a file saved with torch.save(model.state_dict(), path), "
                f"or an official weights name such as IMAGENET1K_V1"
            )
        state = _read_state_dict(path, f"state dict of torchvision {key}")
    else:
        log.warning("classifier '%s': torchvision %s with RANDOM weights (weights: null); only for tests and debugging", name, key)
        what, state = "", None
    return what, state


def load_torchvision(
    arch: str,
    weights: str | None,
    *,
    name: str,
    device: torch.device | str,
    allow_download: bool = False,
    torch_home: str | None = None,
    resize_size: int | None = None,
    crop_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """A torchvision classifier with local (or, if allowed, downloaded) weights, in eval mode on ``device``.

    ``resize_size`` / ``crop_size`` / ``mean`` / ``std`` override the preprocessing, which
    otherwise comes from the named weights' transforms, or for a state-dict file (or None)
    from the architecture's IMAGENET1K_V1 transforms (DEFAULT where it has no V1).
    """
    import torchvision

    key = _check_arch(arch)
    member, path = resolve_weights(key, weights, torch_home)
    preset = _preset(key, member)
    tf = preset.transforms()
    resize = tf.resize_size[0] if resize_size is None else resize_size
    crop = tf.crop_size[0] if crop_size is None else crop_size

    what, state = _read_weights(key, member, path, weights, name=name, allow_download=allow_download)
    if state is not None:
        state = _fix_legacy_keys(key, _strip_prefix(state))
    kwargs = _build_kwargs(key, pretrained=state is not None, crop_size=crop, state_keys=list(state or ()))
    num_classes = len(preset.meta["categories"])
    if state is None:
        net = torchvision.models.get_model(key, weights=None, num_classes=num_classes, **kwargs)
    else:
        net = _skeleton(key, num_classes=num_classes, **kwargs)
        head_weight = state.get(f"{_head_name(net)}.weight")
        if getattr(head_weight, "ndim", 0) == 2 and int(head_weight.shape[0]) != num_classes:
            num_classes = int(head_weight.shape[0])  # a fine-tuned head may have any number of classes
            net = _skeleton(key, num_classes=num_classes, **kwargs)
        _load_strict(net, state, what)
        if key == "googlenet" and net.aux_logits:  # as torchvision's builder: aux heads are for training only
            net.aux_logits, net.aux1, net.aux2 = False, None, None

    categories = list(preset.meta["categories"])
    class_names = categories if len(categories) == num_classes else []
    cls = __getattr__("TorchvisionClassifier")
    clf = cls(
        net,
        name=name,
        resize_size=resize,
        crop_size=crop,
        mean=tf.mean if mean is None else mean,
        std=tf.std if std is None else std,
        interpolation=tf.interpolation.value,
        class_names=class_names,
    )
    return clf.to(device).eval()


__all__ = [
    "TORCHVISION_UNITS",
    "TorchvisionClassifier",  # noqa: F822 (made on first use by the module's __getattr__)
    "checkpoint_dir",
    "load_torchvision",
    "resolve_weights",
    "supported_archs",
    "torchvision_unit_count",
    "weights_asset",
]
