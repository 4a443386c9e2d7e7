"""Does a bfloat16 prior change DWGF's results? PSNR of bf16 against fp32 outputs, on the CPU.

Not a test. The measurement behind the suites' ``dtype`` default (benchmarks/README.md, "bf16 decision"): the same
problems, seeds and solver, once with the prior in float32 and once in bfloat16 (weights in bf16; latents, gradients
and Adam state stay float32 in the solver) and once with ``autocast_bf16`` (float32 weights, bf16 ops; SD only).

* test bed: the exact-posterior Gaussian-mixture prior fitted on bundled crops (docs/testbed.md), 64 px held-out
  crops, box and SR x8, DWGF at the demo's settings (N = 4, 60 steps, lr 0.1);
* tiny SD: the random-weight tiny Stable Diffusion (dwgf.testing.tiny_sd), same crops and tasks, 20 steps.

Per (prior, task, image) it prints PSNR (standard protocol: clamped, 8 bit) of the particles against the ground truth
in each dtype, the difference, and PSNR of the bf16 particles against the fp32 particles (how far apart the two
runs end up). Criterion from the issue: |ΔPSNR vs ground truth| <= 0.1 dB.

    python benchmarks/bf16_decision.py [--images 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TASKS = {"box": ("box_inpainting", {"box": "half_face"}), "sr8": ("sr_avgpool", {"factor": 8})}


def _problems(ids: list[str], size: int, seed: int):
    from dwgf.data.bundled import load_crop
    from dwgf.operators import add_measurement_noise, make_operator

    for task, (name, params) in TASKS.items():
        operator = make_operator(name, size, **params)
        for index, image_id in enumerate(ids):
            x = load_crop(image_id, size).unsqueeze(0)
            noise = torch.Generator().manual_seed(seed + index)
            y = operator.zero_unmeasured(add_measurement_noise(operator(x), 0.001, noise))
            yield task, image_id, operator, x, y


def _run(prior, operator, y, steps: int, lr: float, seed: int) -> torch.Tensor:
    from dwgf.seeding import make_generator
    from dwgf.solvers import get_solver

    result = get_solver("dwgf")(prior, operator, y, 4, make_generator(seed), n_steps=steps, progress=False, lr=lr)
    return result.particles.float()


def compare(name: str, priors: dict[str, Any], ids: list[str], steps: int, lr: float) -> list[dict[str, Any]]:
    from dwgf.metrics.image import psnr_standard

    rows = []
    for task, image_id, operator, x, y in _problems(ids, 64, seed=7):
        outputs = {label: _run(prior, operator, y, steps, lr, seed=11) for label, prior in priors.items()}
        reference = outputs["fp32"]
        truth = x.expand_as(reference)
        row: dict[str, Any] = {"prior": name, "task": task, "image": image_id}
        row["psnr_fp32"] = float(psnr_standard(reference, truth).mean())
        for label, particles in outputs.items():
            if label == "fp32":
                continue
            row[f"psnr_{label}"] = float(psnr_standard(particles, truth).mean())
            row[f"delta_psnr_{label}"] = row[f"psnr_{label}"] - row["psnr_fp32"]
            row[f"psnr_{label}_vs_fp32"] = float(psnr_standard(particles, reference).mean())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from dwgf.priors.gaussian_mixture import GaussianMixturePrior
    from dwgf.priors.stable_diffusion import StableDiffusionPrior
    from dwgf.testing.tiny_sd import build_tiny_sd

    start = time.process_time()
    testbed, _train, test_ids = GaussianMixturePrior.fit_bundled(n_per_image=400, image_size=64, n_test=16, seed=0,
                                                                 n_components=8)  # fmt: skip
    ids = test_ids[: args.images]
    testbed_bf16 = copy.deepcopy(testbed).to(dtype=torch.bfloat16)
    rows = compare("testbed", {"fp32": testbed, "bf16": testbed_bf16}, ids, steps=60, lr=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_sd(Path(tmp) / "tiny", seed=0, sample_size=64)
        priors = {
            "fp32": StableDiffusionPrior.from_pretrained(folder),
            "bf16": StableDiffusionPrior.from_pretrained(folder, dtype="bfloat16"),
            "autocast": StableDiffusionPrior.from_pretrained(folder, performance={"autocast_bf16": True}),
        }
        rows += compare("tiny_sd", priors, ids, steps=20, lr=1.0)
    summary: dict[str, Any] = {"rows": rows, "cpu_seconds": time.process_time() - start}
    for name in ("testbed", "tiny_sd"):
        for key in sorted({k for r in rows if r["prior"] == name for k in r if k.startswith("delta_psnr_")}):
            values = [abs(r[key]) for r in rows if r["prior"] == name]
            summary[f"{name}_max_abs_{key}"] = max(values)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
