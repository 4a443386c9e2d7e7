"""dwgf.acquire, offline: local stand-ins for the hub (tiny SD folder), file:// URLs, generated images."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dwgf import acquire
from dwgf.acquire import (
    IntegrityError,
    acquire_aux_weights,
    acquire_images,
    acquire_weights,
    aux_weight_path,
    load_lock,
    name_sha256_prefix,
    validate_lock,
)
from dwgf.io import sha256_file

LOCK_PATH = Path(__file__).resolve().parent.parent / "workflow" / "weights.lock.yaml"


@pytest.fixture(scope="module")
def repo_lock():
    return load_lock(LOCK_PATH)


def _lock_for(folder: Path, repo_lock: dict, mirrors: list[dict] | None = None) -> dict:
    """The repository lock with the tiny folder's real hashes in place of the SD ones."""
    lock = copy.deepcopy(repo_lock)
    lock["model"]["files"] = {name: sha256_file(folder / name) for name in lock["model"]["files"]}
    if mirrors is not None:
        lock["model"]["mirrors"] = mirrors
    return lock


# -- the lock file -------------------------------------------------------------------------------------------
def test_repository_lock_is_valid_and_pins_the_first_mirror(repo_lock):
    first = repo_lock["model"]["mirrors"][0]
    assert first["repo_id"] == "Manojb/stable-diffusion-2-1-base"
    assert len(first["revision"]) == 40
    assert set(repo_lock["model"]["files"]) == set(repo_lock["model"]["allow_patterns"])
    # only safetensors weights, never pickles
    weights = [name for name in repo_lock["model"]["files"] if not name.endswith((".json", ".txt"))]
    assert weights and all(name.endswith(".safetensors") for name in weights)
    assert set(repo_lock["auxiliary"]) == {"alexnet-owt-7be5be79.pth", "vgg16-397923af.pth", "inception-2015-12-05.pt"}
    # a hub load by the prior fetches exactly the files the lock verifies
    from dwgf.priors.stable_diffusion import HUB_ALLOW_PATTERNS

    assert set(HUB_ALLOW_PATTERNS) == set(repo_lock["model"]["allow_patterns"])


def test_lock_validation_names_the_bad_key(repo_lock):
    bad = copy.deepcopy(repo_lock)
    bad["model"]["mirrors"][0]["revision"] = "main"
    with pytest.raises(ValueError, match=r"mirrors\[0\]\.revision"):
        validate_lock(bad)
    bad = copy.deepcopy(repo_lock)
    bad["model"]["files"]["unet/diffusion_pytorch_model.safetensors"] = "ABC"
    with pytest.raises(ValueError, match="64-hex sha256"):
        validate_lock(bad)
    bad = copy.deepcopy(repo_lock)
    bad["model"]["files"]["unet/diffusion_pytorch_model.bin"] = None
    with pytest.raises(ValueError, match="allow_patterns"):
        validate_lock(bad)


# -- SD weights from a local pre-seeded folder ---------------------------------------------------------------
def test_local_source_with_matching_lock(tmp_path, tiny_sd_path, repo_lock):
    lock = _lock_for(tiny_sd_path, repo_lock)
    dest = acquire_weights(lock, tmp_path / "weights", source="local", local_dir=tiny_sd_path)
    manifest = json.loads((dest / acquire.MANIFEST_NAME).read_text())
    assert manifest["source"] == {"kind": "local", "path": str(tiny_sd_path.resolve())}
    for name, digest in lock["model"]["files"].items():
        assert manifest["files"][name]["sha256"] == digest == sha256_file(dest / name)
    # the acquired folder is a loadable prior
    from dwgf.priors.stable_diffusion import StableDiffusionPrior

    prior = StableDiffusionPrior.from_pretrained(dest)
    assert (
        prior.describe()["files"]["unet/diffusion_pytorch_model.safetensors"]["sha256"]
        == (lock["model"]["files"]["unet/diffusion_pytorch_model.safetensors"])
    )


def test_local_source_with_corrupted_file_names_it(tmp_path, tiny_sd_path, repo_lock):
    lock = _lock_for(tiny_sd_path, repo_lock)
    seeded = tmp_path / "seeded"
    shutil.copytree(tiny_sd_path, seeded)
    weights = seeded / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    dest = tmp_path / "weights"
    with pytest.raises(IntegrityError, match=r"vae/diffusion_pytorch_model\.safetensors") as info:
        acquire_weights(lock, dest, source="local", local_dir=seeded)
    (name, expected, actual), *rest = info.value.mismatches
    assert not rest and name == "vae/diffusion_pytorch_model.safetensors"
    assert expected == sha256_file(tiny_sd_path / name) and actual == hashlib.sha256(bytes(data)).hexdigest()
    assert expected in str(info.value) and actual in str(info.value)
    assert (dest / name).is_file(), "a mismatch must not delete anything"


def test_local_source_missing_file_says_what_to_place(tmp_path, tiny_sd_path, repo_lock):
    seeded = tmp_path / "seeded"
    shutil.copytree(tiny_sd_path, seeded)
    (seeded / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks 'tokenizer/merges\.txt'.*Manojb/stable-diffusion-2-1-base"):
        acquire_weights(_lock_for(tiny_sd_path, repo_lock), tmp_path / "w", source="local", local_dir=seeded)


def test_unknown_hashes_refused_unless_recorded(tmp_path, tiny_sd_path, repo_lock):
    # the repository lock has null hashes: without record_unknown nothing is trusted
    with pytest.raises(ValueError, match="record_unknown"):
        acquire_weights(repo_lock, tmp_path / "w1", source="local", local_dir=tiny_sd_path)
    with pytest.warns(UserWarning, match="TRUST ON FIRST USE"):
        dest = acquire_weights(repo_lock, tmp_path / "w2", source="local", local_dir=tiny_sd_path, record_unknown=True)
    proposed = yaml.safe_load((dest / acquire.PROPOSED_LOCK_NAME).read_text())
    validate_lock(proposed)
    assert proposed["model"]["files"] == {
        name: sha256_file(tiny_sd_path / name) for name in repo_lock["model"]["files"]
    }
    # the proposed lock now verifies the same bytes without record_unknown
    acquire_weights(proposed, tmp_path / "w3", source="local", local_dir=tiny_sd_path)


# -- SD weights from the hub (snapshot_download replaced by a local copy: no hub is reachable) ---------------
class FakeHub:
    """Stands in for huggingface_hub.snapshot_download: copies allowed files from a local folder into a snapshot
    folder ``<root>/<repo>/<revision>`` and returns it (tests/test_hub_downloads.py runs the real client against a
    loopback hub server)."""

    def __init__(self, folder: Path, root: Path, failing: set[str] = frozenset()):
        self.folder, self.root, self.failing, self.calls = folder, root, failing, []

    def __call__(self, repo_id, revision=None, allow_patterns=None, **kwargs):
        self.calls.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns, **kwargs})
        if repo_id in self.failing:
            raise OSError(f"{repo_id} is gone")
        snapshot = self.root / repo_id.replace("/", "--") / revision
        for pattern in allow_patterns:
            target = snapshot / pattern
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.folder / pattern, target)
        return str(snapshot)


def test_hub_source_passes_pinned_revision_and_patterns(tmp_path, tiny_sd_path, repo_lock, monkeypatch):
    import huggingface_hub

    first, second = "a" * 40, "b" * 40
    mirrors = [{"repo_id": "gone/sd21", "revision": first}, {"repo_id": "mirror/sd21", "revision": second}]
    lock = _lock_for(tiny_sd_path, repo_lock, mirrors)
    hub = FakeHub(tiny_sd_path, tmp_path / "hub", failing={"gone/sd21"})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    dest = acquire_weights(lock, tmp_path / "weights", source="hub")
    assert [c["repo_id"] for c in hub.calls] == ["gone/sd21", "mirror/sd21"]
    assert [c["revision"] for c in hub.calls] == [first, second]
    assert all(c["allow_patterns"] == repo_lock["model"]["allow_patterns"] for c in hub.calls)
    manifest = json.loads((dest / acquire.MANIFEST_NAME).read_text())
    source = manifest["source"]
    assert {key: source[key] for key in ("kind", "repo_id", "revision", "revision_pinned_in_lock")} == {
        "kind": "hub",
        "repo_id": "mirror/sd21",
        "revision": second,
        "revision_pinned_in_lock": True,
    }
    # the record also says which mirror was skipped and why, and where the hub was
    assert source["repo_type"] == "model" and source["skipped_mirrors"] == [
        f"gone/sd21@{first}: OSError: gone/sd21 is gone"
    ]
    assert source["endpoint"] == acquire.hub_settings()["endpoint"]


def test_hub_source_skips_unpinned_mirrors(tmp_path, tiny_sd_path, repo_lock, monkeypatch):
    import huggingface_hub

    lock = _lock_for(tiny_sd_path, repo_lock, [{"repo_id": "mirror/sd21", "revision": None}])
    hub = FakeHub(tiny_sd_path, tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    with pytest.raises(RuntimeError, match="no pinned revision"):
        acquire_weights(lock, tmp_path / "w", source="hub")
    assert hub.calls == []
    # explicitly allowed: the current commit is resolved first and that commit is what gets downloaded
    monkeypatch.setattr(acquire, "_resolve_revision", lambda repo_id, repo_type: "c" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # resolving a current commit needs the hub
    with pytest.warns(UserWarning, match="UNPINNED MODEL"):
        dest = acquire_weights(lock, tmp_path / "w", source="hub", allow_unpinned=True)
    assert hub.calls[-1]["revision"] == "c" * 40
    source = json.loads((dest / acquire.MANIFEST_NAME).read_text())["source"]
    assert source["revision"] == "c" * 40 and source["revision_pinned_in_lock"] is False


# -- metric backbones ----------------------------------------------------------------------------------------
def _aux_lock(name: str, url: str, sha256: str | None) -> dict:
    return {"schema": acquire.LOCK_SCHEMA, "auxiliary": {name: {"url": url, "sha256": sha256}}}


def test_name_prefix_parsing():
    assert name_sha256_prefix("alexnet-owt-7be5be79.pth") == "7be5be79"
    assert name_sha256_prefix("vgg16-397923af.pth") == "397923af"
    assert name_sha256_prefix("inception-2015-12-05.pt") is None


def test_aux_from_file_url_checks_the_name_prefix(tmp_path):
    payload = b"pretend weights" * 100
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    good_name, bad_name = f"fakenet-{prefix}.pth", "fakenet-00000000.pth"
    served = tmp_path / "served"
    served.mkdir()
    (served / good_name).write_bytes(payload)
    (served / bad_name).write_bytes(payload)
    cache = tmp_path / "cache"

    paths = acquire_aux_weights(_aux_lock(good_name, (served / good_name).as_uri(), None), cache)
    assert paths[good_name] == aux_weight_path(cache, good_name) == cache / "hub" / "checkpoints" / good_name
    assert paths[good_name].read_bytes() == payload
    manifest = json.loads((cache / acquire.MANIFEST_NAME).read_text())
    assert manifest["files"][good_name]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert manifest["files"][good_name]["verified"] == "file-name prefix"

    with pytest.raises(IntegrityError, match=bad_name):
        acquire_aux_weights(_aux_lock(bad_name, (served / bad_name).as_uri(), None), cache)
    assert not aux_weight_path(cache, bad_name).exists(), "a rejected download must not sit where libraries look"


def test_aux_full_hash_and_unknown_hash(tmp_path):
    payload = b"inception bytes"
    digest = hashlib.sha256(payload).hexdigest()
    local = tmp_path / "local"
    local.mkdir()
    (local / "inception-2015-12-05.pt").write_bytes(payload)
    cache = tmp_path / "cache"
    name = "inception-2015-12-05.pt"

    acquire_aux_weights(_aux_lock(name, "https://unused.invalid/x.pt", digest), cache, source="local", local_dir=local)
    assert sha256_file(aux_weight_path(cache, name)) == digest
    with pytest.raises(IntegrityError, match="expected sha256 " + "0" * 64):
        acquire_aux_weights(_aux_lock(name, "x", "0" * 64), tmp_path / "c2", source="local", local_dir=local)

    unknown = _aux_lock(name, "x", None)
    with pytest.raises(ValueError, match="no sha256 in the lock"):
        acquire_aux_weights(unknown, tmp_path / "c3", source="local", local_dir=local)
    assert not aux_weight_path(tmp_path / "c3", name).exists()
    with pytest.warns(UserWarning, match="TRUST ON FIRST USE"):
        acquire_aux_weights(unknown, tmp_path / "c4", source="local", local_dir=local, record_unknown=True)
    proposed = yaml.safe_load((tmp_path / "c4" / acquire.PROPOSED_LOCK_NAME).read_text())
    assert proposed["auxiliary"][name]["sha256"] == digest


# -- FFHQ images -----------------------------------------------------------------------------------------------
def _random_image(side: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (side, side, channels), dtype=np.uint8), mode)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def ffhq_folder(tmp_path):
    folder = tmp_path / "ffhq"
    (folder / "00000").mkdir(parents=True)
    (folder / "00000" / "00000.png").write_bytes(_encoded(_random_image(64, 0), "PNG"))
    (folder / "00000" / "00001.png").write_bytes(_encoded(_random_image(128, 1, "RGBA"), "PNG"))
    (folder / "00000" / "00002.jpg").write_bytes(_encoded(_random_image(64, 2), "JPEG"))
    return folder


def test_images_from_folder_with_resize_and_manifest(tmp_path, ffhq_folder):
    dest = acquire_images({"kind": "folder", "path": str(ffhq_folder)}, ["00000", "00001", "00002"], 64, tmp_path / "o")
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["size"] == 64 and manifest["source"]["kind"] == "folder"
    for image_id, record in manifest["images"].items():
        out = dest / f"{image_id}.png"
        assert record["sha256"] == sha256_file(out)
        with Image.open(out) as image:
            assert image.mode == "RGB" and image.size == (64, 64)
    # 00000 is already 64 px: pixels unchanged
    original = np.asarray(_random_image(64, 0))
    assert np.array_equal(np.asarray(Image.open(dest / "00000.png")), original)
    assert manifest["images"]["00000"]["resized"] is False
    assert manifest["images"]["00000"]["original_sha256"] == sha256_file(ffhq_folder / "00000" / "00000.png")
    # 00001 is 128 px RGBA: alpha dropped, then Lanczos to 64 px (independent PIL computation)
    expected = _random_image(128, 1, "RGBA").convert("RGB").resize((64, 64), Image.LANCZOS)
    assert np.array_equal(np.asarray(Image.open(dest / "00001.png")), np.asarray(expected))
    assert manifest["images"]["00001"]["resized"] is True and manifest["images"]["00001"]["original_size"] == [128, 128]


def test_images_from_zip_and_tar_match_folder(tmp_path, ffhq_folder):
    ids = ["00000", "00001", "00002"]
    reference = acquire_images({"kind": "folder", "path": str(ffhq_folder)}, ids, 32, tmp_path / "ref")
    zipped = tmp_path / "ffhq.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        for path in sorted(ffhq_folder.rglob("*.*")):
            archive.write(path, f"images/{path.relative_to(ffhq_folder).as_posix()}")
    tarred = tmp_path / "ffhq.tar.gz"
    with tarfile.open(tarred, "w:gz") as archive:
        archive.add(ffhq_folder, arcname="images")
    for archive_path in (zipped, tarred):
        dest = acquire_images(
            {"kind": "archive", "path": str(archive_path)}, ids, 32, tmp_path / f"out-{archive_path.name}"
        )
        manifest = json.loads((dest / "manifest.json").read_text())
        assert manifest["source"]["sha256"] == sha256_file(archive_path)
        for image_id in ids:
            assert sha256_file(dest / f"{image_id}.png") == sha256_file(reference / f"{image_id}.png")


def test_missing_id_names_id_and_source(tmp_path, ffhq_folder):
    with pytest.raises(FileNotFoundError, match=r"'00042'.*ffhq"):
        acquire_images({"kind": "folder", "path": str(ffhq_folder)}, ["00000", "00042"], 64, tmp_path / "o")


def test_traversal_zip_is_rejected(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("images/00000.png", _encoded(_random_image(16, 0), "PNG"))
        archive.writestr("../00001.png", _encoded(_random_image(16, 1), "PNG"))
    dest = tmp_path / "out" / "images"
    with pytest.raises(ValueError, match=r"\.\./00001\.png.*path traversal"):
        acquire_images({"kind": "archive", "path": str(evil)}, ["00000"], 16, dest)
    assert not (tmp_path / "out" / "00001.png").exists() and not (dest / "00000.png").exists()

    tarred = tmp_path / "evil.tar"
    with tarfile.open(tarred, "w") as archive:
        link = tarfile.TarInfo("images/00000.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    with pytest.raises(ValueError, match="links/devices"):
        acquire_images({"kind": "archive", "path": str(tarred)}, ["00000"], 16, dest)


def test_lmdb_and_unpinned_hub_sources_are_refused(tmp_path):
    with pytest.raises(ValueError, match="pickles"):
        acquire_images({"kind": "folder", "path": str(tmp_path / "validation.lmdb")}, ["00000"], 64, tmp_path / "o")
    # kind 'lmdb' is the one reader of such stores (restricted unpickler; tests/test_hub_downloads.py)
    with pytest.raises(FileNotFoundError, match="LMDB"):
        acquire_images({"kind": "lmdb", "path": str(tmp_path / "x")}, ["00000"], 64, tmp_path / "o")
    with pytest.raises(ValueError, match="40-hex"):
        acquire_images({"kind": "hf_dataset", "repo_id": "someone/ffhq-png"}, ["00000"], 64, tmp_path / "o")
    with pytest.raises(ValueError, match="pickles"):
        acquire_images(
            {"kind": "hf_dataset", "repo_id": "someone/ffhq", "revision": "d" * 40, "filename_template": "{id}.pkl"},
            ["00000"],
            64,
            tmp_path / "o",
        )
    with pytest.raises(ValueError, match="image id"):
        acquire_images({"kind": "folder", "path": str(tmp_path)}, ["../00000"], 64, tmp_path / "o")


def test_non_square_image_is_refused(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (64, 48)).save(folder / "00000.png")
    with pytest.raises(ValueError, match="64x48, not square"):
        acquire_images({"kind": "folder", "path": str(folder)}, ["00000"], 64, tmp_path / "o")
