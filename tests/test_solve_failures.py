"""``dwgf solve`` in batches, and outcome vs failure (dwgf/pipeline/solve.py module docstring).

A solver's divergence is a result; anything else (a full disk, out of memory, a solver exception, a killed process)
fails the job with a non-zero exit and leaves no record that resume or Snakemake would accept for the images it
hit, while images finished before keep their records and the rerun completes the shard with the bytes of an
uninterrupted run. Uses the tiny test-bed problem of tests/test_cli.py (2 crops, 64 px, 1-component prior).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dwgf.pipeline.solve import is_complete
from dwgf.provenance import config_hash

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import IDS, data_files, root, run, solve_spec  # noqa: E402, F401  (root is a fixture)


def images_folder(results: Path, variant: str) -> Path:
    return results / "solve" / "dwgf" / "sr8" / variant / "images"


def solve_batched(results: Path, spec: dict, batch_images: int, out: str) -> None:
    run(
        "solve", spec, results, "--prior", f"{results}/prior/prior.prov.json",
        "--observations", f"{results}/obs/o.prov.json", "--ids", ",".join(IDS), "--out", f"{results}/{out}",
        "--no-progress", "--batch-images", str(batch_images),
    )  # fmt: skip


def accepted(results: Path, variant: str, spec: dict, image_id: str) -> bool:
    """Would resume (and so the shard's completion) accept this image's record?"""
    return is_complete(images_folder(results, variant), image_id, config_hash(spec)) is not None


@pytest.fixture
def work(root, tmp_path) -> Path:  # noqa: F811
    """A private copy of the module's results (the tests below damage their results on purpose)."""
    target = tmp_path / "t"
    shutil.copytree(root, target)
    return target


def test_results_are_bitwise_the_same_for_every_batch_size(work):
    spec = solve_spec(variant="batches", hyper={"lr": 0.1, "per_particle_noise": True})
    folder = images_folder(work, "batches")
    by_size = {}
    for size in (1, 2, 5):
        shutil.rmtree(folder, ignore_errors=True)
        solve_batched(work, spec, size, f"solve/b{size}.prov.json")
        by_size[size] = data_files(folder)
        records = [json.loads((folder / f"{i}.json").read_text()) for i in IDS]
        assert {r["spec_sha256"] for r in records} == {config_hash(spec)}  # batch_images is not in the spec
        assert {r["batch_images"] for r in records} == {min(size, len(IDS))}
    assert by_size[1] == by_size[2] == by_size[5] and len(by_size[1]) == 3 * len(IDS)
    # a complete shard solved with one batch size is complete for any other: nothing is solved again
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    solve_batched(work, spec, 1, "solve/again.prov.json")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


def enospc_on(image_id: str):
    """A save_png that fails with ENOSPC for ``image_id``'s second particle (its npz and first PNG are written)."""
    import dwgf.pipeline.solve as solve_module

    real = solve_module.save_png

    def save_png(x, path):
        if Path(path).name == f"{image_id}_p1.png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(x, path)

    return save_png


@pytest.mark.parametrize("batch_images", [1, 2])
def test_injected_enospc_fails_the_job_and_the_rerun_solves_the_image(
    work, tmp_path, monkeypatch, capsys, batch_images
):
    import dwgf.pipeline.solve as solve_module

    spec = solve_spec(variant="enospc")
    reference = tmp_path / "reference"
    shutil.copytree(work, reference)
    monkeypatch.setattr(solve_module, "save_png", enospc_on(IDS[1]))
    with pytest.raises(OSError) as raised:
        solve_batched(work, spec, batch_images, "solve/enospc.prov.json")
    assert raised.value.errno == errno.ENOSPC
    failure_lines = [line for line in capsys.readouterr().err.splitlines() if "FAILED" in line]
    assert failure_lines == [
        f"[dwgf solve] FAILED on image {IDS[1]} (dwgf/sr8/enospc): OSError: [Errno 28] No space left on device: "
        f"'{images_folder(work, 'enospc') / f'{IDS[1]}_p1.png'}'"
    ]
    assert accepted(work, "enospc", spec, IDS[0])  # finished before the failure: kept
    assert not (images_folder(work, "enospc") / f"{IDS[1]}.json").exists()  # no record for the failed image
    assert not (work / "solve" / "enospc.prov.json").exists()  # the shard is not done

    monkeypatch.undo()  # space freed
    kept = (images_folder(work, "enospc") / f"{IDS[0]}.npz").stat().st_mtime_ns
    solve_batched(work, spec, batch_images, "solve/enospc.prov.json")
    assert (images_folder(work, "enospc") / f"{IDS[0]}.npz").stat().st_mtime_ns == kept  # resumed, not redone
    assert all(accepted(work, "enospc", spec, i) for i in IDS)
    solve_batched(reference, spec, batch_images, "solve/enospc.prov.json")  # uninterrupted
    assert data_files(images_folder(work, "enospc")) == data_files(images_folder(reference, "enospc"))


def test_a_memory_error_in_the_solver_fails_the_job(work, monkeypatch, capsys):
    import dwgf.solvers

    def out_of_memory(*args, **kwargs):
        raise MemoryError("surrogate: cannot allocate 64 GiB")

    monkeypatch.setattr(dwgf.solvers, "get_solver", lambda name: out_of_memory)
    spec = solve_spec(variant="oom")
    with pytest.raises(MemoryError):
        solve_batched(work, spec, 2, "solve/oom.prov.json")
    err = capsys.readouterr().err
    assert f"[dwgf solve] FAILED on image {IDS[0]} (batch {IDS[0]}, {IDS[1]}) (dwgf/sr8/oom): MemoryError: " in err
    assert not any((images_folder(work, "oom") / f"{i}.json").exists() for i in IDS)
    assert not (work / "solve" / "oom.prov.json").exists()
    monkeypatch.undo()
    solve_batched(work, spec, 2, "solve/oom.prov.json")
    assert all(accepted(work, "oom", spec, i) for i in IDS)


def test_a_full_tmpfs_fails_the_job_and_the_rerun_after_freeing_space_completes(work):
    """A real full disk: the images folder is a 320 KiB tmpfs, room for one image's files but not two."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and the mount command")
    spec = solve_spec(variant="tmpfs")
    folder = images_folder(work, "tmpfs")
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(OSError) as raised:
            solve_batched(work, spec, 1, "solve/tmpfs.prov.json")
        assert raised.value.errno == errno.ENOSPC
        assert accepted(work, "tmpfs", spec, IDS[0]) and not accepted(work, "tmpfs", spec, IDS[1])
        assert not (folder / f"{IDS[1]}.json").exists() and not (work / "solve" / "tmpfs.prov.json").exists()
        assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]  # atomic writes left no partial file
        subprocess.run(["mount", "-o", "remount,size=4m", str(folder)], check=True)  # space freed
        solve_batched(work, spec, 1, "solve/tmpfs.prov.json")
        assert all(accepted(work, "tmpfs", spec, i) for i in IDS)
        fresh = data_files(folder)
    finally:
        subprocess.run(["umount", str(folder)], check=False)
    solve_batched(work, spec, 1, "solve/tmpfs-fresh.prov.json")  # the same spec, from scratch on the real disk
    assert data_files(folder) == fresh


@pytest.mark.slow
def test_sigkill_mid_shard_leaves_no_accepted_record_and_the_rerun_matches(work, tmp_path):
    spec = solve_spec(variant="killed", n_steps=60)
    folder = images_folder(work, "killed")
    reference = tmp_path / "reference"
    shutil.copytree(work, reference)
    command = [
        sys.executable, "-m", "dwgf", "solve", "--spec", json.dumps(spec), "--root", str(work),
        "--prior", f"{work}/prior/prior.prov.json", "--observations", f"{work}/obs/o.prov.json",
        "--ids", ",".join(IDS), "--out", f"{work}/solve/killed.prov.json", "--no-progress",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (folder / f"{IDS[0]}.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, "the solve ended before the first record"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (work / "solve" / "killed.prov.json").exists(), "killed too late: the shard had finished"
    assert accepted(work, "killed", spec, IDS[0]) and not accepted(work, "killed", spec, IDS[1])
    solve_batched(work, spec, 1, "solve/killed.prov.json")
    solve_batched(reference, spec, 1, "solve/killed.prov.json")
    assert data_files(folder) == data_files(images_folder(reference, "killed"))
