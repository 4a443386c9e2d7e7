"""docs/findings.md's tables are generated from committed data (docs/findings-data/), not typed by hand."""

from __future__ import annotations

import importlib.util
import json

import pytest
from audit_smoke import REPO

from dwgf.metrics.schema import read_metrics
from dwgf.provenance import sha256_file

DATA = REPO / "docs" / "findings-data"
FINDINGS = REPO / "docs" / "findings.md"


def _tables():
    spec = importlib.util.spec_from_file_location("findings_tables", REPO / "benchmarks" / "findings_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_findings_tables_are_the_committed_data():
    """Re-rendering docs/findings-data gives docs/findings.md's tables block byte for byte (a hand-edited number,
    or data changed without regenerating the tables, fails here)."""
    tables = _tables()
    rendered = tables.render(DATA, shown_as="docs/findings-data")
    assert tables.tables_block(FINDINGS.read_text(encoding="utf-8")) == rendered


def test_committed_data_is_small_and_consistent():
    record = json.loads((DATA / "run.json").read_text(encoding="utf-8"))
    assert sum((DATA / name).stat().st_size for name in [*record["data_sha256"], "run.json"]) < 400_000
    for name, digest in record["data_sha256"].items():
        assert sha256_file(DATA / name) == digest, name
    df = read_metrics(DATA / "metrics.parquet")  # the metrics schema, validated
    assert record["suite"] == "research" and set(df["suite"]) == {"research"}
    assert set(df["image_set"]) <= set(record["image_sets"].values())
    assert record["config"]["suites"]["research"]["data"]  # the run's own config travels with its numbers


def test_a_tampered_data_file_is_refused(tmp_path):
    tables = _tables()
    for name in ("run.json", "prior.json", "variance.json", "metrics.parquet"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    variance = json.loads((tmp_path / "variance.json").read_text())
    variance["rows"]["antithetic"][0] *= 2
    (tmp_path / "variance.json").write_text(json.dumps(variance))
    with pytest.raises(ValueError, match="variance.json"):
        tables.render(tmp_path)
