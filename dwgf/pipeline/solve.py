"""Pipeline step 4 (``dwgf solve``): one method × task × variant on one shard of images.

Per image (``solve/<method>/<task>/<variant>/images/``):

* ``<id>.npz``: ``particles`` (N, 3, H, W) float32, unclamped D(z) after the final update; ``latents``
  (N, c, h, w); plus every tensor of ``SolveResult.extras`` as ``extra_<name>``;
* ``<id>_p<j>.png``: particle j, clamped and quantised (README.md ("Conventions") PNG convention);
* ``<id>.json``: status (``ok`` / ``diverged``), runtime, peak memory, the resolved hyper-parameters, the sha256 of
  the files above, of the job spec and of the inputs (``inputs``: observation npz, prior record) -- written last,
  atomically.

Batches: the shard's unfinished images are solved ``batch_images`` at a time (``--batch-images``; config key
``batch_images`` per suite and per method, workflow/README.md), as one batched solve with one generator per image
(dwgf/solvers/base.py). An image's particles do not depend on the batch it was solved in, so ``batch_images`` is not
part of the spec and its hash: changing it leaves every complete record valid. ``runtime_s`` of an image is its
share of its batch's wall time (``batch_runtime_s`` / ``batch_images`` of the record).

Resume: an image whose ``<id>.json`` exists, was made from the same spec (sha256), was solved from the same inputs
and whose files still hash to the recorded values is not solved again, so re-running a killed job redoes only the
unfinished images. The inputs are the record's ``inputs`` map ``{path relative to the results root: sha256}`` of
the image's observation ``observations/<task>/<id>.npz`` and of the prior record ``prior/prior.prov.json`` (which
hashes the prior's weights): when ``observe`` or the prior is re-run with changed results, Snakemake re-runs the
shard and the stale images are solved again instead of being kept (``dwgf verify`` reports such a record as
STALE; dwgf/audit/README.md). Seeds are per image, ``derive_seed(seed, "solve", method, task, variant, id)``, so a
resumed shard gives the same values as an uninterrupted one.

Grouped jobs (``dwgf solve-batch``, config key ``solve_jobs: per_method_task``): one process solves every shard
of every variant of one method x task, unit after unit, each unit exactly as ``dwgf solve`` would (same spec, seeds,
files and records; the prior is loaded once, :class:`SolveContext`), so a grouped run writes the same bytes as the
per-shard jobs and resume / ``dwgf verify`` work per unit. What it saves is the start-up of a process per shard
(``import torch``, the prior; docs/testbed-steps.md, "Process overhead"). The records' ``peak_memory_bytes`` is
the process's peak so far, which in a grouped job covers the units before it.

Outcome vs failure: a solver's divergence is a result (status ``diverged`` with its step, recorded per image).
Anything else -- an exception in the solver, out of memory, an I/O error such as a full disk, a missing input --
fails the job: one line ``[dwgf solve] FAILED on image <id> ...: <error>`` in the log, the exception re-raised
(non-zero exit), and no record for the images of the failed batch nor the shard's completion record. Images
finished before the failure keep their complete records, so the rerun (by Snakemake, Slurm, or by hand) resumes
from them. A killed process leaves the same state, since every file is written atomically and the image record
last. The shard's completion record ``shard-<k>.prov.json`` (a provenance record indexing the per-image records)
is written last.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from dwgf.io import atomic_write_json, sha256_file
from dwgf.pipeline.arrays import save_npz
from dwgf.pipeline.images import save_png
from dwgf.pipeline.layout import suite_path
from dwgf.pipeline.observe import build_operator, load_observation
from dwgf.pipeline.records import read_step_record, require, resolve
from dwgf.provenance import Recorder, config_hash, peak_memory_bytes, relative_to_root
from dwgf.seeding import derive_seed, make_generator

#: Status of records written before job failures failed the job (never written now; such a record is not complete).
STATUS_ERROR = "error"
IMAGE_RECORD_SCHEMA = "dwgf.solve_image/1"
#: Hyper-parameters the verb supplies itself (from the observation), never from the config.
OBSERVATION_HYPER = ("y_clean", "sigma_y")


def image_files(folder: Path, image_id: str, n_particles: int) -> dict[str, Path]:
    files = {"npz": folder / f"{image_id}.npz"}
    files.update({f"p{j}": folder / f"{image_id}_p{j}.png" for j in range(n_particles)})
    return files


def image_record_path(folder: Path, image_id: str) -> Path:
    return folder / f"{image_id}.json"


def image_inputs(root: Path, observation_npz: Path, prior_record: Path) -> dict[str, str]:
    """``{path relative to root: sha256}`` of what one image is solved from: its observation and the prior record."""
    return {relative_to_root(path, root): sha256_file(path) for path in (observation_npz, prior_record)}


def is_complete(
    folder: Path, image_id: str, spec_sha256: str, inputs: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The image's record if it is complete for this spec and these inputs (all files present with their recorded
    hashes, and ``inputs`` -- see :func:`image_inputs` -- equal to the record's; a record without an ``inputs``
    map, made before it was stored, is not complete)."""
    path = image_record_path(folder, image_id)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    if record.get("schema") != IMAGE_RECORD_SCHEMA or record.get("spec_sha256") != spec_sha256:
        return None
    if record.get("status") == STATUS_ERROR:
        return None  # a failed image is retried on every run
    if inputs is not None and record.get("inputs") != inputs:
        return None  # solved from another observation or prior: its particles would be stale
    for relative, digest in record.get("files", {}).items():
        file = folder / relative
        if not file.is_file() or sha256_file(file) != digest:
            return None
    return record


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}[
        name
    ]


def solve_seed(base_seed: int, method: str, task: str, variant: str, image_id: str) -> int:
    """The seed of the solver generator for one image (per image, whatever the shard or batch)."""
    return derive_seed(base_seed, "solve", method, task, variant, image_id)


def load_pipeline_prior(root: str | os.PathLike, prior_record: str | os.PathLike, device: str, dtype: str):
    """The prior named by a ``fit-prior`` / ``acquire-weights`` record, placed on ``device`` in ``dtype``."""
    from dwgf.priors import load_prior

    record = read_step_record_any(prior_record, ("fit-prior", "acquire-weights", "use-prior"))  # use-prior: restore
    folder = resolve(root, record["extra"]["prior"]["folder"])
    return load_prior(folder, device=device, dtype=_torch_dtype(dtype)), record


def read_step_record_any(path: str | os.PathLike, steps: tuple[str, ...]) -> dict[str, Any]:
    last_error: Exception | None = None
    for step in steps:
        try:
            return read_step_record(path, step)
        except ValueError as error:
            last_error = error
    raise ValueError(f"{path}: expected a record of one of {[f'dwgf {s}' for s in steps]} ({last_error})")


def solve_shard(
    spec: dict[str, Any],
    root: str | os.PathLike,
    prior_record: str | os.PathLike,
    observations_record: str | os.PathLike,
    ids: list[str],
    out: str | os.PathLike,
    progress: bool = True,
    batch_images: int = 1,
    context: SolveContext | None = None,
) -> dict[str, Any]:
    """Solve the shard ``ids`` in batches of ``batch_images``; write per-image records, then the shard record.

    ``context`` (:class:`SolveContext`) shares the loaded prior between the shards solved in one process.
    Any exception (module docstring, "Outcome vs failure") propagates after one log line naming the image(s).
    """
    import torch

    from dwgf.solvers import get_solver

    require(spec, "method", "task", "variant", "n_particles", "n_steps", "hyper", "seed", "device", "dtype")
    if not ids:
        raise ValueError("--images is empty; pass the shard's image ids")
    if isinstance(batch_images, bool) or not isinstance(batch_images, int) or batch_images < 1:
        raise ValueError(f"batch_images must be a positive int, got {batch_images!r}")
    bad = [key for key in spec["hyper"] if key in OBSERVATION_HYPER or key == "trace"]
    if bad:
        raise ValueError(f"config hyper-parameters {bad} are set by `dwgf solve` itself; remove them from the config")
    if spec["device"] == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "this suite sets device: cuda but torch.cuda.is_available() is False; run it on a GPU node "
            "(the paper suite's solve rules request gpu=1) or choose a CPU suite"
        )
    root = Path(root)
    method, task, variant = spec["method"], spec["task"], spec["variant"]
    spec_sha256 = config_hash(spec)
    folder = suite_path(root, "solve_images", method=method, task=task["name"], variant=variant)
    folder.mkdir(parents=True, exist_ok=True)

    observations = read_step_record(observations_record, "observe")
    operator = build_operator(task, int(spec["image_size"]))
    if observations["extra"]["operator"]["params"] != operator.params():
        raise ValueError(
            f"{observations_record} was made with operator params {observations['extra']['operator']['params']} but "
            f"the spec builds {operator.params()}; re-run `dwgf observe` for task {task['name']!r}"
        )
    prior = (context or SolveContext()).prior(root, prior_record, spec["device"], spec["dtype"])
    solve = get_solver(spec.get("solver", method))
    seeds = {i: solve_seed(spec["seed"], method, task["name"], variant, i) for i in ids}
    recorder = Recorder("solve", root=root, config=spec, seeds=seeds)

    records: dict[str, dict[str, Any]] = {}
    pending: list[tuple[str, dict[str, str]]] = []
    for image_id in ids:
        if image_id not in observations["extra"]["images"]:
            raise ValueError(
                f"no observation of image {image_id!r} in {observations_record}; re-run `dwgf observe` for task "
                f"{task['name']!r} with this id"
            )
        inputs = image_inputs(root, resolve(root, observations["extra"]["images"][image_id]["npz"]), Path(prior_record))
        done = is_complete(folder, image_id, spec_sha256, inputs)
        if done is not None:
            print(f"[dwgf solve] {image_id}: complete from an earlier run, skipped", flush=True)
            records[image_id] = done
        else:
            pending.append((image_id, inputs))

    job = _SolveJob(solve, prior, operator, spec, spec_sha256, root, observations, seeds, folder, progress)
    for start in range(0, len(pending), batch_images):
        batch = pending[start : start + batch_images]
        for image_id, record in job.run(batch).items():
            records[image_id] = record
            print(
                f"[dwgf solve] {image_id}: {record['status']} in {record['runtime_s']:.1f} s "
                f"(batch of {record['batch_images']})",
                flush=True,
            )

    recorder.extra["images"] = {
        image_id: {
            "record": relative_to_root(image_record_path(folder, image_id), root),
            "status": records[image_id]["status"],
            "files": {
                name: relative_to_root(folder / rel, root) for name, rel in records[image_id]["file_names"].items()
            },
        }
        for image_id in ids
    }
    outputs = [image_record_path(folder, i) for i in ids]
    outputs += [folder / rel for i in ids for rel in records[i]["files"]]
    inputs = [Path(prior_record), Path(observations_record)]
    inputs += [resolve(root, observations["extra"]["images"][i]["npz"]) for i in ids]
    return recorder.write(out, outputs=outputs, inputs=inputs, device=spec["device"], dtype=spec["dtype"])


class SolveContext:
    """What the shards solved in one process share: the loaded prior, per (record, device, dtype).

    The prior is read-only during a solve (solvers call its methods, never change it), so a shard solved with the
    shared prior gets the values it gets from a freshly loaded one (tests/test_solve_batch.py).
    """

    def __init__(self):
        self._priors: dict[tuple[str, str, str], Any] = {}

    def prior(self, root: str | os.PathLike, prior_record: str | os.PathLike, device: str, dtype: str):
        key = (os.path.realpath(prior_record), device, dtype)
        if key not in self._priors:
            self._priors[key], _ = load_pipeline_prior(root, prior_record, device, dtype)
        return self._priors[key]


def solve_batch(
    batch: dict[str, Any], root: str | os.PathLike, progress: bool = True, batch_images: int = 1
) -> dict[str, Any]:
    """Solve every unit of ``batch`` in this process, one after the other, sharing one :class:`SolveContext`.

    ``batch`` (built by :meth:`dwgf.pipeline.plan.Plan.solve_batch_spec`; one method x task)::

        {"prior": <prior record>, "observations": <observe record>,
         "units": [{"spec": <the solve spec of one variant>, "ids": [<image id>, ...], "out": <shard record>}, ...]}

    Each unit writes exactly what ``dwgf solve --spec <spec> --ids <ids> --out <out>`` writes. A unit's failure
    propagates (the units before it keep their complete records; a rerun resumes, as for ``dwgf solve``).
    """
    require(batch, "prior", "observations", "units")
    if not batch["units"]:
        raise ValueError("solve batch 'units' is empty; the plan gives every method x task at least one shard")
    context = SolveContext()
    images = 0
    for unit in batch["units"]:
        require(unit, "spec", "ids", "out")
        spec = unit["spec"]
        print(f"[dwgf solve-batch] {spec['method']}/{spec['task']['name']}/{spec['variant']} -> {unit['out']}",
              flush=True)  # fmt: skip
        solve_shard(spec, root, batch["prior"], batch["observations"], list(unit["ids"]), unit["out"],
                    progress=progress, batch_images=batch_images, context=context)  # fmt: skip
        images += len(unit["ids"])
    return {"units": len(batch["units"]), "images": images}


class _SolveJob:
    """What every batch of one shard shares; :meth:`run` solves one batch and writes its images' files."""

    def __init__(self, solve, prior, operator, spec, spec_sha256, root, observations, seeds, folder, progress):
        self.solve, self.prior, self.operator, self.spec = solve, prior, operator, spec
        self.spec_sha256, self.root, self.observations = spec_sha256, root, observations
        self.seeds, self.folder, self.progress = seeds, folder, progress

    def run(self, batch: list[tuple[str, dict[str, str]]]) -> dict[str, dict[str, Any]]:
        """Solve ``batch`` [(id, inputs)] as one batched solve; write each image's files, then its record.

        On any exception: one log line naming the image (the one being written, else the whole batch), then
        re-raise. Records are written only after every file of their image, so a failure leaves no record for the
        image it hit (nor for the batch's later images).
        """
        ids = [image_id for image_id, _ in batch]
        current = ids
        try:
            results, runtime = self._solve(ids)
            records = {}
            for (image_id, inputs), result in zip(batch, results):
                current = [image_id]
                records[image_id] = self._write(image_id, inputs, result, runtime, len(batch))
            return records
        except BaseException as error:
            where = current[0] if len(current) == 1 else f"{current[0]} (batch {', '.join(current)})"
            spec = self.spec
            print(
                f"[dwgf solve] FAILED on image {where} ({spec['method']}/{spec['task']['name']}/{spec['variant']}): "
                f"{type(error).__name__}: {error}",
                file=sys.stderr,
                flush=True,
            )
            raise

    def _solve(self, ids: list[str]):
        import torch

        started = time.perf_counter()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        hyper = dict(self.spec["hyper"])
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        device, dtype = self.prior.device, self.prior.dtype
        observations = [load_observation(self.root, self.observations, image_id) for image_id in ids]
        y = torch.cat([torch.from_numpy(o["y"]) for o in observations]).to(device=device, dtype=dtype)
        if hyper.get("per_particle_noise"):
            y_clean = torch.cat([torch.from_numpy(o["y_clean"]) for o in observations])
            hyper["y_clean"] = y_clean.to(device=device, dtype=dtype)
            hyper["sigma_y"] = float(self.spec["task"]["sigma_y"])
        generators = [make_generator(self.seeds[image_id], device=device) for image_id in ids]
        results = self.solve(
            self.prior,
            self.operator,
            y,
            int(self.spec["n_particles"]),
            generators,
            n_steps=int(self.spec["n_steps"]),
            progress=self.progress,
            **hyper,
        )
        return results, time.perf_counter() - started

    def _write(self, image_id, inputs, result, batch_runtime, batch_size) -> dict[str, Any]:
        import torch

        files = image_files(self.folder, image_id, result.particles.shape[0])
        arrays = {
            "particles": result.particles.detach().to("cpu", torch.float32).numpy(),
            "latents": result.latents.detach().to("cpu", torch.float32).numpy(),
        }
        arrays.update({f"extra_{k}": v.detach().to("cpu", torch.float32).numpy() for k, v in result.extras.items()})
        save_npz(files["npz"], **arrays)
        for j in range(result.particles.shape[0]):
            save_png(result.particles[j].float(), files[f"p{j}"])
        record: dict[str, Any] = {
            "schema": IMAGE_RECORD_SCHEMA,
            "image_id": image_id,
            "seed": self.seeds[image_id],
            "spec_sha256": self.spec_sha256,
            "inputs": inputs,
            "status": result.status,
            "diverged_at_step": result.diverged_at_step,
            "n_steps": result.n_steps,
            "hyper": _jsonable(result.hyper),
            "runtime_s": batch_runtime / batch_size,
            "batch_runtime_s": batch_runtime,
            "batch_images": batch_size,
            "peak_memory_bytes": peak_memory_bytes(),
            "file_names": {name: path.name for name, path in files.items()},
            "files": {path.name: sha256_file(path) for path in files.values()},
        }
        atomic_write_json(image_record_path(self.folder, image_id), record)
        return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not hasattr(v, "shape")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
