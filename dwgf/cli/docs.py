"""Generated documentation: ``dwgf hyperparameters`` prints (or writes) docs/hyperparameters.md from the solvers'
hyper-parameter declarations (:mod:`dwgf.solvers.hyper`)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "the solvers' hyper-parameter tables (docs/hyperparameters.md), generated from their declarations"
    parser = subparsers.add_parser("hyperparameters", help=help_text, description=help_text)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", help="write the Markdown to PATH (e.g. docs/hyperparameters.md)")
    group.add_argument("--check", metavar="PATH", help="exit 1 if PATH differs from the generated Markdown")
    parser.set_defaults(func=_hyperparameters)


def hyperparameter_docs() -> str:
    from dwgf.solvers import solver_hyper, solver_names
    from dwgf.solvers.hyper import documentation

    return documentation(solver_hyper(name) for name in solver_names())


def _hyperparameters(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dwgf.io import atomic_write_text

    text = hyperparameter_docs()
    if args.write:
        atomic_write_text(args.write, text)
        print(f"wrote {args.write}")
        return 0
    if args.check:
        path = Path(args.check)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            print(f"{path} is out of date; run `dwgf hyperparameters --write {path}`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0
