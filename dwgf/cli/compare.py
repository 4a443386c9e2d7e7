"""``dwgf testbed-compare``: DWGF and the baselines against the exact posterior of the test bed.

The test bed (``docs/testbed.md``, :mod:`dwgf.priors.gaussian_mixture`) is a whitened linear
autoencoder with a Gaussian-mixture latent prior at 64 px, for which p(z | y) is known in closed form. For each
ground-truth regime x task x image, one observation y = A x + sigma_y n is drawn and every method solves it with
N particles; per method x task the command reports (mean over images):

* ``psnr_gt``: PSNR of the particle mean against the ground truth;
* ``psnr_post``: PSNR of the particle mean against the exact posterior mean E[D(z) | y];
* ``spread``: particle spread / exact posterior std, :func:`dwgf.metrics.testbed.spread_ratio` (mean over pixels
  of the across-particle std over the mean posterior pixel std; << 1 is mode collapse, >> 1 over-dispersion).

PSNRs use the data range 2 of [-1, 1] images (= PSNR on [0, 1] images), unclamped.

Regimes: ``real`` = held-out bundled crops (realistic; the fitted prior is misspecified, so the exact posterior is
not the best estimator there) and ``prior`` = images D(z), z ~ p_0, sampled from the fitted prior (well-specified:
the exact posterior mean is Bayes-optimal). Reference rows: ``exact_mean`` (the exact posterior mean itself),
``exact_samples`` (N exact posterior samples: the spread a calibrated sampler with N particles reaches; the sample std
of N = 4 draws underestimates the std by ~8 % on average), ``pseudo_inverse`` (A^+ y) and ``prior_mean`` (D(E z)).

The exact posterior is that of the model z ~ p_0, x | z ~ N(D(z), sigma_dec^2 I), y = A x + N(0, sigma_y^2 I)
(:meth:`GaussianMixturePrior.posterior`); ``--sigma-dec`` defaults to DWGF's decoder std 0.01
(docs/method.md#normalisations), as in
the test-bed prototype.

Settings: one set, the workflow's. The tasks (operator, parameters, sigma_y), the methods (N, step count and
hyper-parameters per task), the base seed and the held-out test images are those of a suite of ``config.yaml``
(``--suite``, default ``demo``: the suite the DAG runs on the same test bed), resolved by
:class:`dwgf.pipeline.plan.Plan` exactly as for the DAG's jobs. The prior is fitted by the DAG's own
``fit-prior`` step (:func:`dwgf.pipeline.data_steps.fit_prior`) from the suite's prior spec, or read from a DAG
results folder (``--prior-dir results/demo``); observations use the DAG's measurement function and seeds
(:func:`dwgf.pipeline.observe.measure`), and each solve uses the DAG's per-image seed
(:func:`dwgf.pipeline.solve.solve_seed`). So on the ``real`` regime a method's particles are those of the DAG's
``main`` variant for that image, and on the ``prior`` regime those of a DAG whose data has a ``prior_samples`` set
(the same function draws the images, :func:`dwgf.data.prior_samples.sample_prior_images`, with the same ids and
seeds); this verb adds the reference rows (``exact_samples``, ``pseudo_inverse``, ``prior_mean``). The test-bed
step sizes are documented where they are set, in ``config.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: `dwgf --help` and other verbs should not pay for it
    import torch

REGIMES = ("real", "prior")
REFERENCES = ("exact_mean", "exact_samples", "pseudo_inverse", "prior_mean")
DEFAULT_SUITE = "demo"


def suite_plan(config: str | None = None, suite: str = DEFAULT_SUITE):
    """The :class:`~dwgf.pipeline.plan.Plan` of ``suite`` in ``config`` (default: the repository's config.yaml),
    which must use the test-bed prior."""
    from dwgf.pipeline.config import DEFAULT_CONFIG, ConfigError, load_config
    from dwgf.pipeline.plan import Plan

    plan = Plan(load_config(config or DEFAULT_CONFIG, {"suite": suite}))
    if plan.spec["prior"]["kind"] != "gaussian_mixture":
        raise ConfigError(
            f"config key 'suites.{suite}.prior.kind': testbed-compare needs the exact-posterior test bed "
            f"(gaussian_mixture), got {plan.spec['prior']['kind']!r}; choose a test-bed suite such as 'demo'"
        )
    return plan


def settings_for(plan, method: str, task: str, steps: int | None = None) -> tuple[int, int, dict[str, Any]]:
    """(n_particles, n_steps, hyper) of ``method`` on ``task`` in the suite's main variant (``steps`` overrides)."""
    settings = plan.settings(method, task)
    hyper = dict(settings["hyper"])
    if "betas" in hyper:
        hyper["betas"] = tuple(hyper["betas"])
    n_steps = int(steps) if steps is not None else int(settings["n_steps"])
    return int(settings["n_particles"]), n_steps, hyper


def load_or_fit_prior(plan, prior_dir: str | None = None, log=print):
    """The suite's test-bed prior: read from ``<prior_dir>/prior/prior.prov.json`` (a DAG results folder such as
    ``results/demo``, or a folder this verb fitted into before), else fitted there by the DAG's ``fit-prior`` step
    from the suite's prior spec (~30 s). ``prior_dir`` defaults to ``results/testbed_compare/<suite>``."""
    from dwgf.pipeline.data_steps import fit_prior
    from dwgf.pipeline.layout import suite_path
    from dwgf.pipeline.solve import load_pipeline_prior

    root = Path(prior_dir or Path(plan.config["results"]) / "testbed_compare" / plan.suite)
    record = suite_path(root, "prior")
    if not record.is_file():
        log(f"fitting the test-bed prior of suite {plan.suite!r} into {root} (the DAG's fit-prior step, ~30 s) ...")
        fit_prior(plan.prior_spec(), root, record)
    prior, saved = load_pipeline_prior(root, record, "cpu", plan.spec["dtype"])
    if saved["config"] != plan.prior_spec():
        raise ValueError(
            f"{record} was fitted with another prior spec than suite {plan.suite!r} sets; delete {root / 'prior'} "
            f"or pass --prior-dir for a folder of this suite"
        )
    return prior


def ground_truths(prior, plan, regime: str, n_images: int) -> tuple[torch.Tensor, list[str]]:
    """(images (n, 3, S, S), ids) of one regime: the suite's held-out test crops or prior samples D(z), z ~ p_0.

    The ``prior`` regime is the DAG's ``prior_samples`` data source (:func:`dwgf.data.prior_samples.
    sample_prior_images`, ids ``prior-0000``, ...; per-image seeds from the suite seed and the id): a suite whose
    data has a prior_samples set solves the same images.
    """
    import torch

    if regime == "real":
        if len(plan.ids) < n_images:
            raise ValueError(
                f"suite {plan.suite!r} has {len(plan.ids)} test images but --n-images is {n_images}; lower --n-images"
            )
        from dwgf.data.bundled import load_crops

        ids = plan.ids[:n_images]
        return load_crops(ids, size=prior.image_size).to(torch.float32), ids
    if regime == "prior":
        from dwgf.data.prior_samples import prior_sample_id, sample_prior_images

        ids = [prior_sample_id(k) for k in range(n_images)]
        return sample_prior_images(prior, int(plan.spec["seed"]), ids), ids
    raise ValueError(f"unknown regime {regime!r}; choose from {REGIMES}")


def prior_mean_image(prior) -> torch.Tensor:
    """D(E[z]) with E[z] = sum_k pi_k mu_k (D is linear, so this is also E[D(z)] under the prior)."""
    params = prior.parameters64()
    mean = params["mixture.weights"] @ params["mixture.means"]
    return prior.decode(mean.reshape(1, *prior.latent_shape(prior.image_size)).to(prior.dtype)).detach()


def _metrics(particles: torch.Tensor, gt: torch.Tensor, posterior) -> dict[str, float]:
    import torch

    from dwgf.metrics.testbed import posterior_mean_psnr, spread_ratio

    particles = particles.detach().to(torch.float64)
    if not torch.isfinite(particles).all():
        return {"psnr_gt": math.nan, "psnr_post": math.nan, "spread": math.nan}
    spread = spread_ratio(particles, posterior.std_image) if particles.shape[0] >= 2 else math.nan
    return {
        "psnr_gt": posterior_mean_psnr(particles, gt),
        "psnr_post": posterior_mean_psnr(particles, posterior.mean_image),
        "spread": spread,
    }


def run_compare(
    prior,
    plan,
    *,
    methods: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    regimes: Sequence[str] = REGIMES,
    n_images: int = 8,
    n_particles: int | None = None,
    sigma_dec: float | None = None,
    steps: int | None = None,
    progress: bool = False,
    keep_particles: bool = False,
    log=print,
) -> list[dict[str, Any]]:
    """Per-image rows {regime, task, method, image_id, psnr_gt, psnr_post, spread, status, seconds, n_steps}
    (with ``keep_particles``, solved rows also hold the ``particles`` tensor).

    ``methods`` and ``tasks`` are names of the suite's (default: all of them, in the suite's order); every setting
    comes from the suite (module docstring). ``n_particles`` and ``steps`` override the suite's values for every
    method (for quick looks; the rows then no longer match the DAG's). ``sigma_dec`` of the exact-posterior model
    defaults to DWGF's decoder std in the suite.
    """
    from dwgf.pipeline.observe import build_operator, measure, observation_seed
    from dwgf.pipeline.solve import solve_seed
    from dwgf.seeding import derive_seed, make_generator
    from dwgf.solvers import get_solver, solver_defaults

    for name, values, valid in (
        ("method", methods or [], plan.methods),
        ("task", tasks or [], plan.tasks),
        ("regime", regimes, REGIMES),
    ):
        bad = [v for v in values if v not in valid]
        if bad:
            raise ValueError(f"unknown {name}(s) {bad}; suite {plan.suite!r} has {list(valid)}")
    methods = [m for m in plan.methods if methods is None or m in methods]  # the suite's order
    tasks = [t for t in plan.tasks if tasks is None or t in tasks]
    if sigma_dec is None:
        dwgf_hyper = plan.settings("dwgf", plan.tasks[0])["hyper"] if "dwgf" in plan.methods else {}
        sigma_dec = float(dwgf_hyper.get("sigma_dec", solver_defaults("dwgf")["sigma_dec"]))
    seed = plan.spec["seed"]
    prior_mean = prior_mean_image(prior)
    rows: list[dict[str, Any]] = []
    for regime in regimes:
        images, ids = ground_truths(prior, plan, regime, n_images)
        for task in tasks:
            task_spec = plan.task_spec(task)
            sigma_y = float(task_spec["sigma_y"])
            operator = build_operator(task_spec, prior.image_size)
            for k, image_id in enumerate(ids):
                gt = images[k : k + 1].to(prior.dtype)
                _, y = measure(operator, gt, sigma_y, observation_seed(seed, task, image_id))
                posterior = prior.posterior(y, operator, sigma_y, sigma_dec)
                base = {"regime": regime, "task": task, "image_id": image_id}
                exact = posterior.sample_images(
                    _n(plan, methods, task, n_particles),
                    make_generator(derive_seed(seed, "exact-samples", task, regime, image_id)),
                )
                references = {
                    "exact_mean": posterior.mean_image,
                    "exact_samples": exact,
                    "pseudo_inverse": operator.pseudo_inverse(y),
                    "prior_mean": prior_mean,
                }
                for name, particles in references.items():
                    rows.append({**base, "method": name, **_metrics(particles, gt, posterior), "status": "reference"})
                for method in methods:
                    if not plan.runs_on(method, task):  # the method's `tasks` key leaves it out, as in the DAG
                        continue
                    n, n_steps, hyper = settings_for(plan, method, task, steps)
                    n = n_particles or n
                    # both regimes' image ids and seeds are the DAG's (main variant): the real regime's are the
                    # suite's test crops, the prior regime's those of a prior_samples data source
                    generator = make_generator(solve_seed(seed, method, task, "main", image_id))
                    start = time.perf_counter()
                    result = get_solver(plan.solver(method))(
                        prior, operator, y, n, generator, n_steps=n_steps, progress=progress, **hyper
                    )
                    seconds = time.perf_counter() - start
                    row = {
                        **base,
                        "method": method,
                        **_metrics(result.particles, gt, posterior),
                        "status": result.status,
                        "seconds": seconds,
                        "n_steps": n_steps,
                        "n_particles": n,
                    }
                    if keep_particles:
                        row["particles"] = result.particles
                    rows.append(row)
                    log(
                        f"{regime:5s} {task:10s} {image_id:28s} {method:10s} psnr_gt {row['psnr_gt']:6.2f} "
                        f"psnr_post {row['psnr_post']:6.2f} spread {row['spread']:7.3f} {result.status} "
                        f"{seconds:5.1f}s"
                    )
    return rows


def _n(plan, methods: Sequence[str], task: str, n_particles: int | None) -> int:
    """Particles of the exact-sample reference row: the override, else the largest N of the compared methods."""
    if n_particles:
        return n_particles
    return max([plan.settings(m, task)["n_particles"] for m in methods if plan.runs_on(m, task)] or [4])


def summarise(rows: list[dict[str, Any]]):
    """Mean over images per regime x task x method (a pandas DataFrame), with the count of diverged solves."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if "seconds" not in frame:
        frame["seconds"] = math.nan
    frame["diverged"] = frame["status"] == "diverged"
    methods = [m for m in dict.fromkeys(frame["method"]) if m not in REFERENCES]
    order = {name: i for i, name in enumerate([*methods, *REFERENCES])}
    summary = (
        frame.groupby(["regime", "task", "method"], sort=False)
        .agg(
            n_images=("image_id", "count"),
            psnr_gt=("psnr_gt", "mean"),
            psnr_post=("psnr_post", "mean"),
            spread=("spread", "mean"),
            diverged=("diverged", "sum"),
            seconds=("seconds", "mean"),
        )
        .reset_index()
    )
    summary["_order"] = summary["method"].map(order)
    return summary.sort_values(["regime", "task", "_order"], kind="stable").drop(columns="_order")


def to_markdown(summary, header: dict[str, Any]) -> str:
    """One Markdown table per regime; ``header`` (settings) is printed above as a JSON block."""
    lines = ["# Test-bed comparison (exact posterior)", "", "```json", json.dumps(header, indent=1), "```", ""]
    for regime, part in summary.groupby("regime", sort=False):
        title = (
            "held-out real crops (prior misspecified)"
            if regime == "real"
            else "samples from the prior (well-specified)"
        )
        lines += [f"## Regime `{regime}`: {title}", ""]
        lines += ["| task | method | PSNR vs GT | PSNR vs exact mean | spread / exact std | diverged | s / solve |"]
        lines += ["|---|---|---:|---:|---:|---:|---:|"]
        for _, r in part.iterrows():
            seconds = "" if math.isnan(r["seconds"]) else f"{r['seconds']:.1f}"
            lines.append(
                f"| {r['task']} | {r['method']} | {_fmt(r['psnr_gt'])} | {_fmt(r['psnr_post'])} | "
                f"{_fmt(r['spread'], 3)} | {int(r['diverged'])}/{int(r['n_images'])} | {seconds} |"
            )
        lines.append("")
    return "\n".join(lines)


def _fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "DWGF, PSLD, RLSD and Latent-DPS against the exact posterior of the test bed, with a suite's settings"
    p = subparsers.add_parser("testbed-compare", help=help_text, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="workflow config (default: the repository's config.yaml)")
    p.add_argument("--suite", default=DEFAULT_SUITE, help=f"test-bed suite whose settings are used ({DEFAULT_SUITE})")
    p.add_argument(
        "--prior-dir",
        help="results folder holding prior/prior.prov.json (e.g. results/demo after `snakemake`); fitted there by the "
        "DAG's fit-prior step when missing (default results/testbed_compare/<suite>)",
    )
    p.add_argument("--methods", help="comma-separated subset of the suite's methods (default: all)")
    p.add_argument("--tasks", help="comma-separated subset of the suite's tasks (default: all)")
    p.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated subset of real,prior")
    p.add_argument("--n-images", type=int, default=8, help="images per regime and task (default 8)")
    p.add_argument("--n-particles", type=int, help="override every method's N (default: the suite's)")
    p.add_argument("--steps", type=int, help="override every method's step count (default: the suite's)")
    p.add_argument("--sigma-dec", type=float, help="decoder noise std of the exact posterior model (default: DWGF's)")
    p.add_argument("--csv", help="write the summary table as CSV")
    p.add_argument("--per-image-csv", help="write the per-image rows as CSV")
    p.add_argument("--markdown", help="write the summary as Markdown")
    p.add_argument("--progress", action="store_true", help="show each solve's progress bar")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import torch

    from dwgf.io import atomic_write_text

    torch.set_num_threads(max(1, args.threads))

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    plan = suite_plan(args.config, args.suite)
    prior = load_or_fit_prior(plan, args.prior_dir, log=log)
    methods = _csv_list(args.methods) if args.methods else None
    tasks = _csv_list(args.tasks) if args.tasks else None
    start = time.perf_counter()
    rows = run_compare(
        prior,
        plan,
        methods=methods,
        tasks=tasks,
        regimes=_csv_list(args.regimes),
        n_images=args.n_images,
        n_particles=args.n_particles,
        sigma_dec=args.sigma_dec,
        steps=args.steps,
        progress=args.progress,
        log=log,
    )
    summary = summarise(rows)
    header = {
        "suite": plan.suite,
        "n_images": args.n_images,
        "overrides": {"n_particles": args.n_particles, "steps": args.steps, "sigma_dec": args.sigma_dec},
        "protocol": plan.protocol(),
        "prior": prior.describe(),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    markdown = to_markdown(summary, header)
    print(markdown)
    if args.csv:
        atomic_write_text(args.csv, summary.to_csv(index=False))
    if args.per_image_csv:
        import pandas as pd

        atomic_write_text(args.per_image_csv, pd.DataFrame(rows).to_csv(index=False))
    if args.markdown:
        atomic_write_text(args.markdown, markdown + "\n")
    return 0
