"""``dwgf restore``: one image of your own, outside the DAG, with the DAG's files and provenance (issue 15, §4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dwgf.cli import main
from dwgf.io import sha256_file
from dwgf.provenance import read_record


@pytest.fixture
def photo(tmp_path):
    """A 96-px user image with a name that is not an id (resized to 64 px, id 'my_photo')."""
    rng = np.random.default_rng(1)
    base = np.linspace(0, 255, 96)[None, :, None] * np.ones((96, 1, 3))
    pixels = np.clip(base + rng.normal(0, 20, (96, 96, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "my photo.png"
    Image.fromarray(pixels).save(path)
    return path


def _check_outputs(out, photo, method="dwgf", task="sr8"):
    image_id = "my_photo"
    manifest = json.loads((out / "data" / "images" / "manifest.json").read_text())
    assert manifest["images"][image_id]["original_sha256"] == sha256_file(photo)
    assert manifest["images"][image_id]["resized"]
    with np.load(out / "observations" / task / f"{image_id}.npz") as data:
        assert data["y"].shape == (1, 3, 8, 8)
    folder = out / "solve" / method / task / "main" / "images"
    with np.load(folder / f"{image_id}.npz") as data:
        assert data["particles"].shape == (2, 3, 64, 64)
    assert (folder / f"{image_id}_p0.png").is_file() and (folder / f"{image_id}_p1.png").is_file()
    shard = read_record(out / "solve" / method / task / "main" / "shard-000.prov.json")
    assert shard["step"] == "solve" and shard["extra"]["images"][image_id]["status"] == "ok"
    image_record = json.loads((folder / f"{image_id}.json").read_text())
    assert image_record["inputs"]["prior/prior.prov.json"] == sha256_file(out / "prior" / "prior.prov.json")
    grid = read_record(out / "grid.png.prov.json")
    assert grid["step"] == "restore" and grid["outputs"]["grid.png"] == sha256_file(out / "grid.png")
    assert "solve/dwgf/sr8/main/shard-000.prov.json" in grid["inputs"]
    pixels = np.asarray(Image.open(out / "grid.png").convert("L"), dtype=float)
    assert pixels.shape[1] > 400 and pixels.std() > 5
    return grid


def test_restore_on_the_test_bed_fits_the_prior_and_shows_the_exact_posterior(photo, tmp_path):
    out = tmp_path / "out"
    args = [str(photo), "--task", "sr8", "--method", "dwgf", "--suite", "smoke", "--out", str(out), "--no-progress"]
    assert main(["restore", *args]) == 0
    grid = _check_outputs(out, photo)
    assert read_record(out / "prior" / "prior.prov.json")["step"] == "fit-prior"
    assert list(grid["seeds"]) == ["my_photo"]  # the exact posterior sample's seed
    first = (out / "solve" / "dwgf" / "sr8" / "main" / "images" / "my_photo.npz").read_bytes()

    # again into another folder with the fitted prior given: same settings and seeds -> the same particles
    again = tmp_path / "again"
    assert main(["restore", *args[:-3], "--out", str(again), "--prior", str(out / "prior"), "--no-progress"]) == 0
    assert (again / "solve" / "dwgf" / "sr8" / "main" / "images" / "my_photo.npz").read_bytes() == first
    record = read_record(again / "prior" / "prior.prov.json")
    assert record["step"] == "use-prior" and record["extra"]["prior"]["kind"] == "gaussian_mixture"
    assert str(out / "prior" / "testbed_prior.safetensors") in record["inputs"]


def test_restore_with_a_stable_diffusion_folder_on_cpu(photo, tiny_sd_path, tmp_path):
    out = tmp_path / "sd"
    args = [str(photo), "--task", "sr8", "--method", "dwgf", "--suite", "smoke", "--prior", str(tiny_sd_path)]
    assert main(["restore", *args, "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    grid = _check_outputs(out, photo)
    assert grid["seeds"] == {}  # no exact posterior for Stable Diffusion
    record = read_record(out / "prior" / "prior.prov.json")
    assert record["extra"]["prior"]["kind"] == "stable_diffusion" and len(record["inputs"]) > 3


def test_restore_names_bad_arguments(photo, tmp_path):
    with pytest.raises(ValueError, match="--task 'cs'"):
        main(["restore", str(photo), "--task", "cs", "--method", "dwgf", "--suite", "smoke"])
    with pytest.raises(FileNotFoundError, match="neither a test-bed prior"):
        main(["restore", str(photo), "--task", "sr8", "--method", "dwgf", "--prior", str(tmp_path)])


@pytest.mark.gpu
def test_restore_with_a_stable_diffusion_folder_at_512_px_on_the_gpu(photo, tiny_sd_path, tmp_path):
    """The paper suite's settings (512 px, device cuda, N = 4), with the tiny SD folder standing in for SD-2.1-base."""
    out = tmp_path / "gpu"
    args = [str(photo), "--task", "box", "--method", "dwgf", "--prior", str(tiny_sd_path), "--steps", "3"]
    assert main(["restore", *args, "--out", str(out), "--no-progress"]) == 0  # --suite defaults to paper for SD
    folder = out / "solve" / "dwgf" / "box" / "main" / "images"
    with np.load(folder / "my_photo.npz") as data:
        assert data["particles"].shape == (4, 3, 512, 512) and np.isfinite(data["particles"]).all()
    shard = read_record(out / "solve" / "dwgf" / "box" / "main" / "shard-000.prov.json")
    assert shard["config"]["device"] == "cuda" and shard["config"]["image_size"] == 512
    assert read_record(out / "grid.png.prov.json")["step"] == "restore"
