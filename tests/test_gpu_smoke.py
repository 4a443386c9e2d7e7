"""The paper-shaped ``gpu_smoke`` DAG at its CPU size (suite ``gpu_smoke_cpu``), end to end through Snakemake.

SD-2.1-base architecture with random weights: ``build_random_weights`` writes the diffusers folder (~5.2 GB) and
a lock with its sha256s, ``acquire_weights`` checks every file against it (the real local path), then 2 images at
256 px, box + SR x8, all four methods (N = 1, one step), one ablation, every metric, tables, plots and
``dwgf verify``. Budget: <= 15 min on 2 cores (the CPU seconds of the run are printed). The GPU-sized suite
``gpu_smoke`` is the same DAG at 512 px (benchmarks/gpu_checks.sh).
"""

from __future__ import annotations

import json
import re
import resource
import shutil

import numpy as np
import pytest
import yaml
from audit_smoke import REPO, run

from dwgf.reporting.tables import flatten_markdown

SUITE = "gpu_smoke_cpu"
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))["suites"][SUITE]


def test_random_weights_reach_the_solver_with_the_suite_speed_options(tmp_path):
    # build-random-sd (tiny) -> lock -> acquire-weights (local path) -> prior/stable_diffusion.json -> the prior a
    # solve job loads, with prior.performance applied and recorded
    from dwgf.cli import main
    from dwgf.pipeline.data_steps import acquire_weights
    from dwgf.pipeline.solve import load_pipeline_prior

    built, lock = tmp_path / "built", tmp_path / "lock.yaml"
    assert (
        main(["build-random-sd", "--arch", "tiny", "--image-size", "64", "--out", str(built), "--lock", str(lock)]) == 0
    )
    assert not (tmp_path / "built.partial").exists()
    files = yaml.safe_load(lock.read_text())["model"]["files"]
    assert len(files) == 12 and all(len(digest) == 64 for digest in files.values())
    root = tmp_path / "results"
    prior = {"kind": "stable_diffusion", "lock": str(lock), "dest": str(tmp_path / "dest"), "source": "local",
             "local_dir": str(built), "performance": {"channels_last": True, "attention": "matmul"}}  # fmt: skip
    spec = {"suite": "t", "seed": 0, "image_size": 64, "device": "cpu", "dtype": "float32", "prior": prior}
    record = acquire_weights(spec, root, root / "prior" / "prior.prov.json")
    assert record["extra"]["prior"]["folder"] == "prior"
    loaded, _ = load_pipeline_prior(root, root / "prior" / "prior.prov.json", "cpu", "float32")
    assert loaded.performance.channels_last and loaded.performance.attention == "matmul"
    assert loaded.describe()["path"] == str((tmp_path / "dest").resolve())
    # a file that differs from the lock stops the acquisition, naming it
    (built / "vae" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="vae/config.json"):
        acquire_weights(spec, root, root / "prior" / "again.prov.json")


def test_random_init_needs_the_local_source(tmp_path):
    from dwgf.pipeline.config import validate_config

    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    config["suites"][SUITE]["prior"]["source"] = "hub"
    with pytest.raises(ValueError, match="prior"):
        validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")


def test_gpu_smoke_has_the_paper_suite_shape():
    from dwgf.pipeline.plan import Plan

    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    gpu, paper = config["suites"]["gpu_smoke"], config["suites"]["paper"]
    assert gpu["image_size"] == paper["image_size"] == 512 and gpu["device"] == "cuda"
    assert gpu["tasks"] == {k: {**v, "label": gpu["tasks"][k]["label"]} for k, v in paper["tasks"].items()}
    paper_rows = {m: s for m, s in paper["methods"].items() if s.get("enabled", True)}  # opt-in rows stay off
    assert set(gpu["methods"]) == set(paper_rows)
    for method, settings in paper_rows.items():  # the paper's per-task settings, only fewer steps
        assert gpu["methods"][method].get("per_task") == settings.get("per_task")
        assert gpu["methods"][method].get("official") == settings.get("official")
        assert gpu["methods"][method].get("hyper") == settings.get("hyper")
    assert gpu["prior"]["random_init"] == {"arch": "sd21", "seed": 0}
    plan = Plan({**config, "suite": "gpu_smoke"})
    assert len(plan.ids) == 2 and all(image_id.endswith("-r0000-c0000") for image_id in plan.ids)


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

        main = flatten_markdown((root / "tables" / "main.md").read_text())  # the per-task sections, joined
        for method in CONFIG["methods"].values():
            assert sum(line.startswith(f"| {method['label']} |") for line in main.splitlines()) == 1
        rows = [line for line in main.splitlines() if line.startswith("| ") and not line.startswith("| method")]
        cells = [cell for line in rows for cell in line.strip("|").split("|")[1:]]
        numbers = [float(x) for cell in cells for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", cell)]
        assert not any(re.search(r"\b(nan|inf)\b", cell, re.IGNORECASE) for cell in cells), rows
        assert numbers and np.isfinite(numbers).all()
        for png in [root / "plots" / "ablation-gamma.png", *(root / "plots").glob("qualitative-*.png")]:
            assert png.stat().st_size > 1000, png
        report = json.loads((root / "audit" / "verify.json").read_text())
        assert report["ok"] is True, verify.stdout[-2000:]  # (a failing verify also exits non-zero: run() raises)
    finally:
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # ~5 GB of random weights
