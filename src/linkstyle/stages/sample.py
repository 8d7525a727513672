"""Sample latents per (class, shard): a fixed block of distinct seeds, so it always terminates."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import LinkstyleError
from ..generators.base import Generator
from ..io import write_npz
from ..runtime import batches
from ..seeds import sample_seeds
from .context import Context


def shard_range(per_class: int, per_shard: int, shard: int) -> tuple[int, int]:
    start = shard * per_shard
    if not 0 <= start < per_class:
        raise LinkstyleError(
            f"sample shard {shard} out of range: {per_class} samples per class in shards of {per_shard} "
            f"are shards 0..{-(-per_class // per_shard) - 1} (config keys sample.per_class, sample.per_shard)"
        )
    return start, min(per_class, start + per_shard)


@torch.inference_mode()
def map_latents(gen: Generator, z: torch.Tensor, cls: int, *, psi: float, batch_size: int,
                device: torch.device) -> torch.Tensor:
    """``z`` of one class -> ``w`` (on the CPU), in batches of ``batch_size``."""
    w = torch.empty(len(z), gen.w_dim)
    for sl in batches(len(z), batch_size):
        classes = torch.full((sl.stop - sl.start,), cls, dtype=torch.long, device=device)
        w[sl] = gen.mapping(z[sl].to(device), classes, truncation_psi=psi).cpu()
    return w


@torch.inference_mode()
def run_sample(ctx: Context, cls: int, shard: int) -> None:
    cfg = ctx.cfg
    if cls not in cfg.classes:
        raise LinkstyleError(f"class {cls} is not in the analysed class set {list(cfg.classes)} (config key classes)")
    start, stop = shard_range(cfg.sample.per_class, cfg.sample.per_shard, shard)
    seeds = sample_seeds(cfg.sample.first_seed, cls, start, stop)
    gen = ctx.generator
    z = gen.sample_z(seeds.tolist())
    if len(np.unique(z.numpy(), axis=0)) != len(z):
        raise RuntimeError(f"duplicate latents among seeds {seeds[0]}..{seeds[-1]}: the generator's sample_z is broken")
    w = map_latents(gen, z, cls, psi=cfg.generator.truncation_psi, batch_size=cfg.generator.batch_size, device=ctx.device)
    out = ctx.paths.samples(cls, shard)
    write_npz(out, ctx.origin("sample", cls=cls, shard=shard),
              seed=seeds, cls=np.full(len(seeds), cls, dtype=np.int64), z=z.numpy(), w=w.numpy())
    ctx.wrote(out)
