"""The extra FID/KID reference set (dwgf.pipeline.reference): which images, their features, the artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dwgf.data.bundled import parse_crop_id
from dwgf.metrics import fid
from dwgf.pipeline.data_steps import crops_overlap
from dwgf.pipeline.reference import reference_ids, reference_stats

TEST_IDS = ["astronaut-r0080-c0180", "chelsea-r0060-c0150"]


def spec(ids, **extra):
    return {"suite": "t", "seed": 0, "image_size": 64, "name": "crops", "source": {"kind": "bundled"}, "ids": ids,
            "test_ids": TEST_IDS, "fid_network": fid.NETWORK_FID_HELPER, "torch_home": "unused", **extra}  # fmt: skip


def test_reference_crops_share_no_pixel_with_a_test_image():
    from dwgf.data.bundled import bundled_crops

    _, candidates = bundled_crops(300, size=64, seed=4)
    kept = reference_ids(spec({"crops_per_image": 300, "seed": 4}))
    tests = [parse_crop_id(i) for i in TEST_IDS]
    removed = [i for i in candidates if i not in kept]
    assert kept == [i for i in candidates if i in set(kept)]  # order kept
    assert not any(crops_overlap(parse_crop_id(i), t, 64) for i in kept for t in tests)
    assert removed and all(any(crops_overlap(parse_crop_id(i), t, 64) for t in tests) for i in removed)
    assert reference_ids(spec(["coffee-r0000-c0000"])) == ["coffee-r0000-c0000"]  # a list is taken as given


def test_reference_stats_artifact(tmp_path):
    ids = ["coffee-r0000-c0000", "rocket-r0100-c0100", "retina-r0200-c0200"]
    out = tmp_path / "reference" / "crops" / "stats.npz"
    done = reference_stats(spec(ids), tmp_path, out)
    assert done == {"n_images": 3, "name": "ref:crops:3"}
    network = fid.load_feature_network(fid.NETWORK_FID_HELPER)
    stats = fid.ReferenceStats.load(out, expected_network=network.network)
    pngs = [tmp_path / "reference" / "crops" / "images" / f"{i}.png" for i in ids]
    # the stored features are those of the written 8-bit PNGs, in id order, as set-metrics featurises its images
    assert np.array_equal(stats.feats, fid.FeatureStore(network).features(pngs))
    assert stats.n == 3 and np.allclose(stats.mu, stats.feats.mean(0))
    record = json.loads(out.with_name("stats.npz.prov.json").read_text())
    assert record["step"] == "reference-stats" and record["extra"]["n_images"] == 3
    assert set(record["outputs"]) == {"reference/crops/stats.npz", *(f"reference/crops/images/{i}.png" for i in ids)}
    with pytest.raises(ValueError, match="statistics were made by"):
        fid.ReferenceStats.load(out, expected_network="another-network")
    # a new configuration replaces the images: none of the previous set is left behind
    reference_stats(spec(ids[1:]), tmp_path, out)
    assert sorted(p.name for p in pngs[0].parent.iterdir()) == sorted(f"{i}.png" for i in ids[1:])
    with pytest.raises(ValueError, match="test images"):
        reference_stats(spec([*ids, TEST_IDS[0]]), tmp_path, tmp_path / "other.npz")
    with pytest.raises(ValueError, match="at least 2"):
        reference_stats(spec(ids[:1]), tmp_path, tmp_path / "one.npz")
