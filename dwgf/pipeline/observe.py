"""Pipeline step 3 (``dwgf observe``): one noisy measurement per task × image, shared by every method.

For image x (from ``data/images/<id>.png``) and the task's operator A:

    y = A x + sigma_y n,   n ~ N(0, I) from a generator seeded with derive_seed(seed, "observe", task, id)

(:func:`dwgf.operators.add_measurement_noise`), so an image's y does not depend on the other images. Per image
the step writes ``observations/<task>/<id>.npz`` with arrays ``y`` and ``y_clean`` (shape (1, *y_shape),
float32), ``sigma_y`` and ``operator`` (JSON text ``{"name", "params"}``), and a PNG preview of
``A.render(y)``; the record ``observations/<task>/observe.prov.json`` indexes them and stores the operator's
``params()`` so a solver rebuilds the same A.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from dwgf.pipeline.arrays import save_npz
from dwgf.pipeline.images import load_image, save_png
from dwgf.pipeline.layout import suite_path
from dwgf.pipeline.records import read_step_record, require, resolve
from dwgf.provenance import Recorder, relative_to_root
from dwgf.seeding import derive_seed, make_generator


def build_operator(task: dict[str, Any], image_size: int):
    """The task's operator: ``make_operator(task["operator"], image_size, **task["params"])``."""
    from dwgf.operators import make_operator

    try:
        return make_operator(task["operator"], image_size, **task.get("params", {}))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"config key 'tasks.{task.get('name')}': cannot build operator {task['operator']!r}: {error}"
        ) from error


def observation_seed(base_seed: int, task: str, image_id: str) -> int:
    """The seed of the measurement noise of ``image_id`` in task ``task`` (per image, whatever the shard)."""
    return derive_seed(base_seed, "observe", task, image_id)


def measure(operator, x, sigma_y: float, seed: int):
    """``(y_clean, y)``: y_clean = A x and y = A x + sigma_y n with n ~ N(0, I) drawn from ``seed``.

    Noise drawn into an inpainting hole is not data: it is zeroed so y's unmeasured entries are exactly 0, which the
    solvers' data-fit normalisation (measurement_dim) and PSLD's norm assume. ``dwgf testbed-compare`` measures
    with this same function.
    """
    import torch

    from dwgf.operators import add_measurement_noise

    with torch.no_grad():
        # contiguous first: the operator's reductions then add in one order, so y's bits do not depend on whether x
        # came from a PNG (a permuted view) or a stacked batch of crops
        y_clean = operator.forward(x.contiguous())
        y = operator.zero_unmeasured(add_measurement_noise(y_clean, float(sigma_y), make_generator(seed)))
    return y_clean, y


def observe(
    spec: dict[str, Any], root: str | os.PathLike, images_record: str | os.PathLike, out: str | os.PathLike
) -> dict[str, Any]:

    require(spec, "task", "ids", "seed", "image_size")
    root = Path(root)
    task = spec["task"]
    size = int(spec["image_size"])
    images = read_step_record(images_record, "acquire-images")["extra"]["images"]
    operator = build_operator(task, size)
    operator_json = json.dumps({"name": operator.name, "params": operator.params()}, sort_keys=True)
    seeds = {image_id: observation_seed(spec["seed"], task["name"], image_id) for image_id in spec["ids"]}
    recorder = Recorder("observe", root=root, config=spec, seeds=seeds)
    folder = suite_path(root, "observation_folder", task=task["name"])
    index, outputs, inputs = {}, [], [Path(images_record)]
    from tqdm.auto import tqdm

    for image_id in tqdm(spec["ids"], desc=f"observe {task['name']}", dynamic_ncols=True):
        if image_id not in images:
            raise ValueError(f"image id {image_id!r} is not in {images_record}; re-run `dwgf acquire-images`")
        source = resolve(root, images[image_id])
        x = load_image(source, image_size=size).unsqueeze(0)
        y_clean, y = measure(operator, x, float(task["sigma_y"]), seeds[image_id])
        npz = save_npz(
            folder / f"{image_id}.npz",
            y=y.numpy().astype(np.float32),
            y_clean=y_clean.numpy().astype(np.float32),
            sigma_y=np.array(float(task["sigma_y"])),
            operator=np.array(operator_json),  # a unicode scalar: readable without unpickling
        )
        preview = save_png(operator.render(y)[0], folder / f"{image_id}.png")
        index[image_id] = {"npz": relative_to_root(npz, root), "png": relative_to_root(preview, root)}
        outputs += [npz, preview]
        inputs.append(source)
    recorder.extra.update(
        {"task": task["name"], "operator": {"name": operator.name, "params": operator.params()}, "images": index}
    )
    return recorder.write(out, outputs=outputs, inputs=inputs)


def load_observation(root: str | os.PathLike, record: dict[str, Any], image_id: str) -> dict[str, np.ndarray]:
    """Arrays ``y`` and ``y_clean`` of one image from an observe record."""
    entry = record["extra"]["images"].get(image_id)
    if entry is None:
        raise ValueError(
            f"no observation of image {image_id!r} for task {record['extra']['task']!r}; re-run `dwgf observe`"
        )
    with np.load(resolve(root, entry["npz"])) as data:
        return {"y": data["y"], "y_clean": data["y_clean"]}
