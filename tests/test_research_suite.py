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
    # every variant differs from plain DWGF in its hyper-parameters (on a task it runs on: its `tasks` key)
    base = plan.settings("dwgf", "box")["hyper"]
    assert all(plan.settings(m, plan.method_tasks(m)[0])["hyper"] != base for m in variants)
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


@pytest.fixture(scope="module")
def research_smoke(tmp_path_factory):
    """The research_smoke suite run end to end through the DAG (results folder)."""
    tmp_path = tmp_path_factory.mktemp("research_smoke")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
               str(REPO / "config.yaml"), "-c", "2", "--config", "suite=research_smoke",
               f"results={tmp_path}"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path


@pytest.mark.slow
def test_research_smoke_runs_through_the_dag(research_smoke):
    """~100 CPU-s: the smoke slice (one image per set, box + SR x32, DWGF and three named variants) end to end."""
    from dwgf.metrics.schema import read_metrics

    tmp_path = research_smoke

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
    for image_set in ("well_specified", "held_out", "ood"):  # the sets are never averaged together
        assert f"#### Box inpainting · set {image_set}" in table and f"#### SR x32 · set {image_set}" in table


@pytest.mark.slow
def test_research_smoke_task_restriction_plans_nothing_and_tables_say_not_run(research_smoke, tmp_path):
    """dwgf_bayes runs on box only (its `tasks` key): no SR x32 solve or metric row, and the main and runtime
    tables read "not run" in its SR x32 cells (not a failure, not incomplete)."""
    from dwgf.metrics.schema import read_metrics
    from dwgf.reporting.tables import NOT_RUN, flatten_markdown

    root = research_smoke / "research_smoke"
    df = read_metrics(root / "metrics.parquet")
    assert set(df[df["method"] == "dwgf_bayes"]["task"]) == {"box"}
    assert not (root / "solve" / "dwgf_bayes" / "sr32").exists() and (root / "solve" / "dwgf_bayes" / "box").is_dir()
    flat = flatten_markdown((root / "tables" / "main.md").read_text())
    header, _, *rows = (line.split(" | ") for line in flat.splitlines())
    (bayes,) = [row for row in rows if row[0] == "| DWGF Bayes-weighted"]
    cells = dict(zip(header, bayes))
    # (headers are "<task>: <column>", or "<task> · set <name>: <column>" where the tables show each set apart)
    sr32 = [h for h in header if h.startswith("SR x32")]
    box = [h for h in header if h.startswith("Box inpainting")]
    assert sr32 and box and all(cells[h].strip(" |") == NOT_RUN for h in sr32)
    assert all(NOT_RUN not in cells[h] for h in box)
    assert f"{NOT_RUN}: " in (root / "tables" / "main.md").read_text()  # the caption explains the mark
    assert NOT_RUN in (root / "tables" / "runtime.md").read_text()
    # the findings tables show no result for what did not run: a dwgf_bayes row under SR x32, if any, says "not run"
    import importlib.util

    spec = importlib.util.spec_from_file_location("findings_tables", REPO / "benchmarks" / "findings_tables.py")
    findings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(findings)
    findings.export(root, tmp_path / "data")
    sections = findings.render(tmp_path / "data").split("#### Set ")
    sr32_rows = [line for part in sections if "task `sr32`" in part.split("\n")[0] for line in part.splitlines()]
    assert all(NOT_RUN in line for line in sr32_rows if line.startswith("| dwgf_bayes |"))
    assert any("| dwgf_bayes |" in part for part in sections if "task `box`" in part.split("\n")[0])


@pytest.mark.slow
def test_research_smoke_image_sets_reach_the_metrics_and_verify(research_smoke):
    """Each image's set is in the image_set column; the exact-mean PSNR (the ceiling of the issue's target) is a
    row; every record links (dwgf verify); the qualitative grid shows an image of every set."""
    from dwgf.audit.verify import verify_results
    from dwgf.metrics.schema import read_metrics

    root = research_smoke / "research_smoke"
    df = read_metrics(root / "metrics.parquet")
    image = df[df["level"] == "image"]
    assert dict(zip(image["image_id"], image["image_set"])) == {
        "prior-0000": "well_specified", "astronaut-r0080-c0180": "held_out", "texture-stripes-0": "ood"}  # fmt: skip
    exact = image[(image["metric"] == "exact_mean_psnr") & (image["status"] == "ok")]
    assert set(exact["image_id"]) == {"prior-0000", "astronaut-r0080-c0180", "texture-stripes-0"}
    # the exact posterior mean is the same for every method of a task and image
    assert (exact.groupby(["task", "image_id"])["value"].nunique() == 1).all()
    assert verify_results(root).ok
    record = json.loads((root / "data" / "images.prov.json").read_text())
    assert record["extra"]["images"]["prior-0000"] == "data/images/prior-0000.npy"
    assert record["inputs"] and any(path.startswith("prior/") for path in record["inputs"])


@pytest.mark.slow
def test_testbed_compare_prior_regime_is_the_dags_well_specified_set(research_smoke):
    """One code path for the well-specified regime: `dwgf testbed-compare --regimes prior` draws the DAG's
    prior-sample ground truth and, with the DAG's seeds, gives its particles bit for bit."""
    import numpy as np
    import torch

    from dwgf.cli.compare import load_or_fit_prior, run_compare, suite_plan
    from dwgf.pipeline.images import load_image

    root = research_smoke / "research_smoke"
    plan = suite_plan(str(REPO / "config.yaml"), "research_smoke")
    prior = load_or_fit_prior(plan, str(root))
    rows = run_compare(
        prior, plan, methods=["dwgf"], tasks=["box"], regimes=["prior"], n_images=1, keep_particles=True,
        log=lambda message: None,
    )  # fmt: skip
    (solved,) = [r for r in rows if "particles" in r]
    assert solved["image_id"] == "prior-0000"
    with np.load(root / "solve/dwgf/box/main/images/prior-0000.npz") as data:
        assert torch.equal(solved["particles"].to(torch.float32), torch.from_numpy(data["particles"]))
    from dwgf.cli.compare import ground_truths

    images, ids = ground_truths(prior, plan, "prior", 1)
    assert ids == ["prior-0000"] and torch.equal(images[0], load_image(root / "data/images/prior-0000.npy"))


@pytest.mark.slow
def test_findings_tables_run_on_a_fresh_research_run(research_smoke, tmp_path):
    """The findings generator exports and renders a fresh DAG output, grouped by image set, with the exact-mean
    reference row and DWGF's gap fraction (0 for DWGF itself by definition)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("findings_tables", REPO / "benchmarks" / "findings_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    record = tables.export(research_smoke / "research_smoke", tmp_path / "data")
    assert record["complete"] and record["suite"] == "research_smoke"
    text = tables.render(tmp_path / "data")
    assert text == tables.render(tmp_path / "data")  # deterministic
    for image_set in ("well_specified", "held_out", "ood"):
        assert f"#### Set `{image_set}`, task `box`" in text
    assert text.index("Set `well_specified`") < text.index("Set `held_out`") < text.index("Set `ood`")
    line = next(row for row in text.splitlines() if row.startswith("| dwgf | main |"))
    assert line.split(" | ")[3] == "0"  # the gap column of the baseline itself
    assert "| exact mean | reference |" in text
