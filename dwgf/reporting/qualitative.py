"""Qualitative grid (``dwgf qualitative``): ground truth | observation | [exact posterior] | particles of each method.

One row per image (the suite's first ``report.qualitative_images`` ids), columns: the ground-truth PNG, the
observation preview (``A.render(y)``, the pseudo-inverse rendering written by ``dwgf observe``), then -- on the
test bed only (prior ``gaussian_mixture``), which exists for this -- the exact posterior mean E[D(z) | y] and one
exact posterior sample D(z), z ~ p(z | y) (:meth:`~dwgf.priors.gaussian_mixture.GaussianMixturePrior.posterior`
with the evaluate step's sigma_dec; the sample from a generator seeded with
``derive_seed(seed, "qualitative_posterior", task, id)``), then the first ``report.qualitative_particles`` particle
PNGs of each method's main run (clamped, 8-bit, as stored). An image whose solve failed shows an empty panel
labelled with its status; a diverged one shows its particles labelled "diverged".

:data:`LINEAR_DECODER_NOTE` is what the grid can and cannot show on the test bed; the report caption prints it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dwgf.io import atomic_path
from dwgf.pipeline.records import read_step_record, resolve

#: What a linear decoder can and cannot show (printed under test-bed grids and in their report caption).
LINEAR_DECODER_NOTE = (
    "Test bed: the decoder is linear (whitened PCA, a 4x8x8 = 256-dimensional latent), so every decoded image -- the "
    "exact posterior mean and sample as much as any particle -- lies in one 256-dimensional subspace of 64-px images: "
    "blur and missing fine texture are the decoder's, not a method's. Compare particles with the exact posterior "
    "columns (the right answer under this prior), not with the ground truth's detail; the exact sample shows the "
    "spread a calibrated sampler has, and particles that all equal the mean are a collapsed posterior."
)


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as handle:
        return np.asarray(handle.convert("RGB"))


def qualitative_grid(
    spec: dict[str, Any],
    root: str | os.PathLike,
    task: str,
    images_record: str | os.PathLike,
    observations_record: str | os.PathLike,
    shard_records: list[str],
    out: str | os.PathLike,
    prior_record: str | os.PathLike | None = None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dwgf.pipeline.images import display_uint8
    from dwgf.provenance import Recorder

    if task not in spec["tasks"]:
        raise ValueError(
            f"--task {task!r} is not a task of suite {spec['suite']!r}; choose one of {sorted(spec['tasks'])}"
        )
    root = Path(root)
    ids = list(spec["qualitative_ids"])
    k = int(spec["qualitative_particles"])
    images = read_step_record(images_record, "acquire-images")["extra"]["images"]
    observations = read_step_record(observations_record, "observe")["extra"]["images"]
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for path in shard_records:
        shard = read_step_record(path, "solve")
        config = shard["config"]
        if config["task"]["name"] != task or config["variant"] != "main":
            raise ValueError(f"{path} is a {config['task']['name']}/{config['variant']} shard, expected {task}/main")
        for image_id, entry in shard["extra"]["images"].items():
            entries[(config["method"], image_id)] = entry
    methods = [m for m in spec["methods"] if task in spec["settings"][m]]  # the methods run on this task
    testbed = spec["prior"] == "gaussian_mixture"
    exact = ["exact post. mean", "exact post. sample"] if testbed else []
    columns = ["ground truth", "observation", *exact]
    columns += [f"{spec['methods'][m]} #{j}" for m in methods for j in range(k)]
    inputs = [Path(images_record), Path(observations_record), *map(Path, shard_records)]
    seeds: dict[str, int] = {}
    if testbed:
        if prior_record is None:
            raise ValueError("the test-bed grid shows the exact posterior: pass --prior (the `dwgf fit-prior` record)")
        exact_panels = exact_posterior_panels(spec, root, task, ids, observations_record, prior_record, seeds)
        inputs += [Path(prior_record)] + [resolve(root, observations[i]["npz"]) for i in ids]
    height = 1.3 * len(ids) + 0.4 + (0.5 if testbed else 0)
    fig, axes = plt.subplots(len(ids), len(columns), figsize=(1.25 * len(columns), height), squeeze=False)
    for r, image_id in enumerate(ids):
        panels: list[tuple[np.ndarray | None, str]] = [
            (display_uint8(resolve(root, images[image_id])), ""),
            (_read_rgb(resolve(root, observations[image_id]["png"])), ""),
        ]
        if testbed:
            panels += [(array, "") for array in exact_panels[image_id]]
        for m in methods:
            entry = entries.get((m, image_id))
            if entry is None:
                raise ValueError(f"no main-run shard of method {m!r} holds image {image_id!r}; pass its shard record")
            for j in range(k):
                name = f"p{j}"
                if name in entry["files"]:
                    path = resolve(root, entry["files"][name])
                    panels.append((_read_rgb(path), "" if entry["status"] == "ok" else entry["status"]))
                    inputs.append(path)
                else:
                    panels.append((None, entry["status"] if j == 0 else ""))
        for c, (array, note) in enumerate(panels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if array is not None:
                ax.imshow(array, interpolation="nearest")
            if note:
                ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize=7, color="red")
            if r == 0:
                ax.set_title(columns[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(image_id, fontsize=6)
    fig.suptitle(f"{spec['tasks'][task]['label']} (sigma_y = {spec['tasks'][task]['sigma_y']})", fontsize=9)
    if testbed:
        import textwrap

        width = max(60, int(len(columns) * 1.25 * 14))
        fig.text(0.5, 0.005, textwrap.fill(LINEAR_DECODER_NOTE, width), ha="center", va="bottom", fontsize=5.5)
        fig.tight_layout(rect=(0, 0.5 / height + 0.02, 1, 1))
    else:
        fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    recorder = Recorder("qualitative", root=root, config={**spec, "task": task}, seeds=seeds)
    recorder.write(f"{out}.prov.json", outputs=[out], inputs=inputs)
    return Path(out)


def exact_posterior_panels(
    spec: dict[str, Any],
    root: Path,
    task: str,
    ids: list[str],
    observations_record: str | os.PathLike,
    prior_record: str | os.PathLike,
    seeds: dict[str, int],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{image id: (exact posterior mean, one exact posterior sample)} as uint8 (H, W, 3), on the test bed.

    p(z | y) in closed form from the stored observation y and the prior (float64, CPU), with the evaluate step's
    decoder-noise setting; the sample is D(z) for z from a generator seeded per image (recorded in ``seeds``).
    """
    import torch

    from dwgf.pipeline.evaluate import POSTERIOR_SIGMA_DEC
    from dwgf.pipeline.images import to_uint8
    from dwgf.pipeline.observe import build_operator, load_observation
    from dwgf.pipeline.solve import load_pipeline_prior
    from dwgf.seeding import derive_seed, make_generator

    task_spec = spec["tasks"][task]
    observations = read_step_record(observations_record, "observe")
    operator = build_operator({**task_spec, "name": task}, int(spec["image_size"]))
    prior, _ = load_pipeline_prior(root, prior_record, "cpu", "float64")
    panels = {}
    for image_id in ids:
        y = torch.from_numpy(load_observation(root, observations, image_id)["y"]).to(torch.float64)
        posterior = prior.posterior(y, operator, float(task_spec["sigma_y"]), sigma_dec=POSTERIOR_SIGMA_DEC)
        seeds[image_id] = derive_seed(spec["seed"], "qualitative_posterior", task, image_id)
        sample = prior.decode(posterior.sample(1, make_generator(seeds[image_id]), dtype=torch.float64))
        panels[image_id] = (to_uint8(posterior.mean_image[0]), to_uint8(sample[0]))
    return panels
