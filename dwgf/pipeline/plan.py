"""The plan of one suite: a thin facade over the modules that each own one concern.

* :mod:`dwgf.pipeline.variants` (:class:`Suite`): what runs -- images, tasks, methods, ablation variants, shards,
  and the cross-reference checks the schema cannot express;
* :mod:`dwgf.pipeline.layout` (:data:`LAYOUT`, :class:`Layout`): where every artifact lives, declared once;
* :mod:`dwgf.pipeline.targets` (:class:`SuiteFiles`): which files each rule reads and writes;
* :mod:`dwgf.pipeline.jobspecs` (:class:`JobSpecs`): the JSON spec each ``dwgf`` verb receives (``--spec``);
* :mod:`dwgf.reporting.captions`: the protocol paragraph of the report captions.

The Snakefile builds one :class:`Plan` from the validated config and uses it for all wiring (targets, input
functions, per-job specs); the ``dwgf`` verbs receive the resolved spec of their job as JSON, so a rule's
``params`` hold exactly the configuration that affects its outputs (Snakemake re-runs a job when they change)
and every provenance record stores that same subset.

This module never imports torch: it runs at Snakefile parse time (the checks that need torch are in
:mod:`dwgf.pipeline.preflight`).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from dwgf.pipeline.jobspecs import JobSpecs
from dwgf.pipeline.layout import LAYOUT, TABLE_FORMATS, WILDCARD_CONSTRAINTS, Layout
from dwgf.pipeline.targets import SuiteFiles
from dwgf.pipeline.variants import (
    MAIN,
    SOLVE_ARGUMENTS,
    Ablation,
    SolveJob,
    Suite,
    format_value,
    resolve_ids,
)

__all__ = [
    "LAYOUT",
    "MAIN",
    "SOLVE_ARGUMENTS",
    "TABLE_FORMATS",
    "WILDCARD_CONSTRAINTS",
    "Ablation",
    "Plan",
    "SolveJob",
    "format_value",
    "resolve_ids",
]


class Plan(Suite):
    """Everything the Snakefile needs to know about the selected suite (``config["suite"]``).

    The suite's own questions (``ids``, ``tasks``, ``settings``, ``variants``, ``shards``, ``solve_jobs``, ...)
    are :class:`Suite`'s; paths go to :attr:`layout`, file lists to :attr:`files`, specs to :attr:`jobs`. The
    one-line methods below keep the names the Snakefile, the rules and the tests use.
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.layout = Layout(str(PurePosixPath(config["results"]) / self.suite))
        self.files = SuiteFiles(self, self.layout)
        self.jobs = JobSpecs(self, self.layout, self.files)

    # -- paths (dwgf.pipeline.layout) -----------------------------------------------------------------------
    def path(self, kind: str, **wildcards: str) -> str:
        return self.layout.path(kind, **wildcards)

    def log(self, rule: str, name: str = "{rule}") -> str:
        return self.layout.log(rule, name)

    def benchmark(self, rule: str, name: str = "{rule}") -> str:
        return self.layout.benchmark(rule, name)

    # -- file lists (dwgf.pipeline.targets) ----------------------------------------------------------------
    def shard_records(self, method: str, task: str, variant: str) -> list[str]:
        return self.files.shard_records(method, task, variant)

    def shard_metric_files(self) -> list[str]:
        return self.files.shard_metric_files()

    def set_metric_files(self) -> list[str]:
        return self.files.set_metric_files()

    def qualitative_shards(self, task: str) -> list[str]:
        return self.files.qualitative_shards(task)

    def table_files(self) -> list[str]:
        return self.files.table_files()

    def plot_files(self) -> list[str]:
        return self.files.plot_files()

    def targets(self) -> list[str]:
        return self.files.targets()

    def reference_inputs(self) -> dict[str, str]:
        return self.files.reference_inputs()

    def reference_stats_files(self) -> list[str]:
        return self.files.reference_stats_files()

    def task_shard_records(self, task: str) -> list[str]:
        return self.files.task_shard_records(task)

    def solve_groups(self) -> list[tuple[str, str]]:
        return self.files.solve_groups()

    def solve_group_records(self, method: str, task: str) -> list[str]:
        return self.files.solve_group_records(method, task)

    def task_metric_outputs(self, task: str) -> list[str]:
        return self.files.task_metric_outputs(task)

    def metric_weight_inputs(self) -> list[str]:
        return self.files.metric_weight_inputs()

    # -- job specs (dwgf.pipeline.jobspecs) ----------------------------------------------------------------
    def task_spec(self, task: str) -> dict[str, Any]:
        return self.jobs.task_spec(task)

    def base_spec(self) -> dict[str, Any]:
        return self.jobs.base_spec()

    def acquire_spec(self) -> dict[str, Any]:
        return self.jobs.acquire_spec()

    def prior_spec(self) -> dict[str, Any]:
        return self.jobs.prior_spec()

    def observe_spec(self, task: str) -> dict[str, Any]:
        return self.jobs.observe_spec(task)

    def solve_spec(self, method: str, task: str, variant: str) -> dict[str, Any]:
        return self.jobs.solve_spec(method, task, variant)

    def solve_batch_spec(self, method: str, task: str) -> dict[str, Any]:
        return self.jobs.solve_batch_spec(method, task)

    def evaluate_spec(self, method: str, task: str, variant: str) -> dict[str, Any]:
        return self.jobs.evaluate_spec(method, task, variant)

    def set_metrics_spec(self, method: str, task: str, variant: str) -> dict[str, Any]:
        return self.jobs.set_metrics_spec(method, task, variant)

    def reference_spec(self) -> dict[str, Any]:
        return self.jobs.reference_spec()

    def evaluate_batch_spec(self, task: str) -> dict[str, Any]:
        return self.jobs.evaluate_batch_spec(task)

    def metric_weights_spec(self) -> dict[str, Any]:
        return self.jobs.metric_weights_spec()

    def report_spec(self) -> dict[str, Any]:
        return self.jobs.report_spec()

    # -- how the solves are split into jobs ---------------------------------------------------------------------
    @property
    def solve_jobs_mode(self) -> str:
        """``per_shard`` (rule ``solve``, one job per method x task x variant x shard) or ``per_method_task``
        (rule ``solve_<method>_<task>``: one ``dwgf solve-batch`` process per method x task; the same files)."""
        return self.spec.get("solve_jobs", "per_shard")

    def solve_group_priority(self, method: str, task: str) -> int:
        """Snakemake priority of a ``solve-batch`` job: its image-steps (sum of n_steps x images over its units),
        so that the longest groups start first and the two cores finish together (longest-first packing)."""
        return sum(int(u["spec"]["n_steps"]) * len(u["ids"]) for u in self.solve_batch_spec(method, task)["units"])

    # -- captions (dwgf.reporting.captions) ----------------------------------------------------------------
    def protocol(self) -> str:
        """The protocol paragraph of the report captions (in words; from :meth:`report_spec`)."""
        from dwgf.reporting.captions import protocol_text

        return protocol_text(self.report_spec())

    dumps = staticmethod(JobSpecs.dumps)
