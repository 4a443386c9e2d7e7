"""``dwgf trace``: the lineage of one reported number, from the table back to the input image and the prior.

Given a suite's results folder and the coordinates of a number (method, task, variant, metric and optionally an
image id and a particle), :func:`trace` collects

1. the metric rows of ``metrics.parquet`` that make the number (one image: its per-particle rows; no image: the
   table cell, recomputed from the rows as the mean and sample standard deviation over images of the per-image
   mean over particles), the per-shard Parquet file they came from, and the tables that print them;
2. the solve run: the shard provenance record (resolved config, code version, environment, device, dtype), the
   per-image record (seed, status, runtime, resolved hyper-parameters) and every particle file with its sha256;
3. the observation ``observations/<task>/<id>.npz`` (sha256, noise seed, operator and sigma_y);
4. the ground-truth image ``data/images/<id>.png`` and where it came from;
5. the prior (test-bed fit or pinned diffusion weights) with the sha256 of its files.

Every file is re-hashed and marked ``ok``, ``MODIFIED`` (differs from its record) or ``MISSING``, and every link
hash stored in a metric row is compared with the file it names, so a trace is also a focused ``dwgf verify``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from dwgf.audit.index import RecordEntry, ResultsIndex

METRICS_FILE = "metrics.parquet"
SET_METRICS_FILE = "set_metrics.parquet"
INTEGER_COLUMNS = ("particle", "n_particles", "n_samples")
ROW_FIELDS = ("image_id", "particle", "sample_policy", "reference", "value", "status", "network", "run_sha256")
IMAGE_RECORD_KEYS = ("seed", "status", "runtime_s", "n_steps", "diverged_at_step", "hyper")


def trace(
    root: str | os.PathLike,
    method: str,
    task: str,
    metric: str,
    image: str | None = None,
    variant: str = "main",
    particle: int | None = None,
    protocol: str | None = None,
) -> dict[str, Any]:
    """Lineage of one number as a JSON-able dict (see module docstring); :func:`format_trace` prints it.

    ``protocol`` selects rows whose ``protocol`` starts with it (as the tables do); by default ``standard`` when
    the metric has it, else the metric's only protocol. Set-level metrics (FID, KID) are read from
    ``set_metrics.parquet`` and traced to the particle files and ground-truth images of their set.
    """
    import pandas as pd

    index = ResultsIndex.load(root)
    frames = {}
    for name in (METRICS_FILE, SET_METRICS_FILE):
        if not index.resolve(name).is_file():
            raise FileNotFoundError(f"{index.resolve(name)} does not exist; it is written by `dwgf aggregate`")
        frames[name] = pd.read_parquet(index.resolve(name))
    source = SET_METRICS_FILE if metric in set(frames[SET_METRICS_FILE]["metric"]) else METRICS_FILE
    frame = frames[source]
    selection: dict[str, Any] = {"method": method, "task": task, "variant": variant, "metric": metric}
    if image is not None:
        selection["image_id"] = image
    if particle is not None:
        selection["particle"] = int(particle)
    rows = frame
    for column, wanted in selection.items():
        matched = rows[rows[column] == wanted]
        if matched.empty:
            choices = sorted(map(str, rows[column].dropna().unique()))
            where = index.resolve(source)
            raise LookupError(f"no metric row with {column} = {wanted!r} in {where}; available: {choices}")
        rows = matched
    rows, selection["protocol"] = _select_protocol(rows, protocol)
    lineage: dict[str, Any] = {
        "root": str(index.root),
        "selection": selection,
        "metrics_file": _file(index, source),
        "aggregate_record": _record_summary(index, _producer(index, source)),
        "rows": _jsonable_rows(rows),
        "tables": _tables(index),
        "prior": _prior(index),
    }
    if source == SET_METRICS_FILE:
        lineage["set"] = _set_lineage(index, method, task, variant)
        return lineage
    if image is None:
        lineage["cell"] = _cell(rows)
    images = sorted(rows["image_id"].unique())
    lineage["images"] = [_image_lineage(index, method, task, variant, i, rows[rows["image_id"] == i]) for i in images]
    return lineage


def _select_protocol(rows, protocol: str | None):
    protocols = sorted(rows["protocol"].dropna().unique()) if "protocol" in rows.columns else []
    if not protocols:
        return rows, None
    if protocol is None:
        protocol = "standard" if "standard" in protocols else (protocols[0] if len(protocols) == 1 else None)
        if protocol is None:
            raise LookupError(f"metric rows have several protocols {protocols}; choose one with --protocol")
    chosen = [protocol] if protocol in protocols else sorted(p for p in protocols if p.startswith(protocol))
    if len(chosen) != 1:
        raise LookupError(f"--protocol {protocol!r} matches {chosen or 'no'} protocol(s); available: {protocols}")
    return rows[rows["protocol"] == chosen[0]], chosen[0]


def _cell(rows) -> dict[str, Any]:
    """Recompute a table cell: per image, the mean over particles (``particle >= 0``) or the image's one value
    (``particle`` null); then the mean and sample std (ddof 1) over images. Null values are excluded."""
    values = rows[rows["value"].notna()]
    if "particle" in values.columns:
        per_particle = values[values["particle"].fillna(-2) >= 0]
        values = per_particle if not per_particle.empty else values[values["particle"].isna()]
    per_image = values.groupby("image_id")["value"].mean()
    numbers = [float(v) for v in per_image.values]
    mean = sum(numbers) / len(numbers) if numbers else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in numbers) / (len(numbers) - 1)) if len(numbers) > 1 else math.nan
    return {
        "definition": "mean and sample std (ddof 1) over images of the per-image mean over particles "
        "(particle >= 0; the particle-mean image, particle -1, is not used); null values excluded",
        "per_image": {str(k): float(v) for k, v in per_image.items()},
        "mean": mean,
        "std": std,
        "n_images": len(numbers),
        "n_null_rows": int(rows["value"].isna().sum()),
    }


def _set_lineage(index: ResultsIndex, method: str, task: str, variant: str) -> dict[str, Any]:
    """The set-metrics record of one method/task/variant and every file (particles, ground truth) it read."""
    found = [
        e
        for e in index.by_step("set-metrics")
        if ((e.config or {}).get("method"), (e.config or {}).get("task"), (e.config or {}).get("variant"))
        == (method, task, variant)
    ]
    entry = index.one(f"set-metrics ({method}/{task}/{variant})", found, "run the workflow (`dwgf set-metrics`)")
    return {
        "record": _record_summary(index, entry),
        "parquet": [_file(index, p, recorded=d) for p, d in sorted(entry.outputs.items())],
        "inputs": [_file(index, p, recorded=d) for p, d in sorted(entry.inputs.items())],
    }


def _image_lineage(index: ResultsIndex, method: str, task: str, variant: str, image_id: str, rows) -> dict[str, Any]:
    shard = index.solve_record(method, task, variant, image_id)
    item = shard.extra["images"][image_id]
    per_image_path = item["record"]
    per_image = json.loads(index.resolve(per_image_path).read_text(encoding="utf-8"))
    folder = os.path.dirname(per_image_path)
    particle_files = [
        {**_file(index, f"{folder}/{name}"), "recorded_sha256": digest}
        for name, digest in sorted((per_image.get("files") or {}).items())
    ]
    for entry in particle_files:
        if entry["sha256"] is not None and entry["sha256"] != entry["recorded_sha256"]:
            entry["status"] = "MODIFIED"
    observe = index.observe_record(task)
    observation = index.observation_path(task, image_id)
    images = index.images_record()
    image_path = index.image_path(image_id)
    links = {}
    run_artifact = item.get("files", {}).get("npz")  # the particles (dwgf.metrics.schema: run_sha256)
    for column, path in (("observation_sha256", observation), ("run_sha256", run_artifact)):
        if column in rows.columns:
            stored = sorted(set(rows[column].dropna()))
            now = index.sha256(path) if path else None
            links[column] = {"file": path, "row_values": stored, "now": now, "ok": stored == ([now] if now else [])}
    config = shard.config or {}
    return {
        "image_id": image_id,
        "evaluate": _evaluate_source(index, method, task, variant, image_id),
        "run": {
            "shard_record": _record_summary(index, shard),
            "settings": {k: config.get(k) for k in ("n_particles", "n_steps", "hyper", "seed", "device", "dtype")},
            "image_record": {
                **_file(index, per_image_path),
                **{k: per_image.get(k) for k in IMAGE_RECORD_KEYS},
            },
            "particle_files": particle_files,
        },
        "links": links,
        "observation": {
            **_file(index, observation, recorded=observe.outputs.get(observation)),
            "record": _record_summary(index, observe),
            "noise_seed": (observe.record.get("seeds") or {}).get(image_id),
            "operator": observe.extra.get("operator"),
            "sigma_y": ((observe.config or {}).get("task") or {}).get("sigma_y"),
        },
        "ground_truth": {
            **_file(index, image_path, recorded=images.outputs.get(image_path)),
            "record": _record_summary(index, images),
            "source": (images.config or {}).get("source"),
            "source_info": images.extra.get("source"),
        },
    }


def _evaluate_source(index: ResultsIndex, method: str, task: str, variant: str, image_id: str) -> dict[str, Any] | None:
    """The per-shard Parquet (and its record) holding the image's rows, when the evaluate step recorded one."""
    import pandas as pd

    for entry in index.by_step("evaluate"):
        config = entry.config or {}
        name = (config.get("task") or {}).get("name") if isinstance(config.get("task"), dict) else config.get("task")
        if (config.get("method"), name, config.get("variant")) != (method, task, variant):
            continue
        for output in entry.outputs:
            if output.endswith(".parquet") and index.resolve(output).is_file():
                ids = pd.read_parquet(index.resolve(output), columns=["image_id"])["image_id"]
                if image_id in set(ids):
                    return {**_file(index, output, recorded=entry.outputs[output]), "record": entry.path}
    return None


def _prior(index: ResultsIndex) -> dict[str, Any]:
    prior = index.prior_record()
    return {
        "record": _record_summary(index, prior),
        "prior": prior.extra.get("prior"),
        "details": {k: v for k, v in prior.extra.items() if k != "prior"},
        "files": [_file(index, path, recorded=digest) for path, digest in sorted(prior.outputs.items())],
    }


def _tables(index: ResultsIndex) -> list[dict[str, Any]]:
    found = []
    for entry in index.by_step("tables"):
        found.append(
            {
                "record": entry.path,
                "files": sorted(entry.outputs),
                "cell": entry.extra.get("cell"),
                "made_from": {p: _file(index, p, recorded=d)["status"] for p, d in sorted(entry.inputs.items())},
            }
        )
    return found


def _producer(index: ResultsIndex, relative: str) -> RecordEntry | None:
    owners = index.producers.get(relative)
    return index.records[owners[0]] if owners else None


def _record_summary(index: ResultsIndex, entry: RecordEntry | None) -> dict[str, Any] | None:
    if entry is None or entry.record is None:
        return None
    record = entry.record
    return {
        "path": entry.path,
        "sha256": index.sha256(entry.path),
        "step": record.get("step"),
        "config_sha256": record.get("config_sha256"),
        "code": record.get("code"),
        "environment": {k: v for k, v in (record.get("environment") or {}).items() if v is not None},
        "device": record.get("device"),
        "dtype": record.get("dtype"),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "peak_memory_bytes": record.get("peak_memory_bytes"),
    }


def _file(index: ResultsIndex, relative: str, recorded: str | None = None) -> dict[str, Any]:
    if recorded is None:
        owners = index.producers.get(relative) or []
        recorded = index.records[owners[0]].outputs.get(relative) if owners else None
    now = index.sha256(relative)
    status = "MISSING" if now is None else ("ok" if recorded in (None, now) else "MODIFIED")
    return {"path": relative, "sha256": now, "status": status}


def _jsonable_rows(rows) -> list[dict[str, Any]]:
    """Rows as plain Python values (exact floats; NaN becomes None)."""
    out = []
    for row in rows.to_dict(orient="records"):
        item = {}
        for key, value in row.items():
            value = value.item() if hasattr(value, "item") else value
            if isinstance(value, float) and value != value:
                value = None
            elif key in INTEGER_COLUMNS and isinstance(value, float) and value.is_integer():
                value = int(value)  # nullable int64 columns come back as float64 when they hold nulls
            item[str(key)] = value
        out.append(item)
    return out


def format_trace(lineage: dict[str, Any]) -> str:
    """Human-readable text of :func:`trace`'s result."""
    sel = lineage["selection"]
    lines = [f"lineage of {' '.join(f'{k}={v}' for k, v in sel.items())} in {lineage['root']}"]
    if "cell" in lineage:
        cell = lineage["cell"]
        lines.append(
            f"table cell = {cell['mean']:.6g} ± {cell['std']:.6g} over {cell['n_images']} images ({cell['definition']})"
        )
    for table in lineage["tables"]:
        made = ", ".join(f"{p} [{s}]" for p, s in table["made_from"].items())
        lines.append(f"tables {', '.join(table['files'])} (record {table['record']}) made from {made}")
        if table.get("cell"):
            lines.append(f"  the tables compute a cell as: {table['cell']}")
    lines.append(f"rows of {_fmt_file(lineage['metrics_file'])}:")
    for row in lineage["rows"]:
        key = {k: row.get(k) for k in ROW_FIELDS if row.get(k) is not None}
        lines.append(f"  {key}")
    lines.append(f"  aggregated by {_fmt_record(lineage['aggregate_record'])}")
    if "set" in lineage:
        lines.append(f"set-level rows made by {_fmt_record(lineage['set']['record'])} from:")
        lines += [f"  {_fmt_file(file)}" for file in lineage["set"]["inputs"]]
    for item in lineage.get("images", []):
        lines.append(f"image {item['image_id']}:")
        if item["evaluate"]:
            lines.append(f"  rows from {_fmt_file(item['evaluate'])} (record {item['evaluate']['record']})")
        run = item["run"]
        lines.append(f"  run {_fmt_record(run['shard_record'])}")
        lines.append(f"    settings {json.dumps(run['settings'], sort_keys=True)}")
        rec = run["image_record"]
        lines.append(
            f"    per-image record {_fmt_file(rec)}: seed {rec.get('seed')}, status {rec.get('status')}, "
            f"runtime {rec.get('runtime_s')} s, hyper {json.dumps(rec.get('hyper'), sort_keys=True)}"
        )
        for file in run["particle_files"]:
            lines.append(f"    particle file {_fmt_file(file)}")
        for column, link in item["links"].items():
            state = "ok" if link["ok"] else f"STALE (rows say {link['row_values']})"
            lines.append(f"  row link {column} -> {link['file']}: {state}")
        obs = item["observation"]
        lines.append(
            f"  observation {_fmt_file(obs)}: noise seed {obs['noise_seed']}, sigma_y {obs['sigma_y']}, "
            f"operator {json.dumps(obs['operator'], sort_keys=True)}"
        )
        lines.append(f"    made by {_fmt_record(obs['record'])}")
        gt = item["ground_truth"]
        lines.append(f"  ground truth {_fmt_file(gt)} (source {gt['source']}) made by {_fmt_record(gt['record'])}")
    prior = lineage["prior"]
    lines.append(f"prior {json.dumps(prior['prior'], sort_keys=True)} {json.dumps(prior['details'], sort_keys=True)}")
    lines.append(f"  made by {_fmt_record(prior['record'])}")
    for file in prior["files"]:
        lines.append(f"  {_fmt_file(file)}")
    return "\n".join(lines)


def _fmt_file(entry: dict[str, Any]) -> str:
    digest = entry.get("sha256")
    return f"{entry['path']} sha256 {digest[:16] if digest else 'none'} [{entry['status']}]"


def _fmt_record(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "(no record)"
    code = summary.get("code") or {}
    commit = (code.get("git_commit") or "no-git")[:12] + ("+dirty" if code.get("git_dirty") else "")
    env = summary.get("environment") or {}
    return (
        f"{summary['path']} (dwgf {summary['step']}, config {str(summary['config_sha256'])[:12]}, dwgf "
        f"{code.get('dwgf')} {commit}, torch {env.get('torch')}, {summary.get('device')}/{summary.get('dtype')}, "
        f"{summary.get('started_at')} -> {summary.get('finished_at')})"
    )
