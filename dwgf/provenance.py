"""Provenance records: one JSON sidecar per artifact-producing step.

A record is written next to the step's outputs as ``<output dir>/<name>.prov.json`` (or any path the
caller chooses) and states how the outputs were made::

    {
      "schema": "dwgf.provenance/1",
      "step": "solve",                       # the CLI verb
      "outputs": {"path": "sha256", ...},    # paths relative to the results root
      "inputs":  {"path": "sha256", ...},
      "config": {...}, "config_sha256": "...",  # the resolved config subset that affects the outputs
      "seeds": {...},
      "code": {"dwgf": "0.1.0", "git_commit": "...", "git_dirty": false},
      "environment": {"python": ..., "torch": ..., "diffusers": ..., "numpy": ..., "platform": ...},
      "device": "cpu", "dtype": "float32",
      "started_at": "...", "finished_at": "...", "peak_memory_bytes": ...
    }

Writes are atomic (:mod:`dwgf.io`). ``dwgf verify`` re-hashes every file a record names.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dwgf.io import atomic_write_json, sha256_file

SCHEMA = "dwgf.provenance/1"
RECORD_SUFFIX = ".prov.json"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def config_hash(config: Any) -> str:
    """sha256 of the canonical JSON of ``config`` (sorted keys, no whitespace)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def code_version() -> dict[str, Any]:
    """Package version plus git commit and dirty flag of the checkout holding this package, if any.

    ``git_dirty`` is true when any file under ``dwgf/`` differs from the commit, including files git does not
    track yet (a new, uncommitted module changes what ran just as much as an edited one).
    """
    from dwgf import __version__

    info: dict[str, Any] = {"dwgf": __version__, "git_commit": None, "git_dirty": None}
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=normal", "--", "dwgf"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        info["git_commit"] = commit
        info["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (installed wheel): the package version is what identifies the code
    return info


#: distribution name of each module whose version a record states (``cleanfid`` ships as ``clean-fid``).
_DISTRIBUTIONS = {
    "torch": "torch",
    "diffusers": "diffusers",
    "numpy": "numpy",
    "transformers": "transformers",
    "lpips": "lpips",
    "cleanfid": "clean-fid",
}


def environment() -> dict[str, Any]:
    """Python, platform and library versions.

    A module the step imported reports its ``__version__``; one it did not import reports the installed
    distribution's version (``importlib.metadata``, no import cost), so every record states the torch,
    diffusers and numpy it ran next to. ``None`` only when the package is not installed.
    """
    from importlib import metadata

    versions: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name, distribution in _DISTRIBUTIONS.items():
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module else None
        if version is None:
            try:
                version = metadata.version(distribution)
            except metadata.PackageNotFoundError:
                version = None
        versions[name] = version
    return versions


def peak_memory_bytes() -> int:
    """Peak resident memory of this process (ru_maxrss) plus the CUDA peak when CUDA was used."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peak = max(peak, int(torch.cuda.max_memory_allocated()))
    return int(peak)


def hash_files(paths: Iterable[str | os.PathLike], root: str | os.PathLike) -> dict[str, str]:
    """{path relative to root: sha256} for every path (sorted)."""
    root = Path(root).resolve()
    result = {}
    for path in paths:
        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"cannot hash {path}: no such file")
        result[relative_to_root(path, root)] = sha256_file(path)
    return dict(sorted(result.items()))


def relative_to_root(path: str | os.PathLike, root: str | os.PathLike) -> str:
    path, root = Path(path).resolve(), Path(root).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()  # an input outside the results root (a weights cache): kept absolute


class Recorder:
    """Collects what a step did and writes its record.

    >>> rec = Recorder("observe", root="results/demo", config={"sigma_y": 0.001}, seeds={"image": 7})  # doctest: +SKIP
    >>> ...write outputs atomically...  # doctest: +SKIP
    >>> rec.write("results/demo/observations/box/00001.prov.json", outputs=[...], inputs=[...])  # doctest: +SKIP
    """

    def __init__(self, step: str, root: str | os.PathLike, config: Any, seeds: dict[str, Any] | None = None):
        self.step = step
        self.root = Path(root)
        self.config = config
        self.seeds = dict(seeds or {})
        self.started_at = utc_now()
        self.extra: dict[str, Any] = {}

    def write(
        self,
        record_path: str | os.PathLike,
        outputs: Iterable[str | os.PathLike],
        inputs: Iterable[str | os.PathLike] = (),
        device: str | None = None,
        dtype: str | None = None,
    ) -> dict[str, Any]:
        record = {
            "schema": SCHEMA,
            "step": self.step,
            "outputs": hash_files(outputs, self.root),
            "inputs": hash_files(inputs, self.root),
            "config": self.config,
            "config_sha256": config_hash(self.config),
            "seeds": self.seeds,
            "code": code_version(),
            "environment": environment(),
            "device": device,
            "dtype": dtype,
            "started_at": self.started_at,
            "finished_at": utc_now(),
            "peak_memory_bytes": peak_memory_bytes(),
            **({"extra": self.extra} if self.extra else {}),
        }
        atomic_write_json(record_path, record)
        return record


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    if record.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a dwgf provenance record (schema {record.get('schema')!r})")
    return record
