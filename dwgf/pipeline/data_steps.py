"""Pipeline steps 1-2: the test images (``acquire-images``) and the prior (``fit-prior`` / ``acquire-weights``).

Both write a provenance record whose ``extra`` indexes the result:

* ``data/images.prov.json``: ``extra.images = {image_id: "data/images/<id>.png"}``, one 8-bit PNG per image
  at ``image_size`` (the ground truth every later step reads).
* ``prior/prior.prov.json``: ``extra.prior = {"kind": ..., "folder": ...}``, a folder that
  :func:`dwgf.priors.load_prior` loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dwgf.pipeline.images import load_png, save_png
from dwgf.pipeline.records import require
from dwgf.provenance import Recorder, relative_to_root


def image_path(root: str | os.PathLike, image_id: str) -> Path:
    return Path(root) / "data" / "images" / f"{image_id}.png"


def acquire_images(spec: dict[str, Any], root: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write ``data/images/<id>.png`` for every id of the suite, then the record ``out``.

    ``source: bundled``: the scikit-image crop named by each id (:func:`dwgf.data.bundled.load_crop`), so the
    demo runs offline. ``folder`` / ``archive`` / ``hf``: FFHQ images by id through
    :func:`dwgf.acquire.acquire_images` (a pinned HF dataset revision or a local folder/archive), each
    brought to ``image_size`` as ``resize`` says and checked against its sha256 manifest.
    """
    require(spec, "source", "ids", "image_size")
    root = Path(root)
    recorder = Recorder("acquire-images", root=root, config=spec, seeds={})
    size = int(spec["image_size"])
    outputs: dict[str, Path] = {}
    inputs: list[Path] = []
    if spec["source"] == "bundled":
        from dwgf.data.bundled import load_crop

        for image_id in spec["ids"]:
            try:
                x = load_crop(image_id, size)
            except ValueError as error:
                raise ValueError(f"config key 'data.ids': image id {image_id!r} cannot be loaded: {error}") from error
            outputs[image_id] = save_png(x, image_path(root, image_id))
    else:
        outputs, inputs, source_info = _acquire_external(spec, root)
        recorder.extra["source"] = source_info
    for path in outputs.values():
        load_png(path, image_size=size)  # every written image must read back at the suite's size
    recorder.extra["images"] = {image_id: relative_to_root(path, root) for image_id, path in outputs.items()}
    return recorder.write(out, outputs=list(outputs.values()), inputs=inputs)


def _acquire_external(spec: dict[str, Any], root: Path) -> tuple[dict[str, Path], list[Path], dict[str, Any]]:
    from dwgf import acquire

    if not spec.get("location"):
        raise ValueError(
            f"config key 'data.location' is required for data source {spec['source']!r}: a folder, an archive or "
            f"'<repo_id>@<revision>' holding the images named by 'data.pattern'"
        )
    result = acquire.acquire_images(
        source=spec["source"],
        location=spec["location"],
        ids=list(spec["ids"]),
        out_dir=root / "data" / "images",
        image_size=int(spec["image_size"]),
        pattern=spec.get("pattern", "{id}.png"),
        resize=spec.get("resize", "none"),
    )
    outputs = {image_id: Path(path) for image_id, path in result["images"].items()}
    missing = [image_id for image_id in spec["ids"] if image_id not in outputs]
    if missing:
        raise FileNotFoundError(f"acquire_images did not produce images for ids {missing}")
    inputs = [Path(p) for p in result.get("inputs", [])]
    return outputs, inputs, {k: v for k, v in result.items() if k not in ("images", "inputs")}


def crops_overlap(a: tuple[str, int, int], b: tuple[str, int, int], size: int) -> bool:
    """True when two size×size crops (image, row, col) share at least one pixel."""
    return a[0] == b[0] and abs(a[1] - b[1]) < size and abs(a[2] - b[2]) < size


def fit_prior(spec: dict[str, Any], root: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Fit the exact-posterior test-bed prior on bundled crops that do not overlap any test image.

    Training data: ``crops_per_image`` random crops of each bundled image (:func:`dwgf.data.bundled.bundled_crops`
    with the fit seed) minus every crop sharing a pixel with one of the suite's test images (``held_out_ids``),
    so the test images are genuinely held out. The fit itself is
    :meth:`dwgf.priors.gaussian_mixture.GaussianMixturePrior.fit` (whitened PCA + EM mixture;
    testbed-notes.md). The prior is saved to ``prior/`` and named in the record's ``extra.prior``.
    """
    import torch

    from dwgf.data.bundled import bundled_crops, parse_crop_id
    from dwgf.priors.gaussian_mixture import GaussianMixturePrior

    require(spec, "prior", "image_size", "held_out_ids")
    root = Path(root)
    fit = spec["prior"]["fit"]
    size = int(spec["image_size"])
    recorder = Recorder("fit-prior", root=root, config=spec, seeds={"fit": fit["seed"]})
    images, ids = bundled_crops(int(fit["crops_per_image"]), size=size, seed=int(fit["seed"]))
    held_out = []
    for image_id in spec["held_out_ids"]:
        try:
            held_out.append(parse_crop_id(image_id))
        except ValueError as error:
            raise ValueError(f"config key 'data.ids': the test-bed prior needs bundled crop ids: {error}") from error
    keep = [not any(crops_overlap(parse_crop_id(i), h, size) for h in held_out) for i in ids]
    kept_ids = [i for i, k in zip(ids, keep) if k]
    prior = GaussianMixturePrior.fit(
        images[torch.tensor(keep)],
        n_components=int(fit["n_components"]),
        seed=int(fit["seed"]),
        reg_covar=float(fit.get("reg_covar", 1e-4)),
        ids=kept_ids,
    )
    prior.config["held_out"] = {
        "ids": list(spec["held_out_ids"]),
        "excluded_overlapping_crops": len(ids) - len(kept_ids),
    }
    folder = root / "prior"
    prior.save(folder)
    recorder.extra["prior"] = {"kind": "gaussian_mixture", "folder": relative_to_root(folder, root)}
    recorder.extra["fit"] = {"n_train": len(kept_ids), "n_excluded": len(ids) - len(kept_ids)}
    files = sorted(p for p in folder.iterdir() if p.name.startswith("testbed_prior."))
    return recorder.write(out, outputs=files)
