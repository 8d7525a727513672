"""Few-shot part segmentation in the workflow: export images to label, import the label maps,
train the segmenter, and predict the masks of tuned images for the measure stage.

The labelling loop is the same on every generator: ``label_export`` renders images into
``<run>/labels/`` for an annotator; their PNG index maps, in the folder that
``segmentation.labels`` names, are checked and packed by ``label_import``. On the built-in
world the exported exact masks (``labels/truth/``) stand in for the annotator, so the whole
loop runs (and is tested) without a person; the segmenter is then scored against the truth on
held-out images it never saw.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from ..errors import LinkstyleError
from ..io import write_json, write_npz
from ..runtime import batches
from ..seeds import HELDOUT_LABEL_SEED_BASE, LABEL_SEED_BASE
from .context import Context
from .tune import to_uint8

log = logging.getLogger("linkstyle")

#: Generator kinds whose adapters expose synthesis maps (``features(w, layers)``).
GENERATORS_WITH_MAPS = frozenset({"stylegan"})


def part_names(ctx: Context) -> tuple[str, ...]:
    """The label values' meaning: ``measure.parts``, else the generator's own parts (critters)."""
    if ctx.cfg.measure.parts:
        return ctx.cfg.measure.parts
    if ctx.cfg.generator.has_ground_truth:
        from ..generators.critters import PART_NAMES

        return PART_NAMES
    raise ConfigError(
        f"measure.parts: a learned segmenter on generator '{ctx.cfg.generator.kind}' needs the part names of your "
        "label maps, in the order of their pixel values, e.g. measure.parts: [background, body, head, leg, tail]"
    )


def feature_source(ctx: Context) -> str:
    """'generator' (synthesis maps) or 'image' (pixels and the backbone's early maps)."""
    choice = ctx.cfg.segmentation.features
    has_maps = ctx.cfg.generator.kind in GENERATORS_WITH_MAPS
    if choice == "generator" and not has_maps:
        raise ConfigError(f"segmentation.features: 'generator' needs synthesis maps, and generator "
                          f"'{ctx.cfg.generator.kind}' has none; use 'image' or 'auto'")
    if choice == "auto":
        return "generator" if has_maps else "image"
    return choice


def _render(ctx: Context, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Images (uint8 NHWC), w and, where the generator knows them, exact masks; classes cycle over the config's."""
    cfg, gen = ctx.cfg, ctx.generator
    classes = np.asarray(cfg.classes)[np.arange(len(seeds)) % len(cfg.classes)]
    z = gen.sample_z(seeds.tolist())
    images = np.empty((len(seeds), gen.resolution, gen.resolution, 3), np.uint8)
    ws = np.empty((len(seeds), gen.w_dim), np.float32)
    masks: np.ndarray | None = None
    with torch.inference_mode():
        for sl in batches(len(seeds), cfg.generator.batch_size):
            cls = torch.as_tensor(classes[sl], dtype=torch.long, device=ctx.device)
            w = gen.mapping(z[sl].to(ctx.device), cls, truncation_psi=cfg.generator.truncation_psi)
            img, truth = gen.render(w)
            images[sl] = to_uint8(img)
            ws[sl] = w.float().cpu().numpy()
            if truth is not None:
                if masks is None:
                    masks = np.empty(images.shape[:3], np.uint8)
                masks[sl] = truth.masks.cpu().numpy()
    return images, ws, masks


def swept_label_images(ctx: Context, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """``n`` swept images to label (uint8 NHWC images, w, exact masks where known, names).

    The segmenter is applied to the sweeps, and a sweep's ends are the images farthest from the
    samples it otherwise learns from (on RegNet's sweeps its stray pieces of the body grew from 1.1
    per image at the first step to 1.9 at the last). So the first and last steps of the sweeps are
    the candidates, spread evenly over every classifier's shards (in config order) and, within a
    shard, over its units and starts: a fixed choice, the same in every run of the same sweeps.
    Names: ``sweep-<classifier>-<shard>-<index in the shard>-<digest of the image>``.
    """
    from ..units import unit_shards

    shards = [(c.name, s) for c in ctx.cfg.classifiers for s in range(len(unit_shards(ctx.cfg, c.name)))]
    quota = np.full(len(shards), n // len(shards)) + (np.arange(len(shards)) < n % len(shards))
    last = ctx.cfg.tune.n_steps - 1
    images, ws, masks, names = [], [], [], []
    for (name, shard), k in zip(shards, quota.tolist()):
        if not k:
            continue
        arrays = ctx.read("tune_arrays", classifier=name, shard=shard)
        ends = np.flatnonzero((arrays["step"] == 0) | (arrays["step"] == last))
        pick = ends[np.unique(np.linspace(0, len(ends) - 1, min(k, len(ends))).round().astype(np.int64))]
        images.append(arrays["images"][pick])
        ws.append(arrays["w"][pick].astype(np.float32))
        masks.append(arrays["masks"][pick] if "masks" in arrays else None)
        # The digest ties a label map to the image it labels: changed sweeps give new names.
        names += [f"sweep-{name}-{shard}-{int(i):05d}-{hashlib.sha256(arrays['images'][i].tobytes()).hexdigest()[:8]}"
                  for i in pick]
    if not images:
        raise LinkstyleError(f"segmentation.sweep_images: {n} swept images asked for, but no sweeps exist")
    known = all(m is not None for m in masks)
    return (np.concatenate(images), np.concatenate(ws), np.concatenate(masks) if known else None, names)


def run_label_export(ctx: Context) -> None:
    """Render ``segmentation.export_images`` images to label (and their exact masks, where known),
    then add ``segmentation.sweep_images`` images from the sweeps themselves."""
    from ..labels import write_label_set

    n = ctx.cfg.segmentation.export_images
    seeds = LABEL_SEED_BASE + np.arange(n, dtype=np.int64)
    images, ws, masks = _render(ctx, seeds)
    folder = ctx.paths.labels_dir
    names = [f"{i:04d}-seed{s}" for i, s in enumerate(seeds)]
    swept = ctx.cfg.segmentation.sweep_images
    if swept:
        s_images, s_ws, s_masks, s_names = swept_label_images(ctx, swept)
        images, ws, names = np.concatenate([images, s_images]), np.concatenate([ws, s_ws]), names + s_names
        masks = np.concatenate([masks, s_masks]) if masks is not None and s_masks is not None else None
        seeds = np.concatenate([seeds, np.full(len(s_names), -1, np.int64)])  # -1: not a sample but a swept image
    write_npz(ctx.paths.label_latents, ctx.origin("label_export"), seed=seeds, w=ws, names=np.array(names))
    meta = {"run": ctx.cfg.run, "generator": ctx.cfg.generator.kind, "seeds": seeds.tolist()}
    write_label_set(folder, images, names, part_names(ctx), truth=masks, meta=meta)
    ctx.wrote(folder)


def labels_folder(ctx: Context) -> Path:
    """Where the label maps are: ``segmentation.labels``, else (critters) the exported exact masks."""
    if ctx.cfg.segmentation.labels:
        return Path(ctx.cfg.segmentation.labels)
    truth = ctx.paths.labels_dir / "truth"
    if ctx.cfg.generator.has_ground_truth:
        return truth
    raise LinkstyleError(
        f"segmentation.labels is not set. Label the images in {ctx.paths.labels_dir / 'images'} with an annotation "
        "tool (one PNG index map per image, same file name, pixel value = index into measure.parts "
        f"{list(part_names(ctx))}), put the maps in one folder and set segmentation.labels to it "
        "(docs/segmentation.md)"
    )


def run_label_import(ctx: Context) -> None:
    """Check the label maps against the exported images and the configured parts, and pack them."""
    from ..labels import read_label_set

    latents = ctx.read("label_latents")
    labels = read_label_set(ctx.paths.labels_dir, labels_folder(ctx), part_names(ctx), min_images=ctx.cfg.segmentation.min_labelled)
    row = {str(n): i for i, n in enumerate(latents["names"])}
    w = latents["w"][[row[n] for n in labels.names]]
    write_npz(ctx.paths.segmenter_labels, ctx.origin("label_import"), images=labels.images, masks=labels.masks, w=w,
              names=np.array(labels.names), parts=np.array(labels.parts))
    log.info("imported %d label maps from %s", len(labels.names), labels_folder(ctx))
    ctx.wrote(ctx.paths.segmenter_labels)


def segmenter_inputs(ctx: Context, images: np.ndarray, w: np.ndarray, source: str) -> torch.Tensor:
    """The segmenter's per-pixel inputs for uint8 NHWC images (and their w, for generator maps)."""
    from ..segmenter import generator_features, image_features

    if source == "generator":
        return generator_features(ctx.generator, torch.from_numpy(np.ascontiguousarray(w)).to(ctx.device),
                                  batch_size=len(w)).cpu()
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return image_features(x.to(ctx.device), None, batch_size=len(x)).cpu()


def predict(ctx: Context, model: Any, images: np.ndarray, w: np.ndarray, source: str) -> np.ndarray:
    """Masks uint8 [N, H, W], computing inputs batch by batch: the stacked inputs of a whole shard
    would take tens of bytes per pixel."""
    from ..segmenter import predict_masks

    out = np.empty(images.shape[:3], np.uint8)
    for sl in batches(len(images), ctx.cfg.segmentation.batch_size):
        out[sl] = predict_masks(model, segmenter_inputs(ctx, images[sl], w[sl], source), len(images[sl]))
    return out


def run_train_segmenter(ctx: Context) -> None:
    """Train on the imported label maps; on the built-in world, score it on held-out exact masks."""
    from ..segmenter import mean_iou, predict_masks, save_segmenter, train_segmenter

    cfg = ctx.cfg
    data = ctx.read("segmenter_labels")
    parts = tuple(str(p) for p in data["parts"])
    source = feature_source(ctx)
    feats = segmenter_inputs(ctx, data["images"], data["w"], source)
    start = time.perf_counter()
    model, info = train_segmenter(feats, torch.from_numpy(data["masks"]), len(parts), steps=cfg.segmentation.steps,
                                  seed=cfg.seed, device=ctx.device)
    train_seconds = time.perf_counter() - start
    metrics: dict[str, Any] = {
        "parts": list(parts), "features": source, "labelled_images": int(len(data["images"])),
        "steps": cfg.segmentation.steps, "train_seconds": train_seconds,
        # The training inputs are at hand: no second feature pass over the labelled images.
        "train_iou": mean_iou(predict_masks(model, feats, cfg.segmentation.batch_size), data["masks"], len(parts))[0],
        **{k: v for k, v in info.items() if isinstance(v, (int, float, str))},
    }
    n_held = cfg.segmentation.heldout_images
    if cfg.generator.has_ground_truth and n_held and not cfg.measure.parts:
        seeds = HELDOUT_LABEL_SEED_BASE + np.arange(n_held, dtype=np.int64)
        images, ws, truth = _render(ctx, seeds)
        start = time.perf_counter()
        pred = predict(ctx, model, images, ws, source)
        metrics["predict_seconds_per_image"] = (time.perf_counter() - start) / n_held
        miou, per_part = mean_iou(pred, truth, len(parts))
        metrics["heldout"] = {"images": n_held, "mean_iou": miou,
                              "iou": {p: (None if not np.isfinite(v) else float(v)) for p, v in zip(parts, per_part)}}
        log.info("segmenter: held-out mean IoU %.3f on %d images", miou, n_held)
    made = ctx.origin("train_segmenter")
    save_segmenter(ctx.paths.segmenter_model, model, {"parts": list(parts), "features": source, "origin": made.record()})
    write_json(metrics, ctx.paths.segmenter_metrics, made)
    ctx.wrote(ctx.paths.segmenter_model, ctx.paths.segmenter_metrics)


def predict_tuned(ctx: Context, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Part masks of a tuned shard's images from the trained segmenter, in batches, stray islands
    dropped (``measure.min_fragment``)."""
    from ..io import check_origin
    from ..segmenter import drop_fragments, load_segmenter

    made = ctx.origin("train_segmenter")
    path = ctx.paths.segmenter_model
    model, meta = load_segmenter(path, remake=made.remake, device=ctx.device)
    check_origin(path, meta.get("origin"), made)
    masks = predict(ctx, model, arrays["images"], arrays["w"], meta["features"])
    return drop_fragments(masks, ctx.cfg.measure.min_fragment), tuple(meta["parts"])
