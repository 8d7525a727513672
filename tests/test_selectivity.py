from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkstyle.config import SelectivityConfig
from linkstyle.measures import PROPERTIES
from linkstyle.selectivity import (
    NO_CONCEPT,
    Block,
    Features,
    analyse_block,
    circular_difference,
    concept_recovery,
    effects,
    explanations,
    faithfulness,
    label_agreement,
    label_agreement_settled,
    label_in_top3,
    planted_recovery,
    population,
    selectivity_index,
    settled,
    settled_share,
    spearman_rows,
    spread,
    summarise,
    sweep_changes,
    unit_labels,
)

CRIT = SelectivityConfig(faithful_min_spearman=0.5, min_effect=0.5, min_confidence=0.9, min_selectivity=0.0,
                         min_gain=0.25, bootstrap=200, max_concepts=5, reference_images=64)


def test_circular_differences_wrap_by_their_period():
    np.testing.assert_allclose(circular_difference(np.array([170.0, 10.0, 45.0]), np.array([10.0, 170.0, 90.0]), 180.0),
                               [20.0, -20.0, 45.0])
    np.testing.assert_allclose(circular_difference(np.array([350.0, 10.0]), np.array([10.0, 350.0]), 360.0), [20.0, -20.0])


def test_a_half_turn_has_no_direction():
    """A blob whose axis turns from 0 to 90 degrees (or back) turned by a half period: neither -90
    nor +90, or a mean over many such turns would read as a steady turn one way."""
    first = np.array([0.0, 90.0, 10.0, 0.0], np.float32)
    last = np.array([90.0, 0.0, 100.0, 89.9], np.float32)
    got = circular_difference(first, last, 180.0)
    assert np.isnan(got[:3]).all()
    assert got[3] == pytest.approx(89.9, abs=1e-4)
    assert np.isnan(circular_difference(np.array([30.0]), np.array([210.0]), 360.0)).all()


def test_spread_is_the_std_and_circular_for_periodic_properties():
    x = np.array([1.0, 2.0, 3.0, np.nan])
    assert spread(x) == pytest.approx(np.std([1.0, 2.0, 3.0]))
    # hues on both sides of 0: a plain std would be ~170 degrees, the circular one is ~8
    assert spread(np.array([355.0, 5.0, 350.0, 10.0]), 360.0) == pytest.approx(7.9, abs=0.3)
    assert spread(np.array([1.0])) != spread(np.array([1.0]))  # NaN: one value has no spread


def test_sweep_changes_are_last_minus_first_and_circular_where_periodic():
    values = np.zeros((1, 2, 3, 2))  # units, starts, steps, features (angle, area)
    values[0, :, 0, 0], values[0, :, -1, 0] = 170.0, 10.0
    values[0, :, -1, 1] = [1.0, 2.0]
    d = sweep_changes(values, np.array([180.0, np.nan]))
    np.testing.assert_allclose(d[0], [[20.0, 1.0], [20.0, 2.0]])


def test_a_hue_factor_turns_by_its_plain_difference_and_a_measured_hue_modulo_360():
    """A planted hue probe's sweep moved the world's hue factor 0.08 -> 0.49 -> 0.92 of the wheel: a
    turn of +0.84 (the factor is monotone along the sweep), which modulo 1 read as -0.16. The
    measured hue of a part is known only modulo 360 at each step, so its change stays circular."""
    feats = Features(kind=np.array(["factor", "measure"], object), part=np.array(["", "body"], object),
                     prop=np.array(["hue", "hue"], object), scale=np.ones(2), factor_periods={"hue": 1.0})
    np.testing.assert_array_equal(np.isnan(feats.periods), [False, False])  # both spreads are circular
    values = np.zeros((1, 1, 3, 2))
    values[0, 0, :, 0] = [0.08, 0.49, 0.92]
    values[0, 0, :, 1] = [20.0, 170.0, 330.0]
    d = sweep_changes(values, feats.change_periods)
    np.testing.assert_allclose(d[0, 0], [0.84, -50.0])


def test_effects_scale_by_the_reference_spread_and_bootstrap_per_unit():
    changes = np.zeros((2, 10, 2))
    changes[0, :, 0] = 2.0 + np.linspace(-0.1, 0.1, 10)  # consistent: effect 1.0 in spreads of 2
    changes[1, :, 0] = np.tile([3.0, -3.0], 5)  # no consistent sign
    changes[0, :, 1] = np.nan  # a part absent in every start
    eff = effects(changes, np.array([2.0, 1.0]), [4, 9], CRIT, seed=0)
    assert eff.effect[0, 0] == pytest.approx(1.0)
    assert eff.confidence[0, 0] == 1.0 and eff.ci_low[0, 0] > 0.9
    assert eff.confidence[1, 0] < 0.5
    assert np.isnan(eff.effect[0, 1]) and eff.n_starts[0, 1] == 0


def test_a_units_bootstrap_does_not_depend_on_its_neighbours():
    rng = np.random.default_rng(0)
    changes = rng.normal(0.5, 1.0, (5, 10, 3))
    scale = np.ones(3)
    together = effects(changes, scale, [0, 1, 2, 3, 4], CRIT, seed=3)
    alone = effects(changes[2:3], scale, [2], CRIT, seed=3)
    for field in ("effect", "ci_low", "ci_high", "confidence"):
        np.testing.assert_array_equal(getattr(together, field)[2], getattr(alone, field)[0])


def test_spearman_rows():
    a = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    b = np.array([[1.0, 5.0, 9.0], [3.0, 2.0, 1.0], [7.0, 7.0, 7.0]])
    rho = spearman_rows(a, b)
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0) and np.isnan(rho[2])
    assert spearman_rows(np.array([0.0, 1, 2, 3]), np.array([0.0, 10, 11, 1000])) == pytest.approx(1.0)  # ranks, not values


def _sweeps(realised_scale: float, n_s: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    target = np.tile(np.linspace(0, 2, 3), (1, n_s, 1))
    baseline = np.arange(float(n_s))[None, :, None] * 10  # starts differ a lot in baseline
    return target, target * realised_scale + baseline, np.ones_like(target, bool)


def test_faithfulness_and_gain_of_a_unit_that_follows_its_sweep_exactly():
    f = faithfulness(*_sweeps(1.0), CRIT)
    assert f.loc[0, "faithfulness"] == pytest.approx(1.0) and f.loc[0, "faithful"]
    assert f.loc[0, "gain"] == pytest.approx(1.0) and not f.loc[0, "weak_sweep"]
    assert f.loc[0, "monotonic"] == 1.0 and f.loc[0, "class_kept"] == 1.0


def test_a_sweep_that_barely_moves_its_unit_is_weak_though_perfectly_ranked():
    f = faithfulness(*_sweeps(0.07), CRIT)
    assert f.loc[0, "faithfulness"] == pytest.approx(1.0)  # the rank correlation cannot tell
    assert f.loc[0, "gain"] == pytest.approx(0.07) and f.loc[0, "weak_sweep"]


def test_faithfulness_is_the_median_over_starts():
    target, realised, kept = _sweeps(1.0, n_s=5)
    realised[0, :2] = realised[0, :2, ::-1]  # two of five starts go the wrong way
    assert faithfulness(target, realised, kept, CRIT).loc[0, "faithful"]
    realised[0, 2] = realised[0, 2, ::-1]  # now three of five
    f = faithfulness(target, realised, kept, CRIT)
    assert f.loc[0, "faithfulness"] == pytest.approx(-1.0) and not f.loc[0, "faithful"]


def test_a_dead_unit_is_neither_faithful_nor_strong():
    target, _, kept = _sweeps(1.0)
    f = faithfulness(target, np.zeros_like(target), ~kept, CRIT)
    assert np.isnan(f.loc[0, "faithfulness"]) and not f.loc[0, "faithful"] and f.loc[0, "weak_sweep"]
    assert f.loc[0, "class_kept"] == 0.0


def test_selectivity_index():
    si = selectivity_index(np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0], [3.0, 1.0, np.nan], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(si, [0.0, 1.0, 0.5, 0.0])


def test_a_units_selectivity_index_is_bitwise_the_same_alone_and_among_many():
    rng = np.random.default_rng(1)
    # the rankable columns of a unit table, picked as unit_labels picks them (a column-major view,
    # whose row sums numpy orders by the array's shape)
    mag = np.abs(rng.standard_cauchy((513, 300)))[:, np.sort(rng.choice(300, 157, replace=False))]
    together = selectivity_index(mag)
    alone = np.array([selectivity_index(mag[i : i + 1])[0] for i in range(len(mag))])
    assert np.array_equal(together, alone)


FEATS = Features(
    kind=np.array(["measure", "measure", "measure", "measure", "measure", "factor", "factor"], object),
    part=np.array(["head", "tail", "tail", "tail", "body", "", ""], object),
    prop=np.array(["area", "n_components", "width", "motion", "hue", "hue", "pose"], object),
    scale=np.ones(7),
)


def _explain(changes: np.ndarray, units=(3,)):
    eff = effects(changes, FEATS.scale, list(units), CRIT, seed=0)
    explained = explanations(list(units), eff, FEATS, CRIT)
    return explained, unit_labels(list(units), eff, FEATS, explained, CRIT)


def test_the_explanation_ranks_what_stands_out_and_the_label_is_its_first_item():
    changes = np.tile(np.array([0.6, 9.0, -2.0, 7.0, 0.1, 0.1, 3.0]), (1, 8, 1))
    explained, labels = _explain(changes)
    assert list(explained["concept"]) == ["tail:width:-", "head:area:+"]  # counts and motion never enter
    assert labels.loc[0, "concept"] == "tail:width:-" and labels.loc[0, "selective"]
    assert labels.loc[0, "n_concepts"] == 2 and labels.loc[0, "concepts"] == "tail:width:-; head:area:+"
    assert labels.loc[0, "top_factor"] == "pose"


def test_a_labels_share_says_whether_its_first_place_is_settled_or_a_near_tie():
    """Two properties that move alike (an eye with its head) trade first place between resamples of
    the start samples; a property far ahead keeps it in every resample."""
    rng = np.random.default_rng(1)
    base = np.array([0.6, 9.0, 3.0, 7.0, 0.1, 0.1, 3.0])
    clear = np.tile(base, (1, 10, 1)) + rng.normal(0.0, 0.2, (1, 10, 7))
    tied = clear.copy()
    tied[..., 0] = tied[..., 2] + rng.normal(0.0, 0.5, (1, 10))  # head area ~ tail width, start by start
    for changes, low, high in ((clear, 0.99, 1.0), (tied, 0.2, 0.8)):
        eff = effects(changes, FEATS.scale, [3], CRIT, seed=0, ranked=FEATS.ranked)
        lead = eff.lead[0, FEATS.ranked]
        assert lead.sum() == pytest.approx(1.0) and np.isnan(np.delete(eff.lead[0], FEATS.ranked)).all()
        explained = explanations([3], eff, FEATS, CRIT)
        labels = unit_labels([3], eff, FEATS, explained, CRIT)
        assert low <= labels.loc[0, "label_share"] <= high, labels.loc[0, ["concept", "label_share"]]
    nothing = np.tile(np.array([0.3, 0.0, 0.2, 0.0, 0.1, 0.0, 0.0]), (1, 8, 1))
    _, labels = _explain(nothing)
    assert np.isnan(labels.loc[0, "label_share"])


def test_the_backdrops_shape_never_explains_but_its_colour_does():
    """The backdrop's area, centroid and ellipse are the complement of the parts in front of it."""
    feats = Features(kind=np.array(["measure"] * 4, object),
                     part=np.array(["background", "background", "background", "body"], object),
                     prop=np.array(["area", "center_x", "luminance", "area"], object), scale=np.ones(4))
    changes = np.tile(np.array([-9.0, 8.0, 2.0, 1.0]), (1, 8, 1))
    eff = effects(changes, feats.scale, [0], CRIT, seed=0)
    explained = explanations([0], eff, feats, CRIT)
    assert list(explained["concept"]) == ["background:luminance:+", "body:area:+"]


def test_nothing_stands_out_gives_none():
    rng = np.random.default_rng(0)
    small = np.tile(np.array([0.3, 0.0, 0.2, 0.0, 0.1, 0.0, 0.0]), (1, 8, 1))  # below min_effect
    noisy = rng.normal(0.0, 2.0, (1, 8, 7))  # large but no consistent sign
    for changes in (small, noisy):
        explained, labels = _explain(changes)
        assert explained.empty and labels.loc[0, "concept"] == NO_CONCEPT and not labels.loc[0, "selective"]


def test_circular_hue_changes_enter_the_explanation_across_zero():
    values = np.zeros((1, 6, 3, 7))
    values[0, :, 0, 4], values[0, :, -1, 4] = 350.0, 20.0  # body hue crosses 0: +30 degrees
    feats = Features(FEATS.kind, FEATS.part, FEATS.prop, np.array([1, 1, 1, 1, 20.0, 1, 1]))
    block = Block(np.array([3]), values, *_sweeps(1.0, n_s=6))
    out = analyse_block(block, feats, CRIT, seed=0)
    assert out.units.loc[0, "concept"] == "body:hue:+"
    assert out.explanations.loc[0, "effect"] == pytest.approx(1.5)


def test_population_shares():
    units = pd.DataFrame({"selective": [True, True, False, True], "faithful": [True, False, True, True],
                          "concept": ["head:area:+", "head:area:-", NO_CONCEPT, "tail:width:+"]})
    pop = population(units, FEATS).set_index(["part", "property"])
    assert pop.loc[("head", "area"), "n_selective"] == 2 and pop.loc[("head", "area"), "n_selective_faithful"] == 1
    assert pop.loc[("tail", "width"), "share"] == 0.25
    assert pop.loc[("*", "*"), "n_selective"] == 3 and pop.loc[("*", "*"), "share_faithful"] == pytest.approx(2 / 3)
    assert ("tail", "motion") not in pop.index  # never a label


def test_concept_recovery_counts_matches_top3_and_chance():
    concepts = {"ear_size": (("ear", "area"), ("ear", "width")), "hue": (("body", "luminance"), ("head", "luminance"))}
    units = pd.DataFrame({
        "unit": [0, 1, 2, 3, 4],
        "selective": [True, True, True, True, False],
        "concept": ["ear:area:+", "ear:angle:+", "head:luminance:-", "body:area:+", NO_CONCEPT],
        "top_factor": ["ear_size", "ear_size", "hue", "hue", "hue"],
    })
    explained = pd.DataFrame({"unit": [1, 1, 3], "rank": [1, 2, 4], "part": ["ear", "ear", "body"],
                              "property": ["angle", "width", "luminance"]})
    rec = concept_recovery(units, concepts, "truth", explained=explained).set_index("part")
    assert rec.loc["all", "n_labelled"] == 4
    assert rec.loc["all", "part_agreement"] == 1.0  # ear, ear, head (fur), body
    assert rec.loc["all", "concept_agreement"] == 0.5  # ear:area and head:luminance
    assert rec.loc["all", "top3_concept_agreement"] == 0.25  # unit 1's second item; unit 3's match is 4th
    assert rec.loc["ear", "concept_agreement"] == 0.5 and rec.loc["body", "n_labelled"] == 2
    assert 0 < rec.loc["all", "chance_part_agreement"] < 1


def test_the_top3_chance_level_rises_with_lists_that_name_every_factor():
    """A list that names a concept of every factor meets the top factor whoever the unit is: its top-3
    rate is 1 and so is its chance level, while lists that name only their own unit's factor score 1
    against a chance level of the factors' shares."""
    concepts = {"ear_size": (("ear", "area"),), "hue": (("body", "hue"),), "pose": (("body", "angle"),)}
    factors = ["ear_size", "hue", "pose", "ear_size", "hue", "pose"]
    units = pd.DataFrame({"unit": range(6), "selective": True, "top_factor": factors,
                          "concept": [f"{concepts[f][0][0]}:{concepts[f][0][1]}:+" for f in factors]})
    own = pd.DataFrame({"unit": range(6), "rank": 1, "part": [concepts[f][0][0] for f in factors],
                        "property": [concepts[f][0][1] for f in factors]})
    every = pd.DataFrame([{"unit": u, "rank": r + 1, "part": pair[0], "property": pair[1]}
                          for u in range(6) for r, pair in enumerate(c[0] for c in concepts.values())])
    rec_own = concept_recovery(units, concepts, "truth", explained=own).set_index("part").loc["all"]
    rec_every = concept_recovery(units, concepts, "truth", explained=every).set_index("part").loc["all"]
    assert rec_own["top3_concept_agreement"] == rec_every["top3_concept_agreement"] == 1.0
    assert rec_every["chance_top3_concept_agreement"] == 1.0
    assert rec_own["chance_top3_concept_agreement"] == pytest.approx(1 / 3, abs=0.08)
    assert rec_own["chance_top3_concept_agreement"] == pytest.approx(rec_own["chance_concept_agreement"])


def test_label_agreement_counts_units_labelled_by_either():
    a = pd.DataFrame({"unit": [0, 1, 2, 3], "concept": ["ear:area:+", NO_CONCEPT, "tail:width:+", NO_CONCEPT]})
    b = pd.DataFrame({"unit": [3, 2, 1, 0], "concept": [NO_CONCEPT, "tail:width:+", "body:area:+", "ear:area:+"]})
    assert label_agreement(a, b) == pytest.approx(2 / 3)


def test_label_in_top3_forgives_near_ties_only():
    a = pd.DataFrame({"unit": [0, 1, 2, 3, 4], "concept": ["eye:center_y:-", NO_CONCEPT, "tail:width:+", NO_CONCEPT,
                                                           "body:area:+"]})
    b = pd.DataFrame({"unit": [0, 1, 2, 3, 4], "concept": ["head:center_y:-", "ear:area:+", "tail:width:+", NO_CONCEPT,
                                                           "leg:area:+"]})
    explained = pd.DataFrame({"unit": [0, 0, 1, 4, 4, 4, 4], "rank": [1, 2, 1, 1, 2, 3, 4],
                              "concept": ["head:center_y:-", "eye:center_y:-", "ear:area:+", "leg:area:+", "leg:width:+",
                                          "leg:height:+", "body:area:+"]})
    # unit 0: second item of the other; 1: none against a label; 2: same; 3: neither labelled; 4: fourth item only
    assert label_in_top3(a, b, explained) == pytest.approx(2 / 4)
    assert label_agreement(a, b) == pytest.approx(1 / 4)


def test_agreement_of_settled_labels_leaves_out_near_ties_in_either_analysis():
    a = pd.DataFrame({"unit": [0, 1, 2, 3], "concept": ["ear:area:+", "eye:center_y:-", "tail:width:+", NO_CONCEPT],
                      "label_share": [0.9, 0.4, 0.8, np.nan]})
    b = pd.DataFrame({"unit": [3, 2, 1, 0], "concept": ["body:area:+", "tail:width:-", "head:center_y:-", "ear:area:+"],
                      "label_share": [0.95, 0.7, 0.6, 1.0]})
    # unit 0 agrees, 2 disagrees (both settled); 1 is a near-tie in a, 3 unlabelled in a: left out
    assert label_agreement_settled(a, b) == pytest.approx(1 / 2)
    assert list(settled(a)) == [True, False, True, False]
    assert settled_share(a) == pytest.approx(2 / 3)  # of the three labelled units
    assert label_agreement(a, b) == pytest.approx(1 / 4)  # the plain agreement is unchanged


def test_planted_recovery_scores_label_and_rank():
    units = pd.DataFrame({"unit": [10, 11], "concept": ["tail:area:+", "body:luminance:+"]})
    explained = pd.DataFrame({"unit": [10, 11, 11], "rank": [1, 1, 2], "part": ["tail", "body", "background"],
                              "property": ["area", "luminance", "luminance"], "sign": ["+", "+", "+"]})
    spec = [{"unit": 10, "name": "tail_length", "expected": [["tail", "area", "+"]]},
            {"unit": 11, "name": "backdrop_luminance", "expected": [["background", "luminance", "+"]]}]
    out = planted_recovery(units, explained, spec, "truth").set_index("name")
    assert out.loc["tail_length", "hit"] and out.loc["tail_length", "hit_rank"] == 1
    assert not out.loc["backdrop_luminance", "hit"] and out.loc["backdrop_luminance", "hit_rank"] == 2


def _tables(units, n_s=4, k=3, seed=0):
    """Tune and measure tables of ``units``: unit 7 grows the ear, the others change nothing much."""
    rng = np.random.default_rng(seed)
    parts = ["background", "ear"]
    offset = rng.normal(0, 0.1, (n_s, len(parts), len(PROPERTIES)))
    rows = []
    for unit in units:
        noise = np.random.default_rng(unit).normal(0, 0.005, (n_s, k, len(parts), len(PROPERTIES)))
        for s in range(n_s):
            for step in range(k):
                for i, part in enumerate(parts):
                    vals = {p: offset[s, i, j] + noise[s, step, i, j] for j, p in enumerate(PROPERTIES)}
                    if unit == 7 and part == "ear":
                        vals["area"] += 0.15 * step
                    rows.append({"unit": unit, "start": s, "step": step, "masks": "truth", "part": part, **vals})
    meas = pd.DataFrame(rows)
    meas["part"] = pd.Categorical(meas["part"], categories=parts)
    meas["masks"] = pd.Categorical(meas["masks"])
    t = np.linspace(0, 1, k)
    tune = pd.DataFrame([{"unit": u, "start": s, "step": j, "target": t[j], "realised": t[j] * (1 if u == 7 else -1),
                          "pred": 0, "cls": 0} for u in units for s in range(n_s) for j in range(k)])
    spread_table = pd.DataFrame({"kind": "measure", "part": np.repeat(parts, len(PROPERTIES)),
                                 "property": list(PROPERTIES) * len(parts), "spread": 0.1})
    return tune, meas, spread_table


def test_summarise_labels_a_unit_that_grows_one_part():
    tune, meas, spread_table = _tables([7, 9])
    out = summarise(CRIT, 3, [([7, 9], tune, meas)], spread_table, seed=0)
    u = out.units.set_index("unit")
    assert u.loc[7, "concept"] == "ear:area:+" and u.loc[7, "faithful"]
    assert u.loc[9, "concept"] == NO_CONCEPT and not u.loc[9, "faithful"]
    assert set(out.features.columns) >= {"unit", "part", "property", "delta_std", "confidence", "sign_agreement"}
    assert len(out.features) == 2 * 2 * len(PROPERTIES)
    assert out.population.set_index(["part", "property"]).loc[("ear", "area"), "n_selective"] == 1


def test_a_units_whole_explanation_is_the_same_alone_in_any_shard_and_with_all_units():
    units = [3, 7, 9, 12, 20]
    tune, meas, spread_table = _tables(units)

    def run(cuts):
        blocks, start = [], 0
        for n in cuts:
            mine = units[start : start + n]
            blocks.append((mine, tune[tune["unit"].isin(mine)], meas[meas["unit"].isin(mine)]))
            start += n
        return summarise(CRIT, 3, blocks, spread_table, seed=0)

    together = run([5])
    for cuts in ([2, 3], [1, 1, 1, 1, 1]):
        other = run(cuts)
        pd.testing.assert_frame_equal(other.units, together.units)
        pd.testing.assert_frame_equal(other.features, together.features)
        pd.testing.assert_frame_equal(other.explanations, together.explanations)
    alone_tune, alone_meas = tune[tune["unit"] == 7], meas[meas["unit"] == 7]
    alone = summarise(CRIT, 3, [([7], alone_tune, alone_meas)], spread_table, seed=0)
    pd.testing.assert_frame_equal(alone.units.reset_index(drop=True),
                                  together.units[together.units["unit"] == 7].reset_index(drop=True))
    pd.testing.assert_frame_equal(alone.explanations.reset_index(drop=True),
                                  together.explanations[together.explanations["unit"] == 7].reset_index(drop=True))
