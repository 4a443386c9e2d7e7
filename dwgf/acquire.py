"""Fetch and verify what the experiments need from outside: SD-2.1-base weights, metric backbones, FFHQ images.

Everything is checked against ``workflow/weights.lock.yaml`` (sha256 per file) and every acquisition writes a
manifest of sha256s next to what it fetched, so later steps can prove which bytes they used.

* :func:`acquire_weights` - the Stable Diffusion folder, from the hub (:func:`fetch_snapshot`:
  ``huggingface_hub.snapshot_download`` at a pinned commit into the hub cache, trying mirror repos in order:
  stabilityai removed SD-2.1-base in 2025, docs/weights.md, docs/method.md#hyper-parameters) or from a
  pre-seeded local folder. Writes ``<dest>/MANIFEST.sha256.json``.
* :func:`acquire_aux_weights` - the LPIPS backbones (torchvision ``alexnet-owt-7be5be79.pth``,
  ``vgg16-397923af.pth``) and clean-fid's Inception (``inception-2015-12-05.pt``) into a ``TORCH_HOME``-style
  cache (``<cache>/hub/checkpoints/<file>``), from their URLs or a local folder (docs/install.md).
* :func:`acquire_images` - FFHQ images by id from a folder, a zip/tar archive, a pinned Hugging Face dataset
  repo of image files, or the official DWGF LMDB (local, or the lock's ``datasets`` entry fetched with
  :func:`acquire_dataset`), converted to RGB PNGs of one size, with ``<dest>/manifest.json``
  (docs/protocol.md#data).

Hub access follows the environment at call time (:func:`hub_settings`: ``HF_ENDPOINT``, ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE``, proxy variables); ``dwgf.testing.hub_server`` is a loopback hub the tests run all of this
against (workflow/README.md, "Downloads").

Trust rules (stated once, applied everywhere):

* A hash in the lock is authoritative; a mismatch raises naming file, expected and actual hash, and deletes
  nothing (a downloaded metric backbone that fails its check is kept as ``<file>.rejected`` so that no library
  picks it up from the cache by name; a hub file is moved out of the hub cache to ``blobs/<hash>.rejected``).
* A hub file is also checked against the hub's own hash of it (the name the cache stores it under: sha256 for
  large files, git blob sha1 for small ones), so bytes that changed on the way are caught even before the lock
  knows a hash. Hub files reach ``dest`` only after both checks pass.
* A torchvision file name embeds the first 8 hex digits of its sha256 (``alexnet-owt-7be5be79.pth``); when the
  lock has no full hash that prefix is checked - the same check ``torch.hub`` does.
* A file with no known hash at all is refused unless ``record_unknown=True``: trust-on-first-use. Then the hashes
  actually seen (and the commit they came from) are written to a proposed lock (``weights.lock.proposed.yaml``)
  beside the fetched files and a loud warning says the bytes were NOT verified against the lock. Review it and
  copy it into ``workflow/weights.lock.yaml``.
* A hub mirror without a pinned 40-hex revision is skipped unless ``allow_unpinned=True``; then its current
  commit is resolved first, downloaded at that commit, recorded, and a warning says so.
* Downloaded data is never unpickled with ``pickle.loads``. SD weights must be safetensors; the ``.pth``/``.pt``
  metric files are pickles/TorchScript that only their libraries load, after these checks. Records of the
  official LMDB are read by :func:`restricted_loads`, whose allow-list admits only the numpy array
  reconstructors (lists, tuples and bytes need no global); any other global is refused before it is imported.
"""

from __future__ import annotations

import abc
import copy
import fnmatch
import functools
import io
import os
import pickle
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
        _validate_snapshot_entry(model, f"{where}: 'model", files_required=True)
    datasets = lock.get("datasets")
    if datasets is not None:
        if not isinstance(datasets, dict):
            raise ValueError(f"{where}: 'datasets' must map dataset names to {{mirrors, allow_patterns, files}}")
        for name, entry in datasets.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: 'datasets.{name}' must be a mapping")
            _validate_snapshot_entry(entry, f"{where}: 'datasets.{name}", files_required=False)
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


def _validate_snapshot_entry(entry: dict[str, Any], prefix: str, files_required: bool) -> None:
    """Mirrors, allow_patterns and files of a hub snapshot entry (``prefix`` is like ``"lock: 'model"``)."""
    mirrors = entry.get("mirrors")
    if not isinstance(mirrors, list) or not mirrors:
        raise ValueError(f"{prefix}.mirrors' must be a non-empty list of {{repo_id, revision}}")
    for index, mirror in enumerate(mirrors):
        if not isinstance(mirror, dict) or not isinstance(mirror.get("repo_id"), str):
            raise ValueError(f"{prefix}.mirrors[{index}].repo_id' must be a string")
        revision = mirror.get("revision")
        if revision is not None and not _COMMIT.match(str(revision)):
            raise ValueError(f"{prefix}.mirrors[{index}].revision' must be null or a 40-hex commit, got {revision!r}")
    patterns = entry.get("allow_patterns")
    if not isinstance(patterns, list) or not patterns:
        raise ValueError(f"{prefix}.allow_patterns' must be a non-empty list")
    files = entry.get("files")
    if files is None and not files_required:
        return
    if not isinstance(files, dict) or (files_required and not files):
        raise ValueError(f"{prefix}.files' must map each file to its sha256 (or null)")
    for name, digest in files.items():
        _check_digest(digest, f"{prefix}.files[{name!r}]'")
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            raise ValueError(f"{prefix}.files[{name!r}]' matches no entry of the same section's 'allow_patterns'")


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

    ``source="hub"``: :func:`fetch_snapshot` (``huggingface_hub.snapshot_download`` at the pinned commit into the
    hub cache, mirrors in order); every file is checked against the hub's own hash and the lock *in the cache*,
    and only verified files are copied into ``dest`` - a failed fetch leaves ``dest`` as it was.
    ``source="local"``: copy the lock's files from the pre-seeded folder ``local_dir``, then check them. Either way
    ``dest/MANIFEST.sha256.json`` (the source, the sha256 and size of every lock file) is written last, only
    after every check passed (see the module docstring for the trust rules).
    """
    validate_lock(lock)
    if lock.get("model") is None:
        raise ValueError("lock has no 'model' section to acquire")
    model = lock["model"]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = list(model["files"])
    check = {
        "expected": model["files"],
        "lock": lock,
        "section": ("model", "files"),
        "proposed_at": dest / PROPOSED_LOCK_NAME,
        "record_unknown": record_unknown,
    }
    if source == "hub":
        if local_dir is not None:
            raise ValueError("local_dir is only used with source='local'")
        snapshot, origin = fetch_snapshot(model, "model", allow_unpinned=allow_unpinned, what="SD weights")
        missing = [name for name in files if not (snapshot / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{origin['repo_id']}@{origin['revision']} was downloaded into {snapshot} but lacks {missing}; the "
                "mirror does not hold the files the lock lists. Fix the mirror list or allow_patterns in "
                "workflow/weights.lock.yaml"
            )
        digests = verify_snapshot(snapshot, files, origin=origin, where=str(snapshot), **check)
        (dest / MANIFEST_NAME).unlink(missing_ok=True)
        for name in files:
            target = dest / name
            if target.is_file() and target.stat().st_size == (snapshot / name).stat().st_size:
                if sha256_file(target) == digests[name]:
                    continue
            with atomic_path(target) as tmp:
                shutil.copyfile(snapshot / name, tmp)
    elif source == "local":
        if local_dir is None:
            raise ValueError("source='local' needs local_dir, the pre-seeded folder to copy the weights from")
        (dest / MANIFEST_NAME).unlink(missing_ok=True)  # the folder changes now; a new manifest only if it verifies
        origin = _copy_from_local(model, files, Path(local_dir), dest)
        digests = {name: sha256_file(dest / name) for name in files}
        _check_against_lock(actual=digests, where=str(dest), origin=origin, **check)
    else:
        raise ValueError(f"source must be 'hub' or 'local', got {source!r}")

    manifest = {
        "schema": "dwgf.weights-manifest/1",
        "source": origin,
        "files": {name: {"sha256": digests[name], "size": (dest / name).stat().st_size} for name in files},
    }
    atomic_write_json(dest / MANIFEST_NAME, manifest)
    return dest


# ---------------------------------------------------------------------------------------------------------
# the hub: pinned snapshots in huggingface_hub's cache, checked before anything uses them
# ---------------------------------------------------------------------------------------------------------
def hub_settings() -> dict[str, Any]:
    """Endpoint, cache folder and offline switch, read from the environment at call time.

    ``HF_ENDPOINT`` (default ``https://huggingface.co``), ``HF_HUB_CACHE`` (else ``$HF_HOME/hub``, else
    huggingface_hub's default ``~/.cache/huggingface/hub``), ``HF_HUB_OFFLINE`` (``1``: only the cache is read).
    huggingface_hub reads these once, when it is imported; passing them explicitly makes every fetch follow the
    environment of the moment. Proxies: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``, read by its HTTP client.
    """
    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )
    return {
        "endpoint": (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/"),
        "cache_dir": cache,
        "offline": _env_flag("HF_HUB_OFFLINE"),
    }


def _env_flag(name: str) -> bool:
    """An environment switch as huggingface_hub reads it (1/true/yes/on)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def fetch_snapshot(
    entry: dict[str, Any], repo_type: str, *, allow_unpinned: bool = False, what: str = "files"
) -> tuple[Path, dict[str, Any]]:
    """Download ``entry["allow_patterns"]`` of the first usable mirror of ``entry["mirrors"]`` into the hub cache.

    Steps: (1) for each mirror in order, take its pinned ``revision``; a mirror without one is skipped unless
    ``allow_unpinned`` (then its current commit is resolved first and a warning names it; offline, the commit the
    cache last recorded for ``main``); (2) ``huggingface_hub.snapshot_download(repo_id, repo_type=...,
    revision=<commit>, allow_patterns=..., cache_dir=..., endpoint=..., local_files_only=<offline>)`` - its
    progress bars count files and bytes; files already complete in the cache are not downloaded again, and a
    dropped connection is resumed with an HTTP ``Range`` request; (3) any failure moves on to the next mirror.
    Returns the snapshot folder (read-only links into the cache) and the origin record: endpoint, repo, commit,
    whether the lock pinned it, whether the run was offline, and why earlier mirrors were skipped. Nothing here
    checks hashes: :func:`verify_snapshot` does.
    """
    import huggingface_hub

    settings = hub_settings()
    failures: list[str] = []
    for mirror in entry["mirrors"]:
        repo_id, revision = mirror["repo_id"], mirror.get("revision")
        pinned = revision is not None
        if not pinned:
            if not allow_unpinned:
                failures.append(f"{repo_id}: skipped, no pinned revision in the lock (allow_unpinned=False)")
                continue
            if settings["offline"]:
                revision = "main"  # the cache's refs/main: the commit a previous online run resolved
            else:
                try:
                    revision = _resolve_revision(repo_id, repo_type)
                except Exception as error:  # hub client errors vary; each means this mirror is unusable
                    failures.append(f"{repo_id}: could not resolve its current commit: {type(error).__name__}: {error}")
                    continue
        try:
            folder = huggingface_hub.snapshot_download(
                repo_id=repo_id,
                repo_type=repo_type,
                revision=revision,
                allow_patterns=list(entry["allow_patterns"]),
                cache_dir=settings["cache_dir"],
                endpoint=settings["endpoint"],
                local_files_only=settings["offline"],
                tqdm_class=progress_bar_class(),
            )
        except Exception as error:  # try the next mirror; every failure is reported if all fail
            unfinished = _unfinished_files(repo_id, repo_type, revision, entry["allow_patterns"], settings["cache_dir"])
            named = f" [not downloaded: {', '.join(unfinished)}]" if unfinished else ""
            failures.append(f"{repo_id}@{revision}: {type(error).__name__}: {_one_line(error)}{named}")
            continue
        folder = Path(folder)
        commit = folder.name if _COMMIT.match(folder.name) else revision
        if not pinned and not settings["offline"] and folder.parent.name == "snapshots":
            # the cache's documented layout: refs/main names the commit, which an offline run then finds
            refs = folder.parent.parent / "refs"
            refs.mkdir(exist_ok=True)
            atomic_write_bytes(refs / "main", commit.encode("ascii"))
        if not pinned:
            warnings.warn(
                f"UNPINNED {repo_type.upper()}: {repo_id} ({what}) has no revision in the lock; used commit {commit}. "
                "Pin it in workflow/weights.lock.yaml (the proposed lock written by record_unknown has it).",
                stacklevel=3,
            )
        origin = {
            "kind": "hub",
            "repo_id": repo_id,
            "repo_type": repo_type,
            "revision": commit,
            "revision_pinned_in_lock": pinned,
            "endpoint": settings["endpoint"],
            "offline": settings["offline"],
            "skipped_mirrors": failures,
        }
        return folder, origin
    offline = " (HF_HUB_OFFLINE=1: only the hub cache was read)" if settings["offline"] else ""
    raise RuntimeError(
        f"no mirror in the lock could provide the {what}{offline}: " + " | ".join(failures) + ". Without hub "
        "access, pre-seed the hub cache (HF_HUB_CACHE) or a folder with the files (workflow/README.md, "
        "air-gapped sites)"
    )


def _unfinished_files(
    repo_id: str, repo_type: str, revision: str, patterns: list[str], cache_dir: str | None
) -> list[str]:
    """Files of the repo's listing (as cached by the failed download) that are not complete in its snapshot, so
    that an error names them (huggingface_hub names a large file by its CDN address only)."""
    import huggingface_hub

    cached_tree = getattr(huggingface_hub, "get_cached_repo_tree", None)  # huggingface_hub >= 1.x
    if cached_tree is None or not _COMMIT.match(str(revision)):
        return []
    try:
        listing = cached_tree(repo_id, repo_type=repo_type, revision=revision, cache_dir=cache_dir)
        snapshot = huggingface_hub.try_to_load_from_cache
    except Exception:  # no listing cached (e.g. the revision itself failed): nothing to name
        return []
    wanted = [f.path for f in listing if any(fnmatch.fnmatchcase(f.path, pattern) for pattern in patterns)]
    return [
        path
        for path in wanted
        if not isinstance(snapshot(repo_id, path, cache_dir=cache_dir, revision=revision, repo_type=repo_type), str)
    ]


@functools.cache
def progress_bar_class() -> type:
    """tqdm that also draws into log files (Snakemake's), where huggingface_hub hides its byte bars because stderr
    is not a terminal; ``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides it. Passed as ``tqdm_class`` to the hub client."""
    from tqdm.auto import tqdm

    class DownloadProgress(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes a name; vanilla tqdm does not
            kwargs["disable"] = _env_flag("HF_HUB_DISABLE_PROGRESS_BARS")
            kwargs.setdefault("mininterval", 1.0)
            super().__init__(*args, **kwargs)

    return DownloadProgress


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _resolve_revision(repo_id: str, repo_type: str = "model") -> str:
    """The current commit hash of a hub repo."""
    from huggingface_hub import HfApi

    return str(HfApi(endpoint=hub_settings()["endpoint"]).repo_info(repo_id, repo_type=repo_type).sha)


def hub_object_id(path: Path) -> str | None:
    """The hash the hub named a cached file by (its ETag): sha256 for large (LFS) files, git blob sha1 otherwise.

    A snapshot entry is a link to ``blobs/<etag>``; returns None when the file is not such a link (a copied
    cache, or a file system without links), in which case only the lock can vouch for its bytes.
    """
    real = Path(os.path.realpath(path))
    if real == Path(os.path.abspath(path)) or real.parent.name != "blobs":
        return None
    return real.name if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", real.name) else None


def _matches_hub_object(path: Path, object_id: str, sha256: str) -> bool:
    if len(object_id) == 64:
        return sha256 == object_id
    import hashlib

    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest() == object_id


def reject_cached(path: Path) -> Path | None:
    """Take a cached file that failed a check out of the hub cache (kept as ``<blob>.rejected``; nothing is
    deleted) so that the next run downloads it again instead of reusing the bad bytes. Returns the kept file."""
    real = Path(os.path.realpath(path))
    kept = None
    if real.parent.name == "blobs" and real.is_file():
        kept = real.with_name(real.name + ".rejected")
        os.replace(real, kept)
    Path(path).unlink(missing_ok=True)
    return kept


def verify_snapshot(
    snapshot: Path,
    names: list[str],
    *,
    expected: dict[str, str | None],
    lock: dict[str, Any],
    section: tuple[str, ...],
    proposed_at: Path,
    record_unknown: bool,
    origin: dict[str, Any],
    where: str,
) -> dict[str, str]:
    """sha256 of every file in ``names`` (one progress bar, bytes), checked twice; returns {name: sha256}.

    (1) Against the hub's own hash of the file (:func:`hub_object_id`): catches bytes that changed on the way or in
    the cache even when the lock knows no hash yet; (2) against the lock (:func:`_check_against_lock`: mismatch
    raises, unknown needs ``record_unknown``). A file failing either check is moved out of the cache
    (:func:`reject_cached`) before the error is raised, naming it. Files the first check could not cover (not
    links into a hub cache) are listed in ``origin["hub_hash_unchecked"]``.
    """
    digests = _hash_with_progress(snapshot, names, f"sha256 {origin.get('repo_id', '')}")
    bad, unchecked = [], []
    for name in names:
        object_id = hub_object_id(snapshot / name)
        if object_id is None:
            unchecked.append(name)
        elif not _matches_hub_object(snapshot / name, object_id, digests[name]):
            bad.append((name, f"{object_id} (the hub's own hash of the file)", digests[name]))
    origin["hub_hash_unchecked"] = unchecked  # not links into the cache: only the lock vouches for these
    if bad:
        kept = [str(reject_cached(snapshot / name)) for name, _, _ in bad]
        raise IntegrityError(bad, f"{where} (received bytes moved out of the cache to {kept}; rerun to fetch again)")
    try:
        _check_against_lock(
            expected=expected,
            actual=digests,
            where=where,
            lock=lock,
            section=section,
            proposed_at=proposed_at,
            record_unknown=record_unknown,
            origin=origin,
        )
    except IntegrityError as error:
        kept = [str(reject_cached(snapshot / name)) for name, _, _ in error.mismatches]
        raise IntegrityError(
            error.mismatches, f"{where} (received bytes moved out of the cache to {kept}; rerun to fetch again)"
        ) from None
    return digests


def _hash_with_progress(folder: Path, names: list[str], desc: str) -> dict[str, str]:
    import hashlib

    total = sum((folder / name).stat().st_size for name in names)
    digests = {}
    with progress_bar_class()(total=total, unit="B", unit_scale=True, desc=desc) as bar:
        for name in names:
            digest = hashlib.sha256()
            with open(folder / name, "rb") as handle:
                for block in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(block)
                    bar.update(len(block))
            digests[name] = digest.hexdigest()
    return digests


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
    parent = proposed
    for key in section[:-1]:
        parent = parent[key]
    node = parent[section[-1]] = dict(parent.get(section[-1]) or {})
    for name in unknown:
        node[name] = actual[name]
    if origin.get("kind") == "hub":  # pin the commit these bytes came from, so the proposed lock verifies them
        for mirror in parent.get("mirrors", []):
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
      image files fetched with ``hf_hub_download`` at that commit (optional ``"cache_dir"``; endpoint, cache and
      offline switch from :func:`hub_settings`);
    * ``{"kind": "lmdb", "path": LMDB}`` or ``{"kind": "lmdb", "dataset": NAME, "lock": LOCK}``: the official DWGF
      FFHQ store (:class:`_LmdbReader`), a local LMDB, or the lock's ``datasets.NAME`` fetched from the hub at its
      pinned commit and checked like the weights (:func:`acquire_dataset`). Records are read with a restricted
      unpickler (:func:`load_official_record`) that builds only lists, tuples, bytes and numpy arrays.

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
    dest = Path(dest)
    reader = _open_image_source(source, dest)
    dest.mkdir(parents=True, exist_ok=True)
    records: dict[str, Any] = {}
    try:
        for image_id in progress_bar_class()(ids, desc=f"images ({source.get('kind')})", unit="file"):
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
            f"{where} {text!r} looks like an LMDB/pickle store: refused here, because such stores hold pickles and "
            "unpickling downloaded data can run arbitrary code. For the official DWGF LMDB use source kind 'lmdb' "
            "(read with a restricted unpickler); otherwise export the images to PNG files"
        )


def _open_image_source(source: dict[str, Any], dest: Path | None = None) -> _ImageReader:
    """The reader of ``source``; ``dest`` (the images folder) is where an ``lmdb`` source proposes its lock."""
    if not isinstance(source, dict) or "kind" not in source:
        raise ValueError("image source must be a dict with key 'kind': 'folder', 'archive', 'hf_dataset' or 'lmdb'")
    kind = source["kind"]
    if kind == "folder":
        return _FolderReader(Path(_require(source, "path")))
    if kind == "archive":
        return _ArchiveReader(Path(_require(source, "path")))
    if kind == "hf_dataset":
        return _HubDatasetReader(source)
    if kind == "lmdb":
        if dest is None:
            raise ValueError("an 'lmdb' image source is opened by acquire_images, which names its destination folder")
        return _LmdbReader(source, proposed_at=dest / PROPOSED_LOCK_NAME)
    raise ValueError(f"image source 'kind' must be 'folder', 'archive', 'hf_dataset' or 'lmdb', got {kind!r}")


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
        settings = hub_settings()
        try:
            path = huggingface_hub.hf_hub_download(
                self.repo_id,
                filename,
                repo_type="dataset",
                revision=self.revision,
                cache_dir=self.cache_dir or settings["cache_dir"],
                endpoint=settings["endpoint"],
                local_files_only=settings["offline"],
                tqdm_class=progress_bar_class(),
            )
        except Exception as error:  # hub client errors vary; all mean the file is not available
            raise FileNotFoundError(
                f"image id {image_id!r} ({filename}) not available from dataset {self.repo_id}@{self.revision}: "
                f"{type(error).__name__}: {error}"
            ) from error
        return Path(path).read_bytes(), filename

    def describe(self) -> dict[str, Any]:
        settings = hub_settings()
        return {
            "kind": "hf_dataset",
            "repo_id": self.repo_id,
            "revision": self.revision,
            "filename_template": self.template,
            "endpoint": settings["endpoint"],
            "offline": settings["offline"],
        }


# ---------------------------------------------------------------------------------------------------------
# the official DWGF LMDB store, read without running pickled code
# ---------------------------------------------------------------------------------------------------------
#: The only globals an official record may name (module, name) -> where the object lives now. A record is
#: pickle((list of PNG bytes, label array)): lists, tuples and bytes need no global; a numpy array is rebuilt by
#: _reconstruct / _frombuffer (protocol <= 4 / 5) from a dtype; numpy 1.x wrote ``numpy.core``, 2.x writes
#: ``numpy._core``; protocol 2 writes bytes as ``_codecs.encode(text, "latin1")``.
_RECORD_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    **{
        (f"numpy.{core}.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct")
        for core in ("core", "_core")
    },
    **{(f"numpy.{core}.multiarray", "scalar"): ("numpy._core.multiarray", "scalar") for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer") for core in ("core", "_core")},
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _RecordUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose find_class admits only :data:`_RECORD_GLOBALS`; anything else raises before it is
    imported, so a record that names ``os.system`` (or any other callable) runs nothing."""

    def find_class(self, module: str, name: str) -> Any:
        target = _RECORD_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        import importlib

        try:
            return getattr(importlib.import_module(target[0]), target[1])
        except ImportError:  # numpy 1.x has no numpy._core
            return getattr(importlib.import_module(target[0].replace("numpy._core", "numpy.core")), target[1])

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def restricted_loads(data: bytes, where: str) -> Any:
    """Unpickle ``data`` allowing only lists, tuples, bytes, numbers, strings and numpy arrays.

    Raises ValueError naming ``where`` (and the refused global) for anything else; nothing named by the pickle is
    imported or called unless it is on the allow-list.
    """
    try:
        return _RecordUnpickler(io.BytesIO(bytes(data))).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(
            f"refused to unpickle {where}: {error}. Official DWGF records hold only (list of PNG bytes, label array); "
            "this one is damaged or names other code, which could run arbitrary commands when unpickled"
        ) from None


def load_official_record(data: bytes, where: str) -> bytes:
    """The PNG bytes of one official LMDB record: ``pickle((list of image bytes, label))``, checked for that shape.

    The official writer (DWGF ``src/custom_datasets/create_lmdb.py``) stores what a torch DataLoader of batch size
    1 yields from ``ImageFolder(loader=raw_reader)``: a one-element list with the file's raw bytes, and the label
    as a numpy array; its reader decodes element 0 (``lmdb_dataset.py``).
    """
    record = restricted_loads(data, where)
    if not (isinstance(record, tuple | list) and len(record) == 2):
        raise ValueError(f"{where}: expected a (images, label) pair, got {type(record).__name__}")
    images = record[0]
    if isinstance(images, bytes | bytearray):
        images = [images]
    if not (isinstance(images, list | tuple) and images and isinstance(images[0], bytes | bytearray)):
        raise ValueError(f"{where}: the first element must be a list of image bytes, got {type(images).__name__}")
    return bytes(images[0])


class _LmdbReader(_ImageReader):
    """Images by id from the official DWGF LMDB (``validation.lmdb``: a single file or a folder with data.mdb).

    Id ``"00042"`` is the dataset's index 42 (the official loader names index k ``f"{k:05d}.png"``); its record
    sits under the key ``key_format.format(index=42)`` - ``"{index}"`` (``b"42"``) as the official
    ``create_lmdb.py`` writes it. The store is opened read-only without a lock file, and only the restricted
    unpickler reads its values. Source keys: ``path`` (a local LMDB), or ``dataset`` + ``lock`` (fetched with
    :func:`acquire_dataset`; ``path_in_repo`` default ``validation.lmdb``; ``record_unknown``,
    ``allow_unpinned`` as for the weights).
    """

    def __init__(self, source: dict[str, Any], proposed_at: Path):
        import lmdb

        self.key_format = str(source.get("key_format", "{index}"))
        if "{index" not in self.key_format:
            raise ValueError(f"lmdb source 'key_format' must contain '{{index}}', got {self.key_format!r}")
        self.fetched: dict[str, Any] | None = None
        snapshot = Path()
        if source.get("dataset") is not None:
            if source.get("path") is not None:
                raise ValueError("lmdb source takes either 'path' (a local LMDB) or 'dataset' + 'lock', not both")
            lock = load_lock(_require(source, "lock"))
            snapshot, self.fetched = acquire_dataset(
                lock,
                str(source["dataset"]),
                record_unknown=bool(source.get("record_unknown", False)),
                allow_unpinned=bool(source.get("allow_unpinned", False)),
                proposed_at=proposed_at,
            )
            in_repo = str(source.get("path_in_repo", "validation.lmdb"))
            path = snapshot / in_repo
            if not path.exists():
                raise FileNotFoundError(
                    f"dataset {source['dataset']} ({snapshot}) has no {in_repo!r}; "
                    "set the lmdb source's 'path_in_repo' to the LMDB inside the repo"
                )
        else:
            path = Path(_require(source, "path"))
        if not path.exists():
            raise FileNotFoundError(
                f"LMDB {str(path)!r} does not exist (a file, or a folder holding data.mdb; the official store is "
                "<root>/validation.lmdb)"
            )
        self.path = path
        data_file = path / "data.mdb" if path.is_dir() else path
        if not data_file.is_file():
            raise FileNotFoundError(f"LMDB folder {str(path)!r} has no data.mdb")
        # the hub route hashed (and checked) every file already; a local store is hashed for the manifest
        verified = (self.fetched or {}).get("files_sha256", {})
        self.data_sha256 = verified.get(data_file.relative_to(snapshot).as_posix()) if verified else None
        if self.data_sha256 is None:
            self.data_sha256 = sha256_file(data_file)
        self.env = lmdb.open(
            str(path), readonly=True, lock=False, subdir=path.is_dir(), readahead=False, meminit=False, max_readers=1
        )
        self.txn = self.env.begin(write=False)
        raw_len = self.txn.get(b"__len__")
        self.length = restricted_loads(raw_len, f"{path}[__len__]") if raw_len is not None else None

    def read(self, image_id: str) -> tuple[bytes, str]:
        if not image_id.isdigit():
            raise ValueError(f"LMDB image ids are dataset indices written with digits (like '00042'), got {image_id!r}")
        key = self.key_format.format(index=int(image_id))
        raw = self.txn.get(key.encode("ascii"))
        if raw is None:
            size = f"; it holds {self.length} records" if self.length is not None else ""
            raise FileNotFoundError(
                f"image id {image_id!r} (key {key!r}) not found in LMDB {str(self.path)!r}{size}; check the id list "
                "or the source's key_format"
            )
        return load_official_record(raw, f"record {key!r} of {self.path}"), f"{self.path.name}[{key}]"

    def describe(self) -> dict[str, Any]:
        described = {
            "kind": "lmdb",
            "path": str(self.path.resolve()),
            "data_sha256": self.data_sha256,
            "key_format": self.key_format,
            "records": self.length,
        }
        if self.fetched is not None:
            described["fetched"] = self.fetched
        return described

    def close(self) -> None:
        self.txn.abort()
        self.env.close()


def acquire_dataset(
    lock: dict[str, Any],
    name: str,
    *,
    record_unknown: bool = False,
    allow_unpinned: bool = False,
    proposed_at: Path,
) -> tuple[Path, dict[str, Any]]:
    """Fetch ``lock["datasets"][name]`` into the hub cache (:func:`fetch_snapshot`) and check every file.

    The files checked are those the lock lists plus any other file the snapshot holds that matches
    ``allow_patterns`` (an unlisted file is unknown: trust on first use with ``record_unknown``, which writes the
    proposed lock to ``proposed_at`` with the commit and the sha256s). A listed file missing from the snapshot
    raises naming it. Returns the snapshot folder and the origin record (with ``files_sha256``).
    """
    datasets = lock.get("datasets") or {}
    if name not in datasets:
        raise ValueError(f"dataset {name!r} is not in the lock's 'datasets' (known: {sorted(datasets)})")
    entry = datasets[name]
    snapshot, origin = fetch_snapshot(entry, "dataset", allow_unpinned=allow_unpinned, what=f"dataset {name}")
    listed = dict(entry.get("files") or {})
    present = sorted(
        path.relative_to(snapshot).as_posix()
        for path in snapshot.rglob("*")
        if path.is_file()
        and any(fnmatch.fnmatchcase(path.relative_to(snapshot).as_posix(), p) for p in entry["allow_patterns"])
    )
    missing = [file for file in listed if file not in present]
    if missing:
        raise FileNotFoundError(
            f"dataset {name}: {origin['repo_id']}@{origin['revision']} lacks {missing}, which the lock lists"
        )
    if not present:
        raise FileNotFoundError(
            f"dataset {name}: {origin['repo_id']}@{origin['revision']} holds no file matching {entry['allow_patterns']}"
        )
    expected = {file: listed.get(file) for file in present}
    proposed_at.parent.mkdir(parents=True, exist_ok=True)
    digests = verify_snapshot(
        snapshot,
        present,
        expected=expected,
        lock=lock,
        section=("datasets", name, "files"),
        proposed_at=proposed_at,
        record_unknown=record_unknown,
        origin=origin,
        where=f"dataset {name} ({snapshot})",
    )
    return snapshot, {**origin, "dataset": name, "files_sha256": digests}


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
