"""benchmarks/research_cost.py: a suite's CPU estimate from a measured run knows the per-method task restriction and
reproduces the measured run itself (issue 14's budget)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import yaml
from audit_smoke import REPO
from test_research_suite import with_suite

from dwgf.pipeline.plan import Plan

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _script():
    spec = importlib.util.spec_from_file_location("research_cost", REPO / "benchmarks" / "research_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(path, cpu: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"1.0\t0:00:01\t1\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def _measured_run(tmp_path) -> tuple:
    """A fake measured run of research_smoke: every solve 10 CPU-s + 1 per image-step, evaluation 2 per image."""
    config = with_suite("research_smoke")
    plan = Plan(config)
    run = tmp_path / "run"
    (run / "run").mkdir(parents=True)
    (run / "run" / "invocation.json").write_text(json.dumps({"config": config}))
    bench = run / "benchmarks"
    for job in plan.solve_jobs():
        steps = len(job.ids) * plan.settings(job.method, job.task, job.variant)["n_steps"]
        _bench(bench / "solve" / job.method / job.task / job.variant / f"shard-{job.shard}.tsv", 10.0 + steps)
    for task in plan.tasks:
        images = sum(len(j.ids) for j in plan.solve_jobs() if j.task == task)
        _bench(bench / "evaluate_batch" / f"{task}.tsv", 4.0 + 2.0 * images)
        _bench(bench / "observe" / f"{task}.tsv", 1.0)
    return config, plan, run


def _estimate(monkeypatch, capsys, run, config_path, *extra) -> str:
    argv = ["research_cost.py", str(run), "--suite", "research_smoke", "--config", str(config_path)]
    argv += ["--overhead", "4", "--evaluate-overhead", "4", *extra]
    monkeypatch.setattr(sys, "argv", argv)
    _script().main()
    return capsys.readouterr().out


def _total(out: str) -> float:
    return float(re.search(r"total (\d+)", out).group(1))


def test_the_estimate_of_the_measured_suite_is_what_it_measured(tmp_path, monkeypatch, capsys):
    config, plan, run = _measured_run(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = _estimate(monkeypatch, capsys, run, path, "--measured-total", "1000")
    solves = sum(10.0 + len(j.ids) * plan.settings(j.method, j.task, j.variant)["n_steps"] for j in plan.solve_jobs())
    assert f"({len(plan.solve_jobs())} measured as such)" in out
    assert f"solve {solves:.0f}," in out
    assert "calibrated estimate 1000 CPU-s" in out  # the measured run, calibrated to its own total


def test_a_task_restriction_leaves_its_jobs_and_their_evaluation_out_of_the_estimate(tmp_path, monkeypatch, capsys):
    config, plan, run = _measured_run(tmp_path)
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump(config))
    left_out = [j for j in plan.solve_jobs() if (j.method, j.task) == ("dwgf_svgd", "box")]
    assert left_out
    saved = sum(10.0 + len(j.ids) * plan.settings(j.method, j.task, j.variant)["n_steps"] for j in left_out)
    config["suites"]["research_smoke"]["methods"]["dwgf_svgd"]["tasks"] = ["sr32"]
    restricted = tmp_path / "restricted.yaml"
    restricted.write_text(yaml.safe_dump(config))
    saved += 2.0 * sum(len(j.ids) for j in left_out)  # their images' share of the box evaluation
    before = _total(_estimate(monkeypatch, capsys, run, full))
    after = _total(_estimate(monkeypatch, capsys, run, restricted))
    assert abs(before - after - saved) <= 1.0  # printed totals are rounded to whole CPU-s
