"""The speed-lever matrix: seconds per step, achieved TFLOP/s and memory per method x lever (x batch size B).

Not a test. Usage (from the repository root, inside the venv)::

    python benchmarks/gpu_matrix.py --arch sd21 --device cuda --json out.json --markdown out.md   # on a GPU
    python benchmarks/gpu_matrix.py --arch tiny --device cpu --image-size 64 --steps 2            # anywhere

For each lever (a prior dtype plus :mod:`dwgf.priors.performance` options, table :data:`LEVERS`) one worker
process builds the prior (SD-2.1-base shapes with random weights, ``--arch sd21``, or the tiny SD) and, for each
method, measures:

* ``s_per_step``: the slope (T(1 + k) - T(1)) / k of two timed solves after a warm-up solve (set-up, the final
  decode and, with ``compile``, compilation are outside it; the warm-up's wall time is reported as
  ``warmup_s``);
* ``flop_per_step``: FLOPs counted with the formulas of ``torch.utils.flop_counter`` (``flop_registry``, what
  ``FlopCounterMode`` sums) in the same worker, as the difference of a 2-step and a 1-step solve (matmuls,
  convolutions, attention; forward and backward). A lever
  with ``compile`` takes the count of the eager lever of the same run (the compiled graphs hide their ops from the
  counter; the arithmetic is the same), marked ``flops_from``;
* ``achieved_tflops`` = flop_per_step / s_per_step; ``floor_s`` = flop_per_step / the device's bf16 matmul rate
  measured in the same run (``--matmul-size`` square matmuls); ``ratio_to_floor`` = s_per_step / floor_s;
* ``speedup_vs_naive``: s/step of ``naive`` (the official-cost DWGF loop of benchmarks/dwgf_step.py) / s/step of
  the method, when both ran under the lever; ``speedup_vs_today``: s/step of the same method under the lever named
  ``today`` (fp32 and bf16 priors with default options: what the repository ran before these options) / s/step;
* ``peak_bytes``: ``torch.cuda.max_memory_allocated`` of the timed solve (weights included; CUDA) or the worker's
  ``ru_maxrss`` (CPU; process-wide, so only a bound); ``peak_bytes_per_image`` divides by B;
* ``images_per_hour`` at each B: 3600 B / (s_per_step x the method's official step count), one GPU;
* ``max_abs_latent_diff_vs_fp32``: final latents of the timed solve against the ``fp32`` lever's (same seeds).

B > 1 solves B observations at once with the batched solvers (one generator per image). Every worker writes its
results as it finishes, so a lever that fails or runs out of ``--lever-timeout`` costs only itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

METHODS = ("dwgf", "psld", "rlsd", "latent_dps", "naive")
#: official step counts (docs/method.md#hyper-parameters): images/hour uses them.
OFFICIAL_STEPS = {"dwgf": 998, "naive": 998, "psld": 1000, "rlsd": 998, "latent_dps": 1000}
_ALL = ["unet", "decoder", "encoder"]
#: lever -> (prior dtype, prior.performance options). ``fp32`` and ``bf16`` are "today" (no option set).
LEVERS: dict[str, tuple[str, dict[str, Any]]] = {
    "fp32": ("float32", {}),
    "fp32_tf32": ("float32", {"tf32": True}),
    "fp32_tf32_off": ("float32", {"tf32": False}),
    "fp32_fast": ("float32", {"tf32": True, "channels_last": True, "cudnn_benchmark": True}),
    "bf16": ("bfloat16", {}),
    "bf16_channels_last": ("bfloat16", {"channels_last": True}),
    "bf16_cudnn_benchmark": ("bfloat16", {"cudnn_benchmark": True}),
    "bf16_attn_math": ("bfloat16", {"attention": "math"}),
    "bf16_attn_flash": ("bfloat16", {"attention": "flash"}),
    "bf16_attn_efficient": ("bfloat16", {"attention": "efficient"}),
    "bf16_attn_cudnn": ("bfloat16", {"attention": "cudnn"}),
    "bf16_attn_matmul": ("bfloat16", {"attention": "matmul"}),
    "autocast_bf16": ("float32", {"autocast_bf16": True}),
    "bf16_fast": ("bfloat16", {"channels_last": True, "cudnn_benchmark": True}),
    "bf16_compile": ("bfloat16", {"compile": _ALL}),
    "bf16_compile_cudagraphs": ("bfloat16", {"compile": _ALL, "compile_mode": "reduce-overhead"}),
}
TODAY = {"float32": "fp32", "bfloat16": "bf16"}


# -- worker --------------------------------------------------------------------------------------------------------


def build_prior(arch: str, lever: str, device: torch.device, image_size: int, seed: int, model_dir: Path | None):
    """The prior under test: SD-2.1-base shapes with random weights built on the device, or the tiny SD folder."""
    from dwgf.priors.base import scaled_linear_alphas_cumprod
    from dwgf.priors.stable_diffusion import StableDiffusionPrior

    dtype_name, options = LEVERS[lever]
    dtype = getattr(torch, dtype_name)
    if model_dir is not None:
        return StableDiffusionPrior.from_pretrained(model_dir, dtype=dtype, device=device, performance=options)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from dwgf.testing.tiny_sd import SD21_BASE_UNET_CONFIG, SD21_BASE_VAE_CONFIG

    if arch != "sd21":
        raise SystemExit("--arch tiny needs --model-dir (the driver builds one)")
    # Initialised directly on the device (seconds, not the ~12 s of a CPU init): only the cost matters here.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SD21_BASE_UNET_CONFIG).to(dtype=dtype)
        vae = AutoencoderKL(**SD21_BASE_VAE_CONFIG).to(dtype=dtype)
    embedding = torch.randn((1, 77, int(unet.config.cross_attention_dim)), generator=torch.Generator().manual_seed(0))
    return StableDiffusionPrior(
        vae, unet, embedding, scaled_linear_alphas_cumprod(), source={"arch": "sd21-random"}, performance=options
    )


def _problem(image_size: int, batch: int, device: torch.device):
    from dwgf.operators import make_operator
    from dwgf.seeding import make_generator

    operator = make_operator("box_inpainting", image_size)
    x_true = torch.rand((1, 3, image_size, image_size), generator=make_generator(0)) * 2 - 1
    y = operator(x_true).to(device)
    return operator, y.expand(batch, *y.shape[1:]).contiguous()


def _solve(method: str, prior, operator, y, n_particles: int, n_steps: int, seed: int) -> torch.Tensor:
    from dwgf.seeding import make_generator
    from dwgf.solvers import get_solver

    batch = y.shape[0]
    if method == "naive":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from dwgf_step import naive_dwgf

        if batch != 1:
            raise ValueError("the naive official-cost loop solves one image at a time (B = 1)")
        latents, _history = naive_dwgf(
            prior, operator, y, n_particles, make_generator(seed, prior.device), n_steps=n_steps
        )
        return latents
    generators = [make_generator(seed + i, prior.device) for i in range(batch)]
    results = get_solver(method)(prior, operator, y, n_particles, generators, n_steps=n_steps, progress=False)
    return torch.stack([r.latents for r in results])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


class _FlopCount:
    """Sum of ``torch.utils.flop_counter.flop_registry`` formulas over every aten op dispatched (a dispatch mode).

    Why not ``FlopCounterMode`` itself: its per-module tracker installs backward hooks that raise under
    ``torch.autograd.grad`` with respect to a leaf (PSLD, Latent-DPS); the formulas are the same."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        class Mode(TorchDispatchMode):
            total = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    Mode.total += formula(*args, **kwargs, out_val=out)
                return out

        Mode.total = 0
        return Mode()


def count_flops(method, prior, operator, y, n_particles, seed) -> int:
    """FLOPs of one step: the 2-step solve's count minus the 1-step solve's (set-up and final decode cancel)."""
    totals = []
    for n_steps in (1, 2):
        mode = _FlopCount()
        with mode:
            _solve(method, prior, operator, y, n_particles, n_steps, seed)
        totals.append(type(mode).total)
    return int(totals[1] - totals[0])


def measure_cell(args, prior, method: str, batch: int, device: torch.device, count: bool) -> dict[str, Any]:
    """s/step (slope after a warm-up), peak memory, final latents and (``count``) FLOPs of one method at B."""
    operator, y = _problem(args.image_size, batch, device)

    def run(n_steps: int) -> torch.Tensor:
        return _solve(method, prior, operator, y, args.n_particles, n_steps, args.seed)

    warmup = _timed(lambda: run(1), device)
    t_one = _timed(lambda: run(1), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    latents: list[torch.Tensor] = []
    t_many = _timed(lambda: latents.append(run(1 + args.steps)), device)
    cuda = device.type == "cuda"
    cell = {
        "method": method,
        "batch": batch,
        "s_per_step": (t_many - t_one) / args.steps,
        "warmup_s": warmup,
        "peak_bytes": torch.cuda.max_memory_allocated(device)
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_kind": "cuda_max_memory_allocated" if cuda else "process_ru_maxrss",
    }
    if args.latents_dir is not None and batch == 1:
        path = args.latents_dir / f"{args.worker}-{method}.pt"
        torch.save(latents[0].detach().float().cpu(), path)
        cell["latents_file"] = str(path)
    if count and batch == 1:
        cell["flop_per_step"] = count_flops(method, prior, operator, y, args.n_particles, args.seed)
    return cell


def worker(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    start = time.perf_counter()
    prior = build_prior(args.arch, args.worker, device, args.image_size, args.seed, args.model_dir)
    out: dict[str, Any] = {"lever": args.worker, "build_s": time.perf_counter() - start, "cells": {}}
    out["describe_performance"] = prior.describe()["performance"]
    if device.type == "cuda":
        out["cuda_backend_flags"] = prior.describe().get("cuda_backend_flags")
    count = args.count_flops and not LEVERS[args.worker][1].get("compile")
    for method in [m for m in args.methods.split(",") if m]:
        for batch in [int(b) for b in args.batches.split(",")]:
            if method == "naive" and batch > 1:
                continue  # the official-cost loop solves one image at a time
            key = f"{method}@B{batch}"
            try:
                out["cells"][key] = measure_cell(args, prior, method, batch, device, count=count)
            except Exception as error:  # one failed cell must not cost the others (short GPU lease)
                out["cells"][key] = {"method": method, "batch": batch, "error": f"{type(error).__name__}: {error}"}
            print(f"[{args.worker}] {key}: {json.dumps(out['cells'][key])}", file=sys.stderr, flush=True)
    return out


# -- device rate -----------------------------------------------------------------------------------------------------


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 20) -> float:
    """Measured FLOP/s of size x size x size matmuls in ``dtype`` (best of 3 batches of ``repeats``)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        seconds = _timed(lambda: [a @ b for _ in range(repeats)], device)
        best = min(best, seconds)
    return 2 * size**3 * repeats / best


# -- driver ----------------------------------------------------------------------------------------------------------


def summarise(results: dict[str, Any], rates: dict[str, float], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (lever, method, B) with the derived ratios (module docstring)."""
    eager_flops = {}
    for result in results.values():
        for cell in result.get("cells", {}).values():
            if "flop_per_step" in cell:
                eager_flops.setdefault(cell["method"], cell["flop_per_step"])
    rows = []

    def load(cell):  # final latents a worker saved (plain tensors; weights_only refuses anything else)
        path = cell.get("latents_file")
        return torch.load(path, weights_only=True) if path and Path(path).is_file() else None

    reference_latents = {
        c["method"]: load(c) for c in results.get("fp32", {}).get("cells", {}).values() if c.get("batch") == 1
    }
    for lever, result in results.items():
        dtype_name = LEVERS[lever][0]
        cells = result.get("cells", {})
        if "error" in result:
            rows.append({"lever": lever, "method": "*", "batch": None, "error": result["error"]})
            continue
        for cell in cells.values():
            row = {"lever": lever, "dtype": dtype_name, **{k: v for k, v in cell.items() if k != "latents_file"}}
            if "error" in cell:
                rows.append(row)
                continue
            flops = cell.get("flop_per_step")
            if flops is None and cell["batch"] == 1:
                flops, row["flops_from"] = eager_flops.get(cell["method"]), "a counting lever of this run"
            elif flops is None:
                base = eager_flops.get(cell["method"])
                flops, row["flops_from"] = (base * cell["batch"] if base else None), "B x the B = 1 count"
            row["flop_per_step"] = flops
            seconds = cell["s_per_step"]
            if flops and seconds > 0:
                row["achieved_tflops"] = flops / seconds / 1e12
                row["floor_s"] = flops / rates["bf16_flops"]
                row["ratio_to_floor"] = seconds / row["floor_s"]
            naive = cells.get(f"naive@B{cell['batch']}")
            if naive and "s_per_step" in naive and cell["method"] != "naive":
                row["speedup_vs_naive"] = naive["s_per_step"] / seconds
            today = results.get(TODAY.get(dtype_name, ""), {}).get("cells", {}).get(f"{cell['method']}@B1")
            if today and "s_per_step" in today:
                row["speedup_vs_today"] = today["s_per_step"] / (seconds / cell["batch"])
            row["peak_bytes_per_image"] = cell["peak_bytes"] / cell["batch"]
            row["images_per_hour"] = 3600 * cell["batch"] / (seconds * OFFICIAL_STEPS[cell["method"]])
            ref, mine = reference_latents.get(cell["method"]), load(cell) if cell["batch"] == 1 else None
            if ref is not None and mine is not None and ref.shape == mine.shape:
                row["max_abs_latent_diff_vs_fp32"] = float((mine - ref).abs().max())
                row["max_abs_latent_fp32"] = float(ref.abs().max())
            rows.append(row)
    return rows


def best_batches(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: the (lever, B) with the most images/hour."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "images_per_hour" in row and row["images_per_hour"] > best.get(row["method"], {}).get("images_per_hour", 0):
            best[row["method"]] = row
    return best


def markdown(rows: list[dict[str, Any]], rates: dict[str, float], setting: str) -> str:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [
        f"Setting: {setting}",
        "",
        f"Measured matmul rate in this run: bf16 {rates['bf16_flops'] / 1e12:.4g} TFLOP/s, fp32 "
        f"{rates['fp32_flops'] / 1e12:.4g} TFLOP/s ({rates['matmul_size']}^3). Floor = FLOPs / the bf16 rate.",
        "",
        "| lever | method | B | s/step | TFLOP/step | achieved TFLOP/s | ratio to floor | vs naive | vs today "
        "| images/h | peak GiB/image | max Δlatent vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['lever']} | {r['method']} | {r.get('batch')} | FAILED: {r['error'][:120]} |")
            continue
        tflop = r["flop_per_step"] / 1e12 if r.get("flop_per_step") else None
        lines.append(
            f"| {r['lever']} | {r['method']} | {r['batch']} | {r['s_per_step']:.4f} | {fmt(tflop, '.4g')}"
            f" | {fmt(r.get('achieved_tflops'), '.4g')} | {fmt(r.get('ratio_to_floor'), '.2f')}"
            f" | {fmt(r.get('speedup_vs_naive'), '.2f')} | {fmt(r.get('speedup_vs_today'), '.2f')}"
            f" | {r['images_per_hour']:.2f} | {r['peak_bytes_per_image'] / 2**30:.2f}"
            f" | {fmt(r.get('max_abs_latent_diff_vs_fp32'), '.3g')} |"
        )
    best = best_batches(rows)
    if best:
        lines += ["", "Best images/hour per method (one device): " + "; ".join(
            f"{m} {r['images_per_hour']:.2f} ({r['lever']}, B = {r['batch']})" for m, r in best.items()
        )]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="tiny", choices=("tiny", "sd21"))
    parser.add_argument("--image-size", type=int, default=None, help="default 512 (sd21) / 64 (tiny)")
    parser.add_argument("--n-particles", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="timed steps k (default 6)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levers", default="fp32,bf16", help=f"comma-separated subset of {','.join(LEVERS)}")
    parser.add_argument("--methods", default="dwgf,naive", help=f"methods for every lever ({','.join(METHODS)})")
    parser.add_argument(
        "--all-methods-levers", default="fp32,bf16", help="levers that time every method of --all-methods"
    )
    parser.add_argument("--all-methods", default=",".join(METHODS))
    parser.add_argument("--batches", default="1", help="comma-separated B values for --batch-levers (default 1)")
    parser.add_argument("--batch-levers", default="", help="levers that also time B > 1 (DWGF only)")
    parser.add_argument("--matmul-size", type=int, default=None, help="default 8192 (cuda) / 512 (cpu)")
    parser.add_argument("--lever-timeout", type=float, default=600, help="seconds per lever worker")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="start no lever after this many seconds; the rest are skipped"
    )
    parser.add_argument("--model-dir", type=Path, default=None, help="load this SD folder instead of building")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--worker", choices=tuple(LEVERS), help=argparse.SUPPRESS)
    parser.add_argument("--latents-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--count-levers", default="fp32,bf16", help="levers whose workers count FLOPs (the others reuse the count)"
    )
    args = parser.parse_args(argv)
    if args.image_size is None:
        args.image_size = 512 if args.arch == "sd21" else 64
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch.cuda.is_available() is False")
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return 0

    levers = [lever for lever in args.levers.split(",") if lever]
    unknown = sorted(set(levers) - set(LEVERS))
    if unknown:
        raise SystemExit(f"--levers: unknown {unknown}; choose from {list(LEVERS)}")
    device = torch.device(args.device)
    size = args.matmul_size or (8192 if device.type == "cuda" else 512)
    rates = {
        "bf16_flops": matmul_rate(device, torch.bfloat16, size),
        "fp32_flops": matmul_rate(device, torch.float32, size),
        "matmul_size": size,
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{args.threads} threads"
    setting = (
        f"arch={args.arch} device={name} {args.image_size}px N={args.n_particles} k={args.steps} "
        f"torch={torch.__version__} loadavg={'/'.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print(setting, flush=True)
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dwgf_matrix_") as tmp:
        model_dir = args.model_dir
        if model_dir is None and args.arch == "tiny":
            from dwgf.testing.tiny_sd import build_tiny_sd

            model_dir = build_tiny_sd(Path(tmp) / "tiny_sd", seed=args.seed, sample_size=args.image_size)
        began = time.perf_counter()
        for lever in levers:
            left = None if args.budget_s is None else args.budget_s - (time.perf_counter() - began)
            if left is not None and left < 15:
                results[lever] = {"error": f"skipped: --budget-s {args.budget_s} spent before this lever"}
                continue
            methods = args.all_methods if lever in args.all_methods_levers.split(",") else args.methods
            batches = args.batches if lever in args.batch_levers.split(",") else "1"
            command = [sys.executable, __file__, "--worker", lever, "--methods", methods, "--batches", batches]
            if lever in args.count_levers.split(","):
                command += ["--count-flops"]
            for key in ("arch", "device", "image_size", "n_particles", "steps", "threads", "seed"):
                command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            if model_dir is not None:
                command += ["--model-dir", str(model_dir)]
            command += ["--latents-dir", tmp]
            start = time.perf_counter()
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=min(args.lever_timeout, left or float("inf")),
                    env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
                )  # fmt: skip
                lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if done.returncode or not lines:
                    results[lever] = {"error": f"exit {done.returncode}: {done.stderr[-2000:]}"}
                else:
                    results[lever] = json.loads(lines[-1][len("RESULT ") :])
                sys.stderr.write(done.stderr[-6000:])
            except subprocess.TimeoutExpired as error:
                results[lever] = {
                    "error": f"timed out after {args.lever_timeout} s",
                    "stderr": str(error.stderr)[-2000:],
                }
            results[lever]["wall_s"] = time.perf_counter() - start
            print(f"lever {lever}: {results[lever]['wall_s']:.1f} s", flush=True)
            rows = _write(args, setting, rates, results)  # while the workers' latents files still exist
    print(markdown(rows, rates, setting))
    return 1 if any("error" in r for r in rows) else 0


def _write(args, setting, rates, results) -> list[dict[str, Any]]:
    rows = summarise(results, rates, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        slim = {lever: {k: v for k, v in r.items() if k != "cells"} for lever, r in results.items()}
        payload = {"setting": setting, "matmul_rates": rates, "rows": rows, "levers": slim, "definitions": LEVERS}
        args.json.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows, rates, setting))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
