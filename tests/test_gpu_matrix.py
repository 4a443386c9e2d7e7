"""benchmarks/gpu_matrix.py: its FLOP count equals FlopCounterMode's, its derived columns follow their definitions,
and the script runs end to end at the tiny size on the CPU (the GPU numbers come from benchmarks/gpu_checks.sh)."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_matrix  # noqa: E402


def test_flop_count_equals_flop_counter_mode_on_a_decoder_backward(tiny_sd_path):
    from torch.utils.flop_counter import FlopCounterMode

    from dwgf.priors.stable_diffusion import StableDiffusionPrior

    prior = StableDiffusionPrior.from_pretrained(tiny_sd_path)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def work():
        with torch.no_grad():
            prior.eps(z, 500)
        zg = z.clone().requires_grad_(True)
        prior.decode(zg).square().sum().backward()

    with FlopCounterMode(display=False) as reference:
        work()
    mode = gpu_matrix._FlopCount()
    with mode:
        work()
    assert type(mode).total == reference.get_total_flops() > 10**7


def test_summary_columns_follow_their_definitions():
    def cell(method, s, batch=1, flops=None, peak=2**30):
        out = {"method": method, "batch": batch, "s_per_step": s, "warmup_s": 1.0, "peak_bytes": peak}
        return out | ({"flop_per_step": flops} if flops else {})

    results = {
        "bf16": {"cells": {"dwgf@B1": cell("dwgf", 0.2, flops=4e13), "naive@B1": cell("naive", 0.3, flops=5e13)}},
        "bf16_compile": {"cells": {"dwgf@B1": cell("dwgf", 0.1), "dwgf@B4": cell("dwgf", 0.3, batch=4, peak=2**32)}},
        "fp32": {"error": "exit 1: out of memory"},
    }
    rows = gpu_matrix.summarise(results, {"bf16_flops": 8e14, "fp32_flops": 5e13, "matmul_size": 8192}, Namespace())
    by = {(r["lever"], r["method"], r.get("batch")): r for r in rows}
    ours = by[("bf16", "dwgf", 1)]
    assert ours["speedup_vs_naive"] == pytest.approx(1.5) and ours["speedup_vs_today"] == pytest.approx(1.0)
    assert ours["achieved_tflops"] == pytest.approx(200) and ours["floor_s"] == pytest.approx(0.05)
    assert ours["ratio_to_floor"] == pytest.approx(4.0)
    assert ours["images_per_hour"] == pytest.approx(3600 / (0.2 * 998))
    compiled = by[("bf16_compile", "dwgf", 1)]
    assert compiled["flop_per_step"] == 4e13 and "counting lever" in compiled["flops_from"]
    assert compiled["speedup_vs_today"] == pytest.approx(2.0)
    batched = by[("bf16_compile", "dwgf", 4)]
    assert batched["flop_per_step"] == 16e13 and batched["peak_bytes_per_image"] == 2**30
    assert batched["images_per_hour"] == pytest.approx(3600 * 4 / (0.3 * 998))
    assert batched["speedup_vs_today"] == pytest.approx(0.2 / (0.3 / 4))
    assert by[("fp32", "*", None)]["error"].startswith("exit 1")
    assert gpu_matrix.best_batches(rows)["dwgf"] is batched
    rates = {"bf16_flops": 8e14, "fp32_flops": 5e13, "matmul_size": 1}
    assert "FAILED: exit 1" in gpu_matrix.markdown(rows, rates, "x")


@pytest.mark.slow
def test_matrix_runs_end_to_end_at_tiny_size(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "gpu_matrix.py"), "--arch", "tiny", "--device", "cpu",
               "--image-size", "64", "--n-particles", "1", "--steps", "1", "--threads", "1",
               "--levers", "fp32,bf16_attn_matmul", "--all-methods-levers", "fp32", "--all-methods", "dwgf,naive",
               "--methods", "dwgf", "--count-levers", "fp32", "--json", str(tmp_path / "m.json"),
               "--markdown", str(tmp_path / "m.md")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(r["lever"], r["method"]): r for r in json.loads((tmp_path / "m.json").read_text())["rows"]}
    assert set(rows) == {("fp32", "dwgf"), ("fp32", "naive"), ("bf16_attn_matmul", "dwgf")}
    for row in rows.values():
        assert row["s_per_step"] > 0 and row["flop_per_step"] > 0 and row["achieved_tflops"] > 0
    assert rows[("fp32", "dwgf")]["speedup_vs_naive"] > 0
    assert rows[("bf16_attn_matmul", "dwgf")]["flops_from"] == "a counting lever of this run"
    # same seeds: the bf16 prior's final latents differ from fp32's by rounding, not by a different algorithm
    reference, bf16 = rows[("fp32", "dwgf")], rows[("bf16_attn_matmul", "dwgf")]
    assert reference["max_abs_latent_diff_vs_fp32"] == 0
    assert 0 < bf16["max_abs_latent_diff_vs_fp32"] < reference["max_abs_latent_fp32"]
    assert "| fp32 | dwgf | 1 |" in (tmp_path / "m.md").read_text()
