"""Counterfactuals per classifier: for each (origin, target) pair, shifts of ``r`` that make the
rendered image change class, and what they change (docs/counterfactuals.md).

Start samples are held-out samples of the origin class first (the link never saw them), then
training ones, kept only where the linked re-rendering ``w(r)`` is itself classified as the
origin: otherwise a "counterfactual" would be measuring the link's error, not a shift. Every
target of one origin starts from the same samples, so pairs compare like with like.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..artifacts import (
    COUNTERFACTUAL_DRIVERS,
    COUNTERFACTUAL_FACTORS,
    COUNTERFACTUAL_ITEMS,
)
from ..class_names import class_index
from ..config import MAX_CLASSES_FOR_ALL_PAIRS, Config, CounterfactualConfig, did_you_mean
from ..counterfactual import (
    Check,
    CounterfactualError,
    CounterfactualResult,
    CounterfactualSettings,
    driving_units,
    find_counterfactuals,
    linear_head,
    render_and_classify,
    rendered_logits,
)
from ..io import empty_table, write_json, write_npz, write_parquet
from ..linking import LinearLink
from ..runtime import autocast, progress, run_batched
from .context import Context
from .link import load_link, read_select

log = logging.getLogger("linkstyle")

#: Candidate start samples rendered per origin class, as a multiple of samples_per_pair: enough to
#: replace the few whose re-rendering leaves the class, without rendering every sample of a class.
CANDIDATES_PER_START = 4


def settings_of(cc: CounterfactualConfig, nonnegative: bool = True) -> CounterfactualSettings:
    """The search's settings; ``nonnegative``: the classifier's features are post-ReLU (all >= 0 on the
    selected samples), so shifted features are clipped at 0 as the rendering does (a ViT's are not)."""
    return CounterfactualSettings(
        nonnegative=nonnegative,
        weight_target=cc.weight_target, weight_origin=cc.weight_origin, weight_cosine=cc.weight_cosine,
        weight_other=cc.weight_other, cosine_halflife=cc.cosine_halflife, l1=cc.l1,
        lr=cc.lr, max_steps=cc.max_steps, check_every=cc.check_every, top_units=cc.top_units,
    )


def resolve_pairs(cfg: Config, class_names: tuple[str, ...]) -> list[tuple[int, int]]:
    """``counterfactual.pairs`` as class indices; names are looked up in the generator's class names."""
    classes = list(cfg.classes)
    if cfg.counterfactual.pairs in ("all", "auto"):  # 'all' is checked to have at most 10 classes
        first = classes[:MAX_CLASSES_FOR_ALL_PAIRS]
        return [(o, t) for o in first for t in first if o != t]

    def index(value: int | str, where: str) -> int:
        if isinstance(value, int):
            return value
        found = class_index(value, class_names)
        if found is None:
            hint = did_you_mean([value], list(class_names))
            shown = ", ".join(class_names[:12]) + (", ..." if len(class_names) > 12 else "")
            raise CounterfactualError(f"{where}: unknown class name {value!r}; the generator's classes are {shown}{hint}")
        if found not in classes:
            raise CounterfactualError(f"{where}: class {value!r} (index {found}) is not among the analysed classes "
                                      f"(key 'classes')")
        return found

    pairs = []
    for i, (o, t) in enumerate(cfg.counterfactual.pairs):
        pair = (index(o, f"counterfactual.pairs[{i}] origin"), index(t, f"counterfactual.pairs[{i}] target"))
        if pair[0] == pair[1]:
            raise CounterfactualError(f"counterfactual.pairs[{i}]: {o!r} and {t!r} are the same class ({pair[0]})")
        pairs.append(pair)
    return list(dict.fromkeys(pairs))


@dataclass(frozen=True)
class Starts:
    """Per origin class: rows of the select arrays to start from, and how many candidates were seen."""

    rows: dict[int, np.ndarray]
    candidates: dict[int, int]


def choose_starts(table: pd.DataFrame, r: np.ndarray, link, check, origins: list[int], per_class: int) -> Starts:
    """The first ``per_class`` samples of each origin class (test split first, then train, by seed)
    whose linked re-rendering is classified as that class."""
    rows, seen = {}, {}
    for o in origins:
        mine = table[table["cls"] == o]
        order = mine.assign(_test=mine["split"] != "test").sort_values(["_test", "seed"], kind="stable").index.to_numpy()
        cand = order[: CANDIDATES_PER_START * per_class]
        if len(cand) == 0:
            raise CounterfactualError(f"no selected samples of class {o} to start from: the classifier got none of its "
                                      "samples right (see the select stage)")
        w = torch.from_numpy(link(r[cand]).astype(np.float32))
        keep = cand[np.asarray(check(w)).argmax(1) == o]
        rows[o], seen[o] = keep[:per_class], len(cand)
        if len(keep) == 0:
            raise CounterfactualError(f"class {o}: none of {len(cand)} start samples keeps its class when re-rendered "
                                      "through the link; the link is too poor for counterfactuals (see link metrics)")
    return Starts(rows, seen)


@torch.inference_mode()
def render_uint8(ctx: Context, w: np.ndarray) -> np.ndarray:
    """Images [N, H, W, 3] uint8 of ``w``, batched."""
    gen, batch = ctx.generator, ctx.cfg.generator.batch_size
    out: list[np.ndarray] = []

    def step(sl: slice) -> None:
        with autocast(ctx.device, ctx.cfg.precision):
            img = gen.synthesize(torch.from_numpy(w[sl]).to(ctx.device)).float()
        out.append(((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())

    run_batched(len(w), batch, step, setting="generator.batch_size")
    return np.concatenate(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def factor_table(gen, res: CounterfactualResult, w_class: dict[int, np.ndarray], pairs: list[tuple[int, int]],
                 device: torch.device) -> tuple[pd.DataFrame, dict[tuple[int, int], dict[str, float]]]:
    """Ground truth: per pair, the mean change of each factor over successful items, against the
    factors' separation of the two species (mean over target samples minus origin samples)."""
    names = tuple(gen.factor_names)
    with torch.inference_mode():
        before = gen.factors(res.w_before.to(device)).double().cpu().numpy()
        after = gen.factors(res.w_after.to(device)).double().cpu().numpy()
        mean_of = {c: gen.factors(torch.from_numpy(w).to(device)).double().cpu().numpy().mean(0)
                   for c, w in w_class.items()}
    rows, agreement = [], {}
    origin, target, success = res.origin.numpy(), res.target.numpy(), res.success.numpy()
    for o, t in pairs:
        mine = (origin == o) & (target == t) & success
        change = (after[mine] - before[mine]).mean(0) if mine.any() else np.full(len(names), np.nan)
        separation = mean_of[t] - mean_of[o]
        rank_c = _ranks(-np.abs(change))
        rank_s = _ranks(-np.abs(separation))
        rows += [{"origin": o, "target": t, "factor": f, "change": change[i], "separation": separation[i],
                  "rank_change": rank_c[i], "rank_separation": rank_s[i]} for i, f in enumerate(names)]
        agreement[(o, t)] = factor_agreement(change, separation)
    return pd.DataFrame(rows, columns=list(COUNTERFACTUAL_FACTORS)), agreement


def factor_agreement(change: np.ndarray, separation: np.ndarray, k: int = 3) -> dict[str, float]:
    """Cosine of the mean factor change with the species' separation, and the overlap of their top-k factors."""
    if not np.isfinite(change).all():
        return {"factor_cosine": float("nan"), "top_factor_overlap": float("nan")}
    norm = np.linalg.norm(change) * np.linalg.norm(separation)
    top_c = set(np.argsort(-np.abs(change), kind="stable")[:k])
    top_s = set(np.argsort(-np.abs(separation), kind="stable")[:k])
    return {"factor_cosine": float(change @ separation / norm) if norm > 0 else float("nan"),
            "top_factor_overlap": len(top_c & top_s) / k}


def _ranks(x: np.ndarray) -> np.ndarray:
    """1 = the largest |value|; NaN last."""
    order = np.argsort(np.where(np.isfinite(x), x, np.inf), kind="stable")
    ranks = np.empty(len(x), dtype=np.int64)
    ranks[order] = np.arange(1, len(x) + 1)
    return ranks


@dataclass(frozen=True)
class Plan:
    """The search's items, pair by pair: each item's row of the select arrays, origin and target."""

    rows: np.ndarray  # int64 [items]
    origin: np.ndarray  # int64 [items]
    target: np.ndarray  # int64 [items]

    @classmethod
    def of(cls, starts: Starts, pairs: list[tuple[int, int]]) -> Plan:
        """Every target of one origin starts from that origin's samples."""
        return cls(rows=np.concatenate([starts.rows[o] for o, t in pairs]).astype(np.int64),
                   origin=np.concatenate([np.full(len(starts.rows[o]), o) for o, t in pairs]).astype(np.int64),
                   target=np.concatenate([np.full(len(starts.rows[o]), t) for o, t in pairs]).astype(np.int64))

    def of_pair(self, o: int, t: int) -> np.ndarray:
        return (self.origin == o) & (self.target == t)


@dataclass(frozen=True)
class Renderings:
    """Images [items, H, W, 3] uint8 before and after each item's shift, their mean absolute
    difference in [0, 1], and which items' images are stored (``image_item``; ``image_of``: -1 if not)."""

    before: np.ndarray
    after: np.ndarray
    distance: np.ndarray
    image_item: np.ndarray
    image_of: np.ndarray


def run_counterfactual(ctx: Context, name: str) -> None:
    cfg, cc = ctx.cfg, ctx.cfg.counterfactual
    table, arrays = read_select(ctx, name)
    r = arrays["r"].astype(np.float32)
    settings = settings_of(cc, nonnegative=bool((r >= 0).all()))
    link = load_link(ctx, name, dims={"units": r.shape[1], "w_dim": arrays["w"].shape[1]})
    gen, clf = ctx.generator, ctx.classifier(name)
    # Every check fails here, before any rendering or optimisation: names, pairs, head.
    pairs = resolve_pairs(cfg, tuple(gen.class_names))
    head = linear_head(clf)
    if head.in_features != r.shape[1]:
        raise CounterfactualError(f"classifier '{name}': its head takes {head.in_features} features but the selected "
                                  f"samples have {r.shape[1]}; rerun extract and select")
    check = render_and_classify(gen, clf, cfg.generator.batch_size, cfg.precision)
    origins = sorted({o for o, _ in pairs})
    starts = choose_starts(table, r, link, check, origins, cc.samples_per_pair)
    plan = Plan.of(starts, pairs)
    res = search_items(ctx, name, r, plan, head, link, check, settings)
    log.info("%s: %d counterfactuals over %d pairs, success %.2f", name, len(res), len(pairs), res.success_rate)

    images = render_items(ctx, res, plan, pairs)
    names = tuple(gen.class_names)
    items = items_table(res, plan, table, r, names, images)
    drivers = drivers_table(res, plan, pairs, cc.top_units)
    agreement: dict[tuple[int, int], dict[str, float]] = {}
    if callable(getattr(gen, "factors", None)) and hasattr(gen, "factor_names"):
        w_all, cls_all = arrays["w"], table["cls"].to_numpy()
        w_class = {c: w_all[cls_all == c] for c in {c for pair in pairs for c in pair}}
        factors, agreement = factor_table(gen, res, w_class, pairs, ctx.device)
    else:
        factors = empty_table(COUNTERFACTUAL_FACTORS)
    metrics = summarise(name, cfg, items, pairs, starts, agreement, names)
    metrics["nonnegative_features"] = settings.nonnegative
    write_outputs(ctx, name, res, images, items, drivers, factors, metrics)


def search_items(ctx: Context, name: str, r: np.ndarray, plan: Plan, head: torch.nn.Linear, link: LinearLink,
                 check: Check, settings: CounterfactualSettings) -> CounterfactualResult:
    """Every item, ``counterfactual.batch_size`` at a time, scored as ``logits_from`` says."""
    cfg, cc, dev = ctx.cfg, ctx.cfg.counterfactual, ctx.device
    head = head.to(dev)
    back = render = None
    if cc.logits_from == "back_map":
        back = tuple(torch.from_numpy(b).to(dev) for b in (link.back_coef, link.back_intercept))
    elif cc.logits_from == "rendering":
        clf = ctx.classifier(name)
        clf.requires_grad_(False)  # gradients flow to the shift only
        render = rendered_logits(ctx.generator, clf, cfg.precision)
    parts = []
    with progress(len(plan.rows), f"counterfactual {name}", unit="item") as bar:
        for lo in range(0, len(plan.rows), cc.batch_size):
            sl = slice(lo, lo + cc.batch_size)
            parts.append(find_counterfactuals(
                torch.from_numpy(r[plan.rows[sl]]).to(dev), torch.from_numpy(plan.origin[sl]).to(dev),
                torch.from_numpy(plan.target[sl]).to(dev), head, torch.from_numpy(link.coef).to(dev),
                torch.from_numpy(link.intercept).to(dev),
                None if render is not None else check, settings,  # scoring the rendering checks every step itself
                back=back, render=render, render_batch=cfg.generator.batch_size,
            ))
            bar.update(len(parts[-1]))
    return CounterfactualResult.concat(parts)


def render_items(ctx: Context, res: CounterfactualResult, plan: Plan, pairs: list[tuple[int, int]]) -> Renderings:
    """Each item's image before and after; every target of one origin starts from the same
    samples, so each start is rendered once."""
    _, first, start_of = np.unique(plan.rows, return_index=True, return_inverse=True)
    before = render_uint8(ctx, res.w_before.numpy()[first])[start_of]
    after = render_uint8(ctx, res.w_after.numpy())
    distance = np.abs(after.astype(np.float32) - before.astype(np.float32)).mean((1, 2, 3)) / 255.0
    per_pair = ctx.cfg.counterfactual.images_per_pair
    image_item = np.concatenate([np.flatnonzero(plan.of_pair(o, t))[:per_pair] for o, t in pairs])
    image_of = np.full(len(res), -1, dtype=np.int64)
    image_of[image_item] = np.arange(len(image_item))
    return Renderings(before, after, distance, image_item, image_of)


def items_table(res: CounterfactualResult, plan: Plan, table: pd.DataFrame, r: np.ndarray, names: tuple[str, ...],
                images: Renderings) -> pd.DataFrame:
    """One row per item (COUNTERFACTUAL_ITEMS)."""
    origin, target, rows = plan.origin, plan.target, plan.rows
    return pd.DataFrame({
        "item": np.arange(len(res)), "origin": origin, "target": target,
        "origin_name": [names[o] for o in origin], "target_name": [names[t] for t in target],
        "seed": table["seed"].to_numpy()[rows], "split": table["split"].to_numpy()[rows],
        "success": res.success.numpy(), "steps": res.steps.numpy(), "l1": res.l1.numpy(),
        "l1_relative": res.l1.numpy() / np.maximum(np.abs(r[rows]).sum(1), 1e-12), "l0": res.l0.numpy(),
        "cosine": res.cosine.numpy(), "image_distance": images.distance,
        "conf_origin_before": res.conf_origin_before.numpy(), "conf_origin_after": res.conf_origin_after.numpy(),
        "conf_target_before": res.conf_target_before.numpy(), "conf_target_after": res.conf_target_after.numpy(),
        "pred_before": res.pred_before.numpy(), "pred_after": res.pred_after.numpy(),
        "top_units": [",".join(str(u) for u in row if u >= 0) for row in res.top_units.numpy()], "image": images.image_of,
    }, columns=list(COUNTERFACTUAL_ITEMS))


def drivers_table(res: CounterfactualResult, plan: Plan, pairs: list[tuple[int, int]], top_units: int) -> pd.DataFrame:
    """Per pair, the units most often among its successful items' top shifted units (COUNTERFACTUAL_DRIVERS)."""
    drivers = []
    for o, t in pairs:
        d = driving_units(res.shift.numpy()[plan.of_pair(o, t) & res.success.numpy()], top_units)
        drivers.append(d.assign(origin=o, target=t, rank=np.arange(1, len(d) + 1)))
    out = pd.concat([empty_table(COUNTERFACTUAL_DRIVERS), *drivers], ignore_index=True)[list(COUNTERFACTUAL_DRIVERS)]
    return out.astype({"origin": "int64", "target": "int64", "rank": "int64", "unit": "int64", "count": "int64"})


def write_outputs(ctx: Context, name: str, res: CounterfactualResult, images: Renderings, items: pd.DataFrame,
                  drivers: pd.DataFrame, factors: pd.DataFrame, metrics: dict[str, Any]) -> None:
    paths, made, item = ctx.paths, ctx.origin("counterfactual", classifier=name), images.image_item
    write_npz(paths.counterfactual_arrays(name), made, item=np.arange(len(res)), shift=res.shift.numpy(),
              w_before=res.w_before.numpy(), w_after=res.w_after.numpy(), top_units=res.top_units.numpy(),
              image_item=item, images_before=images.before[item], images_after=images.after[item])
    write_parquet(items, paths.counterfactual_items(name), made)
    write_parquet(drivers, paths.counterfactual_drivers(name), made)
    write_parquet(factors, paths.counterfactual_factors(name), made)
    write_json(metrics, paths.counterfactual_metrics(name), made)
    ctx.wrote(paths.counterfactual_items(name), paths.counterfactual_arrays(name), paths.counterfactual_drivers(name),
              paths.counterfactual_factors(name), paths.counterfactual_metrics(name))


def summarise(name: str, cfg: Config, items: pd.DataFrame, pairs: list[tuple[int, int]], starts: Starts,
              agreement: dict[tuple[int, int], dict[str, float]], names: tuple[str, ...]) -> dict[str, Any]:
    def median(x: pd.Series) -> float | None:
        return float(x.median()) if len(x) else None

    per_pair = []
    for o, t in pairs:
        mine = items[(items["origin"] == o) & (items["target"] == t)]
        ok = mine[mine["success"]]
        per_pair.append({
            "origin": o, "target": t, "origin_name": names[o], "target_name": names[t], "items": int(len(mine)),
            "success_rate": float(mine["success"].mean()) if len(mine) else None,
            "median_steps": median(mine["steps"]), "median_steps_successful": median(ok["steps"]),
            "median_l0_successful": median(ok["l0"]), "median_image_distance_successful": median(ok["image_distance"]),
            **agreement.get((o, t), {}),
        })
    ok = items[items["success"]]
    return {
        "classifier": name, "logits_from": cfg.counterfactual.logits_from,
        "settings": {k: v for k, v in cfg.raw["counterfactual"].items() if k != "pairs"},
        "items": int(len(items)), "success_rate": float(items["success"].mean()) if len(items) else None,
        "median_steps": median(items["steps"]), "median_steps_successful": median(ok["steps"]),
        "min_pair_success_rate": min((p["success_rate"] for p in per_pair if p["success_rate"] is not None), default=None),
        "starts": {str(o): {"kept": int(len(starts.rows[o])), "candidates": starts.candidates[o]} for o in starts.rows},
        "pairs": per_pair,
    }


def label_drivers(drivers: pd.DataFrame, units: pd.DataFrame | None) -> pd.DataFrame:
    """The driving units with their selectivity results (concept label, selectivity index,
    faithfulness) where the selectivity stage analysed them; 'not analysed' otherwise."""
    out = drivers.copy()
    if units is None or units.empty:
        return out.assign(concept="not analysed", selectivity_index=np.nan, faithful=pd.NA)
    keep = units.set_index("unit")[["concept", "selectivity_index", "faithful"]]
    out = out.join(keep, on="unit")
    out["concept"] = out["concept"].fillna("not analysed")
    return out


def read_counterfactuals(ctx: Context, name: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """items, drivers, factors and metrics of classifier ``name`` (for the report)."""
    kinds = ("counterfactual_items", "counterfactual_drivers", "counterfactual_factors", "counterfactual_metrics")
    items, drivers, factors, metrics = (ctx.read(kind, classifier=name) for kind in kinds)
    return items, drivers, factors, metrics


def read_counterfactual_images(ctx: Context, name: str) -> dict[str, np.ndarray]:
    return ctx.read("counterfactual_arrays", classifier=name)
