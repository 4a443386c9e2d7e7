"""Tables never hide an incomplete set (issue 11) and define every column they show (issue 15)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dwgf.reporting.tables import main_table, render_html, render_latex, render_markdown

IDS = ["i0", "i1"]
SPEC = {
    "suite": "t",
    "ids": IDS,
    "image_size": 64,
    "methods": {"dwgf": "DWGF", "psld": "PSLD"},
    "tasks": {"sr8": {"label": "SR x8"}},
    "settings": {m: {"sr8": {"n_particles": 2, "n_steps": 3, "hyper": {}}} for m in ("dwgf", "psld")},
}


def _image_row(method, image_id, metric, value, particle, status="ok", protocol="standard"):
    return {"level": "image", "task": "sr8", "method": method, "variant": "main", "image_id": image_id,
            "particle": particle, "metric": metric, "protocol": protocol, "value": value, "sample_policy": None,
            "status": status, "network": "x", "reference": None, "n_samples": None}  # fmt: skip


def _frames():
    """DWGF: both images (one diverged, still evaluated); PSLD: image i1 failed, so only i0 has metrics."""
    rows = []
    psnr = {("dwgf", "i0"): 4.0, ("dwgf", "i1"): 5.0, ("psld", "i0"): 5.17}
    for (method, image_id), value in psnr.items():
        rows += [_image_row(method, image_id, "psnr", value, j) for j in (0, 1)]
    statuses = {("dwgf", "i0"): "ok", ("dwgf", "i1"): "solve_diverged"}
    statuses |= {("psld", "i0"): "ok", ("psld", "i1"): "solve_error"}
    for (method, image_id), status in statuses.items():
        rows.append(_image_row(method, image_id, "runtime_s", 1.0, None, status, "wall_clock"))
    # KID over all particles: DWGF's set has 2 images x 2 particles, PSLD's only the 2 particles of i0
    kid = {"dwgf": (0.1354, 4), "psld": (0.1814 - 0.1, 2)}  # PSLD's (incomplete) number is the lower one
    sets = [{"level": "set", "task": "sr8", "method": m, "variant": "main", "image_id": None, "particle": None,
             "metric": "kid", "protocol": "clean-fid:clean", "value": v, "sample_policy": "all_particles",
             "status": "ok", "network": "x", "reference": "gt:t:2", "n_samples": n}
            for m, (v, n) in kid.items()]  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(sets)


def test_an_incomplete_cell_is_marked_in_the_cell_never_bold_and_explained():
    df, set_df = _frames()
    table = main_table(df, set_df, SPEC)
    cells = dict(table.rows)
    assert table.columns == ["PSNR ↑", "KID ↓", "ok"]
    psnr_dwgf, kid_dwgf, ok_dwgf = cells["DWGF"]
    psnr_psld, kid_psld, ok_psld = cells["PSLD"]
    # DWGF: both images count, the diverged one included (it is a result)
    assert psnr_dwgf.text == f"4.50 ± {np.std([4.0, 5.0], ddof=1):.2f}" and not psnr_dwgf.incomplete
    assert ok_dwgf.text == "1/2 (1/2 diverged)"
    # PSLD: 1 of 2 planned images; its higher PSNR and lower KID are not bold, and the cell says why
    assert psnr_psld.text == "5.17 (n=1/2)" and psnr_psld.incomplete and not psnr_psld.bold
    assert kid_psld.text == "0.0814 (n=1/2)" and kid_psld.incomplete and not kid_psld.bold
    assert ok_psld.text == "1/2"
    # with one complete cell left there is no "best" to mark
    assert not psnr_dwgf.bold and not kid_dwgf.bold
    assert any("(n=k/m)" in note and "never bold" in note for note in table.notes)
    for text in (render_markdown(table), render_latex(table), render_html(table)):
        assert "5.17 (n=1/2)" in text and "**5.17" not in text and "textbf{5.17" not in text and "<b>5.17" not in text


def test_complete_tables_have_no_incomplete_note_and_define_every_column():
    df, set_df = _frames()
    df = df[df["method"] == "dwgf"]
    spec = {**SPEC, "methods": {"dwgf": "DWGF"}}
    table = main_table(df, set_df[set_df["method"] == "dwgf"], spec)
    assert not any("(n=k/m)" in note for note in table.notes)
    columns = dict(table.definitions)
    assert list(columns) == ["PSNR", "KID", "ok"] and columns["PSNR"].startswith("PSNR (dB) against the ground truth")
    assert "- **PSNR**: PSNR (dB)" in render_markdown(table) and "<li><b>ok</b>: images" in render_html(table)
    assert "Columns: PSNR: PSNR (dB)" in render_latex(table)


def test_spread_ratio_column_is_defined_in_the_caption():
    rows = [_image_row("dwgf", i, "spread_ratio", 0.5, None, protocol="space=image;ratio_of_means") for i in IDS]
    rows += [_image_row("dwgf", i, "runtime_s", 1.0, None, "ok", "wall_clock") for i in IDS]
    table = main_table(pd.DataFrame(rows), pd.DataFrame(columns=list(rows[0])), {**SPEC, "methods": {"dwgf": "DWGF"}})
    assert table.columns == ["Spread / exact", "ok"]
    columns = dict(table.definitions)
    assert "exact posterior std" in columns["Spread / exact"] and "1 = calibrated" in columns["Spread / exact"]


def test_ablation_plot_puts_the_spread_ratio_on_a_log_axis_with_a_line_at_one():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dwgf.reporting.plots import ablation_figure

    rows = []
    for value, (psnr, spread) in {"0.05": (20.0, 0.3), "0.5": (22.0, 2.5)}.items():
        for image_id in IDS:
            rows.append({"metric": "PSNR ↑", "task": "SR x8", "x": float(value), "image_id": image_id, "value": psnr})
            rows.append({"metric": "Spread / exact", "task": "SR x8", "x": float(value), "image_id": image_id,
                         "value": spread})  # fmt: skip
    ablation = {"method": "dwgf", "label": "γ", "images": 2}
    fig = ablation_figure(pd.DataFrame(rows), SPEC, ablation)
    psnr_ax, spread_ax = fig.axes[:2]
    assert psnr_ax.get_yscale() == "linear" and spread_ax.get_yscale() == "log"
    lines = [line for line in spread_ax.get_lines() if list(line.get_ydata()) == [1.0, 1.0]]
    assert lines and lines[0].get_linestyle() == "--"
    low, high = spread_ax.get_ylim()
    assert low < 0.3 and high > 2.5 and psnr_ax.get_ylim()[0] > 1  # each metric on its own scale
    plt.close(fig)


def test_paper_reference_table_tags_the_reported_numbers_and_shows_repo_protocol_rows():
    from dwgf.reporting.tables import load_paper_reported, paper_table

    reported = load_paper_reported()
    assert reported["source"] == "third-party summary of the paper, not checked against the PDF"
    spec = {**SPEC, "methods": {"psld": "PSLD", "rlsd": "RLSD", "dwgf": "DWGF", "latent_dps": "Latent-DPS"},
            "tasks": {"box": {"label": "Box"}, "sr8": {"label": "SR x8"}},
            "settings": {m: {t: {"n_particles": 2, "n_steps": 3, "hyper": {}} for t in ("box", "sr8")}
                         for m in ("psld", "rlsd", "dwgf", "latent_dps")}}  # fmt: skip
    rows = []
    for task in ("box", "sr8"):
        for image_id in IDS:
            for protocol, value in (("repo", 30.0), ("standard", 10.0)):  # only the repo rows may be shown
                row = _image_row("dwgf", image_id, "psnr", value, 0, protocol=protocol)
                rows.append({**row, "task": task})
            rows.append({**_image_row("dwgf", image_id, "runtime_s", 1.0, None, "ok", "wall_clock"), "task": task})
    table = paper_table(pd.DataFrame(rows), pd.DataFrame(columns=list(rows[0])), spec, reported)
    cells = dict(table.rows)
    assert table.groups == [("Box", 3), ("SR x8", 3)] and table.columns == ["FID ↓", "PSNR ↑", "LPIPS ↓"] * 2
    assert [c.text for c in cells["DWGF (paper, reported)"]] == ["118.05", "27.56", "0.184", "101.94", "32.71", "0.193"]
    assert [c.text for c in cells["PSLD (paper, reported)"]] == ["57.70", "22.72", "0.082", "81.31", "24.82", "0.314"]
    assert [c.text for c in cells["RLSD (paper, reported)"]] == ["29.18", "24.98", "0.079", "65.42", "28.39", "0.286"]
    ours = [c.text for c in cells["DWGF (this run, repo protocol)"]]
    assert ours == ["n/a", "30.00 ± 0.00", "n/a", "n/a", "30.00 ± 0.00", "n/a"]
    assert "Latent-DPS (paper, reported)" not in cells  # the paper reports no Latent-DPS numbers
    assert not any(c.bold for _, row in table.rows for c in row)
    assert "not checked against the PDF" in table.notes[0] and "repository-faithful protocol" in table.notes[0]


def test_only_the_paper_suite_writes_the_paper_reference_table():
    from dwgf.pipeline.config import load_config
    from dwgf.pipeline.plan import Plan

    paper = Plan(load_config(overrides={"suite": "paper"}))
    smoke = Plan(load_config(overrides={"suite": "smoke"}))
    assert paper.report_spec()["paper_reference"] and paper.path("table_paper", ext="md") in paper.targets()
    assert not smoke.report_spec()["paper_reference"]
    assert not any("tables/paper." in t for t in smoke.targets())


def test_report_front_page_states_commit_verify_status_and_main_numbers(tmp_path):
    import json
    import os

    from dwgf.metrics.schema import write_metrics
    from dwgf.provenance import Recorder
    from dwgf.reporting.front_page import FrontPage

    root = tmp_path / "results" / "t"
    page = FrontPage(str(root), SPEC, "a test suite")
    text = str(page)
    assert "**Suite t**: a test suite." in text and "not verified" in text and "not computed yet" in text

    df, set_df = _frames()
    full = {"suite": "t", "hyper": "{}", "n_particles": 2, "observation_sha256": None, "run_sha256": None}
    full |= {k: None for k in ("gamma", "lr", "kappa", "sigma_dec", "omega", "n_steps")}
    from dwgf.metrics.schema import COLUMNS

    def complete(frame):
        frame = frame.assign(**{k: v for k, v in full.items() if k in COLUMNS and k not in frame})
        return frame.assign(**{c: None for c in COLUMNS if c not in frame.columns})[list(COLUMNS)]

    write_metrics(complete(df), root / "metrics.parquet")
    write_metrics(complete(set_df), root / "set_metrics.parquet")
    Recorder("tables", root, {}).write(root / "tables" / "tables.prov.json", outputs=[root / "metrics.parquet"])
    (root / "audit").mkdir()
    (root / "audit" / "verify.json").write_text(json.dumps({"ok": True, "n_records": 3, "n_files": 9, "problems": []}))
    text = str(page)
    assert "**passed** (3 records, 9 files re-hashed)" in text and "stale" not in text
    assert "(the commit that made the tables)" in text
    assert "     - 4.50\n" in text  # means only: the std is in the full table
    assert ".. list-table:: SR x8" in text and "- 5.17\u00a0(n=1/2)" in text and "- 1/2\u00a0(1/2 diverged)" in text
    old = (root / "tables" / "tables.prov.json").stat().st_mtime - 60
    os.utime(root / "audit" / "verify.json", (old, old))  # verified before the tables were rewritten
    assert "stale" in str(page)
    (root / "audit" / "verify.json").write_text(json.dumps({"ok": False, "problems": [{"path": "x"}]}))
    assert "**FAILED**: 1 problem(s)" in str(page)


def test_front_page_counts_solves_from_runtime_parquet_when_metrics_parquet_has_none(tmp_path):
    """Solve outcomes may live in runtime.parquet beside metrics.parquet; the ok column reads them there."""
    from dwgf.metrics.schema import COLUMNS, write_metrics
    from dwgf.reporting.front_page import FrontPage

    root = tmp_path / "t"
    df, set_df = _frames()

    def complete(frame):
        extra = {"suite": "t", "hyper": "{}", "n_particles": 2}
        frame = frame.assign(**{k: v for k, v in extra.items() if k not in frame})
        return frame.assign(**{c: None for c in COLUMNS if c not in frame.columns})[list(COLUMNS)]

    timing = df["metric"] == "runtime_s"
    write_metrics(complete(df[~timing]), root / "metrics.parquet")
    write_metrics(complete(df[timing]), root / "runtime.parquet")
    write_metrics(complete(set_df), root / "set_metrics.parquet")
    assert "- 1/2\u00a0(1/2 diverged)" in str(FrontPage(str(root), SPEC))


def _two_task_table():
    """The main table of :func:`_frames` with its rows copied to a second task (Box) of its own numbers."""
    df, set_df = _frames()
    box = df.assign(task="box", value=df["value"] + 10)
    box_sets = set_df.assign(task="box")
    spec = {**SPEC, "tasks": {"box": {"label": "Box"}, "sr8": {"label": "SR x8"}}}
    spec["settings"] = {m: {t: SPEC["settings"][m]["sr8"] for t in ("box", "sr8")} for m in ("dwgf", "psld")}
    return main_table(pd.concat([box, df]), pd.concat([box_sets, set_df]), spec)


def test_markdown_has_one_section_per_task_and_flattens_back_to_task_prefixed_columns():
    from dwgf.reporting.tables import flatten_markdown

    table = _two_task_table()
    text = render_markdown(table)
    lines = text.splitlines()
    # a heading per task, each over its own table with short headers (no task prefix inside a section)
    assert [line for line in lines if line.startswith("#### ")] == ["#### Box", "#### SR x8"]
    headers = [line for line in lines if line.startswith("| Method")]
    assert headers == ["| Method | PSNR ↑ | KID ↓ | ok |"] * 2
    box, sr8 = text.split("#### SR x8")
    assert "| PSLD | 15.17 (n=1/2) | 0.0814 (n=1/2) | 1/2 |" in box and "| PSLD | 5.17 (n=1/2) |" in sr8
    assert "15.17" not in sr8
    # the caption after the tables defines every column and explains the (n=k/m) mark
    caption = text.split("| DWGF |")[-1]
    for needle in ("- **PSNR**: PSNR (dB)", "- **KID**: KID", "- **ok**: images", "(n=k/m): the cell"):
        assert needle in caption, needle
    flat = flatten_markdown(text).splitlines()
    assert flat[0] == "| Method | Box: PSNR ↑ | Box: KID ↓ | Box: ok | SR x8: PSNR ↑ | SR x8: KID ↓ | SR x8: ok |"
    assert flat[3] == "| PSLD | 15.17 (n=1/2) | 0.0814 (n=1/2) | 1/2 | 5.17 (n=1/2) | 0.0814 (n=1/2) | 1/2 |"
    assert len(flat) == 2 + len(table.rows)


def test_flatten_markdown_refuses_sections_with_other_rows():
    import pytest

    from dwgf.reporting.tables import flatten_markdown

    text = render_markdown(_two_task_table()).replace("| PSLD | 5.17", "| RLSD | 5.17")
    with pytest.raises(ValueError, match="section 'SR x8' has rows"):
        flatten_markdown(text)
    with pytest.raises(ValueError, match="no '#### <group>' section"):
        flatten_markdown("| a | b |\n")


def test_html_and_latex_span_each_task_over_its_columns():
    import re

    table = _two_task_table()
    html_text = render_html(table)
    assert re.findall(r'<th colspan="(\d)" class="group">([^<]+)</th>', html_text) == [("3", "Box"), ("3", "SR x8")]
    assert html_text.count('class="incomplete"') + html_text.count('class="group incomplete"') == 4
    assert "<li><b>KID</b>: KID" in html_text and "(n=k/m): the cell" in html_text
    latex = render_latex(table)
    assert "& \\multicolumn{3}{c}{Box} & \\multicolumn{3}{c}{SR x8} \\\\" in latex
    assert "\\cmidrule(lr){2-4} \\cmidrule(lr){5-7}" in latex
    assert latex.count("(n=1/2)") == 4 and "Columns: PSNR: PSNR (dB)" in latex


def _two_set_frames():
    """SR x8 with image i0 in set ``ws`` (prior samples) and i1 in set ``ho`` (bundled crops); PSNR 4 / 5 (DWGF)
    and 5.5 / 3 (PSLD), so the best method differs between the sets and the all-images mean would hide it."""
    rows = []
    psnr = {("dwgf", "i0"): 4.0, ("dwgf", "i1"): 5.0, ("psld", "i0"): 5.5, ("psld", "i1"): 3.0}
    for (method, image_id), value in psnr.items():
        rows += [_image_row(method, image_id, "psnr", value, j) for j in (0, 1)]
        rows.append(_image_row(method, image_id, "runtime_s", 1.0, None, "ok", "wall_clock"))
    spec = {**SPEC, "image_sets": [{"name": "ws", "kind": "prior_samples", "ids": ["i0"]},
                                   {"name": "ho", "kind": "bundled", "ids": ["i1"]}]}  # fmt: skip
    return pd.DataFrame(rows), spec


def test_main_table_shows_each_image_set_in_its_own_section_with_its_own_best():
    from dwgf.reporting.tables import flatten_markdown

    df, spec = _two_set_frames()
    table = main_table(df, pd.DataFrame(columns=list(df.columns)), spec)
    assert [label for label, _ in table.groups] == ["SR x8 · set ws", "SR x8 · set ho"]
    cells = dict(table.rows)
    assert [c.text for c in cells["DWGF"]] == ["4.00", "1/1", "5.00", "1/1"]
    assert [c.text for c in cells["PSLD"]] == ["5.50", "1/1", "3.00", "1/1"]
    assert cells["PSLD"][0].bold and cells["DWGF"][2].bold and not cells["DWGF"][0].bold  # best per set
    caption = table.notes[0]
    assert "ws (1 image: ground truths drawn from the fitted prior" in caption and "Bayes optimum" in caption
    assert "ho (1 image: bundled image crops left out of the prior's fit: the prior is misspecified" in caption
    flat = flatten_markdown(render_markdown(table)).splitlines()
    assert flat[0] == (
        "| Method | SR x8 · set ws: PSNR ↑ | SR x8 · set ws: ok | SR x8 · set ho: PSNR ↑ | SR x8 · set ho: ok |"
    )
    assert "\\multicolumn{2}{c}{SR x8 $\\cdot$ set ws}" in render_latex(table)
    assert '<th colspan="2" class="group">SR x8 · set ho</th>' in render_html(table)
    # the same data without image_sets: one section, means over both images (today's table, unchanged)
    plain = main_table(df, pd.DataFrame(columns=list(df.columns)), SPEC)
    assert [label for label, _ in plain.groups] == ["SR x8"] and dict(plain.rows)["PSLD"][0].text.startswith("4.25")
    assert "image set" not in plain.notes[0]


def test_main_table_puts_set_level_metrics_in_an_all_sets_section():
    df, spec = _two_set_frames()
    _, set_df = _frames()
    table = main_table(df, set_df, spec)
    assert [label for label, _ in table.groups] == ["SR x8 · set ws", "SR x8 · set ho", "SR x8 · all sets"]
    assert table.columns == ["PSNR ↑", "ok", "PSNR ↑", "ok", "KID ↓", "ok"]
    assert dict(table.rows)["DWGF"][-1].text == "2/2"


def test_a_method_not_planned_on_a_task_reads_not_run():
    from dwgf.reporting.tables import runtime_table

    df, spec = _two_set_frames()
    spec["settings"] = {"dwgf": SPEC["settings"]["dwgf"], "psld": {}}  # PSLD restricted to no task of this table
    table = main_table(df[df["method"] == "dwgf"], pd.DataFrame(columns=list(df.columns)), spec)
    assert [c.text for c in dict(table.rows)["PSLD"]] == ["not run"] * 4
    assert dict(table.rows)["DWGF"][0].text == "4.00" and any(note.startswith("not run:") for note in table.notes)
    runtime = dict(runtime_table(df[df["method"] == "dwgf"], spec).rows)
    assert [c.text for c in runtime["PSLD"]] == ["not run", "not run"] and runtime["DWGF"][0].text.startswith("1.00")


def test_ablation_table_and_plot_keep_the_image_sets_apart():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dwgf.reporting.plots import ablation_figure, ablation_frame
    from dwgf.reporting.tables import ablation_table

    df, spec = _two_set_frames()
    df = pd.concat([df, df.assign(variant="n_steps-9", value=df["value"] + 1)])
    ablation = {"name": "steps", "method": "dwgf", "parameter": "n_steps", "label": "steps", "tasks": ["sr8"],
                "images": 2, "values": [3, 9], "variants": {"sr8": {"3": "main", "9": "n_steps-9"}}}  # fmt: skip
    table = ablation_table(df, spec, ablation)
    assert [label for label, _ in table.groups] == ["SR x8 · set ws", "SR x8 · set ho"]
    assert [[c.text for c in cells] for _, cells in table.rows] == [["4.00", "5.00"], ["5.00", "6.00"]]
    frame = ablation_frame(df, spec, ablation)
    assert set(zip(frame["image_id"], frame["set"])) == {("i0", "ws"), ("i1", "ho")}
    fig = ablation_figure(frame, spec, ablation)
    assert "sets ws, ho apart" in fig._suptitle.get_text()
    drawn = {tuple(line.get_ydata()) for line in fig.axes[0].get_lines() if len(line.get_xdata()) == 2}
    assert drawn == {(4.0, 5.0), (5.0, 6.0)}  # one line per set (i0: 4 -> 5, i1: 5 -> 6), not their mean
    plt.close(fig)
    # an ablation on the first image only: one set, named in the header
    first = ablation_table(df, spec, {**ablation, "images": 1})
    assert [label for label, _ in first.groups] == ["SR x8 · set ws"]


def test_report_spec_names_the_image_sets_only_for_a_suite_with_several():
    from dwgf.pipeline.config import load_config
    from dwgf.pipeline.plan import Plan

    research = Plan(load_config(overrides={"suite": "research"})).report_spec()
    assert [(s["name"], s["kind"]) for s in research["image_sets"]] == [
        ("well_specified", "prior_samples"), ("held_out", "bundled"), ("ood", "textures")]  # fmt: skip
    assert [i for s in research["image_sets"] for i in s["ids"]] == research["ids"]
    assert "image_sets" not in Plan(load_config(overrides={"suite": "smoke"})).report_spec()
