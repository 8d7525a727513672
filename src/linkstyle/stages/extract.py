"""Render each sample once and run every classifier on it: the main GPU cost, paid once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..artifacts import SAMPLES
from ..io import read_npz, write_npz, write_parquet
from ..runtime import autocast, progress, run_batched
from .context import Context


@torch.inference_mode()
def run_extract(ctx: Context, cls: int, shard: int) -> None:
    cfg, paths = ctx.cfg, ctx.paths
    samples = read_npz(paths.samples(cls, shard), origin=ctx.origin("sample", cls=cls, shard=shard), arrays=SAMPLES)
    w_all = torch.from_numpy(samples["w"])
    names = [c.name for c in cfg.classifiers]
    clfs = [ctx.classifier(n) for n in names]
    n = len(w_all)
    feats = {name: np.empty((n, clf.num_units), dtype=np.float32) for name, clf in zip(names, clfs)}
    preds = {name: np.empty(n, dtype=np.int64) for name in names}
    probs = {name: np.empty((n, 2), dtype=np.float32) for name in names}
    def step(sl: slice) -> None:
        with autocast(ctx.device, cfg.precision):
            images = ctx.generator.synthesize(w_all[sl].to(ctx.device, non_blocking=True))
            for name, clf in zip(names, clfs):
                r, logits = clf.features_and_logits(images)
                p = logits.float().softmax(1)
                pred = p.argmax(1)
                feats[name][sl] = r.float().cpu().numpy()
                preds[name][sl] = pred.cpu().numpy()
                probs[name][sl, 0] = p.gather(1, pred[:, None])[:, 0].cpu().numpy()
                probs[name][sl, 1] = p[:, cls].cpu().numpy()

    with progress(n, f"extract class {cls} shard {shard}") as bar:
        run_batched(n, cfg.generator.batch_size, step, bar.update, setting="generator.batch_size")
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
