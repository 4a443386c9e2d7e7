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
    from dwgf.metrics.fid import NETWORKS

    assert schema["$defs"]["metrics"]["properties"]["fid_network"]["enum"] == list(NETWORKS)
    assert "cleanfid-inception" not in text


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


@pytest.mark.parametrize("name", SOLVERS)
def test_solver_contract(name):
    """The uniform signature, determinism, the recorded hyper-parameters and the unknown-key error, per solver."""
    import inspect

    import torch
    from test_baselines import GaussianLatentPrior, observation

    from dwgf.operators import make_operator
    from dwgf.solvers import get_solver

    solve, spec = get_solver(name), solver_hyper(name)
    parameters = inspect.signature(solve).parameters
    assert list(parameters)[:5] == ["prior", "operator", "y", "n_particles", "generator"]
    assert parameters["n_steps"].default == spec.n_steps and parameters["progress"].default is True
    prior = GaussianLatentPrior()
    operator = make_operator("sr_avgpool", 16, factor=8)
    y = observation(prior, operator)

    def run(seed):
        return solve(prior, operator, y, 2, torch.Generator().manual_seed(seed), n_steps=3, progress=False)

    a, b = run(5), run(5)
    assert a.ok and a.particles.shape == (2, 3, 16, 16) and a.n_steps == 3
    assert torch.equal(a.particles, b.particles) and torch.equal(a.latents, b.latents)
    assert set(spec.names) <= set(a.hyper), sorted(set(spec.names) - set(a.hyper))
    json.dumps(a.hyper)
    with pytest.raises(ValueError, match="not_a_key"):
        solve(prior, operator, y, 2, torch.Generator().manual_seed(0), n_steps=2, progress=False, not_a_key=1)


def _changed_values(name: str) -> dict:
    """Official settings for SR (where declared) and half of every other positive configurable float default, so
    a record that ignored the caller's values (or retyped the defaults) would differ."""
    spec = solver_hyper(name)
    values = dict(spec.task_defaults.get("sr_avgpool", {}))
    for param in spec.params:
        default = param.default
        if param.configurable and param.kind == "float" and param.name not in values and default and default > 0:
            values[param.name] = default / 2
    spec.resolve(values)  # the combination is valid
    return values


@pytest.mark.parametrize("name", SOLVERS)
def test_recorded_hyper_parameters_are_what_the_declaration_derives(name):
    """Every registered solver records exactly ``HYPER.record`` of the resolved values, the run keys and the
    declared derived values (issue 15: the recorded hyper-parameters come from the one declaration)."""
    import torch
    from test_baselines import GaussianLatentPrior, observation

    from dwgf.operators import make_operator
    from dwgf.solvers import get_solver
    from dwgf.solvers.base import make_timesteps
    from dwgf.solvers.hyper import RUN_KEYS

    spec, values = solver_hyper(name), _changed_values(name)
    prior = GaussianLatentPrior()
    operator = make_operator("sr_avgpool", 16, factor=8)
    y = observation(prior, operator)
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    results = get_solver(name)(prior, operator, torch.cat([y, y]), 2, generators, n_steps=3, progress=False, **values)
    resolved = spec.resolve(values)
    timesteps = make_timesteps(3, *spec.timestep_range(resolved))
    expected = {**spec.record(resolved), "n_particles": 2, "n_steps": 3, "timesteps": [timesteps[0], timesteps[-1]]}
    for result in results:  # the same record for each image of the batch
        recorded = dict(result.hyper)
        assert set(recorded) == set(spec.names) | set(RUN_KEYS) | set(spec.derived)
        derived = {key: recorded.pop(key) for key in spec.derived}
        assert recorded == expected
        assert all(recorded[key] == (list(v) if isinstance(v, tuple) else v) for key, v in values.items())
        json.dumps(derived)
    if name == "rlsd":
        from dwgf.solvers.rlsd import prior_weight

        assert derived == {"prior_weight": prior_weight(resolved)}
    if name == "latent_dps":
        assert derived == {"gamma": 0.0}


def test_solve_record_refuses_undeclared_or_missing_derived_values():
    from dwgf.solvers import rlsd

    resolved = rlsd.HYPER.resolve({})
    with pytest.raises(ValueError, match=r"RLSD record: derived values missing \['prior_weight'\]"):
        rlsd.HYPER.solve_record(resolved, n_particles=2, n_steps=3, timesteps=[999, 2])
    with pytest.raises(ValueError, match=r"undeclared \['extra'\]"):
        rlsd.HYPER.solve_record(resolved, n_particles=2, n_steps=3, timesteps=[999, 2], prior_weight=0.5, extra=1)
    with pytest.raises(ValueError, match=r"derived record keys \['w_t'\]"):
        HyperSpec("x", "X", [Hyper("w_t", "float", 0.1, "m", "s")], 1, 1, "s", derived={"w_t": "clash"})
