"""Solvers with one uniform signature (see :mod:`dwgf.solvers.base`). Use :func:`get_solver`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from dwgf.solvers.base import SolveResult, make_timesteps
from dwgf.solvers.hyper import HyperSpec

#: solver name -> module in dwgf.solvers that defines ``solve`` and ``HYPER`` (its hyper-parameter declaration,
#: :class:`dwgf.solvers.hyper.HyperSpec`). Every consumer (config schema, plan checks, contract tests, docs)
#: iterates this registry, so a new solver is one line here plus its module.
SOLVER_MODULES: dict[str, str] = {
    "dwgf": "dwgf.solvers.dwgf",
    "psld": "dwgf.solvers.psld",
    "rlsd": "dwgf.solvers.rlsd",
    "latent_dps": "dwgf.solvers.latent_dps",
}


def solver_names() -> list[str]:
    return sorted(SOLVER_MODULES)


def get_solver(name: str) -> Callable[..., SolveResult]:
    """Return the ``solve`` function of solver ``name``."""
    if name not in SOLVER_MODULES:
        raise ValueError(f"unknown solver {name!r}; choose one of {solver_names()}")
    return importlib.import_module(SOLVER_MODULES[name]).solve


def solver_hyper(name: str) -> HyperSpec:
    """The hyper-parameter declaration of solver ``name`` (its module's ``HYPER``)."""
    if name not in SOLVER_MODULES:
        raise ValueError(f"unknown solver {name!r}; choose one of {solver_names()}")
    return importlib.import_module(SOLVER_MODULES[name]).HYPER


def solver_defaults(name: str) -> dict:
    """The solver's default hyper-parameters (a copy), from its declaration."""
    return solver_hyper(name).defaults


__all__ = [
    "HyperSpec",
    "SolveResult",
    "get_solver",
    "make_timesteps",
    "solver_defaults",
    "solver_hyper",
    "solver_names",
]
