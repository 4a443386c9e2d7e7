"""One declaration per solver hyper-parameter, and everything derived from it.

Each solver module declares ``HYPER = HyperSpec(...)`` once: per hyper-parameter its name, kind, default, allowed
range or choices, a one-line meaning and where the default comes from. From that single declaration follow

* :meth:`HyperSpec.resolve`: defaults merged with a caller's values, with a ``ValueError`` naming the solver and
  the key for an unknown key, a wrong type (a bool is never a number) or a value out of range;
* :meth:`HyperSpec.schema_fragment`: the JSON Schema of a method's ``hyper:`` in ``config.yaml``
  (:func:`dwgf.pipeline.config.validate_config` injects it into the config schema);
* :meth:`HyperSpec.record`: the resolved values as JSON-friendly data for provenance records, and
  :meth:`HyperSpec.solve_record`: what every solver stores as ``SolveResult.hyper`` (those values, the run's N and
  steps, and the solver's declared derived values);
* :meth:`HyperSpec.markdown_table`: the table of docs/hyperparameters.md (``dwgf hyperparameters --write``).

The official per-task settings (``OfficialTask``) are part of the declaration too: the paper suite of
``config.yaml`` is checked against them by tests/test_workflow.py.

This module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Keys of a solve record (:meth:`HyperSpec.solve_record`) that are arguments of ``solve``, not hyper-parameters.
RUN_KEYS = ("n_particles", "n_steps", "timesteps")

#: Kinds of hyper-parameter. ``tensor`` and ``callable`` are Python-only (a YAML file cannot hold them).
KINDS = ("float", "int", "bool", "choice", "float_pair", "tensor", "callable")


@dataclass(frozen=True)
class Hyper:
    """One hyper-parameter of one solver.

    ``minimum``/``maximum`` bound a number (``exclusive_*`` makes the bound strict); for ``float_pair`` they bound
    each element. ``nullable`` allows ``None``. ``configurable=False`` marks keys that ``config.yaml`` cannot set
    (tensors, callables, and values the ``dwgf solve`` verb fills in itself); ``config_maximum`` narrows the range
    a config may use (e.g. no repulsion without a feature extractor) and ``config_note`` says why.
    """

    name: str
    kind: str
    default: Any
    meaning: str
    source: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    configurable: bool = True
    config_maximum: float | None = None
    config_note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"hyper-parameter {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"hyper-parameter {self.name!r}: kind 'choice' needs choices")

    # -- text ------------------------------------------------------------------------------------------------
    def _bounds_text(self) -> str:
        low = None if self.minimum is None else ("(" if self.exclusive_minimum else "[") + _num(self.minimum)
        high = None if self.maximum is None else _num(self.maximum) + (")" if self.exclusive_maximum else "]")
        if low and high:
            return f"in {low}, {high}"
        if low:
            return ("> " if self.exclusive_minimum else ">= ") + _num(self.minimum)
        if high:
            return ("< " if self.exclusive_maximum else "<= ") + _num(self.maximum)
        return ""

    def allowed(self) -> str:
        """What a valid value is, in words (``a finite number >= 0``)."""
        bounds = self._bounds_text()
        text = {
            "float": "a finite number",
            "int": "an int",
            "bool": "a bool",
            "choice": f"one of {tuple(self.choices)}",
            "float_pair": "two numbers",
            "tensor": "a tensor",
            "callable": "a callable",
        }[self.kind]
        if bounds:
            text += f" {bounds}" if self.kind != "float_pair" else f" {bounds.replace('in ', 'each in ')}"
        return ("None or " + text) if self.nullable else text

    # -- validation ------------------------------------------------------------------------------------------
    def check(self, value: Any, solver: str) -> Any:
        """``value`` if valid (a pair becomes a tuple of floats), else a ValueError naming solver and key."""
        if value is None and (self.nullable or self.kind in ("tensor", "callable")):
            return None
        bad = ValueError(f"{solver} hyper-parameter {self.name!r} must be {self.allowed()}, got {value!r}")
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise bad
            return value
        if self.kind == "callable":
            if not callable(value):
                raise bad
            return value
        if self.kind == "tensor":
            if not (hasattr(value, "shape") and hasattr(value, "dtype")):
                raise bad
            return value
        if self.kind == "float_pair":
            try:
                items = tuple(value)
            except TypeError:
                raise bad from None
            if len(items) != 2 or not all(self._number_ok(v, integer=False) for v in items):
                raise bad
            return tuple(float(v) for v in items)
        if not self._number_ok(value, integer=self.kind == "int"):
            raise bad
        return value

    def _number_ok(self, value: Any, integer: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (value <= self.minimum if self.exclusive_minimum else value < self.minimum):
            return False
        if self.maximum is not None and (value >= self.maximum if self.exclusive_maximum else value > self.maximum):
            return False
        return True

    # -- schema ----------------------------------------------------------------------------------------------
    def schema(self) -> dict[str, Any]:
        """The JSON Schema of this key in ``config.yaml`` (only for configurable keys)."""
        bounds: dict[str, Any] = {}
        if self.minimum is not None:
            bounds["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
        maximum = self.maximum if self.config_maximum is None else self.config_maximum
        if maximum is not None:
            strict = self.exclusive_maximum and self.config_maximum is None
            bounds["exclusiveMaximum" if strict else "maximum"] = maximum
        description = self.meaning + (f" ({self.config_note})" if self.config_note else "")
        if self.kind == "float":
            out: dict[str, Any] = {"type": ["number", "null"] if self.nullable else "number", **bounds}
        elif self.kind == "int":
            out = {"type": ["integer", "null"] if self.nullable else "integer", **bounds}
        elif self.kind == "bool":
            out = {"type": "boolean"}
        elif self.kind == "choice":
            out = {"enum": list(self.choices)}
        elif self.kind == "float_pair":
            out = {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number", **bounds}}
        else:
            raise ValueError(f"hyper-parameter {self.name!r} of kind {self.kind!r} has no config schema")
        return {**out, "description": description}


@dataclass(frozen=True)
class OfficialTask:
    """The official settings of one solver on one operator: hyper-parameters (and N, where the source sets it)."""

    hyper: dict[str, Any]
    source: str
    n_particles: int | None = None


@dataclass(frozen=True)
class HyperSpec:
    """Every hyper-parameter of one solver (see the module docstring).

    ``solver`` is the registry name (``dwgf.solvers.solver_names()``), ``label`` the name used in messages.
    ``n_particles`` and ``n_steps`` are the solver's official N and step count (arguments of ``solve``, not
    hyper-parameters); ``schedule`` is the (t_max, t_min) of its timesteps when it has no ``t_max``/``t_min`` keys.
    ``checks`` are functions of the resolved dict that raise ValueError for combinations a single key cannot
    express. ``official`` maps operator names to :class:`OfficialTask`. ``derived`` names the values a solve
    computes from the resolved hyper-parameters and records beside them (name -> meaning; :meth:`solve_record`).
    """

    solver: str
    label: str
    params: Sequence[Hyper]
    n_particles: int
    n_steps: int
    source: str
    schedule: tuple[int, int] = (999, 2)
    checks: Sequence[Callable[[dict[str, Any]], None]] = ()
    official: dict[str, OfficialTask] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.label}: duplicate hyper-parameter names in {names}")
        clash = sorted(set(self.derived) & (set(names) | set(RUN_KEYS)))
        if clash:
            raise ValueError(f"{self.label}: derived record keys {clash} are hyper-parameters or run keys")
        for operator, task in self.official.items():
            unknown = sorted(set(task.hyper) - set(names))
            if unknown:
                raise ValueError(f"{self.label} official settings for {operator!r} name unknown keys {unknown}")
            for key, value in task.hyper.items():
                self[key].check(value, self.label)

    def __getitem__(self, name: str) -> Hyper:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(f"{self.label} has no hyper-parameter {name!r}; keys are {self.names}")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def configurable(self) -> list[str]:
        """Keys ``config.yaml`` may set (sorted)."""
        return sorted(p.name for p in self.params if p.configurable)

    @property
    def defaults(self) -> dict[str, Any]:
        """Name -> default (a new dict each time)."""
        return {p.name: p.default for p in self.params}

    @property
    def task_defaults(self) -> dict[str, dict[str, Any]]:
        """Operator -> official hyper-parameters (a new dict each time)."""
        return {operator: dict(task.hyper) for operator, task in self.official.items()}

    @property
    def task_n_particles(self) -> dict[str, int]:
        """Operator -> official N, where the source sets one."""
        return {op: task.n_particles for op, task in self.official.items() if task.n_particles is not None}

    def timestep_range(self, resolved: dict[str, Any]) -> tuple[int, int]:
        """(t_max, t_min) of the solver's time grid for resolved hyper-parameters."""
        return int(resolved.get("t_max", self.schedule[0])), int(resolved.get("t_min", self.schedule[1]))

    # -- derived behaviour ------------------------------------------------------------------------------------
    def resolve(self, hyper: dict[str, Any]) -> dict[str, Any]:
        """Defaults updated with ``hyper``; ValueError naming the solver and any unknown key or invalid value."""
        unknown = sorted(set(hyper) - set(self.names))
        if unknown:
            raise ValueError(f"unknown {self.label} hyper-parameter(s) {unknown}; valid keys are {sorted(self.names)}")
        resolved = {**self.defaults, **hyper}
        for param in self.params:
            resolved[param.name] = param.check(resolved[param.name], self.label)
        for check in self.checks:
            check(resolved)
        return resolved

    def schema_fragment(self) -> dict[str, Any]:
        """JSON Schema of ``suites.<s>.methods.<solver>.hyper`` (configurable keys only, nothing else allowed)."""
        return {
            "type": "object",
            "additionalProperties": False,
            "description": f"{self.label} hyper-parameters (declared in dwgf.solvers.{self.solver}.HYPER)",
            "properties": {p.name: p.schema() for p in self.params if p.configurable},
        }

    def record(self, resolved: dict[str, Any]) -> dict[str, Any]:
        """Resolved hyper-parameters as JSON-friendly values: tensors by their shape, callables by repr, pairs as
        lists."""
        out: dict[str, Any] = {}
        for key, value in resolved.items():
            kind = self[key].kind if key in self.names else None
            if value is None:
                out[key] = None
            elif kind == "tensor":
                out[key] = f"tensor{tuple(value.shape)}"
            elif kind == "callable":
                out[key] = repr(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
            else:
                out[key] = value
        return out

    def solve_record(
        self, resolved: dict[str, Any], *, n_particles: int, n_steps: int, timesteps: Sequence[int], **derived: Any
    ) -> dict[str, Any]:
        """The ``SolveResult.hyper`` of one solve, the same for every solver: :meth:`record` of every declared
        key of ``resolved``, the run's N, step count and (first, last) timestep (:data:`RUN_KEYS`), and exactly
        the declared :attr:`derived` values.

        ``resolved`` is this spec's :meth:`resolve` output (extra keys, such as a shared loop's switches, are not
        recorded: a value worth recording is declared); a missing or undeclared derived value is a ValueError.
        """
        missing, unknown = sorted(set(self.derived) - set(derived)), sorted(set(derived) - set(self.derived))
        if missing or unknown:
            raise ValueError(f"{self.label} record: derived values missing {missing}, undeclared {unknown}")
        run = {"n_particles": int(n_particles), "n_steps": int(n_steps), "timesteps": [timesteps[0], timesteps[-1]]}
        declared = self.record({name: resolved[name] for name in self.names})
        return {**declared, **run, **self.record(derived)}

    def markdown_table(self) -> str:
        """This solver's section of docs/hyperparameters.md."""
        lines = [
            f"## {self.label} (`{self.solver}`)",
            "",
            f"Source of the defaults: {self.source}. Official N = {self.n_particles}, {self.n_steps} steps "
            f"(arguments of `solve`, set per method in `config.yaml`).",
            "",
            "| key | default | allowed | in config.yaml | meaning | source |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for p in self.params:
            if p.configurable:
                config = "yes" if p.config_maximum is None else f"yes, <= {_num(p.config_maximum)}: {p.config_note}"
            else:
                config = "no" + (f": {p.config_note}" if p.config_note else "")
            cells = [f"`{p.name}`", f"`{_text(p.default)}`", p.allowed(), config, p.meaning, p.source]
            lines.append(_row(cells))
        derived = "".join(f"; `{key}`: {meaning}" for key, meaning in self.derived.items())
        lines += ["", f"Recorded per solve (`SolveResult.hyper`): every key above, `{'`, `'.join(RUN_KEYS)}`{derived}."]
        if self.official:
            lines += ["", "Official per-task settings:", "", "| operator | settings | source |", "| --- | --- | --- |"]
            for operator, task in self.official.items():
                values = ", ".join(f"{k} = {_text(v)}" for k, v in task.hyper.items())
                if task.n_particles is not None:
                    values += f", N = {task.n_particles}"
                lines.append(_row([f"`{operator}`", values, task.source]))
        return "\n".join(lines) + "\n"


def _row(cells: list[str]) -> str:
    # a literal | (as in ||y - A x||) would end a Markdown table cell
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_text(v) for v in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


def documentation(specs: Iterable[HyperSpec]) -> str:
    """The whole of docs/hyperparameters.md (generated; ``dwgf hyperparameters --write docs/hyperparameters.md``)."""
    head = (
        "# Solver hyper-parameters\n\n"
        "Generated from the declarations `HYPER` in `dwgf/solvers/*.py` by `dwgf hyperparameters --write "
        "docs/hyperparameters.md`; do not edit by hand (a test checks that this file is up to date). The same "
        "declarations validate `solve(**hyper)`, give the config schema of every method's `hyper:` and the values "
        "recorded in provenance. Background: docs/method.md#hyper-parameters.\n"
    )
    return head + "".join("\n" + spec.markdown_table() for spec in specs)
