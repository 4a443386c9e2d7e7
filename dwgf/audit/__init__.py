"""Audit of a suite's results: ``dwgf verify`` (every link from tables back to inputs) and ``dwgf trace`` (the
lineage of one number), both built on the provenance records of :mod:`dwgf.provenance` (dwgf/audit/README.md).

* :func:`verify_results` -> :class:`VerifyReport` (``.ok``, ``.problems``, ``.repair_commands()``);
* :func:`trace` -> lineage dict, :func:`format_trace` -> text;
* :mod:`dwgf.audit.browser`: render the Snakemake HTML report in headless Chromium.
"""

from dwgf.audit.index import ResultsIndex
from dwgf.audit.trace import format_trace, trace
from dwgf.audit.verify import LINK_COLUMNS, Problem, VerifyReport, verify_results

__all__ = ["LINK_COLUMNS", "Problem", "ResultsIndex", "VerifyReport", "format_trace", "trace", "verify_results"]
