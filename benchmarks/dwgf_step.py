"""Seconds per DWGF step and peak memory: our solver next to a naive loop with the official code's costs.

Not a test. Usage (from the repository root, inside the venv)::

    python benchmarks/dwgf_step.py                                   # CPU, tiny SD, 256 px, N = 4
    python benchmarks/dwgf_step.py --device cuda --arch sd21 --dtype bf16 --image-size 512

Variants, each run in its own subprocess so that the peak resident set size (``ru_maxrss``) and the CUDA peak
(``torch.cuda.max_memory_allocated``) belong to that variant alone:

* ``ours``: :func:`dwgf.solvers.dwgf.solve`.
* ``psld``, ``rlsd``, ``latent_dps``: the baselines' ``solve`` at their defaults, timed the same way (one PSLD /
  Latent-DPS step is one DDIM step; one RLSD step is one Adam step), for the cost table next to DWGF.
* ``naive``: :func:`naive_dwgf`, written here to mirror the costs of the official ``src/algos/dwgf.py``
  (docs/method.md#dwgf, docs/official-code.md items 3-4): the KDE
  score by autograd through a Python double loop of full Gaussian
  log-densities, the prior term as a surrogate loss, ``loss.backward()`` with every VAE weight requiring grad
  (the VAE weight gradients accumulate and are never zeroed), and every decoded image kept in a list on the
  device. It also does what both variants must do: a UNet forward, a decoder forward + backward, an encoder
  forward and a second decoder pass (D(E(x + xi))) per step.

Both variants consume the generator in the same order, so their final latents agree up to floating-point
rounding; the benchmark prints that difference as a check that it times the same algorithm.

Seconds per step are the slope (T(1 + k) - T(1)) / k of two solves after a warm-up solve, which removes the set-up
and the final decode from the figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VARIANTS = ("ours", "naive")
#: baselines timed with the same protocol (s/step slope, own subprocess); no naive counterpart.
BASELINES = ("psld", "rlsd", "latent_dps")


# -- the naive reference loop --------------------------------------------------------------------------------------


def _vae_modules(prior: Any) -> list[torch.nn.Module]:
    """The prior's VAE module(s) (any attribute that is a diffusers AutoencoderKL)."""
    modules = [m for m in vars(prior).values() if isinstance(m, torch.nn.Module) and "Autoencoder" in type(m).__name__]
    if not modules:
        raise ValueError(
            f"the naive reference needs the prior's VAE as an attribute (a diffusers AutoencoderKL); "
            f"{type(prior).__name__} has none among {sorted(vars(prior))}"
        )
    return modules


def naive_dwgf(prior, operator, y, n_particles, generator, *, n_steps, gamma=0.15, lr=1.0, kappa=0.1, sigma_dec=0.01):
    """The official DWGF iteration with its original costs (see the module docstring). Returns (latents, history)."""
    from dwgf.solvers.base import make_timesteps, noise_level, randn

    for vae in _vae_modules(prior):
        vae.train()  # official decode_latents: vae.train() and requires_grad on all VAE weights (docs/official-code.md)
        for parameter in vae.parameters():
            parameter.requires_grad_(True)
    device, model_dtype = prior.device, prior.dtype
    dtype = torch.promote_types(model_dtype, torch.float32)
    latent_shape = prior.latent_shape(operator.image_size)
    n = n_particles
    y = y.to(device=device, dtype=dtype)
    z = randn((n, *latent_shape), generator, device, dtype).requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    history = []
    for t in make_timesteps(n_steps):
        sqrt_abar, sqrt_one_minus_abar = noise_level(prior.alphas_cumprod, t)
        s_t = sqrt_one_minus_abar / sqrt_abar
        eps = randn(z.shape, generator, device, dtype)
        z_t = sqrt_abar * z + sqrt_one_minus_abar * eps
        with torch.no_grad():
            eps_hat = prior.eps(z_t.detach().to(model_dtype), t).to(dtype)
        score_theta = -eps_hat / sqrt_one_minus_abar

        # KDE score by autograd through the N x N double loop of full-normalisation Gaussian log-densities.
        u = z_t.detach().clone().requires_grad_(True)
        centres = sqrt_abar * z.detach()
        d = u[0].numel()
        kde_sum = 0.0
        for i in range(n):
            log_densities = []
            for j in range(n):
                sq = ((u[i] - centres[j]) ** 2).sum()
                log_densities.append(
                    -sq / (2 * sqrt_one_minus_abar**2)
                    - d * math.log(sqrt_one_minus_abar)
                    - 0.5 * d * math.log(2 * math.pi)
                )
            kde_sum = kde_sum + torch.logsumexp(torch.stack(log_densities), 0) - math.log(n)
        (score_kde,) = torch.autograd.grad(kde_sum, u)

        loss_prior = gamma * s_t * sqrt_one_minus_abar * ((score_kde * z).mean() - (score_theta * z).mean())
        x = prior.decode(z.to(model_dtype)).to(dtype)
        xi = sigma_dec * randn(x.shape, generator, device, dtype)
        loss_lik = ((y - operator(x + xi)) ** 2).sum() / (2 * n * operator.measurement_dim)
        with torch.no_grad():
            c = -(prior.decode(prior.encode((x + xi).to(model_dtype), generator=generator, sample=True)).to(dtype) - x)
        loss_vjp = (x * c).mean()
        loss = loss_lik + loss_prior + kappa * loss_vjp
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(x.detach())
    return z.detach(), history


# -- one variant in one process ------------------------------------------------------------------------------------


def _problem(prior, image_size: int, device):
    from dwgf.operators import make_operator
    from dwgf.seeding import make_generator

    operator = make_operator("box_inpainting", image_size)
    x_true = torch.rand((1, 3, image_size, image_size), generator=make_generator(0)) * 2 - 1
    return operator, operator(x_true).to(device)


def _run(variant: str, prior, operator, y, n_particles: int, n_steps: int, seed: int):
    from dwgf.seeding import make_generator
    from dwgf.solvers.dwgf import solve

    generator = make_generator(seed, prior.device)
    if variant == "ours":
        return solve(prior, operator, y, n_particles, generator, n_steps=n_steps, progress=False).latents
    if variant in BASELINES:
        from dwgf.solvers import get_solver

        return get_solver(variant)(prior, operator, y, n_particles, generator, n_steps=n_steps, progress=False).latents
    latents, _history = naive_dwgf(prior, operator, y, n_particles, generator, n_steps=n_steps)
    return latents.cpu()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_benchmark_prior(args: argparse.Namespace, device: torch.device):
    """The prior to time: the tiny SD folder, or SD-2.1-base modules with random weights built in this process."""
    from dwgf.priors.stable_diffusion import StableDiffusionPrior

    dtype = DTYPES[args.dtype]
    if args.arch == "tiny":
        return StableDiffusionPrior.from_pretrained(args.model_dir, dtype=dtype, device=device)
    try:
        from dwgf.testing.tiny_sd import build_sd21_base_architecture
    except ImportError as error:
        raise SystemExit(
            f"--arch sd21 needs dwgf.testing.tiny_sd.build_sd21_base_architecture, which is not importable: {error}"
        ) from error
    from dwgf.priors.base import scaled_linear_alphas_cumprod

    unet, vae = build_sd21_base_architecture(dtype=dtype, device=device, seed=args.seed)
    # Random weights: the empty-prompt embedding only needs the right shape (77 tokens x cross_attention_dim).
    embedding = torch.randn((1, 77, int(unet.config.cross_attention_dim)), generator=torch.Generator().manual_seed(0))
    return StableDiffusionPrior(vae, unet, embedding, scaled_linear_alphas_cumprod(), source={"arch": "sd21-random"})


def worker(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    prior = load_benchmark_prior(args, device)
    operator, y = _problem(prior, args.image_size, device)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _run(args.worker, prior, operator, y, args.n_particles, 1, args.seed)  # warm-up
    _sync(device)
    start = time.perf_counter()
    _run(args.worker, prior, operator, y, args.n_particles, 1, args.seed)
    _sync(device)
    t_one = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    latents = _run(args.worker, prior, operator, y, args.n_particles, 1 + args.steps, args.seed)
    _sync(device)
    t_many = time.perf_counter() - start
    out = {
        "variant": args.worker,
        "seconds_per_step": (t_many - t_one) / args.steps,
        "seconds_total": t_many,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_load_bytes": rss_loaded,
        "latents": latents.float().flatten().tolist(),
    }
    if device.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    return out


# -- driver --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--arch", default="tiny", choices=("tiny", "sd21"), help="random-weight architecture")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="prior dtype (default fp32)")
    parser.add_argument("--image-size", type=int, default=256, help="image side in px (default 256)")
    parser.add_argument("--n-particles", type=int, default=4, help="N (default 4, official)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps k (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS + BASELINES)} (default ours,naive)",
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="tiny: reuse a tiny SD folder (default: build one)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--worker", choices=VARIANTS + BASELINES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch.cuda.is_available() is False")
    if args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return 0

    variants = [v for v in args.variants.split(",") if v]
    bad = sorted(set(variants) - set(VARIANTS + BASELINES))
    if bad:
        raise SystemExit(f"--variants: unknown {bad}; choose from {list(VARIANTS + BASELINES)}")
    with tempfile.TemporaryDirectory(prefix="dwgf_bench_") as tmp:
        model_dir = args.model_dir
        if model_dir is None and args.arch == "tiny":
            from dwgf.testing.tiny_sd import build_tiny_sd

            model_dir = build_tiny_sd(Path(tmp) / "tiny_sd", seed=args.seed, sample_size=args.image_size)
        results: dict[str, Any] = {}
        failures: dict[str, str] = {}
        for variant in variants:
            command = [sys.executable, __file__, "--worker", variant]
            if model_dir is not None:
                command += ["--model-dir", str(model_dir)]
            for key in ("arch", "device", "dtype", "image_size", "n_particles", "steps", "threads", "seed"):
                command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                # One failed variant must not cost the others' numbers (a GPU lease is short): report and go on.
                failures[variant] = f"exit {done.returncode}: {done.stderr[-4000:]}"
                print(f"variant {variant!r} FAILED (exit {done.returncode}):\n{done.stderr[-4000:]}", file=sys.stderr)
                continue
            results[variant] = json.loads(lines[-1][len("RESULT ") :])

    setting = (
        f"arch={args.arch} device={args.device} dtype={args.dtype} {args.image_size}px N={args.n_particles} "
        f"k={args.steps} threads={args.threads} torch={torch.__version__} "
        f"loadavg={'/'.join(f'{v:.1f}' for v in os.getloadavg())} cpus={os.cpu_count()}"
    )
    print(setting)
    print(f"{'variant':10s} {'s/step':>9s} {'peak RSS MiB':>13s} {'RSS after load':>15s} {'CUDA peak MiB':>14s}")
    for variant, r in results.items():
        cuda = f"{r['cuda_peak_bytes'] / 2**20:14.1f}" if "cuda_peak_bytes" in r else f"{'-':>14s}"
        print(
            f"{variant:10s} {r['seconds_per_step']:9.4f} {r['peak_rss_bytes'] / 2**20:13.1f} "
            f"{r['rss_after_load_bytes'] / 2**20:15.1f} {cuda}"
        )
    summary: dict[str, Any] = {
        "setting": setting,
        "results": {v: {k: r[k] for k in r if k != "latents"} for v, r in results.items()},
        "failures": failures,
    }
    if set(VARIANTS) <= set(results):
        ours, naive = results["ours"], results["naive"]
        summary["time_ratio_naive_over_ours"] = naive["seconds_per_step"] / ours["seconds_per_step"]
        summary["peak_rss_ratio_naive_over_ours"] = naive["peak_rss_bytes"] / ours["peak_rss_bytes"]
        diff = max(abs(a - b) for a, b in zip(ours["latents"], naive["latents"]))
        scale = max(abs(a) for a in ours["latents"])
        summary["max_abs_latent_difference"] = diff
        summary["max_abs_latent"] = scale
        line = (
            f"ratio naive/ours: time {summary['time_ratio_naive_over_ours']:.2f}x, "
            f"peak RSS {summary['peak_rss_ratio_naive_over_ours']:.2f}x"
        )
        if "cuda_peak_bytes" in ours:
            summary["cuda_peak_ratio_naive_over_ours"] = naive["cuda_peak_bytes"] / ours["cuda_peak_bytes"]
            line += f", CUDA peak {summary['cuda_peak_ratio_naive_over_ours']:.2f}x"
        print(line)
        print(
            f"max |latents(ours) - latents(naive)| after {1 + args.steps} steps: {diff:.3g} (max |latent| {scale:.3g})"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
