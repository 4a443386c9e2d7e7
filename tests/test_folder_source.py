"""Your own images on the test bed: a ``folder`` source through the smoke suite's plan (issue 15, section 4)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from dwgf.io import sha256_file
from dwgf.pipeline.config import REPO_ROOT, ConfigError, load_config
from dwgf.pipeline.plan import Plan
from dwgf.provenance import read_record


@pytest.fixture
def folder(tmp_path):
    """Two user images: a 64-px PNG and a 96-px JPEG (resized by the stated Lanczos policy)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "cat_01.png")
    gradient = np.linspace(0, 255, 96 * 96 * 3).reshape(96, 96, 3).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "dog-2.jpg", quality=95)
    return folder


def smoke_config(source: dict, ids: list[str]) -> dict:
    config = load_config(overrides={"suite": "smoke"})
    config = copy.deepcopy(config)
    config["suites"]["smoke"]["data"] = {"source": source, "ids": ids}
    return config


def test_folder_images_run_on_the_test_bed_with_their_true_provenance(folder, tmp_path):
    from dwgf.pipeline.data_steps import acquire_images, fit_prior

    plan = Plan(smoke_config({"kind": "folder", "path": str(folder)}, ["cat_01", "dog-2"]))
    root = tmp_path / "results" / "smoke"
    acquire_images(plan.acquire_spec(), root, root / "data/images.prov.json")
    record = read_record(root / "data/images.prov.json")
    manifest = json.loads((root / record["extra"]["source_manifest"]).read_text())
    assert manifest["source"] == {"kind": "folder", "path": str(folder.resolve())}
    assert manifest["images"]["cat_01"]["original_name"] == "cat_01.png"
    assert manifest["images"]["dog-2"]["original_name"] == "dog-2.jpg"
    for image_id, name in (("cat_01", "cat_01.png"), ("dog-2", "dog-2.jpg")):
        assert manifest["images"][image_id]["original_sha256"] == sha256_file(folder / name)
    assert manifest["images"]["dog-2"]["resized"] and not manifest["images"]["cat_01"]["resized"]
    stored = np.asarray(Image.open(root / "data/images/cat_01.png").convert("RGB"))
    assert np.array_equal(stored, np.asarray(Image.open(folder / "cat_01.png")))  # 64 px: bytes as given

    fit_prior(plan.prior_spec(), root, root / "prior/prior.prov.json")
    prior_record = read_record(root / "prior/prior.prov.json")
    assert prior_record["extra"]["fit"]["n_excluded"] == 0  # the user's images are not bundled crops
    held_out = json.loads((root / "prior" / "testbed_prior.json").read_text())["config"]["held_out"]
    assert held_out["ids"] == ["cat_01", "dog-2"] and held_out["source"]["kind"] == "folder"
    assert "not checked" in held_out["note"]


def test_plan_time_checks_name_the_key(folder):
    Plan(smoke_config({"kind": "folder", "path": str(folder)}, ["cat_01", "dog-2"])).check_data()
    with pytest.raises(ConfigError, match=r"data\.ids.*\['cow'\] not found"):
        Plan(smoke_config({"kind": "folder", "path": str(folder)}, ["cat_01", "cow"])).check_data()
    with pytest.raises(ConfigError, match=r"data\.source\.path"):
        Plan(smoke_config({"kind": "folder", "path": str(folder / "absent")}, ["cat_01"])).check_data()
    with pytest.raises(ConfigError, match=r"data\.ids.*bundled crop.*kind: folder"):
        Plan(smoke_config({"kind": "bundled"}, ["cat_01"])).check_data()  # a bundled source takes crop ids only


def test_snakemake_dry_run_refuses_a_missing_image(folder, tmp_path):
    """The check runs when the Snakefile is parsed, so `snakemake -n` fails before any job."""
    override = tmp_path / "mine.yaml"
    data = {"source": {"kind": "folder", "path": str(folder)}, "ids": ["cat_01", "cow"]}
    override.write_text(yaml.safe_dump({"suites": {"smoke": {"data": data}}}))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "-n", "--configfile"]
    command += [str(REPO_ROOT / "config.yaml"), str(override), "--config", "suite=smoke"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "data.ids" in result.stdout + result.stderr and "cow" in result.stdout + result.stderr
