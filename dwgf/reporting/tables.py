"""Paper-style tables from ``metrics.parquet`` / ``set_metrics.parquet`` (``dwgf tables``).

* ``tables/main.{md,tex,html}``: method × (task × metric), main settings, mean ± std over images of the
  per-image (particle-averaged) values (:mod:`dwgf.reporting.summary`); set-level FID/KID over all particles;
  the best method per task and metric in bold; an ``ok`` column with the number of images whose solve
  succeeded out of those planned (and how many diverged: diverged images are results and count in the means).
  A cell computed from fewer images than planned (the plan's ``ids``, never a re-count of the rows) says so in
  the cell (``5.17 (n=1/2)``), is never bold, and the caption explains the mark. The caption defines every column
  (:attr:`dwgf.reporting.summary.MetricColumn.definition`). Markdown has one section per task (a ``#### SR x8``
  heading over that task's table; :func:`flatten_markdown` joins them into one table with ``SR x8: PSNR ↑``
  headers); LaTeX and HTML put each task in a spanning header.
* ``tables/ablation-<name>.{md,tex,html}``: ablation value × (task × metric) on the ablation's images.
* ``tables/runtime.{md,tex,html}``: solver seconds per image (mean ± std) and peak memory per method × task.
* ``tables/paper.{md,tex,html}`` (``report.paper_reference``, the paper suite): the paper's reported numbers
  (:file:`paper_reported.yaml`, tagged with their source) beside this run's repo-protocol rows.

LaTeX uses booktabs (``\\toprule``, ``\\cmidrule``, ``\\midrule``, ``\\bottomrule``); Markdown is GitHub style.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from dwgf.io import atomic_write_text
from dwgf.pipeline.layout import LAYOUT
from dwgf.reporting.summary import ABLATION_COLUMNS, MAIN_COLUMNS, MetricColumn, per_image, select, summarise

MAIN = "main"


@dataclass
class Cell:
    """One table entry; ``incomplete``: computed from fewer images than planned (marked in ``text``, never bold)."""

    text: str
    bold: bool = False
    incomplete: bool = False


@dataclass
class Table:
    """A two-level header table: ``groups`` (label, span) over ``columns``; ``stub`` names the first column."""

    title: str
    stub: str
    groups: list[tuple[str, int]]
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    notes: list[str] = field(default_factory=list)
    definitions: list[tuple[str, str]] = field(default_factory=list)  # (column, what it is): the caption's list


# -- rendering -----------------------------------------------------------------------------------------------
def render_markdown(table: Table) -> str:
    """GitHub Markdown: the title, then one section per column group (a ``#### <group>`` heading over a table with
    the stub column and that group's columns), then the notes and the column definitions.

    Markdown has no spanning header cells; a section per group (per task) keeps each table narrow and its headers
    short. :func:`flatten_markdown` joins the sections back into one table for scripts that read cells by name.
    """
    lines = [f"**{table.title}**"]
    start = 0
    for group, span in table.groups:
        header = [table.stub, *table.columns[start : start + span]]
        lines += ["", f"{MARKDOWN_SECTION}{group}", "", _markdown_row(header), "|" + "---|" * len(header)]
        for label, cells in table.rows:
            texts = [f"**{c.text}**" if c.bold else c.text for c in cells[start : start + span]]
            lines.append(_markdown_row([label, *texts]))
        start += span
    for note in table.notes[:1]:  # one paragraph each, the column definitions after the first
        lines += ["", note]
    if table.definitions:
        lines += ["", "Columns:", ""] + [f"- **{label}**: {text}" for label, text in table.definitions]
    for note in table.notes[1:]:
        lines += ["", note]
    return "\n".join(lines).rstrip() + "\n"


#: The heading that opens each column group's section in :func:`render_markdown`.
MARKDOWN_SECTION = "#### "


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def flatten_markdown(text: str) -> str:
    """The sections of a :func:`render_markdown` table joined into one table, headers prefixed with their group.

    ``| Method | SR x8: PSNR ↑ | SR x8: ok | Box: PSNR ↑ | ... |`` with one row per row label, cells as printed
    (bold marks and ``(n=k/m)`` kept); the title and notes are dropped. For tests and scripts that look a cell up
    by task and column; a ValueError when the sections disagree on their row labels.

    >>> table = Table("T", "Method", [("A", 1), ("B", 1)], ["x", "y"], [("m", [Cell("1"), Cell("2", bold=True)])])
    >>> print(flatten_markdown(render_markdown(table)), end="")
    | Method | A: x | B: y |
    |---|---|---|
    | m | 1 | **2** |
    """
    stub, header, rows, group = None, [], {}, None
    section: list[list[str]] = []

    def close() -> None:
        nonlocal stub
        if not section:
            return
        first, *body = section
        labels = [cells[0] for cells in body]
        if rows and labels != list(rows):
            raise ValueError(f"section {group!r} has rows {labels}, the first section {list(rows)}")
        stub = first[0]
        header.extend(f"{group}: {column}" for column in first[1:])
        for cells in body:
            rows.setdefault(cells[0], []).extend(cells[1:])
        section.clear()

    for line in text.splitlines():
        if line.startswith(MARKDOWN_SECTION):
            close()
            group = line[len(MARKDOWN_SECTION) :].strip()
        elif line.startswith("| ") and group is not None:
            section.append([cell.strip() for cell in line.strip()[1:-1].split(" | ")])
    close()
    if stub is None:
        raise ValueError(f"no '{MARKDOWN_SECTION}<group>' section with a table in the Markdown text")
    lines = [_markdown_row([stub, *header]), "|" + "---|" * (len(header) + 1)]
    lines += [_markdown_row([label, *cells]) for label, cells in rows.items()]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    replacements = {
        "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
        "γ": r"$\gamma$", "κ": r"$\kappa$", "σ": r"$\sigma$", "×": r"$\times$",
        "·": r"$\cdot$",
    }  # fmt: skip
    return "".join(replacements.get(ch, ch) for ch in text)


def render_latex(table: Table) -> str:
    n = len(table.columns)
    lines = [
        "% generated by `dwgf tables`; needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(table.title)}}}",
        "\\resizebox{\\linewidth}{!}{%",
        f"\\begin{{tabular}}{{l{'c' * n}}}",
        "\\toprule",
    ]
    group_cells, rules, start = [], [], 2
    for label, span in table.groups:
        group_cells.append(f"\\multicolumn{{{span}}}{{c}}{{{_latex_escape(label)}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + span - 1}}}")
        start += span
    lines.append(" & ".join([""] + group_cells) + " \\\\")
    lines.append(" ".join(rules))
    lines.append(" & ".join([_latex_escape(table.stub)] + [_latex_escape(c) for c in table.columns]) + " \\\\")
    lines.append("\\midrule")
    for label, cells in table.rows:
        texts = [f"\\textbf{{{_latex_escape(c.text)}}}" if c.bold else _latex_escape(c.text) for c in cells]
        lines.append(" & ".join([_latex_escape(label), *texts]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}}"]
    if table.notes or table.definitions:
        columns = "Columns: " + "; ".join(f"{label}: {text}" for label, text in table.definitions) + "."
        texts = [*table.notes[:1], *([columns] if table.definitions else []), *table.notes[1:]]
        lines.append("\\par\\footnotesize " + _latex_escape(" ".join(texts)))
    lines += ["\\end{table}", ""]
    return "\n".join(lines)


def render_html(table: Table) -> str:
    esc = html.escape
    top = "".join(f'<th colspan="{span}" class="group">{esc(label)}</th>' for label, span in table.groups)
    starts = {sum(span for _, span in table.groups[:k]) for k in range(len(table.groups))}  # a rule between tasks
    second = "".join(f"<th{' class=group' if i in starts else ''}>{esc(c)}</th>" for i, c in enumerate(table.columns))
    body = []
    for label, cells in table.rows:
        tds = "".join(_html_cell(c, i in starts) for i, c in enumerate(cells))
        body.append(f"<tr><th>{esc(label)}</th>{tds}</tr>")
    notes = "".join(f"<p>{esc(note)}</p>" for note in table.notes[:1])
    if table.definitions:
        items = "".join(f"<li><b>{esc(label)}</b>: {esc(text)}</li>" for label, text in table.definitions)
        notes += f"<p>Columns:</p><ul>{items}</ul>"
    notes += "".join(f"<p>{esc(note)}</p>" for note in table.notes[1:])
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
        f"{esc(table.title)}</title><style>table{{border-collapse:collapse;font-family:sans-serif}}"
        "th,td{padding:3px 8px;text-align:center}td{white-space:nowrap}"
        "thead tr:last-child th{border-bottom:1px solid #000}"
        "table{border-top:2px solid #000;border-bottom:2px solid #000}td.incomplete{color:#a00;font-style:italic}"
        ".group{border-left:1px solid #888}p,ul{font-family:sans-serif;font-size:90%;max-width:70em}"
        "</style></head><body>"
        f"<h3>{esc(table.title)}</h3><table><thead><tr><th></th>{top}</tr><tr><th>{esc(table.stub)}</th>{second}"
        f"</tr></thead><tbody>{''.join(body)}</tbody></table>{notes}</body></html>\n"
    )


def _html_cell(cell: Cell, group_start: bool = False) -> str:
    text = html.escape(cell.text)
    classes = " ".join(name for name, on in (("group", group_start), ("incomplete", cell.incomplete)) if on)
    attributes = f' class="{classes}"' if classes else ""
    if cell.incomplete:
        attributes += ' title="computed from fewer images than planned"'
    return f"<td{attributes}><b>{text}</b></td>" if cell.bold else f"<td{attributes}>{text}</td>"


def write_table(table: Table, out_dir: str | os.PathLike, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    return [
        atomic_write_text(out_dir / f"{name}.md", render_markdown(table)),
        atomic_write_text(out_dir / f"{name}.tex", render_latex(table)),
        atomic_write_text(out_dir / f"{name}.html", render_html(table)),
    ]


# -- content -------------------------------------------------------------------------------------------------
def format_stat(mean: float, std: float, decimals: int) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _columns_present(frames: dict[str, pd.DataFrame], candidates: tuple[MetricColumn, ...], task: str):
    present = []
    for column in candidates:
        frame = frames["set"] if column.set_policy else frames["image"]
        rows = select(frame, column)
        if not rows[rows["task"] == task].empty:
            present.append(column)
    return present


def _bold_best(cells: list[Cell], means: list[float], higher: bool | None) -> None:
    """Bold the best mean among the *complete* cells (an incomplete cell is never best: its mean is over another,
    smaller set of images)."""
    finite = [(m, i) for i, m in enumerate(means) if not math.isnan(m) and not cells[i].incomplete]
    if higher is None or len(finite) < 2:
        return
    best = max(finite)[0] if higher else min(finite)[0]
    for m, i in finite:
        if m == best:
            cells[i].bold = True


def stat_cell(stats: dict[str, float | int], decimals: int, counted: int, planned: int) -> Cell:
    """A mean ± std cell; ``counted`` < ``planned`` images marks it incomplete, in the cell text itself."""
    text = format_stat(stats["mean"], stats["std"], decimals)
    if counted >= planned or text == "n/a":
        return Cell(text)
    return Cell(f"{text} (n={counted}/{planned})", incomplete=True)


INCOMPLETE_NOTE = (
    "(n=k/m): the cell is computed from only k of the m planned images (a solve failed, was not run, or its metric "
    "is null); such a cell is never bold, even when its number is the best."
)


def runtime_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The per-image ``runtime_s`` / ``peak_memory_bytes`` rows (one per solved or attempted image).

    The one place the tables read solve outcomes and timings from, so moving those rows to their own file only
    changes this function.
    """
    return df[df["metric"].isin(["runtime_s", "peak_memory_bytes"])]


def status_counts(df: pd.DataFrame, task: str, method: str, variant: str, ids: list[str] | None = None) -> str:
    """``ok/planned`` images (``planned`` = ``len(ids)``, else the images with a solve record), plus
    ``(d/planned diverged)`` when some solves diverged (status ``solve_diverged``): a diverged image keeps the
    last finite state of its particles, is evaluated and counts in the means like any other result."""
    rows = runtime_rows(df)
    rows = rows[(rows["metric"] == "runtime_s") & (rows["task"] == task) & (rows["method"] == method)]
    rows = rows[rows["variant"] == variant]
    if ids is not None:
        rows = rows[rows["image_id"].isin(ids)]
    planned = len(ids) if ids is not None else len(rows)
    text = f"{int((rows['status'] == 'ok').sum())}/{planned}"
    diverged = int((rows["status"] == "solve_diverged").sum())
    return text + (f" ({diverged}/{planned} diverged)" if diverged else "")


def _set_images(rows: pd.DataFrame, column: MetricColumn, n_particles: int) -> int:
    """Images behind a set-level value: its ``n_samples`` over the samples one image contributes."""
    if rows.empty or rows["n_samples"].isna().all():
        return 0
    per_image = n_particles if column.set_policy == "all_particles" else 1
    return int(rows["n_samples"].dropna().min()) // per_image


#: What the numbers of an image set mean, by the set's source kind (the captions print it for every set).
SET_KIND_MEANING = {
    "prior_samples": "ground truths drawn from the fitted prior, x = D(z) with z ~ p_0: the model is well specified, "
    "so the exact posterior mean is the Bayes optimum",
    "bundled": "bundled image crops left out of the prior's fit: the prior is misspecified, so the exact posterior "
    "mean is not the Bayes optimum",
    "textures": "synthetic textures unlike any training crop: out of the prior's distribution",
}


@dataclass(frozen=True)
class ImageSet:
    """The images one table section averages over; ``name`` None: the suite has a single set (no set sections)."""

    name: str | None
    kind: str | None
    ids: list[str]


def report_sets(spec: dict[str, Any], ids: list[str] | None = None) -> list[ImageSet]:
    """The image sets a table shows separately, each restricted to ``ids`` (default: the spec's), in suite order.

    A spec without ``image_sets`` (a suite of one set, :meth:`dwgf.pipeline.jobspecs.JobSpecs.report_spec`) gives
    one unnamed set of all ``ids``: its tables are sectioned by task only, as before sets existed. Sets with none
    of ``ids`` (an ablation on the first images only) are left out.
    """
    ids = list(spec["ids"] if ids is None else ids)
    sets = spec.get("image_sets") or []
    if len(sets) <= 1:
        return [ImageSet(None, None, ids)]
    chosen = set(ids)
    named = [ImageSet(s["name"], s["kind"], [i for i in s["ids"] if i in chosen]) for s in sets]
    return [s for s in named if s.ids]


def section_label(task_label: str, image_set: ImageSet) -> str:
    """The header of one task x set section (the task label alone for a suite of one set)."""
    return task_label if image_set.name is None else f"{task_label} · set {image_set.name}"


def sets_note(sets: list[ImageSet]) -> str:
    """The caption sentence saying what each set is ("" for a suite of one set)."""
    if sets[0].name is None:
        return ""
    parts = [
        f"{s.name} ({len(s.ids)} image{'s' if len(s.ids) != 1 else ''}: "
        f"{SET_KIND_MEANING.get(s.kind, f'images from a {s.kind} source')})"
        for s in sets
    ]
    return (
        " One section per task and image set; its means, bold best and ok counts are over that set's images only: "
        + "; ".join(parts)
        + "."
    )


def method_runs(spec: dict[str, Any], method: str, task: str) -> bool:
    """Whether the suite plans ``method`` on ``task`` (a method restricted to some tasks has no settings for the
    others); its cells elsewhere read :data:`NOT_RUN`."""
    return task in spec["settings"].get(method, {})


NOT_RUN = "not run"
NOT_RUN_NOTE = "not run: the suite does not run this method on this task (the method's task list)."


def _sections(frames: dict[str, pd.DataFrame], spec: dict[str, Any], sets: list[ImageSet]):
    """(task, group label, image ids, columns) per section of the main table: one per task for a suite of one
    set; else one per task x set with the per-image columns, and one ``all sets`` section per task for the
    set-level columns (FID/KID are computed over all images of a task at once)."""
    sections = []
    for task, task_spec in spec["tasks"].items():
        present = _columns_present(frames, MAIN_COLUMNS, task)
        if sets[0].name is None:
            sections.append((task, task_spec["label"], sets[0].ids, present))
            continue
        for image_set in sets:
            per_image_columns = [c for c in present if not c.set_policy]
            sections.append((task, section_label(task_spec["label"], image_set), image_set.ids, per_image_columns))
        set_columns = [c for c in present if c.set_policy]
        if set_columns:
            sections.append((task, f"{task_spec['label']} · all sets", list(spec["ids"]), set_columns))
    return sections


def main_table(df: pd.DataFrame, set_df: pd.DataFrame, spec: dict[str, Any]) -> Table:
    """The main table. The planned images are the spec's ``ids`` (the plan's, not a re-count of the rows); with
    several image sets (the spec's ``image_sets``) each task has one section per set (:func:`_sections`)."""
    frames = {"image": df, "set": set_df}
    methods = list(spec["methods"])
    ids = list(spec["ids"])
    planned = len(ids)
    sets = report_sets(spec)
    sections = _sections(frames, spec, sets)
    groups, headers = [], []
    for _, label, _, present in sections:
        groups.append((label, len(present) + 1))
        headers += [c.label + c.arrow for c in present] + ["ok"]
    cells = {m: [] for m in methods}
    any_incomplete = any_not_run = False
    for task, _, section_ids, present in sections:
        runs = {m: method_runs(spec, m, task) for m in methods}
        any_not_run |= not all(runs.values())
        for column in present:
            frame = frames["set"] if column.set_policy else frames["image"]
            col_cells, means = [], []
            for m in methods:
                if not runs[m]:
                    col_cells.append(Cell(NOT_RUN))
                    means.append(math.nan)
                    continue
                if column.set_policy:
                    rows = select(frame, column)
                    rows = rows[(rows["task"] == task) & (rows["variant"] == MAIN) & (rows["method"] == m)]
                    stats = summarise(rows["value"])
                    n_particles = int(spec["settings"][m][task]["n_particles"])
                    counted = _set_images(rows, column, n_particles) if stats["n"] else 0
                else:
                    values = per_image(frame, column)
                    values = values[(values["task"] == task) & (values["variant"] == MAIN) & (values["method"] == m)]
                    values = values[values["image_id"].isin(section_ids)]
                    stats = summarise(values["value"])
                    counted = stats["n"]
                col_cells.append(stat_cell(stats, column.decimals, counted, len(section_ids)))
                means.append(stats["mean"])
            _bold_best(col_cells, means, column.higher_is_better)
            any_incomplete |= any(c.incomplete for c in col_cells)
            for m, cell in zip(methods, col_cells):
                cells[m].append(cell)
        for m in methods:
            cells[m].append(Cell(status_counts(df, task, m, MAIN, section_ids) if runs[m] else NOT_RUN))
    shown = list(dict.fromkeys(c for *_, present in sections for c in present))
    notes = [
        f"Suite {spec['suite']}, {planned} images at {spec['image_size']} px. Mean ± std over images of the "
        "per-image value (mean over the image's particles); best per task and metric in bold (↑ higher is better, "
        "↓ lower); n/a = not computable (see the status column of metrics.parquet)." + sets_note(sets),
        *([INCOMPLETE_NOTE] if any_incomplete else []),
        *([NOT_RUN_NOTE] if any_not_run else []),
        *_reference_note(set_df),
        _settings_note(spec),
    ]
    definitions = [(c.label, c.definition) for c in shown]
    scope = f"the {planned} planned" if sets[0].name is None else "the section's planned"
    definitions.append(("ok", f"images whose solve finished without error or divergence / {scope}; "
                        "diverged images keep their last finite state and count in the means as results, the others "
                        "failed and have no particles"))  # fmt: skip
    rows = [(spec["methods"][m], cells[m]) for m in methods]
    return Table("Main results", "Method", groups, headers, rows, notes, definitions)


def _reference_note(set_df: pd.DataFrame) -> list[str]:
    """A note naming the extra reference set behind the "(ref)" columns, when the table has them."""
    names = sorted(set(set_df["reference"].dropna()) - {r for r in set_df["reference"].dropna() if r.startswith("gt:")})
    if not names:
        return []
    sets = ", ".join(f"{n.split(':')[1]} ({n.split(':')[2]} images)" for n in names)
    return [f"FID/KID (ref): all particles vs the separate reference set {sets}, disjoint from the test images."]


def _settings_note(spec: dict[str, Any]) -> str:
    parts = []
    for method, label in spec["methods"].items():
        per_task = spec["settings"][method]
        if not per_task:
            parts.append(f"{label}: {NOT_RUN}")
            continue
        first = next(iter(per_task.values()))
        hyper = ", ".join(f"{k}={v}" for k, v in sorted(first["hyper"].items()))
        parts.append(f"{label}: N={first['n_particles']}, {first['n_steps']} steps" + (f", {hyper}" if hyper else ""))
    return "Settings: " + "; ".join(parts) + "."


def ablation_table(df: pd.DataFrame, spec: dict[str, Any], ablation: dict[str, Any]) -> Table:
    """One ablation: its values x (task x metric) on its images (the first ``images`` of the suite); with several
    image sets among them, one section per task x set (:func:`report_sets`)."""
    frames = {"image": df, "set": df.iloc[0:0]}
    ids = spec["ids"][: ablation["images"]]
    sets = report_sets(spec, ids)
    groups, headers, sections = [], [], []
    for task in ablation["tasks"]:
        present = _columns_present(frames, ABLATION_COLUMNS, task)
        for image_set in sets:
            sections.append((task, image_set.ids, present))
            groups.append((section_label(spec["tasks"][task]["label"], image_set), len(present)))
            headers += [c.label + c.arrow for c in present]
    values_text = list(ablation["variants"][ablation["tasks"][0]])
    cells: dict[str, list[Cell]] = {v: [] for v in values_text}
    any_incomplete = False
    for task, section_ids, present in sections:
        variants = ablation["variants"][task]
        for column in present:
            values = per_image(df, column)
            values = values[(values["task"] == task) & (values["method"] == ablation["method"])]
            values = values[values["image_id"].isin(section_ids)]
            stats = [summarise(values[values["variant"] == variants[v]]["value"]) for v in values_text]
            col_cells = [stat_cell(s, column.decimals, s["n"], len(section_ids)) for s in stats]
            _bold_best(col_cells, [s["mean"] for s in stats], column.higher_is_better)
            any_incomplete |= any(c.incomplete for c in col_cells)
            for v, cell in zip(values_text, col_cells):
                cells[v].append(cell)
    method_label = spec["methods"][ablation["method"]]
    shown = list(dict.fromkeys(c for *_, present in sections for c in present))
    notes = [
        f"{method_label} with {ablation['parameter']} varied (other settings as in the main table) on the first "
        f"{len(ids)} images; mean ± std over images of the per-image (particle-averaged) value; best in bold."
        + sets_note(sets),
        *([INCOMPLETE_NOTE] if any_incomplete else []),
    ]
    rows = [(f"{ablation['label']} = {v}", cells[v]) for v in values_text]
    definitions = [(c.label, c.definition) for c in shown]
    title = f"Ablation: {method_label}, {ablation['label']}"
    return Table(title, ablation["label"], groups, headers, rows, notes, definitions)


def runtime_table(df: pd.DataFrame, spec: dict[str, Any]) -> Table:
    methods = list(spec["methods"])
    groups = [(spec["tasks"][t]["label"], 2) for t in spec["tasks"]]
    headers = ["s / image", "peak MiB"] * len(spec["tasks"])
    rows = []
    timing = runtime_rows(df)
    for m in methods:
        cells = []
        for task in spec["tasks"]:
            if not method_runs(spec, m, task):
                cells += [Cell(NOT_RUN), Cell(NOT_RUN)]
                continue
            mask = (timing["task"] == task) & (timing["method"] == m) & (timing["variant"] == MAIN)
            runtime = timing[mask & (timing["metric"] == "runtime_s")]["value"]
            memory = timing[mask & (timing["metric"] == "peak_memory_bytes")]["value"].astype("float64")
            s = summarise(runtime)
            cells.append(Cell(format_stat(s["mean"], s["std"], 2)))
            cells.append(Cell(f"{memory.max() / 2**20:.0f}" if memory.notna().any() else "n/a"))
        rows.append((spec["methods"][m], cells))
    devices = sorted(set(timing[timing["metric"] == "runtime_s"]["network"].dropna()))
    notes = [
        "Wall-clock seconds of each image's solve (load + solve + save), mean ± std over images, on "
        f"{devices or 'n/a'}; peak memory is the solve process's high-water mark (RSS, or the CUDA peak when larger)."
    ]
    return Table("Runtime per image (main settings)", "Method", groups, headers, rows, notes)


PAPER_REPORTED = Path(__file__).with_name("paper_reported.yaml")

#: How this repository computes the number comparable with each reported metric: the repository-faithful
#: protocol of the official evaluation (PSNR unclamped, LPIPS-alex on [0, 1]); FID over all particles against
#: the ground-truth images (the official code's uint8 wrap-around before FID is not reproduced).
REPO_PROTOCOL_COLUMNS = {
    "fid": MetricColumn("fid", "clean-fid", "FID", False, 2, set_policy="all_particles"),
    "psnr": MetricColumn("psnr", "repo", "PSNR", True, 2),
    "lpips": MetricColumn("lpips_alex", "repo", "LPIPS", False, 3),
}


def load_paper_reported(path: str | os.PathLike = PAPER_REPORTED) -> dict[str, Any]:
    """The paper's reported numbers (:file:`dwgf/reporting/paper_reported.yaml`), checked for shape."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != "dwgf.paper-reported/1" or not data.get("source"):
        raise ValueError(f"{path}: expected schema dwgf.paper-reported/1 with a 'source' label")
    unknown = sorted(set(data["metrics"]) - set(REPO_PROTOCOL_COLUMNS))
    if unknown:
        raise ValueError(f"{path}: metrics {unknown} have no repo-protocol column in dwgf.reporting.tables")
    return data


def paper_table(df: pd.DataFrame, set_df: pd.DataFrame, spec: dict[str, Any], reported: dict[str, Any]) -> Table:
    """The paper's reported numbers (tagged) beside this run's rows under the repository-faithful protocol.

    Rows: per method the paper has, "<method> (paper, reported)" then "<method> (this run, repo protocol)";
    column groups: the suite's tasks the paper reports. This run's cells follow the main table's rules (mean ±
    std over the planned images, incomplete cells marked); nothing is bold, since the two sources are not one
    experiment.
    """
    tasks = [t for t in spec["tasks"] if t in reported["results"]]
    if not tasks:
        raise ValueError(
            f"report.paper_reference: none of the suite's tasks {list(spec['tasks'])} is in {PAPER_REPORTED.name} "
            f"(it reports {sorted(reported['results'])})"
        )
    metrics = list(reported["metrics"])
    ids = list(spec["ids"])
    groups = [(spec["tasks"][t]["label"], len(metrics)) for t in tasks]
    headers = [
        reported["metrics"][m]["label"] + {True: " ↑", False: " ↓"}[reported["metrics"][m]["higher_is_better"]]
        for _ in tasks
        for m in metrics
    ]
    frames = {"image": df, "set": set_df}
    methods = [m for m in spec["methods"] if any(m in reported["results"][t] for t in tasks)]
    rows, any_incomplete = [], False
    for method in methods:
        paper_cells, ours = [], []
        for task in tasks:
            for metric in metrics:
                value = (reported["results"][task].get(method) or {}).get(metric)
                decimals = int(reported["metrics"][metric]["decimals"])
                paper_cells.append(Cell("–" if value is None else f"{float(value):.{decimals}f}"))
                column = REPO_PROTOCOL_COLUMNS[metric]
                if column.set_policy:
                    chosen = select(frames["set"], column)
                    chosen = chosen[(chosen["task"] == task) & (chosen["variant"] == MAIN)]
                    chosen = chosen[chosen["method"] == method]
                    stats = summarise(chosen["value"])
                    n_particles = int(spec["settings"][method][task]["n_particles"])
                    counted = _set_images(chosen, column, n_particles) if stats["n"] else 0
                else:
                    values = per_image(frames["image"], column)
                    values = values[(values["task"] == task) & (values["variant"] == MAIN)]
                    values = values[(values["method"] == method) & values["image_id"].isin(ids)]
                    stats = summarise(values["value"])
                    counted = stats["n"]
                cell = stat_cell(stats, decimals, counted, len(ids))
                any_incomplete |= cell.incomplete
                ours.append(cell)
        label = spec["methods"][method]
        rows += [(f"{label} (paper, reported)", paper_cells), (f"{label} (this run, repo protocol)", ours)]
    notes = [
        f"Reported: {reported['paper']}, {reported['dataset']}; source: {reported['source']}. Compare them only with "
        "the rows of this run computed under the repository-faithful protocol (the official code's evaluation), "
        "shown beneath each: PSNR on unclamped outputs, LPIPS-alex on [0, 1] inputs, FID of all particles of all "
        f"images against the {len(ids)} ground-truth images (clean-fid features; the official code's uint8 "
        "wrap-around before FID is not reproduced, docs/official-code.md). Standard-protocol numbers are in the "
        "main table. No entry is bold: the two sources are not one experiment.",
        *([INCOMPLETE_NOTE] if any_incomplete else []),
        _settings_note(spec),
    ]
    return Table("Paper's reported numbers beside this run (repo protocol)", "Method", groups, headers, rows, notes)


def write_tables(
    spec: dict[str, Any],
    root: str | os.PathLike,
    metrics_path: str | os.PathLike,
    set_metrics_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    runtime_path: str | os.PathLike | None = None,
) -> list[Path]:
    """``runtime_path``: ``runtime.parquet`` of ``dwgf aggregate`` (the run measurements kept out of
    ``metrics.parquet``); its rows join the metric rows for the runtime table and the solved-image counts."""
    from dwgf.metrics.schema import concat_metrics, read_metrics
    from dwgf.pipeline.records import recorded_input
    from dwgf.provenance import Recorder

    recorder = Recorder("tables", root=root, config=spec, seeds={})
    aggregate_record = Path(root) / LAYOUT["aggregate_record"]  # the tables show only what `dwgf aggregate` wrote
    inputs = [*recorded_input(metrics_path, aggregate_record, root), Path(set_metrics_path)]
    recorded_input(set_metrics_path, aggregate_record, root)
    df, set_df = read_metrics(metrics_path), read_metrics(set_metrics_path)
    if runtime_path is not None:
        inputs += recorded_input(runtime_path, aggregate_record, root)[:1]
        df = concat_metrics([df, read_metrics(runtime_path)])
    written = write_table(main_table(df, set_df, spec), out_dir, "main")
    written += write_table(runtime_table(df, spec), out_dir, "runtime")
    for ablation in spec["ablations"]:
        written += write_table(ablation_table(df, spec, ablation), out_dir, f"ablation-{ablation['name']}")
    if spec.get("paper_reference"):
        written += write_table(paper_table(df, set_df, spec, load_paper_reported()), out_dir, "paper")
        inputs.append(PAPER_REPORTED)
    record = Path(out_dir) / PurePosixPath(LAYOUT["tables_record"]).name
    recorder.write(record, outputs=written, inputs=inputs)
    return written
