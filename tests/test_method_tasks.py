"""Per-method task restriction (``suites.<s>.methods.<m>.tasks``, issue 14's budget): the plan runs a method only on
its tasks, refuses tasks and overrides it cannot honour with the key to change, and the tables show the cells it
leaves out as "not run" -- never as a failed or incomplete result."""

from __future__ import annotations

import pandas as pd
import pytest
from test_research_suite import CONFIG, with_suite  # one config loader for the suite tests
from test_tables import SPEC, _frames

from dwgf.pipeline.config import ConfigError, validate_config
from dwgf.pipeline.plan import MAIN, Plan
from dwgf.reporting.tables import NOT_RUN, main_table, render_html, render_latex, render_markdown, runtime_table


def _restricted(edit):
    config = with_suite("research_smoke", edit)
    validate_config(config)
    return Plan(config)


def test_a_method_with_tasks_is_planned_on_those_tasks_only():
    plan = _restricted(lambda s: s["methods"]["dwgf_svgd"].update(tasks=["sr32"]))
    jobs = {(j.method, j.task) for j in plan.solve_jobs()}
    assert ("dwgf_svgd", "sr32") in jobs and ("dwgf_svgd", "box") not in jobs
    assert ("dwgf", "box") in jobs and ("dwgf", "sr32") in jobs  # no key: every task
    assert plan.method_tasks("dwgf_svgd") == ["sr32"] and plan.method_tasks("dwgf") == ["box", "sr32"]
    assert plan.variants("dwgf_svgd", "box") == [] and plan.variants("dwgf_svgd", "sr32") == [MAIN]
    assert ("dwgf_svgd", "box", MAIN) not in plan.set_metric_groups()
    assert not any("/dwgf_svgd/" in path for path in plan.qualitative_shards("box"))
    assert any("/dwgf_svgd/" in path for path in plan.qualitative_shards("sr32"))
    spec = plan.report_spec()
    assert list(spec["settings"]["dwgf_svgd"]) == ["sr32"] and list(spec["settings"]["dwgf"]) == ["box", "sr32"]
    protocol = plan.protocol()
    assert "DWGF + SVGD (N = 3 particles, 6 steps, lr = 0.2, svgd_weight = 100.0; run on SR x32 only)" in protocol
    with pytest.raises(ConfigError, match=r"does not run on task 'box'.*methods\.dwgf_svgd\.tasks"):
        plan.settings("dwgf_svgd", "box")


def test_the_committed_smoke_slice_exercises_the_restriction():
    plan = Plan(with_suite("research_smoke"))
    assert plan.method_tasks("dwgf_bayes") == ["box"]
    assert {j.task for j in plan.solve_jobs() if j.method == "dwgf_bayes"} == {"box"}


def test_the_research_suite_asks_each_question_on_its_tasks():
    plan = Plan(with_suite("research"))
    for solver in ("dwgf", "psld", "rlsd", "latent_dps"):  # question 7: CS for every method
        assert plan.method_tasks(solver) == plan.tasks
    for variant in ("dwgf_kde4", "dwgf_bw4", "dwgf_svgd", "dwgf_feat"):  # question 2 where collapse shows
        assert plan.method_tasks(variant) == ["sr8", "sr32"]
    for variant in ("dwgf_k4", "dwgf_anti", "dwgf_shared", "dwgf_cv", "dwgf_cos"):  # questions 3 and 4
        assert plan.method_tasks(variant) == ["box", "sr8"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["methods"]["dwgf_svgd"].update(tasks=["sr9"]), r"methods\.dwgf_svgd\.tasks.*no task 'sr9'"),
        (
            lambda s: s["methods"]["dwgf_svgd"].update(tasks=["sr32"], per_task={"box": {"n_steps": 2}}),
            r"methods\.dwgf_svgd\.per_task\.box.*does not run on 'box'",
        ),
        (
            lambda s: s["methods"]["dwgf"].update(tasks=["sr32"]),  # steps_dwgf ablates it on box
            r"ablations\.steps_dwgf\.tasks.*'dwgf' does not run on 'box'.*methods\.dwgf\.tasks",
        ),
        (
            lambda s: [s["methods"][m].update(tasks=["box"]) for m in s["methods"]],
            r"tasks\.sr32.*no enabled method runs on this task",
        ),
    ],
)
def test_tasks_the_plan_cannot_honour_are_refused_naming_the_key(edit, message):
    config = with_suite("research_smoke", edit)
    validate_config(config)
    with pytest.raises(ConfigError, match=message):
        Plan(config)


@pytest.mark.parametrize("tasks", [[], ["box", "box"], "box"])
def test_the_schema_wants_a_non_empty_list_of_distinct_task_names(tasks):
    with pytest.raises(ConfigError, match="tasks"):
        validate_config(with_suite("research_smoke", lambda s: s["methods"]["dwgf_svgd"].update(tasks=tasks)))


def _not_run_spec():
    """:data:`test_tables.SPEC` with a second task (Box) that PSLD does not run on (its settings have no Box)."""
    spec = {**SPEC, "tasks": {"box": {"label": "Box"}, "sr8": {"label": "SR x8"}}}
    spec["settings"] = {"dwgf": {t: SPEC["settings"]["dwgf"]["sr8"] for t in ("box", "sr8")},
                        "psld": dict(SPEC["settings"]["psld"])}  # fmt: skip
    df, set_df = _frames()
    box = df[df["method"] == "dwgf"].assign(task="box")
    return spec, pd.concat([box, df]), pd.concat([set_df[set_df["method"] == "dwgf"].assign(task="box"), set_df])


def test_a_cell_that_is_not_run_reads_not_run_not_incomplete_and_is_explained():
    spec, df, set_df = _not_run_spec()
    table = main_table(df, set_df, spec)
    cells = dict(table.rows)
    box_psld = cells["PSLD"][:3]  # Box: PSNR, KID, ok
    assert [c.text for c in box_psld] == [NOT_RUN] * 3
    assert not any(c.incomplete or c.bold for c in box_psld)
    # DWGF's Box cells are complete; alone in their column, they are not bold either (nothing to compare)
    assert not any(c.incomplete for c in cells["DWGF"][:3])
    assert any(note.startswith(f"{NOT_RUN}: ") for note in table.notes)  # the caption explains the mark
    # the SR x8 cells are unchanged: PSLD's failed image is still incomplete there, not "not run"
    assert cells["PSLD"][3].text == "5.17 (n=1/2)" and cells["PSLD"][3].incomplete
    for text in (render_markdown(table), render_latex(table), render_html(table)):
        assert NOT_RUN in text
    runtime = dict(runtime_table(df, spec).rows)
    assert [c.text for c in runtime["PSLD"][:2]] == [NOT_RUN] * 2 and runtime["DWGF"][0].text != NOT_RUN


def test_a_table_without_restrictions_has_no_not_run_note():
    df, set_df = _frames()
    table = main_table(df, set_df, SPEC)
    assert not any(note.startswith(NOT_RUN) for note in table.notes)
    assert not any(c.text == NOT_RUN for _, cells in table.rows for c in cells)


def test_the_committed_config_is_the_one_these_tests_edit():
    assert CONFIG["suites"]["research_smoke"]["methods"]["dwgf_bayes"]["tasks"] == ["box"]
