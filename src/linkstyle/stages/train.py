"""Train a demo classifier on the built-in world (kinds in TRAINED_BY_WORKFLOW only)."""

from __future__ import annotations

from ..classifiers.demo import save_demo, train_demo
from ..config import ConfigError
from ..errors import LinkstyleError
from ..io import ARTIFACT_KEY, write_json
from ..units import TRAINED_BY_WORKFLOW
from .context import Context, log


class AccuracyTooLow(LinkstyleError, RuntimeError):
    """Training ended below train.min_accuracy: analysing a bad classifier would look like a result."""


def run_train(ctx: Context, name: str) -> None:
    cfg, clf_cfg = ctx.cfg, ctx.cfg.classifier(name)
    if clf_cfg.kind not in TRAINED_BY_WORKFLOW:
        raise ConfigError(f"classifier '{name}' has kind '{clf_cfg.kind}', which the workflow does not train")
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
    made = ctx.origin("train", classifier=name)
    save_demo(clf, clf_cfg.arch, cfg.generator.resolution, paths.classifier_weights(name),
              {"metrics": metrics, ARTIFACT_KEY: made.record()})
    write_json(metrics, paths.classifier_metrics(name), made)
    ctx.wrote(paths.classifier_weights(name), paths.classifier_metrics(name))
