"""Every provenance record of one suite's results folder, and the look-ups ``verify`` and ``trace`` share.

A suite's results folder (``results/<suite>``, :data:`dwgf.pipeline.layout.LAYOUT`) holds artifacts plus one
provenance record (``*.prov.json``, schema ``dwgf.provenance/1``, :mod:`dwgf.provenance`) per workflow job. A
record names the sha256 of every file the job wrote (``outputs``) and read (``inputs``), by path relative to the
results folder (absolute for files outside it, such as a weights cache). Records therefore form a DAG: a file is
linked to the record that produced it and to every record that consumed it.

The ``extra`` section of a record indexes what its step produced, per step (:mod:`dwgf.pipeline.records`):

* ``acquire-images``: ``extra.images = {image_id: "data/images/<id>.png"}``;
* ``fit-prior`` / ``acquire-weights``: ``extra.prior = {"kind", "folder"}``;
* ``observe``: ``extra.task``, ``extra.operator``, ``extra.images = {id: {"npz", "png"}}``;
* ``solve``: ``extra.images = {id: {"record", "status", "files": {name: path}}}`` with per-image records of
  schema ``dwgf.solve_image/1`` (``<id>.json``: seed, status, hyper-parameters, sha256 of the particle files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from dwgf.io import sha256_file
from dwgf.pipeline.layout import LAYOUT
from dwgf.provenance import RECORD_SUFFIX, SCHEMA

#: Folders of a results directory that no record covers by design (Snakemake logs and benchmark TSVs, and the
#: output of ``dwgf verify`` itself).
UNRECORDED_DIRS = ("logs", "benchmarks", "audit")
#: Files that describe a run rather than its results (dwgf.suite_run): the lock and the latest invocation.
UNRECORDED_FILES = (".dwgf.lock", LAYOUT["invocation"])
#: Schema of the per-image solve records that a solve shard record indexes.
SOLVE_IMAGE_SCHEMA = "dwgf.solve_image/1"
PRIOR_STEPS = ("fit-prior", "acquire-weights")


@dataclass
class RecordEntry:
    """One record file: its path relative to the results folder and its parsed content (``None`` if unreadable)."""

    path: str
    record: dict[str, Any] | None
    error: str | None = None

    @property
    def step(self) -> str | None:
        return self.record.get("step") if self.record else None

    @property
    def extra(self) -> dict[str, Any]:
        return (self.record or {}).get("extra") or {}

    @property
    def outputs(self) -> dict[str, str]:
        return dict((self.record or {}).get("outputs") or {})

    @property
    def inputs(self) -> dict[str, str]:
        return dict((self.record or {}).get("inputs") or {})

    @property
    def config(self) -> Any:
        return (self.record or {}).get("config")


@dataclass
class ResultsIndex:
    """All records under ``root`` with a shared, lazily filled sha256 cache (each file is hashed once)."""

    root: Path
    records: dict[str, RecordEntry] = field(default_factory=dict)
    _hashes: dict[str, str | None] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, root: str | os.PathLike) -> ResultsIndex:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"results folder {str(root)!r} does not exist; pass the suite's folder (results/<suite>) written by "
                f"`snakemake --config suite=<suite>`"
            )
        index = cls(root=root)
        for relative in index.walk():
            if relative.endswith(RECORD_SUFFIX):
                index.records[relative] = _read_entry(root, relative)
        return index

    # -- files -------------------------------------------------------------------------------------------------
    def walk(self) -> Iterator[str]:
        """Every regular file under the root (relative POSIX paths, sorted), except :data:`UNRECORDED_DIRS` and
        :data:`UNRECORDED_FILES`."""
        found = []
        for directory, subdirs, files in os.walk(self.root):
            relative_dir = Path(directory).relative_to(self.root)
            if relative_dir == Path("."):
                subdirs[:] = [d for d in subdirs if d not in UNRECORDED_DIRS]
            subdirs.sort()
            found += [(relative_dir / name).as_posix() for name in files]
        return iter(sorted(p for p in found if p not in UNRECORDED_FILES))

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.root / path

    def sha256(self, relative: str) -> str | None:
        """Current sha256 of a recorded path, ``None`` when it is not a file."""
        if relative not in self._hashes:
            path = self.resolve(relative)
            self._hashes[relative] = sha256_file(path) if path.is_file() else None
        return self._hashes[relative]

    # -- record look-ups ---------------------------------------------------------------------------------------
    def by_step(self, *steps: str) -> list[RecordEntry]:
        return [entry for entry in self.records.values() if entry.step in steps]

    @cached_property
    def producers(self) -> dict[str, list[str]]:
        """{output path: [records naming it as an output]} (more than one is a conflict)."""
        table: dict[str, list[str]] = {}
        for entry in self.records.values():
            for path in entry.outputs:
                table.setdefault(path, []).append(entry.path)
        return table

    @cached_property
    def consumers(self) -> dict[str, list[str]]:
        """{input path: [records naming it as an input]}."""
        table: dict[str, list[str]] = {}
        for entry in self.records.values():
            for path in entry.inputs:
                table.setdefault(path, []).append(entry.path)
        return table

    def one(self, what: str, candidates: list[RecordEntry], hint: str) -> RecordEntry:
        if not candidates:
            raise LookupError(f"{self.root}: no {what} record found; {hint}")
        if len(candidates) > 1:
            names = ", ".join(c.path for c in candidates)
            raise LookupError(f"{self.root}: several {what} records ({names}); remove the stale one(s) and re-run")
        return candidates[0]

    def images_record(self) -> RecordEntry:
        return self.one("acquire-images", self.by_step("acquire-images"), "run the workflow (`dwgf acquire-images`)")

    def prior_record(self) -> RecordEntry:
        return self.one("prior", self.by_step(*PRIOR_STEPS), "run the workflow (`dwgf fit-prior`/`acquire-weights`)")

    def observe_record(self, task: str) -> RecordEntry:
        found = [e for e in self.by_step("observe") if e.extra.get("task") == task]
        tasks = sorted({str(e.extra.get("task")) for e in self.by_step("observe")})
        return self.one(f"observe (task {task!r})", found, f"tasks with observations: {tasks}")

    def solve_record(self, method: str, task: str, variant: str, image_id: str) -> RecordEntry:
        """The solve shard record of ``method``/``task``/``variant`` that holds ``image_id``."""
        found = [
            e
            for e in self.by_step("solve")
            if _solve_key(e) == (method, task, variant) and image_id in (e.extra.get("images") or {})
        ]
        keys = sorted({"/".join(map(str, _solve_key(e))) for e in self.by_step("solve")})
        return self.one(
            f"solve ({method}/{task}/{variant}, image {image_id!r})", found, f"solved method/task/variant: {keys}"
        )

    def solve_image_paths(self, method: str, task: str, variant: str, image_id: str) -> dict[str, str]:
        """{"record": per-image record path, <file name>: path, ...} of one solved image (from its shard record)."""
        shard = self.solve_record(method, task, variant, image_id)
        item = shard.extra["images"][image_id]
        return {"record": item["record"], **dict(item.get("files") or {})}

    def observation_path(self, task: str, image_id: str) -> str:
        item = (self.observe_record(task).extra.get("images") or {}).get(image_id)
        if item is None:
            raise LookupError(f"no observation of image {image_id!r} for task {task!r} in {self.root}")
        return item["npz"]

    def image_path(self, image_id: str) -> str:
        path = (self.images_record().extra.get("images") or {}).get(image_id)
        if path is None:
            raise LookupError(f"image id {image_id!r} is not in {self.images_record().path}")
        return path


def _solve_key(entry: RecordEntry) -> tuple[str, str, str]:
    config = entry.config or {}
    task = config.get("task") or {}
    return (config.get("method"), task.get("name") if isinstance(task, dict) else task, config.get("variant"))


def _read_entry(root: Path, relative: str) -> RecordEntry:
    try:
        with open(root / relative, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        return RecordEntry(relative, None, f"cannot be read as JSON ({error})")
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        schema = record.get("schema") if isinstance(record, dict) else type(record).__name__
        return RecordEntry(relative, None, f"is not a provenance record (schema {schema!r}, expected {SCHEMA!r})")
    return RecordEntry(relative, record)
