"""Byte-reproducible ``.npz`` files.

``numpy.savez`` stamps every zip member with the current time, so the same arrays give different bytes (and a
different sha256) on every run. Provenance records, the audit and the ``*_sha256`` columns of the metrics table
compare hashes across runs, so observation and solve arrays are written here with a fixed member timestamp
(1980-01-01, the zip epoch), no compression, members in sorted order, and atomically (:mod:`dwgf.io`).
``numpy.load`` reads the result like any ``.npz``.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from dwgf.io import atomic_path

_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz`` whose bytes depend only on the arrays."""
    if not arrays:
        raise ValueError("save_npz needs at least one array")
    with atomic_path(path, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in sorted(arrays):
                array = np.asarray(arrays[name])
                if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d arrays into 1-d)
                    array = array.copy(order="C")
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array, allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue())
    return Path(path)
