"""The solvers' hyper-parameter declarations (dwgf.solvers.hyper) and everything derived from them.

Every test iterates the solver registry (dwgf.solvers.solver_names()), so a new solver is covered without editing
this file.
"""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
import yaml

from dwgf.pipeline.config import REPO_ROOT, SCHEMA_PATH, full_schema
from dwgf.solvers import solver_defaults, solver_hyper, solver_names
from dwgf.solvers.hyper import Hyper, HyperSpec

SOLVERS = solver_names()


def numeric_keys(name: str) -> list[Hyper]:
    return [p for p in solver_hyper(name).params if p.kind in ("float", "int")]


def test_registry_lists_every_solver_module():
    import pkgutil

    import dwgf.solvers

    modules = {m.name for m in pkgutil.iter_modules(dwgf.solvers.__path__)} - {"base", "hyper"}
    assert set(SOLVERS) == modules
    for name in SOLVERS:
        spec = solver_hyper(name)
        assert isinstance(spec, HyperSpec) and spec.solver == name
        assert solver_defaults(name) == spec.defaults


@pytest.mark.parametrize("name", SOLVERS)
def test_defaults_resolve_and_unknown_key_names_solver_and_key(name):
    spec = solver_hyper(name)
    assert set(spec.resolve({})) == set(spec.names)
    with pytest.raises(ValueError, match=rf"unknown {spec.label} hyper-parameter\(s\) \['not_a_key'\]"):
        spec.resolve({"not_a_key": 1})


@pytest.mark.parametrize("name", SOLVERS)
def test_booleans_are_never_numbers(name):
    spec = solver_hyper(name)
    for param in numeric_keys(name):
        with pytest.raises(ValueError, match=rf"{spec.label} hyper-parameter '{param.name}' must be"):
            spec.resolve({param.name: True})


@pytest.mark.parametrize("name", SOLVERS)
def test_out_of_range_values_name_the_key(name):
    spec = solver_hyper(name)
    for param in numeric_keys(name):
        if param.minimum is not None:
            below = param.minimum if param.exclusive_minimum else param.minimum - 1
            with pytest.raises(ValueError, match=f"'{param.name}'"):
                spec.resolve({param.name: int(below) if param.kind == "int" else float(below)})
        if param.kind == "float":
            with pytest.raises(ValueError, match=f"'{param.name}'"):
                spec.resolve({param.name: math.nan})


@pytest.mark.parametrize("name", SOLVERS)
def test_schema_fragment_accepts_defaults_and_rejects_what_resolve_rejects(name):
    spec = solver_hyper(name)
    fragment = spec.schema_fragment()
    assert sorted(fragment["properties"]) == spec.configurable
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.defaults.items() if k in spec.configurable}
    jsonschema.validate(defaults, fragment)
    for param in numeric_keys(name):
        if param.configurable:
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({param.name: True}, fragment)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"not_a_key": 1}, fragment)


def test_config_schema_takes_hyper_and_names_from_the_registries():
    """One source: the schema file lists no solver or operator names; full_schema fills them in."""
    from dwgf.operators import operator_names

    raw = yaml.safe_load(SCHEMA_PATH.read_text())
    assert not [key for key in raw["$defs"] if key.startswith("hyper_")]
    text = SCHEMA_PATH.read_text()
    assert "enum: [dwgf" not in text and "box_inpainting" not in text
    schema = full_schema()
    for name in SOLVERS:
        assert schema["$defs"][f"hyper_{name}"] == solver_hyper(name).schema_fragment()
    assert sorted(schema["$defs"]["methods"]["properties"]) == SOLVERS
    assert schema["$defs"]["ablation"]["properties"]["method"]["enum"] == SOLVERS
    assert schema["$defs"]["task"]["properties"]["operator"]["enum"] == operator_names()


@pytest.mark.parametrize("name", SOLVERS)
def test_official_settings_resolve_and_record_as_json(name):
    spec = solver_hyper(name)
    for operator, values in spec.task_defaults.items():
        resolved = spec.resolve(values)
        json.dumps(spec.record(resolved))
        assert all(resolved[k] == v for k, v in values.items()), operator


def test_record_summarises_python_only_values():
    import torch

    from dwgf.solvers import dwgf, rlsd

    resolved = dwgf.HYPER.resolve({"per_particle_noise": True, "y_clean": torch.zeros(1, 3, 8, 8), "sigma_y": 0.01})
    assert dwgf.HYPER.record(resolved)["y_clean"] == "tensor(1, 3, 8, 8)"
    assert dwgf.HYPER.record(resolved)["betas"] == [0.9, 0.999]
    extractor = torch.nn.Identity()
    recorded = rlsd.HYPER.record(rlsd.HYPER.resolve({"repulsion_gamma": 1.0, "feature_extractor": extractor}))
    assert recorded["feature_extractor"] == repr(extractor)


def test_dwgf_rejects_bool_for_gamma_like_the_baselines():
    # issue: booleans were rejected for numeric keys of rlsd/psld but not dwgf
    from dwgf.solvers import dwgf

    with pytest.raises(ValueError, match="DWGF hyper-parameter 'gamma'"):
        dwgf.resolve_hyper({"gamma": True})


def test_hyperparameter_docs_are_up_to_date():
    from dwgf.cli.docs import hyperparameter_docs

    committed = (REPO_ROOT / "docs" / "hyperparameters.md").read_text(encoding="utf-8")
    assert committed == hyperparameter_docs(), "run `dwgf hyperparameters --write docs/hyperparameters.md`"
    for name in SOLVERS:
        assert f"(`{name}`)" in committed
