"""BigGAN (pytorch-pretrained-BigGAN, the ``biggan-deep-*`` generators) behind the Generator protocol.

The package's ``BigGAN.forward(z, class_vector, truncation)`` computes
``cond = cat(z, embeddings(class_vector))`` and ``generator(cond, truncation)``. The
linked space ``w`` is that conditioning vector, so ``w_dim = z_dim + z_dim`` (the
package's generator takes ``2 * z_dim`` inputs; ``config.class_embed_dim`` is unused):

* ``w[:, :z_dim]``  = ``psi * z`` (the scaled noise),
* ``w[:, z_dim:]``  = ``embeddings(one_hot(class))`` (the class embedding),

and ``synthesize(w)`` is ``generator(w, truncation=self.truncation)``.

Truncation has two parts in BigGAN. ``sample_z`` draws z from a normal truncated to
[-2, 2] (the package's ``truncated_noise_sample``, one RandomState per seed);
``mapping(..., truncation_psi)`` scales it by psi (psi = 0 gives the class's centre
``cat(0, embedding)``), exactly as the package's sampler does. The generator's own
``truncation`` argument picks the pre-computed batch-norm statistics; it is not part
of ``w``, so it is fixed per adapter (``truncation``, in (0, 1]). The official recipe
uses the same value for both: load with ``truncation=psi`` and map with that psi.
A different psi still works (z scaled by psi, statistics for ``truncation``).

Weights are read only from a local folder holding ``config.json`` and
``pytorch_model.bin``; the package's shortcut names (``biggan-deep-256`` ...) would
download, so they are never passed to it. Nothing here downloads anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import LinkstyleError
from .base import check_classes, check_seeds, resolve_class_names

__all__ = ["BigGAN", "BigGANLoadError", "biggan_asset", "load_biggan", "OFFICIAL_WEIGHTS"]

WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
_S3 = "https://s3.amazonaws.com/models.huggingface.co/biggan"
# Where the official weights come from (the package's README); printed, never fetched.
OFFICIAL_WEIGHTS = {
    name: (f"{_S3}/{name}-{WEIGHTS_NAME}", f"{_S3}/{name}-{CONFIG_NAME}")
    for name in ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")
}


def _source_hint() -> str:
    lines = [
        f"  {name}: {weights} and {config}, saved as {WEIGHTS_NAME} and {CONFIG_NAME}"
        for name, (weights, config) in OFFICIAL_WEIGHTS.items()
    ]
    return (
        f"generator.weights_dir must be a local folder holding {CONFIG_NAME} and {WEIGHTS_NAME} "
        "of a pytorch-pretrained-BigGAN model; the official ones (download them yourself, "
        "linkstyle never does) are:\n" + "\n".join(lines)
    )


class BigGANLoadError(LinkstyleError, RuntimeError):
    """BigGAN weights that do not fit the network their config.json describes."""


def _package() -> Any:
    try:
        import pytorch_pretrained_biggan
    except ImportError as exc:  # boto3 / requests are imported by the package too
        raise ImportError(
            "generator kind 'biggan' needs the package pytorch-pretrained-biggan "
            f"(pip install 'pytorch-pretrained-biggan>=0.1.1'): {exc}"
        ) from exc
    return pytorch_pretrained_biggan


# --------------------------------------------------------------------------- adapter


class BigGAN(nn.Module):
    """A pytorch-pretrained-BigGAN ``BigGAN`` model as a linkstyle Generator.

    ``z_dim`` and ``num_classes`` come from the model's config, ``w_dim = 2 * z_dim``,
    ``num_ws = 1``, and ``resolution = 4 * 2 ** (number of up-sampling layers)``.
    ``truncation``: the generator's batch-norm truncation, in (0, 1] (see the module
    docstring). ``class_names``: ``num_classes`` names, or ``{index: name}`` for some.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        truncation: float = 1.0,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
    ) -> None:
        super().__init__()
        for attr in ("config", "embeddings", "generator"):
            if not hasattr(model, attr):
                raise ValueError(
                    f"the model has no attribute '{attr}'; expected a pytorch_pretrained_biggan.BigGAN"
                )
        cfg = model.config
        self.model = model
        self.z_dim = int(cfg.z_dim)
        self.num_classes = int(cfg.num_classes)
        self.w_dim = 2 * self.z_dim
        self.num_ws = 1
        ups = sum(1 for layer in cfg.layers if bool(layer[0]))
        self.resolution = 4 * 2**ups
        declared = getattr(cfg, "output_dim", None)
        if declared is not None and int(declared) != self.resolution:
            raise ValueError(
                f"config output_dim is {declared} but its layers up-sample 4 px to {self.resolution} px"
            )
        emb = tuple(model.embeddings.weight.shape)
        if emb != (self.z_dim, self.num_classes):
            raise ValueError(
                f"embeddings weight has shape {emb}, expected [z_dim, num_classes] = "
                f"[{self.z_dim}, {self.num_classes}]"
            )
        self.truncation = self._check_truncation(truncation)
        self.class_names = self._names(class_names)
        self.model.eval().requires_grad_(False)

    @staticmethod
    def _check_truncation(value: float) -> float:
        if isinstance(value, bool):
            raise ValueError(f"truncation must be a number in (0, 1], got {value!r}")
        t = float(value)
        if not (math.isfinite(t) and 0.0 < t <= 1.0):
            raise ValueError(
                f"truncation must be in (0, 1] (BigGAN has batch-norm statistics only there), got {value!r}"
            )
        return t

    def _names(self, names: Sequence[str] | Mapping[int, str] | None) -> tuple[str, ...]:
        return resolve_class_names(names, self.num_classes)

    @property
    def device(self) -> torch.device:
        return self.model.embeddings.weight.device

    def train(self, mode: bool = True) -> "BigGAN":
        """The wrapped network always stays in eval mode: in training mode its spectral
        norms run a power iteration on every forward and change the weights."""
        super().train(mode)
        self.model.eval()
        return self

    # ------------------------------------------------------------------ latents

    def sample_z(self, seeds: Sequence[int]) -> torch.Tensor:
        """z [N, z_dim] float32 on the CPU, one per seed: the package's
        ``truncated_noise_sample(1, z_dim, truncation=1, seed=seed)`` (a normal truncated
        to [-2, 2], from ``RandomState(seed)``), so a seed's z does not depend on its batch.
        ``mapping`` applies psi."""
        utils = _package().utils
        rows = []
        for s in check_seeds(seeds):
            rows.append(utils.truncated_noise_sample(batch_size=1, dim_z=self.z_dim, truncation=1.0, seed=int(s))[0])
        if not rows:
            return torch.empty(0, self.z_dim)
        return torch.from_numpy(np.stack(rows).astype(np.float32))

    def _classes(self, classes: torch.Tensor | Sequence[int], batch: int) -> torch.Tensor:
        return check_classes(classes, batch, self.num_classes)

    def mapping(
        self, z: torch.Tensor, classes: torch.Tensor, truncation_psi: float = 1.0
    ) -> torch.Tensor:
        """``z`` [B, z_dim], ``classes`` long [B] -> ``w = cat(psi * z, embeddings(one_hot(classes)))``
        [B, 2 * z_dim] (float32, on the network's device). ``psi`` must be finite and >= 0;
        psi = 0 gives the class centre ``cat(0, embedding)``."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor of shape [B, {self.z_dim}], got {shape}")
        psi = float(truncation_psi)
        if not (math.isfinite(psi) and psi >= 0):
            raise ValueError(f"truncation_psi must be finite and >= 0, got {truncation_psi!r}")
        device = self.device
        classes = self._classes(classes, z.shape[0]).to(device)
        one_hot = torch.nn.functional.one_hot(classes, self.num_classes).to(torch.float32)
        embed = self.model.embeddings(one_hot)
        return torch.cat((psi * z.to(device=device, dtype=torch.float32), embed), dim=1).to(torch.float32)

    # ------------------------------------------------------------------ images

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` [B, w_dim] -> images float32 [B, 3, H, W] in [-1, 1] (tanh):
        ``generator(w, truncation)``, what the package's forward does after building ``w``."""
        if not isinstance(w, torch.Tensor) or w.ndim != 2 or w.shape[1] != self.w_dim:
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"w must be a tensor of shape [B, {self.w_dim}], got {shape}")
        w = w.to(device=self.device, dtype=torch.float32)
        return self.model.generator(w, self.truncation).to(torch.float32)

    def render(self, w: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Images; a learned generator knows no ground truth."""
        return self.synthesize(w), None


# --------------------------------------------------------------------------- loading


def _files(weights_dir: str | Path) -> tuple[Path, Path, Path]:
    root = Path(weights_dir).expanduser()
    return root, root / CONFIG_NAME, root / WEIGHTS_NAME


def load_biggan(
    weights_dir: str | Path,
    *,
    device: torch.device | str = "cpu",
    truncation: float = 1.0,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
) -> BigGAN:
    """A :class:`BigGAN` from the local folder ``weights_dir`` (``config.json`` +
    ``pytorch_model.bin``, as ``BigGAN.from_pretrained(folder)`` reads it).

    Unlike ``from_pretrained`` (``strict=False``, silently keeping random weights for
    missing keys), the state dict must match the config's network exactly; a mismatch
    raises :class:`BigGANLoadError` listing the keys. The file is read with
    ``torch.load(weights_only=True)``. Never downloads.
    """
    root, config_file, weights_file = _files(weights_dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "not found"
        raise FileNotFoundError(f"BigGAN weights folder {what}: {root}.\n{_source_hint()}")
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"BigGAN weights folder {root} has no {f.name} (missing {f}).\n{_source_hint()}")
    pkg = _package()
    try:
        config = pkg.BigGANConfig.from_json_file(str(config_file))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BigGANLoadError(f"{config_file} is not a valid BigGAN config.json: {exc}") from exc
    try:
        model = pkg.BigGAN(config)
    except Exception as exc:  # noqa: BLE001 - bad layer tuples and the like
        raise BigGANLoadError(f"{config_file} does not describe a buildable BigGAN: {exc}") from exc
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise BigGANLoadError(f"cannot read {weights_file} as a torch state dict: {exc}") from exc
    if not isinstance(state, Mapping):
        raise BigGANLoadError(f"{weights_file} holds a {type(state).__name__}, not a state dict")
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise BigGANLoadError(
            f"{weights_file} does not match the network of {config_file}: " + "; ".join(parts)
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise BigGANLoadError(f"{weights_file} does not match the network of {config_file}: {exc}") from exc
    model = model.eval().requires_grad_(False).to(device)
    return BigGAN(model, truncation=truncation, class_names=class_names)


def biggan_asset(weights_dir: str | Path) -> dict[str, Any]:
    """What the weights are, where, whether present, where they come from (for
    ``linkstyle doctor``): never downloads, never reads the weights."""
    root, config_file, weights_file = _files(weights_dir)
    return {
        "what": f"pytorch-pretrained-BigGAN weights ({CONFIG_NAME} + {WEIGHTS_NAME})",
        "path": str(root),
        "present": config_file.is_file() and weights_file.is_file(),
        "source": "; ".join(f"{name}: {w} + {c}" for name, (w, c) in OFFICIAL_WEIGHTS.items())
        + f" (save them in the folder as {WEIGHTS_NAME} and {CONFIG_NAME})",
    }
