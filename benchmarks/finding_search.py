"""Search for a DWGF-family variant that matches the exact posterior on the well-specified test bed
(issue 14 section 3, docs/findings.md "The finding").

Well-specified: the ground truths are prior samples D(z), z ~ p_0, observed as y = A D(z) + sigma_y n (the
`prior` regime of ``dwgf testbed-compare``), and the reference is the exact posterior of *that* model, i.e. with
no decoder noise (``--sigma-dec 0``, the default here; ``dwgf testbed-compare`` defaults to DWGF's sigma_dec =
0.01, a wider posterior than the one that generated the data). Per candidate x task (mean over images): PSNR of
the particle mean vs the ground truth and vs the exact posterior mean, the spread ratio (particle std / exact
std, :func:`dwgf.metrics.testbed.spread_ratio`), diverged images, and the CPU seconds per image (one batched
solve of all images, ``time.process_time``; the ratio to the ``dwgf`` row is the cost ratio). Reference rows:
the exact posterior mean and N exact samples.

Observations and solve seeds are those of ``dwgf testbed-compare --regimes prior`` (same image ids, same
measurement seeds, same per-image solve seed for a method name), so the ``dwgf`` / ``dwgf_bayes`` rows are its
rows at ``--sigma-dec 0``.

    nice python benchmarks/finding_search.py --steps 998 --candidates dwgf,dwgf_bayes,dwgf_langevin --csv out.csv

``--run <results>/<suite>`` replays a DAG run instead: its fitted prior (``prior/prior.prov.json``), its ground
truths (``data/images/<id>.npy`` / ``.png``), its frozen observations (``observations/<task>/``), the DAG's
per-image solve seeds (``solve_seed(seed, method, task, "main", id)``) and the suite's method settings
(``--steps`` defaults to the method's own n_steps there), through the solver call ``dwgf solve`` makes;
``--compare-dag`` also reports whether the particles equal the run's
``solve/<method>/<task>/main/images/<id>.npz`` bit for bit. ``--dtype``, ``--ids``, ``--config`` (another prior
fit) and ``--hyper`` (JSON on top of a candidate's settings) change one factor at a time (docs/findings.md, "The
finding"). PSNR here is unquantised (data range 2 on [-1, 1], the ``repo`` protocol of the DAG's ``psnr``, the
protocol of its ``exact_mean_psnr``).

    nice python benchmarks/finding_search.py --run results/research --ids prior-0000 --tasks box \
        --candidates dwgf_langevin --compare-dag
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Exploratory candidates: name -> DWGF hyper-parameters (on top of the official defaults); the ``langevin`` /
#: ``kinetic*`` rows are the Langevin variant (docs/method.md#dwgf). A name that is a method of the suite (``dwgf``,
#: ``dwgf_bayes``, ``dwgf_langevin`` of ``research``) is solved with the suite's own settings for the task instead.
LANGEVIN = {"likelihood_std": 0.001, "kappa": 0.0, "sigma_dec": 0.0, "langevin": True}
CANDIDATES: dict[str, dict] = {
    "langevin": {**LANGEVIN, "lr": 0.3},
    "kinetic": {**LANGEVIN, "lr": 0.7, "langevin_friction": 0.1, "langevin_probes": 64},
    "kinetic_c01": {
        **LANGEVIN,
        "lr": 0.7,
        "langevin_friction": 0.1,
        "langevin_probes": 64,
        "langevin_prior_precision": 0.1,
    },
    "kinetic_c001": {
        **LANGEVIN,
        "lr": 0.7,
        "langevin_friction": 0.1,
        "langevin_probes": 64,
        "langevin_prior_precision": 0.01,
    },
    "kinetic_h04": {**LANGEVIN, "lr": 0.4, "langevin_friction": 0.1, "langevin_probes": 64},
    "kinetic_h04_g05": {**LANGEVIN, "lr": 0.4, "langevin_friction": 0.05, "langevin_probes": 64},
    "kinetic_g003": {**LANGEVIN, "lr": 0.5, "langevin_friction": 0.03, "langevin_probes": 64},
    "kinetic_t200": {**LANGEVIN, "lr": 0.5, "langevin_friction": 0.1, "langevin_probes": 64, "langevin_t_max": 200},
    "kinetic_t200_g03": {
        **LANGEVIN,
        "lr": 0.5,
        "langevin_friction": 0.03,
        "langevin_probes": 64,
        "langevin_t_max": 200,
    },
    "kinetic_t50": {**LANGEVIN, "lr": 0.5, "langevin_friction": 0.1, "langevin_probes": 64, "langevin_t_max": 50},
    "kinetic_h04_c01": {
        **LANGEVIN,
        "lr": 0.4,
        "langevin_friction": 0.1,
        "langevin_probes": 64,
        "langevin_prior_precision": 0.1,
    },
}


def conditioning(posterior) -> dict[str, float]:
    """Spectrum of the exact posterior precision H = C^-1 of the dominant component: its condition number and that
    of D^-1/2 H D^-1/2 (D = diag H: what a perfect diagonal preconditioner leaves; a first-order sampler needs
    ~ that many steps per e-fold of its slowest direction, a kinetic one ~ its square root)."""
    import torch

    k = int(posterior.weights.argmax())
    precision = torch.linalg.inv(posterior.covariances[k])
    scale = precision.diagonal().rsqrt()
    jacobi = torch.linalg.eigvalsh(scale[:, None] * precision * scale[None, :])
    spectrum = torch.linalg.eigvalsh(precision)
    return {"weight": float(posterior.weights[k]), "cond H": float(spectrum[-1] / spectrum[0]),
            "cond Jacobi": float(jacobi[-1] / jacobi[0]), "Jacobi min": float(jacobi[0]),
            "Jacobi max": float(jacobi[-1])}  # fmt: skip


def _prior_as(prior, dtype: str):
    """The same fitted prior in another dtype (a one-factor change: float32 -> float64)."""
    import torch

    return prior.to(dtype=getattr(torch, dtype))


def _equal_to_dag(run: Path, method: str, task: str, image_id: str, particles) -> str:
    """'bitwise' / 'max |diff| <v>' / 'missing': these particles against the run's stored ones (float32 npz)."""
    import numpy as np

    path = run / "solve" / method / task / "main" / "images" / f"{image_id}.npz"
    if not path.is_file():
        return "missing"
    with np.load(path) as data:
        stored = data["particles"]
    mine = particles.detach().to("cpu").float().numpy()
    return "bitwise" if np.array_equal(stored, mine) else f"max|diff| {np.abs(stored - mine).max():.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="research")
    parser.add_argument("--config", default=None, help="config file (default: the repository's config.yaml)")
    parser.add_argument("--candidates", default="dwgf,dwgf_bayes,dwgf_langevin")
    parser.add_argument("--tasks", default="box,sr8")
    parser.add_argument("--n-images", type=int, default=2)
    parser.add_argument("--n-particles", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="default 998 (with --run: the method's n_steps)")
    parser.add_argument("--run", default=None, help="a DAG results folder <results>/<suite> to replay (see above)")
    parser.add_argument("--ids", default=None, help="with --run: comma-separated image ids (default prior-0000,0001)")
    parser.add_argument("--dtype", default=None, help="float32 / float64 (default: the suite's dtype)")
    parser.add_argument("--hyper", default="{}", help="JSON hyper-parameters applied on top of every candidate's")
    parser.add_argument("--compare-dag", action="store_true", help="with --run: compare particles with the run's")
    parser.add_argument("--sigma-dec", type=float, default=0.0, help="decoder noise of the exact-posterior model")
    parser.add_argument("--csv", default=None)
    parser.add_argument(
        "--conditioning",
        action="store_true",
        help="also print the condition number of the exact "
        "posterior precision (dominant component) and of its Jacobi-scaled form, per task and image",
    )
    args = parser.parse_args(argv)

    import pandas as pd
    import torch

    from dwgf.cli.compare import _metrics, ground_truths, load_or_fit_prior, settings_for, suite_plan
    from dwgf.pipeline.images import load_image
    from dwgf.pipeline.layout import suite_path
    from dwgf.pipeline.observe import build_operator, load_observation, measure, observation_seed
    from dwgf.pipeline.records import read_step_record
    from dwgf.pipeline.solve import load_pipeline_prior, solve_seed
    from dwgf.seeding import derive_seed, make_generator
    from dwgf.solvers.dwgf import solve

    torch.set_num_threads(1)
    plan = suite_plan(args.config, args.suite)
    seed, n = plan.spec["seed"], args.n_particles
    dtype = args.dtype or plan.spec["dtype"]
    if args.run is None:
        prior = load_or_fit_prior(plan) if args.dtype is None else _prior_as(load_or_fit_prior(plan), dtype)
        images, ids = ground_truths(prior, plan, "prior", args.n_images)
    else:
        run = Path(args.run)
        prior, _ = load_pipeline_prior(run, suite_path(run, "prior"), "cpu", dtype)
        ids = (args.ids or "prior-0000,prior-0001").split(",")
        folder = run / "data" / "images"
        images = torch.stack([load_image(next(folder.glob(f"{i}.*")), prior.image_size) for i in ids])
    rows = []
    for task in args.tasks.split(","):
        spec = plan.task_spec(task)
        sigma_y = float(spec["sigma_y"])
        operator = build_operator(spec, prior.image_size)
        ys, posteriors = [], []
        observed = None if args.run is None else read_step_record(suite_path(run, "observations", task=task), "observe")
        for k, image_id in enumerate(ids):
            gt = images[k : k + 1].to(prior.dtype)
            if observed is None:
                _, y = measure(operator, gt, sigma_y, observation_seed(seed, task, image_id))
            else:  # the frozen observation, cast as `dwgf solve` does
                y = torch.from_numpy(load_observation(run, observed, image_id)["y"]).to(prior.dtype)
            ys.append(y)
            posteriors.append(prior.posterior(y, operator, sigma_y, args.sigma_dec))
            exact = posteriors[k].sample_images(
                n, make_generator(derive_seed(seed, "exact-samples", task, "prior", image_id))
            )
            for name, particles in (("exact_mean", posteriors[k].mean_image), ("exact_samples", exact)):
                rows.append({"task": task, "method": name, "image_id": image_id,
                             **_metrics(particles, images[k : k + 1], posteriors[k])})  # fmt: skip
        if args.conditioning:
            for k, posterior in enumerate(posteriors):
                print(f"{task} {ids[k]}: " + ", ".join(f"{key} {value:.3g}" for key, value in
                                                       conditioning(posterior).items()))  # fmt: skip
        y_batch = torch.cat(ys)
        for name in [c for c in args.candidates.split(",") if c]:
            # the DAG's main-variant seeds with --run; otherwise those of `dwgf testbed-compare --regimes prior`
            variant = "testbed-compare-prior" if args.run is None else "main"
            generators = [make_generator(solve_seed(seed, name, task, variant, image_id)) for image_id in ids]
            if name in plan.methods:
                n_name, steps_name, hyper = settings_for(plan, name, task)
                n_name = n_name if args.run is not None else n
            else:
                n_name, steps_name, hyper = n, 998, CANDIDATES[name]
            hyper = {**hyper, **json.loads(args.hyper)}
            steps = args.steps or (steps_name if args.run is not None else 998)
            start = time.process_time()
            results = solve(prior, operator, y_batch, n_name, generators, n_steps=steps, progress=False, **hyper)
            cpu = (time.process_time() - start) / len(ids)
            for k, result in enumerate(results):
                metrics = _metrics(result.particles, images[k : k + 1], posteriors[k])
                row = {"task": task, "method": name, "image_id": ids[k], "steps": steps, "cpu_s": cpu,
                       "status": result.status, **metrics}  # fmt: skip
                if args.compare_dag:
                    row["equal_dag"] = _equal_to_dag(run, name, task, ids[k], result.particles)
                rows.append(row)
                print(f"{task:5s} {name:14s} {ids[k]} psnr_gt {row['psnr_gt']:6.2f} psnr_post {row['psnr_post']:6.2f} "
                      f"spread {row['spread']:7.3f} {result.status} cpu {cpu:5.1f}s/img"
                      + (f" dag {row['equal_dag']}" if args.compare_dag else ""), flush=True)  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["diverged"] = frame.get("status", pd.Series(dtype=str)) == "diverged"
    summary = frame.groupby(["task", "method"], sort=False).agg(
        psnr_gt=("psnr_gt", "mean"), psnr_post=("psnr_post", "mean"), spread=("spread", "mean"),
        diverged=("diverged", "sum"), cpu_s=("cpu_s", "mean"))  # fmt: skip
    if "dwgf" in args.candidates.split(","):
        base = summary.xs("dwgf", level="method")["cpu_s"]
        summary["cost_vs_dwgf"] = [row.cpu_s / base[task] for (task, _), row in summary.iterrows()]
    bed = args.run or "prior fitted here"
    print(f"N {n}, {len(ids)} images ({bed}, {dtype}), exact posterior sigma_dec {args.sigma_dec}")
    print(summary.to_string(float_format=lambda v: f"{v:.3g}" if not math.isnan(v) else "nan"))
    if args.csv:
        frame.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
