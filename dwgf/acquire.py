"""Fetch and verify what the experiments need from outside: SD-2.1-base weights, metric backbones, FFHQ images.

Everything is checked against ``workflow/weights.lock.yaml`` (sha256 per file) and every acquisition writes a
manifest of sha256s next to what it fetched, so later steps can prove which bytes they used.

* :func:`acquire_weights` - the Stable Diffusion folder, from the hub (``huggingface_hub.snapshot_download`` at a
  pinned commit, trying mirror repos in order: stabilityai removed SD-2.1-base in 2025, docs/weights.md,
  docs/method.md#hyper-parameters) or from a pre-seeded local folder. Writes ``<dest>/MANIFEST.sha256.json``.
* :func:`acquire_aux_weights` - the LPIPS backbones (torchvision ``alexnet-owt-7be5be79.pth``,
  ``vgg16-397923af.pth``) and clean-fid's Inception (``inception-2015-12-05.pt``) into a ``TORCH_HOME``-style
  cache (``<cache>/hub/checkpoints/<file>``), from their URLs or a local folder (docs/install.md).
* :func:`acquire_images` - FFHQ images by id from a folder, a zip/tar archive or a pinned Hugging Face dataset
  repo of image files, converted to RGB PNGs of one size, with ``<dest>/manifest.json`` (docs/protocol.md#data).

Trust rules (stated once, applied everywhere):

* A hash in the lock is authoritative; a mismatch raises naming file, expected and actual hash, and deletes
  nothing (a downloaded metric backbone that fails its check is kept as ``<file>.rejected`` so that no library
  picks it up from the cache by name).
* A torchvision file name embeds the first 8 hex digits of its sha256 (``alexnet-owt-7be5be79.pth``); when the
  lock has no full hash that prefix is checked - the same check ``torch.hub`` does.
* A file with no known hash at all is refused unless ``record_unknown=True``: trust-on-first-use. Then the hashes
  actually seen are written to a proposed lock (``weights.lock.proposed.yaml``) beside the fetched files and a
  loud warning says the bytes were NOT verified. Review it and copy it into ``workflow/weights.lock.yaml``.
* A hub mirror without a pinned 40-hex revision is skipped unless ``allow_unpinned=True``; then its current
  commit is resolved first, downloaded at that commit, recorded, and a warning says so.
* Downloaded data is never unpickled here. SD weights must be safetensors; the ``.pth``/``.pt`` metric files are
  pickles/TorchScript that only their libraries load, after these checks. FFHQ LMDB stores pickles and is refused.
"""

from __future__ import annotations

import abc
import copy
import fnmatch
import io
import os
import re
import shutil
import tarfile
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Any

from dwgf.io import atomic_path, atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file

LOCK_SCHEMA = "dwgf.weights-lock/1"
MANIFEST_NAME = "MANIFEST.sha256.json"
PROPOSED_LOCK_NAME = "weights.lock.proposed.yaml"
IMAGE_MANIFEST_NAME = "manifest.json"
AUX_SUBDIR = Path("hub") / "checkpoints"

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_IMAGE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PICKLE_STORES = (".lmdb", ".mdb", ".pkl", ".pickle", ".npy", ".npz", ".pt", ".pth")
_CHUNK = 1 << 20


class IntegrityError(ValueError):
    """A file's sha256 differs from the lock. ``mismatches`` holds (file, expected, actual) triples."""

    def __init__(self, mismatches: list[tuple[str, str, str]], where: str):
        self.mismatches = mismatches
        lines = "; ".join(f"{name}: expected sha256 {exp}, actual {act}" for name, exp, act in mismatches)
        super().__init__(
            f"{len(mismatches)} file(s) in {where} do not match the lock (nothing was deleted): {lines}. "
            "Re-fetch them, or if the lock is wrong, fix workflow/weights.lock.yaml after checking the source"
        )


# ---------------------------------------------------------------------------------------------------------
# lock file
# ---------------------------------------------------------------------------------------------------------
def load_lock(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a weights lock (YAML, ``schema: dwgf.weights-lock/1``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights lock {str(path)!r} does not exist (the repository ships workflow/weights.lock.yaml)"
        )
    with open(path, encoding="utf-8") as handle:
        lock = yaml.safe_load(handle)
    validate_lock(lock, where=str(path))
    return lock


def validate_lock(lock: Any, where: str = "lock") -> None:
    """Raise ValueError naming the first malformed key of a lock dict."""
    if not isinstance(lock, dict) or lock.get("schema") != LOCK_SCHEMA:
        raise ValueError(f"{where}: key 'schema' must be {LOCK_SCHEMA!r}")
    model = lock.get("model")
    if model is not None:
        mirrors = model.get("mirrors")
        if not isinstance(mirrors, list) or not mirrors:
            raise ValueError(f"{where}: 'model.mirrors' must be a non-empty list of {{repo_id, revision}}")
        for index, mirror in enumerate(mirrors):
            if not isinstance(mirror, dict) or not isinstance(mirror.get("repo_id"), str):
                raise ValueError(f"{where}: 'model.mirrors[{index}].repo_id' must be a string")
            revision = mirror.get("revision")
            if revision is not None and not _COMMIT.match(str(revision)):
                raise ValueError(
                    f"{where}: 'model.mirrors[{index}].revision' must be null or a 40-hex commit, got {revision!r}"
                )
        patterns = model.get("allow_patterns")
        if not isinstance(patterns, list) or not patterns:
            raise ValueError(f"{where}: 'model.allow_patterns' must be a non-empty list")
        files = model.get("files")
        if not isinstance(files, dict) or not files:
            raise ValueError(f"{where}: 'model.files' must map each file to its sha256 (or null)")
        for name, digest in files.items():
            _check_digest(digest, f"{where}: 'model.files[{name!r}]'")
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                raise ValueError(f"{where}: 'model.files[{name!r}]' matches no entry of 'model.allow_patterns'")
    aux = lock.get("auxiliary")
    if aux is not None:
        if not isinstance(aux, dict):
            raise ValueError(f"{where}: 'auxiliary' must map file names to {{url, sha256}}")
        for name, entry in aux.items():
            if not isinstance(entry, dict) or "sha256" not in entry:
                raise ValueError(f"{where}: 'auxiliary[{name!r}]' must have keys 'url' and 'sha256'")
            _check_digest(entry["sha256"], f"{where}: 'auxiliary[{name!r}].sha256'")
            if Path(name).name != name:
                raise ValueError(f"{where}: 'auxiliary' key {name!r} must be a bare file name")


def _check_digest(digest: Any, where: str) -> None:
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        raise ValueError(f"{where} must be null or a lowercase 64-hex sha256, got {digest!r}")


def _write_proposed_lock(lock: dict[str, Any], target: Path) -> Path:
    import yaml

    text = (
        "# PROPOSED lock written by dwgf.acquire with record_unknown=True (trust on first use).\n"
        "# The hashes below are what was received, NOT verified against any trusted source.\n"
        "# Review, then copy into workflow/weights.lock.yaml.\n" + yaml.safe_dump(lock, sort_keys=False)
    )
    atomic_write_bytes(target, text.encode("utf-8"))
    return target


# ---------------------------------------------------------------------------------------------------------
# Stable Diffusion weights
# ---------------------------------------------------------------------------------------------------------
def acquire_weights(
    lock: dict[str, Any],
    dest: str | os.PathLike,
    source: str = "hub",
    local_dir: str | os.PathLike | None = None,
    *,
    record_unknown: bool = False,
    allow_unpinned: bool = False,
) -> Path:
    """Fetch the SD folder described by ``lock["model"]`` into ``dest``, hash it, check it; return ``dest``.

    ``source="hub"``: ``huggingface_hub.snapshot_download(repo_id, revision=<pinned>, allow_patterns=<lock>,
    local_dir=dest)`` for each mirror in order until one succeeds. ``source="local"``: copy the lock's files
    from the pre-seeded folder ``local_dir``. Either way ``dest/MANIFEST.sha256.json`` records the source and
    the sha256 and size of every lock file, then each hash is compared with the lock (see module docstring).
    """
    validate_lock(lock)
    if lock.get("model") is None:
        raise ValueError("lock has no 'model' section to acquire")
    model = lock["model"]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = list(model["files"])
    if source == "hub":
        if local_dir is not None:
            raise ValueError("local_dir is only used with source='local'")
        origin = _download_from_mirrors(model, dest, allow_unpinned)
    elif source == "local":
        if local_dir is None:
            raise ValueError("source='local' needs local_dir, the pre-seeded folder to copy the weights from")
        origin = _copy_from_local(model, files, Path(local_dir), dest)
    else:
        raise ValueError(f"source must be 'hub' or 'local', got {source!r}")

    digests = {name: sha256_file(dest / name) for name in files}
    manifest = {
        "schema": "dwgf.weights-manifest/1",
        "source": origin,
        "files": {name: {"sha256": digests[name], "size": (dest / name).stat().st_size} for name in files},
    }
    atomic_write_json(dest / MANIFEST_NAME, manifest)
    _check_against_lock(
        expected=model["files"],
        actual=digests,
        where=str(dest),
        lock=lock,
        section=("model", "files"),
        proposed_at=dest / PROPOSED_LOCK_NAME,
        record_unknown=record_unknown,
        origin=origin,
    )
    return dest


def _download_from_mirrors(model: dict[str, Any], dest: Path, allow_unpinned: bool) -> dict[str, Any]:
    import huggingface_hub

    failures: list[str] = []
    for mirror in model["mirrors"]:
        repo_id, revision = mirror["repo_id"], mirror.get("revision")
        pinned = revision is not None
        if not pinned:
            if not allow_unpinned:
                failures.append(f"{repo_id}: skipped, no pinned revision in the lock (allow_unpinned=False)")
                continue
            try:
                revision = _resolve_revision(repo_id)
            except Exception as error:  # hub client errors vary; each means this mirror is unusable
                failures.append(f"{repo_id}: could not resolve its current commit: {type(error).__name__}: {error}")
                continue
            warnings.warn(
                f"UNPINNED MODEL: {repo_id} has no revision in the lock; using its current commit {revision}. "
                "Pin it in workflow/weights.lock.yaml.",
                stacklevel=3,
            )
        try:
            huggingface_hub.snapshot_download(
                repo_id=repo_id,
                revision=revision,
                allow_patterns=list(model["allow_patterns"]),
                local_dir=str(dest),
            )
        except Exception as error:  # try the next mirror; every failure is reported if all fail
            failures.append(f"{repo_id}@{revision}: {type(error).__name__}: {error}")
            continue
        missing = [name for name in model["files"] if not (dest / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{repo_id}@{revision} was downloaded into {dest} but lacks {missing}; the mirror does not hold the "
                "files the lock lists. Fix the mirror list or allow_patterns in workflow/weights.lock.yaml"
            )
        return {"kind": "hub", "repo_id": repo_id, "revision": revision, "revision_pinned_in_lock": pinned}
    raise RuntimeError(
        "no mirror in the lock could be downloaded: " + " | ".join(failures) + ". Without hub access, pre-seed a "
        "folder with the files and use source='local' (config: prior.source: local, prior.local_dir: DIR)"
    )


def _resolve_revision(repo_id: str) -> str:
    """The current commit hash of a hub model repo."""
    from huggingface_hub import HfApi

    return str(HfApi().model_info(repo_id).sha)


def _copy_from_local(model: dict[str, Any], files: list[str], local_dir: Path, dest: Path) -> dict[str, Any]:
    if not local_dir.is_dir():
        raise FileNotFoundError(f"local weights folder {str(local_dir)!r} does not exist")
    first = model["mirrors"][0]
    for name in files:
        if not (local_dir / name).is_file():
            raise FileNotFoundError(
                f"local weights folder {str(local_dir)!r} lacks {name!r}: place that file there (from "
                f"{first['repo_id']} at revision {first.get('revision')}, same relative path) and rerun"
            )
    same = local_dir.resolve() == dest.resolve()
    if not same:
        for name in files:
            with atomic_path(dest / name) as tmp:
                shutil.copyfile(local_dir / name, tmp)
    return {"kind": "local", "path": str(local_dir.resolve())}


def _check_against_lock(
    *,
    expected: dict[str, str | None],
    actual: dict[str, str],
    where: str,
    lock: dict[str, Any],
    section: tuple[str, ...],  # where the {file: sha256} mapping sits in the lock
    proposed_at: Path,
    record_unknown: bool,
    origin: dict[str, Any],
) -> None:
    mismatches = [
        (name, digest, actual[name])
        for name, digest in expected.items()
        if digest is not None and digest != actual[name]
    ]
    if mismatches:
        raise IntegrityError(mismatches, where)
    unknown = sorted(name for name, digest in expected.items() if digest is None)
    if not unknown:
        return
    if not record_unknown:
        raise ValueError(
            f"the lock has no sha256 for {unknown} (fetched into {where}), so they cannot be verified. Either put the "
            "known hashes into workflow/weights.lock.yaml, or rerun with record_unknown=True (config key "
            "record_unknown: true) to trust these bytes on first use and get a proposed lock to review"
        )
    proposed = copy.deepcopy(lock)
    node = proposed
    for key in section:
        node = node[key]
    for name in unknown:
        node[name] = actual[name]
    if origin.get("kind") == "hub" and "model" in proposed:
        for mirror in proposed["model"]["mirrors"]:
            if mirror["repo_id"] == origin["repo_id"]:
                mirror["revision"] = origin["revision"]
    _write_proposed_lock(proposed, proposed_at)
    warnings.warn(
        f"TRUST ON FIRST USE: {len(unknown)} file(s) in {where} had no sha256 in the lock and were NOT verified "
        f"({', '.join(unknown)}). Their hashes are in the proposed lock {proposed_at}; review it and copy it into "
        "workflow/weights.lock.yaml.",
        stacklevel=3,
    )


# ---------------------------------------------------------------------------------------------------------
# metric backbones (LPIPS, clean-fid Inception)
# ---------------------------------------------------------------------------------------------------------
def aux_weight_path(cache_dir: str | os.PathLike, name: str) -> Path:
    """Where ``name`` lives in the cache: ``<cache_dir>/hub/checkpoints/<name>`` (set TORCH_HOME=cache_dir)."""
    return Path(cache_dir) / AUX_SUBDIR / name


def name_sha256_prefix(name: str) -> str | None:
    """The sha256 prefix a torchvision-style file name embeds (``alexnet-owt-7be5be79.pth`` -> ``7be5be79``)."""
    match = _NAME_PREFIX.search(name)
    return match.group(1) if match else None


def acquire_aux_weights(
    lock: dict[str, Any],
    cache_dir: str | os.PathLike,
    source: str = "url",
    local_dir: str | os.PathLike | None = None,
    *,
    names: list[str] | None = None,
    record_unknown: bool = False,
    timeout_s: float = 60.0,
) -> dict[str, Path]:
    """Fetch ``lock["auxiliary"]`` files (or the subset ``names``) into ``<cache_dir>/hub/checkpoints/``.

    ``source="url"`` downloads each entry's ``url`` with urllib (any scheme urllib opens, ``file://`` included);
    ``source="local"`` copies ``<local_dir>/<name>``. Bytes are hashed while streaming to a temporary file that
    replaces the cache entry only once it verified (full sha256 from the lock, else the name's prefix, else
    ``record_unknown``). A file already in the cache that verifies is kept. Writes
    ``<cache_dir>/MANIFEST.sha256.json``; returns {name: path}.
    """
    validate_lock(lock)
    entries = lock.get("auxiliary") or {}
    wanted = list(entries) if names is None else list(names)
    for name in wanted:
        if name not in entries:
            raise ValueError(f"auxiliary weight {name!r} is not in the lock; choose from {sorted(entries)}")
    if source not in ("url", "local"):
        raise ValueError(f"source must be 'url' or 'local', got {source!r}")
    if source == "local" and local_dir is None:
        raise ValueError("source='local' needs local_dir, the folder holding the auxiliary weight files")
    cache_dir = Path(cache_dir)
    results: dict[str, Path] = {}
    actual: dict[str, str] = {}
    how: dict[str, str] = {}
    for name in wanted:
        entry, target, prefix = entries[name], aux_weight_path(cache_dir, name), name_sha256_prefix(name)
        expected = entry.get("sha256")
        how[name] = "full sha256" if expected else ("file-name prefix" if prefix else "none (trust on first use)")
        if target.is_file():
            digest = sha256_file(target)
            if _aux_verifies(digest, expected, prefix):
                actual[name], results[name] = digest, target
                continue
        actual[name] = _fetch_aux(name, entry, target, source, local_dir, timeout_s, record_unknown)
        results[name] = target
    atomic_write_json(
        cache_dir / MANIFEST_NAME,
        {
            "schema": "dwgf.aux-weights-manifest/1",
            "source": {"kind": source, **({"path": str(Path(local_dir).resolve())} if local_dir else {})},
            "files": {
                name: {"path": (AUX_SUBDIR / name).as_posix(), "sha256": actual[name], "verified": how[name]}
                for name in wanted
            },
        },
    )
    unknown = [name for name in wanted if how[name].startswith("none")]
    if unknown:  # only reachable with record_unknown=True: _fetch_aux refuses otherwise
        proposed = copy.deepcopy(lock)
        for name in unknown:
            proposed["auxiliary"][name]["sha256"] = actual[name]
        _write_proposed_lock(proposed, cache_dir / PROPOSED_LOCK_NAME)
        warnings.warn(
            f"TRUST ON FIRST USE: {unknown} had no sha256 in the lock and were NOT verified; their hashes are in "
            f"{cache_dir / PROPOSED_LOCK_NAME}. Review it and copy it into workflow/weights.lock.yaml.",
            stacklevel=2,
        )
    return results


def _aux_verifies(actual: str, expected: str | None, prefix: str | None) -> bool:
    if expected is not None:
        return actual == expected
    return prefix is not None and actual.startswith(prefix)


def _fetch_aux(
    name: str,
    entry: dict[str, Any],
    target: Path,
    source: str,
    local_dir: str | os.PathLike | None,
    timeout_s: float,
    record_unknown: bool,
) -> str:
    import hashlib

    expected, prefix = entry.get("sha256"), name_sha256_prefix(name)
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    if source == "local":
        origin = Path(local_dir) / name
        if not origin.is_file():
            raise FileNotFoundError(
                f"local folder {str(local_dir)!r} lacks {name!r}: place the file from {entry.get('url')} there"
            )
        handle_in = open(origin, "rb")
    else:
        url = entry.get("url")
        if not url:
            raise ValueError(f"auxiliary weight {name!r} has no 'url' in the lock; use source='local'")
        try:
            handle_in = urllib.request.urlopen(url, timeout=timeout_s)  # noqa: S310 (the URL comes from the lock)
        except OSError as error:
            raise ConnectionError(
                f"could not download {name} from {url}: {error}. Without network, put the file into a folder and "
                "use source='local'"
            ) from error
    with atomic_path(target) as tmp:
        with handle_in, open(tmp, "wb") as handle_out:
            for block in iter(lambda: handle_in.read(_CHUNK), b""):
                digest.update(block)
                handle_out.write(block)
        actual = digest.hexdigest()
        if expected is None and prefix is None and not record_unknown:
            kept = target.with_name(target.name + ".unverified")
            shutil.copyfile(tmp, kept)
            raise ValueError(
                f"auxiliary weight {name!r} has no sha256 in the lock and no hash prefix in its name; received sha256 "
                f"{actual} (kept as {kept}, not in the cache path). Put the trusted hash into "
                "workflow/weights.lock.yaml, or accept these bytes with record_unknown=True (config key "
                "record_unknown: true)"
            )
        if (expected is not None or prefix is not None) and not _aux_verifies(actual, expected, prefix):
            kept = target.with_name(target.name + ".rejected")
            shutil.copyfile(tmp, kept)
            want = expected if expected is not None else f"{prefix}... (prefix in the file name)"
            raise IntegrityError([(name, want, actual)], f"{target.parent} (download kept as {kept.name})")
    return actual


# ---------------------------------------------------------------------------------------------------------
# FFHQ images
# ---------------------------------------------------------------------------------------------------------
def acquire_images(source: dict[str, Any], ids: list[str], size: int, dest: str | os.PathLike) -> Path:
    """Write ``<dest>/<id>.png`` (RGB, ``size`` x ``size``) for every id, plus ``<dest>/manifest.json``.

    ``source`` is one of

    * ``{"kind": "folder", "path": DIR}``: files named ``<id>.png|.jpg|.jpeg`` anywhere under DIR (the official
      FFHQ layout nests them in thousands-folders);
    * ``{"kind": "archive", "path": FILE}``: a zip or tar(.gz/.bz2/.xz) holding such files. Members are read into
      memory, never extracted to disk; an archive with any member that is absolute, has ``..`` components, or is
      a link or device is refused as a whole;
    * ``{"kind": "hf_dataset", "repo_id": ..., "revision": <40-hex>, "filename_template": "{id}.png"}``: single
      image files fetched with ``hf_hub_download`` (optional ``"cache_dir"``).

    LMDB (the official DWGF data format, docs/protocol.md#data) is refused: its records are pickles, and unpickling
    downloaded data can run arbitrary code. Convert it offline with a trusted tool into PNG files first.

    Conversion: PIL decode, ``convert("RGB")`` (alpha dropped), then Lanczos resampling to ``size`` only if the
    image has another size (PIL ``Image.LANCZOS``, for down- and up-sampling alike; the official code keeps 512
    px FFHQ as is, docs/protocol.md#data). Non-square images are refused rather than cropped. PNGs are written
    atomically;
    the manifest records, per id, the output sha256, the original file's name, size and sha256, and whether it
    was resized. A missing id raises naming the id and the source.
    """
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int (pixels), got {size!r}")
    ids = [str(image_id) for image_id in ids]
    for image_id in ids:
        if not _IMAGE_ID.match(image_id):
            raise ValueError(f"image id {image_id!r} must contain only letters, digits, '_' and '-' (like '00000')")
    if len(set(ids)) != len(ids):
        raise ValueError("ids contains duplicates")
    reader = _open_image_source(source)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    records: dict[str, Any] = {}
    try:
        for image_id in ids:
            data, original_name = reader.read(image_id)
            png, info = _to_png(data, size, f"{original_name} (id {image_id})")
            atomic_write_bytes(dest / f"{image_id}.png", png)
            records[image_id] = {
                "file": f"{image_id}.png",
                "sha256": sha256_bytes(png),
                "original_name": original_name,
                "original_sha256": sha256_bytes(data),
                **info,
            }
    finally:
        reader.close()
    atomic_write_json(
        dest / IMAGE_MANIFEST_NAME,
        {
            "schema": "dwgf.images-manifest/1",
            "source": reader.describe(),
            "size": size,
            "resample": "PIL Image.LANCZOS when the original size differs; RGB conversion drops alpha",
            "images": records,
        },
    )
    return dest


def missing_image_ids(source: dict[str, Any], ids: list[str]) -> list[str]:
    """The ids of ``ids`` that a local ``folder`` / ``archive`` source does not hold (no file is decoded).

    Cheap enough for plan time (a directory listing or an archive's member list), so a bad id stops
    ``snakemake -n`` instead of a job; a missing folder or archive raises ``FileNotFoundError`` naming it.
    """
    if source.get("kind") not in ("folder", "archive"):
        raise ValueError(f"missing_image_ids checks local sources (folder, archive), got kind {source.get('kind')!r}")
    reader = _open_image_source(source)
    try:
        return [str(i) for i in ids if str(i) not in reader.index]
    finally:
        reader.close()


def _refuse_pickle_store(text: str, where: str) -> None:
    lowered = text.lower().rstrip("/")
    if lowered.endswith(_PICKLE_STORES) or Path(lowered).name in ("data.mdb", "lock.mdb"):
        raise ValueError(
            f"{where} {text!r} looks like an LMDB/pickle store: refused, because such stores hold pickles and "
            "unpickling downloaded data can run arbitrary code. Export the images to PNG files with a trusted tool "
            "and use a 'folder' or 'archive' source"
        )


def _open_image_source(source: dict[str, Any]) -> _ImageReader:
    if not isinstance(source, dict) or "kind" not in source:
        raise ValueError("image source must be a dict with key 'kind': 'folder', 'archive' or 'hf_dataset'")
    kind = source["kind"]
    if kind == "lmdb":
        raise ValueError(
            "image source kind 'lmdb' is refused: LMDB records (the official DWGF FFHQ store, docs/protocol.md#data) "
            "are "
            "pickles, and unpickling downloaded data can run arbitrary code. Export the images to PNG files with a "
            "trusted tool and use a 'folder' or 'archive' source"
        )
    if kind == "folder":
        return _FolderReader(Path(_require(source, "path")))
    if kind == "archive":
        return _ArchiveReader(Path(_require(source, "path")))
    if kind == "hf_dataset":
        return _HubDatasetReader(source)
    raise ValueError(f"image source 'kind' must be 'folder', 'archive' or 'hf_dataset', got {kind!r}")


def _require(source: dict[str, Any], key: str) -> Any:
    if source.get(key) in (None, ""):
        raise ValueError(f"image source of kind {source.get('kind')!r} needs key {key!r}")
    return source[key]


def _stem_if_image(name: str) -> str | None:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    return stem if dot and f".{suffix.lower()}" in _IMAGE_SUFFIXES else None


def _index(names: list[str]) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for name in names:
        stem = _stem_if_image(name)
        if stem is not None:
            index.setdefault(stem, []).append(name)
    return index


def _pick(index: dict[str, list[str]], image_id: str, where: str) -> str:
    matches = index.get(image_id, [])
    if not matches:
        raise FileNotFoundError(
            f"image id {image_id!r} not found in {where} (looked for {image_id}.png/.jpg/.jpeg); check the id list "
            "or the source"
        )
    if len(matches) > 1:
        raise ValueError(f"image id {image_id!r} is ambiguous in {where}: {sorted(matches)}")
    return matches[0]


class _ImageReader(abc.ABC):
    """One image source (folder, archive, dataset repo): raw bytes by id, and a description for the manifest."""

    @abc.abstractmethod
    def read(self, image_id: str) -> tuple[bytes, str]: ...

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None:  # noqa: B027 - most readers hold nothing open; archive readers override it
        return None


class _FolderReader(_ImageReader):
    def __init__(self, folder: Path):
        _refuse_pickle_store(str(folder), "image folder")
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
        self.folder = folder
        names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        self.index = _index(names)

    def read(self, image_id: str) -> tuple[bytes, str]:
        name = _pick(self.index, image_id, f"image folder {str(self.folder)!r}")
        return (self.folder / name).read_bytes(), name

    def describe(self) -> dict[str, Any]:
        return {"kind": "folder", "path": str(self.folder.resolve())}


def _unsafe_member(name: str) -> bool:
    normalised = name.replace("\\", "/")
    parts = normalised.split("/")
    return normalised.startswith("/") or ".." in parts or bool(re.match(r"^[A-Za-z]:", normalised))


class _ArchiveReader(_ImageReader):
    def __init__(self, path: Path):
        _refuse_pickle_store(str(path), "image archive")
        if not path.is_file():
            raise FileNotFoundError(f"image archive {str(path)!r} does not exist")
        self.path = path
        self.archive_sha256 = sha256_file(path)
        if zipfile.is_zipfile(path):
            self.kind = "zip"
            self.handle: Any = zipfile.ZipFile(path)
            members = [info.filename for info in self.handle.infolist() if not info.is_dir()]
            unsafe = [name for name in members if _unsafe_member(name)]
        elif tarfile.is_tarfile(path):
            self.kind = "tar"
            self.handle = tarfile.open(path, "r:*")
            infos = self.handle.getmembers()
            unsafe = [m.name for m in infos if _unsafe_member(m.name) or not (m.isfile() or m.isdir())]
            members = [m.name for m in infos if m.isfile()]
        else:
            raise ValueError(f"image archive {str(path)!r} is neither a zip nor a tar file")
        if unsafe:
            self.handle.close()
            raise ValueError(
                f"refusing image archive {str(path)!r}: member(s) {unsafe[:5]} are absolute paths, contain '..', "
                "or are links/devices (path traversal). Repack it with plain relative file names"
            )
        self.index = _index(members)

    def read(self, image_id: str) -> tuple[bytes, str]:
        name = _pick(self.index, image_id, f"image archive {str(self.path)!r}")
        if self.kind == "zip":
            return self.handle.read(name), name
        extracted = self.handle.extractfile(name)
        if extracted is None:
            raise ValueError(f"archive member {name!r} of {self.path} is not a regular file")
        with extracted:
            return extracted.read(), name

    def describe(self) -> dict[str, Any]:
        return {"kind": "archive", "path": str(self.path.resolve()), "sha256": self.archive_sha256}

    def close(self) -> None:
        self.handle.close()


class _HubDatasetReader(_ImageReader):
    def __init__(self, source: dict[str, Any]):
        self.repo_id = str(_require(source, "repo_id"))
        _refuse_pickle_store(self.repo_id, "dataset repo")
        self.revision = source.get("revision")
        if self.revision is None or not _COMMIT.match(str(self.revision)):
            raise ValueError(
                f"hf_dataset source {self.repo_id!r} needs 'revision' = a 40-hex commit hash, got {self.revision!r}"
            )
        self.template = str(source.get("filename_template", "{id}.png"))
        _refuse_pickle_store(self.template, "filename_template")
        if _stem_if_image(self.template.replace("{id}", "x")) is None:
            raise ValueError(
                f"hf_dataset 'filename_template' must name an image file (.png/.jpg/.jpeg) containing '{{id}}', "
                f"got {self.template!r}"
            )
        self.cache_dir = source.get("cache_dir")

    def read(self, image_id: str) -> tuple[bytes, str]:
        import huggingface_hub

        filename = self.template.format(id=image_id)
        try:
            path = huggingface_hub.hf_hub_download(
                self.repo_id, filename, repo_type="dataset", revision=self.revision, cache_dir=self.cache_dir
            )
        except Exception as error:  # hub client errors vary; all mean the file is not available
            raise FileNotFoundError(
                f"image id {image_id!r} ({filename}) not available from dataset {self.repo_id}@{self.revision}: "
                f"{type(error).__name__}: {error}"
            ) from error
        return Path(path).read_bytes(), filename

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hf_dataset",
            "repo_id": self.repo_id,
            "revision": self.revision,
            "filename_template": self.template,
        }


def _to_png(data: bytes, size: int, what: str) -> tuple[bytes, dict[str, Any]]:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # PIL raises several types for undecodable data
        raise ValueError(f"cannot decode image {what}: {type(error).__name__}: {error}") from error
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr"):
        raise ValueError(f"image {what} has pixel mode {image.mode!r} (e.g. 16-bit); convert it to 8-bit RGB first")
    width, height = image.size
    if width != height:
        raise ValueError(f"image {what} is {width}x{height}, not square; crop it yourself (and record how) first")
    rgb = image.convert("RGB")
    resized = width != size
    if resized:
        rgb = rgb.resize((size, size), resample=Image.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue(), {"original_size": [width, height], "original_mode": image.mode, "resized": resized}
