"""The workflow through a real Slurm with ``workflow/profiles/slurm`` (issue 6; workflow/profiles/slurm/README.md).

Needs the single-node cluster of ``tests/slurm/start-local-slurm.sh`` (munge, slurmctld, slurmd with one fake GPU
GRES, slurmdbd + MariaDB so that ``sacct`` works); ``.ci/slurm.sh`` starts it in CI. Tests marked ``slurm`` are
skipped when ``sbatch`` is absent and fail (not skip) when ``sbatch`` exists but the cluster does not answer.

What is checked, against independent evidence rather than Snakemake's own word:

- jobs really went through Slurm: every job id that Snakemake logs is known to ``sacct``, with the rule name in the
  job comment the plugin sets;
- the outputs equal those of a local ``snakemake -c 2`` run of the same config and targets (Parquet frames
  compared exactly, except the two metrics that measure the run itself: ``runtime_s`` and ``peak_memory_bytes``);
- a solve job killed with ``scancel`` while running is resumed by a rerun of the same command (after the controller
  is killed, since plugin 2.8.0 never notices a cancelled job), which resubmits only that job and its successors:
  upstream outputs stay untouched, every rule has one COMPLETED Slurm job, and a third run has nothing to do;
- solve jobs carry a GPU request (``gres/gpu=1`` in ``sacct``'s ReqTRES; ``scontrol show job``) and CPU-only jobs
  none, both for the smoke suite and for one real submission of a paper-suite solve job (see that test).

The Slurm test runs a sub-DAG of the smoke suite (acquire_images, fit_prior, observe, one solve shard, its
evaluate; about 4 min here): on 2 shared CPU cores one job costs ~30 s, and the whole smoke suite takes ~12 min
locally and ~14 min through Slurm. ``DWGF_SLURM_TEST_FULL=1`` runs the full smoke suite (target ``all``) instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SITE_LOCAL = REPO / "tests" / "slurm" / "site-local.yaml"
SUITE = "smoke"
#: metrics that measure the run itself (wall clock, memory) and so legitimately differ between two runs.
RUN_MEASUREMENTS = {"runtime_s", "peak_memory_bytes"}
#: the profile's values that only suit a big cluster, replaced for the 2-CPU test node (timing knobs only: the
#: resources, GPU request and grouping are the profile's own). The plugin's default of 40 s before the first
#: status check is what makes test runs slow (docs/slurm.md).
LOCAL_OVERRIDES = ["--cores", "2", "--latency-wait", "5", "--slurm-init-seconds-before-status-checks", "2"]
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")
SLURM_RUN_TIMEOUT_S = 900


# --------------------------------------------------------------------------------------------------------------
# helpers


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def _env(site: Path = SITE_LOCAL) -> dict[str, str]:
    """Environment of the submitting shell: shell rules inside Slurm jobs inherit PATH (sbatch --export=ALL), so
    the venv's bin (``dwgf``) must be on it."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DWGF_SLURM_SITE"] = str(site)
    env.setdefault("OMP_NUM_THREADS", "1")
    for key in [k for k in env if k.startswith("DWGF_SLURM_") and k != "DWGF_SLURM_SITE"]:
        del env[key]  # the site file alone decides; a developer's own DWGF_SLURM_* must not leak in
    return env


def _workdir(path: Path) -> Path:
    """A Snakemake working directory outside the checkout (own .snakemake/, results/), reading the repo config."""
    path.mkdir(parents=True, exist_ok=True)
    link = path / "config.yaml"
    if not link.exists():
        link.symlink_to(REPO / "config.yaml")
    return path


def _snakemake(workdir: Path, *args: str) -> list[str]:
    snakefile = str(REPO / "Snakefile")
    return [sys.executable, "-m", "snakemake", "--snakefile", snakefile, "--directory", str(workdir), *args]


def _slurm_args(*args: str) -> list[str]:
    return ["--profile", str(PROFILE), *LOCAL_OVERRIDES, *args]


def _plan(suite: str):
    from snakemake.utils import validate

    from dwgf.pipeline.plan import Plan

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(suite=suite, results="results")
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return Plan(config)


def _sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """sacct records of the given allocations (JobID, State, Comment, ReqTRES), waiting for slurmdbd to catch up."""
    fields = ["JobID", "State", "Comment", "ReqTRES"]
    records: dict[str, dict[str, str]] = {}
    for _ in range(30):
        out = _run(["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", ",".join(f"{f}%200" for f in fields)])
        assert out.returncode == 0, f"sacct failed: {out.stderr}"
        records = {}
        for line in out.stdout.splitlines():
            row = dict(zip(fields, line.split("|")))
            records[row["JobID"]] = row
        # slurmdbd can store a job's TRES a moment after its final state: wait for both.
        settled = not any(r["State"] in ("PENDING", "RUNNING") or not r["ReqTRES"] for r in records.values())
        if set(job_ids) <= set(records) and settled:
            break
        time.sleep(1)
    return records


def _read_frames(root: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for path in sorted(root.rglob("*.parquet")):
        frame = pd.read_parquet(path)
        if "metric" in frame:
            frame = frame[~frame["metric"].isin(RUN_MEASUREMENTS)]
        frames[str(path.relative_to(root))] = frame.reset_index(drop=True)
    return frames


@pytest.fixture(scope="module")
def cluster():
    """The local cluster is up, idle or busy, offers the fake GPU, and accounting answers."""
    hint = "start it with `sudo tests/slurm/start-local-slurm.sh` (or `bash .ci/slurm.sh`)"
    info = _run(["sinfo", "-h", "-N", "-o", "%N %T %G"])
    assert info.returncode == 0 and info.stdout.strip(), f"sbatch exists, Slurm does not answer: {info.stderr}; {hint}"
    assert "gpu:" in info.stdout, f"no node offers a GPU GRES ({info.stdout.strip()}); {hint}"
    assert _run(["sacct", "-n", "-X", "-S", "now"]).returncode == 0, f"sacct fails (slurmdbd down?); {hint}"
    return info.stdout


# --------------------------------------------------------------------------------------------------------------
# profile contents (no Slurm needed)


def _profile_args(site: Path) -> dict:
    from snakemake.profiles import ProfileConfigFileParser

    env = {k: v for k, v in os.environ.items() if not k.startswith("DWGF_SLURM_")}
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env, DWGF_SLURM_SITE=str(site))
    try:
        with open(PROFILE / "config.yaml") as stream:
            return dict(ProfileConfigFileParser().parse(stream))
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_profile_reads_site_file(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("partition: cpu\ngpu_partition: gpu\naccount: proj\ngpu_model: a100\ncpus_per_gpu: 8\n")
    args = _profile_args(site)
    assert args["executor"] == "slurm"
    assert args["rerun-incomplete"] == "True" and int(args["retries"]) >= 1
    assert "slurm-no-account" not in args
    assert "slurm_partition='cpu'" in args["default-resources"]
    assert "slurm_account='proj'" in args["default-resources"]
    assert not any(r.startswith("gpu") for r in args["default-resources"]), "CPU rules must not ask for a GPU"
    solve = {r.split(":", 1)[1].split("=", 1)[0]: r.split("=", 1)[1] for r in args["set-resources"]}
    assert solve["gpu"] == "1" and solve["gpu_model"] == "'a100'" and solve["cpus_per_gpu"] == "8"
    assert solve["slurm_partition"] == "'gpu'"
    assert all(r.startswith("solve:") for r in args["set-resources"]), "only solve jobs get the GPU settings"
    assert "attempt" in solve["runtime"] and "attempt" in solve["mem_mb"]
    assert not any("--gres" in str(v) for v in args.values()), "GPU requests go through gpu/gpu_model"


def test_profile_without_site_values_uses_slurm_defaults(tmp_path):
    with pytest.raises(Exception, match="DWGF_SLURM_SITE"):
        _profile_args(tmp_path / "absent.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    args = _profile_args(empty)
    assert args["slurm-no-account"] == "True"
    assert not any("slurm_partition" in r or "slurm_account" in r for r in args["default-resources"])


def test_profile_cpu_only_site_and_bad_keys(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("partition: cpu\nsolve_gpus: 0\n")
    solve = {r.split(":", 1)[1].split("=", 1)[0] for r in _profile_args(site)["set-resources"]}
    assert "gpu" not in solve and "cpus_per_task" in solve
    site.write_text("partiton: cpu\n")
    with pytest.raises(Exception, match="partiton"):
        _profile_args(site)
    site.write_text("mem_mb: lots\n")
    with pytest.raises(Exception, match="mem_mb"):
        _profile_args(site)


# --------------------------------------------------------------------------------------------------------------
# the smoke suite through Slurm


def _smoke_targets() -> list[str]:
    if os.environ.get("DWGF_SLURM_TEST_FULL") == "1":
        return ["all"]
    plan = _plan(SUITE)
    shard = plan.shards("dwgf", "box", "main")[0]
    return [plan.path("shard_metrics", method="dwgf", task="box", variant="main", shard=shard)]


def _upstream_outputs(workdir: Path) -> dict[str, float]:
    """mtimes of everything acquire_images, fit_prior and observe wrote (finished work that must survive)."""
    root = workdir / "results" / SUITE
    files = [p for d in ("data", "prior", "observations") for p in (root / d).rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in files}


def _wait_for_running_solve(proc: subprocess.Popen, workdir: Path, deadline: float) -> str:
    """Job id of the first solve job once its command runs inside Slurm (its rule log exists)."""
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the Slurm run ended before any solve job ran"
        queue = _run(["squeue", "-h", "-o", "%i|%T|%k"]).stdout
        for line in queue.splitlines():
            job_id, state, comment = line.split("|", 2)
            if (
                state == "RUNNING"
                and comment.startswith("rule_solve")
                and any((workdir / "results" / SUITE / "logs" / "solve").rglob("*.log"))
            ):
                return job_id
        time.sleep(1)
    raise AssertionError("no solve job reached RUNNING in time")


def _finished_at(log: Path) -> float:
    """When a Snakemake run ended: the modification time of its (closed) log."""
    return log.stat().st_mtime


def _wait_for_state(job_id: str, state: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        record = _sacct([job_id]).get(job_id)
        if record and record["State"].split()[0] == state:
            return
        time.sleep(1)
    raise AssertionError(f"Slurm job {job_id} did not reach {state}")


@pytest.mark.slow  # two smoke sub-DAG runs (local and through Slurm) and a resumed one: minutes on 2 cores
@pytest.mark.slurm
def test_smoke_suite_through_slurm(cluster, tmp_path):
    """Smoke sub-DAG through Slurm; the solve job is scancel-ed mid-run and the run resumed by a rerun.

    With snakemake-executor-plugin-slurm 2.8.0 the controller never notices a scancel-ed job: sacct reports it as
    ``CANCELLED by <uid>``, which the plugin does not match against its failure states, so it waits for the job
    forever (workflow/profiles/slurm/README.md). The test therefore does what a user does after such an event (or
    after losing the login node): it kills the controller, unlocks, and reruns the same command, which must finish
    the cancelled job and its successors without resubmitting finished work.
    """
    targets = _smoke_targets()
    env = _env()
    local_wd, slurm_wd = _workdir(tmp_path / "local"), _workdir(tmp_path / "slurm")
    slurm_cmd = _snakemake(slurm_wd, *_slurm_args("--config", f"suite={SUITE}", "--", *targets))

    # The local reference run shares the 2 CPUs with the Slurm run; both start now to bound the wall time.
    t0, t0_wall = time.monotonic(), time.time()
    deadline = t0 + SLURM_RUN_TIMEOUT_S
    local = subprocess.Popen(
        _snakemake(local_wd, "-c", "2", "--config", f"suite={SUITE}", "--", *targets),
        env=env,
        stdout=open(tmp_path / "local.log", "w"),
        stderr=subprocess.STDOUT,
    )
    first_log = tmp_path / "slurm-first.log"
    first = subprocess.Popen(slurm_cmd, env=env, stdout=open(first_log, "w"), stderr=subprocess.STDOUT)
    try:
        killed = _wait_for_running_solve(first, slurm_wd, deadline)
        finished_before_kill = _upstream_outputs(slurm_wd)
        assert finished_before_kill, "acquire_images/fit_prior/observe wrote nothing before the solve job ran"
        assert _run(["scancel", killed]).returncode == 0
        _wait_for_state(killed, "CANCELLED", deadline)
        first.kill()  # the controller dies, as with a lost login node
        first.wait(timeout=60)
        orphans = [j for j in SUBMITTED.findall(first_log.read_text()) if j != killed]
        if orphans:  # all finished with plugin 2.8.0; a fixed plugin might have resubmitted the solve meanwhile
            _run(["scancel", *orphans])
        unlock = _run(_snakemake(slurm_wd, *_slurm_args("--unlock", "--config", f"suite={SUITE}")), env=env)
        assert unlock.returncode == 0, unlock.stderr[-3000:]
        resumed = _run(slurm_cmd, env=env, timeout=max(1, deadline - time.monotonic()))
        slurm_wall = time.monotonic() - t0
        local.wait(timeout=max(1, deadline - time.monotonic()))
        local_wall = _finished_at(tmp_path / "local.log") - t0_wall
    finally:
        for proc in (first, local):
            if proc.poll() is None:
                proc.kill()
    (tmp_path / "slurm-resumed.log").write_text(resumed.stdout + resumed.stderr)
    first_text, resumed_text = first_log.read_text(), resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, f"resumed Slurm run failed; log tail:\n{resumed_text[-4000:]}"
    assert local.returncode == 0, f"local run failed; log tail:\n{(tmp_path / 'local.log').read_text()[-4000:]}"

    # 1. The jobs went through Slurm: every id Snakemake logged is in the accounting database, with its rule.
    first_ids, resumed_ids = SUBMITTED.findall(first_text), SUBMITTED.findall(resumed_text)
    job_ids = first_ids + resumed_ids
    assert killed in first_ids and resumed_ids
    records = _sacct(job_ids)
    assert set(records) == set(job_ids), f"sacct lacks jobs {set(job_ids) - set(records)}"
    states = {jid: r["State"].split()[0] for jid, r in records.items()}
    assert states.pop(killed) == "CANCELLED", records[killed]
    assert set(states.values()) == {"COMPLETED"}, states

    # 2. The rerun resubmitted the cancelled solve and what follows it, nothing that had finished.
    rule_of = {jid: records[jid]["Comment"] for jid in job_ids}
    assert rule_of[killed] in {rule_of[j] for j in resumed_ids}, "the cancelled solve job was not rerun"
    done_first = {rule_of[j] for j in first_ids if j != killed}
    assert done_first and not done_first & {rule_of[j] for j in resumed_ids}, (done_first, resumed_ids)
    assert _upstream_outputs(slurm_wd).items() >= finished_before_kill.items(), "finished outputs were rewritten"

    # 3. GPU requests: solve jobs carry gres/gpu=1, no other job asks for a GPU.
    for jid, record in records.items():
        wants_gpu = "gres/gpu=1" in record["ReqTRES"]
        assert wants_gpu == record["Comment"].startswith("rule_solve"), (jid, record)

    # 4. Another rerun finds nothing to do and submits nothing.
    again = _run(slurm_cmd, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr
    assert not SUBMITTED.search(again.stdout + again.stderr)

    # 5. Same outputs as the local run.
    slurm_frames = _read_frames(slurm_wd / "results" / SUITE)
    local_frames = _read_frames(local_wd / "results" / SUITE)
    assert slurm_frames and sorted(slurm_frames) == sorted(local_frames)
    for name, frame in slurm_frames.items():
        pd.testing.assert_frame_equal(frame, local_frames[name], check_exact=True, obj=name)
    pngs = list((local_wd / "results" / SUITE / "solve").rglob("*.png"))
    assert pngs, "the local run wrote no solution images"
    for png in pngs:
        twin = slurm_wd / png.relative_to(local_wd)
        assert twin.read_bytes() == png.read_bytes(), f"{twin} differs from the local run"

    print(
        f"\n[slurm] targets={targets} slurm_jobs={len(job_ids)} (1 scancel-ed, resumed by a rerun) "
        f"slurm_wall={slurm_wall:.0f}s local_wall(-c 2, concurrent)={local_wall:.0f}s"
    )


@pytest.mark.slurm
def test_paper_solve_job_is_submitted_with_gpu_request(cluster, tmp_path):
    """One real paper-suite solve job, submitted by the profile to the fake-GPU node.

    Its inputs (SD-2.1 weights, FFHQ observations) cannot exist here, so stand-in files take their place and the
    job is expected to fail inside `dwgf solve`; what is checked is the submission: Slurm's own record of the job
    (``scontrol show job``, ``sacct``) shows the GPU request, and the job did start on the node (its rule log).
    """
    workdir = _workdir(tmp_path / "paper")
    plan = _plan("paper")
    job = next(j for j in plan.solve_jobs() if j.method == "dwgf")
    wildcards = dict(method=job.method, task=job.task, variant=job.variant, shard=job.shard)
    for kind, extra in (("prior", {}), ("observations", {"task": job.task})):
        stand_in = workdir / plan.path(kind, **extra)
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("{}\n")
    target = plan.path("shard", **wildcards)
    result = _run(
        _snakemake(
            workdir,
            *_slurm_args("--retries", "0", "--allowed-rules", "solve", "--config", "suite=paper", "--", target),
        ),
        env=_env(),
        timeout=300,
    )
    out = result.stdout + result.stderr
    job_ids = SUBMITTED.findall(out)
    assert len(job_ids) == 1, out[-3000:]
    (job_id,) = job_ids
    assert result.returncode != 0, "the stand-in inputs cannot make a paper solve succeed"
    show = _run(["scontrol", "show", "job", job_id]).stdout  # kept by slurmctld for MinJobAge=300 s
    assert re.search(r"TresPerJob=gres(/|:)gpu:1", show), show
    record = _sacct([job_id])[job_id]
    assert "gres/gpu=1" in record["ReqTRES"] and record["Comment"].startswith("rule_solve"), record
    assert record["State"].split()[0] == "FAILED", record
    assert (workdir / plan.log("solve", "{method}/{task}/{variant}/shard-{shard}").format(**wildcards)).is_file()
