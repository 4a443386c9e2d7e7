"""Specs in, records out: the small contract every pipeline verb follows.

* A verb receives its job's resolved configuration as JSON (``--spec '{...}'`` or ``--spec @file.json``), built by
  :class:`dwgf.pipeline.plan.Plan`.
* A verb's completion marker is a provenance record (:class:`dwgf.provenance.Recorder`, schema
  ``dwgf.provenance/1``) written **last**, atomically; its ``extra`` section indexes what the step produced
  (image ids -> files). Downstream verbs read that index instead of guessing file names, and ``dwgf verify``
  re-hashes every file it names.
* A verb that reads another job's output checks it against that job's record first (:func:`recorded_input`):
  Snakemake re-runs on modification times, so an edited file would otherwise flow silently into every later
  result. The consumer lists the producer's record among its inputs too, so its own record stores the sha256 of
  the whole producing record (a chain up to the suite's root record, dwgf/audit/root.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dwgf.provenance import read_record


def parse_spec(text: str) -> dict[str, Any]:
    """``--spec`` value: inline JSON, or ``@path`` to a JSON file."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise FileNotFoundError(f"--spec file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--spec is not valid JSON ({error}); pass the job spec that the Snakefile builds") from error
    if not isinstance(spec, dict):
        raise ValueError(f"--spec must be a JSON object, got {type(spec).__name__}")
    return spec


def require(spec: dict[str, Any], *keys: str, where: str = "spec") -> None:
    missing = [key for key in keys if key not in spec]
    if missing:
        raise ValueError(f"{where} lacks key(s) {missing}; regenerate it from the workflow config")


def read_step_record(path: str | os.PathLike, step: str) -> dict[str, Any]:
    """A provenance record written by verb ``step``; FileNotFoundError names the verb that creates it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; it is written by `dwgf {step}` (run the workflow)")
    record = read_record(path)
    if record.get("step") != step:
        raise ValueError(f"{path}: expected a record of `dwgf {step}`, found one of `dwgf {record.get('step')}`")
    return record


def recorded_input(path: str | os.PathLike, record: str | os.PathLike, root: str | os.PathLike) -> list[Path]:
    """``[path, record]`` (for a step's ``inputs``) after checking that ``path`` still has the sha256 that
    ``record`` (the provenance record of the job that wrote it) stored; ``ValueError`` otherwise."""
    from dwgf.io import sha256_file
    from dwgf.provenance import relative_to_root

    path, record = Path(path), Path(record)
    if not record.is_file():
        raise FileNotFoundError(f"{str(record)!r} does not exist; it is the record of the job that wrote {path}")
    produced = read_record(record)
    key = relative_to_root(path, root)
    stored = (produced.get("outputs") or {}).get(key)
    if stored is None:
        raise ValueError(f"{record} does not name {key} among its outputs; re-run the job that writes {path}")
    now = sha256_file(path)
    if now != stored:
        raise ValueError(
            f"{path} was changed after `dwgf {produced.get('step')}` wrote it (sha256 {now[:12]}…, recorded "
            f"{stored[:12]}…); refusing to use it: `dwgf verify {root}` prints the command that re-makes it"
        )
    return [path, record]


def resolve(root: str | os.PathLike, relative: str) -> Path:
    """A path stored in a record (relative to the results root, or absolute) as a real path."""
    path = Path(relative)
    return path if path.is_absolute() else Path(root) / path
