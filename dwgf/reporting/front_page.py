"""The first page of ``snakemake --report``: the suite, the git commit, the verify status and the main numbers.

Snakemake renders the workflow description (``workflow/report/workflow.rst``) with Jinja, giving it only the
config; the rule file ``workflow/rules/report.smk`` therefore puts a :class:`FrontPage` under the config key
``report_front_page``, and the description prints it. The page is built when it is rendered (``str()``), i.e. when
``snakemake --report`` runs, from what is on disk then:

* **results commit**: ``code.git_commit`` / ``code.git_dirty`` of ``tables/tables.prov.json`` (the commit that
  made the tables, not the checkout the report is rendered from, which is named beside it when it differs);
* **verify status**: ``audit/verify.json`` of ``snakemake verify`` -- passed / failed with the number of problems,
  or "not verified" when it is absent, or "stale" when the tables were rewritten after it;
* **main numbers**: the headline columns of the main table (:func:`dwgf.reporting.tables.main_table`, the same
  function and the same planned images as ``tables/main.*``, incomplete cells marked the same way), one small
  table per task, means only (the std is in the full table; the report's description column is narrow).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: Main-table columns the first page shows (when the table has them), in this order, with their short headers.
HEADLINE = {
    "PSNR ↑": "PSNR ↑",
    "LPIPS-alex ↓": "LPIPS ↓",
    "PSNR vs exact post. mean ↑": "vs exact mean ↑",
    "Spread / exact": "spread / exact",
    "FID ↓": "FID ↓",
    "KID ↓": "KID ↓",
    "ok": "ok",
}
_STD = re.compile(r" ± \S+")
#: The per-image solve outcomes and timings, when ``dwgf aggregate`` writes them beside ``metrics.parquet``
#: (the main table's ``ok`` column counts them).
RUNTIME_FILE = "runtime.parquet"


class FrontPage:
    """reStructuredText of the report's first page, built on ``str()`` (see the module docstring)."""

    def __init__(self, root: str, report_spec: dict[str, Any], description: str = ""):
        self.root = str(root)
        self.report_spec = report_spec
        self.description = description

    def __str__(self) -> str:
        root = Path(self.root)
        spec = self.report_spec
        lines = [f"**Suite {spec['suite']}**" + (f": {self.description}" if self.description else "") + ".", ""]
        lines += [f"* Results commit: {_commit(root)}", f"* Verify status: {_verify_status(root)}", ""]
        lines += _main_numbers(root, spec)
        return "\n".join(lines) + "\n"


def _commit(root: Path) -> str:
    from dwgf.provenance import code_version

    record = root / "tables" / "tables.prov.json"
    current = code_version()
    if not record.is_file():
        return f"no tables yet (checkout {_commit_text(current)})"
    made = json.loads(record.read_text(encoding="utf-8")).get("code") or {}
    text = f"``{_commit_text(made)}`` (the commit that made the tables)"
    if made.get("git_commit") != current.get("git_commit") or made.get("git_dirty") != current.get("git_dirty"):
        text += f"; this report was rendered from ``{_commit_text(current)}``"
    return text


def _commit_text(code: dict[str, Any]) -> str:
    commit = code.get("git_commit") or "unknown (not a git checkout)"
    return commit + (" + uncommitted changes" if code.get("git_dirty") else "")


def _verify_status(root: Path) -> str:
    report, tables = root / "audit" / "verify.json", root / "tables" / "tables.prov.json"
    if not report.is_file():
        return "not verified (run ``snakemake -c 2 verify``: it re-hashes every result and writes audit/verify.json)"
    data = json.loads(report.read_text(encoding="utf-8"))
    problems = data.get("problems") or []
    status = (
        f"**passed** ({data.get('n_records', '?')} records, {data.get('n_files', '?')} files re-hashed)"
        if data.get("ok")
        else f"**FAILED**: {len(problems)} problem(s), listed in audit/verify.json with the commands that repair them"
    )
    if tables.is_file() and tables.stat().st_mtime > report.stat().st_mtime:
        status += " -- stale: the tables were rewritten after this check; run ``snakemake -c 2 verify`` again"
    return status


def _main_numbers(root: Path, spec: dict[str, Any]) -> list[str]:
    from dwgf.metrics.schema import concat_metrics, read_metrics
    from dwgf.reporting.tables import main_table

    metrics, set_metrics = root / "metrics.parquet", root / "set_metrics.parquet"
    if not (metrics.is_file() and set_metrics.is_file()):
        return ["Main numbers: not computed yet (run ``snakemake`` first)."]
    df = read_metrics(metrics)
    runtime = root / RUNTIME_FILE
    if runtime.is_file():  # solve outcomes and timings, when aggregate keeps them out of metrics.parquet
        df = concat_metrics([df, read_metrics(runtime)])
    table = main_table(df, read_metrics(set_metrics), spec)
    lines = [
        "Main numbers: means over images (± std and every column, defined, in the full table under Tables); best "
        "in bold; (n=k/m): from only k of the m planned images; ok: images solved / planned.",
        "",
    ]
    start = 0
    for label, span in table.groups:
        headers = table.columns[start : start + span]
        keep = [i for h in HEADLINE for i, c in enumerate(headers) if c == h]
        lines += [f".. list-table:: {label}", "   :header-rows: 1", "", "   * - Method"]
        lines += [f"     - {HEADLINE[headers[i]]}" for i in keep]
        for method, cells in table.rows:
            row = cells[start : start + span]
            lines.append(f"   * - {method}")
            for i in keep:
                text = _STD.sub("", row[i].text).replace(" (", "\u00a0(")  # keep "5.17 (n=1/2)" on one line
                lines.append(f"     - {'**' + text + '**' if row[i].bold else text}")
        lines.append("")
        start += span
    return lines
