"""Test-bed measurements behind the demo suite's settings (docs/testbed-steps.md).

    python benchmarks/testbed_steps.py sweep    --prior /tmp/demo-prior   # step sizes at the official step counts
    python benchmarks/testbed_steps.py batching --prior /tmp/demo-prior   # CPU s per image-step, B = 1 vs B = 8

``--prior``: a folder written by ``GaussianMixturePrior.save``; fitted there first (the demo suite's fit settings:
400 crops per bundled image, 8 components, seed 0, reg_covar 1e-4, 16 held-out crops) when it does not exist.
Both commands run on one thread and report CPU seconds (``time.process_time``), not wall time.

``sweep`` solves 2 held-out crops (N = 4, sigma_y = 0.001, box and SR x8) with each configuration below and prints,
per crop, the PSNR (dB, [0, 1] scale) of the particle mean and the mean per-particle PSNR against the ground truth,
and the rms data misfit on the measured entries; ``posterior`` prints the same for the exact posterior mean.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dwgf.data.bundled import load_crops
from dwgf.operators import add_measurement_noise, make_operator
from dwgf.priors.gaussian_mixture import GaussianMixturePrior
from dwgf.solvers import get_solver

TASKS = {"box": ("box_inpainting", {}), "sr8": ("sr_avgpool", {"factor": 8})}
#: Held-out crops of the prior fitted with the demo settings (``sweep`` uses the first 2, ``batching`` all 8).
CROPS = (
    "astronaut-r0420-c0155", "coffee-r0016-c0253", "astronaut-r0401-c0107", "astronaut-r0229-c0170",
    "coffee-r0004-c0475", "chelsea-r0086-c0168", "chelsea-r0222-c0348", "chelsea-r0142-c0269",
)  # fmt: skip
SIGMA_Y, N_PARTICLES = 0.001, 4

#: (method, task, n_steps, hyper) measured by ``sweep``: each method at its official step count.
SWEEP = [
    *[["dwgf", task, 998, {"gamma": 0.15, "lr": lr, "kappa": 0.1, "sigma_dec": 0.01}]
      for task in TASKS for lr in (0.01, 0.03, 0.1, 1.0)],
    ["psld", "box", 1000, {"omega": 0.1, "gamma": 0.01}], ["psld", "box", 1000, {"omega": 0.01, "gamma": 0.001}],
    ["psld", "sr8", 1000, {"omega": 1.0, "gamma": 0.1}], ["psld", "sr8", 1000, {"omega": 0.1, "gamma": 0.01}],
    ["latent_dps", "box", 1000, {"omega": 0.1}], ["latent_dps", "box", 1000, {"omega": 0.01}],
    ["latent_dps", "sr8", 1000, {"omega": 1.0}], ["latent_dps", "sr8", 1000, {"omega": 0.1}],
    ["rlsd", "box", 998, {}], ["rlsd", "box", 998, {"w_t": 0.15, "rho": 0.07, "lr_x": 0.4, "lr_z": 0.8}],
    ["rlsd", "sr8", 998, {}], ["rlsd", "sr8", 998, {"w_t": 0.01, "rho": 0.05, "lr_x": 0.4, "lr_z": 0.6}],
]  # fmt: skip


def load_prior(folder: Path) -> GaussianMixturePrior:
    if not (folder / "testbed_prior.json").is_file():
        prior, _, _ = GaussianMixturePrior.fit_bundled(
            n_per_image=400, image_size=64, n_test=16, seed=0, n_components=8, reg_covar=1e-4
        )
        prior.save(folder)
    return GaussianMixturePrior.load(folder)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4.0 / ((a.clamp(-1, 1).double() - b.double()) ** 2).mean()))


def problem(prior: GaussianMixturePrior, task: str, n_images: int):
    ids = list(CROPS[:n_images])
    held_out = set(prior.config.get("bundled", {}).get("test_ids", []))
    if not set(ids) <= held_out:
        raise ValueError(f"{sorted(set(ids) - held_out)} are not held out by this prior; fit it with the demo settings")
    x = load_crops(ids)
    name, params = TASKS[task]
    operator = make_operator(name, 64, **params)
    y = operator.zero_unmeasured(add_measurement_noise(operator(x), SIGMA_Y, torch.Generator().manual_seed(1)))
    return operator, x, y


def misfit(operator, image: torch.Tensor, y: torch.Tensor) -> float:
    residual = operator(image.clamp(-1, 1)) - y
    return float((residual**2).sum() / (image.shape[0] * operator.measurement_dim)) ** 0.5


def sweep(prior: GaussianMixturePrior) -> None:
    for task in TASKS:
        operator, x, y = problem(prior, task, 2)
        cells = []
        for i in range(2):
            mean = prior.posterior(y[i : i + 1], operator, SIGMA_Y, 0.01).mean_image.float()
            cells.append(f"mean {psnr(mean, x[i : i + 1]):5.2f} misfit {misfit(operator, mean, y[i : i + 1]):.4f}")
        print(f"posterior  {task:4s} exact posterior mean | " + " | ".join(cells), flush=True)
    for method, task, n_steps, hyper in SWEEP:
        operator, x, y = problem(prior, task, 2)
        started = time.process_time()
        generators = [torch.Generator().manual_seed(10 + i) for i in range(2)]
        results = get_solver(method)(prior, operator, y, N_PARTICLES, generators, n_steps=n_steps, progress=False,
                                     **hyper)  # fmt: skip
        cpu = time.process_time() - started
        cells = []
        for i, result in enumerate(results):
            p, truth = result.particles, x[i : i + 1]
            per_particle = sum(psnr(p[j : j + 1], truth) for j in range(p.shape[0])) / p.shape[0]
            cells.append(
                f"{result.status[:3]} mean {psnr(p.mean(0, keepdim=True), truth):5.2f} part {per_particle:5.2f} "
                f"misfit {misfit(operator, p, y[i : i + 1].expand(p.shape[0], *y.shape[1:])):.4f}"
            )
        print(f"{method:10s} {task:4s} {n_steps:5d} {json.dumps(hyper):58s} cpu {cpu:5.1f}s | " + " | ".join(cells),
              flush=True)  # fmt: skip


def batching(prior: GaussianMixturePrior, n_steps: int = 30) -> None:
    for task in TASKS:
        operator, _, y = problem(prior, task, 8)
        for method in ("dwgf", "psld", "rlsd", "latent_dps"):
            solve = get_solver(method)
            solve(prior, operator, y[:1], N_PARTICLES, torch.Generator().manual_seed(0), n_steps=2, progress=False)
            started = time.process_time()
            for i in range(2):
                solve(prior, operator, y[i : i + 1], N_PARTICLES, torch.Generator().manual_seed(i), n_steps=n_steps,
                      progress=False)  # fmt: skip
            solo = (time.process_time() - started) / (2 * n_steps)
            started = time.process_time()
            generators = [torch.Generator().manual_seed(i) for i in range(8)]
            solve(prior, operator, y, N_PARTICLES, generators, n_steps=n_steps, progress=False)
            batched = (time.process_time() - started) / (8 * n_steps)
            print(f"{task:4s} {method:10s} B=1 {1e3 * solo:6.2f} ms/image-step   B=8 {1e3 * batched:6.2f} "
                  f"ms/image-step   ratio {solo / batched:4.2f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("sweep", "batching"))
    parser.add_argument("--prior", type=Path, required=True, help="test-bed prior folder (fitted there if missing)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prior = load_prior(args.prior)
    (sweep if args.what == "sweep" else batching)(prior)


if __name__ == "__main__":
    main()
