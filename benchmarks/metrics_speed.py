"""Wall-clock time of the demo suite's metric stage inside the workflow, per_shard against per_task.

Not a test. What it times is what the issue's target names: the metrics of the demo suite (``config.yaml``'s
``demo``: 8 images x 2 tasks x 4 methods x 4 particles at 64 px plus the gamma / N ablations, 18 evaluation
units and 8 FID/KID sets against the ground truth and against the extra reference set, whose statistics
``reference_stats`` computes), computed by the workflow on this machine's cores::

    python benchmarks/metrics_speed.py                # needs a built demo (it runs `snakemake -c 2` first if not)
    python benchmarks/metrics_speed.py --cores 2 --repeat 2 --json out.json

Steps:

1. ``results/<suite>`` must hold a finished run up to ``aggregate`` (built here with ``snakemake -c CORES
   --until aggregate`` when it does not);
2. it is copied (``cp -a``, mtimes kept) into a temporary results folder, so the real one is not touched;
3. for each mode of ``metrics.jobs`` (``per_shard``: one ``dwgf evaluate`` per shard and one ``dwgf set-metrics``
   per set; ``per_task``: one ``dwgf evaluate-batch`` per task), ``snakemake -c CORES --forcerun <the metric
   rules> --until aggregate`` re-runs the metric jobs (``reference_stats`` included) and the aggregation; the
   wall time of that command (Snakemake's own start-up included) and the CPU time of its children are printed;
4. the Parquet files written by the two modes are compared byte for byte (they must be identical).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
MODES = ("per_shard", "per_task")


def plan_for(suite: str, results: str, mode: str):
    from dwgf.pipeline.plan import Plan

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["suite"], config["results"] = suite, results
    config["suites"][suite].setdefault("metrics", {})["jobs"] = mode
    return Plan(config)


def metric_rules(suite: str, results: str, mode: str) -> list[str]:
    plan = plan_for(suite, results, mode)
    rules = ["reference_stats"] if plan.reference else []  # the extra FID/KID reference set is metric work too
    if mode == "per_shard":
        return [*rules, "evaluate", "set_metrics"]
    return [*rules, *(f"evaluate_batch_{task}" for task in plan.tasks)]


def snakemake(args: list[str], cores: int) -> tuple[float, float]:
    """Run snakemake in the repository; return (wall seconds, CPU seconds of the children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(["snakemake", "-c", str(cores), "-q", *args], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"snakemake {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def parquet_files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*.parquet"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="demo")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per mode, alternating modes (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args()

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    source = REPO / config["results"] / args.suite
    if not (source / "metrics.parquet").is_file():
        print(f"{source} has no finished run: building it with snakemake -c {args.cores} (minutes) ...", flush=True)
        snakemake(["--config", f"suite={args.suite}", "--until", "aggregate"], args.cores)

    timings: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    outputs: dict[str, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="dwgf-metrics-bench-") as tmp:
        results = Path(tmp) / "results"
        results.mkdir()
        subprocess.run(["cp", "-a", str(source), str(results / args.suite)], check=True)
        for _ in range(args.repeat):
            for mode in MODES:
                override = Path(tmp) / f"{mode}.yaml"
                override.write_text(yaml.safe_dump({"suites": {args.suite: {"metrics": {"jobs": mode}}}}))
                rules = metric_rules(args.suite, str(results), mode)
                wall, cpu = snakemake(
                    ["--configfile", "config.yaml", str(override), "--config", f"suite={args.suite}",
                     f"results={results}", "--forcerun", *rules, "--until", "aggregate"],
                    args.cores,
                )  # fmt: skip
                timings[mode].append({"wall_s": wall, "cpu_s": cpu})
                print(f"{mode:10s} wall {wall:6.1f} s   CPU {cpu:6.1f} s   (rules {' '.join(rules)})", flush=True)
                snapshot = Path(tmp) / f"out-{mode}"
                shutil.rmtree(snapshot, ignore_errors=True)
                for rel, path in parquet_files(results / args.suite).items():
                    (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, snapshot / rel)
                outputs[mode] = {rel: p for rel, p in parquet_files(snapshot).items()}
        a, b = outputs["per_shard"], outputs["per_task"]
        identical = sorted(rel for rel in a if rel in b and filecmp.cmp(a[rel], b[rel], shallow=False))
        differing = sorted(set(a) ^ set(b) | {rel for rel in a if rel in b and rel not in identical})

    best = {mode: min(t["wall_s"] for t in timings[mode]) for mode in MODES}
    setting = (
        f"suite={args.suite} cores={args.cores} cpus={os.cpu_count()} python={sys.version.split()[0]} "
        f"loadavg={'/'.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print(setting)
    print(f"best wall: per_shard {best['per_shard']:.1f} s, per_task {best['per_task']:.1f} s, "
          f"ratio per_shard/per_task {best['per_shard'] / best['per_task']:.2f}x")  # fmt: skip
    print(f"Parquet files identical between modes: {len(identical)}/{len(identical) + len(differing)}"
          + (f"; DIFFERENT: {differing}" if differing else ""))  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"setting": setting, "timings": timings, "identical": identical, "differing": differing},
                       indent=2) + "\n"
        )  # fmt: skip
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
