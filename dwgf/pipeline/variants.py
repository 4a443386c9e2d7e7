"""What a suite runs: its images, tasks, methods, ablation variants and shards, checked against each other.

Vocabulary
----------
* **task**: an operator with its parameters and sigma_y (``suites.<s>.tasks.<task>``).
* **method**: a solver of :mod:`dwgf.solvers` with N, step count and hyper-parameters, optionally overridden
  per task (``per_task``). A method named otherwise names its solver (``dwgf_svgd: {solver: dwgf, ...}``): a
  named variant, with rows of its own in every table. A method runs on every task of the suite unless it names
  its own (``tasks: [sr8, sr32]``, :meth:`Suite.method_tasks`): the other (method, task) cells are *not run* --
  planned nowhere, and shown as "not run" in the tables, never as a failed or incomplete result.
* **variant**: ``main`` (the method's settings) or ``<ablation>-<value>`` for one ablation value
  (``gamma-0.05``). An ablation value equal to the main setting *is* the main variant (no duplicate solve):
  its rows are read from ``main`` restricted to the ablation's images.
* **shard**: ``000``, ``001``, ... -- consecutive groups of ``shard_size`` images solved by one job.

:class:`Suite` raises :class:`~dwgf.pipeline.config.ConfigError` naming the key for cross-reference errors that
the JSON Schema cannot express. This module never imports torch: it runs at Snakefile parse time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from dwgf.pipeline.config import ConfigError

MAIN = "main"

#: Parameters of a method that are not hyper-parameters.
SOLVE_ARGUMENTS = ("n_particles", "n_steps")


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


#: ``data.source.kind`` of a composite data source: named image sets, each with its own source and ids.
COMPOSITE_SOURCE = "sets"
#: The image set of every image of a single (non-composite) data source (the ``image_set`` metrics column).
DEFAULT_IMAGE_SET = "test"
#: Sources whose pixels are made on this machine from the id (and, for prior samples, the fitted prior): the
#: kinds a composite source may combine. ``prior_samples`` needs the test-bed prior (``gaussian_mixture``).
GENERATED_KINDS = ("bundled", "prior_samples", "textures")


def image_sets(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{set name: {"source": ..., "ids": [...]}}`` of a ``data`` block (or an ``acquire-images`` spec).

    A composite source (``source: {kind: sets, sets: [{name, source, ids}, ...]}``) gives its named sets in list
    order (a list, not a mapping: the order decides the suite's id order, hence the ablations' first images and
    the shards, and must survive a JSON round trip with sorted keys); any other source is one set named
    :data:`DEFAULT_IMAGE_SET` with ``data.ids``.
    """
    source = data["source"]
    if source["kind"] == COMPOSITE_SOURCE:
        sets: dict[str, dict[str, Any]] = {}
        for part in source["sets"]:
            if part["name"] in sets:
                raise ConfigError(f"config key 'data.source.sets': set name {part['name']!r} is used twice")
            sets[part["name"]] = {"source": dict(part["source"]), "ids": resolve_ids(part["ids"]), "index": len(sets)}
        return sets
    return {DEFAULT_IMAGE_SET: {"source": dict(source), "ids": resolve_ids(data["ids"])}}


def image_set_of(sets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{image id: set name}``; ``ConfigError`` when an id is in two sets (ids name files and rows: unique)."""
    owner: dict[str, str] = {}
    for name, part in sets.items():
        for image_id in part["ids"]:
            if image_id in owner:
                raise ConfigError(
                    f"config key 'data.source.sets': image id {image_id!r} is in sets {owner[image_id]!r} and "
                    f"{name!r}; every id must be unique across the sets"
                )
            owner[image_id] = name
    return owner


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


class Suite:
    """The selected suite (``config["suite"]``) of a schema-valid config: ids, tasks, methods, variants, shards.

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
        self.image_sets = image_sets(self.spec["data"])
        self.image_set_of = image_set_of(self.image_sets)
        self.ids = list(self.image_set_of)
        self.tasks = list(self.spec["tasks"])
        # A method with `enabled: false` is declared (schema-checked, documented in the config) but planned nowhere.
        self.methods = [m for m, entry in self.spec["methods"].items() if entry.get("enabled", True)]
        self.disabled_methods = [m for m in self.spec["methods"] if m not in self.methods]
        self._check_methods()
        self.ablations = self._parse_ablations()
        self._check_generated_ids()
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

    def method_tasks(self, method: str) -> list[str]:
        """The tasks ``method`` runs on, in the suite's task order: its ``tasks`` key, else every task."""
        if method not in self.spec["methods"]:
            raise ConfigError(f"method {method!r} is not in suite {self.suite!r}; methods are {self.methods}")
        chosen = self.spec["methods"][method].get("tasks")
        return [t for t in self.tasks if chosen is None or t in chosen]

    def runs_on(self, method: str, task: str) -> bool:
        """Whether the (method, task) cell is planned (False: "not run", by the method's ``tasks`` key)."""
        return task in self.method_tasks(method)

    def _check_methods(self) -> None:
        for method, settings in self.spec["methods"].items():
            for task in settings.get("tasks") or []:
                if task not in self.spec["tasks"]:
                    raise ConfigError(
                        f"config key {self._where('methods', method, 'tasks')!r}: no task {task!r} in this suite; "
                        f"tasks are {self.tasks}"
                    )
            for task in settings.get("per_task", {}):
                if task not in self.spec["tasks"]:
                    raise ConfigError(
                        f"config key {self._where('methods', method, 'per_task', task)!r}: no task {task!r} in "
                        f"this suite; tasks are {self.tasks}"
                    )
                if not self.runs_on(method, task):
                    raise ConfigError(
                        f"config key {self._where('methods', method, 'per_task', task)!r}: the method does not run "
                        f"on {task!r} (its config key {self._where('methods', method, 'tasks')!r} is "
                        f"{self.method_tasks(method)}); add the task there or drop the override"
                    )
        for task in self.tasks:
            if not any(self.runs_on(m, task) for m in self.methods):
                raise ConfigError(
                    f"config key {self._where('tasks', task)!r}: no enabled method runs on this task (every method's "
                    f"`tasks` key leaves it out); drop the task or add it to a method's tasks"
                )

    def _where_ids(self, set_name: str) -> str:
        if self.spec["data"]["source"]["kind"] == COMPOSITE_SOURCE:
            return self._where("data", "source", f"sets[{self.image_sets[set_name]['index']}]", "ids")
        return self._where("data", "ids")

    def _check_generated_ids(self) -> None:
        """Prior samples need the test-bed prior; prior-sample and texture ids must follow their grammar."""
        from dwgf.data.prior_samples import parse_prior_sample_id
        from dwgf.data.textures import parse_texture_id

        parsers = {"prior_samples": parse_prior_sample_id, "textures": parse_texture_id}
        for name, part in self.image_sets.items():
            kind = part["source"]["kind"]
            if kind == "prior_samples" and self.spec["prior"]["kind"] != "gaussian_mixture":
                raise ConfigError(
                    f"config key {self._where_ids(name)!r}: a prior_samples source draws x = D(z), z ~ p_0 from the "
                    f"fitted test-bed prior (prior.kind gaussian_mixture), but this suite's prior is "
                    f"{self.spec['prior']['kind']!r}; use bundled crops or your own images instead"
                )
            for index, image_id in enumerate(part["ids"] if kind in parsers else []):
                try:
                    parsers[kind](image_id)
                except ValueError as error:
                    raise ConfigError(f"config key '{self._where_ids(name)}[{index}]': {error}") from None

    def ids_of_kind(self, kind: str) -> list[str]:
        """The suite's image ids whose set's source is ``kind`` (in suite order)."""
        return [i for name, part in self.image_sets.items() if part["source"]["kind"] == kind for i in part["ids"]]

    @property
    def images_need_prior(self) -> bool:
        """True when ``acquire-images`` samples ground truths from the fitted prior (rule input ``prior``)."""
        return bool(self.ids_of_kind("prior_samples"))

    def check_data(self) -> None:
        """For the test-bed prior with a folder / archive source, check that every ``data.ids`` entry is one of the
        user's image files (its name without extension); bundled ids are checked by
        :func:`dwgf.pipeline.preflight.check_bundled_ids`. The paper suite's data may legitimately be absent at plan
        time, so other priors are checked by their acquire rule."""
        source, where = self.spec["data"]["source"], self._where("data", "ids")
        if self.spec["prior"]["kind"] != "gaussian_mixture":
            return
        if source["kind"] in GENERATED_KINDS or source["kind"] == COMPOSITE_SOURCE:
            from dwgf.pipeline.preflight import check_bundled_ids  # imports this module: import here

            check_bundled_ids(self)
            return
        if source["kind"] not in ("folder", "archive"):
            return
        from dwgf import acquire

        try:
            missing = acquire.missing_image_ids(source, self.ids)
        except FileNotFoundError as error:
            raise ConfigError(f"config key {self._where('data', 'source', 'path')!r}: {error}") from None
        if missing:
            raise ConfigError(
                f"config key {where!r}: {missing[:5]} not found in {source['path']} (looked for <id>.png/.jpg/"
                ".jpeg); ids are the images' file names without extension"
            )

    @property
    def paper_reference(self) -> bool:
        """``report.paper_reference``: print the paper's reported numbers beside this suite's repo-protocol rows."""
        return bool((self.spec.get("report") or {}).get("paper_reference", False))

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
            if method in self.disabled_methods:
                raise ConfigError(
                    f"config key {where + '.method'!r}: method {method!r} has enabled: false in this suite; enable it "
                    f"(config key {self._where('methods', method, 'enabled')!r}) or drop the ablation"
                )
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
                if not self.runs_on(method, task):
                    raise ConfigError(
                        f"config key {where + '.tasks'!r}: method {method!r} does not run on {task!r} (its config "
                        f"key {self._where('methods', method, 'tasks')!r} is {self.method_tasks(method)}); an "
                        f"ablation varies the method on tasks it runs on"
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
        provenance of the solve job from ``SolveResult.hyper``). Later sources win: the method's ``n_particles`` /
        ``n_steps`` / ``hyper``; with ``official: true`` the solver's declared official settings for the task's
        operator (``HYPER.official``; one source, never retyped in config.yaml); the task's ``per_task`` entry;
        the variant's ablation value.
        """
        if method not in self.spec["methods"]:
            raise ConfigError(f"method {method!r} is not in suite {self.suite!r}; methods are {self.methods}")
        if task not in self.spec["tasks"]:
            raise ConfigError(f"task {task!r} is not in suite {self.suite!r}; tasks are {self.tasks}")
        if not self.runs_on(method, task):
            raise ConfigError(
                f"method {method!r} does not run on task {task!r} (config key "
                f"{self._where('methods', method, 'tasks')!r}: {self.method_tasks(method)})"
            )
        entry = self.spec["methods"][method]
        resolved = {
            "n_particles": entry["n_particles"],
            "n_steps": entry["n_steps"],
            "hyper": dict(entry.get("hyper") or {}),
        }
        if entry.get("official"):
            from dwgf.solvers import solver_hyper

            official = solver_hyper(self.solver(method)).official.get(self.spec["tasks"][task]["operator"])
            if official is not None:
                resolved["hyper"].update(official.hyper)
                if official.n_particles is not None:
                    resolved["n_particles"] = official.n_particles
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
        """``main`` plus every ablation variant of ``method`` on ``task``; none where the method does not run."""
        if not self.runs_on(method, task):
            return []
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
            for task in self.method_tasks(method):
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
            for task in self.method_tasks(method)
            for variant in self.variants(method, task)
            if which == "all" or variant == MAIN
        ]

    def task_units(self, task: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """(shards as (method, variant, shard), sets as (method, variant)) whose metrics belong to ``task``."""
        shards = [(j.method, j.variant, j.shard) for j in self.solve_jobs() if j.task == task]
        sets = [(m, v) for m, t, v in self.set_metric_groups() if t == task]
        return shards, sets

    def qualitative_ids(self) -> list[str]:
        """The images shown in the qualitative grids: the first ``report.qualitative_images`` ids, taken in turn
        from each image set (the first of every set, then the second, ...) so that every set is shown."""
        count = min((self.spec.get("report") or {}).get("qualitative_images", 4), len(self.ids))
        columns = [part["ids"] for part in self.image_sets.values()]
        in_turn = [ids[k] for k in range(max(map(len, columns))) for ids in columns if k < len(ids)]
        return in_turn[:count]

    @property
    def metrics_jobs(self) -> str:
        """``per_shard`` (rules evaluate + set_metrics) or ``per_task`` (rule evaluate_batch_<task>)."""
        return self.spec["metrics"].get("jobs", "per_shard")

    @property
    def torch_home(self) -> str:
        return (self.spec["metrics"].get("weights") or {}).get("torch_home", "cache/torch")

    @property
    def fid_network(self) -> str:
        """``metrics.fid_network`` (required by the schema: the one place that names the FID/KID Inception)."""
        return self.spec["metrics"]["fid_network"]
