"""Pipeline steps 1-2: the test images (``acquire-images``) and the prior (``fit-prior`` / ``acquire-weights``).

Both write a provenance record whose ``extra`` indexes the result:

* ``data/images.prov.json``: ``extra.images = {image_id: "data/images/<id>.png"}``, one 8-bit PNG per image
  at ``image_size`` (the ground truth every later step reads).
* ``prior/prior.prov.json``: ``extra.prior = {"kind": ..., "folder": ...}``, a folder that
  :func:`dwgf.priors.load_prior` loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dwgf.pipeline.layout import suite_path
from dwgf.pipeline.records import require
from dwgf.pipeline.variants import COMPOSITE_SOURCE
from dwgf.provenance import Recorder, relative_to_root


def acquire_images(
    spec: dict[str, Any],
    root: str | os.PathLike,
    out: str | os.PathLike,
    prior_record: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write ``data/images/<id>.png`` (or ``.npy``) for every id of the suite, then the record ``out``.

    ``source.kind: bundled``: the scikit-image crop named by each id (:func:`dwgf.data.bundled.load_crop`), so
    the demo runs offline. ``textures``: the synthetic texture named by each id (:mod:`dwgf.data.textures`).
    ``prior_samples``: x = D(z), z ~ p_0 from the fitted test-bed prior of ``prior_record`` with a per-image seed
    from the suite seed and the id (:func:`dwgf.data.prior_samples.sample_prior_images`), stored exactly as
    float32 ``<id>.npy`` (a PNG would clamp and quantise the ground truth of the well-specified regime).
    ``sets``: the named image sets of a composite source, each written by its own kind into the same folder.
    ``folder`` / ``archive`` / ``hf_dataset`` / ``lmdb``: FFHQ images by id through
    :func:`dwgf.acquire.acquire_images` (Lanczos-resized to ``image_size`` only when the size differs; its
    ``manifest.json`` with the sha256 of every original is recorded as an output, and ``extra.download`` says
    what was read from where: for a hub source the endpoint, repo, commit, skipped mirrors and file sha256s).
    A missing id raises naming it. ``extra.image_sets`` maps every id to its set (the ``image_set`` column of
    the metrics); prior-sample seeds are in the record's ``seeds``.
    """
    from dwgf.data.prior_samples import prior_sample_seed
    from dwgf.pipeline.variants import image_set_of, image_sets

    require(spec, "source", "ids", "image_size")
    root = Path(root)
    sets = image_sets(spec)
    owner = image_set_of(sets)
    if list(owner) != list(spec["ids"]):
        raise ValueError(f"spec 'ids' {spec['ids']} differ from the ids of the source's image sets {list(owner)}")
    sampled = [i for part in sets.values() if part["source"]["kind"] == "prior_samples" for i in part["ids"]]
    seeds = {image_id: prior_sample_seed(int(spec["seed"]), image_id) for image_id in sampled}
    recorder = Recorder("acquire-images", root=root, config=spec, seeds=seeds)
    size, folder = int(spec["image_size"]), suite_path(root, "image_folder")
    prior, inputs = None, [Path(spec["source"]["lock"])] if spec["source"].get("lock") else []
    if sampled:
        if prior_record is None:
            raise ValueError(
                "a prior_samples source samples the fitted prior: pass --prior (the record of `dwgf fit-prior`)"
            )
        from dwgf.pipeline.solve import load_pipeline_prior

        prior, _ = load_pipeline_prior(root, prior_record, "cpu", spec["dtype"])
        inputs.append(Path(prior_record))
    outputs: dict[str, Path] = {}
    manifest = None
    for part in sets.values():
        key = f"data.source.sets[{part['index']}].ids" if spec["source"]["kind"] == COMPOSITE_SOURCE else "data.ids"
        written, part_manifest = write_images(
            part["source"], part["ids"], size, folder, key=key, prior=prior, seed=int(spec["seed"])
        )
        outputs.update(written)
        manifest = manifest or part_manifest
    if manifest:
        recorder.extra["source_manifest"] = relative_to_root(manifest, root)
        recorder.extra["download"] = json.loads(Path(manifest).read_text(encoding="utf-8"))["source"]
    recorder.extra["images"] = {image_id: relative_to_root(path, root) for image_id, path in outputs.items()}
    recorder.extra["image_sets"] = owner
    # the manifest is written by this step (into data/images/), so it is an output: as an input, no record would
    # name it as an output and `dwgf verify` would call it a stray file
    return recorder.write(out, outputs=[*outputs.values(), *([manifest] if manifest else [])], inputs=inputs)


def write_images(
    source: dict[str, Any],
    ids: list[str],
    size: int,
    folder: Path,
    key: str = "data.ids",
    prior: Any = None,
    seed: int | None = None,
) -> tuple[dict[str, Path], Path | None]:
    """Write ``<folder>/<id>.png`` (``.npy`` for prior samples) for every id from ``source``; returns ({id: path},
    source manifest or None).

    Every written image is read back at ``size``. ``key`` names the config key of the ids in error messages;
    ``prior`` and ``seed`` (the suite seed) are needed by a ``prior_samples`` source only.
    """
    from dwgf.pipeline.images import load_image, save_npy, save_png  # torch: only the steps that write images

    outputs: dict[str, Path] = {}
    manifest = None
    if source["kind"] == "prior_samples":
        from dwgf.data.prior_samples import sample_prior_images

        if prior is None or seed is None:
            raise ValueError(f"config key {key!r}: a prior_samples source needs the fitted prior and the suite seed")
        for image_id, x in zip(ids, sample_prior_images(prior, seed, ids)):
            outputs[image_id] = save_npy(x, folder / f"{image_id}.npy")
    elif source["kind"] == "textures":
        from dwgf.data.textures import texture_image

        for image_id in ids:
            try:
                outputs[image_id] = save_png(texture_image(image_id, size), folder / f"{image_id}.png")
            except ValueError as error:
                raise ValueError(f"config key {key!r}: {error}") from error
    elif source["kind"] == "bundled":
        from dwgf.data.bundled import load_crop

        for image_id in ids:
            try:
                x = load_crop(image_id, size)
            except ValueError as error:
                raise ValueError(f"config key {key!r}: image id {image_id!r} cannot be loaded: {error}") from error
            outputs[image_id] = save_png(x, folder / f"{image_id}.png")
    else:
        from dwgf import acquire

        acquire.acquire_images(dict(source), list(ids), size, folder)
        outputs = {image_id: folder / f"{image_id}.png" for image_id in ids}
        manifest = folder / acquire.IMAGE_MANIFEST_NAME
    for path in outputs.values():
        load_image(path, image_size=size)  # every written image must read back at the suite's size
    return outputs, manifest


def crops_overlap(a: tuple[str, int, int], b: tuple[str, int, int], size: int) -> bool:
    """True when two size×size crops (image, row, col) share at least one pixel."""
    return a[0] == b[0] and abs(a[1] - b[1]) < size and abs(a[2] - b[2]) < size


def fit_prior(spec: dict[str, Any], root: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Fit the exact-posterior test-bed prior on bundled crops that do not overlap any test image.

    Training data: ``crops_per_image`` random crops of each bundled image (:func:`dwgf.data.bundled.bundled_crops`
    with the fit seed) minus every crop sharing a pixel with one of the suite's test images (``held_out_ids``),
    so the test images are genuinely held out. Test images from a ``folder`` / ``archive`` source
    (``held_out_source``; the user's own images, any size, Lanczos-resized to ``image_size`` by
    ``acquire-images``) are not bundled crops: no training crop is excluded for them, and the prior's record says
    so, naming their source (their sha256s are in ``data/images/manifest.json``). The fit itself is
    :meth:`dwgf.priors.gaussian_mixture.GaussianMixturePrior.fit` (whitened PCA + EM mixture;
    docs/testbed.md). The prior is saved to ``prior/`` and named in the record's ``extra.prior``.
    """
    import torch

    from dwgf.data.bundled import bundled_crops, parse_crop_id
    from dwgf.priors.gaussian_mixture import GaussianMixturePrior

    require(spec, "prior", "image_size", "held_out_ids")
    root = Path(root)
    fit = spec["prior"]["fit"]
    size = int(spec["image_size"])
    source = spec.get("held_out_source", {"kind": "bundled"})
    recorder = Recorder("fit-prior", root=root, config=spec, seeds={"fit": fit["seed"]})
    images, ids = bundled_crops(int(fit["crops_per_image"]), size=size, seed=int(fit["seed"]))
    held_out = []
    if source["kind"] == "bundled":
        for image_id in spec["held_out_ids"]:
            try:
                held_out.append(parse_crop_id(image_id))
            except ValueError as error:
                raise ValueError(
                    f"config key 'data.ids': with data.source kind 'bundled' the ids are bundled crop ids: {error}; "
                    "for your own images use data.source: {kind: folder, path: DIR}"
                ) from error
    keep = [not any(crops_overlap(parse_crop_id(i), h, size) for h in held_out) for i in ids]
    kept_ids = [i for i, k in zip(ids, keep) if k]
    prior = GaussianMixturePrior.fit(
        images[torch.tensor(keep)],
        n_components=int(fit["n_components"]),
        seed=int(fit["seed"]),
        reg_covar=float(fit.get("reg_covar", 1e-4)),
        min_component_size=fit.get("min_component_size"),
        ids=kept_ids,
    )
    prior.config["held_out"] = {
        "ids": list(spec["held_out_ids"]),
        "source": dict(source),
        "excluded_overlapping_crops": len(ids) - len(kept_ids),
    }
    if source["kind"] in ("prior_samples", "textures"):
        prior.config["held_out"]["note"] = f"test images from a {source['kind']} source: not crops, none excluded"
    elif source["kind"] != "bundled":
        prior.config["held_out"]["note"] = (
            f"test images from a {source['kind']} source, not bundled crops: no training crop excluded; that they "
            "share no pixels with the bundled photographs is the user's statement, not checked"
        )
    folder = root / "prior"
    prior.save(folder)
    recorder.extra["prior"] = {"kind": "gaussian_mixture", "folder": relative_to_root(folder, root)}
    recorder.extra["fit"] = {"n_train": len(kept_ids), "n_excluded": len(ids) - len(kept_ids)}
    files = sorted(p for p in folder.iterdir() if p.name.startswith("testbed_prior."))
    return recorder.write(out, outputs=files)


def acquire_weights(spec: dict[str, Any], root: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Fetch (``source: hub``, pinned revision) or copy (``source: local``, a pre-seeded folder) the Stable
    Diffusion snapshot named by the lock into ``prior.dest`` and check every file's sha256 against the lock
    (:func:`dwgf.acquire.acquire_weights`; a mismatch or a missing file stops here, naming the file and what to
    place where). The record hashes the snapshot's sha256 manifest (re-hashing gigabytes of weights a second time
    would add nothing) and ``prior/stable_diffusion.json``, the folder :func:`dwgf.priors.load_prior` reads: the
    weights folder and the suite's speed options ``prior.performance`` (:mod:`dwgf.priors.performance`).
    ``extra.download`` copies the manifest's source (hub endpoint, repo, commit, skipped mirrors, offline or not)
    and each file's sha256 and size.
    """
    from dwgf import acquire
    from dwgf.io import atomic_write_json
    from dwgf.priors.performance import DESCRIPTOR_NAME, DESCRIPTOR_SCHEMA, PerformanceOptions

    require(spec, "prior")
    prior = spec["prior"]
    root = Path(root)
    lock_path = Path(prior["lock"])
    recorder = Recorder("acquire-weights", root=root, config=spec, seeds={})
    lock = acquire.load_lock(lock_path)
    if prior["source"] == "local" and not prior.get("local_dir"):
        raise ValueError(
            "config key 'prior.local_dir' is required with prior.source: local -- the pre-seeded folder holding the "
            f"lock's files ({', '.join(lock['model']['files'])})"
        )
    dest = acquire.acquire_weights(
        lock,
        prior["dest"],
        source=prior["source"],
        local_dir=prior.get("local_dir"),
        record_unknown=bool(prior.get("record_unknown", False)),
        allow_unpinned=bool(prior.get("allow_unpinned", False)),
    )
    # The solve jobs load prior/stable_diffusion.json: the weights folder plus the suite's speed options, so those
    # options reach every job through a hashed output of this step (changing them re-runs the solves).
    performance = PerformanceOptions.from_mapping(prior.get("performance")).as_dict()
    folder = root / "prior"
    descriptor = folder / DESCRIPTOR_NAME
    atomic_write_json(
        descriptor, {"schema": DESCRIPTOR_SCHEMA, "weights": str(Path(dest).resolve()), "performance": performance}
    )
    recorder.extra["prior"] = {
        "kind": "stable_diffusion",
        "folder": relative_to_root(folder, root),
        "weights": str(Path(dest).resolve()),
        "performance": performance,
    }
    manifest = json.loads((Path(dest) / acquire.MANIFEST_NAME).read_text(encoding="utf-8"))
    recorder.extra["download"] = {**manifest["source"], "files": manifest["files"]}
    return recorder.write(out, outputs=[Path(dest) / acquire.MANIFEST_NAME, descriptor], inputs=[lock_path])


def acquire_metric_weights(spec: dict[str, Any], root: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """LPIPS backbones (one per ``lpips_nets``) and, for ``fid_network: cleanfid-...``, clean-fid's Inception,
    into ``<torch_home>/hub/checkpoints/`` (:func:`dwgf.acquire.acquire_aux_weights`, checked against the lock).
    """
    from dwgf import acquire
    from dwgf.metrics.fid import CLEANFID_INCEPTION_FILE, NETWORK_CLEANFID
    from dwgf.metrics.lpips_metric import BACKBONE_FILES

    require(spec, "lock", "torch_home", "source", "lpips_nets", "fid_network")
    root = Path(root)
    names = [BACKBONE_FILES[net] for net in spec["lpips_nets"]]
    if spec["fid_network"] == NETWORK_CLEANFID:
        names.append(CLEANFID_INCEPTION_FILE)
    if spec["source"] == "local" and not spec.get("local_dir"):
        raise ValueError(
            f"config key 'metrics.weights.local_dir' is required with source: local -- a folder with {names}"
        )
    recorder = Recorder("acquire-metric-weights", root=root, config=spec, seeds={})
    paths = acquire.acquire_aux_weights(
        acquire.load_lock(spec["lock"]),
        spec["torch_home"],
        source=spec["source"],
        local_dir=spec.get("local_dir"),
        names=names,
        record_unknown=bool(spec.get("record_unknown", False)),
    )
    recorder.extra["files"] = {name: str(Path(path).resolve()) for name, path in paths.items()}
    return recorder.write(out, outputs=list(paths.values()), inputs=[Path(spec["lock"])])
