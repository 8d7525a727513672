"""Activation maximisation: the baseline rises its unit, is deterministic and batch-invariant, and runs as a stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from linkstyle.actmax import ActmaxSettings, FourierImage, maximise, transform, transform_params
from linkstyle.classifiers.demo import DEMO_MEAN, DEMO_STD, build_demo_net
from linkstyle.classifiers.wrapper import Classifier


@pytest.fixture(scope="module")
def clf() -> Classifier:
    torch.manual_seed(0)
    return Classifier(build_demo_net("resnet18", 3, 32), name="net", input_size=None, mean=DEMO_MEAN, std=DEMO_STD)


def _activation(clf: Classifier, images: np.ndarray, units: list[int]) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        return clf.features(x)[torch.arange(len(units)), torch.tensor(units)].numpy()


def _world_activations(clf: Classifier, units: list[int], n: int) -> np.ndarray:
    from linkstyle.generators.critters import Critters

    gen = Critters(num_classes=3, resolution=32)
    seeds = list(range(n))
    with torch.no_grad():
        images = gen.synthesize(gen.mapping(gen.sample_z(seeds), torch.as_tensor(np.array(seeds) % 3)))
        return clf.features(images)[:, units].numpy()


def test_actmax_raises_its_unit_far_above_a_grey_image(clf):
    units = [3, 17, 40]
    res = maximise(clf, units, 32, settings=ActmaxSettings(steps=48, batch_size=3))
    grey = _activation(clf, np.full((3, 32, 32, 3), 128, dtype=np.uint8), units)
    stored = _activation(clf, res.images, units)
    assert res.images.shape == (3, 32, 32, 3) and res.images.dtype == np.uint8
    # "far above" in the unit's own scale: beyond every one of 128 images of the world, and more than
    # 10 of their standard deviations above the grey image (an untrained net's units differ in scale)
    data = _world_activations(clf, units, 128)
    assert np.all(res.activation > data.max(0)), (res.activation, data.max(0))
    assert np.all(res.activation > grey + 10 * data.std(0)), (res.activation, grey, data.std(0))
    np.testing.assert_allclose(stored, res.activation, rtol=0.05, atol=0.05)  # uint8 storage keeps the result
    assert res.history.shape == (3, 3) and np.all(res.history[:, -1] > res.history[:, 0])
    assert res.seconds > 0 and res.seconds_per_unit == pytest.approx(res.seconds / 3)


def test_actmax_is_deterministic_and_does_not_depend_on_its_batch(clf):
    settings = ActmaxSettings(steps=16, batch_size=4)
    a = maximise(clf, [5, 9, 11], 32, settings=settings, seed=3)
    b = maximise(clf, [5, 9, 11], 32, settings=settings, seed=3)
    alone = maximise(clf, [9], 32, settings=ActmaxSettings(steps=16, batch_size=1), seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert np.abs(a.images[1].astype(int) - alone.images[0]).max() <= 2
    assert a.activation[1] == pytest.approx(alone.activation[0], rel=1e-3, abs=1e-4)
    other_seed = maximise(clf, [9], 32, settings=ActmaxSettings(steps=16, batch_size=1), seed=4)
    assert not np.array_equal(other_seed.images, alone.images)


def test_plain_pixels_without_transforms_also_rise(clf):
    res = maximise(clf, [7], 32, settings=ActmaxSettings(steps=24, decorrelate=False, transforms=False, lr=0.1))
    grey = _activation(clf, np.full((1, 32, 32, 3), 128, dtype=np.uint8), [7])
    assert res.activation[0] > grey[0]


def test_fourier_image_is_in_range_and_transform_is_identity_at_rest():
    img = FourierImage(FourierImage.init_spectra([1, 2], 16, std=1.0), 16, decorrelate=True)().detach()
    assert img.shape == (2, 3, 16, 16) and float(img.min()) > 0 and float(img.max()) < 1
    rest = torch.tensor([[0.0, 0.0, 1.0, 0.0]] * 2)
    torch.testing.assert_close(transform(img, rest), img, atol=1e-5, rtol=0)
    params = transform_params([1, 2], 100)
    assert params.shape == (100, 2, 4)
    assert float(params[..., 2].min()) >= 0.9 and float(params[..., 2].max()) <= 1.1
    assert float(params[..., 3].abs().max()) <= np.radians(10) + 1e-6


def test_units_outside_the_classifier_are_refused(clf):
    with pytest.raises(ValueError, match=r"units \[512\] are outside classifier 'net' \(units 0\.\.511\)"):
        maximise(clf, [0, 512], 32, settings=ActmaxSettings(steps=1))


def test_actmax_stage_in_the_tiny_workflow(tiny_run, monkeypatch):
    """The report's units, optimised in the workflow; the report draws them beside their sweeps."""
    work, cfg_file, paths = tiny_run
    monkeypatch.chdir(work)  # the run's results_dir is relative to the workflow's directory
    from linkstyle.config import load_config
    from linkstyle.stages.actmax import read_actmax
    from linkstyle.stages.context import Context
    from linkstyle.stages.report import sweep_images
    from linkstyle.stages.selectivity import top_units

    cfg = load_config(paths.config)
    ctx = Context(cfg)
    for c in cfg.classifiers:
        table, arrays = read_actmax(ctx, c.name)
        units = pd.read_parquet(paths.selectivity_units(c.name))
        assert table["unit"].tolist() == top_units(units, cfg.report.top_units)["unit"].tolist()
        assert arrays["images"].shape == (len(table), 32, 32, 3)
        assert (table["steps"] == cfg.actmax.steps).all() and (table["activation"] > 0).any()
        assert paths.figure(f"actmax-{c.name}").is_file() and paths.figure(f"actmax-{c.name}", ".pdf").is_file()
        # the same units swept from the first start along every direction; tune.direction's row is the tune stage's
        assert arrays["directions"].tolist() == ["link_row", "pattern", "directed"]
        assert arrays["direction_images"].shape == (3, len(table), cfg.tune.n_steps, 32, 32, 3)
        assert np.isfinite(arrays["direction_gain"]).all()
        mine = arrays["direction_images"][arrays["directions"].tolist().index(cfg.tune.direction)]
        tuned = sweep_images(ctx, c.name, table["unit"].tolist(), starts=1)
        for i, unit in enumerate(table["unit"]):
            np.testing.assert_array_equal(mine[i], tuned[int(unit)][0])
        assert paths.figure(f"directions-{c.name}").is_file()
    summary = json.loads(paths.summary.read_text())
    for name, s in summary["classifiers"].items():
        assert s["actmax"]["units"] == cfg.report.top_units and s["actmax"]["steps"] == cfg.actmax.steps, name
        timing = s["actmax"]["timing"]
        assert timing["actmax_job_seconds_per_unit"] > 0 and timing["tune_job_seconds_per_unit"] > 0, name


def test_redirected_relus_wake_a_unit_that_is_silent_on_the_starting_image():
    """Unit 0's ReLU input is negative on every near-grey image: no gradient without the redirect."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        net[0].bias[0] = -float(net[0].weight[0].abs().sum()) * 0.15
    clf = Classifier(net, name="tiny", input_size=None, mean=DEMO_MEAN, std=DEMO_STD)
    settings = dict(steps=40, transforms=False, decorrelate=False, lr=0.1)
    plain = maximise(clf, [0], 16, settings=ActmaxSettings(redirect_steps=0, **settings))
    woken = maximise(clf, [0], 16, settings=ActmaxSettings(redirect_steps=16, **settings))
    assert plain.activation[0] == 0.0
    assert woken.activation[0] > 0.1
    assert type(net[1].forward).__name__ == "method"  # the ReLU is restored
