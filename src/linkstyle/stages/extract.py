"""Render each sample once and run every classifier on it: the main GPU cost, paid once."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

from ..classifiers.wrapper import Classifier
from ..generators.base import Generator
from ..io import write_npz, write_parquet
from ..runtime import autocast, progress, run_batched
from .context import Context


@torch.inference_mode()
def classify_latents(
    generator: Generator, classifiers: Mapping[str, Classifier], w: torch.Tensor, true_class: int, *,
    batch_size: int, device: torch.device, precision: str = "fp32", label: str = "extract",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Render ``w`` in batches and run every classifier on each batch once: per classifier the features
    ``r`` [n, units], the prediction [n] and the probabilities of the prediction and of ``true_class`` [n, 2]."""
    n = len(w)
    feats = {name: np.empty((n, clf.num_units), dtype=np.float32) for name, clf in classifiers.items()}
    preds = {name: np.empty(n, dtype=np.int64) for name in classifiers}
    probs = {name: np.empty((n, 2), dtype=np.float32) for name in classifiers}

    def step(sl: slice) -> None:
        with autocast(device, precision):
            images = generator.synthesize(w[sl].to(device, non_blocking=True))
            for name, clf in classifiers.items():
                r, logits = clf.features_and_logits(images)
                p = logits.float().softmax(1)
                pred = p.argmax(1)
                feats[name][sl] = r.float().cpu().numpy()
                preds[name][sl] = pred.cpu().numpy()
                probs[name][sl, 0] = p.gather(1, pred[:, None])[:, 0].cpu().numpy()
                probs[name][sl, 1] = p[:, true_class].cpu().numpy()

    with progress(n, label) as bar:
        run_batched(n, batch_size, step, bar.update, setting="generator.batch_size")
    return feats, preds, probs


def run_extract(ctx: Context, cls: int, shard: int) -> None:
    cfg, paths = ctx.cfg, ctx.paths
    samples = ctx.read("samples", cls=cls, shard=shard)
    names = [c.name for c in cfg.classifiers]
    feats, preds, probs = classify_latents(
        ctx.generator, {name: ctx.classifier(name) for name in names}, torch.from_numpy(samples["w"]), cls,
        batch_size=cfg.generator.batch_size, device=ctx.device, precision=cfg.precision,
        label=f"extract class {cls} shard {shard}",
    )
    table = pd.concat(
        [
            pd.DataFrame(
                {
                    "seed": samples["seed"],
                    "cls": samples["cls"],
                    "classifier": name,
                    "pred": preds[name],
                    "prob_pred": probs[name][:, 0],
                    "prob_true": probs[name][:, 1],
                    "correct": preds[name] == samples["cls"],
                }
            )
            for name in names
        ],
        ignore_index=True,
    )
    made = ctx.origin("extract", cls=cls, shard=shard)
    write_npz(paths.extract_arrays(cls, shard), made, seed=samples["seed"], w=samples["w"], **{f"r__{k}": v for k, v in feats.items()})
    write_parquet(table, paths.extract_table(cls, shard), made)
    ctx.wrote(paths.extract_arrays(cls, shard), paths.extract_table(cls, shard))
