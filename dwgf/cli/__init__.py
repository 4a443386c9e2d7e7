"""The ``dwgf`` command: one verb per workflow step. Snakemake rules call these verbs and nothing else.

Each module listed in :data:`VERB_MODULES` defines ``register(subparsers)``, which adds its verbs with
``parser.set_defaults(func=...)``; ``func(args)`` returns the process exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: modules that contribute verbs; each owns its own verbs.
VERB_MODULES = [
    "dwgf.cli.pipeline",  # fit-prior, acquire-*, observe, solve, evaluate, aggregate, tables, plots
    "dwgf.cli.audit",  # verify, trace
    "dwgf.cli.compare",  # testbed-compare
    "dwgf.cli.docs",  # hyperparameters
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dwgf", description=__doc__.splitlines()[0])
    from dwgf import __version__

    parser.add_argument("--version", action="version", version=f"dwgf {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for module_name in VERB_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
