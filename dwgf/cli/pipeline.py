"""Workflow verbs: ``acquire-images``, ``fit-prior``, ``acquire-weights``, ``acquire-metric-weights``, ``observe``,
``solve``, ``solve-batch``, ``evaluate``, ``set-metrics``, ``reference-stats``, ``evaluate-batch``, ``aggregate``,
``tables``, ``plots``, ``qualitative`` and ``plan``.

Each Snakemake rule calls exactly one of these verbs (``workflow/rules/*.smk``). Every verb takes

* ``--spec``: the job's resolved configuration as JSON (or ``@file.json``), built by
  :class:`dwgf.pipeline.plan.Plan`; it is stored (with its sha256) in the provenance record;
* ``--root``: the suite's results folder (``results/<suite>``); records store paths relative to it;

plus the input records it reads and the output it writes. ``dwgf plan`` prints a suite's jobs without running
anything (``dwgf plan --suite paper``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dwgf.pipeline.records import parse_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    def verb(name: str, func, help_text: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(func=func)
        if name != "plan":
            parser.add_argument("--spec", required=True, type=parse_spec, help="job spec: JSON text or @file.json")
            parser.add_argument("--root", required=True, help="results folder of the suite (results/<suite>)")
        return parser

    p = verb("acquire-images", _acquire_images, "write the suite's test images as PNGs + a sha256 record")
    p.add_argument("--out", required=True, help="record to write (data/images.prov.json)")
    p.add_argument("--prior", help="record of `dwgf fit-prior` (needed by a prior_samples source only)")

    p = verb("fit-prior", _fit_prior, "fit the exact-posterior test-bed prior on bundled crops")
    p.add_argument("--out", required=True, help="record to write (prior/prior.prov.json)")

    p = verb("acquire-weights", _acquire_weights, "fetch/verify pinned diffusion weights against the lock")
    p.add_argument("--out", required=True, help="record to write (prior/prior.prov.json)")

    p = verb("acquire-metric-weights", _acquire_metric_weights, "fetch/verify LPIPS and Inception weights")
    p.add_argument("--out", required=True, help="record to write (weights/metric_weights.prov.json)")

    p = verb("observe", _observe, "measure y = A x + sigma_y n for every image of one task")
    p.add_argument("--images", required=True, help="record of `dwgf acquire-images`")
    p.add_argument("--out", required=True, help="record to write (observations/<task>/observe.prov.json)")

    p = verb("solve", _solve, "run one method on one shard of images")
    p.add_argument("--prior", required=True, help="record of `dwgf fit-prior` / `dwgf acquire-weights`")
    p.add_argument("--observations", required=True, help="record of `dwgf observe` for the task")
    p.add_argument("--ids", required=True, help="comma-separated image ids of the shard")
    p.add_argument("--out", required=True, help="shard completion record to write")
    p.add_argument("--no-progress", action="store_true", help="hide the per-step progress bar")
    p.add_argument(
        "--batch-images", type=int, default=1, help="images solved at once (one batched solve); not part of the spec"
    )

    p = verb("solve-batch", _solve_batch, "every solve unit of one method x task (all its variants), in one process")
    p.add_argument("--no-progress", action="store_true", help="hide the per-step progress bar")
    p.add_argument(
        "--batch-images", type=int, default=1, help="images solved at once (one batched solve); not part of the spec"
    )

    p = verb("evaluate", _evaluate, "per-image, per-particle metric rows of one shard -> Parquet")
    p.add_argument("--shard", required=True, help="record of `dwgf solve`")
    p.add_argument("--images", required=True, help="record of `dwgf acquire-images` (ground truth)")
    p.add_argument("--observations", required=True, help="record of `dwgf observe`")
    p.add_argument("--prior", required=True, help="record of the prior (exact-posterior metrics on the test bed)")
    p.add_argument("--out", required=True, help="Parquet file to write")

    p = verb("set-metrics", _set_metrics, "set-level metrics (FID/KID) of one method x task x variant")
    p.add_argument("--shards", required=True, nargs="+", help="records of `dwgf solve` (all shards)")
    p.add_argument("--images", required=True, help="record of `dwgf acquire-images` (the real set)")
    p.add_argument("--out", required=True, help="Parquet file to write")

    p = verb("reference-stats", _reference_stats, "images + Inception statistics of the extra FID/KID reference set")
    p.add_argument("--out", required=True, help="statistics to write (reference/<name>/stats.npz)")

    verb("evaluate-batch", _evaluate_batch, "every evaluate and set-metrics unit of one task, in one process")

    p = verb("aggregate", _aggregate, "concatenate per-shard metrics into one long-format Parquet")
    p.add_argument("--metrics", required=True, nargs="+", help="per-shard metric Parquet files")
    p.add_argument("--set-metrics", required=True, nargs="+", help="set-level metric Parquet files")
    p.add_argument("--out", required=True, help="metrics.parquet to write")
    p.add_argument("--out-set", required=True, help="set_metrics.parquet to write")
    p.add_argument("--out-runtime", default=None, help="runtime.parquet to write (default: beside --out)")

    p = verb("tables", _tables, "paper-style main, ablation and runtime tables (Markdown, LaTeX, HTML)")
    p.add_argument("--metrics", required=True, help="metrics.parquet")
    p.add_argument("--set-metrics", required=True, help="set_metrics.parquet")
    p.add_argument("--runtime", default=None, help="runtime.parquet (runtime table and solved-image counts)")
    p.add_argument("--out-dir", required=True, help="folder for the tables (results/<suite>/tables)")

    p = verb("plots", _plots, "metric vs ablation parameter per method and task, with error bars")
    p.add_argument("--metrics", required=True, help="metrics.parquet")
    p.add_argument("--ablation", required=True, help="ablation name (a key of the suite's ablations)")
    p.add_argument("--out", required=True, help="PNG to write")

    p = verb("qualitative", _qualitative, "grid: ground truth | observation | particles per method")
    p.add_argument("--task", required=True, help="task name")
    p.add_argument("--images", required=True, help="record of `dwgf acquire-images`")
    p.add_argument("--observations", required=True, help="record of `dwgf observe` for the task")
    p.add_argument("--shards", required=True, nargs="+", help="records of `dwgf solve` (main variant)")
    p.add_argument("--prior", default=None, help="record of the prior (test bed: exact posterior mean and sample)")
    p.add_argument("--out", required=True, help="PNG to write")

    p = verb("plan", _plan, "print the jobs of a suite (no work is done)")
    p.add_argument("--config", default=None, help="config.yaml (default: the repository's)")
    p.add_argument("--suite", default=None, help="suite to plan (default: the config's `suite`)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def _acquire_images(args: argparse.Namespace) -> int:
    from dwgf.pipeline.data_steps import acquire_images

    acquire_images(args.spec, args.root, args.out, prior_record=args.prior)
    return 0


def _fit_prior(args: argparse.Namespace) -> int:
    from dwgf.pipeline.data_steps import fit_prior

    fit_prior(args.spec, args.root, args.out)
    return 0


def _acquire_weights(args: argparse.Namespace) -> int:
    from dwgf.pipeline.data_steps import acquire_weights

    acquire_weights(args.spec, args.root, args.out)
    return 0


def _acquire_metric_weights(args: argparse.Namespace) -> int:
    from dwgf.pipeline.data_steps import acquire_metric_weights

    acquire_metric_weights(args.spec, args.root, args.out)
    return 0


def _observe(args: argparse.Namespace) -> int:
    from dwgf.pipeline.observe import observe

    observe(args.spec, args.root, args.images, args.out)
    return 0


def _solve(args: argparse.Namespace) -> int:
    from dwgf.pipeline.solve import solve_shard

    ids = [i for i in args.ids.split(",") if i]
    solve_shard(
        args.spec,
        args.root,
        args.prior,
        args.observations,
        ids,
        args.out,
        progress=not args.no_progress,
        batch_images=args.batch_images,
    )
    return 0


def _solve_batch(args: argparse.Namespace) -> int:
    from dwgf.pipeline.solve import solve_batch

    # the spec is the batch: Plan.solve_batch_spec
    solve_batch(args.spec, args.root, progress=not args.no_progress, batch_images=args.batch_images)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dwgf.pipeline.evaluate import evaluate_shard

    evaluate_shard(args.spec, args.root, args.shard, args.images, args.observations, args.prior, args.out)
    return 0


def _set_metrics(args: argparse.Namespace) -> int:
    from dwgf.pipeline.evaluate import set_metrics

    set_metrics(args.spec, args.root, args.shards, args.images, args.out)
    return 0


def _reference_stats(args: argparse.Namespace) -> int:
    from dwgf.pipeline.reference import reference_stats

    reference_stats(args.spec, args.root, args.out)
    return 0


def _evaluate_batch(args: argparse.Namespace) -> int:
    from dwgf.pipeline.evaluate import evaluate_batch

    evaluate_batch(args.spec, args.root)  # the spec is the batch: Plan.evaluate_batch_spec
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    from dwgf.pipeline.aggregate import aggregate

    aggregate(args.spec, args.root, args.metrics, args.set_metrics, args.out, args.out_set, args.out_runtime)
    return 0


def _tables(args: argparse.Namespace) -> int:
    from dwgf.reporting.tables import write_tables

    write_tables(args.spec, args.root, args.metrics, args.set_metrics, args.out_dir, args.runtime)
    return 0


def _plots(args: argparse.Namespace) -> int:
    from dwgf.reporting.plots import plot_ablation

    plot_ablation(args.spec, args.root, args.metrics, args.ablation, args.out)
    return 0


def _qualitative(args: argparse.Namespace) -> int:
    from dwgf.reporting.qualitative import qualitative_grid

    qualitative_grid(
        args.spec, args.root, args.task, args.images, args.observations, args.shards, args.out, prior_record=args.prior
    )
    return 0


def _plan(args: argparse.Namespace) -> int:
    from dwgf.pipeline.config import DEFAULT_CONFIG, load_config
    from dwgf.pipeline.plan import Plan

    overrides: dict[str, Any] = {"suite": args.suite} if args.suite else {}
    plan = Plan(load_config(args.config or DEFAULT_CONFIG, overrides))
    from dwgf.pipeline.preflight import check_plan

    check_plan(plan, jobs_run_here=False)  # the same plan-time checks as `snakemake -n` (listing needs no GPU)
    jobs = plan.solve_jobs()
    summary = {
        "suite": plan.suite,
        "root": plan.root,
        "images": len(plan.ids),
        "tasks": plan.tasks,
        "methods": plan.methods,
        "variants": {f"{m}/{t}": plan.variants(m, t) for m in plan.methods for t in plan.method_tasks(m)},
        "solve_jobs": len(jobs),
        "set_metric_groups": len(plan.set_metric_groups()),
        "protocol": plan.protocol(),
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0
