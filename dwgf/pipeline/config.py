"""Loading and validating the workflow configuration (``config.yaml``).

The same JSON Schema is applied by the Snakefile and here (:func:`validate_config`), so ``dwgf`` verbs run by hand
see the same errors as the workflow. The schema is ``workflow/schemas/config.schema.yaml`` completed by
:func:`full_schema` with the registries, which are the single source of those facts: the solver names
(:data:`dwgf.solvers.SOLVER_MODULES`), each solver's hyper-parameters (its ``HYPER`` declaration) and the operator
names (:func:`dwgf.operators.operator_names`). Cross-references that a schema cannot express (the selected suite
exists, an ablation names a known task, ...) are checked by :class:`dwgf.pipeline.plan.Plan`.

Importing this module is light (no torch); :func:`full_schema` imports the solver and operator registries, which
import torch.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

#: Repository root of this checkout (the package is installed editable from it).
REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key (``suites.demo.tasks.box.sigma_y``)."""


def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"config schema {str(path)!r} not found; it ships with the repository (workflow/schemas/), so run "
            f"from a checkout of dwgf or pass schema_path"
        )
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def key_path(parts: Any) -> str:
    """``["suites", "demo", "tasks"]`` -> ``"suites.demo.tasks"``; list indices as ``[i]``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def full_schema(schema_path: str | os.PathLike = SCHEMA_PATH, variant_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config schema with the registries filled in: ``methods`` gets one property per registered solver whose
    ``hyper`` (and ``per_task.<task>.hyper``) is ``$defs.hyper_<solver>`` = that solver's
    ``HYPER.schema_fragment()``, and each of ``variant_names`` (method entries of the config with a ``solver`` key)
    is a named variant checked like that solver; ``ablation.method``, ``task.operator`` and ``metrics.fid_network``
    get the registered names (solvers, operators, :data:`dwgf.metrics.fid.NETWORKS`) as enums."""
    from dwgf.metrics.fid import NETWORKS
    from dwgf.operators import operator_names
    from dwgf.solvers import solver_hyper, solver_names

    schema = load_schema(schema_path)
    defs = schema["$defs"]
    solvers = solver_names()
    methods: dict[str, Any] = {}
    for name in solvers:
        defs[f"hyper_{name}"] = solver_hyper(name).schema_fragment()
        hyper_ref = {"$ref": f"#/$defs/hyper_{name}"}
        methods[name] = {
            "$ref": "#/$defs/method",
            "properties": {
                "hyper": hyper_ref,
                "per_task": {"additionalProperties": {"properties": {"hyper": hyper_ref}}},
            },
        }
    # a named variant of a solver (``variant_names``: method entries with a ``solver`` key) is checked like that
    # solver: {solver: <name>, ...} with that solver's hyper-parameters; any other unknown name is refused
    variant = {
        "type": "object",
        "required": ["solver"],
        "properties": {"solver": {"enum": solvers}},
        "allOf": [
            {"if": {"properties": {"solver": {"const": name}}}, "then": {"$ref": "#/$defs/method", **methods[name]}}
            for name in solvers
        ],
    }
    defs["methods"]["properties"] = {**{name: variant for name in variant_names if name not in methods}, **methods}
    defs["methods"]["additionalProperties"] = False
    # an ablation varies one method of the suite: a solver or a named variant of one
    ablation_methods = [*solvers, *(name for name in variant_names if name not in solvers)]
    defs["ablation"]["properties"]["method"] = {**defs["ablation"]["properties"]["method"], "enum": ablation_methods}
    defs["task"]["properties"]["operator"] = {**defs["task"]["properties"]["operator"], "enum": operator_names()}
    defs["metrics"]["properties"]["fid_network"] = {
        **defs["metrics"]["properties"]["fid_network"],
        "enum": list(NETWORKS),
    }
    return schema


def validate_config(config: dict[str, Any], schema_path: str | os.PathLike = SCHEMA_PATH) -> None:
    """Raise :class:`ConfigError` naming the first offending key if ``config`` breaks the schema
    (:func:`full_schema`)."""
    import jsonschema

    variants = sorted(
        {
            name
            for suite in (config.get("suites") or {}).values()
            if isinstance(suite, dict) and isinstance(suite.get("methods"), dict)
            for name, entry in suite["methods"].items()
            if isinstance(entry, dict) and "solver" in entry
        }
    )
    schema = full_schema(schema_path, tuple(variants))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        error = _most_specific(errors[0])
        raise ConfigError(f"config key {key_path(error.absolute_path)!r}: {error.message}")


def _most_specific(error: Any) -> Any:
    # oneOf/allOf failures carry the real reason in their context; report the deepest one.
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Return a copy of ``config`` with dotted-key ``overrides`` set (``{"suites.demo.seed": 3}``)."""
    config = copy.deepcopy(config)
    for dotted, value in (overrides or {}).items():
        node = config
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a mapping in the config")
            node = node[part]
        node[parts[-1]] = value
    return config


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse the YAML file ``path``; a syntax error raises :class:`ConfigError` naming ``<file>:<line>:<column>``.

    The Snakefile calls it on ``config.yaml`` before its ``configfile:`` directive, because Snakemake's own message
    for a broken file names neither file nor line.
    """
    with open(path, encoding="utf-8") as handle:
        try:
            return yaml.safe_load(handle)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            problem = " ".join(str(p) for p in (getattr(error, "context", None), getattr(error, "problem", None)) if p)
            raise ConfigError(f"{where}: YAML syntax error: {problem or error}") from None


def load_config(path: str | os.PathLike = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read ``config.yaml``, apply dotted overrides (``{"suite": "paper"}``) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found; pass the workflow's config.yaml")
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping, got {type(config).__name__}")
    config = apply_overrides(config, overrides)
    validate_config(config)
    return config
