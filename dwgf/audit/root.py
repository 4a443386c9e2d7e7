"""The root record of a suite (``run/root.prov.json``, verb ``dwgf seal``) and the plan's list of artifacts.

``dwgf seal`` runs last in the default target. Its record (step ``seal``) stores

* ``config``: the resolved suite config (:func:`dwgf.suite_run.suite_config`), from which
  :class:`dwgf.pipeline.plan.Plan` rebuilds the list of every artifact the suite must have
  (:func:`expected_artifacts`), also stored as ``extra.expected``;
* ``inputs``: the sha256 of every record of the suite (each record stores the sha256 of the files it wrote, so
  the artifacts are covered through them). Each record in turn stores the sha256 of the records it consumed, so
  every record is protected as a whole by a chain that ends here: editing a record and its own stored hashes
  breaks the link at its consumer, and editing the consumer too breaks it one step higher, up to this record;
* ``extra.invocation``: the Snakemake invocation of the run that completed the suite
  (``run/invocation.json``, :mod:`dwgf.suite_run`), which the repair command of ``dwgf verify`` replays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dwgf.pipeline.layout import LAYOUT
from dwgf.provenance import RECORD_SUFFIX, Recorder

ROOT_RECORD = LAYOUT["root_record"]
SEAL_STEP = "seal"


def expected_artifacts(plan) -> list[str]:
    """Every Snakemake output of the suite's jobs, relative to its results folder (sorted), the root record included.

    Per-image files (particles, observations, images) are not listed: the records that index them are, and
    ``dwgf verify`` checks each file those records name.
    """
    paths = [plan.path("images_manifest"), plan.path("prior"), *plan.metric_weight_inputs()]
    paths += [plan.path("observations", task=task) for task in plan.tasks]
    for job in plan.solve_jobs():
        wildcards = {"method": job.method, "task": job.task, "variant": job.variant, "shard": job.shard}
        paths.append(plan.path("shard", **wildcards))
    for parquet in [*plan.shard_metric_files(), *plan.set_metric_files(), *plan.reference_stats_files()]:
        paths += [parquet, parquet + RECORD_SUFFIX]
    paths += [*plan.targets(), plan.path("runtime"), plan.path("aggregate_record")]
    paths += [f"{plan.root}/tables/tables.prov.json"]
    paths += [png + RECORD_SUFFIX for png in plan.plot_files()]
    prefix = plan.root.rstrip("/") + "/"
    relative = {p[len(prefix) :] if p.startswith(prefix) else p for p in paths}
    return sorted(relative | {ROOT_RECORD})


def plan_of(config: dict[str, Any]):
    """The :class:`~dwgf.pipeline.plan.Plan` of a recorded suite config (validated against the schema first)."""
    from dwgf.pipeline.config import validate_config
    from dwgf.pipeline.plan import Plan

    validate_config(config)
    return Plan(config)


def seal(spec: dict[str, Any], root: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the root record ``out`` (module docstring); ``spec`` is the resolved suite config."""
    from dwgf.suite_run import read_invocation

    root = Path(root)
    expected = expected_artifacts(plan_of(spec))
    missing = [p for p in expected if p != ROOT_RECORD and not (root / p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"cannot seal {root}: {len(missing)} artifact(s) of the plan are missing, e.g. {missing[:3]}; they are "
            f"written by the workflow (snakemake --config suite={spec['suite']})"
        )
    recorder = Recorder(SEAL_STEP, root=root, config=spec)
    recorder.extra["expected"] = expected
    recorder.extra["invocation"] = read_invocation(root)
    records = [root / p for p in expected if p.endswith(RECORD_SUFFIX) and p != ROOT_RECORD]
    return recorder.write(out, outputs=[], inputs=records)
