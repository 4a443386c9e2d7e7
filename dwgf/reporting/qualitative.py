"""Qualitative grid (``dwgf qualitative``): ground truth | observation | particles of each method.

One row per image (the suite's first ``report.qualitative_images`` ids), columns: the ground-truth PNG, the
observation preview (``A.render(y)``, the pseudo-inverse rendering written by ``dwgf observe``), then the first
``report.qualitative_particles`` particle PNGs of each method's main run (clamped, 8-bit, as stored). An image
whose solve failed shows an empty panel labelled with its status.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dwgf.io import atomic_path
from dwgf.pipeline.records import read_step_record, resolve


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
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    methods = list(spec["methods"])
    columns = ["ground truth", "observation"] + [f"{spec['methods'][m]} #{j}" for m in methods for j in range(k)]
    inputs = [Path(images_record), Path(observations_record), *map(Path, shard_records)]
    fig, axes = plt.subplots(len(ids), len(columns), figsize=(1.25 * len(columns), 1.3 * len(ids) + 0.4), squeeze=False)
    for r, image_id in enumerate(ids):
        panels: list[tuple[np.ndarray | None, str]] = [
            (_read_rgb(resolve(root, images[image_id])), ""),
            (_read_rgb(resolve(root, observations[image_id]["png"])), ""),
        ]
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
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    recorder = Recorder("qualitative", root=root, config={**spec, "task": task}, seeds={})
    recorder.write(f"{out}.prov.json", outputs=[out], inputs=inputs)
    return Path(out)
