"""The research suite (config.yaml ``research`` / ``research_smoke``, docs/findings.md): named method variants of a
solver, the suite's plan, and the smoke slice run end to end through the DAG."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import yaml
from audit_smoke import REPO, environment

from dwgf.pipeline.config import ConfigError, validate_config
from dwgf.pipeline.plan import MAIN, Plan

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def with_suite(suite: str, edit=None) -> dict:
    config = copy.deepcopy(CONFIG)
    config["suite"] = suite
    if edit is not None:
        edit(config["suites"][suite])
    return config


def test_named_variants_resolve_to_their_solver():
    plan = Plan(with_suite("research"))
    variants = [m for m in plan.methods if m not in ("dwgf", "psld", "rlsd", "latent_dps")]
    assert len(variants) >= 9 and all(plan.solver(m) == "dwgf" for m in variants)
    spec = plan.solve_spec("dwgf_svgd", "sr32", MAIN)
    assert spec["solver"] == "dwgf" and spec["hyper"]["svgd_weight"] == 100.0
    assert "solver" not in plan.solve_spec("dwgf", "sr32", MAIN)  # plain methods keep their specs (no re-solve)
    # every variant differs from plain DWGF in its hyper-parameters
    base = plan.settings("dwgf", "box")["hyper"]
    assert all(plan.settings(m, "box")["hyper"] != base for m in variants)
    # research questions 1, 2, 5 as ablations; the multimodal task and the CS ratios are tasks
    assert {a.name for a in plan.ablations} >= {"steps_dwgf", "steps_psld", "steps_rlsd", "steps_latent_dps",
                                                "kde_weight", "svgd_weight", "sigma_enc"}  # fmt: skip
    assert {"sr32", "cs2", "cs10", "cs25"} <= set(plan.tasks)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["methods"]["dwgf_svgd"]["hyper"].update(omega=1.0), "omega"),
        (lambda s: s["methods"]["dwgf_svgd"].update(solver="nope"), "nope"),
        (lambda s: s["methods"]["dwgf_svgd"]["hyper"].update(lr_schedule="step"), "step"),
    ],
)
def test_named_variant_hyper_is_checked_like_its_solver(edit, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(with_suite("research", edit))


def test_method_without_solver_key_is_still_refused():
    config = with_suite("research_smoke", lambda s: s["methods"].update(foo={"n_particles": 1, "n_steps": 1}))
    with pytest.raises(ConfigError, match="foo"):
        validate_config(config)


@pytest.mark.slow
def test_research_smoke_runs_through_the_dag(tmp_path):
    """~80 CPU-s: the smoke slice (2 images, box + SR x32, DWGF and three named variants) end to end."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
               str(REPO / "config.yaml"), "-c", "2", "--config", "suite=research_smoke",
               f"results={tmp_path}"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    from dwgf.metrics.schema import read_metrics

    df = read_metrics(tmp_path / "research_smoke" / "metrics.parquet")
    assert set(df["method"]) == {"dwgf", "dwgf_svgd", "dwgf_bayes", "dwgf_langevin"}
    for metric in ("mode_coverage", "posterior_weight_entropy", "calibration_ratio", "spread_ratio"):
        rows = df[(df.metric == metric) & (df.status == "ok")]
        assert set(rows["method"]) == {"dwgf", "dwgf_svgd", "dwgf_bayes", "dwgf_langevin"}, metric
    record = json.loads(
        next(
            (tmp_path / "research_smoke" / "solve" / "dwgf_svgd" / "box" / "main").glob("shard-*.prov.json")
        ).read_text()
    )
    assert "dwgf_svgd" in json.dumps(record)
    table = (tmp_path / "research_smoke" / "tables" / "main.md").read_text()
    assert "DWGF + SVGD" in table and "DWGF Bayes-weighted" in table
