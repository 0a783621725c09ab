"""environment.yml (conda-forge) names the same packages and version ranges as pyproject.toml.

Both files are parsed into ``{name: specifier set}`` maps, with conda-forge's
names mapped to PyPI's (``pytorch`` is ``torch``); a drift fails with a diff.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli", reason="tomli is needed on Python 3.10")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"

# conda-forge name -> PyPI name, where the two differ.
CONDA_TO_PYPI = {"pytorch": "torch"}
# Not packages of the project: the interpreter and the installer.
CONDA_ONLY = {"python", "pip"}
SELF = canonicalize_name("linquant-helpers")
CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")


def _pypi_name(conda_name: str) -> str:
    return canonicalize_name(CONDA_TO_PYPI.get(conda_name.lower(), conda_name))


def _add(deps: dict[str, SpecifierSet], name: str, spec: SpecifierSet, where: str) -> None:
    if name in deps:
        raise AssertionError(f"{name} is listed twice in {where}")
    deps[name] = spec


def pyproject_dependencies() -> dict[str, SpecifierSet]:
    """The runtime dependencies and every extra of pyproject.toml (without the self-reference)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    deps: dict[str, SpecifierSet] = {}
    for line in requirements:
        req = Requirement(line)
        if canonicalize_name(req.name) != SELF:
            _add(deps, canonicalize_name(req.name), req.specifier, "pyproject.toml")
    return deps


def environment() -> dict:
    return yaml.safe_load(ENVIRONMENT.read_text())


def environment_dependencies() -> tuple[dict[str, SpecifierSet], list[str]]:
    """The conda and pip packages of environment.yml, and its pip install options (``-e .``)."""
    deps: dict[str, SpecifierSet] = {}
    options: list[str] = []
    for entry in environment()["dependencies"]:
        if isinstance(entry, dict):
            for line in entry.get("pip", []):
                if line.startswith("-"):
                    options.append(line)
                    continue
                req = Requirement(line)
                _add(deps, canonicalize_name(req.name), req.specifier, "environment.yml")
            continue
        match = CONDA_SPEC.match(str(entry))
        assert match, f"cannot read the conda spec {entry!r} in environment.yml"
        name, spec = match.groups()
        if name.lower() in CONDA_ONLY:
            continue
        # conda writes "numpy 1.24.*" or "numpy >=1.24"; the ranges here use pip's syntax
        _add(deps, _pypi_name(name), SpecifierSet(spec.replace(" ", "")), "environment.yml")
    return deps, options


def _diff(expected: dict[str, SpecifierSet], actual: dict[str, SpecifierSet]) -> str:
    lines = []
    for name in sorted(expected.keys() - actual.keys()):
        lines.append(f"  missing from environment.yml: {name}{expected[name]}")
    for name in sorted(actual.keys() - expected.keys()):
        lines.append(f"  in environment.yml but not in pyproject.toml: {name}{actual[name]}")
    for name in sorted(expected.keys() & actual.keys()):
        if expected[name] != actual[name]:
            lines.append(
                f"  {name}: pyproject.toml says '{expected[name]}', "
                f"environment.yml says '{actual[name]}'"
            )
    return "\n".join(lines)


def test_environment_yml_matches_pyproject():
    expected = pyproject_dependencies()
    actual, _ = environment_dependencies()
    diff = _diff(expected, actual)
    assert not diff, (
        "environment.yml and pyproject.toml have drifted apart (conda-forge names mapped "
        f"to PyPI's: {CONDA_TO_PYPI}):\n{diff}"
    )


def test_environment_yml_uses_conda_forge_and_installs_the_package():
    env = environment()
    assert env.get("channels") == ["conda-forge"], env.get("channels")
    _, options = environment_dependencies()
    assert "-e ." in options, "environment.yml's pip section must install the package: '-e .'"


def test_environment_yml_python_matches_requires_python():
    requires = SpecifierSet(tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"])
    pythons = [
        CONDA_SPEC.match(str(e)).group(2).replace(" ", "")
        for e in environment()["dependencies"]
        if isinstance(e, str) and CONDA_SPEC.match(e).group(1) == "python"
    ]
    assert pythons == [str(requires)], f"environment.yml python {pythons}, pyproject {requires}"


def test_the_diff_names_what_drifted():
    # The helper that explains a failure, on a made-up drift.
    expected = {"torch": SpecifierSet(">=2.3,<2.14"), "numpy": SpecifierSet(">=1.24")}
    actual = {
        "torch": SpecifierSet("<2.14,>=2.3"),
        "numpy": SpecifierSet(">=2"),
        "tqdm": SpecifierSet(),
    }
    diff = _diff(expected, actual)
    assert "numpy: pyproject.toml says '>=1.24', environment.yml says '>=2'" in diff
    assert "in environment.yml but not in pyproject.toml: tqdm" in diff
    assert "torch" not in diff  # the same range written in another order
    assert "missing from environment.yml: torch" in _diff(expected, {})
