"""Run safety (dwgf/suite_run.py, dwgf/audit/root.py, dwgf/errors.py, dwgf/io.py): the suite lock, the invocation
record and its replay, verify against the plan, the record chain, recomputed metrics, shareable file modes and
one-line CLI errors.

Fast tests use a miniature folder (tests/test_audit.py's builder) or no folder at all; the end-to-end ones (marked
``slow``) work on copies of the session's one clean smoke run (tests/audit_smoke.py) and start no full DAG.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from audit_smoke import REPO, copy_workdir, environment, resumed_workdir, run, smoke_workdir
from test_audit import build_results, write_root_record

from dwgf.audit import verify_results
from dwgf.audit.root import ROOT_RECORD, expected_artifacts, plan_of
from dwgf.cli import main
from dwgf.errors import DwgfError
from dwgf.io import atomic_write_json, atomic_write_text, sha256_file
from dwgf.provenance import config_hash, read_record
from dwgf.suite_run import INVOCATION, LOCK_ENV, SuiteLock, read_holder, replay_command

SMOKE = "results/smoke"


# -- file modes and CLI errors -----------------------------------------------------------------------------------
def test_atomic_writes_respect_the_umask(tmp_path):
    """mkstemp makes 0600 files; artifacts must get 0666 & ~umask like any other file (group-readable results)."""
    old = os.umask(0o002)
    try:
        path = atomic_write_text(tmp_path / "shared" / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o664
    old = os.umask(0o077)
    try:
        private = atomic_write_json(tmp_path / "b.json", {"a": 1})
    finally:
        os.umask(old)
    assert private.stat().st_mode & 0o777 == 0o600


def test_cli_prints_one_line_for_expected_errors(tmp_path):
    command = [sys.executable, "-m", "dwgf", "verify", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dwgf verify: error: not a dwgf suite results folder: {tmp_path} (")
    # called with an argument list (tests, Python callers) the exception propagates
    with pytest.raises(DwgfError, match="not a dwgf suite results folder"):
        main(["verify", str(tmp_path)])


def test_cli_keeps_the_traceback_of_a_bug(monkeypatch, capsys):
    import dwgf.cli.audit as audit

    def broken(args):
        raise KeyError("a programming error")

    monkeypatch.setattr(audit, "_trace", broken)
    with pytest.raises(KeyError):
        main(["trace", "x", "--method", "m", "--task", "t", "--metric", "p"], one_line_errors=True)
    monkeypatch.setattr(audit, "_trace", lambda args: (_ for _ in ()).throw(ValueError("bad --metric")))
    assert main(["trace", "x", "--method", "m", "--task", "t", "--metric", "p"], one_line_errors=True) == 2
    assert capsys.readouterr().err == "dwgf trace: error: bad --metric\n"


# -- verify refuses what is not a suite ------------------------------------------------------------------------
def test_verify_refuses_an_empty_folder_and_the_folder_above_a_suite(tmp_path):
    with pytest.raises(DwgfError, match="not a dwgf suite results folder"):
        verify_results(tmp_path)
    build_results(tmp_path / "results" / "mini")
    assert verify_results(tmp_path / "results" / "mini").ok
    with pytest.raises(DwgfError, match=r"not a dwgf suite results folder: .*results \("):
        verify_results(tmp_path / "results")  # one level above: refused, no problem list, no rm lines
    assert not (tmp_path / "results" / ".dwgf.lock").exists()


def test_missing_artifacts_of_the_plan_are_errors(tmp_path):
    """The root record lists what the suite must have: a deleted record *and* its outputs are still missing."""
    root = build_results(tmp_path / "results" / "mini")
    shutil.rmtree(root / "tables")
    report = verify_results(root)
    assert ("missing", "tables/tables.prov.json") in {(p.kind, p.path) for p in report.problems}
    assert "tables/tables.prov.json" in report.forcerun_targets()


def test_edited_record_with_its_own_hash_updated_breaks_the_chain_at_its_consumer(tmp_path):
    """Editing seeds/device in a solve record and re-computing its config_sha256 leaves it self-consistent; the
    consumer's stored hash of the record catches it, and the repair forces the job that wrote the record."""
    root = build_results(tmp_path / "results" / "mini")
    shard = root / "solve" / "dwgf" / "box" / "main" / "shard-000.prov.json"
    record = read_record(shard)
    record["seeds"] = {k: v + 1 for k, v in record["seeds"].items()}
    record["device"] = "cuda:forged"
    record["config_sha256"] = config_hash(record["config"])
    atomic_write_json(shard, record)
    report = verify_results(root)
    stale = {p.path: p for p in report.problems if p.kind == "stale"}
    assert "metrics/dwgf/box/main/shard-000.parquet.prov.json" in stale  # the evaluate record read the old bytes
    assert (
        stale["metrics/dwgf/box/main/shard-000.parquet.prov.json"].forcerun == "solve/dwgf/box/main/shard-000.prov.json"
    )
    assert ROOT_RECORD in stale
    assert "solve/dwgf/box/main/shard-000.prov.json" in report.forcerun_targets()


def test_folder_data_source_verifies_clean(tmp_path):
    """The images manifest that acquire-images writes beside the images is its output, not a stray file."""
    from PIL import Image

    folder = tmp_path / "ffhq"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(folder / f"{i:05d}.png")
    root = tmp_path / "results" / "f"
    spec = {"suite": "f", "seed": 0, "image_size": 64, "source": {"kind": "folder", "path": str(folder)}}
    spec["ids"] = ["00000", "00001"]
    assert (
        main(
            [
                "acquire-images",
                "--spec",
                json.dumps(spec),
                "--root",
                str(root),
                "--out",
                f"{root}/data/images.prov.json",
            ]
        )
        == 0
    )
    record = read_record(root / "data" / "images.prov.json")
    assert "data/images/manifest.json" in record["outputs"] and not record["inputs"]
    write_root_record(root, {"suite": "f"})
    report = verify_results(root)
    assert report.ok, report.format()


# -- the lock --------------------------------------------------------------------------------------------------
HOLD = """
import sys, time
from dwgf.suite_run import SuiteLock
SuiteLock(sys.argv[1], "test holder").acquire()
print("locked", flush=True)
time.sleep(600)
"""


def _holder(root: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True,
                               env=environment())  # fmt: skip
    assert process.stdout.readline().strip() == "locked"
    return process


def test_lock_refuses_a_second_holder_names_it_and_dies_with_it(tmp_path):
    root = tmp_path / "results" / "s"
    holder = _holder(root)
    try:
        with pytest.raises(DwgfError, match=rf"in use by test holder \(pid {holder.pid} on host .*, started "):
            SuiteLock(root, "second").acquire()
        assert read_holder(root)["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # no unlock needed after kill -9: the kernel dropped the lock with the process
    with SuiteLock(root, "after the kill") as lock:
        assert read_holder(root)["pid"] == os.getpid() and not lock.inherited
    assert read_holder(root) is None


def test_lock_is_inherited_by_the_holders_children_only(tmp_path, monkeypatch):
    root = tmp_path / "results" / "s"
    monkeypatch.delenv(LOCK_ENV, raising=False)
    lock = SuiteLock(root, "run").acquire(export=True)
    try:
        child = (
            "from dwgf.suite_run import SuiteLock; import sys; print(SuiteLock(sys.argv[1], 'job').acquire().inherited)"
        )
        out = subprocess.run(
            [sys.executable, "-c", child, str(root)],
            capture_output=True,
            text=True,
            env={**environment(), **os.environ},
        )
        assert out.stdout.strip() == "True", out.stderr
        stranger = {k: v for k, v in {**environment(), **os.environ}.items() if k != LOCK_ENV}
        out = subprocess.run([sys.executable, "-c", child, str(root)], capture_output=True, text=True, env=stranger)
        assert out.returncode != 0 and "in use by run" in out.stderr
        forged = {**stranger, LOCK_ENV: f"{(root / '.dwgf.lock').resolve()}\tnot-the-token"}
        out = subprocess.run([sys.executable, "-c", child, str(root)], capture_output=True, text=True, env=forged)
        assert out.returncode != 0 and "in use by run" in out.stderr
    finally:
        lock.release()


def test_a_reader_without_write_access_still_waits_for_a_run(tmp_path, monkeypatch):
    """A collaborator verifying a group folder they cannot write takes a shared lock on the existing lock file."""
    root = tmp_path / "results" / "s"
    holder = _holder(root)
    real_open = os.open

    def no_write(path, flags, *args):
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_write)
    try:
        with pytest.raises(DwgfError, match=f"in use by test holder \\(pid {holder.pid}"):
            SuiteLock(root, "reader").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with SuiteLock(root, "reader") as lock:
        assert lock._read_only and read_holder(root)["pid"] == holder.pid  # the file is left as it was


# -- replay ----------------------------------------------------------------------------------------------------
def test_replay_command_keeps_the_invocation():
    record = {
        "cwd": "/work/my project",
        "argv": ["snakemake", "--profile", "site", "--configfile", "mine.yaml", "--config", "suite=mysuite"],
        "snakefile": "/opt/dwgf/Snakefile",
        "configfiles": ["/work/my project/mine.yaml"],
        "config_args": ["suite=mysuite", "results=out"],
        "cores": 4,
        "profiles": [["--profile", "site"]],
    }
    command = replay_command(record, ["out/mysuite/solve/dwgf/box/main/shard-000.prov.json"])
    assert command == (
        "cd '/work/my project' && snakemake -c 4 -s /opt/dwgf/Snakefile --profile site --configfile "
        "'/work/my project/mine.yaml' --rerun-incomplete --forcerun "
        "out/mysuite/solve/dwgf/box/main/shard-000.prov.json --config suite=mysuite results=out"
    )


# -- end to end, on copies of the session's smoke run --------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    return smoke_workdir(tmp_path_factory)


def _snakemake(workdir: Path, *args: str, check: bool = False, cwd: Path | None = None):
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
               str(REPO / "config.yaml"), "-c", "1", *args]  # fmt: skip
    result = subprocess.run(
        command, cwd=cwd or workdir, env=environment(), capture_output=True, text=True, timeout=1800
    )
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_smoke_run_records_its_invocation_and_root(smoke):
    root = smoke / SMOKE
    invocation = json.loads((root / INVOCATION).read_text())
    assert Path(invocation["cwd"]) == smoke.resolve() and invocation["configfiles"] == [str(REPO / "config.yaml")]
    assert invocation["snakefile"] == str(REPO / "Snakefile") and invocation["config"]["suite"] == "smoke"
    record = read_record(root / ROOT_RECORD)
    expected = expected_artifacts(plan_of(record["config"]))
    assert record["extra"]["expected"] == expected and all((root / p).is_file() for p in expected)
    assert set(record["inputs"]) == {p for p in expected if p.endswith(".prov.json") and p != ROOT_RECORD}
    assert record["extra"]["invocation"]["cwd"] == invocation["cwd"]


@pytest.mark.slow
def test_verify_checks_results_against_the_plan(smoke, tmp_path):
    """An interrupted metric stage, a suite with one method only, deleted tables: each is an error naming files."""
    cases = {
        "metrics-killed": lambda r: (
            [p.unlink() for p in sorted(r.glob("metrics/**/*"))[::2] if p.is_file()]
            + [(r / "metrics.parquet").unlink(), (r / ROOT_RECORD).unlink()]
        ),
        "one-method": lambda r: [shutil.rmtree(r / d / "psld") for d in ("solve", "metrics", "set_metrics")],
        "no-tables": lambda r: shutil.rmtree(r / "tables"),
    }
    for name, damage in cases.items():
        root = tmp_path / name / SMOKE
        shutil.copytree(smoke / SMOKE, root)
        damage(root)
        report = verify_results(root)
        missing = {p.path for p in report.problems if p.kind == "missing"}
        assert not report.ok and missing, name
        if name == "one-method":
            assert "solve/psld/box/main/shard-000.prov.json" in missing
        if name == "no-tables":
            assert {"tables/main.md", "tables/tables.prov.json"} <= missing
        if name == "metrics-killed":
            assert "metrics.parquet" in missing and ROOT_RECORD in missing
        assert not [c for c in report.repair_commands() if c.startswith("rm ")], name


@pytest.mark.slow
def test_forged_value_with_every_hash_updated_is_caught_by_recompute(smoke, tmp_path):
    """Edit one PSNR in the per-shard Parquet and metrics.parquet and re-hash every record up to the root: the
    hashes all agree, and only recomputing the metric from the particle file shows the forgery."""
    root = tmp_path / SMOKE
    shutil.copytree(smoke / SMOKE, root)
    shard = sorted(root.glob("metrics/dwgf/*/main/shard-000.parquet"))[0]
    forged = {}
    for path in (shard, root / "metrics.parquet"):
        frame = pd.read_parquet(path)
        hit = (frame["metric"] == "psnr") & (frame["protocol"] == "standard") & (frame["particle"] == 0)
        hit &= (frame["method"] == "dwgf") & (frame["variant"] == "main") & (frame["task"] == shard.parent.parent.name)
        index = frame.index[hit][0]
        forged[path.name] = (frame.loc[index, "image_id"], frame.loc[index, "value"])
        frame.loc[index, "value"] += 5.0
        frame.to_parquet(path, index=False)
    changed = True
    while changed:  # re-hash outputs and inputs of every record until the whole chain agrees again
        changed = False
        for path in root.rglob("*.prov.json"):
            record = read_record(path)
            hashes = {
                k: {p: sha256_file(root / p) for p in record[k] if (root / p).is_file()} for k in ("outputs", "inputs")
            }
            if any(hashes[k] != {p: d for p, d in record[k].items() if (root / p).is_file()} for k in hashes):
                record.update(hashes)
                atomic_write_json(path, record)
                changed = True
    assert verify_results(root).ok  # every hash and every aggregated row agrees with the forgery
    report = verify_results(root, recompute=-1)
    recomputed = [p for p in report.problems if p.kind == "recomputed"]
    assert {p.path for p in recomputed} == {shard.relative_to(root).as_posix(), "metrics.parquet"}
    assert forged["metrics.parquet"][0] in recomputed[0].detail
    assert report.n_recomputed > 1


@pytest.mark.slow
def test_plain_snakemake_refuses_an_edited_shard_parquet(smoke, tmp_path):
    """Snakemake re-runs aggregate on the newer file; aggregate must refuse it instead of tabulating it."""
    work = copy_workdir(smoke, tmp_path / "work")
    from dwgf.metrics.schema import read_metrics, write_metrics

    shard = sorted((work / SMOKE).glob("metrics/dwgf/*/main/shard-000.parquet"))[0]
    frame = read_metrics(shard)
    frame.loc[frame.index[frame["metric"] == "psnr"][0], "value"] += 5.0
    write_metrics(frame, shard)  # a valid metrics file, only its value is not what evaluate computed
    before = sha256_file(work / SMOKE / "tables" / "main.md")
    result = _snakemake(work, "--config", "suite=smoke")
    assert result.returncode != 0
    log = (work / SMOKE / "logs" / "aggregate" / "aggregate.log").read_text()
    assert "was changed after `dwgf evaluate` wrote it" in log and shard.name in log
    assert sha256_file(work / SMOKE / "tables" / "main.md") == before


@pytest.mark.slow
def test_concurrent_runs_are_refused_whatever_snakemake_does_with_its_locks(smoke, tmp_path):
    """A second run on a locked suite is refused naming the holder: after Snakemake's own .snakemake/locks were
    removed, and from another working directory; after the holder is SIGKILLed a rerun needs no unlock."""
    work = copy_workdir(smoke, tmp_path / "work")
    root = work / SMOKE
    holder = _holder(root)
    try:
        shutil.rmtree(work / ".snakemake" / "locks", ignore_errors=True)  # what any ending run in the folder does
        refused = _snakemake(work, "--forcerun", f"{SMOKE}/tables/tables.prov.json", "--config", "suite=smoke")
        assert refused.returncode != 0
        text = refused.stdout + refused.stderr
        assert f"is in use by test holder (pid {holder.pid} on host" in text, text[-3000:]
        other = tmp_path / "elsewhere"
        other.mkdir()
        refused = _snakemake(other, "--forcerun", f"{root}/tables/tables.prov.json", "--config", "suite=smoke",
                             f"results={work / 'results'}", cwd=other)  # fmt: skip
        assert refused.returncode != 0 and f"pid {holder.pid}" in refused.stdout + refused.stderr
        assert main(["verify", str(root)], one_line_errors=True) == 2  # verify takes the lock too
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    _snakemake(work, "--forcerun", f"{SMOKE}/tables/tables.prov.json", "--config", "suite=smoke", check=True)
    assert verify_results(root).ok


@pytest.mark.slow
def test_repair_replays_the_invocation_and_replaces_a_forged_record(smoke, tmp_path):
    """Seeds/device edited in a solve record (its own hash updated): the printed repair is one replay of the
    recorded invocation; it re-runs the solve job, so the forged record is gone and verify passes."""
    work = copy_workdir(smoke, tmp_path / "work")
    root = work / SMOKE
    shard = sorted(root.glob("solve/dwgf/*/main/shard-000.prov.json"))[0]
    original = read_record(shard)
    record = dict(original, device="cuda:forged", seeds={k: 0 for k in original["seeds"]})
    atomic_write_json(shard, record)
    report = verify_results(root)
    assert not report.ok
    commands = report.repair_commands()
    assert len(commands) == 2 and commands[0].startswith(f"cd {work}") and commands[1] == f"dwgf verify {root}"
    assert f"--configfile {REPO / 'config.yaml'}" in commands[0] and "--forcerun" in commands[0]
    assert shard.relative_to(work).as_posix() in commands[0]
    run(" && ".join(commands), tmp_path)
    repaired = read_record(shard)
    assert repaired["device"] == original["device"] and repaired["seeds"] == original["seeds"]


@pytest.mark.slow
def test_two_reproductions_have_byte_identical_metric_tables(smoke, tmp_path_factory):
    """Run measurements live in runtime.parquet, so metrics.parquet of two independent runs is the same bytes."""
    second = resumed_workdir(tmp_path_factory).workdir
    for name in ("metrics.parquet", "set_metrics.parquet"):
        assert sha256_file(smoke / SMOKE / name) == sha256_file(second / SMOKE / name), name
    assert sha256_file(smoke / SMOKE / "runtime.parquet") != sha256_file(second / SMOKE / "runtime.parquet")
