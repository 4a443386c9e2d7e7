"""dwgf verify / dwgf trace.

Fast tests build a miniature results folder with the real :class:`dwgf.provenance.Recorder` (the record layout of
dwgf.pipeline: acquire-images -> observe -> solve (+ per-image records) -> evaluate -> aggregate -> tables) and
tamper with it. The end-to-end tests (marked ``slow``) run the smoke suite once with Snakemake (tests/audit_smoke.py)
and check detection, the printed repair command, and reproducibility of checksums across two runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from audit_smoke import REPO, copy_workdir, resumed_workdir, run, smoke_workdir

from dwgf.audit import LINK_COLUMNS, ResultsIndex, format_trace, trace, verify_results
from dwgf.audit.root import ROOT_RECORD, SEAL_STEP
from dwgf.cli import main
from dwgf.io import atomic_write_json, sha256_file
from dwgf.provenance import Recorder, read_record
from dwgf.reporting.tables import flatten_markdown

IDS = ("img-a", "img-b")
PARTICLES = 2


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def build_results(root: Path) -> Path:
    """A miniature, internally consistent results/<suite> folder (one method, one task, two images)."""
    rng = np.random.default_rng(0)
    base = {"suite": "mini", "seed": 3}
    images = {i: _write(root / "data" / "images" / f"{i}.png", rng.bytes(64)) for i in IDS}
    rec = Recorder("acquire-images", root, {**base, "source": "bundled", "ids": list(IDS)})
    rec.extra["images"] = {i: f"data/images/{i}.png" for i in IDS}
    rec.write(root / "data" / "images.prov.json", outputs=images.values())

    prior_file = _write(root / "prior" / "testbed_prior.safetensors", rng.bytes(128))
    rec = Recorder("fit-prior", root, {**base, "prior": {"kind": "gaussian_mixture"}}, seeds={"fit": 0})
    rec.extra["prior"] = {"kind": "gaussian_mixture", "folder": "prior"}
    rec.write(root / "prior" / "prior.prov.json", outputs=[prior_file])

    task = {"name": "box", "operator": "box_inpainting", "params": {}, "sigma_y": 0.001}
    obs_dir = root / "observations" / "box"
    obs_dir.mkdir(parents=True)
    outputs = []
    for i in IDS:
        np.savez(obs_dir / f"{i}.npz", y=rng.normal(size=(1, 3, 4, 4)))
        outputs += [obs_dir / f"{i}.npz", _write(obs_dir / f"{i}.png", rng.bytes(32))]
    rec = Recorder(
        "observe", root, {**base, "task": task, "ids": list(IDS)}, seeds={i: 100 + k for k, i in enumerate(IDS)}
    )
    rec.extra.update({"task": "box", "operator": {"name": "box_inpainting", "params": {}}})
    rec.extra["images"] = {i: {"npz": f"observations/box/{i}.npz", "png": f"observations/box/{i}.png"} for i in IDS}
    rec.write(
        obs_dir / "observe.prov.json", outputs=outputs, inputs=[root / "data" / "images.prov.json", *images.values()]
    )

    spec = {
        **base,
        "method": "dwgf",
        "variant": "main",
        "task": task,
        "n_particles": PARTICLES,
        "n_steps": 3,
        "hyper": {},
    }
    folder = root / "solve" / "dwgf" / "box" / "main" / "images"
    outputs, index = [], {}
    for k, i in enumerate(IDS):
        files = {"npz": _write(folder / f"{i}.npz", rng.bytes(96))}
        files.update({f"p{j}": _write(folder / f"{i}_p{j}.png", rng.bytes(40)) for j in range(PARTICLES)})
        image_record = {
            "schema": "dwgf.solve_image/1",
            "image_id": i,
            "seed": 200 + k,
            "status": "ok",
            "runtime_s": 1.5,
            "hyper": {"gamma": 0.15},
            "n_steps": 3,
            "file_names": {name: p.name for name, p in files.items()},
            "files": {p.name: sha256_file(p) for p in files.values()},
        }
        atomic_write_json(folder / f"{i}.json", image_record)
        outputs += [folder / f"{i}.json", *files.values()]
        index[i] = {
            "record": f"solve/dwgf/box/main/images/{i}.json",
            "status": "ok",
            "files": {name: f"solve/dwgf/box/main/images/{p.name}" for name, p in files.items()},
        }
    rec = Recorder("solve", root, spec, seeds={i: 200 + k for k, i in enumerate(IDS)})
    rec.extra["images"] = index
    shard = root / "solve" / "dwgf" / "box" / "main" / "shard-000.prov.json"
    inputs = [root / "prior" / "prior.prov.json", obs_dir / "observe.prov.json", *(obs_dir / f"{i}.npz" for i in IDS)]
    rec.write(shard, outputs=outputs, inputs=inputs)

    rows = []
    for i in IDS:
        keys = {"suite": "mini", "level": "image", "task": "box", "method": "dwgf", "variant": "main", "image_id": i}
        keys["observation_sha256"] = _sha(obs_dir / f"{i}.npz")
        keys["run_sha256"] = _sha(folder / f"{i}.npz")  # the particles (dwgf.metrics.schema)
        for particle in [*range(PARTICLES), -1]:  # -1: the particle-mean image, not part of a table cell
            for metric, protocol, value in (
                ("psnr", "standard", 20.0 + rng.normal()),
                ("psnr", "repo", 21.0 + rng.normal()),
                ("ssim", "standard", 0.5 + 0.1 * rng.normal()),
            ):
                rows.append({**keys, "particle": particle, "metric": metric, "protocol": protocol, "value": value})
        rows.append({**keys, "particle": None, "metric": "runtime_s", "protocol": "wall", "value": 1.5 + k})
    for row in rows:
        row["status"] = "ok"
    frame = pd.DataFrame(rows).astype({"particle": "Int64"})
    shard_parquet = root / "metrics" / "dwgf" / "box" / "main" / "shard-000.parquet"
    shard_parquet.parent.mkdir(parents=True)
    frame.to_parquet(shard_parquet, index=False)
    rec = Recorder("evaluate", root, {**base, "method": "dwgf", "task": task, "variant": "main"})
    evaluate_inputs = [shard, *images.values(), *(folder / f"{i}.npz" for i in IDS)]
    rec.write(
        root / "metrics" / "dwgf" / "box" / "main" / "shard-000.parquet.prov.json", [shard_parquet], evaluate_inputs
    )

    set_keys = {"suite": "mini", "level": "set", "task": "box", "method": "dwgf", "variant": "main", "image_id": None}
    set_rows = [
        {**set_keys, "particle": None, "metric": "fid", "protocol": "clean-fid", "value": 123.0, "status": "ok"}
    ]
    set_frame = pd.DataFrame(set_rows, columns=frame.columns).astype({"particle": "Int64"})
    set_parquet = root / "set_metrics" / "dwgf" / "box" / "main.parquet"
    set_parquet.parent.mkdir(parents=True)
    set_frame.to_parquet(set_parquet, index=False)
    particle_pngs = [folder / f"{i}_p{j}.png" for i in IDS for j in range(PARTICLES)]
    rec = Recorder("set-metrics", root, {**base, "method": "dwgf", "task": "box", "variant": "main"})
    rec.write(set_parquet.parent / "main.parquet.prov.json", [set_parquet], [shard, *images.values(), *particle_pngs])

    frame.to_parquet(root / "metrics.parquet", index=False)
    set_frame.to_parquet(root / "set_metrics.parquet", index=False)
    rec = Recorder("aggregate", root, base)
    aggregated = [root / "metrics.parquet", root / "set_metrics.parquet"]
    rec.write(root / "aggregate.prov.json", outputs=aggregated, inputs=[shard_parquet, set_parquet])

    table = _write(root / "tables" / "main.md", b"| method | psnr |\n")
    rec = Recorder("tables", root, base)
    rec.extra["cell"] = "mean over images of the per-image mean over particles"
    rec.write(root / "tables" / "tables.prov.json", outputs=[table], inputs=[root / "metrics.parquet"])
    _write(root / "logs" / "solve" / "x.log", b"not recorded by design\n")
    write_root_record(root, {"suite": "mini"})
    return root


def write_root_record(root: Path, config: dict, expected: list[str] | None = None) -> Path:
    """The suite's root record (as `dwgf seal` writes it) over every record under ``root``; ``expected`` defaults to
    those records (the miniature has no plan)."""
    records = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.prov.json") if p.parent.name != "run")
    rec = Recorder(SEAL_STEP, root, config)
    rec.extra["expected"] = sorted({*(records if expected is None else expected), ROOT_RECORD})
    rec.write(root / ROOT_RECORD, outputs=[], inputs=[root / p for p in records])
    return root / ROOT_RECORD


@pytest.fixture
def results(tmp_path) -> Path:
    return build_results(tmp_path / "results" / "mini")


def _kinds(report) -> set[tuple[str, str]]:
    return {(p.kind, p.path) for p in report.problems}


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


# -- verify on the miniature -----------------------------------------------------------------------------------
def test_clean_results_verify(results):
    report = verify_results(results)
    assert report.ok, report.format()
    assert report.n_records == 9  # 8 job records + the root record (run/root.prov.json)
    assert report.suite == "mini"
    assert report.repair_commands() == []


def test_byte_flip_in_observation_is_named_with_its_consequences(results):
    obs = "observations/box/img-a.npz"
    flip_byte(results / obs)
    report = verify_results(results)
    assert not report.ok
    kinds = _kinds(report)
    assert ("modified", obs) in kinds
    assert ("stale", "solve/dwgf/box/main/shard-000.prov.json") in kinds
    stale_rows = [p for p in report.problems if p.kind == "stale-rows"]
    assert {p.path for p in stale_rows} == {"metrics/dwgf/box/main/shard-000.parquet", "metrics.parquet"}
    assert all("observation_sha256" in p.detail and "img-a" in p.detail for p in stale_rows)
    assert "observations/box/observe.prov.json" in report.forcerun_targets()
    assert obs in report.format()


def test_deleted_particle_file_is_missing_and_repaired_by_its_solve_job(results):
    particle = "solve/dwgf/box/main/images/img-b_p1.png"
    (results / particle).unlink()
    report = verify_results(results)
    assert ("missing", particle) in _kinds(report)
    assert report.forcerun_targets() == ["solve/dwgf/box/main/shard-000.prov.json"]
    cd, command, again = report.repair_commands()
    assert cd == f"cd {results.parent.parent}" and again == "dwgf verify results/mini"
    assert f"-s {Path(__file__).resolve().parents[1] / 'Snakefile'}" in command  # tmp workdir: the checkout's
    assert "--forcerun " in command and " results/mini/solve/dwgf/box/main/shard-000.prov.json" in command
    assert "--config suite=mini" in command


def test_edited_parquet_row_is_detected_in_shard_and_downstream(results):
    parquet = results / "metrics" / "dwgf" / "box" / "main" / "shard-000.parquet"
    frame = pd.read_parquet(parquet)
    frame.loc[3, "value"] = frame.loc[3, "value"] + 1.0
    frame.to_parquet(parquet, index=False)
    report = verify_results(results)
    kinds = _kinds(report)
    assert ("modified", "metrics/dwgf/box/main/shard-000.parquet") in kinds
    assert ("stale", "aggregate.prov.json") in kinds  # metrics.parquet was made from the old rows
    assert ("stale-rows", "metrics.parquet") in kinds
    assert report.forcerun_targets() == ["metrics.parquet", "metrics/dwgf/box/main/shard-000.parquet"]


def test_forged_aggregate_is_caught_by_rows_not_only_by_hashes(results):
    """metrics.parquet edited *and* its record re-hashed: only the row-level comparison can tell."""
    frame = pd.read_parquet(results / "metrics.parquet")
    frame.loc[0, "value"] = 99.0
    frame.to_parquet(results / "metrics.parquet", index=False)
    record = read_record(results / "aggregate.prov.json")
    record["outputs"]["metrics.parquet"] = sha256_file(results / "metrics.parquet")
    atomic_write_json(results / "aggregate.prov.json", record)
    report = verify_results(results)
    rows = [p for p in report.problems if p.kind == "stale-rows"]
    assert [p.path for p in rows] == ["metrics.parquet"]
    assert "99.0" in rows[0].detail
    assert ("stale", "tables/tables.prov.json") in _kinds(report)  # the table was made from the old file


def test_unexpected_and_leftover_files(results):
    _write(results / "solve" / "dwgf" / "box" / "main" / "images" / "img-a_p7.png", b"stray")
    _write(results / "tables" / ".main.md.abc123.tmp.md", b"half")
    report = verify_results(results)
    unexpected = {p.path: p for p in report.problems if p.kind == "unexpected"}
    assert set(unexpected) == {"solve/dwgf/box/main/images/img-a_p7.png", "tables/.main.md.abc123.tmp.md"}
    assert "temporary" in unexpected["tables/.main.md.abc123.tmp.md"].detail
    assert report.removals() == sorted(unexpected)


def test_edited_record_and_lost_record(results):
    record = json.loads((results / "prior" / "prior.prov.json").read_text())
    record["config"]["prior"]["kind"] = "stable_diffusion"
    (results / "prior" / "prior.prov.json").write_text(json.dumps(record))
    (results / "tables" / "tables.prov.json").unlink()
    report = verify_results(results)
    kinds = _kinds(report)
    assert ("bad-record", "prior/prior.prov.json") in kinds
    assert ("stale", "solve/dwgf/box/main/shard-000.prov.json") in kinds  # it read the prior record's old bytes
    assert ("unexpected", "tables/main.md") in kinds


def test_rows_without_links_are_reported(results):
    parquet = results / "metrics" / "dwgf" / "box" / "main" / "shard-000.parquet"
    pd.read_parquet(parquet).drop(columns=["run_sha256"]).to_parquet(parquet, index=False)
    report = verify_results(results)
    unlinked = [p for p in report.problems if p.kind == "unlinked-rows"]
    assert [p.path for p in unlinked] == ["metrics/dwgf/box/main/shard-000.parquet"]
    assert "run_sha256" in unlinked[0].detail
    assert set(LINK_COLUMNS) >= {"observation_sha256", "run_sha256", "image_id", "particle"}


def test_per_image_solve_record_inputs_are_checked(results):
    """A per-image record that states its inputs is stale when the observation it was solved from changed."""
    path = results / "solve/dwgf/box/main/images/img-a.json"
    record = json.loads(path.read_text())
    record["inputs"] = {"observations/box/img-a.npz": "0" * 64}
    path.write_text(json.dumps(record))
    problems = [p for p in verify_results(results).problems if p.path == "solve/dwgf/box/main/images/img-a.json"]
    assert {p.kind for p in problems} == {"modified", "stale"}  # edited bytes, and solved from another observation
    assert "observations/box/img-a.npz" in next(p for p in problems if p.kind == "stale").detail


def test_strict_mode_fails_on_dirty_code(results):
    for path in results.rglob("*.prov.json"):  # the records as a clean checkout at one commit writes them
        record = read_record(path)
        record["code"] = {"dwgf": "0.1.0", "git_commit": "0" * 40, "git_dirty": path.name == "tables.prov.json"}
        atomic_write_json(path, record)
    changed = True
    while changed:  # records are inputs of records: re-hash consumers until the chain is consistent again
        changed = False
        for consumer in results.rglob("*.prov.json"):
            record = read_record(consumer)
            inputs = {p: sha256_file(results / p) for p in record["inputs"]}
            if inputs != record["inputs"]:
                record["inputs"], changed = inputs, True
                atomic_write_json(consumer, record)
    assert verify_results(results).ok  # a note only
    strict = verify_results(results, strict=True)
    assert [p.path for p in strict.problems] == ["tables/tables.prov.json"]


def test_cli_exit_status_output_and_json(results, tmp_path, capsys):
    assert main(["verify", str(results)]) == 0
    assert "OK" in capsys.readouterr().out
    (results / "observations" / "box" / "img-b.png").unlink()
    out_json = tmp_path / "verify.json"
    assert main(["verify", str(results), "--json-out", str(out_json)]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "observations/box/img-b.png" in out and "snakemake -c 2" in out
    saved = json.loads(out_json.read_text())
    assert saved["ok"] is False and saved["problems"][0]["path"] == "observations/box/img-b.png"


def test_missing_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        verify_results(tmp_path / "nope")


# -- trace on the miniature ------------------------------------------------------------------------------------
def test_trace_one_image(results):
    lineage = trace(results, "dwgf", "box", "psnr", image="img-a")
    frame = pd.read_parquet(results / "metrics.parquet")
    wanted = frame[(frame.image_id == "img-a") & (frame.metric == "psnr") & (frame.protocol == "standard")]
    assert [r["value"] for r in lineage["rows"]] == wanted["value"].tolist() and len(wanted) == PARTICLES + 1
    assert lineage["selection"]["protocol"] == "standard"
    (item,) = lineage["images"]
    files = {f["path"]: f for f in item["run"]["particle_files"]}
    for j in range(PARTICLES):
        path = f"solve/dwgf/box/main/images/img-a_p{j}.png"
        assert files[path]["sha256"] == _sha(results / path) and files[path]["status"] == "ok"
    assert item["run"]["image_record"]["seed"] == 200
    assert item["observation"]["sha256"] == _sha(results / "observations/box/img-a.npz")
    assert item["observation"]["noise_seed"] == 100
    assert item["ground_truth"]["sha256"] == _sha(results / "data/images/img-a.png")
    assert all(link["ok"] for link in item["links"].values()) and set(item["links"]) == {
        "observation_sha256",
        "run_sha256",
    }
    assert item["evaluate"]["path"] == "metrics/dwgf/box/main/shard-000.parquet"
    assert lineage["prior"]["files"][0]["sha256"] == _sha(results / "prior/testbed_prior.safetensors")
    text = format_trace(lineage)
    assert "img-a_p1.png" in text and "observations/box/img-a.npz" in text and "testbed_prior" in text


def test_trace_table_cell_recomputes_mean(results):
    lineage = trace(results, "dwgf", "box", "ssim")
    frame = pd.read_parquet(results / "metrics.parquet")
    particles = frame[(frame.metric == "ssim") & (frame.particle >= 0)]  # -1 (particle-mean image) excluded
    per_image = particles.groupby("image_id")["value"].mean()
    assert lineage["cell"]["mean"] == pytest.approx(per_image.mean(), rel=1e-12)
    assert lineage["cell"]["std"] == pytest.approx(per_image.std(ddof=1), rel=1e-12)
    assert [i["image_id"] for i in lineage["images"]] == list(IDS)
    assert lineage["tables"][0]["files"] == ["tables/main.md"]


def test_trace_marks_tampered_files(results):
    flip_byte(results / "solve/dwgf/box/main/images/img-a_p0.png")
    flip_byte(results / "observations/box/img-a.npz")
    (item,) = trace(results, "dwgf", "box", "psnr", image="img-a", particle=0)["images"]
    status = {f["path"]: f["status"] for f in item["run"]["particle_files"]}
    assert status["solve/dwgf/box/main/images/img-a_p0.png"] == "MODIFIED"
    assert status["solve/dwgf/box/main/images/img-a_p1.png"] == "ok"
    assert item["observation"]["status"] == "MODIFIED" and not item["links"]["observation_sha256"]["ok"]


def test_trace_unknown_coordinates_name_the_choices(results):
    with pytest.raises(LookupError, match=r"metric = 'lpips'.*\['psnr', 'runtime_s', 'ssim'\]"):
        trace(results, "dwgf", "box", "lpips")
    with pytest.raises(LookupError, match="image_id"):
        trace(results, "dwgf", "box", "psnr", image="img-z")


def test_trace_cli_json(results, capsys):
    assert main(["trace", str(results), "--method", "dwgf", "--task", "box", "--metric", "psnr", "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    assert lineage["cell"]["n_images"] == 2


def test_copy_keeps_verifying(results, tmp_path):
    """Records hold paths relative to the results folder, so a moved folder still verifies."""
    moved = tmp_path / "elsewhere" / "mini"
    shutil.copytree(results, moved)
    assert verify_results(moved).ok


def test_trace_set_level_metric_names_its_particle_files(results):
    lineage = trace(results, "dwgf", "box", "fid")
    assert [r["value"] for r in lineage["rows"]] == [123.0]
    inputs = {f["path"]: f for f in lineage["set"]["inputs"]}
    for i in IDS:
        for j in range(PARTICLES):
            path = f"solve/dwgf/box/main/images/{i}_p{j}.png"
            assert inputs[path]["sha256"] == _sha(results / path)
    assert "set-level rows made by set_metrics/dwgf/box/main.parquet.prov.json" in format_trace(lineage)


# -- end to end: the smoke suite through Snakemake (one run per session, tests/audit_smoke.py) -------------------
SMOKE = "results/smoke"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    return smoke_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def smoke_plan():
    from dwgf.pipeline.config import load_config
    from dwgf.pipeline.plan import Plan

    return Plan(load_config(REPO / "config.yaml", {"suite": "smoke"}))


def _tamper_cases(plan) -> dict[str, tuple[str, str]]:
    """{case: (file relative to results/smoke, kind verify must report)}, all on one task to keep repairs cheap."""
    task, first, second = plan.tasks[-1], plan.ids[0], plan.ids[-1]
    return {
        "observation_byte": (f"observations/{task}/{second}.npz", "modified"),
        "particle_deleted": (f"solve/{plan.methods[0]}/{task}/main/images/{first}_p1.png", "missing"),
        "parquet_row": (f"metrics/{plan.methods[1]}/{task}/main/shard-000.parquet", "modified"),
    }


def _apply(case: str, path: Path) -> None:
    if case == "observation_byte":
        flip_byte(path, offset=path.stat().st_size // 2)
    elif case == "particle_deleted":
        path.unlink()
    else:
        frame = pd.read_parquet(path)
        row = frame.index[frame["value"].notna()][0]
        frame.loc[row, "value"] = frame.loc[row, "value"] + 0.5
        frame.to_parquet(path, index=False)


@pytest.mark.slow
def test_smoke_run_verifies_and_records_every_job(smoke, smoke_plan):
    result = run(["dwgf", "verify", SMOKE], smoke)  # exit status 0 or the run() assertion fails
    assert "OK: every file matches its record" in result.stdout
    index = ResultsIndex.load(smoke / SMOKE)
    steps = Counter(entry.step for entry in index.records.values())
    plan = smoke_plan
    jobs = len(plan.solve_jobs())
    assert steps == {
        "acquire-images": 1,
        "fit-prior": 1,
        "observe": len(plan.tasks),
        "solve": jobs,
        "evaluate": jobs,
        "set-metrics": len(plan.set_metric_groups()),
        "reference-stats": 1 if plan.reference else 0,
        "aggregate": 1,
        "tables": 1,
        "plots": len(plan.ablations),
        "qualitative": len(plan.tasks),
        "seal": 1,  # the suite's root record, run/root.prov.json
    }
    for entry in index.records.values():  # the provenance fields, in every record
        record = entry.record
        assert record["environment"]["torch"] and record["environment"]["numpy"] and record["environment"]["diffusers"]
        assert record["code"]["dwgf"] and record["started_at"] <= record["finished_at"]
        assert record["peak_memory_bytes"] > 0 and len(record["config_sha256"]) == 64
    rows = pd.read_parquet(smoke / SMOKE / "metrics.parquet")
    assert set(LINK_COLUMNS) <= set(rows.columns) and rows["observation_sha256"].notna().all()
    # every per-image solve record states what it was solved from, so verify (and resume) can check it
    image_records = sorted((smoke / SMOKE / "solve").glob("*/*/*/images/*.json"))
    assert len(image_records) == sum(len(job.ids) for job in plan.solve_jobs())
    for path in image_records:
        task, image_id = path.parts[-4], path.stem
        inputs = json.loads(path.read_text())["inputs"]
        assert set(inputs) == {f"observations/{task}/{image_id}.npz", "prior/prior.prov.json"}, path


@pytest.mark.slow
@pytest.mark.parametrize("case", ["observation_byte", "particle_deleted", "parquet_row"])
def test_smoke_tampering_fails_verify_and_names_the_file(smoke, smoke_plan, case, tmp_path, capsys):
    relative, kind = _tamper_cases(smoke_plan)[case]
    shutil.copytree(smoke / "results", tmp_path / "results")
    _apply(case, tmp_path / SMOKE / relative)
    assert main(["verify", str(tmp_path / SMOKE)]) == 1
    out = capsys.readouterr().out
    assert f"{kind.upper()}" in out and relative in out
    assert ("snakemake -c 2" in out) and ("--forcerun" in out)


@pytest.mark.slow
def test_smoke_repair_command_restores_original_bytes(smoke, smoke_plan, tmp_path):
    """All three tamperings at once, then exactly the commands verify prints; verify passes afterwards."""
    work = copy_workdir(smoke, tmp_path / "work")
    cases = _tamper_cases(smoke_plan)
    for case, (relative, _) in cases.items():
        _apply(case, work / SMOKE / relative)
    report = verify_results(work / SMOKE)
    assert {p.path for p in report.problems} >= {relative for relative, _ in cases.values()}
    commands = report.repair_commands()
    run(" && ".join(commands), work)  # the last command is `dwgf verify`: a non-zero exit fails here
    for relative, _ in cases.values():
        assert sha256_file(work / SMOKE / relative) == sha256_file(smoke / SMOKE / relative), relative


@pytest.mark.slow
def test_second_run_reproduces_observation_and_solver_checksums(smoke, smoke_plan, tmp_path_factory):
    """An independent run (own temp dir; the session's killed-and-resumed run, tests/audit_smoke.py) gives identical
    bytes for every observation and every solver output of every method, task and variant."""
    plan = smoke_plan
    second_run = resumed_workdir(tmp_path_factory).workdir
    observe = [f"{SMOKE}/observations/{t}/observe.prov.json" for t in plan.tasks]
    solve = [f"{SMOKE}/solve/{j.method}/{j.task}/{j.variant}/shard-{j.shard}.prov.json" for j in plan.solve_jobs()]
    for relative in observe + solve:
        first, second = read_record(smoke / relative), read_record(second_run / relative)
        assert first["config_sha256"] == second["config_sha256"] and first["seeds"] == second["seeds"]
        # per-image solve records (<id>.json) hold runtimes and memory, so they are not byte-stable by design
        stable = {p: d for p, d in first["outputs"].items() if not p.endswith(".json")}
        again = {p: d for p, d in second["outputs"].items() if not p.endswith(".json")}
        assert stable and stable == again, f"{relative}: code {first['code']} vs {second['code']}"


@pytest.mark.slow
def test_smoke_trace_recomputes_the_printed_table_cell(smoke, smoke_plan, capsys):
    """`dwgf trace` of a main-table cell gives the number the reporting code printed in tables/main.md."""
    method, task = smoke_plan.methods[0], smoke_plan.tasks[0]
    method_label = smoke_plan.spec["methods"][method]["label"]
    task_label = smoke_plan.task_spec(task)["label"]
    lines = flatten_markdown((smoke / SMOKE / "tables" / "main.md").read_text()).splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    row = next(line for line in lines if line.startswith(f"| {method_label} |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
    printed = cells[columns.index(f"{task_label}: PSNR ↑")]
    assert main(["trace", str(smoke / SMOKE), "--method", method, "--task", task, "--metric", "psnr", "--json"]) == 0
    cell = json.loads(capsys.readouterr().out)["cell"]
    assert f"{cell['mean']:.2f} ± {cell['std']:.2f}" == printed
    image = smoke_plan.ids[0]
    lineage = trace(smoke / SMOKE, method, task, "psnr", image=image)
    (item,) = lineage["images"]
    for file in item["run"]["particle_files"]:
        assert file["sha256"] == sha256_file(smoke / SMOKE / file["path"]) == file["recorded_sha256"]
    assert item["observation"]["sha256"] == sha256_file(smoke / SMOKE / f"observations/{task}/{image}.npz")
    assert all(link["ok"] for link in item["links"].values())
