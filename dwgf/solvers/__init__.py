"""Solvers with one uniform signature (see :mod:`dwgf.solvers.base`). Use :func:`get_solver`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from dwgf.solvers.base import SolveResult, make_timesteps

#: solver name -> module in dwgf.solvers that defines ``solve`` and ``DEFAULTS``.
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


def solver_defaults(name: str) -> dict:
    """The solver's default hyper-parameters (a copy)."""
    if name not in SOLVER_MODULES:
        raise ValueError(f"unknown solver {name!r}; choose one of {solver_names()}")
    return dict(importlib.import_module(SOLVER_MODULES[name]).DEFAULTS)


__all__ = ["SolveResult", "get_solver", "make_timesteps", "solver_defaults", "solver_names"]
