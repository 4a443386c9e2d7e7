"""Audit verbs: ``dwgf verify <results dir>`` and ``dwgf trace <results dir> --method .. --task .. --metric ..``.

``verify`` exits 1 when any link is broken (each problem names the file and what is wrong, followed by the
``snakemake --forcerun`` command that repairs it) and 0 otherwise; ``--json-out`` also writes the report as JSON.
``trace`` prints the lineage of one number (dwgf/audit/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify",
        help="re-hash every artifact of a suite's results and report broken provenance links",
        description="Walk results/<suite> from tables back to inputs; exit 1 on any missing, modified, stale or "
        "unexpected file and print the command that repairs it.",
    )
    p.add_argument("results", help="a suite's results folder (results/<suite>)")
    p.add_argument("--json-out", default=None, help="also write the report as JSON to this file (atomically)")
    p.add_argument("--strict", action="store_true", help="records from a dirty checkout or mixed commits fail too")
    p.set_defaults(func=_verify)

    p = subparsers.add_parser(
        "trace",
        help="print the lineage of one number (table cell or one image's metric)",
        description="Lineage of one metric value: Parquet rows, particle files, run record, observation, input "
        "image and prior, each file re-hashed.",
    )
    p.add_argument("results", help="a suite's results folder (results/<suite>)")
    p.add_argument("--method", required=True, help="method (e.g. dwgf)")
    p.add_argument("--task", required=True, help="task name of the suite (e.g. box)")
    p.add_argument("--metric", required=True, help="metric name as in metrics.parquet (e.g. psnr)")
    p.add_argument("--image", default=None, help="image id; without it the table cell over all images is traced")
    p.add_argument("--variant", default="main", help="variant (main, or <ablation>-<value>)")
    p.add_argument("--particle", type=int, default=None, help="one particle index (-1: the particle-mean image)")
    p.add_argument("--protocol", default=None, help="metric protocol (prefix), default standard when present")
    p.add_argument("--json", action="store_true", help="print the lineage as JSON")
    p.set_defaults(func=_trace)


def _verify(args: argparse.Namespace) -> int:
    from dwgf.audit.verify import verify_results
    from dwgf.io import atomic_write_json

    report = verify_results(args.results, strict=args.strict)
    print(report.format(), flush=True)
    if args.json_out:
        atomic_write_json(args.json_out, report.to_json())
    return 0 if report.ok else 1


def _trace(args: argparse.Namespace) -> int:
    from dwgf.audit.trace import format_trace, trace

    lineage = trace(
        args.results, args.method, args.task, args.metric, args.image, args.variant, args.particle, args.protocol
    )
    if args.json:
        json.dump(lineage, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(format_trace(lineage))
    return 0
