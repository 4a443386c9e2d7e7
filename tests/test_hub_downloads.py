"""Downloads for real: huggingface_hub against a loopback hub (dwgf.testing.hub_server), the official LMDB layout.

The server speaks the hub's HTTP protocol on 127.0.0.1 (repo info, tree listing, resolve with X-Repo-Commit /
ETag / X-Linked-Etag / X-Linked-Size, a CDN origin with Range); the client is the installed huggingface_hub,
unmodified. conftest.py makes the suite offline (HF_HUB_OFFLINE=1, read by huggingface_hub at import), so the
in-process tests switch it back on for their duration (`online`), and the verb tests run `dwgf` in a fresh process
with the environment a user would set.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dwgf import acquire
from dwgf.acquire import IntegrityError, acquire_images, acquire_weights, load_lock, validate_lock
from dwgf.io import sha256_file
from dwgf.testing.hub_server import HubServer

ROOT = Path(__file__).resolve().parent.parent
LOCK_PATH = ROOT / "workflow" / "weights.lock.yaml"
MODEL_REPO = "dwgf-test/tiny-sd"
UNET = "unet/diffusion_pytorch_model.safetensors"
VAE = "vae/diffusion_pytorch_model.safetensors"


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server
        xet = [r for r in server.requests if "xet" in r["path"].lower()]
        assert not xet, f"the client tried the Xet protocol: {xet}"


@pytest.fixture
def online(monkeypatch, tmp_path, hub):
    """This process talks to the loopback hub, with its own empty hub cache."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


def _go_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _model_lock(tiny_sd_path: Path, mirrors: list[dict], hashes: bool = True) -> dict:
    lock = copy.deepcopy(load_lock(LOCK_PATH))
    lock["model"]["mirrors"] = mirrors
    lock["model"]["files"] = {
        name: (sha256_file(tiny_sd_path / name) if hashes else None) for name in lock["model"]["files"]
    }
    return lock


def _nothing_in(dest: Path) -> bool:
    return not dest.exists() or not any(p.is_file() for p in dest.rglob("*"))


def test_hub_server_command_serves_a_folder(tmp_path):
    """`python -m dwgf.testing.hub_server`: the documented command that mirrors local folders as a hub."""
    import urllib.request

    folder = tmp_path / "repo"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text("{}")
    command = [sys.executable, "-m", "dwgf.testing.hub_server", "--model", f"me/sd={folder}@{'a' * 40}", "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=_environment())
    try:
        assert server.stdout.readline().strip() == f"model me/sd at revision {'a' * 40}"
        endpoint = server.stdout.readline().split()[2]
        assert endpoint.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{endpoint}/me/sd/resolve/{'a' * 40}/unet/config.json") as answer:
            assert answer.read() == b"{}" and answer.headers["X-Repo-Commit"] == "a" * 40
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- SD weights ----------------------------------------------------------------------------------------------
def test_weights_from_hub_verified_then_offline_from_the_cache(tmp_path, tiny_sd_path, hub, online, monkeypatch):
    commit = hub.add_repo(MODEL_REPO, tiny_sd_path)
    mirrors = [{"repo_id": "gone/sd21", "revision": "0" * 40}, {"repo_id": MODEL_REPO, "revision": commit}]
    lock = _model_lock(tiny_sd_path, mirrors)
    dest = acquire_weights(lock, tmp_path / "weights", source="hub")

    manifest = json.loads((dest / acquire.MANIFEST_NAME).read_text())
    source = manifest["source"]
    assert (source["repo_id"], source["revision"], source["endpoint"]) == (MODEL_REPO, commit, hub.endpoint)
    assert source["offline"] is False and len(source["skipped_mirrors"]) == 1 and source["hub_hash_unchecked"] == []
    assert source["skipped_mirrors"][0].startswith(f"gone/sd21@{'0' * 40}: RepositoryNotFoundError")
    for name, digest in lock["model"]["files"].items():
        assert sha256_file(dest / name) == digest == manifest["files"][name]["sha256"]
        assert not (dest / name).is_symlink(), "dest holds copies, not links into the cache"
    # the large files came from the CDN origin after the hub's redirect, the small ones from the hub itself
    cdn_paths = {r["path"] for r in hub.requests if r["role"] == "cdn" and r["method"] == "GET"}
    assert f"/lfs/{lock['model']['files'][UNET]}" in cdn_paths

    # the same call offline: the hub is gone, the cache answers, and the bytes verify again
    hub.stop()
    _go_offline(monkeypatch)
    (dest / UNET).unlink()
    dest = acquire_weights(lock, tmp_path / "weights", source="hub")
    source = json.loads((dest / acquire.MANIFEST_NAME).read_text())["source"]
    assert source["offline"] is True and source["revision"] == commit
    assert sha256_file(dest / UNET) == lock["model"]["files"][UNET]
    hub.start()  # for the fixture's teardown


def test_wrong_revision_fails_and_leaves_nothing(tmp_path, tiny_sd_path, hub, online):
    hub.add_repo(MODEL_REPO, tiny_sd_path)
    lock = _model_lock(tiny_sd_path, [{"repo_id": MODEL_REPO, "revision": "f" * 40}])
    with pytest.raises(RuntimeError, match=rf"{MODEL_REPO}@{'f' * 40}: RevisionNotFoundError"):
        acquire_weights(lock, tmp_path / "weights", source="hub")
    assert _nothing_in(tmp_path / "weights")


def test_missing_file_is_named(tmp_path, tiny_sd_path, hub, online):
    served = {p.relative_to(tiny_sd_path).as_posix(): p.read_bytes() for p in tiny_sd_path.rglob("*") if p.is_file()}
    del served["tokenizer/merges.txt"]
    commit = hub.add_repo(MODEL_REPO, served)
    lock = _model_lock(tiny_sd_path, [{"repo_id": MODEL_REPO, "revision": commit}])
    with pytest.raises(FileNotFoundError, match=r"lacks \['tokenizer/merges\.txt'\]"):
        acquire_weights(lock, tmp_path / "weights", source="hub")
    assert _nothing_in(tmp_path / "weights")


@pytest.mark.parametrize("lock_knows_hashes", [True, False])
def test_corrupted_file_is_named_rejected_and_refetched(tmp_path, tiny_sd_path, hub, online, lock_knows_hashes):
    commit = hub.add_repo(MODEL_REPO, tiny_sd_path)
    lock = _model_lock(tiny_sd_path, [{"repo_id": MODEL_REPO, "revision": commit}], hashes=lock_knows_hashes)
    hub.corrupt(MODEL_REPO, VAE)
    dest = tmp_path / "weights"
    # caught by the hub's own hash of the file even when the lock knows none (trust on first use)
    with pytest.raises(IntegrityError, match=r"vae/diffusion_pytorch_model\.safetensors") as info:
        acquire_weights(lock, dest, source="hub", record_unknown=True)
    (name, expected, actual), *rest = info.value.mismatches
    assert not rest and name == VAE and expected.startswith(sha256_file(tiny_sd_path / VAE))
    assert _nothing_in(dest), "no byte reaches the destination before every file verified"
    rejected = list(online.rglob("*.rejected"))
    assert len(rejected) == 1 and hashlib.sha256(rejected[0].read_bytes()).hexdigest() == actual
    # the next run downloads the file again instead of reusing the rejected bytes
    hub.clear_faults()
    if lock_knows_hashes:
        acquire_weights(lock, dest, source="hub")
    else:
        with pytest.warns(UserWarning, match="TRUST ON FIRST USE"):
            acquire_weights(lock, dest, source="hub", record_unknown=True)
    assert sha256_file(dest / VAE) == sha256_file(tiny_sd_path / VAE)


def test_truncated_transfer_is_named_and_leaves_nothing(tmp_path, tiny_sd_path, hub, online):
    commit = hub.add_repo(MODEL_REPO, tiny_sd_path)
    lock = _model_lock(tiny_sd_path, [{"repo_id": MODEL_REPO, "revision": commit}])
    hub.truncate(MODEL_REPO, UNET, 1000)
    named = r"Consistency check failed.*\[not downloaded: unet/diffusion_pytorch_model\.safetensors\]"
    with pytest.raises(RuntimeError, match=named):
        acquire_weights(lock, tmp_path / "weights", source="hub")
    assert _nothing_in(tmp_path / "weights")
    blobs = [p for p in online.rglob("blobs/*") if p.name == lock["model"]["files"][UNET]]
    assert not blobs, "a truncated file must not sit in the cache under its hash"
    leftovers = [p.name for p in online.rglob("*") if p.is_file() and p.stat().st_size == 1000]
    assert not leftovers


def test_dropped_connection_resumes_with_range(tmp_path, tiny_sd_path, hub, online, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub counts progress per chunk (10 MB by default, more than the tiny UNet): smaller chunks make
    # the bytes before the cut count, as they do for a real 3.5 GB UNet
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    commit = hub.add_repo(MODEL_REPO, tiny_sd_path)
    lock = _model_lock(tiny_sd_path, [{"repo_id": MODEL_REPO, "revision": commit}])
    size = (tiny_sd_path / UNET).stat().st_size
    hub.drop_once(MODEL_REPO, UNET, size // 2)
    dest = acquire_weights(lock, tmp_path / "weights", source="hub")
    assert sha256_file(dest / UNET) == lock["model"]["files"][UNET]
    blob = f"/lfs/{lock['model']['files'][UNET]}"
    ranges = [r["range"] for r in hub.requests if r["path"] == blob and r["method"] == "GET"]
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= size // 2, ranges


def test_trust_on_first_use_then_the_proposed_lock_verifies(tmp_path, tiny_sd_path, hub, online):
    commit = hub.add_repo(MODEL_REPO, tiny_sd_path)
    lock = _model_lock(tiny_sd_path, [{"repo_id": MODEL_REPO, "revision": None}], hashes=False)
    with pytest.raises(RuntimeError, match="no pinned revision"):
        acquire_weights(lock, tmp_path / "w1", source="hub", record_unknown=True)
    with pytest.warns(UserWarning) as caught:
        dest = acquire_weights(lock, tmp_path / "w1", source="hub", record_unknown=True, allow_unpinned=True)
    messages = " ".join(str(w.message) for w in caught)
    assert "UNPINNED MODEL" in messages and "TRUST ON FIRST USE" in messages
    proposed = yaml.safe_load((dest / acquire.PROPOSED_LOCK_NAME).read_text())
    validate_lock(proposed)
    assert proposed["model"]["mirrors"][0]["revision"] == commit
    assert proposed["model"]["files"] == {name: sha256_file(tiny_sd_path / name) for name in lock["model"]["files"]}
    # second run: the proposed lock, no trust flags, a fresh destination
    dest2 = acquire_weights(proposed, tmp_path / "w2", source="hub")
    source = json.loads((dest2 / acquire.MANIFEST_NAME).read_text())["source"]
    assert source["revision"] == commit and source["revision_pinned_in_lock"] is True


# -- images: hf_dataset of PNG files -------------------------------------------------------------------------
def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _faces(count: int, side: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(count)]


def test_hf_dataset_pngs_at_a_pinned_revision(tmp_path, hub, online, monkeypatch):
    faces = _faces(3)
    commit = hub.add_repo(
        "dwgf-test/ffhq-png", {f"images/{i:05d}.png": _png(face) for i, face in enumerate(faces)}, "dataset"
    )
    source = {"kind": "hf_dataset", "repo_id": "dwgf-test/ffhq-png", "revision": commit}
    source["filename_template"] = "images/{id}.png"
    dest = acquire_images(source, ["00000", "00002"], 32, tmp_path / "images")
    for image_id, face in (("00000", faces[0]), ("00002", faces[2])):
        assert np.array_equal(np.asarray(Image.open(dest / f"{image_id}.png")), face)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["source"]["revision"] == commit and manifest["source"]["endpoint"] == hub.endpoint
    assert any(r["path"].startswith(f"/datasets/dwgf-test/ffhq-png/resolve/{commit}/") for r in hub.requests)
    with pytest.raises(FileNotFoundError, match=r"'00001'.*RevisionNotFoundError"):
        acquire_images({**source, "revision": "e" * 40}, ["00001"], 32, tmp_path / "other")
    # offline, the cached files are enough; an id never fetched is named
    _go_offline(monkeypatch)
    acquire_images(source, ["00000"], 32, tmp_path / "offline")
    with pytest.raises(FileNotFoundError, match="'00001'"):
        acquire_images(source, ["00001"], 32, tmp_path / "offline")


# -- the official DWGF LMDB ------------------------------------------------------------------------------------
class _RunsShell:
    """A record that would run a shell command when unpickled with plain pickle.loads."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def write_official_lmdb(path: Path, images: list[np.ndarray], overrides: dict[int, bytes] | None = None) -> Path:
    """An LMDB in the official layout (DWGF src/custom_datasets/create_lmdb.py): key str(idx) -> pickle((list of
    PNG bytes, label array)), plus __keys__ and __len__; a single file when ``path`` does not exist yet, as
    there. ``overrides`` replaces the value of some records (malicious ones)."""
    import lmdb

    env = lmdb.open(str(path), subdir=path.is_dir(), map_size=1 << 26, meminit=False, map_async=True)
    with env.begin(write=True) as txn:
        for idx, image in enumerate(images):
            value = pickle.dumps(([_png(image)], np.array([0])))  # DataLoader(batch 1): [bytes], label.numpy()
            txn.put(f"{idx}".encode("ascii"), (overrides or {}).get(idx, value))
        keys = [f"{k}".encode("ascii") for k in range(len(images))]
        txn.put(b"__keys__", pickle.dumps(keys))
        txn.put(b"__len__", pickle.dumps(len(keys)))
    env.sync()
    env.close()
    return path


def test_official_lmdb_images_decode_exactly(tmp_path):
    faces = _faces(3)
    store = write_official_lmdb(tmp_path / "validation.lmdb", faces)
    assert store.is_file(), "the official writer makes a single-file LMDB"
    dest = acquire_images({"kind": "lmdb", "path": str(store)}, ["00000", "00002"], 32, tmp_path / "images")
    for image_id, face in (("00000", faces[0]), ("00002", faces[2])):
        assert np.array_equal(np.asarray(Image.open(dest / f"{image_id}.png")), face)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "lmdb" and manifest["source"]["records"] == 3
    assert manifest["source"]["data_sha256"] == sha256_file(store) and manifest["source"]["key_format"] == "{index}"
    assert manifest["images"]["00002"]["original_name"] == "validation.lmdb[2]"
    assert manifest["images"]["00002"]["original_sha256"] == hashlib.sha256(_png(faces[2])).hexdigest()
    with pytest.raises(FileNotFoundError, match=r"'00007' \(key '7'\).*holds 3 records"):
        acquire_images({"kind": "lmdb", "path": str(store)}, ["00007"], 32, tmp_path / "images")
    # a zero-padded key layout is one setting away
    padded = tmp_path / "padded.lmdb"
    padded.mkdir()
    import lmdb

    with lmdb.open(str(padded), map_size=1 << 24) as env, env.begin(write=True) as txn:
        txn.put(b"00001", pickle.dumps(([_png(faces[1])], np.array([0]))))
    source = {"kind": "lmdb", "path": str(padded), "key_format": "{index:05d}"}
    dest = acquire_images(source, ["00001"], 32, tmp_path / "padded-images")
    assert np.array_equal(np.asarray(Image.open(dest / "00001.png")), faces[1])


def test_malicious_lmdb_record_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_RunsShell(f"touch {marker}"))
    store = write_official_lmdb(tmp_path / "validation.lmdb", _faces(2), overrides={1: evil})
    # the record really is dangerous: plain pickle would run it (checked on a copy, in a child process)
    probe = tmp_path / "probe"
    child = f"import pickle; pickle.loads({pickle.dumps(_RunsShell(f'touch {probe}'))!r})"
    subprocess.run([sys.executable, "-c", child], check=False, cwd=tmp_path)
    assert probe.exists()

    with pytest.raises(ValueError, match=r"refused to unpickle record '1'.*'posix\.system' is not allowed"):
        acquire_images({"kind": "lmdb", "path": str(store)}, ["00000", "00001"], 32, tmp_path / "images")
    assert not marker.exists()
    for other in (b"cos\nsystem\n(S'true'\ntR.", pickle.dumps(print), pickle.dumps(("x", eval))):
        with pytest.raises(ValueError, match="is not allowed"):
            acquire.load_official_record(other, "test record")


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("numpy_module", ["numpy._core", "numpy.core"])
def test_records_of_any_pickle_protocol_and_numpy_major_are_read(protocol, numpy_module):
    """The official store may have been written by numpy 1.x (``numpy.core.*`` globals) with any protocol."""
    png = _png(_faces(1)[0])
    data = pickle.dumps(([png], np.array([7])), protocol=protocol)
    if numpy_module == "numpy.core":  # what numpy 1.x writes: the same opcodes with other module names
        import pickletools

        for name in (b"numpy._core.multiarray", b"numpy._core.numeric"):
            old = name.replace(b"._core", b".core")
            data = data.replace(bytes([len(name)]) + name, bytes([len(old)]) + old)  # SHORT_BINUNICODE (4, 5)
            data = data.replace(name + b"\n", old + b"\n")  # GLOBAL (2)
        data = pickletools.optimize(data)  # re-frames protocol 4/5 after the length change
        assert b"_core" not in data
    assert acquire.load_official_record(data, "test record") == png
    label = acquire.restricted_loads(data, "test record")[1]
    assert isinstance(label, np.ndarray) and label.tolist() == [7]


def test_official_lmdb_from_the_hub_trust_on_first_use_then_verified(tmp_path, hub, online, monkeypatch):
    faces = _faces(4)
    store = tmp_path / "served" / "validation.lmdb"
    store.mkdir(parents=True)
    write_official_lmdb(store, faces)  # the folder form: validation.lmdb/data.mdb (+ lock.mdb)
    commit = hub.add_repo("dwgf-test/ffhq512-lmdb", tmp_path / "served", "dataset")
    lock = copy.deepcopy(load_lock(LOCK_PATH))
    entry = lock["datasets"]["ffhq512-dwgf-val"]
    entry["mirrors"] = [{"repo_id": "gone/ffhq", "revision": None}, {"repo_id": "dwgf-test/ffhq512-lmdb"}]
    assert entry["files"] in (None, {})  # the repository lock knows no hash of the official store yet
    lock_path = tmp_path / "lock.yaml"
    lock_path.write_text(yaml.safe_dump(lock))
    source = {"kind": "lmdb", "dataset": "ffhq512-dwgf-val", "lock": str(lock_path)}

    with pytest.raises(RuntimeError, match="no pinned revision"):
        acquire_images(source, ["00000"], 32, tmp_path / "i0")
    with pytest.raises(ValueError, match="record_unknown"), pytest.warns(UserWarning, match="UNPINNED DATASET"):
        acquire_images({**source, "allow_unpinned": True}, ["00000"], 32, tmp_path / "i0")
    with pytest.warns(UserWarning) as caught:
        dest = acquire_images(
            {**source, "allow_unpinned": True, "record_unknown": True}, ["00000", "00003"], 32, tmp_path / "i1"
        )
    assert "TRUST ON FIRST USE" in " ".join(str(w.message) for w in caught)
    assert np.array_equal(np.asarray(Image.open(dest / "00003.png")), faces[3])
    fetched = json.loads((dest / "manifest.json").read_text())["source"]["fetched"]
    assert (fetched["repo_id"], fetched["revision"], fetched["revision_pinned_in_lock"]) == (
        "dwgf-test/ffhq512-lmdb",
        commit,
        False,
    )
    data_mdb = "validation.lmdb/data.mdb"
    assert fetched["files_sha256"][data_mdb] == sha256_file(store / "data.mdb")

    proposed = yaml.safe_load((dest / acquire.PROPOSED_LOCK_NAME).read_text())
    validate_lock(proposed)
    pinned = proposed["datasets"]["ffhq512-dwgf-val"]
    assert pinned["mirrors"][1]["revision"] == commit and pinned["files"][data_mdb] == sha256_file(store / "data.mdb")
    lock_path.write_text(yaml.safe_dump(proposed))
    dest2 = acquire_images(source, ["00000", "00003"], 32, tmp_path / "i2")
    for image_id in ("00000", "00003"):
        assert sha256_file(dest2 / f"{image_id}.png") == sha256_file(dest / f"{image_id}.png")
    # a store whose bytes differ from the proposed lock is refused, naming the file
    pinned["files"][data_mdb] = "0" * 64
    lock_path.write_text(yaml.safe_dump(proposed))
    with pytest.raises(IntegrityError, match=r"validation\.lmdb/data\.mdb"):
        acquire_images(source, ["00000"], 32, tmp_path / "i3")


# -- the verbs and the paper DAG, as a user runs them (fresh processes, the environment of workflow/README.md) --
def _environment(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({"OMP_NUM_THREADS": "1", "NO_PROXY": "", "no_proxy": ""})
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(key, None)
    env.update(overrides)
    return env


def test_acquire_weights_verb_records_what_came_from_where(tmp_path, tiny_sd_path, hub):
    commit = hub.add_repo(MODEL_REPO, tiny_sd_path)
    lock = _model_lock(
        tiny_sd_path, [{"repo_id": "gone/sd21", "revision": "0" * 40}, {"repo_id": MODEL_REPO, "revision": commit}]
    )
    lock_path = tmp_path / "lock.yaml"
    lock_path.write_text(yaml.safe_dump(lock))
    prior = {"kind": "stable_diffusion", "lock": str(lock_path), "dest": str(tmp_path / "weights"), "source": "hub"}
    spec = {"suite": "t", "seed": 0, "image_size": 64, "device": "cpu", "dtype": "float32", "prior": prior}
    out = tmp_path / "results" / "prior" / "prior.prov.json"
    command = ["dwgf", "acquire-weights", "--spec", json.dumps(spec), "--root", str(tmp_path / "results")]
    env = _environment(HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_HUB_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Fetching 12 files" in result.stderr, "huggingface_hub's file progress bar"
    assert "sha256 dwgf-test/tiny-sd" in result.stderr, "the verification progress bar (bytes)"
    download = json.loads(out.read_text())["extra"]["download"]
    assert (download["repo_id"], download["revision"], download["endpoint"]) == (MODEL_REPO, commit, hub.endpoint)
    assert download["skipped_mirrors"][0].startswith("gone/sd21@")
    assert download["files"][UNET]["sha256"] == lock["model"]["files"][UNET]
    # offline, with the hub stopped: the same verb, from the cache
    hub.stop()
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    hub.start()
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(out.read_text())["extra"]["download"]["offline"] is True


def test_killed_download_keeps_finished_files_and_resumes(tmp_path, tiny_sd_path, hub):
    """SIGKILL mid-download: files already complete stay in the hub cache and are not fetched again; the file
    being downloaded starts over (huggingface_hub writes each attempt to a process-unique temporary file); the
    destination receives nothing until a run verifies everything."""
    import signal
    import time

    commit = hub.add_repo(MODEL_REPO, tiny_sd_path)
    lock = _model_lock(tiny_sd_path, [{"repo_id": MODEL_REPO, "revision": commit}])
    lock_path = tmp_path / "lock.yaml"
    lock_path.write_text(yaml.safe_dump(lock))
    prior = {"kind": "stable_diffusion", "lock": str(lock_path), "dest": str(tmp_path / "weights"), "source": "hub"}
    spec = {"suite": "t", "seed": 0, "image_size": 64, "device": "cpu", "dtype": "float32", "prior": prior}
    out = tmp_path / "results" / "prior" / "prior.prov.json"
    command = ["dwgf", "acquire-weights", "--spec", json.dumps(spec), "--root", str(tmp_path / "results")]
    cache = tmp_path / "cache"
    env = _environment(HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_HUB_CACHE=str(cache))
    hub.stall(MODEL_REPO, UNET, 100_000)
    snapshot = cache / f"models--{MODEL_REPO.replace('/', '--')}" / "snapshots" / commit
    others = [name for name in lock["model"]["files"] if name != UNET]
    child = subprocess.Popen([*command, "--out", str(out)], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not all((snapshot / name).is_file() for name in others):
            assert child.poll() is None and time.monotonic() < deadline, "the download should be stalled on the UNet"
            time.sleep(0.1)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert not out.exists() and _nothing_in(tmp_path / "weights")
    served_before = len(hub.requests)
    hub.clear_faults()
    result = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    again = [r["path"] for r in hub.requests[served_before:] if r["method"] == "GET"]
    assert f"/lfs/{lock['model']['files'][UNET]}" in again
    assert not [path for path in again if path.endswith(tuple(others)) or f"/lfs/{lock['model']['files'][VAE]}" == path]
    assert sha256_file(tmp_path / "weights" / UNET) == lock["model"]["files"][UNET]


def _official_test_set(count: int, side: int) -> list[np.ndarray]:
    """Smooth images (small PNGs): a colour per image plus a ramp, so every image is distinct."""
    ramp = np.linspace(0, 60, side, dtype=np.float32)[None, :, None]
    return [
        np.clip(np.array([(37 * i) % 196, (91 * i) % 196, (53 * i) % 196], np.float32) + ramp, 0, 255)
        .astype(np.uint8)
        .repeat(side, axis=0)
        for i in range(count)
    ]


@pytest.mark.slow
def test_paper_suite_downloads_online_behind_a_proxy_and_air_gapped(tmp_path, tiny_sd_path, hub):
    """The three commands of workflow/README.md "Downloads", against the loopback hub under the lock's repo ids."""
    from dwgf.testing.hub_server import ForwardProxy

    config = yaml.safe_load((ROOT / "config.yaml").read_text())["suites"]["paper"]
    lock = load_lock(LOCK_PATH)
    sd_mirror = lock["model"]["mirrors"][0]
    hub.add_repo(sd_mirror["repo_id"], tiny_sd_path, commit=sd_mirror["revision"])
    faces = _official_test_set(config["data"]["ids"]["count"], config["image_size"])
    served = tmp_path / "served"
    served.mkdir()
    write_official_lmdb(served / "validation.lmdb", faces)
    data_repo = lock["datasets"]["ffhq512-dwgf-val"]["mirrors"][0]["repo_id"]
    data_commit = hub.add_repo(data_repo, served, "dataset")

    work = tmp_path / "work"
    work.mkdir()
    (work / "workflow").symlink_to(ROOT / "workflow")  # the config's relative lock path
    targets = ["results/paper/prior/prior.prov.json", "results/paper/data/images.prov.json"]
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile"]
    command += [str(ROOT / "config.yaml"), "-c", "1", *targets, "--config", "suite=paper"]

    def run(env: dict[str, str]) -> tuple[dict, dict]:
        env = {**env, "DWGF_ALLOW_MISSING_CUDA": "1"}  # only the acquire targets run here; the paper suite is cuda
        for folder in ("results", "cache", ".snakemake"):
            subprocess.run(["rm", "-rf", str(work / folder)], check=True)
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        logs = "".join(p.read_text() for p in (work / "results" / "paper" / "logs").rglob("*.log"))
        assert result.returncode == 0, result.stderr[-4000:] + logs[-4000:]
        records = [json.loads((work / target).read_text())["extra"]["download"] for target in targets]
        return records[0], records[1]

    # 1. with network access
    cache = str(tmp_path / "hf-cache")
    weights, images = run(_environment(HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_HUB_CACHE=cache))
    assert (weights["repo_id"], weights["revision"]) == (sd_mirror["repo_id"], sd_mirror["revision"])
    fetched = images["fetched"]
    assert (fetched["repo_id"], fetched["revision"], fetched["revision_pinned_in_lock"]) == (
        data_repo,
        data_commit,
        False,
    )
    for image_id in ("00000", "00099"):
        png = work / "results" / "paper" / "data" / "images" / f"{image_id}.png"
        assert np.array_equal(np.asarray(Image.open(png)), faces[int(image_id)])
    assert (work / "results" / "paper" / "data" / "images" / acquire.PROPOSED_LOCK_NAME).is_file()
    assert (work / "cache" / "weights" / "stable-diffusion-2-1-base" / acquire.PROPOSED_LOCK_NAME).is_file()

    # 2. behind a proxy: the hub's name resolves only through the proxy
    port = hub.endpoint.rsplit(":", 1)[1]
    with ForwardProxy({"hub.invalid": f"127.0.0.1:{port}"}) as proxy:
        env = _environment(HF_ENDPOINT=f"http://hub.invalid:{port}", HTTP_PROXY=proxy.url, HF_HUB_OFFLINE="0")
        env["HF_HUB_CACHE"] = str(tmp_path / "hf-cache-proxied")
        weights, images = run(env)
    assert weights["endpoint"] == f"http://hub.invalid:{port}" and images["fetched"]["revision"] == data_commit
    assert any("/resolve/" in url for url in proxy.requests) and any("/lfs/" in url for url in proxy.requests)

    # 3. air-gapped: a hub cache seeded with the hub's own CLI (`hf download`), then no hub at all; run 1's cache
    #    (the `snakemake download` route) is equivalent
    seeded = str(tmp_path / "hf-cache-seeded")
    env = _environment(HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0")
    hf = str(Path(sys.executable).parent / "hf")
    for seed in (
        [hf, "download", sd_mirror["repo_id"], *lock["model"]["files"], "--revision", sd_mirror["revision"]],
        [hf, "download", data_repo, "--repo-type", "dataset", "--include", "validation.lmdb*"],
    ):
        result = subprocess.run([*seed, "--cache-dir", seeded], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    endpoint = hub.endpoint
    hub.stop()
    weights, images = run(_environment(HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="1", HF_HUB_CACHE=seeded))
    hub.start()
    assert weights["offline"] is True and images["fetched"]["offline"] is True
    assert images["fetched"]["revision"] == data_commit
    assert cache != seeded
