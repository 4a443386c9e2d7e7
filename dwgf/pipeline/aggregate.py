"""Pipeline step 6b (``dwgf aggregate``): one long-format ``metrics.parquet``, one ``set_metrics.parquet`` and
one ``runtime.parquet``.

The rows that measure the run rather than the result (:data:`dwgf.metrics.runtime.RUN_MEASUREMENTS`: seconds and
peak memory per image, whose ``network`` column names the device) go to ``runtime.parquet``, so that
``metrics.parquet`` holds only facts of the result and two reproductions of a suite have byte-identical bytes.

Both are the concatenation (re-validated, :func:`dwgf.metrics.schema.concat_metrics`) of the per-shard and
per-set files, sorted by their key columns so the bytes do not depend on the order Snakemake lists the inputs
in. Columns are documented in :mod:`dwgf.metrics.schema` (and workflow/README.md). The step refuses to mix
feature networks in one FID/KID table (:func:`dwgf.metrics.schema.assert_one_network`) and checks that the
per-shard files hold rows of the suite being aggregated only, and that each still has the sha256 its record
stored (:func:`dwgf.pipeline.records.recorded_input`; the records become inputs, so the aggregate record protects
them as wholes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dwgf.pipeline.layout import LAYOUT, suite_path

SORT_KEYS = [
    "level",
    "task",
    "method",
    "variant",
    "image_id",
    "particle",
    "sample_policy",
    "metric",
    "protocol",
    "network",
]


def combine(paths: list[str], suite: str):
    """Concatenate, validate and sort metric files; ValueError if a file belongs to another suite."""
    from dwgf.metrics.schema import concat_metrics, read_metrics

    frames = []
    for path in paths:
        frame = read_metrics(path)
        others = sorted(set(frame["suite"].dropna()) - {suite})
        if others:
            raise ValueError(f"{path} holds rows of suite(s) {others}, not {suite!r}; re-run its evaluate job")
        frames.append(frame)
    combined = concat_metrics(frames)
    return combined.sort_values(SORT_KEYS, na_position="first", kind="mergesort").reset_index(drop=True)


def aggregate(
    spec: dict[str, Any],
    root: str | os.PathLike,
    metric_files: list[str],
    set_metric_files: list[str],
    out: str | os.PathLike,
    out_set: str | os.PathLike,
    out_runtime: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """``out_runtime`` defaults to ``runtime.parquet`` beside ``out``."""
    from dwgf.metrics.runtime import RUN_MEASUREMENTS
    from dwgf.metrics.schema import assert_one_network, write_metrics
    from dwgf.pipeline.records import recorded_input
    from dwgf.provenance import RECORD_SUFFIX, Recorder

    suite = spec["suite"]
    recorder = Recorder("aggregate", root=root, config=spec, seeds={})
    metrics = combine(metric_files, suite)
    set_metrics = combine(set_metric_files, suite)
    # every file must still be what its evaluate / set-metrics record says (an edited row stops here)
    inputs = [p for f in [*metric_files, *set_metric_files] for p in recorded_input(f, f + RECORD_SUFFIX, root)]
    assert_one_network(set_metrics)
    out_runtime = Path(out).parent / LAYOUT["runtime"] if out_runtime is None else Path(out_runtime)
    measured = metrics["metric"].isin(RUN_MEASUREMENTS).to_numpy()
    runtime = metrics[measured].reset_index(drop=True)
    metrics = metrics[~measured].reset_index(drop=True)
    write_metrics(metrics, out)
    write_metrics(set_metrics, out_set)
    write_metrics(runtime, out_runtime)
    recorder.extra["rows"] = {"metrics": len(metrics), "set_metrics": len(set_metrics), "runtime": len(runtime)}
    recorder.write(suite_path(root, "aggregate_record"), outputs=[out, out_set, out_runtime], inputs=inputs)
    return recorder.extra["rows"]
