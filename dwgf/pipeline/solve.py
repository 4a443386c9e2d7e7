"""Pipeline step 4 (``dwgf solve``): one method × task × variant on one shard of images.

Per image (``solve/<method>/<task>/<variant>/images/``):

* ``<id>.npz``: ``particles`` (N, 3, H, W) float32, unclamped D(z) after the final update; ``latents``
  (N, c, h, w); plus every tensor of ``SolveResult.extras`` as ``extra_<name>``;
* ``<id>_p<j>.png``: particle j, clamped and quantised (README.md ("Conventions") PNG convention);
* ``<id>.json``: status (``ok`` / ``diverged`` / ``error``), runtime, peak memory, the resolved hyper-parameters,
  the sha256 of the files above, of the job spec and of the inputs (``inputs``: observation npz, prior record) --
  written last, atomically.

Resume: an image whose ``<id>.json`` exists, was made from the same spec (sha256), was solved from the same inputs
and whose files still hash to the recorded values is not solved again, so re-running a killed job redoes only the
unfinished images. The inputs are the record's ``inputs`` map ``{path relative to the results root: sha256}`` of
the image's observation ``observations/<task>/<id>.npz`` and of the prior record ``prior/prior.prov.json`` (which
hashes the prior's weights): when ``observe`` or the prior is re-run with changed results, Snakemake re-runs the
shard and the stale images are solved again instead of being kept (``dwgf verify`` reports such a record as
STALE; dwgf/audit/README.md). Seeds are per image, ``derive_seed(seed, "solve", method, task, variant, id)``, so a
resumed shard gives the same values as an uninterrupted one.

One image that fails (an exception) is recorded with status ``error`` and its message and does not stop the other
images; a shard in which *every* image fails exits with an error (that is a bug or a broken set-up, not bad
luck). The shard's completion record ``shard-<k>.prov.json`` (a provenance record indexing the per-image
records) is written last.
"""

from __future__ import annotations

import json
import os
import time
import traceback
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

    record = read_step_record_any(prior_record, ("fit-prior", "acquire-weights"))
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
) -> dict[str, Any]:
    import torch

    from dwgf.solvers import get_solver

    require(spec, "method", "task", "variant", "n_particles", "n_steps", "hyper", "seed", "device", "dtype")
    if not ids:
        raise ValueError("--images is empty; pass the shard's image ids")
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
    prior, _ = load_pipeline_prior(root, prior_record, spec["device"], spec["dtype"])
    solve = get_solver(method)
    seeds = {i: solve_seed(spec["seed"], method, task["name"], variant, i) for i in ids}
    recorder = Recorder("solve", root=root, config=spec, seeds=seeds)

    records: dict[str, dict[str, Any]] = {}
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
            continue
        records[image_id] = _solve_one(
            solve, prior, operator, spec, spec_sha256, root, observations, image_id, seeds[image_id], folder, progress,
            inputs,
        )  # fmt: skip
        print(
            f"[dwgf solve] {image_id}: {records[image_id]['status']} in {records[image_id]['runtime_s']:.1f} s",
            flush=True,
        )

    if all(r["status"] == STATUS_ERROR for r in records.values()):
        first = next(iter(records.values()))
        raise RuntimeError(f"every image of the shard failed; first error:\n{first['error']}")
    recorder.extra["images"] = {
        image_id: {
            "record": relative_to_root(image_record_path(folder, image_id), root),
            "status": record["status"],
            "files": {name: relative_to_root(folder / rel, root) for name, rel in record["file_names"].items()},
        }
        for image_id, record in records.items()
    }
    outputs = [image_record_path(folder, i) for i in ids]
    outputs += [folder / rel for r in records.values() for rel in r["files"]]
    inputs = [Path(prior_record), Path(observations_record)]
    inputs += [resolve(root, observations["extra"]["images"][i]["npz"]) for i in ids]
    return recorder.write(out, outputs=outputs, inputs=inputs, device=spec["device"], dtype=spec["dtype"])


def _solve_one(
    solve, prior, operator, spec, spec_sha256, root, observations, image_id, seed, folder, progress, inputs
):  # fmt: skip
    import torch

    started = time.perf_counter()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    hyper = dict(spec["hyper"])
    if "betas" in hyper:
        hyper["betas"] = tuple(hyper["betas"])
    record: dict[str, Any] = {
        "schema": IMAGE_RECORD_SCHEMA,
        "image_id": image_id,
        "seed": seed,
        "spec_sha256": spec_sha256,
        "inputs": inputs,
    }
    try:
        observation = load_observation(root, observations, image_id)
        device = prior.device
        y = torch.from_numpy(observation["y"]).to(device=device, dtype=prior.dtype)
        if hyper.get("per_particle_noise"):
            hyper["y_clean"] = torch.from_numpy(observation["y_clean"]).to(device=device, dtype=prior.dtype)
            hyper["sigma_y"] = float(spec["task"]["sigma_y"])
        generator = make_generator(seed, device=device)
        result = solve(
            prior,
            operator,
            y,
            int(spec["n_particles"]),
            generator,
            n_steps=int(spec["n_steps"]),
            progress=progress,
            **hyper,
        )
        files = image_files(folder, image_id, result.particles.shape[0])
        arrays = {
            "particles": result.particles.detach().to("cpu", torch.float32).numpy(),
            "latents": result.latents.detach().to("cpu", torch.float32).numpy(),
        }
        arrays.update({f"extra_{k}": v.detach().to("cpu", torch.float32).numpy() for k, v in result.extras.items()})
        save_npz(files["npz"], **arrays)
        for j in range(result.particles.shape[0]):
            save_png(result.particles[j].float(), files[f"p{j}"])
        record.update(
            {
                "status": result.status,
                "diverged_at_step": result.diverged_at_step,
                "n_steps": result.n_steps,
                "hyper": _jsonable(result.hyper),
            }
        )
    except Exception:  # one failed image must not fail the shard (module docstring); the message is kept
        files = {}
        record.update({"status": STATUS_ERROR, "error": traceback.format_exc()})
        print(f"[dwgf solve] {image_id}: ERROR\n{record['error']}", flush=True)
    record["runtime_s"] = time.perf_counter() - started
    record["peak_memory_bytes"] = peak_memory_bytes()
    record["file_names"] = {name: path.name for name, path in files.items()}
    record["files"] = {path.name: sha256_file(path) for path in files.values()}
    atomic_write_json(image_record_path(folder, image_id), record)
    return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not hasattr(v, "shape")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
