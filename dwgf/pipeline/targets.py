"""Which files each rule reads and writes: the suite's file lists (targets, rule inputs and outputs).

:class:`SuiteFiles` joins a :class:`~dwgf.pipeline.variants.Suite` (what runs) with a
:class:`~dwgf.pipeline.layout.Layout` (where each kind of file lives). This module never imports torch.
"""

from __future__ import annotations

from dwgf.pipeline.layout import TABLE_FORMATS, Layout
from dwgf.pipeline.variants import MAIN, Suite


class SuiteFiles:
    """File lists of one suite, as POSIX paths under the suite's results folder."""

    def __init__(self, suite: Suite, layout: Layout):
        self.suite = suite
        self.layout = layout

    def shard_records(self, method: str, task: str, variant: str) -> list[str]:
        return [
            self.layout.path("shard", method=method, task=task, variant=variant, shard=s)
            for s in self.suite.shards(method, task, variant)
        ]

    def shard_metric_files(self) -> list[str]:
        return [
            self.layout.path("shard_metrics", method=j.method, task=j.task, variant=j.variant, shard=j.shard)
            for j in self.suite.solve_jobs()
        ]

    def set_metric_files(self) -> list[str]:
        groups = self.suite.set_metric_groups()
        return [self.layout.path("set_metrics", method=m, task=t, variant=v) for m, t, v in groups]

    def qualitative_shards(self, task: str) -> list[str]:
        """Main-variant shard records (every method run on ``task``) that hold the qualitative images of ``task``."""
        wanted = set(self.suite.qualitative_ids())
        return [
            self.layout.path("shard", method=method, task=task, variant=MAIN, shard=shard)
            for method in self.suite.methods
            if self.suite.runs_on(method, task)
            for shard in self.suite.shards(method, task, MAIN)
            if wanted & set(self.suite.shard_ids(method, task, MAIN, shard))
        ]

    def table_files(self) -> list[str]:
        names = [self.layout.path("table_main", ext=ext) for ext in TABLE_FORMATS]
        names += [self.layout.path("table_runtime", ext=ext) for ext in TABLE_FORMATS]
        if self.suite.paper_reference:
            names += [self.layout.path("table_paper", ext=ext) for ext in TABLE_FORMATS]
        for ablation in self.suite.ablations:
            names += [self.layout.path("table_ablation", ablation=ablation.name, ext=ext) for ext in TABLE_FORMATS]
        return names

    def plot_files(self) -> list[str]:
        names = [self.layout.path("plot_ablation", ablation=a.name) for a in self.suite.ablations]
        return names + [self.layout.path("plot_qualitative", task=t) for t in self.suite.tasks]

    def targets(self) -> list[str]:
        """Everything ``snakemake`` builds by default for this suite."""
        metrics = [self.layout.path("metrics"), self.layout.path("set_metrics_all")]
        return [*metrics, *self.table_files(), *self.plot_files()]

    def reference_inputs(self) -> dict[str, str]:
        """How set-metrics finds the extra reference: ``{"name", "stats"}`` (the stats path is a rule input)."""
        name = self.suite.reference["name"]
        return {"name": name, "stats": self.layout.path("reference_stats", name=name)}

    def reference_stats_files(self) -> list[str]:
        """``[reference/<name>/stats.npz]`` when the suite has an extra reference set, else ``[]``."""
        return [self.reference_inputs()["stats"]] if self.suite.reference else []

    def solve_groups(self) -> list[tuple[str, str]]:
        """(method, task) pairs that have solve jobs, in plan order: one ``dwgf solve-batch`` job each when
        ``solve_jobs: per_method_task``."""
        return list(dict.fromkeys((j.method, j.task) for j in self.suite.solve_jobs()))

    def solve_group_records(self, method: str, task: str) -> list[str]:
        """The shard records (every variant and shard) that the ``solve-batch`` job of ``method`` x ``task`` writes."""
        return [
            self.layout.path("shard", method=j.method, task=j.task, variant=j.variant, shard=j.shard)
            for j in self.suite.solve_jobs()
            if (j.method, j.task) == (method, task)
        ]

    def task_shard_records(self, task: str) -> list[str]:
        shards, _ = self.suite.task_units(task)
        return [self.layout.path("shard", method=m, task=task, variant=v, shard=s) for m, v, s in shards]

    def task_metric_outputs(self, task: str) -> list[str]:
        """Every Parquet file (and its provenance record) that ``dwgf evaluate-batch`` writes for ``task``."""
        shards, sets = self.suite.task_units(task)
        files = [self.layout.path("shard_metrics", method=m, task=task, variant=v, shard=s) for m, v, s in shards]
        files += [self.layout.path("set_metrics", method=m, task=task, variant=v) for m, v in sets]
        return [name for f in files for name in (f, f + ".prov.json")]

    def metric_weight_inputs(self) -> list[str]:
        """``[record]`` when the suite acquires metric weights before evaluating, else ``[]``."""
        weights = self.suite.spec["metrics"].get("weights") or {}
        return [self.layout.path("metric_weights")] if weights.get("acquire") else []
