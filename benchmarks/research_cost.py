"""Estimate the CPU cost of a whole suite from a measured subset of it (Snakemake benchmark files).

    python benchmarks/research_cost.py results/research [--suite research] [--overhead 4.0]

Reads ``<run>/benchmarks/solve/<method>/<task>/<variant>/shard-*.tsv`` and ``<run>/benchmarks/evaluate_batch/
<task>.tsv`` (column ``cpu_time``: CPU seconds of the job's process tree), and the plan of the suite in
config.yaml (a measured job's size comes from the measured run's own config, ``run/invocation.json``, so the
subset may be a slice with other methods, tasks or images; jobs of earlier runs into the same folder are sized by
``--measured-config``). Model, stated so that it
can be checked:

* a solve job costs ``overhead`` (process start, torch import, prior load: ``--overhead``, CPU-s, measured as the
  cost of a 6-step research_smoke solve job) plus ``rate[solver, task] * image_steps``, image_steps = images x
  n_steps of the job; ``rate`` is measured per solver x task from the subset, else the solver's mean over the
  measured tasks, else the mean of all measured rates;
* an evaluation costs ``cost[task]`` CPU-s per solved image (evaluate_batch cpu_time / image-runs of the task in
  the subset), else the mean over measured tasks;
* fit_prior, acquire_images and observe cost what the subset measured; the set-level jobs, tables, plots and
  grids are counted at ``overhead`` each.

Prints the estimate per part and in all, in CPU-s and as wall minutes on 2 cores at perfect packing (a lower bound).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="results folder of the measured subset (results/<suite>)")
    parser.add_argument("--suite", default="research")
    parser.add_argument("--config", default=None, help="config file of the full suite (default config.yaml)")
    parser.add_argument(
        "--measured-config", action="append", default=[], help="other config files that ran jobs of the subset"
    )
    parser.add_argument("--overhead", type=float, default=4.0, help="CPU-s of a solve job's start-up")
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
    # 1. measured solve rates (CPU-s per image-step) per solver x task
    rates: dict[tuple[str, str], list[float]] = defaultdict(list)
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
        steps = len(job.ids) * source.settings(method, task, variant)["n_steps"]
        rates[(source.solver(method), task)].append((cpu_time(path) - args.overhead) / steps)
    if not rates:
        raise FileNotFoundError(f"no solve benchmarks of suite {args.suite!r} under {bench / 'solve'}")
    rate = {key: mean(values) for key, values in rates.items()}
    overall = mean(rate.values())
    # 2. evaluation cost per solved image, per task (evaluate_batch only counts the tasks whose runs are known)
    evaluation = {}
    for path in sorted((bench / "evaluate_batch").glob("*.tsv")):
        evaluated = sum(len(j.ids) for j in measured.solve_jobs() if j.task == path.stem)
        if evaluated:
            evaluation[path.stem] = cpu_time(path) / evaluated
    # 3. the full suite
    solve_cpu, evaluate_cpu, unmeasured = 0.0, 0.0, set()
    for job in plan.solve_jobs():
        solver = plan.solver(job.method)
        key = (solver, job.task)
        if key not in rate:
            unmeasured.add(key)
        same_solver = [v for (s, _), v in rate.items() if s == solver]
        r = rate.get(key, mean(same_solver) if same_solver else overall)
        solve_cpu += args.overhead + r * len(job.ids) * plan.settings(job.method, job.task, job.variant)["n_steps"]
        e = evaluation.get(job.task, mean(evaluation.values()) if evaluation else float("nan"))
        evaluate_cpu += e * len(job.ids)
    fixed = sum(
        cpu_time(p) for name in ("fit_prior", "acquire_images", "observe") for p in (bench / name).glob("*.tsv")
    )
    fixed += (len(plan.tasks) - len(list((bench / "observe").glob("*.tsv")))) * args.overhead * 2
    other = args.overhead * (2 * len(plan.tasks) + len(plan.ablations) + 3)
    total = solve_cpu + evaluate_cpu + fixed + other
    print(f"suite {args.suite!r}: {len(plan.solve_jobs())} solve jobs; measured rates (ms per image-step):")
    for (solver, task), value in sorted(rate.items()):
        print(f"  {solver:12s} {task:6s} {1000 * value:7.1f}")
    print(f"  not measured (solver mean or overall mean used): {sorted(unmeasured)}")
    print(f"evaluation CPU-s per solved image: { {t: round(v, 2) for t, v in evaluation.items()} }")
    print(
        f"estimate (CPU-s): solve {solve_cpu:.0f}, evaluate {evaluate_cpu:.0f}, prior/images/observe {fixed:.0f}, "
        f"other jobs {other:.0f}; total {total:.0f} = {total / 120:.1f} min on 2 cores at perfect packing"
    )


if __name__ == "__main__":
    main()
