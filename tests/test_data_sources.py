"""The generated data sources (config ``data.source``): synthetic textures, prior samples of the test bed, and
composite image sets; their records, determinism, plan-time checks and the ``image_set`` metrics column."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from audit_smoke import REPO

from dwgf.data.prior_samples import parse_prior_sample_id, prior_sample_id, sample_prior_images
from dwgf.data.textures import PATTERNS, parse_texture_id, texture_id, texture_uint8
from dwgf.pipeline.config import ConfigError, validate_config
from dwgf.pipeline.plan import Plan
from dwgf.pipeline.preflight import check_plan
from dwgf.provenance import sha256_file

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())

SETS = [
    {"name": "well_specified", "source": {"kind": "prior_samples"}, "ids": ["prior-0000", "prior-0001"]},
    {"name": "held_out", "source": {"kind": "bundled"}, "ids": ["astronaut-r0080-c0180"]},
    {"name": "ood", "source": {"kind": "textures"}, "ids": ["texture-stripes-0", "texture-noise-1"]},
]


def suite_config(data=None, suite="research_smoke", edit=None) -> dict:
    config = copy.deepcopy(CONFIG)
    config["suite"] = suite
    if data is not None:
        config["suites"][suite]["data"] = copy.deepcopy(data)
    if edit is not None:
        edit(config["suites"][suite])
    return config


# -- textures ---------------------------------------------------------------------------------------------------


def test_textures_are_deterministic_distinct_and_size_exact():
    images = {pattern: texture_uint8(texture_id(pattern, 0), 64) for pattern in PATTERNS}
    for pattern, image in images.items():
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        assert np.array_equal(image, texture_uint8(texture_id(pattern, 0), 64))  # same bytes twice
        assert image.std() > 5, pattern  # a texture, not a flat colour
    flat = [image.tobytes() for image in images.values()]
    assert len(set(flat)) == len(PATTERNS)
    assert not np.array_equal(texture_uint8("texture-stripes-0", 64), texture_uint8("texture-stripes-1", 64))
    assert parse_texture_id("texture-rings-12") == ("rings", 12)
    for bad in ("texture-zebra-0", "stripes-0", "texture-stripes-x", "prior-0000"):
        with pytest.raises(ValueError, match="texture id"):
            parse_texture_id(bad)


# -- prior samples ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small test-bed prior fitted by the DAG's own fit-prior step, and its record."""
    from dwgf.pipeline.data_steps import fit_prior
    from dwgf.pipeline.solve import load_pipeline_prior

    root = tmp_path_factory.mktemp("wellspec")
    spec = {
        "suite": "t",
        "seed": 10,
        "image_size": 64,
        "device": "cpu",
        "dtype": "float32",
        "prior": {"kind": "gaussian_mixture", "fit": {"crops_per_image": 40, "n_components": 2, "seed": 0}},
        "held_out_ids": ["astronaut-r0080-c0180"],
        "held_out_source": {"kind": "bundled"},
    }
    record = root / "prior" / "prior.prov.json"
    fit_prior(spec, root, record)
    prior, _ = load_pipeline_prior(root, record, "cpu", "float32")
    return root, record, prior


def test_prior_samples_are_per_image_and_exact_decodes(fitted):
    _, _, prior = fitted
    both = sample_prior_images(prior, 10, ["prior-0000", "prior-0001"])
    alone = sample_prior_images(prior, 10, ["prior-0001"])
    assert both.dtype == torch.float32 and both.shape == (2, 3, 64, 64)
    assert torch.equal(both[1], alone[0])  # image k does not depend on the other ids
    assert not torch.equal(both[0], both[1])
    assert not torch.equal(sample_prior_images(prior, 11, ["prior-0000"])[0], both[0])  # the suite seed matters
    # x is D(z) for a latent of the prior: the encoder (exact inverse of the linear decoder) maps it back onto a
    # point that decodes to x again, and x is not quantised to 8-bit levels
    again = prior.decode(prior.encode(both, sample=False)).to(torch.float32)
    assert torch.allclose(again, both, atol=1e-4)
    assert not torch.allclose(both * 127.5, (both * 127.5).round(), atol=1e-3)
    assert prior_sample_id(7) == "prior-0007" and parse_prior_sample_id("prior-0007") == 7
    with pytest.raises(ValueError, match="prior-sample id"):
        parse_prior_sample_id("prior-7")


def test_composite_acquire_images_is_deterministic_and_recorded(fitted, tmp_path):
    from dwgf.pipeline.data_steps import acquire_images
    from dwgf.pipeline.images import load_image

    root, record, prior = fitted
    spec = {
        "suite": "t",
        "seed": 10,
        "image_size": 64,
        "dtype": "float32",
        "source": {"kind": "sets", "sets": SETS},
        "ids": [i for part in SETS for i in part["ids"]],
    }
    with pytest.raises(ValueError, match="--prior"):
        acquire_images(spec, root, tmp_path / "no-prior.prov.json")
    out = root / "data" / "images.prov.json"
    first = acquire_images(spec, root, out, prior_record=record)
    hashes = {name: sha256_file(root / name) for name in first["outputs"]}
    again = acquire_images(spec, root, out, prior_record=record)
    assert {name: sha256_file(root / name) for name in again["outputs"]} == hashes  # same bytes twice
    saved = json.loads(out.read_text())
    assert saved["extra"]["image_sets"] == {i: part["name"] for part in SETS for i in part["ids"]}
    assert saved["extra"]["images"]["prior-0000"].endswith("prior-0000.npy")
    assert saved["extra"]["images"]["texture-noise-1"].endswith("texture-noise-1.png")
    assert str(record.relative_to(root)) in saved["inputs"]  # the prior is a recorded input
    assert set(saved["seeds"]) == {"prior-0000", "prior-0001"}
    assert set(saved["outputs"]) == set(saved["extra"]["images"].values())
    # the stored ground truths are the sampled images and the textures, exactly
    x = load_image(root / saved["extra"]["images"]["prior-0001"], image_size=64)
    assert torch.equal(x, sample_prior_images(prior, 10, ["prior-0001"])[0])
    texture = load_image(root / saved["extra"]["images"]["texture-stripes-0"], image_size=64)
    assert torch.equal(texture, torch.from_numpy(texture_uint8("texture-stripes-0", 64)).permute(2, 0, 1) / 127.5 - 1)


# -- the plan -----------------------------------------------------------------------------------------------


def test_composite_plan_ids_sets_and_held_out_crops():
    plan = Plan(suite_config({"source": {"kind": "sets", "sets": SETS}}))
    check_plan(plan)
    assert plan.ids == ["prior-0000", "prior-0001", "astronaut-r0080-c0180", "texture-stripes-0", "texture-noise-1"]
    assert plan.image_set_of["texture-noise-1"] == "ood" and plan.images_need_prior
    assert plan.prior_spec()["held_out_ids"] == ["astronaut-r0080-c0180"]  # only crops can overlap training crops
    assert plan.acquire_spec()["dtype"] == "float32"
    # grids show every set: the first image of each set, then the second ...
    plan = Plan(suite_config({"source": {"kind": "sets", "sets": SETS}}, edit=lambda s: s["report"].update(
        qualitative_images=4)))  # fmt: skip
    assert plan.qualitative_ids() == ["prior-0000", "astronaut-r0080-c0180", "texture-stripes-0", "prior-0001"]
    # a single source keeps its spec (no re-run of existing suites) and its one set
    demo = Plan(suite_config(suite="demo"))
    assert set(demo.image_set_of.values()) == {"test"} and "dtype" not in demo.acquire_spec()


def _sets(**changes):
    sets = [dict(part, **changes.get(part["name"], {})) for part in copy.deepcopy(SETS)]
    return {"source": {"kind": "sets", "sets": sets}}


@pytest.mark.parametrize(
    ("data", "edit", "message"),
    [
        # prior samples need the exact-posterior test bed
        (_sets(), lambda s: s.update(prior=copy.deepcopy(CONFIG["suites"]["gpu_smoke"]["prior"])), "gaussian_mixture"),
        (_sets(ood={"ids": ["texture-zebra-0"]}), None, r"sets\[2\]\.ids\[0\]'.*texture id"),
        (_sets(ood={"ids": ["prior-0000"]}), None, "in sets 'well_specified' and 'ood'"),
        (_sets(held_out={"ids": ["nowhere-r0000-c0000"]}), None, r"sets\[1\]\.ids\[0\]"),
        (_sets(ood={"name": "held_out"}), None, "'held_out' is used twice"),
        ({"source": {"kind": "prior_samples"}, "ids": ["prior-1"]}, None, r"data\.ids\[0\]'.*prior-sample id"),
    ],
)
def test_plan_errors_name_the_key(data, edit, message):
    config = suite_config(data, edit=edit)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)
        check_plan(Plan(config))


@pytest.mark.parametrize(
    "data",
    [
        {"source": {"kind": "sets", "sets": SETS}, "ids": ["prior-0000"]},  # ids belong to the sets
        {"source": {"kind": "sets", "sets": [{"name": "x", "source": {"kind": "folder", "path": "."}, "ids": ["a"]}]}},
        {"source": {"kind": "sets", "sets": [{"source": {"kind": "textures"}, "ids": ["texture-noise-0"]}]}},
        {"source": {"kind": "textures"}},  # a single source needs ids
    ],
)
def test_schema_refuses_malformed_data(data):
    with pytest.raises(ConfigError):
        validate_config(suite_config(data))


# -- the image_set column -------------------------------------------------------------------------------------


def test_image_set_column_is_per_image_only():
    from dwgf.metrics.schema import RowKeys, validate_frame

    keys = RowKeys("s", "box", "dwgf", n_particles=2)
    row = keys.for_image("prior-0000", image_set="well_specified").row(metric="psnr", protocol="standard", value=1.0)
    assert validate_frame([row])["image_set"].tolist() == ["well_specified"]
    bad = keys.row(metric="fid", protocol="p", value=1.0, sample_policy="all_particles")
    bad["image_set"] = "ood"
    with pytest.raises(ValueError, match="image_set"):
        validate_frame([bad])
