"""Pipeline step 6a: a second FID/KID reference set (``dwgf reference-stats``).

FID against the suite's own ground-truth images (8 in the demo, 100 in the paper) is strongly biased upwards;
``metrics.set_level.reference`` names a larger, disjoint set of real images (for the paper: e.g. FFHQ
01000-01999; for the demo: random crops of the bundled images that share no pixel with a test image). This step

1. writes its images as ``reference/<name>/images/<id>.png`` at the suite's size, from any image source
   (:func:`dwgf.pipeline.data_steps.write_images`, the same code as the test images);
2. computes their Inception features with the suite's ``fid_network`` (clean-fid "clean" resize, as for the
   evaluated images) and stores :class:`dwgf.metrics.fid.ReferenceStats` -- mean, covariance and the features
   themselves (KID needs them) -- in ``reference/<name>/stats.npz``, tagged with the network's sha256, so that
   statistics from another network can never be mixed in (``ReferenceStats.load`` refuses them);
3. writes the provenance record ``stats.npz.prov.json`` (every image and the statistics, hashed).

``dwgf set-metrics`` then adds, per sample policy, FID and KID rows whose ``reference`` column is
``ref:<name>:<n>`` next to the ground-truth rows (``gt:<suite>:<n>``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dwgf.pipeline.data_steps import crops_overlap, write_images
from dwgf.pipeline.records import require
from dwgf.provenance import Recorder, relative_to_root


def reference_ids(spec: dict[str, Any]) -> list[str]:
    """The reference image ids: the configured list, or bundled crops that share no pixel with a test image."""
    ids = spec["ids"]
    if not isinstance(ids, dict):
        return list(ids)
    from dwgf.data.bundled import bundled_crops, parse_crop_id

    size = int(spec["image_size"])
    _, candidates = bundled_crops(int(ids["crops_per_image"]), size=size, seed=int(ids.get("seed", 0)))
    test = []
    for image_id in spec["test_ids"]:
        try:
            test.append(parse_crop_id(image_id))
        except ValueError:
            continue  # not a bundled crop (e.g. an FFHQ id): it cannot overlap one
    return [i for i in candidates if not any(crops_overlap(parse_crop_id(i), t, size) for t in test)]


def reference_stats(spec: dict[str, Any], root: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the reference images, their ``ReferenceStats`` (``out``, .npz) and the record ``<out>.prov.json``."""
    from dwgf.metrics.fid import FeatureStore, ReferenceStats, load_feature_network

    require(spec, "suite", "name", "source", "ids", "test_ids", "image_size", "fid_network", "torch_home")
    recorder = Recorder("reference-stats", root=root, config=spec)
    root, out = Path(root), Path(out)
    ids = reference_ids(spec)
    if len(ids) < 2:
        raise ValueError(
            f"config key 'metrics.set_level.reference.ids': {len(ids)} reference image(s) left after removing "
            f"the test images; FID and KID need at least 2"
        )
    shared = sorted(set(ids) & set(spec["test_ids"]))
    if shared and spec["source"].get("kind") == "bundled":
        raise ValueError(f"config key 'metrics.set_level.reference.ids': test images {shared[:5]} in the reference")
    folder = out.parent / "images"
    # The folder belongs to this step: images of an earlier configuration would be files no record accounts for.
    for stale in folder.glob("*.png") if folder.is_dir() else []:
        if stale.stem not in set(ids):
            stale.unlink()
    images, manifest = write_images(
        spec["source"], ids, int(spec["image_size"]), folder, key="metrics.set_level.reference.ids"
    )
    network = load_feature_network(spec["fid_network"], spec["torch_home"])
    features = FeatureStore(network).features([images[i] for i in ids])
    stats = ReferenceStats.from_features(f"ref:{spec['name']}:{len(ids)}", network.network, features)
    stats.save(out)
    recorder.extra.update(
        n_images=len(ids), network=network.network, images={i: relative_to_root(images[i], root) for i in ids}
    )
    # the manifest is written by this step beside the images: an output (dwgf.pipeline.data_steps.acquire_images)
    recorder.write(f"{out}.prov.json", outputs=[out, *images.values(), *([manifest] if manifest else [])])
    return {"n_images": len(ids), "name": stats.name}
