"""``dwgf verify --recompute K``: recompute the per-image metrics of K solved images and compare with the Parquet.

Hashes prove that files are the ones their records name; they cannot prove that a record's numbers were computed
from the files (a forger can edit a value and every stored hash consistently). Here the numbers are recomputed:

1. candidates are the (evaluate record, image id) pairs of the suite, in sorted order; ``random.Random(seed)``
   picks K of them (all of them when K < 0 or K >= their number);
2. for each, the particles ``solve/.../images/<id>.npz`` (as indexed by the solve shard record the evaluate
   record read) and the ground truth ``data/images/<id>.png`` are loaded and
   :meth:`dwgf.metrics.evaluate.ImageMetrics.rows` computes PSNR/SSIM/LPIPS per particle and for the
   particle-mean image, and the particle diversity, with the evaluate record's metric settings;
3. every recomputed non-null value must equal the row with the same (metric, protocol, network, particle) in
   the per-shard Parquet and in ``metrics.parquet`` to within ``1e-6`` relative (the same code on the same bytes
   gives the same value; the tolerance only absorbs BLAS summation order across machines). A mismatch is a
   ``recomputed`` problem; its repair forces the evaluate job.

The exact-posterior rows of the test bed (``posterior_*``, ``spread_ratio``, ``sliced_w2``) are not recomputed.
A relative ``metrics.weights.torch_home`` is resolved against ``workdir`` (the run's working directory); an LPIPS
backbone that is not cached there yields null recomputed values, which are skipped.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from dwgf.audit.index import RecordEntry, ResultsIndex

RELATIVE_TOLERANCE = 1e-6
MATCH_COLUMNS = ("metric", "protocol", "network", "particle")


def candidates(index: ResultsIndex) -> list[tuple[RecordEntry, str]]:
    """(evaluate record, image id) of every solved image with particle files, sorted by record path and id."""
    found = []
    for entry in sorted(index.by_step("evaluate"), key=lambda e: e.path):
        shard = _shard_of(index, entry)
        if shard is None:
            continue
        for image_id, item in sorted((shard.extra.get("images") or {}).items()):
            if "npz" in (item.get("files") or {}):
                found.append((entry, image_id))
    return found


def _shard_of(index: ResultsIndex, entry: RecordEntry) -> RecordEntry | None:
    for path in entry.inputs:
        other = index.records.get(path)
        if other is not None and other.step == "solve":
            return other
    return None


def recompute_rows(index: ResultsIndex, k: int, seed: int, add, workdir: str | None = None) -> int:
    """Recompute K images (module docstring); report each mismatch through ``add``; return how many were done."""
    import json

    import numpy as np
    import pandas as pd
    import torch

    from dwgf.audit.verify import Problem, snakemake_target
    from dwgf.pipeline.evaluate import EvaluationContext, _image_keys
    from dwgf.pipeline.images import load_image

    pool = candidates(index)
    chosen = pool if k < 0 or k >= len(pool) else random.Random(seed).sample(pool, k)
    context = EvaluationContext()
    aggregated = None
    if index.sha256("metrics.parquet") is not None:
        aggregated = pd.read_parquet(index.resolve("metrics.parquet"))
    images = index.images_record().extra.get("images") or {}
    for entry, image_id in chosen:
        spec = entry.config
        shard = _shard_of(index, entry)
        item = shard.extra["images"][image_id]
        per_image = json.loads(index.resolve(item["record"]).read_text(encoding="utf-8"))
        metrics = spec["metrics"]
        torch_home = Path((metrics.get("weights") or {}).get("torch_home", "cache/torch"))
        if not torch_home.is_absolute() and workdir:
            torch_home = Path(workdir) / torch_home
        nets = tuple((metrics.get("lpips") or {}).get("nets", ["alex"]))
        keys = _image_keys(spec, per_image).for_image(image_id, None, None)
        with np.load(index.resolve(item["files"]["npz"])) as data:
            particles = torch.from_numpy(data["particles"])
        gt = load_image(index.resolve(images[image_id]), image_size=int(spec["image_size"])).unsqueeze(0)
        fresh = context.image_metrics(str(torch_home), nets).rows(particles, gt, keys)
        parquet = [p for p in entry.outputs if p.endswith(".parquet")]
        stored = {p: pd.read_parquet(index.resolve(p)) for p in parquet if index.sha256(p) is not None}
        if aggregated is not None:
            stored["metrics.parquet"] = aggregated
        coordinates = {"method": spec["method"], "task": spec["task"]["name"], "variant": spec["variant"]}
        for path, frame in stored.items():
            rows = frame[(frame["image_id"] == image_id) & (frame["level"] == "image")]
            for column, value in coordinates.items():
                rows = rows[rows[column] == value]
            bad = _mismatches(fresh, rows)
            if bad:
                shown = "; ".join(bad[:3]) + (f"; ... ({len(bad)} in all)" if len(bad) > 3 else "")
                add(
                    Problem(
                        "recomputed",
                        path,
                        f"{image_id} ({'/'.join(coordinates.values())}): recomputed from the particle files {shown}",
                        entry.path,
                        snakemake_target(entry),
                    )
                )
    return len(chosen)


def _mismatches(fresh: list[dict], rows) -> list[str]:
    def key(row) -> tuple:
        return tuple(None if _missing(row.get(c)) else (int(row[c]) if c == "particle" else row[c])
                     for c in MATCH_COLUMNS)  # fmt: skip

    stored: dict[tuple, list[float]] = {}
    for row in rows.to_dict("records"):
        stored.setdefault(key(row), []).append(row["value"])
    bad = []
    for row in fresh:
        value = row.get("value")
        if _missing(value):
            continue  # e.g. an LPIPS backbone that is not cached here: nothing to compare
        found = stored.get(key(row))
        label = f"{row['metric']}[{row['protocol']}, particle {row.get('particle')}]"
        if not found:
            bad.append(f"{label} = {value:.6g}, but no such row is stored")
        elif not any(not _missing(v) and math.isclose(v, value, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12)
                     for v in found):  # fmt: skip
            bad.append(f"{label} = {value:.6g}, stored {', '.join(f'{v:.6g}' for v in found)}")
    return bad


def _missing(value) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))
