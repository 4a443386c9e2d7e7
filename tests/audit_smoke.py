"""One Snakemake run of the smoke suite per test session, shared by tests/test_audit.py and tests/test_report.py.

The run happens in a temporary working directory with the checkout's Snakefile and config.yaml; tests that modify
results work on copies (:func:`copy_workdir`, which keeps modification times so Snakemake sees an up-to-date DAG).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = "smoke"
_RUNS: dict[str, Path] = {}


def environment() -> dict[str, str]:
    """The test's environment with this interpreter's scripts (``dwgf``, ``snakemake``) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def snakemake(workdir: Path, *args: str, targets: tuple[str, ...] = (), timeout: float = 3600):
    """``snakemake -s <repo>/Snakefile --configfile <repo>/config.yaml -c 2 [targets] --config suite=smoke [args]``."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--configfile",
        str(REPO / "config.yaml"),
        "-c",
        "2",
        *targets,  # before --config, which takes every following word as a key=value pair
        "--config",
        f"suite={SUITE}",
        *args,
    ]
    return run(command, workdir, timeout)


def run(command: list[str] | str, workdir: Path, timeout: float = 3600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command,
        cwd=workdir,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        shell=isinstance(command, str),
        executable="/bin/bash" if isinstance(command, str) else None,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"command failed (exit {result.returncode}) in {workdir}: {command}\n"
            f"--- stdout (tail) ---\n{result.stdout[-6000:]}\n--- stderr (tail) ---\n{result.stderr[-6000:]}"
        )
    return result


def smoke_workdir(tmp_path_factory) -> Path:
    """The working directory of the session's one complete smoke run (``<workdir>/results/smoke``).

    ``DWGF_SMOKE_WORKDIR=<dir>`` reuses a finished run made with this checkout (tests only read it, or copy it).
    """
    reuse = os.environ.get("DWGF_SMOKE_WORKDIR")
    if reuse and "smoke" not in _RUNS:
        if not (Path(reuse) / "results" / SUITE / "metrics.parquet").is_file():
            raise FileNotFoundError(f"DWGF_SMOKE_WORKDIR={reuse} holds no finished smoke run (results/{SUITE})")
        _RUNS["smoke"] = Path(reuse)
    if "smoke" not in _RUNS:
        workdir = tmp_path_factory.mktemp("smoke-run")
        snakemake(workdir)
        _RUNS["smoke"] = workdir
    return _RUNS["smoke"]


def copy_workdir(source: Path, target: Path) -> Path:
    """A copy of a workflow directory (results and .snakemake metadata) with modification times kept."""
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("locks", "incomplete"))
    return target
