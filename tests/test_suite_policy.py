"""The suite's time budget (tests/_suite_policy.py): slow tests are deselected by default and run when asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

SAMPLE = """
import pytest

def test_quick():
    pass

@pytest.mark.slow
def test_long():
    sum(range(10))

@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2])
def test_long_cases(n):
    pass
"""


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("policy")
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: long\naddopts = --strict-markers\n")
    (root / "conftest.py").write_text('pytest_plugins = ["_suite_policy"]\n')
    (root / "test_sample.py").write_text(SAMPLE)
    return root


def _selected(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sorted(line.split("::", 1)[1] for line in result.stdout.splitlines() if line.startswith("test_sample.py::"))


@pytest.mark.parametrize(
    "args, expected",
    [
        ((), ["test_quick"]),
        (("--run-slow",), ["test_long", "test_long_cases[1]", "test_long_cases[2]", "test_quick"]),
        (("-m", "slow"), ["test_long", "test_long_cases[1]", "test_long_cases[2]"]),
        (("-m", "not slow"), ["test_quick"]),
        (("test_sample.py",), ["test_quick"]),  # a file is not a named test: its slow tests stay out
        (("test_sample.py::test_long",), ["test_long"]),  # a test named by node id runs although slow
        (("test_sample.py::test_long_cases",), ["test_long_cases[1]", "test_long_cases[2]"]),
        (("test_sample.py::test_long_cases[2]", "test_sample.py::test_quick"), ["test_long_cases[2]", "test_quick"]),
    ],
)
def test_slow_tests_run_only_when_asked_for(sample, args, expected):
    assert _selected(_pytest(sample, "--collect-only", "-q", *args)) == expected


def test_deselection_is_reported_and_cpu_durations_rank_tests(sample):
    result = _pytest(sample, "-q", "--cpu-durations=2")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 tests marked slow were deselected" in result.stdout and "1 passed, 3 deselected" in result.stdout
    assert "CPU seconds per test (self + children), top 2" in result.stdout
    assert "test_sample.py::test_quick" in result.stdout and "total: 1 tests" in result.stdout


def test_the_repository_suite_deselects_its_slow_tests_by_default():
    # tests/conftest.py registers the plugin: a slow test of the real suite is out by default (--run-slow: above)
    result = _pytest(REPO, "--collect-only", "-q", "tests/test_gpu_matrix.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test_matrix_runs_end_to_end_at_tiny_size" not in result.stdout and "1 deselected" in result.stdout
    assert "1 tests marked slow were deselected" in result.stdout


def test_ci_runs_the_default_set_then_the_slow_set():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("make test")]
    assert len(ci) == 2 and "-m slow" not in ci[0] and "-m slow" in ci[1], ci
    makefile = (REPO / "Makefile").read_text()
    assert "\ntest-all: $(STAMP)\n\t$(RUN) $(BIN)/python -m pytest --run-slow $(ARGS)\n" in makefile
