"""Planted units (kind planted): units whose meaning is known by construction, on top of a demo classifier."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from linkstyle.classifiers.demo import DEMO_MEAN, DEMO_STD, build_demo_net, save_demo
from linkstyle.classifiers.planted import (
    PLANTED_PROPERTIES,
    PLANTED_UNITS,
    PROBE_FACTORS,
    STATISTIC_UNITS,
    check_planted,
    fit_planted,
    foreground_mask,
    image_statistics,
    load_planted,
    load_planted_spec,
    planted_spec_path,
    probe_linear,
    ridge_per_target,
    save_planted,
    srgb_to_lab,
)
from linkstyle.classifiers.wrapper import Classifier
from linkstyle.config import ConfigError, from_dict
from linkstyle.generators.critters import FACTOR_NAMES, PART_NAMES, Critters
from linkstyle.io import ArtifactError
from linkstyle.units import PLANTED_UNIT_COUNT, TRAINED_BY_WORKFLOW, analysed_units, unit_count, unit_shards

CPU = torch.device("cpu")
BASE_UNITS = 512  # resnet18
PLANTED_CLASSIFIERS = [
    {"name": "resnet18", "kind": "demo", "arch": "resnet18"},
    {"name": "planted", "kind": "planted", "base": "resnet18"},
]


def _images(gen: Critters, n: int, first: int = 0, psi: float = 0.7):
    seeds = list(range(first, first + n))
    classes = torch.arange(first, first + n) % gen.num_classes
    return gen.mapping(gen.sample_z(seeds), classes, truncation_psi=psi)


@pytest.fixture(scope="module")
def gen32():
    return Critters(3, 32, 0)


@pytest.fixture(scope="module")
def gen64():
    return Critters(3, 64, 0)


@pytest.fixture(scope="module")
def base(gen32):
    """An untrained ResNet-18 stands in for the base: the planting does not care what the base learned."""
    torch.manual_seed(0)
    net = build_demo_net("resnet18", gen32.num_classes, gen32.resolution)
    return Classifier(net, name="resnet18", input_size=None, mean=DEMO_MEAN, std=DEMO_STD,
                      class_names=gen32.class_names).eval()


@pytest.fixture(scope="module")
def planted(base, gen32):
    torch.set_num_threads(2)
    return fit_planted(base, gen32, fit_images=256, truncation_psi=1.0, device=CPU, batch_size=128, name="planted")


# ----------------------------------------------------------------------------- the unit table


def test_the_planted_units_and_their_expected_meanings():
    assert len(PLANTED_UNITS) == PLANTED_UNIT_COUNT == 16
    assert [u.name for u in STATISTIC_UNITS] == ["backdrop_luminance", "backdrop_lab_b", "critter_x", "critter_y",
                                                "critter_area", "critter_luminance", "critter_lab_a", "critter_texture"]
    assert PROBE_FACTORS == ("position_x", "position_y", "pose", "hue", "luminance", "stripe_contrast",
                             "background_luminance", "saturation")
    assert set(PROBE_FACTORS) <= set(FACTOR_NAMES)
    assert len({u.name for u in PLANTED_UNITS}) == 16
    for u in PLANTED_UNITS:
        assert u.kind in ("statistic", "probe") and u.group and u.expected
        assert (u.factor is not None) == (u.kind == "probe")
        for part, prop, sign in u.expected:
            assert part in PART_NAMES and prop in PLANTED_PROPERTIES and sign in "+-", (u.name, part, prop, sign)
    by_name = {u.name: u for u in PLANTED_UNITS}
    assert ("background", "center_x", "-") in by_name["critter_x"].expected
    assert ("tail", "center_y", "+") in by_name["probe_pose"].expected and ("nose", "center_y", "-") in by_name["probe_pose"].expected
    assert {p for p, _, _ in by_name["probe_saturation"].expected} == {"body", "head", "ear", "leg", "tail"}


def test_each_probes_expected_signs_are_how_the_world_renders_its_factor(gen64):
    """Measured on exact masks: within a class, every expected (part, property) of a probe moves with
    the probe's factor in the expected direction (circular properties as deviations from the class's
    circular mean), and the strongest of them clearly (|r| > 0.4)."""
    from linkstyle.classifiers.planted import PROBE_UNITS, _render_decorrelated
    from linkstyle.linking import within_class
    from linkstyle.measures import STATIC_PROPERTIES, part_measures
    from linkstyle.selectivity import PERIODS, circular_difference
    from linkstyle.stages.tune import to_uint8  # the images' storage form, which the sweeps are measured in

    with torch.no_grad():
        images, classes, truth = _render_decorrelated(gen64, np.arange(450), 1.0, CPU, 0)
    measured = part_measures(to_uint8(images), truth.masks.numpy(), len(PART_NAMES)).astype(np.float64)
    c = classes.numpy()
    for unit in PROBE_UNITS:
        factor = within_class(truth.factors[:, [FACTOR_NAMES.index(unit.factor)]].double().numpy(), c)[:, 0]
        strongest = 0.0
        for part, prop, sign in unit.expected:
            x = measured[:, PART_NAMES.index(part), list(STATIC_PROPERTIES).index(prop)]
            ok = np.isfinite(x)
            for k in np.unique(c) if prop in PERIODS else []:  # deviations from the class's circular mean
                rows = ok & (c == k)
                angles = np.radians(x[rows] * 360.0 / PERIODS[prop])
                centre = math.degrees(math.atan2(np.sin(angles).mean(), np.cos(angles).mean())) * PERIODS[prop] / 360.0
                x[rows] = circular_difference(np.full(rows.sum(), centre), x[rows], PERIODS[prop])
            r = np.corrcoef(factor[ok], within_class(x[ok, None], c[ok])[:, 0])[0, 1]
            assert r * (1 if sign == "+" else -1) > 0.05, (unit.name, part, prop, sign, r)
            strongest = max(strongest, abs(r))
        assert strongest > 0.4, (unit.name, strongest)


def test_expected_properties_are_measured_ones():
    from linkstyle.measures import STATIC_PROPERTIES

    used = {prop for u in PLANTED_UNITS for _, prop, _ in u.expected}
    assert used <= set(PLANTED_PROPERTIES) <= set(STATIC_PROPERTIES)


def test_lab_matches_skimage():
    from skimage.color import rgb2lab

    rgb = torch.rand(3, 3, 7, 5, generator=torch.Generator().manual_seed(0))
    rgb[0, :, 0, 0] = 0.0  # black, and values below the sRGB knee
    rgb[0, :, 0, 1] = 0.01
    ours = srgb_to_lab(rgb).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, rgb2lab(rgb.permute(0, 2, 3, 1).numpy()), atol=2e-3)


# ----------------------------------------------------------------------------- the foreground mask


def _iou(fg: torch.Tensor, masks: torch.Tensor) -> float:
    exact = (masks != 0).float()
    return float((fg * exact).sum() / (fg + exact - fg * exact).sum())


@pytest.mark.parametrize("resolution, floor", [(64, 0.92), (32, 0.82)])
def test_the_foreground_mask_matches_the_exact_masks(resolution, floor, gen32, gen64):
    gen = gen64 if resolution == 64 else gen32
    with torch.no_grad():
        images, truth = gen.render(_images(gen, 200, first=5000, psi=1.0))
        fg = foreground_mask(images)
    assert fg.shape == truth.masks.shape and float(fg.min()) >= 0 and float(fg.max()) <= 1
    assert _iou(fg, truth.masks) > floor  # soft IoU, pooled over images
    assert _iou((fg > 0.5).float(), truth.masks) > floor
    # the same images stored as uint8 (as tune keeps them) lose little
    stored = ((images.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
    with torch.no_grad():
        assert _iou(foreground_mask(stored), truth.masks) > floor - 0.03


# ----------------------------------------------------------------------------- statistics respond to their factor


def _logit(v: float) -> float:
    return math.log(v / (1 - v))


#: statistic -> (critters factor moved, from value, to value): the statistic must rise along the move.
MOVES = {
    "backdrop_luminance": ("background_luminance", 0.15, 0.85),
    "backdrop_lab_b": ("background_hue", 0.62, 0.15),  # blue -> yellow
    "critter_x": ("position_x", 0.15, 0.85),
    "critter_y": ("position_y", 0.85, 0.15),  # critters' y points up, image rows down
    "critter_area": ("body_length", 0.1, 0.9),
    "critter_luminance": ("luminance", 0.15, 0.85),
    "critter_lab_a": ("hue", 0.33, 0.97),  # green -> red
    "critter_texture": ("stripe_contrast", 0.05, 0.9),
}


def test_every_statistic_has_a_move():
    assert set(MOVES) == {u.name for u in STATISTIC_UNITS}


@pytest.mark.parametrize("unit", list(MOVES))
def test_a_statistic_unit_rises_when_its_factor_moves(unit, planted, gen32):
    clf, _ = planted
    factor, lo, hi = MOVES[unit]
    k = [u.name for u in PLANTED_UNITS].index(unit)
    logits = gen32.w_to_logits(_images(gen32, 24, first=7000))
    responses = []
    for value in (lo, hi):
        moved = logits.clone()
        moved[:, FACTOR_NAMES.index(factor)] = _logit(value)
        with torch.no_grad():
            images = gen32.synthesize(gen32.logits_to_w(moved))
            responses.append(clf.features(images)[:, BASE_UNITS + k])
    rise = responses[1] - responses[0]
    assert float(rise.mean()) > 0.3, (unit, rise)  # in standard deviations over the fitting images
    assert float((rise > 0).float().mean()) >= 0.9, (unit, rise)


def test_the_texture_statistic_reads_the_fur_not_the_backdrop(gen64):
    """The fur's luminance spread is taken inside the fur (the soft mask eroded by a pixel): over the
    mask's rim, which blends fur and backdrop, a brighter backdrop raised it by 0.38 of what a move of
    stripe contrast does (64 px, in standard deviations over natural images; 0.09 now)."""
    logits = gen64.w_to_logits(_images(gen64, 120, first=7000))
    with torch.no_grad():
        spread = image_statistics(gen64.synthesize(gen64.logits_to_w(logits)))[:, 7].std()

    def rise(factor: str, lo: float, hi: float) -> float:
        stats = []
        for value in (lo, hi):
            moved = logits.clone()
            moved[:, FACTOR_NAMES.index(factor)] = _logit(value)
            with torch.no_grad():
                stats.append(image_statistics(gen64.synthesize(gen64.logits_to_w(moved)))[:, 7])
        return float((stats[1] - stats[0]).mean() / spread)

    texture, backdrop = rise(*MOVES["critter_texture"]), rise("background_luminance", 0.15, 0.85)
    assert texture > 1.0 and abs(backdrop) < 0.2 * texture, (texture, backdrop)


def test_statistics_are_finite_on_any_image():
    images = torch.cat([torch.zeros(1, 3, 32, 32) - 1, torch.ones(1, 3, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1])
    images.requires_grad_(True)
    stats = image_statistics(images)
    assert torch.isfinite(stats).all()
    stats.sum().backward()  # activation maximisation differentiates through them
    assert torch.isfinite(images.grad).all()


# ----------------------------------------------------------------------------- the network


def test_probes_are_linear_in_the_base_units_and_the_head_ignores_planted_units(planted, base, gen32):
    clf, fit = planted
    assert clf.num_units == BASE_UNITS + 16 and clf.num_classes == base.num_classes
    with torch.no_grad():
        images = gen32.synthesize(_images(gen32, 16, first=9000))
        r, logits = clf.features_and_logits(images)
        r_base, base_logits = base.features_and_logits(images)
        torch.testing.assert_close(r[:, :BASE_UNITS], r_base)
        coef, bias = probe_linear(clf)
        torch.testing.assert_close(r[:, BASE_UNITS + 8:], r_base @ coef + bias)
        # the head: the base's weights on the base units, zeros on the planted ones
        assert torch.equal(clf.fc.weight[:, BASE_UNITS:], torch.zeros(base.num_classes, 16))
        assert torch.equal(clf.fc.weight[:, :BASE_UNITS], base.fc.weight) and torch.equal(clf.fc.bias, base.fc.bias)
        torch.testing.assert_close(logits, base_logits)
        shifted = r.clone()
        shifted[:, BASE_UNITS:] += 100.0
        torch.testing.assert_close(clf.head(shifted), clf.head(r))
    assert set(fit.probe_alpha) == set(PROBE_FACTORS) and len(fit.unit_mean) == 16


def test_planted_units_are_standardised_on_the_fitting_images(planted, gen32):
    """Over the fitting images exactly (their factors decorrelated within class, block by block)."""
    from linkstyle.classifiers.planted import _render_decorrelated
    from linkstyle.seeds import derive

    clf, fit = planted
    with torch.no_grad():
        images = torch.cat([_render_decorrelated(gen32, np.arange(start, start + 128) + fit.first_seed, 1.0, CPU,
                                                 derive(0, "planted-decorrelate", start))[0] for start in (0, 128)])
        units = clf.features(images)[:, BASE_UNITS:]
    np.testing.assert_allclose(units.mean(0).numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(units.std(0, unbiased=False).numpy(), 1.0, atol=1e-3)


def test_features_are_deterministic_and_batch_independent(planted, gen32):
    clf, _ = planted
    with torch.no_grad():
        images = gen32.synthesize(_images(gen32, 12, first=11000))
        whole = clf.features(images)
        again = clf.features(images)
        parts = torch.cat([clf.features(images[:5]), clf.features(images[5:])])
    assert torch.equal(whole, again)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)


def test_planted_units_are_differentiable(planted, gen32):
    """Activation maximisation and counterfactuals take gradients of the units with respect to the image."""
    clf, _ = planted
    images = gen32.synthesize(_images(gen32, 2, first=13000)).requires_grad_(True)
    clf.features(images)[:, BASE_UNITS:].sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_ridge_per_target_picks_each_targets_penalty():
    from linkstyle.linking import fit_ridge_cv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 40))
    y = np.stack([x[:, 0] + 0.1 * rng.standard_normal(300), x[:, :20].sum(1) + 8 * rng.standard_normal(300)], 1)
    alphas = (0.1, 1.0, 10.0, 100.0, 1000.0)
    coef, intercept, best, cv = ridge_per_target(x, y, alphas, 5, seed=3)
    for j in range(2):  # the same as the linking's ridge, one target at a time
        link, scores = fit_ridge_cv(x, y[:, [j]], alphas, folds=5, seed=3)
        assert best[j] == link.alpha and cv[j] == pytest.approx(scores[link.alpha])
        np.testing.assert_allclose(coef[:, j], link.coef[:, 0], atol=1e-10)
        np.testing.assert_allclose(intercept[j], link.intercept[0], atol=1e-10)


def test_check_reports_probe_r2_iou_and_agreement(planted, base, gen32):
    clf, fit = planted
    check = check_planted(clf, base, gen32, fit, 64, 1.0, CPU, batch_size=64)
    assert set(check["probe_r2"]) == set(PROBE_FACTORS)
    assert check["probe_r2"]["background_luminance"] > 0.5  # even an untrained network sees the backdrop
    assert check["foreground_iou"] > 0.8
    assert check["base_agreement"] == 1.0 and check["max_logit_difference"] < 1e-4


def test_weights_round_trip_without_the_base(planted, gen32, tmp_path):
    clf, _ = planted
    path = tmp_path / "weights.pt"
    save_planted(clf, "resnet18", gen32.resolution, "resnet18", path, {})
    loaded = load_planted(path, "planted", CPU, base="resnet18")
    with torch.no_grad():
        images = gen32.synthesize(_images(gen32, 6, first=12000))
        assert torch.equal(loaded.features(images), clf.features(images))
    assert loaded.num_units == BASE_UNITS + 16
    with pytest.raises(ArtifactError, match="planted into classifier 'resnet18'"):
        load_planted(path, "planted", CPU, base="regnet")
    demo = tmp_path / "demo.pt"
    save_demo(clf, "resnet18", gen32.resolution, demo, {})
    with pytest.raises(ArtifactError, match="not a planted classifier file"):
        load_planted(demo, "planted", CPU)
    old = torch.load(path, weights_only=True)
    old.pop("statistics_version")  # written before the statistics were versioned: version 1
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ArtifactError, match="image statistics of version 1, this linkstyle computes version 2"):
        load_planted(tmp_path / "old.pt", "planted", CPU)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="corrupted or truncated"):
        load_planted(path, "planted", CPU)


# ----------------------------------------------------------------------------- config and units


def _cfg(classifiers=PLANTED_CLASSIFIERS, **extra):
    return from_dict({"classifiers": classifiers, **extra})


def test_units_of_a_planted_classifier():
    cfg = _cfg(tune={"units": [0, 1, 2]})
    assert "planted" in TRAINED_BY_WORKFLOW
    assert unit_count(cfg, "planted") == BASE_UNITS + 16
    assert analysed_units(cfg, "planted") == list(range(BASE_UNITS, BASE_UNITS + 16))  # default: the planted ones
    assert analysed_units(cfg, "resnet18") == [0, 1, 2]  # tune.units, as before
    assert sum(map(len, unit_shards(cfg, "planted"))) == 16
    entry = {"name": "planted", "kind": "planted", "base": "resnet18"}
    both = [PLANTED_CLASSIFIERS[0]]
    assert analysed_units(_cfg(both + [{**entry, "units": "all"}]), "planted") == list(range(528))
    assert analysed_units(_cfg(both + [{**entry, "units": [527, 3]}]), "planted") == [3, 527]
    assert analysed_units(_cfg([{**both[0], "units": [5, 4]}, entry]), "resnet18") == [4, 5]
    assert analysed_units(_cfg([{**both[0], "units": "all"}, entry], tune={"units": [0]}), "resnet18") == list(range(512))
    with pytest.raises(ConfigError, match=r"classifiers\[1\]\.units: \[528\] out of range .* 528 units"):
        analysed_units(_cfg(both + [{**entry, "units": [528]}]), "planted")


@pytest.mark.parametrize("classifiers, message", [
    ([{"name": "p", "kind": "planted", "base": "nope"}, {"name": "resnet18"}],
     r"classifiers\[0\]\.base: 'nope' is not a classifier of this config \(configured: p, resnet18\); name a kind "
     r"'demo' classifier, e.g. base: resnet18"),
    ([{"name": "tv", "kind": "torchvision", "arch": "resnet50", "weights": "IMAGENET1K_V1"},
      {"name": "p", "kind": "planted", "base": "tv"}],
     r"classifiers\[1\]\.base: 'tv' has kind 'torchvision', but a planted classifier extends a kind 'demo' classifier"),
    ([{"name": "p", "kind": "planted"}, {"name": "resnet18"}], r"classifiers\[0\]\.base: required for kind 'planted'"),
    ([{"name": "p", "kind": "planted", "base": "p"}], r"'p' has kind 'planted'"),
    ([{"name": "resnet18", "base": "resnet18"}], r"classifiers\[0\]\.base: only kind 'planted' extends a base"),
    ([{"name": "resnet18", "units": "planted"}], r"classifiers\[0\]\.units: 'planted' selects the planted units"),
    ([{"name": "resnet18", "units": "some"}], r"classifiers\[0\]\.units"),
    ([{"name": "resnet18", "units": []}], r"classifiers\[0\]\.units"),
])
def test_config_errors_name_the_key_and_the_fix(classifiers, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(classifiers)


def test_planted_entry_is_read_into_the_config():
    cfg = _cfg()
    p = cfg.classifier("planted")
    assert p.kind == "planted" and p.base == "resnet18" and p.units is None
    assert cfg.raw["classifiers"][1]["units"] is None
    # units never retrain a classifier: they stay out of the train rule's spec param (the entry's repr)
    assert " units=" not in repr(p) and " base=" not in repr(p)


# ----------------------------------------------------------------------------- the train_classifier stage


def test_the_train_stage_plants_units_and_writes_its_artifacts(tmp_path):
    from linkstyle.artifacts import origin
    from linkstyle.classifiers import load_classifier
    from linkstyle.classifiers import load_planted_spec as exported
    from linkstyle.io import read_json
    from linkstyle.paths import RunPaths
    from linkstyle.stages import run_stage

    cfg = from_dict({"results_dir": str(tmp_path), "run": "p", "generator": {"num_classes": 3, "resolution": 32},
                     "classifiers": PLANTED_CLASSIFIERS,
                     "train": {"steps": 2, "batch_size": 2, "eval_samples": 40, "min_accuracy": 0.0}})
    paths = RunPaths(cfg.run_dir)
    run_stage(cfg, "train_classifier", "resnet18", threads=2)  # two steps: any base will do
    assert not paths.planted_spec("resnet18").exists()  # a demo classifier plants nothing
    run_stage(cfg, "train_classifier", "planted", threads=2)
    assert paths.planted_spec("planted") == planted_spec_path(paths.classifier_weights("planted"))

    made = origin(cfg, "train_classifier", classifier="planted")
    metrics = read_json(paths.classifier_metrics("planted"), origin=made, keys=("heldout_accuracy",))
    assert metrics["base"] == "resnet18" and metrics["units"] == 528 and metrics["fit_images"] == 512
    assert metrics["base_agreement"] == 1.0 and metrics["foreground_iou"] > 0.8
    assert set(metrics["probe_r2"]) == set(PROBE_FACTORS)
    spec = load_planted_spec(planted_spec_path(paths.classifier_weights("planted")), origin=made)
    assert exported is load_planted_spec
    assert [u["unit"] for u in spec] == list(range(512, 528)) == metrics["planted_units"]
    assert [u["name"] for u in spec] == [u.name for u in PLANTED_UNITS]
    assert spec[0]["expected"] == [["background", "luminance", "+"]] and spec[0]["probe_r2"] is None
    assert spec[8]["kind"] == "probe" and spec[8]["probe_r2"] == metrics["probe_r2"]["position_x"]

    paths.classifier_weights("resnet18").unlink()  # the planted file holds the whole network
    clf = load_classifier(cfg, "planted", CPU)
    assert clf.num_units == 528
    other = from_dict({**cfg.raw, "seed": 1})  # stale: another config's train digest
    with pytest.raises(ArtifactError, match="rerun|remake"):
        load_classifier(other, "planted", CPU)
    with pytest.raises(ArtifactError):
        load_planted_spec(planted_spec_path(paths.classifier_weights("planted")), origin=origin(other, "train_classifier", classifier="planted"))
