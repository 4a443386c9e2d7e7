"""Two pytest plugins for the suite's time budget, registered by ``tests/conftest.py``.

1. **Slow tests are opt-in.** ``python -m pytest`` (``make test``) deselects tests marked ``slow`` so the default
   suite stays within its budget (<= 15 min on 2 CPU cores). They run with ``--run-slow`` (``make test-all``: the
   whole suite), with any ``-m`` expression (``-m slow``: only the slow ones; the expression then decides alone),
   or when named by node id (``pytest tests/test_x.py::test_slow_thing``). CI runs the default set, then ``-m slow``.
2. **CPU seconds per test.** ``--cpu-durations=N`` reports the N tests with the most CPU seconds, counting this
   process and its child processes (``getrusage`` ``RUSAGE_SELF`` + ``RUSAGE_CHILDREN`` deltas around setup, call
   and teardown, so a fixture's set-up is charged to the first test that needs it). Wall time on a shared machine
   says little about cost; CPU seconds do. A child's CPU is counted once it is waited for, which is what
   ``subprocess.run`` does; a daemon such as ``slurmd`` running a job is not counted (its time shows as wall only).

Measured on 2026-12-01 with ``nice python -m pytest -q -p no:cacheprovider -m "not slow and not slurm"
--cpu-durations=80`` (a shared 2-core machine at load ~11, Slurm down): 568 passed, 20 skipped in 344 CPU-s
(self + children), no test above 29 CPU-s (tests/test_baselines.py's test-bed particle-mean checks, 23-29 s).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

_CPU_KEY = pytest.StashKey[dict]()
_SLOW_KEY = pytest.StashKey[int]()


def pytest_addoption(parser):
    group = parser.getgroup("dwgf suite budget")
    group.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run tests marked slow (deselected by default unless -m is given or the test is named by node id)",
    )
    group.addoption(
        "--cpu-durations",
        type=int,
        default=None,
        metavar="N",
        help="report the N tests with the most CPU seconds (this process + waited-for children; 0 = all)",
    )


def _explicit_node_ids(config) -> list[str]:
    """The command line's ``path::name`` arguments as node ids relative to the rootdir."""
    ids = []
    for arg in config.args:
        if "::" not in arg:
            continue
        path, _, rest = arg.partition("::")
        resolved = (Path(config.invocation_params.dir) / path).resolve()
        try:
            rel = resolved.relative_to(config.rootpath).as_posix()
        except ValueError:
            rel = path
        ids.append(f"{rel}::{rest}")
    return ids


def _named(nodeid: str, explicit: list[str]) -> bool:
    return any(nodeid == e or nodeid.startswith((e + "::", e + "[")) for e in explicit)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or config.getoption("markexpr"):
        return
    explicit = _explicit_node_ids(config)
    keep, slow = [], []
    for item in items:
        (slow if "slow" in item.keywords and not _named(item.nodeid, explicit) else keep).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = keep
        config.stash[_SLOW_KEY] = len(slow)


def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if item.config.getoption("--cpu-durations") is None:
        yield
        return
    cpu0, wall0 = _cpu_now(), time.perf_counter()
    yield
    item.config.stash.setdefault(_CPU_KEY, {})[item.nodeid] = (_cpu_now() - cpu0, time.perf_counter() - wall0)


def pytest_terminal_summary(terminalreporter, config):
    n_slow = config.stash.get(_SLOW_KEY, 0)
    if n_slow:
        terminalreporter.write_line(
            f"{n_slow} tests marked slow were deselected: `make test-all` (pytest --run-slow) runs them too, "
            "`pytest -m slow` only them"
        )
    n = config.getoption("--cpu-durations")
    if n is None:
        return
    costs = config.stash.get(_CPU_KEY, {})
    ranked = sorted(costs.items(), key=lambda kv: kv[1][0], reverse=True)
    total_cpu = sum(c for c, _ in costs.values())
    total_wall = sum(w for _, w in costs.values())
    terminalreporter.write_sep("=", f"CPU seconds per test (self + children), top {n or len(ranked)}")
    terminalreporter.write_line(f"{'cpu_s':>8} {'wall_s':>8}  test")
    for nodeid, (cpu, wall) in ranked[: n or None]:
        terminalreporter.write_line(f"{cpu:8.1f} {wall:8.1f}  {nodeid}")
    per_file: dict[str, float] = {}
    for nodeid, (cpu, _) in costs.items():
        per_file[nodeid.split("::")[0]] = per_file.get(nodeid.split("::")[0], 0.0) + cpu
    terminalreporter.write_line(
        "per file (cpu_s): "
        + ", ".join(f"{Path(f).name}={c:.0f}" for f, c in sorted(per_file.items(), key=lambda kv: -kv[1]))
    )
    terminalreporter.write_line(f"total: {len(costs)} tests, {total_cpu:.1f} CPU s, {total_wall:.1f} wall s")
