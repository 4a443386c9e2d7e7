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

Test-bed hyper-parameters (:data:`TESTBED_SETTINGS`) differ from the SD paper settings (the solvers' ``DEFAULTS`` /
``TASK_DEFAULTS``): the runs must take seconds on a CPU, so every method gets 50 steps instead of ~1000, and
the step sizes were re-chosen for 64 px and the test bed's latent geometry (the whitened decoder D(z) = W diag(s) z
+ b has gains s from 0.46 to 47, so an unsquared-norm DPS step of size omega moves the top PCA directions ~100x
more than the bottom ones). Each entry states why.
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

#: The three test-bed tasks: operator name -> ``make_operator`` parameters at 64 px. Compressed sensing keeps
#: 10 % of the 12,288 pixel values (m = 1229): at that size Phi stays cached in memory, so one forward is a
#: matrix product instead of regenerating Phi, and the exact posterior's dense Sigma_y is 1229 x 1229.
TASKS: dict[str, dict[str, Any]] = {
    "box_inpainting": {},
    "sr_avgpool": {"factor": 8},
    "compressed_sensing": {"ratio": 0.1, "seed": 0},
}
REGIMES = ("real", "prior")
METHODS = ("dwgf", "psld", "rlsd", "latent_dps")
REFERENCES = ("exact_mean", "exact_samples", "pseudo_inverse", "prior_mean")

#: Per-method test-bed settings: ``n_steps`` and hyper-parameters (over the solver's DEFAULTS), with per-task
#: overrides in ``per_task``. Every method gets 50 steps so that the full comparison (2 regimes x 3 tasks x 8 images
#: x 4 methods) runs in minutes on a shared 2-core CPU. Step sizes come from small scans (1-2 well-specified images
#: per task, ``PSNR vs exact mean``), run with :func:`run_compare`; the numbers behind each choice are in the
#: comments (50 steps unless stated).
TESTBED_SETTINGS: dict[str, dict[str, Any]] = {
    "dwgf": {
        "n_steps": 50,
        # SD value lr 1.0 makes Adam's per-coordinate steps of ~1 latent std, which never settle on the whitened
        # test bed (docs/testbed.md: lr 0.1 at 300 steps). At 50 steps lr 0.2 beat 0.1 on box inpainting
        # (29.4 vs 25.2 dB); at 100 steps lr 0.1 gave box 32.4, SR 33.5, CS 44.0 dB.
        "hyper": {"lr": 0.2},
        "per_task": {},
    },
    "psld": {
        "n_steps": 50,
        # omega = 1 (SD setting) diverges: the gradient of ||y - A D(zhat_0)|| w.r.t. z_t is ~ s_max / sqrt(abar_t)
        # ~ 47 x 14.6 at t = 999. Box inpainting, 100 steps, held-out crops, omega = gamma in {0.003, 0.01, 0.03}:
        # 14.2, 15.4, 16.9 dB (omega 1: -13 dB). omega as for Latent-DPS (scans below); gamma = omega / 10 keeps
        # the ratio of both official settings (box 1e-2 / 1e-1, SR 0.1 / 1).
        "hyper": {"omega": 0.03, "gamma": 0.003},
        "per_task": {"sr_avgpool": {"omega": 0.1, "gamma": 0.01}},
    },
    "latent_dps": {
        "n_steps": 50,
        # Box: omega 0.03 -> 20.5 dB, 0.1 -> 14.2 dB (over-shooting oscillation at small t). SR (100 steps):
        # 0.01 / 0.03 / 0.1 -> 14.7 / 19.5 / 23.2 dB. CS (100 steps): 0.01 / 0.03 / 0.1 -> 20.3 / 23.5 / 18.3 dB.
        "hyper": {"omega": 0.03},
        "per_task": {"sr_avgpool": {"omega": 0.1}},
    },
    "rlsd": {
        "n_steps": 50,
        # The configuration-file defaults (w_t 0.1, rho 0.2, lr 0.2 / 0.2, weight w_t / rho) work on box and SR
        # (27.8 and 27.2 dB). Compressed sensing fails with every variant tried (defaults 11.8 dB at 100 steps;
        # rho 1.0: 7.0 dB; lr_x 0.05: 5.5 dB; pseudo-inverse 6.4 dB on that image): the pixel variable starts
        # from N(0, I) noise, and in the 90 % null space of A only the weak coupling term removes it.
        "hyper": {},
        "per_task": {},
    },
}


def settings_for(method: str, task: str, steps: int | None = None) -> tuple[int, dict[str, Any]]:
    """(n_steps, hyper) of ``method`` on ``task`` from :data:`TESTBED_SETTINGS` (``steps`` overrides n_steps)."""
    if method not in TESTBED_SETTINGS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(TESTBED_SETTINGS)}")
    entry = TESTBED_SETTINGS[method]
    hyper = {**entry["hyper"], **entry["per_task"].get(task, {})}
    return (int(steps) if steps is not None else int(entry["n_steps"])), hyper


def load_or_fit_prior(path: str | None, save_to: str | None = None, log=print):
    """(prior, held-out test ids): load a prior saved by ``GaussianMixturePrior.save`` or fit one on bundled crops.

    Held-out ids come from ``prior.config["bundled"]["test_ids"]`` (written by ``fit_bundled``); a prior without
    them cannot serve the ``real`` regime, which raises.
    """
    from dwgf.priors.gaussian_mixture import GaussianMixturePrior

    if path is not None:
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"test-bed prior folder {str(folder)!r} does not exist; omit --prior to fit one (about 30 s), "
                f"optionally with --save-prior {str(folder)!r}"
            )
        prior = GaussianMixturePrior.load(folder)
    else:
        log("fitting the test-bed prior on bundled crops (PCA + 8-component GMM, ~30 s) ...")
        prior, _, _ = GaussianMixturePrior.fit_bundled(image_size=64, seed=0)
        if save_to is not None:
            prior.save(save_to)
            log(f"saved the prior to {save_to}")
    test_ids = list(prior.config.get("bundled", {}).get("test_ids", []))
    return prior, test_ids


def ground_truths(prior, regime: str, n_images: int, seed: int, test_ids: list[str]) -> tuple[torch.Tensor, list[str]]:
    """(images (n, 3, 64, 64), ids) of one regime: held-out crops or prior samples D(z), z ~ p_0."""
    import torch

    from dwgf.seeding import derive_seed, make_generator

    if regime == "real":
        if len(test_ids) < n_images:
            raise ValueError(
                f"the prior holds {len(test_ids)} held-out crop ids but --n-images is {n_images}; lower --n-images "
                f"or refit the prior with more held-out crops (GaussianMixturePrior.fit_bundled(n_test=...))"
            )
        from dwgf.data.bundled import load_crops

        ids = test_ids[:n_images]
        return load_crops(ids, size=prior.image_size).to(torch.float32), ids
    if regime == "prior":
        generator = make_generator(derive_seed(seed, "testbed-compare", "prior-samples"))
        images = prior.decode(prior.sample_prior(n_images, generator)).detach().to(torch.float32)
        return images, [f"prior-{k:03d}" for k in range(n_images)]
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
    test_ids: list[str],
    *,
    methods: Sequence[str] = METHODS,
    tasks: Sequence[str] = tuple(TASKS),
    regimes: Sequence[str] = REGIMES,
    n_images: int = 8,
    n_particles: int = 4,
    seed: int = 0,
    sigma_y: float = 0.001,
    sigma_dec: float = 0.01,
    steps: int | None = None,
    progress: bool = False,
    log=print,
) -> list[dict[str, Any]]:
    """Per-image rows {regime, task, method, image_id, psnr_gt, psnr_post, spread, status, seconds, n_steps}."""
    from dwgf.operators import add_measurement_noise, make_operator
    from dwgf.seeding import derive_seed, make_generator
    from dwgf.solvers import get_solver

    for name, values, valid in (("method", methods, METHODS), ("task", tasks, TASKS), ("regime", regimes, REGIMES)):
        bad = [v for v in values if v not in valid]
        if bad:
            raise ValueError(f"unknown {name}(s) {bad}; choose from {list(valid)}")
    if n_particles < 2:
        raise ValueError(f"n_particles must be >= 2 (the spread ratio needs two particles), got {n_particles}")
    prior_mean = prior_mean_image(prior)
    rows: list[dict[str, Any]] = []
    for regime in regimes:
        images, ids = ground_truths(prior, regime, n_images, seed, test_ids)
        for task in tasks:
            operator = make_operator(task, prior.image_size, **TASKS[task])
            for k, image_id in enumerate(ids):
                gt = images[k : k + 1]
                noisy = add_measurement_noise(
                    operator(gt), sigma_y, make_generator(derive_seed(seed, "observe", task, image_id))
                )
                y = operator.zero_unmeasured(noisy)  # inpainting: noise in the hole is not data
                posterior = prior.posterior(y, operator, sigma_y, sigma_dec)
                base = {"regime": regime, "task": task, "image_id": image_id}
                exact = posterior.sample_images(
                    n_particles, make_generator(derive_seed(seed, "exact-samples", task, regime, image_id))
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
                    n_steps, hyper = settings_for(method, task, steps)
                    generator = make_generator(derive_seed(seed, "solve", method, task, regime, image_id))
                    start = time.perf_counter()
                    result = get_solver(method)(
                        prior, operator, y, n_particles, generator, n_steps=n_steps, progress=progress, **hyper
                    )
                    seconds = time.perf_counter() - start
                    row = {
                        **base,
                        "method": method,
                        **_metrics(result.particles, gt, posterior),
                        "status": result.status,
                        "seconds": seconds,
                        "n_steps": n_steps,
                    }
                    rows.append(row)
                    log(
                        f"{regime:5s} {task:18s} {image_id:28s} {method:10s} psnr_gt {row['psnr_gt']:6.2f} "
                        f"psnr_post {row['psnr_post']:6.2f} spread {row['spread']:7.3f} {result.status} "
                        f"{seconds:5.1f}s"
                    )
    return rows


def summarise(rows: list[dict[str, Any]]):
    """Mean over images per regime x task x method (a pandas DataFrame), with the count of diverged solves."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if "seconds" not in frame:
        frame["seconds"] = math.nan
    frame["diverged"] = frame["status"] == "diverged"
    order = {name: i for i, name in enumerate([*METHODS, *REFERENCES])}
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
    help_text = "DWGF, PSLD, RLSD and Latent-DPS against the exact posterior of the 64-px test bed"
    p = subparsers.add_parser("testbed-compare", help=help_text, description=__doc__.split("\n\n")[0])
    p.add_argument("--prior", help="saved test-bed prior folder (default: fit one on bundled crops, ~30 s)")
    p.add_argument("--save-prior", help="where to save the prior fitted when --prior is not given")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    p.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated subset of real,prior")
    p.add_argument("--n-images", type=int, default=8, help="images per regime and task (default 8)")
    p.add_argument("--n-particles", type=int, default=4, help="particles per solve (default 4)")
    p.add_argument("--steps", type=int, help="override every method's test-bed step count")
    p.add_argument("--seed", type=int, default=0, help="base seed (observations, solver generators, prior samples)")
    p.add_argument("--sigma-y", type=float, default=0.001, help="measurement noise std on [-1, 1] (paper: 0.001)")
    p.add_argument("--sigma-dec", type=float, default=0.01, help="decoder noise std of the exact posterior model")
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

    prior, test_ids = load_or_fit_prior(args.prior, args.save_prior, log=log)
    start = time.perf_counter()
    rows = run_compare(
        prior,
        test_ids,
        methods=_csv_list(args.methods),
        tasks=_csv_list(args.tasks),
        regimes=_csv_list(args.regimes),
        n_images=args.n_images,
        n_particles=args.n_particles,
        seed=args.seed,
        sigma_y=args.sigma_y,
        sigma_dec=args.sigma_dec,
        steps=args.steps,
        progress=args.progress,
        log=log,
    )
    summary = summarise(rows)
    header = {
        "n_images": args.n_images,
        "n_particles": args.n_particles,
        "seed": args.seed,
        "sigma_y": args.sigma_y,
        "sigma_dec": args.sigma_dec,
        "tasks": {task: TASKS[task] for task in _csv_list(args.tasks)},
        "settings": {m: settings_for(m, "*", args.steps) for m in _csv_list(args.methods)},
        "per_task_overrides": {m: TESTBED_SETTINGS[m]["per_task"] for m in _csv_list(args.methods)},
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
