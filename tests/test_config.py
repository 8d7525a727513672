from __future__ import annotations

import subprocess
import sys

import pytest

from linkstyle.config import ConfigError, from_dict, load_config, schema
from linkstyle.units import DEMO_UNITS, analysed_units, unit_shards


def _walk(node, path=()):
    if node.get("type") == "object" or "properties" in node:
        for key, sub in node.get("properties", {}).items():
            yield path + (key,), sub
            yield from _walk(sub, path + (key,))
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], path + ("[]",))


def test_every_key_has_a_description_and_a_default():
    for path, sub in _walk(schema()):
        assert sub.get("description"), f"{'.'.join(path)} has no description"
        if "[]" not in path or path[-1] != "name":
            assert "default" in sub, f"{'.'.join(path)} has no default"


def test_defaults_fill_an_empty_config():
    cfg = from_dict({})
    assert cfg.generator.kind == "critters"
    assert cfg.classes == tuple(range(cfg.generator.num_classes))
    assert [c.name for c in cfg.classifiers] == ["resnet18", "regnet"]
    assert cfg.tune.units == "all"
    assert cfg.raw["tune"]["n_steps"] == 3


def test_the_shipped_default_config_is_valid(repo):
    cfg = load_config(repo / "config" / "config.yaml")
    assert cfg.run


def test_unknown_generator_lists_the_valid_kinds():
    with pytest.raises(ConfigError, match=r"generator.kind: 'gan' is not allowed; valid values: critters, stylegan, biggan"):
        from_dict({"generator": {"kind": "gan"}})


def test_unknown_key_names_the_allowed_keys():
    with pytest.raises(ConfigError, match=r"tune: Additional properties .*'nsteps'.*allowed keys: .*n_steps"):
        from_dict({"tune": {"nsteps": 3}})


def test_out_of_range_value_names_the_key_and_the_limit():
    with pytest.raises(ConfigError, match=r"tune.n_steps: 1 is less than the minimum of 2"):
        from_dict({"tune": {"n_steps": 1}})


def test_class_out_of_range_names_the_class_count():
    with pytest.raises(ConfigError, match=r"classes: \[7\] out of range.*num_classes=5"):
        from_dict({"classes": [0, 7]})


def test_duplicate_classifier_names_are_rejected():
    with pytest.raises(ConfigError, match="names must be unique"):
        from_dict({"classifiers": [{"name": "a"}, {"name": "a"}]})


def test_unit_out_of_range_names_the_unit_count():
    cfg = from_dict({"tune": {"units": [3, 600]}})
    with pytest.raises(ConfigError, match=r"\[600\] out of range for classifier 'resnet18', which has 512 units"):
        analysed_units(cfg, "resnet18")


def test_unit_shards_cover_every_unit_once():
    cfg = from_dict({"tune": {"units_per_shard": 100}})
    shards = unit_shards(cfg, "regnet")
    assert [len(s) for s in shards] == [100, 100, 100, 100]
    assert sorted(u for s in shards for u in s) == list(range(400))


def test_demo_unit_table_matches_torchvision():
    from linkstyle.classifiers import last_linear
    from linkstyle.classifiers.demo import build_demo_net

    for arch, units in DEMO_UNITS.items():
        assert last_linear(build_demo_net(arch, 5, 64)).in_features == units


def test_digest_changes_only_with_its_sections():
    a = from_dict({})
    b = from_dict({"tune": {"n_steps": 5}})
    assert a.digest("link") == b.digest("link")
    assert a.digest("tune") != b.digest("tune")


def test_the_selection_reruns_for_new_sweep_bounds_only():
    """select reads tune.bounds and tune.percentiles: a new shard size must not redo the selection,
    and with it the link, the counterfactuals and every sweep."""
    base = from_dict({})
    assert from_dict({"tune": {"units_per_shard": 7, "n_steps": 5}}).stage_digest("select") == base.stage_digest("select")
    assert from_dict({"tune": {"bounds": "percentile"}}).stage_digest("select") != base.stage_digest("select")
    assert from_dict({"tune": {"percentiles": [5, 95]}}).stage_digest("select") != base.stage_digest("select")


def test_cli_reports_config_errors_cleanly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generator:\n  resolution: 16\n")
    proc = subprocess.run([sys.executable, "-m", "linkstyle", "config", "-c", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "generator.resolution: 16 is less than the minimum of 32" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_a_config_problem_names_the_file_and_line_that_set_the_key(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 1\ntune:\n  bounds: minmax\n")
    top = tmp_path / "top.yaml"
    top.write_text("# comment\ncounterfactual:\n  pairs:\n    - [fox, cat]\n    - [fox, dgo]\ntune:\n  bounds: median\n")
    with pytest.raises(ConfigError) as err:
        load_config([base, top])
    assert f"tune.bounds: 'median' is not allowed; valid values: minmax, percentile ({top}:7)" in str(err.value)
    top.write_text("counterfactual:\n  pairs:\n    - [fox, cat]\n    - [fox, dgo]\n")
    with pytest.raises(ConfigError) as err:
        load_config([base, top])
    assert f"unknown target class name 'dgo'; the critters world's 5 classes are fox, cat, mouse, lizard, badger ({top}:4)" in str(err.value)
    with pytest.raises(ConfigError) as err:  # a value the command line set is named as such, not the file
        load_config([base], {"tune": {"bounds": "median"}})
    assert str(err.value).endswith("(--set)")


def test_a_class_name_typo_for_a_stylegan_checkout_fails_when_the_config_loads(tmp_path, monkeypatch):
    """The names come from the checkout's label file (no weights needed); without the checkout the
    counterfactual stage checks them once the network loads."""
    from linkstyle.config import from_dict as config_from_dict

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sg/media").mkdir(parents=True)
    (tmp_path / "sg/media/imagenet_idx2labels.txt").write_text(
        "{0: 'tench, Tinca tinca',\n 1: 'goldfish, Carassius auratus',\n 2: 'great white shark, white shark'}\n")
    gen = {"kind": "stylegan", "pickle": "g.pkl", "repo": "sg", "num_classes": 3}
    rest = {"measure": {"segmenter": "whole_image"},
            "classifiers": [{"name": "r", "kind": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"}]}

    def from_dict(raw):
        return config_from_dict({**rest, **raw})

    with pytest.raises(ConfigError) as err:
        from_dict({"generator": gen, "counterfactual": {"pairs": [["tench", "goldfsh"]]}})
    assert ("unknown target class name 'goldfsh'; the generator's 3 classes are tench, goldfish, great white shark; "
            "did you mean 'goldfish'?") in str(err.value)
    assert from_dict({"generator": gen, "counterfactual": {"pairs": [["Tench", "great white shark"]]}})
    with pytest.raises(ConfigError, match="unknown origin class name 'tench'.* classes are class_0, class_1"):
        from_dict({"generator": {**gen, "repo": "sg/media"}, "counterfactual": {"pairs": [["tench", 1]]}})
    assert from_dict({"generator": {**gen, "repo": "absent"}, "counterfactual": {"pairs": [["tench", "goldfsh"]]}})


def test_imagenet_class_names_are_checked_without_the_checkout_or_the_weights():
    """A 1,000-class StyleGAN (StyleGAN-XL ImageNet, the presets) or BigGAN: ImageNet's names."""
    from linkstyle.class_names import class_index, imagenet_names
    from linkstyle.config import from_dict as config_from_dict

    names = imagenet_names()
    assert len(names) == 1000 and names[:2] == ("tench", "goldfish") and names[207] == "golden retriever"
    # the exact name first, then ignoring case: the corgi and the jacket differ in case only
    assert (class_index("Cardigan", names), class_index("cardigan", names), class_index("PUG", names)) == (264, 474, 254)
    assert class_index("pugg", names) is None
    rest = {"measure": {"segmenter": "whole_image"}, "classes": [207, 254],
            "classifiers": [{"name": "r", "kind": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"}]}
    for gen in ({"kind": "stylegan", "pickle": "g.pkl", "repo": "absent", "num_classes": 1000},
                {"kind": "biggan", "weights_dir": "biggan", "num_classes": 1000}):
        ok = config_from_dict({**rest, "generator": gen, "counterfactual": {"pairs": [["golden retriever", "Pug"]]}})
        assert ok.counterfactual.pairs == (("golden retriever", "Pug"),)
        with pytest.raises(ConfigError) as err:
            config_from_dict({**rest, "generator": gen, "counterfactual": {"pairs": [["golden retriever", "pugg"]]}})
        assert "unknown target class name 'pugg'; the generator's 1000 classes are tench, goldfish" in str(err.value)
        assert "did you mean 'pug'?" in str(err.value)


def test_a_class_name_typo_in_the_builtin_world_fails_when_the_config_loads():
    with pytest.raises(ConfigError) as err:
        from_dict({"counterfactual": {"pairs": [["fox", "cta"], ["Fox", "mouse"]]}, "classes": [0, 1]})
    text = str(err.value)
    assert "counterfactual.pairs[0]: unknown target class name 'cta'" in text and "did you mean 'cat'?" in text
    assert "counterfactual.pairs[1]: target class 'mouse' (index 2) is not among the analysed classes [0, 1]" in text
    # names are case-insensitive, as the counterfactual stage reads them
    assert from_dict({"counterfactual": {"pairs": [["FOX", "cat"]]}}).counterfactual.pairs == (("FOX", "cat"),)


def test_a_class_name_typo_fails_in_the_cli_and_the_dry_run_within_seconds(tmp_path):
    import time

    from .conftest import REPO, run_snakemake

    bad = tmp_path / "typo.yaml"
    bad.write_text("counterfactual: {pairs: [[fox, dgo]]}\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "linkstyle", "config", "-c", str(bad)], capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    assert proc.returncode != 0 and "unknown target class name 'dgo'" in proc.stderr
    assert seconds < 3.0, seconds
    proc = run_snakemake("--directory", str(tmp_path), "--configfile", str(bad), "-n")
    assert proc.returncode != 0 and "unknown target class name 'dgo'" in proc.stdout + proc.stderr


def _schema_keys(props: dict, prefix: str = "") -> dict:
    out = {}
    for key, spec in props.items():
        name = f"{prefix}{key}"
        if spec.get("type") == "object" and "properties" in spec:
            out.update(_schema_keys(spec["properties"], name + "."))
        elif spec.get("type") == "array" and "properties" in (spec.get("items") or {}):
            out[name] = spec
            out.update(_schema_keys(spec["items"]["properties"], name + "[]."))
        else:
            out[name] = spec
    return out


def test_the_config_table_documents_every_key_with_its_default():
    """config/README.md's table and the schema name the same keys, and a default written as one literal
    is the schema's (ranges such as [0.001 … 1000] are left to the eye)."""
    import re

    import yaml

    from .conftest import REPO

    keys = _schema_keys(schema()["properties"])
    rows = dict(re.findall(r"^\| `([^`]+)` \| (.*?) \|", (REPO / "config" / "README.md").read_text(), re.M))
    assert set(keys) == set(rows), (sorted(set(keys) - set(rows)), sorted(set(rows) - set(keys)))
    wrong = []
    for key, cell in rows.items():
        literal = re.fullmatch(r"`([^`…]*)`", cell.strip())
        if literal and "default" in keys[key] and yaml.safe_load(literal.group(1)) != keys[key]["default"]:
            wrong.append((key, literal.group(1), keys[key]["default"]))
    assert not wrong, wrong
