"""StyleGAN-XL, StyleGAN3 and StyleGAN2-ADA network pickles behind the Generator protocol.

The official pickles rebuild their classes from source stored inside the pickle,
and that source imports the official checkout's ``dnnlib``, ``torch_utils`` and
(StyleGAN-XL) ``legacy``; so loading needs a local checkout of the repository the
pickle came from (``generator.repo``). Nothing here downloads anything.

Linking works on one ``w`` vector per sample. ``mapping`` keeps the first of the
network's ``num_ws`` (identical) rows, untruncated, and applies truncation itself
(per class for StyleGAN-XL, whose ``mapping.w_avg`` is ``[c_dim, w_dim]``; global for
StyleGAN2-ADA / StyleGAN3); ``synthesize`` broadcasts ``w`` back to all ``num_ws``.

Process-wide effects, by design:

* ``sys.path`` is left exactly as it was: the checkout is put in front only while
  the pickle is read (the rebuilt classes keep references to the modules they
  imported, and later imports inside the checkout's packages go through the
  packages' own ``__path__``).
* ``sys.modules`` keeps the checkout's modules (``legacy``, ``dnnlib``,
  ``torch_utils``, ...): the loaded network needs them, and pickling it again
  (``convert_stylegan``) looks them up by name. Loading from a second checkout in
  the same process replaces those names, with a warning; networks already loaded
  from the first checkout keep working but can no longer be pickled.
* ``custom_ops_fallback`` wraps the checkout's ``torch_utils.ops.*._init`` (see there).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pickle
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..class_names import checkout_names
from ..errors import LinkstyleError
from .base import check_classes, check_seeds, resolve_class_names

__all__ = [
    "StyleGAN",
    "StyleGANLoadError",
    "convert_stylegan",
    "custom_ops_fallback",
    "load_stylegan",
    "official_modules",
]

# Where users get the code the pickles need.
REPO_URLS = {
    "StyleGAN-XL": "https://github.com/autonomousvision/stylegan-xl",
    "StyleGAN3": "https://github.com/NVlabs/stylegan3",
    "StyleGAN2-ADA": "https://github.com/NVlabs/stylegan2-ada-pytorch",
}
# What a checkout must have for ``legacy.load_network_pkl`` to import.
_REQUIRED = ("legacy.py", "dnnlib/__init__.py", "torch_utils/__init__.py")
# Ops in torch_utils/ops that compile a CUDA plugin in ``_init()`` on first GPU use.
_CUSTOM_OPS = ("bias_act", "upfirdn2d", "filtered_lrelu")
_PERSISTENT_RECONSTRUCT = ("torch_utils.persistence", "_reconstruct_persistent_obj")


class StyleGANLoadError(LinkstyleError, RuntimeError):
    """A StyleGAN pickle whose G_ema cannot be rebuilt in this environment."""


# --------------------------------------------------------------------------- adapter


class StyleGAN(nn.Module):
    """A loaded official generator ``G`` (usually ``G_ema``) as a linkstyle Generator.

    ``z_dim``, ``w_dim``, ``num_ws`` and ``resolution`` are read from ``G``;
    ``num_classes`` is ``G.c_dim`` (1 for an unconditional network, whose only class
    is 0). ``variant`` is ``"xl"`` when ``G.mapping.w_avg`` holds one centre per
    class (``[c_dim, w_dim]``, StyleGAN-XL) and ``"global"`` otherwise.

    ``class_names``: a sequence of ``num_classes`` names, or a mapping
    ``{class index: name}`` naming some of them (the rest are ``class_<i>``).

    ``truncation_cutoff``: the official mappings truncate only the first ``cutoff``
    of the ``num_ws`` rows; one ``w`` per sample cannot carry rows that differ, so
    only ``None`` (or a value >= ``num_ws``, the same thing) is accepted.

    ``force_fp32``: passed to ``G.synthesis``; ``None`` means True on the CPU (where
    StyleGAN2-ADA needs it) and False on a GPU (the network's own FP16 layers).
    """

    def __init__(
        self,
        G: nn.Module,
        *,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        truncation_cutoff: int | None = None,
        force_fp32: bool | None = None,
    ) -> None:
        super().__init__()
        for attr in ("z_dim", "c_dim", "w_dim", "num_ws", "img_resolution", "mapping", "synthesis"):
            if not hasattr(G, attr):
                raise ValueError(
                    f"the network has no attribute '{attr}'; expected an official StyleGAN "
                    "generator (the 'G_ema' entry of a network pickle)"
                )
        self.G = G
        self.z_dim = int(G.z_dim)
        self.c_dim = int(G.c_dim)
        self.w_dim = int(G.w_dim)
        self.num_ws = int(G.num_ws)
        self.resolution = int(G.img_resolution)
        self.num_classes = self.c_dim if self.c_dim > 0 else 1
        self.force_fp32 = force_fp32

        w_avg = getattr(G.mapping, "w_avg", None)
        if w_avg is not None and w_avg.ndim == 2:
            if tuple(w_avg.shape) != (self.c_dim, self.w_dim):
                raise ValueError(
                    f"mapping.w_avg has shape {tuple(w_avg.shape)}; a per-class centre needs "
                    f"[c_dim, w_dim] = [{self.c_dim}, {self.w_dim}]"
                )
            self.variant = "xl"
        else:
            if w_avg is not None and tuple(w_avg.shape) != (self.w_dim,):
                raise ValueError(
                    f"mapping.w_avg has shape {tuple(w_avg.shape)}; expected [{self.w_dim}] "
                    f"or [{self.c_dim}, {self.w_dim}]"
                )
            self.variant = "global"

        if truncation_cutoff is not None:
            if isinstance(truncation_cutoff, bool) or not isinstance(truncation_cutoff, int):
                raise ValueError(f"truncation_cutoff must be an int or None, got {truncation_cutoff!r}")
            if truncation_cutoff < self.num_ws:
                raise ValueError(
                    f"truncation_cutoff={truncation_cutoff} would truncate only the first "
                    f"{truncation_cutoff} of the network's {self.num_ws} w rows; linking uses one w "
                    "per sample for all rows, so leave truncation_cutoff unset (all rows truncated)"
                )
        self.truncation_cutoff = truncation_cutoff
        self.class_names = self._names(class_names)
        self.G.eval().requires_grad_(False)

    def _names(self, names: Sequence[str] | Mapping[int, str] | None) -> tuple[str, ...]:
        if names is not None and not isinstance(names, str) and self.c_dim == 0 and len(names) > 1:
            raise ValueError(
                f"class_names lists {len(names)} classes but the network is unconditional "
                "(c_dim = 0): class-conditional linking needs a class-conditional pickle"
            )
        return resolve_class_names(names, self.num_classes)

    # ------------------------------------------------------------------ helpers

    @property
    def device(self) -> torch.device:
        for t in self.G.parameters():
            return t.device
        for t in self.G.buffers():
            return t.device
        return torch.device("cpu")

    def train(self, mode: bool = True) -> "StyleGAN":
        """The wrapped network always stays in eval mode: StyleGAN2-ADA's mapping
        updates ``w_avg`` in training mode."""
        super().train(mode)
        self.G.eval()
        return self

    # ------------------------------------------------------------------ latents

    def sample_z(self, seeds: Sequence[int]) -> torch.Tensor:
        """z [N, z_dim] float32 on the CPU, one per seed: ``RandomState(seed).randn(z_dim)``,
        so a seed's z does not depend on its batch, and equals the z the official
        ``gen_images.py`` draws for that seed."""
        rows = []
        for s in check_seeds(seeds):
            rows.append(np.random.RandomState(int(s)).randn(self.z_dim))
        if not rows:
            return torch.empty(0, self.z_dim)
        return torch.from_numpy(np.stack(rows).astype(np.float32))

    def _classes(self, classes: torch.Tensor | Sequence[int], batch: int) -> torch.Tensor:
        what = "the network's classes" if self.c_dim > 0 else "an unconditional network (only class 0)"
        return check_classes(classes, batch, self.num_classes, what)

    def mapping(
        self, z: torch.Tensor, classes: torch.Tensor, truncation_psi: float = 1.0
    ) -> torch.Tensor:
        """``z`` [B, z_dim], ``classes`` long [B] -> ``w`` [B, w_dim] (float32, on the
        network's device). Truncation: ``w = centre + psi (w - centre)`` with
        ``centre = w_avg[class]`` (xl) or ``w_avg`` (global); psi = 0 gives the centre."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor of shape [B, {self.z_dim}], got {shape}")
        psi = float(truncation_psi)
        if not np.isfinite(psi):
            raise ValueError(f"truncation_psi must be finite, got {truncation_psi!r}")
        device = self.device
        classes = self._classes(classes, z.shape[0]).to(device)
        z = z.to(device=device, dtype=torch.float32)
        if self.c_dim > 0:
            c = torch.nn.functional.one_hot(classes, self.c_dim).to(torch.float32)
        else:
            c = torch.zeros(z.shape[0], 0, device=device)
        ws = self.G.mapping(z, c, truncation_psi=1, truncation_cutoff=None)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise RuntimeError(
                f"G.mapping returned shape {tuple(ws.shape)}, expected [B, {self.num_ws}, {self.w_dim}]"
            )
        w = ws[:, 0].to(torch.float32)
        if psi != 1.0:
            w_avg = getattr(self.G.mapping, "w_avg", None)
            if w_avg is None:
                raise ValueError("truncation_psi != 1 needs mapping.w_avg, which this network lacks")
            centre = (w_avg[classes] if self.variant == "xl" else w_avg[None]).to(torch.float32)
            w = centre + psi * (w - centre)
        return w

    # ------------------------------------------------------------------ images

    def _ws(self, w: torch.Tensor) -> torch.Tensor:
        if not isinstance(w, torch.Tensor) or w.ndim != 2 or w.shape[1] != self.w_dim:
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"w must be a tensor of shape [B, {self.w_dim}], got {shape}")
        w = w.to(device=self.device, dtype=torch.float32)
        return w[:, None, :].repeat(1, self.num_ws, 1)

    def _synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        force_fp32 = self.force_fp32 if self.force_fp32 is not None else ws.device.type == "cpu"
        return self.G.synthesis(ws, noise_mode="const", force_fp32=force_fp32)

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` [B, w_dim] -> images float32 [B, 3, H, W], about [-1, 1] (not clamped),
        with constant noise, so the same w always gives the same image."""
        return self._synthesis(self._ws(w)).to(torch.float32)

    def render(self, w: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Images; a learned generator knows no ground truth."""
        return self.synthesize(w), None

    # ------------------------------------------------------------------ features

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Names of ``G.synthesis``'s direct children, in the order they run:
        ``input``, ``L0_...``, ... (StyleGAN3 / XL) or ``b4``, ``b8``, ... (StyleGAN2-ADA)."""
        return tuple(name for name, _ in self.G.synthesis.named_children())

    @staticmethod
    def feature_margin(layer: nn.Module, height: int, width: int) -> tuple[int, int]:
        """Pixels to crop from (top and bottom, left and right) of a ``height x width``
        output of ``layer``.

        StyleGAN3 / StyleGAN-XL layers compute their map on ``sampling_rate`` pixels
        across the image plus a margin (``SynthesisNetwork.margin_size``, 10 px) on
        every side; the image itself is the central ``sampling_rate`` pixels. The
        sampling rate is ``out_sampling_rate`` for a ``SynthesisLayer`` and
        ``sampling_rate`` for ``SynthesisInput``; the crop is
        ``(size - sampling_rate) / 2`` on each side, which is 0 for the last layers
        (already at ``img_resolution``). Layers without a sampling rate (StyleGAN2-ADA
        blocks) have no margin.
        """
        rate = getattr(layer, "out_sampling_rate", None)
        if rate is None:
            rate = getattr(layer, "sampling_rate", None)
        if rate is None:
            return 0, 0
        rate = float(np.asarray(rate).reshape(-1)[0])
        margins = []
        for size in (height, width):
            extra = size - rate
            if extra < 0 or extra != int(extra) or int(extra) % 2:
                raise RuntimeError(
                    f"cannot crop a {height}x{width} map of {type(layer).__name__} to its "
                    f"sampling rate {rate:g}: the margin must be a whole number of pixels per side"
                )
            margins.append(int(extra) // 2)
        return margins[0], margins[1]

    def features(self, w: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Intermediate synthesis maps for ``w`` [B, w_dim], keyed by layer name.

        One synthesis pass with forward hooks on the chosen children of
        ``G.synthesis`` (all of them by default, see ``feature_layers``). A child that
        returns a tuple (StyleGAN2-ADA blocks return ``(x, img)``) contributes its
        first element. Each map is cropped of its margin (``feature_margin``), so it
        covers exactly the image, and returned as float32 [B, C, h, w].
        """
        children = dict(self.G.synthesis.named_children())
        names = list(children) if layers is None else list(layers)
        unknown = [n for n in names if n not in children]
        if unknown:
            raise ValueError(
                f"unknown synthesis layer(s) {unknown}; available: {', '.join(children)}"
            )
        captured: dict[str, torch.Tensor] = {}

        def hook(name: str) -> Callable[..., None]:
            def record(module: nn.Module, args: Any, output: Any) -> None:
                out = output[0] if isinstance(output, (tuple, list)) else output
                if isinstance(out, torch.Tensor) and out.ndim == 4:
                    captured[name] = out

            return record

        handles = [children[n].register_forward_hook(hook(n)) for n in names]
        try:
            self._synthesis(self._ws(w))
        finally:
            for h in handles:
                h.remove()
        result = {}
        for name in names:
            if name not in captured:
                raise RuntimeError(f"synthesis layer '{name}' produced no [B, C, H, W] map")
            x = captured[name]
            my, mx = self.feature_margin(children[name], x.shape[2], x.shape[3])
            result[name] = x[:, :, my : x.shape[2] - my, mx : x.shape[3] - mx].to(torch.float32).contiguous()
        return result


# --------------------------------------------------------------------------- checkout


def _location(module: ModuleType) -> Path | None:
    path = getattr(module, "__file__", None)
    if path is None:
        paths = list(getattr(module, "__path__", []) or [])
        path = paths[0] if paths else None
    return Path(path).resolve() if path else None


def _check_repo(repo: str | Path) -> Path:
    hint = (
        "generator.repo must be a local checkout of the repository the pickle was trained with, "
        f"e.g. `git clone {REPO_URLS['StyleGAN-XL']}` (or {REPO_URLS['StyleGAN3']}, "
        f"{REPO_URLS['StyleGAN2-ADA']})"
    )
    root = Path(repo).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"StyleGAN repository checkout not found: {root}. {hint}")
    if not root.is_dir():
        raise NotADirectoryError(f"StyleGAN repository checkout is not a directory: {root}. {hint}")
    missing = [rel for rel in _REQUIRED if not (root / rel).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{root} is not a StyleGAN checkout: missing {', '.join(missing)} "
            f"(needed to import legacy.load_network_pkl). {hint}"
        )
    return root.resolve()


def _top_level_names(root: Path) -> set[str]:
    names = {p.stem for p in root.glob("*.py")}
    names |= {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return names


def _checkout_root(module: ModuleType) -> Path | None:
    """The folder holding a top-level module or package, if that folder is a StyleGAN
    checkout (has legacy.py and torch_utils/)."""
    where = _location(module)
    if where is None:
        return None
    folder = where.parent.parent if where.name == "__init__.py" else where.parent
    if (folder / "legacy.py").is_file() and (folder / "torch_utils").is_dir():
        return folder
    return None


def _release_other_checkout(root: Path) -> None:
    """Drop cached modules of another StyleGAN checkout that would shadow this one's
    top-level modules (``legacy``, ``dnnlib``, ``torch_utils``, ``training``, ...)."""
    names = _top_level_names(root)
    stale = []
    for key in list(sys.modules):
        top = key.split(".", 1)[0]
        module = sys.modules.get(top)
        if top not in names or module is None:
            continue
        other = _checkout_root(module)
        if other is not None and other != root:
            stale.append(key)
    if stale:
        tops = sorted({k.split(".", 1)[0] for k in stale})
        warnings.warn(
            f"replacing already imported modules {', '.join(tops)} (from another StyleGAN "
            f"checkout) with those of {root}; networks loaded from the other checkout keep "
            "working but can no longer be pickled",
            RuntimeWarning,
            stacklevel=4,
        )
        for key in stale:
            del sys.modules[key]


@contextlib.contextmanager
def official_modules(repo: str | Path) -> Iterator[ModuleType]:
    """Import the checkout's ``legacy`` (with ``dnnlib`` and ``torch_utils``) and yield it.

    The checkout is at the front of ``sys.path`` inside the ``with`` block only;
    ``sys.path`` is restored exactly afterwards.
    """
    root = _check_repo(repo)
    _release_other_checkout(root)
    saved = list(sys.path)
    sys.path.insert(0, str(root))
    try:
        try:
            legacy = importlib.import_module("legacy")
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            hint = ""
            if missing == "distutils":
                hint = " (Python >= 3.12 has no distutils: `pip install setuptools` provides it)"
            raise ImportError(
                f"importing legacy.py from {root} failed: {exc}{hint}. Install the checkout's "
                "own requirements (e.g. click, scipy; see its environment.yml) in this environment",
                name=getattr(exc, "name", None),
            ) from exc
        where = _location(legacy)
        if where is None or where.parent != root:
            raise ImportError(f"imported 'legacy' from {where}, not from the checkout {root}")
        if not callable(getattr(legacy, "load_network_pkl", None)):
            raise ImportError(f"{root / 'legacy.py'} has no load_network_pkl(f)")
        yield legacy
    finally:
        sys.path[:] = saved


# --------------------------------------------------------------------------- unpickling


class _Skipped:
    """Stands for whatever could not be rebuilt while unpickling tolerantly."""

    what = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<skipped {self.what}>"


def _skipped_type(what: str) -> type:
    return type("_Skipped", (_Skipped,), {"what": what})


class _TolerantMixin:
    """Unpickles a network pickle, replacing what cannot be rebuilt by ``_Skipped``.

    Official networks are ``torch_utils.persistence`` objects: each is pickled as a
    call to ``_reconstruct_persistent_obj(meta)``, whose ``meta`` carries the source
    of the defining module; rebuilding exec()s that source, which is where
    StyleGAN-XL's discriminator fails (it imports timm / CLIP). Every such call, and
    every class that cannot be imported, is wrapped: a failure yields a placeholder
    and is recorded. Whether the placeholders stay out of G_ema is checked afterwards.
    Mixed in front of the checkout's ``legacy._LegacyUnpickler`` where it has one.
    """

    failures: list[str]

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return lambda b: torch.load(io.BytesIO(b), map_location="cpu", weights_only=False)
        try:
            found = super().find_class(module, name)  # type: ignore[misc]
        except (ImportError, AttributeError) as exc:
            self.failures.append(f"{module}.{name}: {type(exc).__name__}: {exc}")
            return _skipped_type(f"{module}.{name}")
        if (module, name) == _PERSISTENT_RECONSTRUCT:
            return self._guarded(found)
        return found

    def _guarded(self, reconstruct: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def rebuild(meta: Any) -> Any:
            try:
                return reconstruct(meta)
            except Exception as exc:  # noqa: BLE001 - any failure of this object's code
                cls = meta.get("class_name", "?") if isinstance(meta, dict) else "?"
                self.failures.append(f"persistent class {cls}: {type(exc).__name__}: {exc}")
                return _skipped_type(f"persistent class {cls}")()

        return rebuild


def _tolerant_unpickler(file: Any, legacy: ModuleType) -> Any:
    base = getattr(legacy, "_LegacyUnpickler", None)
    if not (isinstance(base, type) and issubclass(base, pickle.Unpickler)):
        base = pickle.Unpickler
    unpickler = type("TolerantUnpickler", (_TolerantMixin, base), {})(file)
    unpickler.failures = []
    return unpickler


def _skipped_inside(root: Any) -> list[str]:
    """Placeholders reachable from ``root`` through attributes and containers."""
    found: list[str] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (torch.Tensor, np.ndarray, str, bytes, int, float)):
            continue
        seen.add(id(obj))
        if isinstance(obj, _Skipped) or (isinstance(obj, type) and issubclass(obj, _Skipped)):
            found.append(repr(obj) if isinstance(obj, _Skipped) else f"<skipped {obj.what}>")
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, ModuleType)):
            stack.extend(vars(obj).values())
    return found


def _pickle_urls(root: Path | None) -> list[str]:
    if root is None:
        return []
    urls: list[str] = []
    for readme in sorted(root.glob("README*")):
        try:
            text = readme.read_text(errors="replace")
        except OSError:
            continue
        for url in re.findall(r"https?://[^\s)\"'<>`]+?\.pkl\b", text):
            if url not in urls:
                urls.append(url)
    return urls


def _check_pickle(pickle_path: str | Path, repo: str | Path | None) -> Path:
    path = Path(pickle_path).expanduser()
    if path.is_file():
        return path
    root = Path(repo).expanduser() if repo is not None else None
    urls = _pickle_urls(root) if root is not None and root.is_dir() else []
    where = (
        "the official pretrained pickles are listed, with their download URLs, in the README of "
        f"the checkout's repository ({', '.join(REPO_URLS.values())})"
    )
    if urls:
        shown = "\n  ".join(urls[:12]) + ("\n  ..." if len(urls) > 12 else "")
        where = f"the checkout's README lists these official pickles:\n  {shown}"
    kind = "is a directory, not a file" if path.is_dir() else "not found"
    raise FileNotFoundError(
        f"StyleGAN network pickle {kind}: {path}. generator.pickle must name a network pickle "
        "written by the official training code (a dict holding 'G_ema'); "
        f"{where}. Download one yourself (linkstyle never downloads) and point generator.pickle at it."
    )


def _summary(failures: Sequence[str], keep: int = 3) -> str:
    shown = "; ".join(failures[:keep])
    return shown + (f"; and {len(failures) - keep} more" if len(failures) > keep else "")


def _missing_module(exc: BaseException | None) -> str | None:
    """The module a failed load could not import, anywhere in the exception's chain; None if none."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            return exc.name
        exc = exc.__cause__ or exc.__context__
    return None


def _read_network(path: Path, legacy: ModuleType, *, converting: bool = False) -> dict[str, Any]:
    """The pickle's dict via ``legacy.load_network_pkl``; if that raises, read again with
    the tolerant unpickler and keep the result only if G_ema came through whole."""
    try:
        with open(path, "rb") as f:
            data = legacy.load_network_pkl(f)
        official_error: BaseException | None = None
    except Exception as exc:  # noqa: BLE001 - retried below, reported if that fails too
        official_error = exc
    if official_error is None:
        if not isinstance(data, dict) or "G_ema" not in data:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"{path} holds no 'G_ema' generator (found {keys}); is it a StyleGAN network pickle?"
            )
        return data

    reason = f"{type(official_error).__name__}: {official_error}"
    # A module that neither this environment nor the checkout has: the environment is the root cause
    # (not the file), and it must lead the message, before the KeyErrors of the half-executed modules
    # that torch_utils.persistence caches. Only if G_ema cannot be rebuilt: a discriminator's needs are skipped.
    missing = _missing_module(official_error)
    checkout = Path(getattr(legacy, "__file__", ".")).parent
    if missing is not None and ((checkout / missing.split(".")[0]).exists() or (checkout / f"{missing.split('.')[0]}.py").exists()):
        missing = None  # a module of the checkout itself: an incomplete checkout, not the environment
    lacks = (
        f"this Python environment lacks the module '{missing}', which the official code imports while it "
        "rebuilds the network; install it (`pip install -e '.[stylegan]'` brings pkg_resources, click and "
        "requests) and run again: the file itself may be fine. "
        if missing is not None else ""
    )
    elsewhere = (
        "On a machine where legacy.load_network_pkl reads this pickle (for StyleGAN-XL: "
        "timm==0.4.12 and the checkout's requirements installed), run "
        f"`linkstyle convert-stylegan {path} OUT.pkl --repo CHECKOUT`, which keeps only G_ema, "
        "and point generator.pickle at OUT.pkl"
    )
    try:
        with open(path, "rb") as f:
            unpickler = _tolerant_unpickler(f, legacy)
            data = unpickler.load()
    except (pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(
            f"{path} is not a readable pickle ({type(exc).__name__}: {exc}); is it a StyleGAN "
            "network pickle, completely downloaded?"
        ) from official_error
    except Exception as exc:
        raise StyleGANLoadError(
            f"cannot load {path}: {lacks}legacy.load_network_pkl failed ({reason}), and so did reading "
            f"G_ema alone ({type(exc).__name__}: {exc}). {'' if lacks else elsewhere}"
        ) from official_error
    if not isinstance(data, dict) or "G_ema" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} holds no 'G_ema' generator (found {keys}); is it a StyleGAN network pickle?"
        ) from official_error
    G = data["G_ema"]
    broken = _skipped_inside(G) if isinstance(G, nn.Module) else [repr(G)]
    if broken:
        raise StyleGANLoadError(
            f"cannot load {path}: {lacks}G_ema itself could not be rebuilt "
            f"({_summary(unpickler.failures or broken)}); legacy.load_network_pkl "
            f"said: {reason}." + ("" if lacks else f" Install what is missing, or: {elsewhere}")
        ) from official_error
    skipped = sorted(str(k) for k, v in data.items() if k != "G_ema" and _skipped_inside(v))
    advice = (
        ""
        if converting
        else f" To skip this step on every load, run `linkstyle convert-stylegan {path} OUT.pkl --repo CHECKOUT` "
        "once and point generator.pickle at OUT.pkl."
    )
    warnings.warn(
        f"{path}: legacy.load_network_pkl failed ({reason}); read G_ema alone"
        + (f", skipping {', '.join(skipped)} ({_summary(unpickler.failures)})" if skipped else "")
        + "."
        + advice,
        RuntimeWarning,
        stacklevel=3,
    )
    return data


def load_stylegan(
    pickle_path: str | Path,
    repo: str | Path,
    *,
    device: torch.device | str = "cpu",
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    truncation_cutoff: int | None = None,
    force_fp32: bool | None = None,
) -> StyleGAN:
    """Load ``G_ema`` of an official network pickle, using the checkout ``repo``.

    Tries ``legacy.load_network_pkl`` first. If that raises (typically StyleGAN-XL's
    discriminator, which needs timm==0.4.12 and CLIP files), the pickle is read again
    with an unpickler that replaces whatever fails to rebuild by a placeholder; the
    result is used, with a warning, only if no placeholder ended up inside G_ema,
    otherwise ``StyleGANLoadError`` says to run ``linkstyle convert-stylegan IN OUT``
    where the official loader works. Without ``class_names``, a StyleGAN-XL checkout's
    ``media/imagenet_idx2labels.txt`` names the classes when it has ``c_dim`` entries (else
    ``class_names.fallback_names``: ImageNet's for 1,000 classes).
    """
    path = _check_pickle(pickle_path, repo)
    with official_modules(repo) as legacy:
        root = Path(legacy.__file__).resolve().parent
        data = _read_network(path, legacy)
        custom_ops_fallback()
    G = data["G_ema"]
    if not isinstance(G, nn.Module):
        raise ValueError(f"{path}: G_ema is a {type(G).__name__}, not a torch.nn.Module")
    G = G.eval().requires_grad_(False).to(device)
    if class_names is None:
        class_names = checkout_names(root, int(getattr(G, "c_dim", 0)))
    return StyleGAN(G, class_names=class_names, truncation_cutoff=truncation_cutoff, force_fp32=force_fp32)


def convert_stylegan(in_pickle: str | Path, out_pickle: str | Path, repo: str | Path) -> Path:
    """Write a copy of a network pickle that holds only what generating needs.

    The output dict is ``{"G_ema": G_ema, "G": G_ema, "D": torch.nn.Module(),
    "training_set_kwargs": <kept, or None>, "augment_pipe": None, "linkstyle_note": ...}``:
    ``G`` is the same object as ``G_ema`` (pickled once) and ``D`` an empty module, only
    so that the official ``legacy.load_network_pkl`` (which asserts ``G`` and, in
    StyleGAN2-ADA / StyleGAN3, ``D`` are modules) still reads the file. It is for
    generating only, not for resuming training. Written to a temporary file next to
    ``out_pickle`` and renamed into place.
    """
    src = _check_pickle(in_pickle, repo)
    out = Path(out_pickle).expanduser()
    if out.resolve() == src.resolve():
        raise ValueError(f"convert_stylegan would overwrite its input {src}; choose another output path")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    with official_modules(repo) as legacy:
        data = _read_network(src, legacy, converting=True)
        G = data["G_ema"]
        if not isinstance(G, nn.Module):
            raise ValueError(f"{src}: G_ema is a {type(G).__name__}, not a torch.nn.Module")
        kwargs = data.get("training_set_kwargs")
        if kwargs is not None and (not isinstance(kwargs, dict) or _skipped_inside(kwargs)):
            kwargs = None
        slim = {
            "G_ema": G,
            "G": G,
            "D": nn.Module(),
            "training_set_kwargs": kwargs,
            "augment_pipe": None,
            "linkstyle_note": f"G_ema of {src.name} only (G aliases G_ema, D is empty): for generating, not training",
        }
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                pickle.dump(slim, f, protocol=4)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
    return out


# --------------------------------------------------------------------------- custom ops


def custom_ops_fallback(*, force_reference: bool = False) -> list[str]:
    """Make the checkout's custom CUDA ops fall back to their reference code.

    In ``torch_utils/ops/{bias_act,upfirdn2d,filtered_lrelu}.py`` each public op
    (default ``impl='cuda'``) takes the CUDA path only when
    ``impl == 'cuda' and x.device.type == 'cuda' and _init()``, where the module-level
    ``_init()`` compiles the plugin on first use. StyleGAN2-ADA's ``_init`` already
    catches a failed build, warns and returns False; StyleGAN3's and StyleGAN-XL's
    let the build error propagate, so the first GPU forward raises. This replaces
    each imported module's ``_init`` by a wrapper that returns False (with one
    RuntimeWarning) if the original raises, and keeps returning False without
    retrying; the op then runs its ``_*_ref`` implementation (``filtered_lrelu``'s
    reference is built from ``bias_act`` and ``upfirdn2d``, which fall back too).
    ``force_reference=True`` skips compiling altogether.

    Limits: only the ``torch_utils`` currently in ``sys.modules`` is patched (call
    it after ``official_modules``; ``load_stylegan`` does); a build that hangs on a
    stale lock in the torch extensions folder, or a plugin that builds but then
    fails inside a kernel (e.g. no kernel image for this GPU), is not caught; the
    reference ops are much slower and use more memory. On the CPU nothing changes:
    the ops never call ``_init()`` there. Returns the names of the ops wrapped.
    """
    wrapped = []
    if "torch_utils" not in sys.modules:
        return wrapped
    for op in _CUSTOM_OPS:
        try:
            module = importlib.import_module(f"torch_utils.ops.{op}")
        except ImportError:
            continue
        init = getattr(module, "_init", None)
        if not callable(init):
            continue
        if getattr(init, "_linkstyle_fallback", False):
            init._linkstyle_state["failed"] |= force_reference  # type: ignore[attr-defined]
        else:
            module._init = _fallback_init(op, init, force_reference)  # type: ignore[attr-defined]
        wrapped.append(op)
    return wrapped


def _fallback_init(op: str, original: Callable[[], Any], force_reference: bool) -> Callable[[], bool]:
    state = {"failed": force_reference}

    def _init() -> bool:
        if state["failed"]:
            return False
        try:
            return bool(original())
        except Exception as exc:  # noqa: BLE001 - any build failure means: use the reference op
            state["failed"] = True
            warnings.warn(
                f"the custom CUDA op '{op}' failed to build ({type(exc).__name__}: {exc}); "
                "falling back to its slow reference implementation",
                RuntimeWarning,
                stacklevel=2,
            )
            return False

    _init._linkstyle_fallback = True  # type: ignore[attr-defined]
    _init._linkstyle_state = state  # type: ignore[attr-defined]
    _init.__wrapped__ = original  # type: ignore[attr-defined]
    return _init
