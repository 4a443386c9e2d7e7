"""Summary of one ``benchmarks/gpu_checks.sh`` run: ``OUT/summary.md`` and ``OUT/summary.json``.

Reads what the parts left: ``OUT/logs/parts.tsv`` (exit status and seconds per part), ``OUT/logs/env.txt``,
``OUT/matrix.json`` / ``OUT/matrix.md`` (benchmarks/gpu_matrix.py), the JUnit XML of the GPU tests and the gpu_smoke
suite's tables and verify report under ``/tmp/gpu_smoke/results/gpu_smoke``. A part that did not run or failed is
listed as such; nothing is filled in.

    python benchmarks/gpu_summary.py OUT [--smoke-root DIR]
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def parts(out: Path) -> list[dict[str, Any]]:
    text = _read(out / "logs" / "parts.tsv") or ""
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    return [{"part": r[0], "exit": r[1], "seconds": r[2], "limit": r[3]} for r in rows if len(r) == 4]


def pytest_result(out: Path) -> dict[str, Any] | None:
    path = out / "logs" / "pytest.xml"
    if not path.is_file():
        return None
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": failed}  # fmt: skip


def smoke_result(root: Path) -> dict[str, Any] | None:
    if not root.is_dir():
        return None
    verify = root / "audit" / "verify.json"
    report = json.loads(verify.read_text()) if verify.is_file() else None
    return {
        "root": str(root),
        "main_table": _read(root / "tables" / "main.md"),
        "runtime_table": _read(root / "tables" / "runtime.md"),
        "verify_ok": None if report is None else bool(report.get("ok")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--smoke-root", type=Path, default=Path("/tmp/gpu_smoke/results/gpu_smoke"))
    args = parser.parse_args(argv)
    out: Path = args.out
    matrix = json.loads(_read(out / "matrix.json") or "null")
    summary = {
        "parts": parts(out),
        "env": _read(out / "logs" / "env.txt"),
        "pytest": pytest_result(out),
        "smoke": smoke_result(args.smoke_root),
        "matrix_setting": matrix and matrix.get("setting"),
        "matrix_rows": matrix and matrix.get("rows"),
    }
    lines = ["# GPU checks", "", "| part | exit | seconds | limit |", "|---|---|---|---|"]
    lines += [f"| {p['part']} | {p['exit']} | {p['seconds']} | {p['limit']} |" for p in summary["parts"]]
    for p in summary["parts"]:  # why a part failed, without unpacking logs.tar.gz
        log = _read(out / "logs" / f"{p['part']}.txt")
        if p["exit"] not in ("0", "skipped") and log:
            lines += [
                "",
                f"{p['part']} (exit {p['exit']}), last lines of its log:",
                "```",
                *log.splitlines()[-15:],
                "```",
            ]
    lines += ["", "## Environment", "", "```", (summary["env"] or "(env part did not run)").strip(), "```", ""]
    lines += ["## Speed-lever matrix (benchmarks/gpu_matrix.py)", ""]
    lines += [_read(out / "matrix.md") or "(no matrix results)", ""]
    lines += ["## gpu_smoke suite", ""]
    smoke = summary["smoke"]
    if smoke is None:
        lines.append("(the suite did not run)")
    else:
        lines += [f"dwgf verify ok: {smoke['verify_ok']}", "", smoke["main_table"] or "(no main table)", ""]
        lines += [smoke["runtime_table"] or "(no runtime table)"]
    lines += ["", "## GPU tests", ""]
    result = summary["pytest"]
    lines.append("(did not run)" if result is None else
                 f"{result['passed']} passed, {result['failures'] + result['errors']} failed, {result['skipped']} "
                 f"skipped; failed: {result['failed'] or 'none'}")  # fmt: skip
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
