"""Train a demo classifier on the built-in world, or plant units into one (kinds in TRAINED_BY_WORKFLOW only)."""

from __future__ import annotations

from ..classifiers.demo import save_demo, train_demo
from ..classifiers.planted import write_planted_spec
from ..config import ConfigError
from ..errors import LinkstyleError
from ..io import ARTIFACT_KEY, write_json
from ..units import TRAINED_BY_WORKFLOW
from .context import Context, log


class AccuracyTooLow(LinkstyleError, RuntimeError):
    """Training ended below train.min_accuracy: analysing a bad classifier would look like a result."""


def run_train_classifier(ctx: Context, name: str) -> None:
    """Train demo classifier ``name``, or plant units into its base (kind planted)."""
    cfg, clf_cfg = ctx.cfg, ctx.cfg.classifier(name)
    if clf_cfg.kind not in TRAINED_BY_WORKFLOW:
        raise ConfigError(f"classifier '{name}' has kind '{clf_cfg.kind}', which the workflow does not train")
    if clf_cfg.kind == "planted":
        run_plant(ctx, name)
        return
    t = cfg.train
    clf, result = train_demo(
        ctx.generator,
        arch=clf_cfg.arch,
        name=name,
        seed=cfg.seed,
        steps=t.steps,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        truncation_psi=t.truncation_psi,
        eval_samples=t.eval_samples,
        device=ctx.device,
    )
    metrics = {
        "classifier": name,
        "arch": clf_cfg.arch,
        "units": clf.num_units,
        "heldout_accuracy": result.accuracy,
        "per_class_accuracy": result.per_class_accuracy,
        "eval_samples": t.eval_samples,
        "eval_truncation_psi": t.truncation_psi,
        "steps": result.steps,
        "final_loss": result.final_loss,
        "train_seconds": result.seconds,
    }
    log.info("classifier %s: held-out accuracy %.4f after %d steps (%.0f s)", name, result.accuracy, result.steps, result.seconds)
    if result.accuracy < t.min_accuracy:
        raise AccuracyTooLow(
            f"classifier '{name}' reached held-out accuracy {result.accuracy:.3f} < train.min_accuracy "
            f"{t.min_accuracy}; raise train.steps (now {t.steps}) or lower train.min_accuracy"
        )
    paths = ctx.paths
    made = ctx.origin("train_classifier", classifier=name)
    save_demo(clf, clf_cfg.arch, cfg.generator.resolution, paths.classifier_weights(name),
              {"metrics": metrics, ARTIFACT_KEY: made.record()})
    write_json(metrics, paths.classifier_metrics(name), made)
    ctx.wrote(paths.classifier_weights(name), paths.classifier_metrics(name))


def run_plant(ctx: Context, name: str) -> None:
    """Plant units into the trained base of a kind 'planted' classifier: fit the probes and the
    standardisation, check it on the held-out images, write weights, metrics and planted.json."""
    import time

    from ..classifiers.demo import evaluate
    from ..classifiers.planted import (
        PLANTED_SEED_OFFSET,
        PLANTED_UNITS,
        check_planted,
        fit_image_count,
        fit_planted,
        planted_spec,
        save_planted,
    )

    cfg, clf_cfg, t = ctx.cfg, ctx.cfg.classifier(name), ctx.cfg.train
    base_name = str(clf_cfg.base)
    base = ctx.classifier(base_name)
    arch = cfg.classifier(base_name).arch
    if t.steps * t.batch_size > PLANTED_SEED_OFFSET:
        raise ConfigError(f"train.steps x train.batch_size = {t.steps * t.batch_size} training images reach the seeds "
                          f"that planted units are fitted on (from the {PLANTED_SEED_OFFSET}th training seed); train on fewer")
    start = time.perf_counter()
    clf, fit = fit_planted(base, ctx.generator, fit_images=fit_image_count(t.steps, t.batch_size),
                           truncation_psi=t.truncation_psi, device=ctx.device, seed=cfg.seed, name=name)
    accuracy, per_class = evaluate(clf, ctx.generator, t.eval_samples, t.truncation_psi, ctx.device)
    check = check_planted(clf, base, ctx.generator, fit, t.eval_samples, t.truncation_psi, ctx.device)
    spec = planted_spec(clf.num_units - len(PLANTED_UNITS), check["probe_r2"])
    metrics = {
        "classifier": name,
        "kind": "planted",
        "base": base_name,
        "arch": arch,
        "units": clf.num_units,
        "planted_units": [u["unit"] for u in spec],
        "heldout_accuracy": accuracy,
        "per_class_accuracy": per_class,
        "eval_samples": t.eval_samples,
        "eval_truncation_psi": t.truncation_psi,
        "base_agreement": check["base_agreement"],
        "max_logit_difference": check["max_logit_difference"],
        "foreground_iou": check["foreground_iou"],
        "foreground_iou_thresholded": check["foreground_iou_thresholded"],
        "probe_r2": check["probe_r2"],
        "probe_r2_within_class": check["probe_r2_within_class"],
        "probe_cv_r2": fit.probe_cv_r2,
        "probe_alpha": fit.probe_alpha,
        "fit_images": fit.fit_images,
        "fit_first_seed": fit.first_seed,
        "train_seconds": time.perf_counter() - start,
    }
    log.info("classifier %s: %d units planted into %s; held-out accuracy %.4f (agrees with the base on %.4f), "
             "foreground IoU %.3f, probe R^2 %s", name, len(spec), base_name, accuracy, check["base_agreement"],
             check["foreground_iou"], ", ".join(f"{k} {v:.2f}" for k, v in check["probe_r2"].items()))
    if accuracy < t.min_accuracy:
        raise AccuracyTooLow(
            f"classifier '{name}' (base '{base_name}') reached held-out accuracy {accuracy:.3f} < train.min_accuracy "
            f"{t.min_accuracy}; raise train.steps (now {t.steps}) or lower train.min_accuracy"
        )
    paths = ctx.paths
    made = ctx.origin("train_classifier", classifier=name)
    weights = paths.classifier_weights(name)
    write_planted_spec(spec, paths.planted_spec(name), name, base_name, made)
    save_planted(clf, arch, cfg.generator.resolution, base_name, weights, {"metrics": metrics, ARTIFACT_KEY: made.record()})
    write_json(metrics, paths.classifier_metrics(name), made)
    ctx.wrote(paths.planted_spec(name), weights, paths.classifier_metrics(name))
