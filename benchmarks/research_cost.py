"""Estimate the CPU cost of a whole suite from a measured run of it or of a subset (Snakemake benchmark files).

    python benchmarks/research_cost.py results/research [--suite research] [--overhead 4.0] \
        [--measured-total 3873] [--evaluate-overhead 8.0]

Reads ``<run>/benchmarks/<rule>/...tsv`` (column ``cpu_time``: CPU seconds of the job's process tree) and the plan
of the suite in config.yaml (a measured job's size comes from the measured run's own config, ``run/invocation.json``,
so the subset may be a slice with other methods, tasks or images; jobs of earlier runs into the same folder are sized
by ``--measured-config``). The plan is the one the DAG runs: a method's ``tasks`` key leaves its other tasks out.
Model, stated so that it can be checked:

* a solve job that the measured run ran with the same method, task, images and resolved settings (solver defaults
  filled in, so a default the config now states explicitly is still the measured job) costs what it measured; any
  other costs ``overhead`` (process start, torch import, prior load: ``--overhead``, CPU-s, measured as the cost of
  a 6-step research_smoke solve job) plus ``rate * image_steps``, image_steps = images x n_steps of the job; ``rate``
  (CPU-s per image-step) is measured per method x task, else per solver x task, else the solver's mean over the
  measured tasks, else the mean of all measured rates;
* an evaluation job (``evaluate_batch``, one per task) costs ``--evaluate-overhead`` plus ``cost[task]`` per solved
  image, ``cost[task]`` = (measured cpu_time - evaluate overhead) / image-runs of the task in the measured run;
* fit_prior, acquire_images, observe, aggregate, tables and the per-task / per-ablation report jobs cost what the
  measured run measured for the same job, else the measured mean of their rule (else ``overhead``);
* the benchmark files undercount: Snakemake samples a job's process tree every 0.5 s for 15 s, then every 30 s,
  so up to 30 s of a long job's last CPU time is lost, and Snakemake's own process, ``seal`` and ``verify`` have no
  benchmark. With ``--measured-total`` (user + system CPU-s of the measured run's whole ``snakemake`` process
  tree, e.g. from ``/usr/bin/time -v``; the measured run must then be complete, one config) the unexplained CPU
  (measured total - the model of the measured run) is carried over twice: per job (unexplained / jobs, times the
  new suite's jobs) and in proportion (total / model of the measured run, times the new model); the larger is the
  calibrated estimate.

Prints the estimate per part and in all, in CPU-s and as wall minutes on 2 cores at perfect packing (a lower bound:
the critical path fit_prior -> observe -> the longest solve -> its task's evaluation -> tables is the other limit,
printed too).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from statistics import mean


def cpu_time(path: Path) -> float:
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return float(rows[-1]["cpu_time"])


REPORT_RULES = ("fit_prior", "acquire_images", "aggregate", "tables")  # one job each
PER_TASK_RULES = ("observe", "qualitative")  # one job per task (wildcard = task)
PER_ABLATION_RULES = ("plot_ablation",)  # one job per ablation (wildcard = ablation name)


def jobs_of(plan) -> int:
    """Jobs of a full run of ``plan``: solves, one evaluate_batch + observe + qualitative per task, one plot per
    ablation, the single-job rules, seal and verify (the per_task metrics layout of the research suites)."""
    return len(plan.solve_jobs()) + 3 * len(plan.tasks) + len(plan.ablations) + len(REPORT_RULES) + 2


def resolved(plan, method: str, task: str, variant: str) -> dict:
    """The settings a solve job computes with: N, steps, solver and every hyper-parameter with the solver's defaults
    filled in (so a default the config states explicitly is the same job as one it leaves unset)."""
    from dwgf.solvers import solver_hyper

    settings = plan.settings(method, task, variant)
    solver = plan.solver(method)
    hyper = solver_hyper(solver).resolve(dict(settings["hyper"]))
    return {"solver": solver, "n_particles": settings["n_particles"], "n_steps": settings["n_steps"], "hyper": hyper}


def estimate(plan, measured_jobs, rate, overall, evaluation, bench: Path, args) -> dict[str, float]:
    """CPU-s per part of a full run of ``plan`` (module docstring); ``measured_jobs``: {job key: (settings, cpu)}."""
    solve_cpu, evaluate_cpu, longest, reused, unmeasured = 0.0, 0.0, {}, 0, set()
    images_per_task: dict[str, int] = defaultdict(int)
    for job in plan.solve_jobs():
        settings = resolved(plan, job.method, job.task, job.variant)
        key = (job.method, job.task, job.ids)
        same = [cpu for (measured_settings, cpu) in measured_jobs.get(key, []) if measured_settings == settings]
        if same:
            cost = same[0]
            reused += 1
        else:
            solver = plan.solver(job.method)
            same_solver = [v for (m, s, _), v in rate.items() if s == solver]
            r = rate.get(("method", job.method, job.task)) or rate.get(("solver", solver, job.task))
            if r is None:
                unmeasured.add((job.method, job.task))
                r = mean(same_solver) if same_solver else overall
            cost = args.overhead + r * len(job.ids) * settings["n_steps"]
        solve_cpu += cost
        longest[job.task] = max(longest.get(job.task, 0.0), cost)
        images_per_task[job.task] += len(job.ids)
    fallback = mean(evaluation.values()) if evaluation else float("nan")
    per_task_eval = {t: args.evaluate_overhead + evaluation.get(t, fallback) * n for t, n in images_per_task.items()}
    evaluate_cpu = sum(per_task_eval.values())

    def measured_or_mean(rule: str, name: str) -> float:
        files = sorted((bench / rule).glob("*.tsv"))
        exact = bench / rule / f"{name}.tsv"
        if exact.is_file():
            return cpu_time(exact)
        return mean(cpu_time(f) for f in files) if files else args.overhead

    fixed = sum(measured_or_mean(rule, rule) for rule in REPORT_RULES)
    fixed += sum(measured_or_mean(rule, task) for rule in PER_TASK_RULES for task in plan.tasks)
    fixed += sum(measured_or_mean(rule, a.name) for rule in PER_ABLATION_RULES for a in plan.ablations)
    path = measured_or_mean("fit_prior", "fit_prior") + max(
        measured_or_mean("observe", t) + longest[t] + per_task_eval[t] for t in longest
    )
    path += measured_or_mean("aggregate", "aggregate") + measured_or_mean("tables", "tables")
    return {
        "solve": solve_cpu,
        "evaluate": evaluate_cpu,
        "other": fixed,
        "total": solve_cpu + evaluate_cpu + fixed,
        "critical_path": path,
        "reused": reused,
        "unmeasured": sorted(unmeasured),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="results folder of the measured run (results/<suite>)")
    parser.add_argument("--suite", default="research")
    parser.add_argument("--config", default=None, help="config file of the full suite (default config.yaml)")
    parser.add_argument(
        "--measured-config", action="append", default=[], help="other config files that ran jobs of the subset"
    )
    parser.add_argument("--overhead", type=float, default=4.0, help="CPU-s of a solve job's start-up")
    parser.add_argument(
        "--evaluate-overhead", type=float, default=4.0, help="CPU-s of an evaluate_batch job's start-up"
    )
    parser.add_argument(
        "--measured-total", type=float, default=None, help="user+sys CPU-s of the whole measured run (calibration)"
    )
    args = parser.parse_args()

    import json

    from dwgf.pipeline.config import DEFAULT_CONFIG, load_config
    from dwgf.pipeline.plan import Plan

    plan = Plan(load_config(args.config or DEFAULT_CONFIG, {"suite": args.suite}))
    # the measured jobs' images and steps come from the measured run's own config (run/invocation.json)
    measured = Plan(json.loads((args.run / "run" / "invocation.json").read_text(encoding="utf-8"))["config"])
    earlier = [
        Plan(load_config(path, {"suite": args.suite, "results": plan.config["results"]}))
        for path in args.measured_config
    ]
    bench = args.run / "benchmarks"
    # 1. measured solve jobs and rates (CPU-s per image-step) per method x task and per solver x task
    measured_jobs: dict[tuple, list[tuple[dict, float]]] = defaultdict(list)  # (method, task, ids): [(settings, cpu)]
    by_method: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for path in sorted((bench / "solve").glob("*/*/*/shard-*.tsv")):
        method, task, variant = path.parts[-4:-1]
        key = (method, task, variant, path.stem.removeprefix("shard-"))
        found = [
            (p, j)
            for p in (measured, *earlier)
            for j in p.solve_jobs()
            if (j.method, j.task, j.variant, j.shard) == key
        ]
        if not found:  # not a job of the measured configs: its size is unknown
            continue
        source, job = found[0]
        settings = source.settings(method, task, variant)
        measured_jobs[(method, task, job.ids)].append((resolved(source, method, task, variant), cpu_time(path)))
        per_step = (cpu_time(path) - args.overhead) / (len(job.ids) * settings["n_steps"])
        by_method[("method", method, task)].append(per_step)
        by_method[("solver", source.solver(method), task)].append(per_step)
    if not by_method:
        raise FileNotFoundError(f"no solve benchmarks of suite {args.suite!r} under {bench / 'solve'}")
    rate = {key: mean(values) for key, values in by_method.items()}
    overall = mean(v for (kind, _, _), v in rate.items() if kind == "solver")
    # 2. evaluation cost per solved image, per task (evaluate_batch only counts the tasks whose runs are known)
    evaluation = {}
    for path in sorted((bench / "evaluate_batch").glob("*.tsv")):
        evaluated = sum(len(j.ids) for j in measured.solve_jobs() if j.task == path.stem)
        if evaluated:
            evaluation[path.stem] = (cpu_time(path) - args.evaluate_overhead) / evaluated
    # 3. the full suite, and the measured run under the same model (for the calibration)
    new = estimate(plan, measured_jobs, rate, overall, evaluation, bench, args)
    print(f"suite {args.suite!r}: {len(plan.solve_jobs())} solve jobs ({new['reused']} measured as such), "
          f"{jobs_of(plan)} jobs; measured rates (ms per image-step, solver x task):")  # fmt: skip
    for (kind, solver, task), value in sorted(rate.items()):
        if kind == "solver":
            print(f"  {solver:12s} {task:6s} {1000 * value:7.1f}")
    print(f"  not measured (solver mean or overall mean used): {new['unmeasured']}")
    print(f"evaluation CPU-s per solved image: { {t: round(v, 2) for t, v in evaluation.items()} }")
    print(
        f"estimate (CPU-s): solve {new['solve']:.0f}, evaluate {new['evaluate']:.0f}, other jobs {new['other']:.0f}; "
        f"total {new['total']:.0f} = {new['total'] / 120:.1f} min on 2 cores at perfect packing; critical path "
        f"{new['critical_path']:.0f} CPU-s"
    )
    if args.measured_total is not None:
        old = estimate(measured, measured_jobs, rate, overall, evaluation, bench, args)
        unexplained = args.measured_total - old["total"]
        per_job = new["total"] + unexplained / jobs_of(measured) * jobs_of(plan)
        scaled = new["total"] * args.measured_total / old["total"]
        calibrated = max(per_job, scaled)
        print(
            f"calibration: the measured run ({jobs_of(measured)} jobs) modelled at {old['total']:.0f} CPU-s, measured "
            f"{args.measured_total:.0f} ({unexplained:.0f} unexplained, {unexplained / jobs_of(measured):.1f} per "
            f"job); carried per job {per_job:.0f}, in proportion {scaled:.0f}; calibrated estimate "
            f"{calibrated:.0f} CPU-s = {calibrated / 120:.1f} min on 2 cores at perfect packing"
        )


if __name__ == "__main__":
    main()
