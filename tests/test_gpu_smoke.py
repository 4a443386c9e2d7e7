"""The paper-shaped ``gpu_smoke`` DAG at its CPU size (suite ``gpu_smoke_cpu``), end to end through Snakemake.

SD-2.1-base architecture with random weights: ``build_random_weights`` writes the diffusers folder (~5.2 GB) and
a lock with its sha256s, ``acquire_weights`` checks every file against it (the real local path), then 2 images at
256 px, box + SR x8, all four methods (N = 1, one step), one ablation, every metric, tables, plots and
``dwgf verify``. Budget: <= 15 min on 2 cores (the CPU seconds of the run are printed). The GPU-sized suite
``gpu_smoke`` is the same DAG at 512 px (benchmarks/gpu_checks.sh).
"""

from __future__ import annotations

import json
import resource
import shutil

import numpy as np
import pytest
import yaml
from audit_smoke import REPO, run

SUITE = "gpu_smoke_cpu"
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))["suites"][SUITE]


def _snakemake(workdir, *targets):
    command = ["snakemake", "-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"), "-c", "2",
               *targets, "--config", f"suite={SUITE}"]  # fmt: skip
    return run(command, workdir, timeout=3600)


@pytest.mark.slow
def test_gpu_smoke_cpu_dag_runs_every_rule_at_sd21_architecture(tmp_path):
    from dwgf.metrics.schema import read_metrics

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        _snakemake(tmp_path)
        verify = _snakemake(tmp_path, "verify")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        print(f"gpu_smoke_cpu: {cpu_s:.0f} CPU-s for the DAG and verify")
        root = tmp_path / "results" / SUITE

        # the weights went through the real acquire path: every lock file hashed into the manifest, and matching
        lock = yaml.safe_load((tmp_path / CONFIG["prior"]["lock"]).read_text())
        manifest = json.loads((tmp_path / CONFIG["prior"]["dest"] / "MANIFEST.sha256.json").read_text())
        assert set(lock["model"]["files"]) == set(manifest["files"]) and len(lock["model"]["files"]) == 12
        for name, digest in lock["model"]["files"].items():
            assert manifest["files"][name]["sha256"] == digest, name
        assert manifest["files"]["unet/diffusion_pytorch_model.safetensors"]["size"] > 3_000_000_000  # SD-2.1 UNet
        descriptor = json.loads((root / "prior" / "stable_diffusion.json").read_text())
        assert descriptor["performance"]["compile"] == [] and descriptor["schema"] == "dwgf.sd-prior/1"

        metrics = read_metrics(root / "metrics.parquet")
        assert set(metrics["method"]) == set(CONFIG["methods"]) and set(metrics["task"]) == set(CONFIG["tasks"])
        psnr = metrics[(metrics["metric"] == "psnr") & (metrics["protocol"] == "standard") & (metrics["particle"] >= 0)]
        assert len(psnr) >= len(CONFIG["methods"]) * len(CONFIG["tasks"]) * len(CONFIG["data"]["ids"])
        assert np.isfinite(psnr["value"].astype(float)).all()
        sets = read_metrics(root / "set_metrics.parquet")
        assert set(sets["metric"]) == {"fid", "kid"}
        assert np.isfinite(sets["value"].astype(float)).all()  # two images per set: both are computable

        main = (root / "tables" / "main.md").read_text()
        for method in CONFIG["methods"].values():
            assert sum(line.startswith(f"| {method['label']} |") for line in main.splitlines()) == 1
        numbers = [float(cell) for line in main.splitlines() if line.startswith("| ")
                   for cell in line.strip("|").split("|")[1:] if _is_number(cell)]  # fmt: skip
        assert numbers and np.isfinite(numbers).all()
        for png in [root / "plots" / "ablation-gamma.png", *(root / "plots").glob("qualitative-*.png")]:
            assert png.stat().st_size > 1000, png
        report = json.loads((root / "audit" / "verify.json").read_text())
        assert report["ok"] is True, verify.stdout[-2000:]  # (a failing verify also exits non-zero: run() raises)
    finally:
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # ~5 GB of random weights


def _is_number(cell: str) -> bool:
    text = cell.strip().split(" ")[0].replace("**", "")
    try:
        float(text)
    except ValueError:
        return False
    return True
