"""``dwgf solve-batch`` (``solve_jobs: per_method_task``): every variant of one method x task in one process writes
the bytes and records that one ``dwgf solve`` job per shard writes; the plan's groups cover every shard once.

Uses the tiny test-bed problem of tests/test_cli.py (2 crops, 64 px, 1-component prior).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from dwgf.pipeline.config import DEFAULT_CONFIG, load_config
from dwgf.pipeline.plan import Plan
from dwgf.provenance import config_hash, read_record

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import IDS, data_files, root, run, solve_spec  # noqa: E402, F401  (root is a fixture)

#: Units of one method x task as the plan builds them: the main run and two ablation variants, one of them on the
#: first image only (as the demo's γ ablation).
UNITS = [
    (solve_spec(method="rlsd", variant="main", hyper={"lr_z": 0.2}), IDS),
    (solve_spec(method="rlsd", variant="n_steps-5", n_steps=5, hyper={"lr_z": 0.2}), IDS),
    (solve_spec(method="rlsd", variant="lr_z-0.5", hyper={"lr_z": 0.5}), IDS[:1]),
]


def images_folder(results: Path, variant: str) -> Path:
    return results / "solve" / "rlsd" / "sr8" / variant / "images"


def out_of(results: Path, spec: dict) -> str:
    return f"{results}/solve/rlsd/sr8/{spec['variant']}/shard-000.prov.json"


def batch_spec(results: Path) -> dict:
    return {
        "prior": f"{results}/prior/prior.prov.json",
        "observations": f"{results}/obs/o.prov.json",
        "units": [{"spec": spec, "ids": list(ids), "out": out_of(results, spec)} for spec, ids in UNITS],
    }


@pytest.fixture
def pair(root, tmp_path) -> tuple[Path, Path]:  # noqa: F811
    """Two private copies of the module's results: one for per-shard jobs, one for the grouped job."""
    shards, grouped = tmp_path / "shards" / "t", tmp_path / "grouped" / "t"
    shutil.copytree(root, shards)
    shutil.copytree(root, grouped)
    return shards, grouped


def record_without_times(path: Path) -> dict:
    """A shard record's content that must not depend on how the solves were split into processes: all but its
    times, and the hashes of the per-image JSON records (which hold each image's runtime)."""
    record = read_record(path)
    for key in ("started_at", "finished_at", "peak_memory_bytes", "environment", "code"):
        record.pop(key, None)
    record["outputs"] = {k: (None if k.endswith(".json") else v) for k, v in record["outputs"].items()}
    return record


def test_grouped_solve_writes_the_bytes_and_records_of_per_shard_solves(pair):
    shards, grouped = pair
    for spec, ids in UNITS:  # one `dwgf solve` process per shard, as rule `solve`
        run(
            "solve", spec, shards, "--prior", f"{shards}/prior/prior.prov.json", "--observations",
            f"{shards}/obs/o.prov.json", "--ids", ",".join(ids), "--out", out_of(shards, spec), "--no-progress",
            "--batch-images", "2",
        )  # fmt: skip
    run("solve-batch", batch_spec(grouped), grouped, "--no-progress", "--batch-images", "2")

    for spec, ids in UNITS:
        variant = spec["variant"]
        expected, got = data_files(images_folder(shards, variant)), data_files(images_folder(grouped, variant))
        assert got == expected and len(got) == len(ids) * (1 + spec["n_particles"]), variant
        for image_id in ids:
            a = json.loads((images_folder(shards, variant) / f"{image_id}.json").read_text())
            b = json.loads((images_folder(grouped, variant) / f"{image_id}.json").read_text())
            assert b["spec_sha256"] == a["spec_sha256"] == config_hash(spec)
            for key in ("files", "inputs", "seed", "status", "hyper", "n_steps", "diverged_at_step", "batch_images"):
                assert b[key] == a[key], (variant, key)
        a, b = record_without_times(Path(out_of(shards, spec))), record_without_times(Path(out_of(grouped, spec)))
        assert b["step"] == "solve" and b["config_sha256"] == config_hash(spec)
        assert b == a, variant
    # the unit on one image did not solve the other
    assert not (images_folder(grouped, "lr_z-0.5") / f"{IDS[1]}.json").exists()


def test_grouped_solve_resumes_per_unit(pair):
    _, grouped = pair
    run("solve-batch", batch_spec(grouped), grouped, "--no-progress")
    folder = images_folder(grouped, "n_steps-5")
    (folder / f"{IDS[1]}.json").unlink()  # as if killed while that image's files were written
    Path(out_of(grouped, UNITS[1][0])).unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in images_folder(grouped, "main").iterdir()}
    before = data_files(folder)
    run("solve-batch", batch_spec(grouped), grouped, "--no-progress")
    assert {p.name: p.stat().st_mtime_ns for p in images_folder(grouped, "main").iterdir()} == kept  # not redone
    assert data_files(folder) == before  # the re-solved image has its original bytes
    assert Path(out_of(grouped, UNITS[1][0])).is_file()


def test_solve_batch_refuses_an_empty_batch(root):  # noqa: F811
    spec = {"prior": f"{root}/prior/prior.prov.json", "observations": f"{root}/obs/o.prov.json", "units": []}
    with pytest.raises(ValueError, match="units"):
        run("solve-batch", spec, root)


def demo_plan(solve_jobs: str) -> Plan:
    config = load_config(DEFAULT_CONFIG, {"suite": "demo"})
    config["suites"]["demo"]["solve_jobs"] = solve_jobs
    return Plan(config)


def test_plan_groups_cover_every_shard_once_with_its_own_spec():
    plan = demo_plan("per_method_task")
    assert plan.solve_jobs_mode == "per_method_task"
    assert demo_plan("per_shard").solve_jobs_mode == "per_shard"
    groups = plan.solve_groups()
    assert sorted(groups) == sorted({(m, t) for m in plan.methods for t in plan.tasks})
    records = [r for m, t in groups for r in plan.solve_group_records(m, t)]
    expected = [
        plan.path("shard", method=j.method, task=j.task, variant=j.variant, shard=j.shard) for j in plan.solve_jobs()
    ]
    assert sorted(records) == sorted(expected) and len(set(records)) == len(records)
    for method, task in groups:
        batch = plan.solve_batch_spec(method, task)
        assert batch["observations"] == plan.path("observations", task=task)
        for unit in batch["units"]:
            variant = unit["spec"]["variant"]
            assert unit["spec"] == plan.solve_spec(method, task, variant)  # the per-shard rule's spec, unchanged
            shard = unit["out"].rsplit("shard-", 1)[1].split(".")[0]
            assert unit["ids"] == plan.shard_ids(method, task, variant, shard)
        assert plan.solve_group_priority(method, task) == sum(
            u["spec"]["n_steps"] * len(u["ids"]) for u in batch["units"]
        )
    # DWGF carries the demo's ablations: its groups are the longest, so they start first
    priorities = {group: plan.solve_group_priority(*group) for group in groups}
    assert max(priorities, key=priorities.get)[0] == "dwgf"
