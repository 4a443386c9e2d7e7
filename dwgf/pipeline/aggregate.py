"""Pipeline step 6b (``dwgf aggregate``): one long-format ``metrics.parquet`` and one ``set_metrics.parquet``.

Both are the concatenation (re-validated, :func:`dwgf.metrics.schema.concat_metrics`) of the per-shard and
per-set files, sorted by their key columns so the bytes do not depend on the order Snakemake lists the inputs
in. Columns are documented in :mod:`dwgf.metrics.schema` (and workflow/README.md). The step refuses to mix
feature networks in one FID/KID table (:func:`dwgf.metrics.schema.assert_one_network`) and checks that the
per-shard files hold rows of the suite being aggregated only.
"""

from __future__ import annotations

import os
from typing import Any

from dwgf.pipeline.layout import suite_path

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
) -> dict[str, Any]:
    from dwgf.metrics.schema import assert_one_network, write_metrics
    from dwgf.provenance import Recorder

    suite = spec["suite"]
    recorder = Recorder("aggregate", root=root, config=spec, seeds={})
    metrics = combine(metric_files, suite)
    set_metrics = combine(set_metric_files, suite)
    assert_one_network(set_metrics)
    write_metrics(metrics, out)
    write_metrics(set_metrics, out_set)
    recorder.extra["rows"] = {"metrics": len(metrics), "set_metrics": len(set_metrics)}
    recorder.write(
        suite_path(root, "aggregate_record"), outputs=[out, out_set], inputs=[*metric_files, *set_metric_files]
    )
    return recorder.extra["rows"]
