"""Runtime and peak memory per image, from the per-image solve records (``dwgf.pipeline.solve``).

A solve record is the JSON dict ``solve/<method>/<task>/<variant>/images/<id>.json``; the fields used here:

* ``runtime_s``: wall-clock seconds of the image's solve (``time.perf_counter`` around load + solve + save);
* ``peak_memory_bytes``: ``dwgf.provenance.peak_memory_bytes()`` right after it -- the process's peak RSS
  (``ru_maxrss``, a high-water mark over the whole shard so far, not per image) or, when CUDA was used, the
  larger of that and the CUDA peak (reset before each image);
* ``status``: ``ok`` / ``diverged`` / ``error``; ``image_id``.

:func:`solve_record_rows` turns one record into rows ``runtime_s`` (protocol ``wall_clock``) and
``peak_memory_bytes`` (protocol ``ru_maxrss|cuda_max_allocated``). A record whose solve did not succeed keeps
its measured numbers, with status ``solve_<status>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dwgf.metrics.schema import STATUS_OK, RowKeys

RUNTIME_PROTOCOL = "wall_clock"
#: Metrics that measure the run, not the result: ``dwgf aggregate`` keeps them out of ``metrics.parquet`` (in
#: ``runtime.parquet``), so two reproductions of a suite give byte-identical metric tables.
RUN_MEASUREMENTS = ("runtime_s", "peak_memory_bytes")
MEMORY_PROTOCOL = "ru_maxrss|cuda_max_allocated"


def solve_record_rows(record: Mapping[str, Any], keys: RowKeys, device: str | None = None) -> list[dict[str, Any]]:
    """Rows for one per-image solve record; ``keys`` names suite/task/method/variant/hyper (image_id from record).

    ``device`` (e.g. ``"cpu"``, ``"cuda:NVIDIA H100"``) goes into the ``network`` column, since timings are
    only comparable on the same hardware.
    """
    for name in ("image_id", "status", "runtime_s", "peak_memory_bytes"):
        if name not in record:
            raise ValueError(f"solve record {record.get('image_id', '<no image_id>')!r} lacks {name!r}")
    status = STATUS_OK if record["status"] == "ok" else f"solve_{record['status']}"
    image_keys = keys if keys.image_id == record["image_id"] else keys.for_image(str(record["image_id"]))
    return [
        image_keys.row(metric="runtime_s", protocol=RUNTIME_PROTOCOL, value=float(record["runtime_s"]),
                       status=status, network=device),
        image_keys.row(metric="peak_memory_bytes", protocol=MEMORY_PROTOCOL,
                       value=float(record["peak_memory_bytes"]), status=status, network=device),
    ]  # fmt: skip
