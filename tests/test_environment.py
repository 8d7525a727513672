"""One pinned environment: constraints.txt (what `make install` installs), envs/linkstyle.yaml (the
cluster jobs' conda env) and this venv agree."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import yaml

from .conftest import REPO

MAKEFILE_PINS = {"torch": "2.14.1", "torchvision": "0.29.1"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_name(name)] = version.strip()
    return pins


def _conda_pip_pins() -> dict[str, str]:
    env = yaml.safe_load((REPO / "envs" / "linkstyle.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert all("==" in r for r in pip), "every pip requirement of the conda env is pinned"
    return {_name(r): r.split("==")[1].strip() for r in pip}


def test_the_conda_env_pins_the_locked_versions():
    locked = {**_constraints(), **MAKEFILE_PINS}
    for name, version in _conda_pip_pins().items():
        assert locked.get(name) == version, f"envs/linkstyle.yaml pins {name}=={version}, constraints.txt {locked.get(name)}"


def test_the_conda_env_has_every_runtime_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {_name(r) for r in project["dependencies"]} | {_name(r) for r in project["optional-dependencies"]["models"]}
    assert needed <= set(_conda_pip_pins()), needed - set(_conda_pip_pins())


def test_this_environment_is_the_locked_one():
    """`make install` on a fresh clone gives constraints.txt's versions (and the Makefile's torch)."""
    wrong = {}
    for name, version in {**_constraints(), **MAKEFILE_PINS}.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, None)
            continue
        if installed.split("+")[0] != version:
            wrong[name] = (version, installed)
    assert not wrong, f"locked vs installed: {wrong}; run `make install` (or `make lock` after changing a dependency)"
