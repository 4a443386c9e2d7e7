"""Audit verbs: ``dwgf verify <results dir>`` and ``dwgf trace <results dir> --method .. --task .. --metric ..``.

``verify`` exits 1 when any link is broken (each problem names the file and what is wrong, followed by the
``snakemake --forcerun`` command that repairs it) and 0 otherwise; ``--json-out`` also writes the report as JSON.
``trace`` prints the lineage of one number (dwgf/audit/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from dwgf.pipeline.records import parse_spec


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
    p.add_argument(
        "--recompute",
        type=_count,
        default=0,
        metavar="K",
        help="recompute the per-image metrics of K randomly chosen images from the particle files and compare them "
        "with the Parquet rows ('all': every image; default 0)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of images for --recompute")
    p.set_defaults(func=_verify)

    p = subparsers.add_parser(
        "seal",
        help="write the suite's root record (run/root.prov.json) over every artifact of its plan",
        description="Last job of the workflow: hash every artifact the suite's plan expects into one root record "
        "(dwgf/audit/root.py); fails naming the missing ones.",
    )
    p.add_argument("--spec", required=True, type=parse_spec, help="the resolved suite config (JSON or @file.json)")
    p.add_argument("--root", required=True, help="results folder of the suite (results/<suite>)")
    p.add_argument("--out", required=True, help="record to write (run/root.prov.json)")
    p.set_defaults(func=_seal)

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


def _count(text: str) -> int:
    if text == "all":
        return -1
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of images or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of images >= 0 or 'all', got {value}")
    return value


def _verify(args: argparse.Namespace) -> int:
    from dwgf.audit.verify import verify_results
    from dwgf.io import atomic_write_json
    from dwgf.suite_run import SuiteLock, is_suite_folder

    # a run writing the folder meanwhile would make every check meaningless: verify holds the suite lock too
    # (inherited when it runs as a job of the workflow, e.g. `snakemake verify`); a folder that is not a suite's
    # results is refused by verify_results, without leaving a lock file in it
    lock = SuiteLock(args.results, "dwgf verify") if is_suite_folder(args.results) else contextlib.nullcontext()
    with lock:
        report = verify_results(args.results, strict=args.strict, recompute=args.recompute, seed=args.seed)
    print(report.format(), flush=True)
    if args.json_out:
        atomic_write_json(args.json_out, report.to_json())
    return 0 if report.ok else 1


def _seal(args: argparse.Namespace) -> int:
    from dwgf.audit.root import seal

    seal(args.spec, args.root, args.out)
    return 0


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
