"""environment.yml (for conda clusters) must list exactly the packages pyproject.toml requires."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(requirements: list[str]) -> dict[str, str]:
    return {_name(r): r.replace(" ", "")[len(_name(r)) :] for r in requirements}


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = _pins(pyproject["project"]["dependencies"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_name(r): r.replace(" ", "")[len(_name(r)) :] for r in pip_section}
    assert set(listed) == set(required), (
        f"only in environment.yml: {sorted(set(listed) - set(required))}; "
        f"only in pyproject.toml: {sorted(set(required) - set(listed))}"
    )
    mismatched = {k: (listed[k], required[k]) for k in required if listed[k] != required[k]}
    assert not mismatched, f"version specifiers differ (environment.yml, pyproject.toml): {mismatched}"


def test_environment_yml_python_matches_requires_python():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = pyproject["project"]["requires-python"].removeprefix(">=")
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major_minor = tuple(int(p) for p in python.split("=")[1].split(".")[:2])
    assert major_minor >= tuple(int(p) for p in floor.split(".")[:2])
