"""pyproject.toml and environment.yml install the same dependencies."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _specs(lines) -> dict[str, str]:
    specs = {}
    for line in lines:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name not in specs, f"{name} is listed twice"
        specs[name] = str(requirement.specifier)
    return specs


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_lists_the_same_requirements_as_pyproject():
    project = _pyproject()
    wanted = _specs(project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                               for r in extra])
    conda, pip = [], []
    for entry in _environment()["dependencies"]:
        if isinstance(entry, dict):
            pip += [line for line in entry["pip"] if not line.startswith("-e")]
        elif canonicalize_name(Requirement(entry).name) not in ("python", "pip"):
            conda.append(entry)
    assert _specs(conda + pip) == wanted


def test_environment_installs_the_package_from_the_checkout_with_all_extras():
    pip = next(e["pip"] for e in _environment()["dependencies"] if isinstance(e, dict))
    extras = sorted(_pyproject()["optional-dependencies"])
    assert f"-e .[{','.join(extras)}]" in pip


def test_python_versions_agree():
    python = next(e for e in _environment()["dependencies"] if isinstance(e, str) and e.startswith("python"))
    assert str(Requirement(python).specifier) == _pyproject()["requires-python"]
