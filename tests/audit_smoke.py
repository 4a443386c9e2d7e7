"""The smoke-suite runs of a test session, made at most once each and shared by tests/test_workflow.py,
tests/test_audit.py and tests/test_report.py:

* :func:`smoke_workdir`: one clean, uninterrupted run. Tests only read it (``snakemake --report`` writes
  ``report.html`` beside ``results/``, see :func:`smoke_report`); tests that modify results or re-run jobs work on
  copies (:func:`copy_workdir`, which keeps modification times so Snakemake sees an up-to-date DAG).
* :func:`resumed_workdir`: a second, independent run that is SIGKILLed mid-way and resumed. It is both the resume
  check (same metrics as the clean run) and the reproducibility check (same observation and solver bytes).

Runs happen in temporary working directories with the checkout's Snakefile and config.yaml.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = "smoke"
_RUNS: dict[str, object] = {}


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


def smoke_report(tmp_path_factory) -> Path:
    """``report.html`` of the clean run (``snakemake --report``), made once per session beside ``results/``."""
    workdir = smoke_workdir(tmp_path_factory)
    out = workdir / "report.html"
    if "report" not in _RUNS or not out.is_file():
        snakemake(workdir, "--report", str(out))
        _RUNS["report"] = out
    return out


@dataclass(frozen=True)
class ResumedRun:
    """A smoke run killed (SIGKILL to the process group) once ``shards_at_kill`` solve shards were recorded."""

    workdir: Path
    shards_at_kill: int
    finished_at_kill: bool  # metrics.parquet existed when it was killed (then it was not interrupted mid-way)


def resumed_workdir(tmp_path_factory, kill_after_shards: int = 3) -> ResumedRun:
    """An independent smoke run, killed after ``kill_after_shards`` solve shard records, then unlocked and resumed
    with ``--rerun-incomplete`` (workflow/README.md "Interrupting and resuming"). Made once per session."""
    if "resumed" in _RUNS:
        return _RUNS["resumed"]
    if "resumed-error" in _RUNS:  # one failed attempt per session: a second would cost another full run
        raise AssertionError(
            f"the killed-and-resumed smoke run failed earlier in this session: {_RUNS['resumed-error']}"
        )
    try:
        _RUNS["resumed"] = _killed_and_resumed(tmp_path_factory.mktemp("smoke-resumed"), kill_after_shards)
    except Exception as error:
        _RUNS["resumed-error"] = error
        raise
    return _RUNS["resumed"]


def _killed_and_resumed(workdir: Path, kill_after_shards: int) -> ResumedRun:
    root = workdir / "results" / SUITE
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile"]
    command += [str(REPO / "config.yaml"), "-c", "2", "--config", f"suite={SUITE}"]
    process = subprocess.Popen(
        command, cwd=workdir, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 1800
        while len(list(root.glob("solve/*/*/*/shard-*.prov.json"))) < kill_after_shards:
            if process.poll() is not None:
                raise AssertionError(f"the run in {workdir} ended (exit {process.returncode}) before it was killed")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kill_after_shards} solve shards finished in {workdir} within 30 min")
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole process group: snakemake and its running jobs
        process.wait()
    shards = len(list(root.glob("solve/*/*/*/shard-*.prov.json")))
    finished = (root / "metrics.parquet").exists()
    snakemake(workdir, "--unlock")  # a killed Snakemake leaves its directory lock behind
    snakemake(workdir, "--rerun-incomplete")
    return ResumedRun(workdir, shards, finished)
