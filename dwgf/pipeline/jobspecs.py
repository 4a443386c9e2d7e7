"""The per-job specs: the resolved JSON each ``dwgf`` verb receives (``--spec``) and stores in its record.

A rule's ``params`` hold exactly the configuration that affects its outputs (Snakemake re-runs a job when they
change), and every provenance record stores that same subset. :class:`JobSpecs` builds them from a
:class:`~dwgf.pipeline.variants.Suite` (what runs), a :class:`~dwgf.pipeline.layout.Layout` (where files live)
and the suite's file lists (:class:`~dwgf.pipeline.targets.SuiteFiles`).

This module never imports torch: it runs at Snakefile parse time.
"""

from __future__ import annotations

import json
from typing import Any

from dwgf.pipeline.layout import Layout
from dwgf.pipeline.targets import SuiteFiles
from dwgf.pipeline.variants import COMPOSITE_SOURCE, Suite, format_value, resolve_ids


class JobSpecs:
    """Spec builders of one suite; every method returns a JSON-friendly dict (see :meth:`dumps`)."""

    def __init__(self, suite: Suite, layout: Layout, files: SuiteFiles):
        self.suite = suite
        self.layout = layout
        self.files = files

    @staticmethod
    def dumps(spec: dict[str, Any]) -> str:
        """Canonical JSON of a spec (stable text, so Snakemake's params trigger sees real changes only)."""
        return json.dumps(spec, sort_keys=True, separators=(",", ":"))

    def task_spec(self, task: str) -> dict[str, Any]:
        entry = self.suite.spec["tasks"][task]
        return {
            "name": task,
            "operator": entry["operator"],
            "params": dict(entry.get("params") or {}),
            "sigma_y": entry["sigma_y"],
            "label": entry.get("label", task),
        }

    def base_spec(self) -> dict[str, Any]:
        return {"suite": self.suite.suite, "seed": self.suite.spec["seed"], "image_size": self.suite.spec["image_size"]}

    def image_sets_spec(self) -> list[dict[str, Any]]:
        """The suite's image sets in suite order: ``[{"name", "kind" (the set's source kind), "ids"}, ...]``."""
        return [
            {"name": name, "kind": part["source"]["kind"], "ids": list(part["ids"])}
            for name, part in self.suite.image_sets.items()
        ]

    def acquire_spec(self) -> dict[str, Any]:
        data = self.suite.spec["data"]
        spec = {**self.base_spec(), "source": dict(data["source"]), "ids": self.suite.ids}
        if self.suite.images_need_prior:
            spec["dtype"] = self.suite.spec["dtype"]  # the prior is loaded in the suite's dtype to sample D(z)
        return spec

    def prior_spec(self) -> dict[str, Any]:
        prior = dict(self.suite.spec["prior"])
        device, dtype = self.suite.spec["device"], self.suite.spec["dtype"]
        spec = {**self.base_spec(), "device": device, "dtype": dtype, "prior": prior}
        if prior["kind"] == "gaussian_mixture":
            source = self.suite.spec["data"]["source"]
            if source["kind"] == COMPOSITE_SOURCE:
                # only bundled crops can overlap the training crops; prior samples and textures are not crops
                spec["held_out_ids"] = self.suite.ids_of_kind("bundled")
                spec["held_out_source"] = {"kind": "bundled"}
            else:
                spec["held_out_ids"] = self.suite.ids  # test crops (and crops overlapping them) are excluded
                spec["held_out_source"] = dict(source)  # bundled crops, or the user's images
        return spec

    def observe_spec(self, task: str) -> dict[str, Any]:
        return {**self.base_spec(), "task": self.task_spec(task), "ids": self.suite.ids}

    def solve_spec(self, method: str, task: str, variant: str) -> dict[str, Any]:
        return {
            **self.base_spec(),
            "device": self.suite.spec["device"],
            "dtype": self.suite.spec["dtype"],
            "method": method,
            **({"solver": self.suite.solver(method)} if self.suite.solver(method) != method else {}),
            "variant": variant,
            "task": self.task_spec(task),
            **self.suite.settings(method, task, variant),
        }

    def solve_batch_spec(self, method: str, task: str) -> dict[str, Any]:
        """The ``--spec`` of ``dwgf solve-batch`` for ``method`` x ``task``: the units the per-shard rule would run,
        each with its own unchanged solve spec (so its records are those of ``dwgf solve``)."""
        units = [
            {
                "spec": self.solve_spec(j.method, j.task, j.variant),
                "ids": list(j.ids),
                "out": self.layout.path("shard", method=j.method, task=j.task, variant=j.variant, shard=j.shard),
            }
            for j in self.suite.solve_jobs()
            if (j.method, j.task) == (method, task)
        ]
        return {
            "prior": self.layout.path("prior"),
            "observations": self.layout.path("observations", task=task),
            "units": units,
        }

    def evaluate_spec(self, method: str, task: str, variant: str) -> dict[str, Any]:
        # `jobs` only says how the work is split into processes: the specs (hence the records) are the same
        return {
            **self.solve_spec(method, task, variant),
            "metrics": {k: v for k, v in self.suite.spec["metrics"].items() if k not in ("set_level", "jobs")},
            "prior_kind": self.suite.spec["prior"]["kind"],
        }

    def set_metrics_spec(self, method: str, task: str, variant: str) -> dict[str, Any]:
        metrics = self.suite.spec["metrics"]
        return {
            **self.base_spec(),
            "method": method,
            "variant": variant,
            "task": task,
            "n_particles": self.suite.settings(method, task, variant)["n_particles"],
            "set_level": metrics["set_level"],
            "fid_network": self.suite.fid_network,
            "torch_home": self.suite.torch_home,
            **({"reference": self.files.reference_inputs()} if self.suite.reference else {}),
        }

    def reference_spec(self) -> dict[str, Any]:
        """What ``dwgf reference-stats`` needs: where the images come from, which, and the feature network."""
        ref = self.suite.reference
        return {
            **self.base_spec(),
            "name": ref["name"],
            "source": dict(ref["source"]),
            "ids": ref["ids"] if "crops_per_image" in ref["ids"] else resolve_ids(ref["ids"]),
            "test_ids": self.suite.ids,
            "fid_network": self.suite.fid_network,
            "torch_home": self.suite.torch_home,
        }

    def evaluate_batch_spec(self, task: str) -> dict[str, Any]:
        """The ``--batch`` of ``dwgf evaluate-batch`` for ``task``: the units the per-shard rules would run."""
        shards, sets = self.suite.task_units(task)
        units: list[dict[str, Any]] = [
            {
                "step": "evaluate",
                "spec": self.evaluate_spec(m, task, v),
                "shard": self.layout.path("shard", method=m, task=task, variant=v, shard=s),
                "out": self.layout.path("shard_metrics", method=m, task=task, variant=v, shard=s),
            }
            for m, v, s in shards
        ]
        units += [
            {
                "step": "set-metrics",
                "spec": self.set_metrics_spec(m, task, v),
                "shards": self.files.shard_records(m, task, v),
                "out": self.layout.path("set_metrics", method=m, task=task, variant=v),
            }
            for m, v in sets
        ]
        return {
            "images": self.layout.path("images_manifest"),
            "observations": self.layout.path("observations", task=task),
            "prior": self.layout.path("prior"),
            "units": units,
        }

    def metric_weights_spec(self) -> dict[str, Any]:
        """What ``dwgf acquire-metric-weights`` fetches: the LPIPS backbones and the FID Inception in use."""
        metrics = self.suite.spec["metrics"]
        weights = metrics.get("weights") or {}
        return {
            **self.base_spec(),
            "lock": self.suite.spec["prior"].get("lock", "workflow/weights.lock.yaml"),
            "torch_home": self.suite.torch_home,
            "source": weights.get("source", "url"),
            "local_dir": weights.get("local_dir"),
            "record_unknown": bool(weights.get("record_unknown", False)),
            "lpips_nets": list((metrics.get("lpips") or {}).get("nets", ["alex"])),
            "fid_network": self.suite.fid_network,
        }

    def report_spec(self) -> dict[str, Any]:
        """Labels and protocol facts the tables and plots print (and that their captions state)."""
        report = self.suite.spec.get("report") or {}
        return {
            **self.base_spec(),
            "methods": {m: self.suite.spec["methods"][m].get("label", m) for m in self.suite.methods},
            "tasks": {t: self.task_spec(t) for t in self.suite.tasks},
            # keyed by the tasks each method runs on (its `tasks` key): a missing task is a "not run" cell
            "settings": {
                m: {t: self.suite.settings(m, t) for t in self.suite.method_tasks(m)} for m in self.suite.methods
            },
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
                        t: {format_value(v): self.suite.ablation_variant(a, v, t) for v in a.values} for t in a.tasks
                    },
                }
                for a in self.suite.ablations
            ],
            "ids": self.suite.ids,
            # several image sets: the tables and plots show each set on its own (dwgf.reporting.tables.report_sets);
            # absent for one set, so a suite without sets keeps its spec (and its tables) byte for byte
            **({"image_sets": self.image_sets_spec()} if len(self.suite.image_sets) > 1 else {}),
            "metrics": {k: v for k, v in self.suite.spec["metrics"].items() if k != "jobs"},  # not a result setting
            "prior": self.suite.spec["prior"]["kind"],
            "qualitative_ids": self.suite.qualitative_ids(),
            "qualitative_particles": report.get("qualitative_particles", 2),
            "paper_reference": self.suite.paper_reference,
        }
