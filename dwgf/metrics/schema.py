"""The metrics table: one long-format Parquet schema for every metric row, with a validating writer.

One row = one number (or a null with a reason). Columns (:data:`SCHEMA`, pyarrow types; * = never null):

==================  =======  ===========================================================================
column              type     meaning
==================  =======  ===========================================================================
suite*              string   config suite (``demo``, ``ffhq``...)
level*              string   ``image`` (per image / particle) or ``set`` (FID, KID over a set of images)
task*               string   operator task name (``box``, ``sr8``...)
method*             string   solver (``dwgf``, ``psld``, ``rlsd``, ``latent_dps``)
variant*            string   ``main`` or the ablation variant's name
hyper*              string   canonical JSON (sorted keys) of the resolved hyper-parameters
gamma               float64  hyper["gamma"] when present (main ablation axes as typed columns)
n_particles         int64    N
kappa               float64  hyper["kappa"]
sigma_dec           float64  hyper["sigma_dec"]
image_id            string   image id (null for set-level rows)
image_set           string   the image's set (``data.source`` kind ``sets``: ``well_specified``, ``held_out``,
                             ``ood``...; ``test`` for a single source); null for set-level rows
particle            int64    0..N-1; -1 = the particle-mean image; null = whole image/set quantity
sample_policy       string   set-level only: ``first_particle`` | ``all_particles`` | ``particle_mean``
metric*             string   ``psnr``, ``ssim``, ``lpips_alex``, ``lpips_vgg``, ``fid``, ``kid``, ...
protocol*           string   how it was computed (``standard``, ``repo``, ``clean-fid:clean``...)
value               float64  the number; null when not computable (then ``status`` says why)
status*             string   ``ok`` or the reason for a null (``missing_backbone: ...``)
network             string   implementation / network weights that produced the value
reference           string   set-level: the reference set (``gt``, ``ffhq-stats@sha256:...``)
n_samples           int64    set-level: images in the evaluated set
observation_sha256  string   sha256 of the observation artifact the row derives from
run_sha256          string   sha256 of the solve output artifact (particles) the row derives from
==================  =======  ===========================================================================

Rules checked by :func:`validate_frame` (and so by :func:`write_metrics`): exactly these columns; the types
above (safe casts only); no nulls in starred columns; ``level="image"`` rows have an ``image_id`` and no
``sample_policy``; ``level="set"`` rows have a ``sample_policy`` and neither ``image_id`` nor ``particle``;
``particle >= -1``; ``status == "ok"`` rows have a non-null, non-NaN value; ``hyper`` is a JSON object; rows
whose status starts with ``test_only`` (e.g. LPIPS from an unverified test backbone) are refused.

Build rows with :class:`RowKeys` (``keys.row(metric=..., protocol=..., value=...)``) so the key columns are
always filled the same way.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dwgf.io import atomic_path

SCHEMA_VERSION = "dwgf.metrics/2"  # 2: column image_set

LEVELS = ("image", "set")
SAMPLE_POLICIES = ("first_particle", "all_particles", "particle_mean")
STATUS_OK = "ok"
PARTICLE_MEAN = -1
#: typed copies of these hyper-parameters (the main ablation axes)
HYPER_COLUMNS = ("gamma", "kappa", "sigma_dec")

SCHEMA = pa.schema(
    [
        pa.field("suite", pa.string(), nullable=False),
        pa.field("level", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("hyper", pa.string(), nullable=False),
        pa.field("gamma", pa.float64()),
        pa.field("n_particles", pa.int64()),
        pa.field("kappa", pa.float64()),
        pa.field("sigma_dec", pa.float64()),
        pa.field("image_id", pa.string()),
        pa.field("image_set", pa.string()),
        pa.field("particle", pa.int64()),
        pa.field("sample_policy", pa.string()),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("network", pa.string()),
        pa.field("reference", pa.string()),
        pa.field("n_samples", pa.int64()),
        pa.field("observation_sha256", pa.string()),
        pa.field("run_sha256", pa.string()),
    ],
    metadata={"dwgf_schema": SCHEMA_VERSION},
)
COLUMNS = tuple(SCHEMA.names)


def canonical_hyper(hyper: Mapping[str, Any]) -> str:
    """Canonical JSON of a hyper-parameter mapping (sorted keys, compact); tuples become lists."""
    if not isinstance(hyper, Mapping):
        raise ValueError(f"hyper must be a mapping, got {type(hyper).__name__}")
    return json.dumps(dict(hyper), sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise ValueError(f"hyper-parameter value {value!r} ({type(value).__name__}) is not JSON serialisable")


@dataclass(frozen=True)
class RowKeys:
    """The key columns shared by the rows of one (image or set); :meth:`row` makes a complete row dict.

    ``gamma``/``kappa``/``sigma_dec`` are read from ``hyper`` (null when absent); ``n_particles`` is explicit.
    """

    suite: str
    task: str
    method: str
    variant: str = "main"
    hyper: Mapping[str, Any] = field(default_factory=dict)
    n_particles: int | None = None
    image_id: str | None = None
    observation_sha256: str | None = None
    run_sha256: str | None = None
    image_set: str | None = None

    def for_image(
        self,
        image_id: str,
        observation_sha256: str | None = None,
        run_sha256: str | None = None,
        image_set: str | None = None,
    ):
        return replace(
            self, image_id=image_id, observation_sha256=observation_sha256, run_sha256=run_sha256, image_set=image_set
        )

    def row(
        self,
        *,
        metric: str,
        protocol: str,
        value: float | None,
        status: str = STATUS_OK,
        particle: int | None = None,
        network: str | None = None,
        sample_policy: str | None = None,
        reference: str | None = None,
        n_samples: int | None = None,
    ) -> dict[str, Any]:
        """One row. A NaN value with status ``ok`` becomes null with status ``non_finite_value``."""
        if value is not None:
            value = float(value)
            if math.isnan(value):
                value = None
                if status == STATUS_OK:
                    status = "non_finite_value"
        level = "set" if sample_policy is not None else "image"
        hyper_json = canonical_hyper(self.hyper)
        return {
            "suite": self.suite,
            "level": level,
            "task": self.task,
            "method": self.method,
            "variant": self.variant,
            "hyper": hyper_json,
            **{name: _optional_float(self.hyper.get(name), name) for name in HYPER_COLUMNS},
            "n_particles": self.n_particles,
            "image_id": self.image_id if level == "image" else None,
            "image_set": self.image_set if level == "image" else None,
            "particle": particle,
            "sample_policy": sample_policy,
            "metric": metric,
            "protocol": protocol,
            "value": value,
            "status": status,
            "network": network,
            "reference": reference,
            "n_samples": n_samples,
            "observation_sha256": self.observation_sha256 if level == "image" else None,
            "run_sha256": self.run_sha256 if level == "image" else None,
        }


def _optional_float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"hyper-parameter {name!r} must be a number to fill its column, got {value!r}") from None


# -- validation ---------------------------------------------------------------------------------------


def to_frame(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (dicts) or a DataFrame -> a DataFrame with the schema's columns in order (no validation)."""
    if isinstance(rows, pd.DataFrame):
        return rows
    rows = list(rows)
    return pd.DataFrame.from_records(rows, columns=list(COLUMNS)) if rows else pd.DataFrame(columns=list(COLUMNS))


def to_table(frame: pd.DataFrame) -> pa.Table:
    """Validate ``frame`` (see the module docstring) and convert it to a pyarrow table with :data:`SCHEMA`."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    extra = [c for c in frame.columns if c not in COLUMNS]
    if missing or extra:
        raise ValueError(f"metrics frame columns differ from the schema: missing {missing}, unexpected {extra}")
    arrays = []
    for fld in SCHEMA:
        column = frame[fld.name]
        if pa.types.is_integer(fld.type):
            # pyarrow truncates Python floats into int columns; only integral numbers may pass
            bad = [v for v in column.dropna() if not _is_integral(v)]
            if bad:
                raise ValueError(f"metrics column {fld.name!r} must hold integers, got {bad[0]!r}")
        try:
            array = pa.array(column.astype(object).where(column.notna(), None), type=fld.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as error:
            raise ValueError(f"metrics column {fld.name!r} cannot be stored as {fld.type}: {error}") from None
        if not fld.nullable and array.null_count:
            first = int(pd.Series(array.is_null().to_numpy(zero_copy_only=False)).idxmax())
            raise ValueError(f"metrics column {fld.name!r} must not be null (first null at row {first})")
        arrays.append(array)
    table = pa.Table.from_arrays(arrays, schema=SCHEMA)
    _check_rules(table.to_pandas(types_mapper=_types_mapper))
    return table


def _is_integral(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value).is_integer()


def validate_frame(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Validate rows and return them as a DataFrame with the schema's nullable dtypes."""
    return to_table(to_frame(rows)).to_pandas(types_mapper=_types_mapper)


def _check_rules(df: pd.DataFrame) -> None:
    def fail(mask: pd.Series, message: str) -> None:
        mask = mask.fillna(False).astype(bool)
        if mask.any():
            index = int(mask.to_numpy().nonzero()[0][0])
            row = df.iloc[index]
            raise ValueError(
                f"metrics row {index} ({row['metric']}/{row['protocol']}, method {row['method']}, task "
                f"{row['task']}): {message}"
            )

    fail(~df["level"].isin(LEVELS), f"level must be one of {LEVELS}")
    fail(df["status"].str.startswith("test_only"), "status starts with 'test_only': test-only values never go into a "
         "metrics file (use LPIPSMetric.from_cache with verified weights)")  # fmt: skip
    fail((df["status"] == STATUS_OK) & (df["value"].isna() | (df["value"] != df["value"])), "status 'ok' needs a value")
    image, sets = df["level"] == "image", df["level"] == "set"
    fail(image & df["image_id"].isna(), "level 'image' rows need an image_id")
    fail(image & df["sample_policy"].notna(), "level 'image' rows must not have a sample_policy")
    fail(
        sets & ~df["sample_policy"].isin(SAMPLE_POLICIES), f"level 'set' rows need a sample_policy in {SAMPLE_POLICIES}"
    )
    fail(
        sets & (df["image_id"].notna() | df["particle"].notna() | df["image_set"].notna()),
        "level 'set' rows have no image_id, image_set or particle",
    )
    fail(df["particle"] < -1, "particle must be >= -1 (-1 = the particle mean)")
    fail(df["n_particles"] < 1, "n_particles must be >= 1")
    for index, text in enumerate(df["hyper"]):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError(f"metrics row {index}: hyper must be a JSON object, got {text!r}")


def _types_mapper(arrow_type: pa.DataType):
    if pa.types.is_string(arrow_type):
        return pd.StringDtype()
    if pa.types.is_int64(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_float64(arrow_type):
        return pd.Float64Dtype()
    return None


# -- files ----------------------------------------------------------------------------------------------


def write_metrics(rows: pd.DataFrame | Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Validate and write rows to Parquet atomically (:func:`dwgf.io.atomic_path`); returns the path."""
    table = to_table(to_frame(rows))
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """Read a metrics Parquet file, check it has exactly :data:`SCHEMA`, return nullable-dtype columns.

    Float ``value`` keeps +inf (PSNR of identical images); nulls are ``pd.NA``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} not found; it is written by `dwgf evaluate`/`dwgf aggregate`")
    table = pq.read_table(path)
    version = (table.schema.metadata or {}).get(b"dwgf_schema", b"").decode()
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: metrics schema version {version!r}, expected {SCHEMA_VERSION!r}; re-run evaluate")
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise ValueError(f"{path}: columns/types differ from dwgf.metrics.schema.SCHEMA:\n{table.schema}")
    return table.to_pandas(types_mapper=_types_mapper)


def concat_metrics(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate metric frames (e.g. one per shard) and re-validate."""
    frames = [to_frame(f) for f in frames]
    if not frames:
        return validate_frame([])
    return validate_frame(pd.concat([f.astype(object) for f in frames], ignore_index=True))


def assert_one_network(df: pd.DataFrame, metrics: Iterable[str] = ("fid", "kid")) -> None:
    """Raise if any of ``metrics`` was produced by more than one network in ``df`` (never mix networks)."""
    for metric in metrics:
        networks = sorted(set(df.loc[(df["metric"] == metric) & df["network"].notna(), "network"]))
        if len(networks) > 1:
            raise ValueError(f"metric {metric!r} mixes feature networks {networks}; recompute with one network")
