"""The ``dwgf`` command: one verb per workflow step. Snakemake rules call these verbs and nothing else.

Each module listed in :data:`VERB_MODULES` defines ``register(subparsers)``, which adds its verbs with
``parser.set_defaults(func=...)``; ``func(args)`` returns the process exit status.

Errors. Run as the command (``main()`` without arguments: the ``dwgf`` script, ``python -m dwgf``), an expected
error (:func:`dwgf.errors.is_expected`: bad input, a missing file, a refused operation) prints one line
``dwgf <verb>: error: <message>`` (plus ``see <log>`` when the error names a log) and exits with status 2; any
other exception is a bug and keeps its traceback. ``DWGF_TRACEBACK=1`` shows the traceback of expected errors too.
Called with an argument list (tests, Python callers), ``main`` lets every exception propagate.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from dwgf.errors import is_expected

#: exit status of an expected error (the same as argparse's usage errors).
ERROR_STATUS = 2

#: modules that contribute verbs; each owns its own verbs.
VERB_MODULES = [
    "dwgf.cli.pipeline",  # fit-prior, acquire-*, observe, solve, evaluate, aggregate, tables, plots
    "dwgf.cli.audit",  # verify, trace
    "dwgf.cli.compare",  # testbed-compare
    "dwgf.cli.docs",  # hyperparameters
    "dwgf.cli.restore",  # restore: one image of your own, outside the DAG
    "dwgf.cli.weights",  # build-random-sd
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dwgf", description=__doc__.splitlines()[0])
    from dwgf import __version__

    parser.add_argument("--version", action="version", version=f"dwgf {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for module_name in VERB_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None, *, one_line_errors: bool | None = None) -> int:
    """Run one verb. ``one_line_errors`` (default: ``argv is None``, i.e. run as the command): module docstring."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if one_line_errors is None:
        one_line_errors = argv is None
    try:
        return int(args.func(args) or 0)
    except Exception as error:
        if not one_line_errors or not is_expected(error) or os.environ.get("DWGF_TRACEBACK") == "1":
            raise
        message = str(error) or type(error).__name__
        print(f"dwgf {args.verb}: error: {message}", file=sys.stderr)
        log = getattr(error, "log", None)
        if log:
            print(f"see {log}", file=sys.stderr)
        return ERROR_STATUS


if __name__ == "__main__":
    sys.exit(main())
