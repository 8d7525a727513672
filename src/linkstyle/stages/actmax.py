"""Activation maximisation of the units the report shows (or a configured list): the baseline
visualisation, drawn beside each unit's linking sweep (docs/actmax.md); and the same units swept
from one start along every sweep direction, drawn side by side (docs/selectivity.md)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..actmax import ActmaxSettings, maximise
from ..errors import LinkstyleError
from ..io import write_npz, write_parquet
from ..sweep import DIRECTIONS, gain
from .context import Context
from .link import read_select
from .selectivity import top_units
from .tune import sweep_units

log = logging.getLogger("linkstyle")


def actmax_units(ctx: Context, name: str) -> list[int]:
    """``actmax.units: report`` takes the report's units (read from the selectivity stage), else the list."""
    cfg = ctx.cfg
    if cfg.actmax.units == "report":
        units = ctx.read("selectivity_units", classifier=name)
        return [int(u) for u in top_units(units, cfg.report.top_units)["unit"]]
    return list(cfg.actmax.units)


def settings_of(ctx: Context) -> ActmaxSettings:
    a = ctx.cfg.actmax
    return ActmaxSettings(steps=a.steps, lr=a.lr, decorrelate=a.decorrelate, transforms=a.transforms,
                          redirect_steps=a.redirect_steps, batch_size=a.batch_size)


def run_actmax(ctx: Context, name: str) -> None:
    units = actmax_units(ctx, name)
    clf = ctx.classifier(name)
    outside = [u for u in units if u >= clf.num_units]
    if outside:
        raise LinkstyleError(f"actmax.units: units {outside[:5]} are outside classifier '{name}', which has "
                             f"{clf.num_units} units (0..{clf.num_units - 1}); list smaller indices or use 'report'")
    _, select = read_select(ctx, name)
    result = maximise(clf, units, ctx.generator.resolution, settings=settings_of(ctx), seed=ctx.cfg.seed, device=ctx.device)
    table = pd.DataFrame({
        "unit": result.units,
        "activation": result.activation,
        "observed_high": select["unit_high"][result.units].astype(np.float32),
        "steps": np.full(len(units), ctx.cfg.actmax.steps, dtype=np.int64),
    })
    made = ctx.origin("actmax", classifier=name)
    paths = ctx.paths
    compared = direction_sweeps(ctx, name, [int(u) for u in result.units])
    write_npz(paths.actmax_arrays(name), made, unit=result.units, images=result.images,
              activation=result.activation, history=result.history, **compared)
    write_parquet(table, paths.actmax_table(name), made)
    ctx.wrote(paths.actmax_arrays(name), paths.actmax_table(name))
    log.info("actmax: %d units in %.1f s (%.2f s per unit)", len(units), result.seconds, result.seconds_per_unit)


def direction_sweeps(ctx: Context, name: str, units: list[int]) -> dict[str, np.ndarray]:
    """The units swept from the first start sample along every direction of :mod:`linkstyle.sweep`,
    so that a reader sees what each direction shows of a unit, and how far each moves it (gain)."""
    images, gains = [], []
    for mode in DIRECTIONS:
        table, arrays = sweep_units(ctx, name, units, label=f"sweep {name} along {mode}", max_starts=1, direction=mode)
        order = np.lexsort((table["step"].to_numpy(), [units.index(int(u)) for u in table["unit"]]))
        steps = ctx.cfg.tune.n_steps
        images.append(arrays["images"][order].reshape(len(units), steps, *arrays["images"].shape[1:]))
        target = table["target"].to_numpy(np.float64)[order].reshape(len(units), steps)
        realised = table["realised"].to_numpy(np.float64)[order].reshape(len(units), steps)
        gains.append(gain(target, realised))
    return {"directions": np.array(DIRECTIONS), "direction_images": np.stack(images),
            "direction_gain": np.stack(gains).astype(np.float32)}


def read_actmax(ctx: Context, name: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    table = ctx.read("actmax_table", classifier=name)
    return table, ctx.read("actmax_arrays", classifier=name, dims={"n": len(table)})
