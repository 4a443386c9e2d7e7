"""``dwgf restore IMAGE --task TASK --method METHOD``: one image of your own, solved outside the DAG.

The same steps as the workflow, run on one image in a private results folder ``--out`` (default
``restore/<image>-<task>-<method>``, laid out as :data:`dwgf.pipeline.layout.LAYOUT` says), with the settings of
one suite's task and method (``--suite``; default ``demo`` for the test bed, ``paper`` for a Stable Diffusion
folder):

1. ``acquire-images`` (:func:`dwgf.pipeline.data_steps.acquire_images`) from a ``folder`` source holding a copy of
   IMAGE (``input/<id><suffix>``; the id is the file name without extension, other characters than letters,
   digits, ``_`` and ``-`` replaced by ``_``): RGB, Lanczos-resized to the suite's size when it differs, the
   original's name and sha256 in ``data/images/manifest.json``;
2. the prior: ``--prior FOLDER`` (a test-bed folder written by ``dwgf fit-prior`` / ``GaussianMixturePrior.save``,
   or a Stable Diffusion diffusers folder) is recorded by a ``use-prior`` record hashing its files (an SD folder's
   ``MANIFEST.sha256.json`` when ``dwgf acquire-weights`` wrote one, else every file); without ``--prior`` the
   suite's own prior step runs (``fit-prior`` on the bundled crops, IMAGE held out, or ``acquire-weights``);
3. ``observe`` (:func:`dwgf.pipeline.observe.observe`): ``observations/<task>/<id>.npz`` and its preview;
4. ``solve`` (:func:`dwgf.pipeline.solve.solve_shard`): particles ``solve/<method>/<task>/main/images/<id>.npz``
   and PNGs, the per-image record and the shard record -- the very files and provenance of a DAG solve step;
5. ``grid.png``: input | observation | particles | particle mean, plus on the test bed the exact posterior mean
   and one exact posterior sample (:func:`dwgf.reporting.qualitative.exact_posterior_panels`), and the record
   ``grid.png.prov.json`` (step ``restore``) linking it to everything above.

``--steps`` and ``--device`` override the suite's step count and device (both are in every spec, so in every
record). Seeds are the suite's, derived per image id as in the workflow.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from dwgf.io import atomic_path
from dwgf.pipeline.layout import suite_path
from dwgf.pipeline.plan import MAIN, Plan
from dwgf.provenance import Recorder, relative_to_root

PRIOR_STEP = "use-prior"


def image_id_for(path: Path) -> str:
    """The image id of a user file: its stem, with characters outside ``[A-Za-z0-9_-]`` replaced by ``_``."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem).strip("_") or "image"
    return stem if stem[0].isalnum() else f"i{stem}"


def prior_kind(folder: Path) -> str:
    from dwgf.priors.gaussian_mixture import CONFIG_FILE

    if (folder / CONFIG_FILE).is_file():
        return "gaussian_mixture"
    if (folder / "unet").is_dir() and (folder / "vae").is_dir():
        return "stable_diffusion"
    raise FileNotFoundError(
        f"--prior {str(folder)!r} is neither a test-bed prior folder (testbed_prior.json) nor a diffusers Stable "
        "Diffusion folder (unet/, vae/, scheduler/); make one with `dwgf fit-prior` or `dwgf acquire-weights`"
    )


def use_prior(folder: Path, root: Path, out: Path) -> dict[str, Any]:
    """Record a given prior folder (step ``use-prior``): its kind, path and the sha256 of its files."""
    from dwgf.acquire import MANIFEST_NAME

    kind = prior_kind(folder)
    recorder = Recorder(PRIOR_STEP, root=root, config={"prior": {"kind": kind, "folder": str(folder.resolve())}})
    if kind == "stable_diffusion" and (folder / MANIFEST_NAME).is_file():
        files = [folder / MANIFEST_NAME]  # written and checked by `dwgf acquire-weights`; hashes every weight file
    else:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
    recorder.extra["prior"] = {"kind": kind, "folder": str(folder.resolve())}
    return recorder.write(out, outputs=[], inputs=files)


def restore(
    image: str | os.PathLike,
    task: str,
    method: str,
    out: str | os.PathLike | None = None,
    prior: str | os.PathLike | None = None,
    suite: str | None = None,
    config: str | os.PathLike | None = None,
    steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Run steps 1-5 of the module docstring; returns the grid PNG."""
    from dwgf.pipeline.config import DEFAULT_CONFIG, load_config
    from dwgf.pipeline.data_steps import acquire_images, acquire_weights, fit_prior
    from dwgf.pipeline.observe import observe
    from dwgf.pipeline.solve import solve_shard

    image = Path(image)
    if not image.is_file():
        raise FileNotFoundError(f"IMAGE {str(image)!r} does not exist")
    kind = prior_kind(Path(prior)) if prior is not None else None
    suite = suite or ("paper" if kind == "stable_diffusion" else "demo")
    plan = Plan(load_config(config or DEFAULT_CONFIG, {"suite": suite}))
    if task not in plan.tasks:
        raise ValueError(f"--task {task!r} is not a task of suite {suite!r}; choose one of {plan.tasks}")
    if method not in plan.methods:
        raise ValueError(f"--method {method!r} is not a method of suite {suite!r}; choose one of {plan.methods}")
    if not plan.runs_on(method, task):
        raise ValueError(
            f"--method {method!r} does not run on --task {task!r} in suite {suite!r} (config key "
            f"suites.{suite}.methods.{method}.tasks: {plan.method_tasks(method)})"
        )
    if kind is not None and kind != plan.spec["prior"]["kind"] and kind == "gaussian_mixture":
        raise ValueError(f"--prior is a test-bed prior but suite {suite!r} is an SD suite; pass --suite demo")
    image_id = image_id_for(image)
    root = Path(out) if out is not None else Path("restore") / f"{image_id}-{task}-{method}"
    root.mkdir(parents=True, exist_ok=True)

    # 1. the image, through the workflow's own folder source (a copy, so the source folder holds only it)
    inbox = root / "input"
    if inbox.exists():
        shutil.rmtree(inbox)
    inbox.mkdir()
    shutil.copyfile(image, inbox / f"{image_id}{image.suffix.lower()}")
    source = {"kind": "folder", "path": str(inbox.resolve())}
    images_record = suite_path(root, "images_manifest")
    acquire_images({**plan.acquire_spec(), "source": source, "ids": [image_id]}, root, images_record)

    # 2. the prior: the given folder, or the suite's own prior step
    prior_record = suite_path(root, "prior")
    if prior is not None:
        use_prior(Path(prior), root, prior_record)
    elif plan.spec["prior"]["kind"] == "gaussian_mixture":
        fit_prior({**plan.prior_spec(), "held_out_ids": [image_id], "held_out_source": source}, root, prior_record)
    else:
        acquire_weights(plan.prior_spec(), root, prior_record)

    # 3-4. observe and solve, exactly as the DAG's steps
    observations_record = suite_path(root, "observations", task=task)
    observe({**plan.observe_spec(task), "ids": [image_id]}, root, images_record, observations_record)
    solve_spec = plan.solve_spec(method, task, MAIN)
    solve_spec.update({k: v for k, v in (("n_steps", steps), ("device", device)) if v is not None})
    shard_record = suite_path(root, "shard", method=method, task=task, variant=MAIN, shard="000")
    solve_shard(solve_spec, root, prior_record, observations_record, [image_id], shard_record, progress=progress)

    # 5. the grid and its record
    testbed = (kind or plan.spec["prior"]["kind"]) == "gaussian_mixture"
    grid_spec = {
        **plan.base_spec(),
        "tasks": {task: plan.task_spec(task)},
        "methods": {method: plan.spec["methods"][method].get("label", method)},
        "prior": "gaussian_mixture" if testbed else "stable_diffusion",
        "image": {"path": str(image.resolve()), "id": image_id},
        "solve": solve_spec,
    }
    return restore_grid(grid_spec, root, task, method, image_id, images_record, observations_record, shard_record,
                        prior_record)  # fmt: skip


def restore_grid(
    spec: dict[str, Any],
    root: Path,
    task: str,
    method: str,
    image_id: str,
    images_record: Path,
    observations_record: Path,
    shard_record: Path,
    prior_record: Path,
) -> Path:
    """``grid.png``: input | observation | particles | particle mean [| exact posterior mean | exact sample]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from dwgf.pipeline.images import display_uint8, to_uint8
    from dwgf.pipeline.records import read_step_record, resolve
    from dwgf.reporting.qualitative import LINEAR_DECODER_NOTE, exact_posterior_panels

    images = read_step_record(images_record, "acquire-images")["extra"]["images"]
    observation = read_step_record(observations_record, "observe")["extra"]["images"][image_id]
    entry = read_step_record(shard_record, "solve")["extra"]["images"][image_id]
    panels: list[tuple[str, np.ndarray | None]] = [
        ("input", display_uint8(resolve(root, images[image_id]))),
        ("observation", _rgb(resolve(root, observation["png"]))),
    ]
    inputs = [images_record, observations_record, shard_record, prior_record]
    if "npz" in entry["files"]:
        npz = resolve(root, entry["files"]["npz"])
        with np.load(npz) as data:
            particles = torch.from_numpy(data["particles"])
        panels += [(f"particle {j}", to_uint8(particles[j])) for j in range(particles.shape[0])]
        panels.append(("particle mean", to_uint8(particles.mean(0))))
        inputs.append(npz)
    else:
        panels.append((f"solve {entry['status']}", None))
    seeds: dict[str, int] = {}
    if spec["prior"] == "gaussian_mixture":
        mean, sample = exact_posterior_panels(spec, root, task, [image_id], observations_record, prior_record, seeds)[
            image_id
        ]
        panels += [("exact post. mean", mean), ("exact post. sample", sample)]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.6 * len(panels), 2.3 if seeds else 2.0), squeeze=False)
    for ax, (title, array) in zip(axes[0], panels):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7)
        if array is not None:
            ax.imshow(array, interpolation="nearest")
    label = f"{spec['methods'][method]} on {image_id}: {spec['tasks'][task]['label']}"
    if entry["status"] != "ok":
        label += f" (status {entry['status']})"
    fig.suptitle(label, fontsize=8)
    if seeds:
        import textwrap

        fig.text(0.5, 0.01, textwrap.fill(LINEAR_DECODER_NOTE, int(len(panels) * 1.6 * 14)), ha="center",
                 va="bottom", fontsize=4.5)  # fmt: skip
        fig.tight_layout(rect=(0, 0.22, 1, 1))
    else:
        fig.tight_layout()
    out = root / "grid.png"
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    recorder = Recorder("restore", root=root, config=spec, seeds=seeds)
    recorder.extra["files"] = {
        "observation": observation["npz"],
        "particles": entry["files"].get("npz"),
        "solve_record": relative_to_root(shard_record, root),
    }
    recorder.write(f"{out}.prov.json", outputs=[out], inputs=inputs)
    return out


def _rgb(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as handle:
        return np.asarray(handle.convert("RGB"))
