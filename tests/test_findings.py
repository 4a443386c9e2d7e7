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


@pytest.fixture(scope="module")
def claim_inputs():
    """The summary of the committed data (one render, ~15 CPU-s, shared by the claim tests) and its extra tables."""
    tables = _tables()
    record = json.loads((DATA / "run.json").read_text(encoding="utf-8"))
    table = tables.summary(read_metrics(DATA / "metrics.parquet"), record["set_order"], record["well_specified_sets"])
    variance = json.loads((DATA / "variance.json").read_text(encoding="utf-8"))
    prior = json.loads((DATA / "prior.json").read_text(encoding="utf-8"))
    return tables, table, variance, prior


def test_no_claim_of_the_prose_is_contradicted_by_the_committed_data(claim_inputs):
    """Every claim the prose cites (CLAIMS) holds on docs/findings-data; after the lead regenerates the data, a
    contradicted sentence fails here (with its evidence) instead of staying in the prose. Claims whose rows are
    absent read "not run" and are listed, not failed."""
    tables, table, variance, prior = claim_inputs
    results = tables.evaluate_claims(tables.Cells(table, variance, prior))
    contradicted = [f"{claim.key}: {evidence}" for claim, mark, evidence in results if mark == tables.CONTRADICTED]
    assert not contradicted, "\n".join(contradicted)
    assert len({claim.key for claim in tables.CLAIMS}) == len(tables.CLAIMS)  # keys are unique citations
    prose = FINDINGS.read_text(encoding="utf-8").split(tables.BEGIN)[0]
    uncited = [claim.key for claim in tables.CLAIMS if f"`{claim.key}`" not in prose]
    assert not uncited, f"claims no prose sentence cites: {uncited}"


def test_a_contradicting_number_fails_its_claim_and_an_absent_row_reads_not_run(claim_inputs):
    tables, table, variance, prior = claim_inputs
    # the cosine decay's box spread raised above DWGF's: "dwgf_cos lowers DWGF's spread" is now contradicted
    tampered = table.copy()
    sel = (tampered["image_set"] == "well_specified") & (tampered["task"] == "box") & (tampered["method"] == "dwgf_cos")
    tampered.loc[sel, "spread"] = 1e6
    marks = {claim.key: mark for claim, mark, _ in tables.evaluate_claims(tables.Cells(tampered))}
    assert marks["cos-settles"] == tables.CONTRADICTED
    assert marks["var-k4"] == tables.NOT_RUN and marks["bed-components"] == tables.NOT_RUN  # no variance, no prior
    # a method restricted to other tasks (no rows off the box): its claims say "not run", nothing raises
    restricted = table[~((table["method"] == "dwgf_langevin") & (table["task"] != "box"))]
    results = {c.key: (mark, evidence) for c, mark, evidence in tables.evaluate_claims(tables.Cells(restricted))}
    assert results["cs-langevin"][0] == tables.NOT_RUN and "dwgf_langevin" in results["cs-langevin"][1]
    assert results["finding-cost"][0] == tables.PARTLY  # its box part is evaluated, its SR x8 part is absent
    assert results["cos-settles"][0] == tables.HOLDS
    listing = tables.claims_markdown(tables.evaluate_claims(tables.Cells(restricted)))
    assert "- not run **`cs-langevin`**" in listing


def test_a_method_missing_on_a_task_is_a_not_run_row_and_its_claims_degrade():
    """A method run on some tasks only (a per-method task list) gets a "not run" row where it has none; a claim
    with some parts on absent rows is checked on the rest (✔ partly not run), with none left it is "not run"."""
    tables = _tables()
    df = read_metrics(DATA / "metrics.parquet")
    df = df[(df["image_set"] == "well_specified") & df["task"].isin(["box", "sr8"]) & (df["variant"] == "main")]
    df = df[~((df["method"] == "dwgf_svgd") & (df["task"] == "box"))]
    table = tables.summary(df, ["well_specified"], ["well_specified"])
    text = tables.markdown(table)
    box = text.split("task `sr8`")[0]
    assert "| dwgf_svgd | main | – | – | – | – | – | – | – | – | – | – | not run |" in box
    assert text.count("| dwgf_svgd | main |") == 2  # the SR x8 row is a real one
    results = {c.key: (mark, evidence) for c, mark, evidence in tables.evaluate_claims(tables.Cells(table))}
    mark, evidence = results["svgd-overshoots"]  # SR x8 parts evaluated, SR x32 parts absent
    assert mark == tables.PARTLY and "not run: " in evidence and "sr32" in evidence
    assert results["kde4-sw2-held-out"][0] == tables.NOT_RUN  # only held-out / SR x32 rows: none here
    assert results["noise-stable"][0] == tables.HOLDS  # the rows present all solved
