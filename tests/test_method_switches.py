"""Opt-in method rows (``enabled: false``) and ablations of a named variant (config.yaml, paper / research suites)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from audit_smoke import REPO, environment
from test_research_suite import CONFIG, with_suite  # one config loader for the suite tests

from dwgf.pipeline.config import ConfigError, validate_config
from dwgf.pipeline.plan import Plan
from dwgf.pipeline.preflight import check_methods


def test_a_disabled_method_is_declared_but_planned_nowhere():
    config = with_suite("paper")
    validate_config(config)
    plan = Plan(config)
    assert plan.disabled_methods == ["dwgf_langevin_3x"]
    assert "dwgf_langevin_3x" not in plan.methods
    assert all(job.method != "dwgf_langevin_3x" for job in plan.solve_jobs())
    enabled = with_suite("paper", lambda s: s["methods"]["dwgf_langevin_3x"].update(enabled=True))
    validate_config(enabled)
    jobs = [job for job in Plan(enabled).solve_jobs() if job.method == "dwgf_langevin_3x"]
    assert {job.task for job in jobs} == set(CONFIG["suites"]["paper"]["tasks"]) and jobs
    assert Plan(enabled).settings("dwgf_langevin_3x", "box")["n_steps"] == 2994


def test_enabled_must_be_a_boolean():
    with pytest.raises(ConfigError, match="enabled"):
        validate_config(with_suite("paper", lambda s: s["methods"]["dwgf_langevin_3x"].update(enabled="yes")))


def test_an_ablation_of_a_disabled_method_is_refused_with_the_key_to_change():
    def edit(suite):
        suite["ablations"]["steps_3x"] = {"method": "dwgf_langevin_3x", "parameter": "n_steps", "label": "steps",
                                          "values": [998], "tasks": ["box"], "images": 1}  # fmt: skip

    config = with_suite("paper", edit)
    validate_config(config)
    with pytest.raises(ConfigError, match=r"enabled: false.*methods\.dwgf_langevin_3x\.enabled"):
        Plan(config)


def test_a_named_variant_can_be_ablated_beyond_the_time_grid_when_its_flow_repeats_timesteps():
    config = with_suite("research")
    validate_config(config)
    plan = Plan(config)
    variants = plan.variants("dwgf_langevin", "sr8")
    assert any(plan.settings("dwgf_langevin", "sr8", v)["n_steps"] == 2994 for v in variants)
    check_methods(plan)  # the Langevin flow accepts n_steps > the 998-step DWGF grid
    # plain DWGF still may not: its grid t = 999 -> 2 has 998 steps
    bad = with_suite("research", lambda s: s["ablations"]["steps_dwgf"].update(values=[2994]))
    with pytest.raises(ConfigError, match="n_steps"):
        check_methods(Plan(bad))


def test_a_config_file_overlay_switches_an_opt_in_row_on(tmp_path):
    """The documented switch: Snakemake merges --configfile files key by key, so three nested keys enable a row."""
    overlay = tmp_path / "enable.yaml"
    overlay.write_text("suites: {paper: {methods: {dwgf_langevin_3x: {enabled: true}}}}\n")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-c", "1",
               "--configfile", str(REPO / "config.yaml"), str(overlay), "--config", "suite=paper"]  # fmt: skip
    env = {**environment(), "DWGF_ALLOW_MISSING_CUDA": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"solve/dwgf_langevin_3x/", result.stdout)
    solves = re.search(r"^solve\s+(\d+)$", result.stdout, re.M)
    assert solves and int(solves.group(1)) > 148  # the paper suite's 148 solves plus the opt-in row's
