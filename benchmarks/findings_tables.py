"""The tables of docs/findings.md, regenerated from committed data (no number is typed by hand).

    python benchmarks/findings_tables.py results/research --export docs/findings-data   # the data, from a run
    python benchmarks/findings_tables.py docs/findings-data --write docs/findings.md    # the tables, from the data

Step 1 (``--export``) reads every per-shard metrics file under ``<run>/metrics/`` (``dwgf.metrics.schema.
read_metrics``; a run still in progress already has the shards it finished) and writes a small data folder that is
committed beside docs/findings.md:

* ``metrics.parquet``: the per-image rows the tables use (the metrics of :data:`COLUMNS`, the particle-mean PSNR
  only), in the metrics schema, so it is read and validated like any metrics file;
* ``prior.json``: the run's ``prior/testbed_prior.json`` (the fitted mixture's config: weights, component sizes);
* ``variance.json``: the per-step variance of DWGF's prior-gradient estimator (:func:`dwgf.solvers.dwgf.
  prior_gradient_variance`) for the variance-reduction variants, at latents drawn from the run's prior (computed
  here because it needs the prior's weights, which are not committed);
* ``run.json``: where the data come from -- the suite and its resolved config (from ``run/invocation.json``), the
  sha256 of the run's root record ``run/root.prov.json`` (null while the run is incomplete: then the header of the
  tables says so), the sha256 of every metrics file read and of the files above.

Step 2 renders the tables from such a folder (or straight from a run folder, exporting into memory first). Per
image set (the ``image_set`` column: ``well_specified``, ``held_out``, ``ood``, in the suite's order) and task,
one row per method x variant with the mean over images of:

* ``PSNR gt``: PSNR of the particle-mean image against the ground truth (``psnr``/``repo``: unclamped, not
  quantised, particle -1) -- the protocol of ``exact_mean_psnr``, so that ``gap`` compares like with like (under the
  8-bit ``standard`` protocol a near-exact reconstruction scores at the quantisation's ceiling, the exact posterior
  mean included); the ``+ 1e-10`` of the repo formula moves a 76 dB value by about 0.02 dB;
* ``gap``: the fraction of DWGF's dB gap to the exact posterior mean that the row closes,
  (PSNR gt - PSNR gt of ``dwgf``/``main``) / (``exact_mean_psnr`` - PSNR gt of ``dwgf``/``main``), each term the
  mean over the images the three have in common (1 = as good as the exact posterior mean; issue 14's target is
  >= 0.8). Only in sets of prior samples, where the exact posterior mean is the Bayes optimum; elsewhere "–";
* ``PSNR post``: PSNR of the particle mean against the exact posterior mean (``posterior_mean_psnr``, image space);
* ``spread``: ``spread_ratio`` (image space; 1 = the exact posterior's spread); ``SW2``: ``sliced_w2`` (latent);
* ``cover`` / ``cover*``: ``mode_coverage`` and what N exact samples reach (``mode_coverage_exact_expected``);
  ``H``: ``posterior_weight_entropy`` (nats) of the exact posterior;
* ``calib``: ``calibration_ratio`` (image space; ~1 calibrated, > 1 over-confident);
* ``s/img``: ``runtime_s`` (wall seconds per image of the solve, batch share); ``ok``: solved images / images.

Each set x task table starts with the reference row ``exact mean`` (``exact_mean_psnr``). With ``--write``, the
output replaces the part of the findings file between ``<!-- tables:begin -->`` and ``<!-- tables:end -->``;
``tests/test_findings.py`` re-renders the committed data and fails when that part differs (a hand-edited number).

Step 3 checks the prose: every comparative sentence of the findings' sections (the test bed, 1-7) is a
:class:`Claim` of :data:`CLAIMS` (a key the prose cites, the sentence, and a check on the summary table built from
small helpers: :func:`greater`, :func:`monotone`, :func:`within`, :func:`best`, :func:`diverged`, ...). The tables
block ends with the list "Checked claims": ✔ holds, ✘ contradicted, "not run" when a row it needs is absent (a
method run on some tasks only, a left-out ablation: :class:`NotRun`, never an error). ``tests/test_findings.py``
fails on a ✘ and on a claim the prose does not cite, so regenerated data that contradicts a sentence shows up as a
failed test. To add a sentence: add its claim here, cite its key in the prose, re-render.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd

#: the PSNR protocol of ``PSNR gt`` and ``gap``: unquantised like ``exact_mean_psnr`` (module docstring)
PSNR_PROTOCOL = "repo"

COLUMNS = [
    ("PSNR gt", "psnr", PSNR_PROTOCOL, -1),
    ("PSNR post", "posterior_mean_psnr", "space=image", None),
    ("spread", "spread_ratio", "space=image", None),
    ("SW2", "sliced_w2", "space=latent", None),
    ("cover", "mode_coverage", "space=latent", None),
    ("cover*", "mode_coverage_exact_expected", "space=latent", None),
    ("H", "posterior_weight_entropy", "space=latent", None),
    ("calib", "calibration_ratio", "space=image", None),
    ("s/img", "runtime_s", None, None),
]
EXACT = ("exact_mean_psnr", "space=image")
SHOWN = ["PSNR gt", "gap", *[c[0] for c in COLUMNS[1:]], "ok"]
BASELINE = ("dwgf", "main")
VARIANCE_VARIANTS = {
    "official (1 draw)": {},
    "K = 4 draws": {"n_noise_draws": 4},
    "antithetic": {"antithetic": True},
    "shared noise": {"shared_noise": True},
    "control variate": {"control_variate": True},
}
TIMESTEPS = (900, 500, 100, 20)
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
DATA_FILES = ("metrics.parquet", "prior.json", "variance.json")


# -- step 1: export ---------------------------------------------------------------------------------------------


def load_rows(run: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """All per-shard metrics of a run, and {file relative to the run: sha256}."""
    from dwgf.metrics.schema import concat_metrics, read_metrics
    from dwgf.provenance import sha256_file

    files = sorted((run / "metrics").glob("**/shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no metrics under {run / 'metrics'}; run `snakemake -c 2 --config suite=research`")
    hashes = {str(f.relative_to(run)): sha256_file(f) for f in files}
    return concat_metrics(read_metrics(f) for f in files), hashes


def table_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The image-level rows the tables use: the metrics of COLUMNS (particle-mean PSNR only) and exact_mean_psnr."""
    image = df[df["level"] == "image"]
    keep = pd.Series(False, index=image.index)
    for _, metric, protocol, particle in [*COLUMNS, (None, *EXACT, None)]:
        sel = image["metric"] == metric
        if protocol is not None:
            sel &= image["protocol"].str.startswith(protocol)
        if particle is not None:
            sel &= image["particle"] == particle
        keep |= sel.fillna(False).astype(bool)
    return image[keep].sort_values(["image_set", "task", "method", "variant", "image_id", "metric", "protocol"])


def variance_values(run: Path, seed: int = 0) -> dict[str, list[float]]:
    import torch

    from dwgf.pipeline.solve import load_pipeline_prior
    from dwgf.seeding import make_generator
    from dwgf.solvers.dwgf import prior_gradient_variance

    prior, _ = load_pipeline_prior(run, run / "prior" / "prior.prov.json", "cpu", "float64")
    z = prior.sample_prior(4, make_generator(seed)).to(torch.float64)
    return {
        name: [prior_gradient_variance(prior, z, t, make_generator(seed + 1), hyper, repeats=64) for t in TIMESTEPS]
        for name, hyper in VARIANCE_VARIANTS.items()
    }


def export(run: Path, out: Path) -> dict:
    """Write the data folder (module docstring, step 1) and return its ``run.json``."""
    from dwgf.io import atomic_write_json
    from dwgf.metrics.schema import write_metrics
    from dwgf.provenance import sha256_file

    df, metric_files = load_rows(run)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics(table_rows(df), out / "metrics.parquet")
    prior_json = run / "prior" / "testbed_prior.json"
    atomic_write_json(out / "prior.json", json.loads(prior_json.read_text(encoding="utf-8")))
    atomic_write_json(out / "variance.json", {"timesteps": list(TIMESTEPS), "rows": variance_values(run)})
    root_record = run / "run" / "root.prov.json"
    invocation = json.loads((run / "run" / "invocation.json").read_text(encoding="utf-8"))
    from dwgf.pipeline.variants import image_sets

    images = json.loads((run / "data" / "images.prov.json").read_text(encoding="utf-8"))
    suite = str(df["suite"].iloc[0])
    sets = image_sets(invocation["config"]["suites"][suite]["data"])
    record = {
        "suite": suite,
        "config": invocation["config"],  # the resolved suite config of the run (dwgf.suite_run.suite_config)
        "code": invocation.get("code"),
        "image_sets": images["extra"]["image_sets"],
        "set_order": list(sets),
        "well_specified_sets": [name for name, part in sets.items() if part["source"]["kind"] == "prior_samples"],
        "root_record_sha256": sha256_file(root_record) if root_record.is_file() else None,
        "complete": root_record.is_file(),
        "prior_sha256": sha256_file(prior_json),
        "metrics_files": metric_files,
        "solve_artifacts": int(df["run_sha256"].nunique()),
        "metric_rows": len(df),
        "data_sha256": {name: sha256_file(out / name) for name in DATA_FILES},
    }
    atomic_write_json(out / "run.json", record)
    return record


# -- step 2: render -----------------------------------------------------------------------------------------------


def _mean(part: pd.DataFrame, metric: str, protocol: str | None, particle: int | None = None) -> pd.Series:
    """Per image: the ok values of one metric (a Series indexed by image_id)."""
    sel = part[(part["metric"] == metric) & (part["status"] == "ok")]
    if protocol is not None:
        sel = sel[sel["protocol"].str.startswith(protocol)]
    if particle is not None:
        sel = sel[sel["particle"] == particle]
    return sel.groupby("image_id")["value"].mean().astype(float)


def summary(df: pd.DataFrame, set_order: list[str], well_specified: list[str]) -> pd.DataFrame:
    """One row per image set x task x method x variant (module docstring, step 2), plus the exact-mean rows."""
    out = []
    main_methods = sorted(set(df.loc[df["variant"] == "main", "method"]))
    for (image_set, task), cell in df.groupby(["image_set", "task"], sort=True):
        exact = _mean(cell, *EXACT)
        base = cell[(cell["method"] == BASELINE[0]) & (cell["variant"] == BASELINE[1])]
        base_psnr = _mean(base, "psnr", PSNR_PROTOCOL, -1)
        reference = {"image_set": image_set, "task": task, "method": "exact mean", "variant": "reference"}
        reference.update({name: math.nan for name in SHOWN})
        reference["PSNR gt"] = float(exact.mean()) if len(exact) else math.nan
        reference.update({"gap": 1.0 if image_set in well_specified else math.nan, "ok": "–"})
        out.append(reference)
        rows = not_run_rows(image_set, task, main_methods, cell)
        for (method, variant), part in cell.groupby(["method", "variant"], sort=True):
            row = {"image_set": image_set, "task": task, "method": method, "variant": variant}
            for name, metric, protocol, particle in COLUMNS:
                values = _mean(part, metric, protocol, particle)
                row[name] = float(values.mean()) if len(values) else math.nan
            psnr = _mean(part, "psnr", PSNR_PROTOCOL, -1)
            ids = psnr.index.intersection(base_psnr.index).intersection(exact.index)
            closed, open_gap = float(psnr[ids].mean() - base_psnr[ids].mean()), float((exact - base_psnr)[ids].mean())
            row["gap"] = closed / open_gap if len(ids) and image_set in well_specified else math.nan
            runtime = part[part["metric"] == "runtime_s"]
            row["ok"] = f"{int((runtime['status'] == 'ok').sum())}/{part['image_id'].nunique()}"
            rows.append(row)
        out += sorted(rows, key=lambda r: (r["method"], r["variant"]))
    table = pd.DataFrame(out)
    rank = {name: k for k, name in enumerate(set_order)}
    table["_set"] = table["image_set"].map(lambda s: rank.get(s, len(rank)))
    return table.sort_values(["_set", "task"], kind="stable").drop(columns="_set")


def not_run_rows(image_set: str, task: str, main_methods: list[str], cell: pd.DataFrame) -> list[dict]:
    """A "not run" row for each method with main rows elsewhere in the run but none on this set x task (a method
    restricted to some tasks): every value "–", ``ok`` "not run", so the table says so instead of dropping it."""
    present = set(cell.loc[cell["variant"] == "main", "method"])
    rows = []
    for method in main_methods:
        if method not in present:
            row = {"image_set": image_set, "task": task, "method": method, "variant": "main"}
            rows.append({**row, **{name: math.nan for name in SHOWN}, "ok": "not run"})
    return rows


def fmt(value) -> str:
    if isinstance(value, str):
        return value
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def markdown(table: pd.DataFrame) -> str:
    lines = []
    for (image_set, task), part in table.groupby(["image_set", "task"], sort=False):
        lines += [f"#### Set `{image_set}`, task `{task}`", "", "| method | variant | " + " | ".join(SHOWN) + " |"]
        lines += ["|---|---|" + "---:|" * len(SHOWN)]
        for _, r in part.iterrows():
            lines.append(f"| {r['method']} | {r['variant']} | " + " | ".join(fmt(r[n]) for n in SHOWN) + " |")
        lines.append("")
    return "\n".join(lines)


def prior_table(prior: dict) -> str:
    """The fitted mixture: weight and training crops per component (``config.em`` of testbed_prior.json)."""
    em = prior["config"]["em"]
    repair = em.get("min_component_size", {})
    return "\n".join(
        [
            f"K = {len(em['weights'])} components; minimum size {repair.get('min_size', 'off')}; plain-EM sizes "
            f"before the repair {repair.get('initial_sizes', '–')}; split rounds {repair.get('split_rounds', 0)}, "
            f"dropped {repair.get('dropped', 0)}.",
            "",
            "| component | " + " | ".join(str(k) for k in range(len(em["weights"]))) + " |",
            "|---|" + "---:|" * len(em["weights"]),
            "| weight | " + " | ".join(f"{w:.3f}" for w in em["weights"]) + " |",
            "| training crops | " + " | ".join(str(c) for c in em["component_sizes"]) + " |",
        ]
    )


def variance_table(variance: dict) -> str:
    timesteps = variance["timesteps"]
    lines = ["| estimator | " + " | ".join(f"t = {t}" for t in timesteps) + " |", "|---|" + "---:|" * len(timesteps)]
    for name, values in variance["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3g}" for v in values) + " |")
    return "\n".join(lines)


def render(data: Path, shown_as: str | None = None) -> str:
    """The tables block (markers included) from a data folder; ``shown_as`` names the folder in the header."""
    from dwgf.metrics.schema import read_metrics
    from dwgf.provenance import sha256_file

    record = json.loads((data / "run.json").read_text(encoding="utf-8"))
    for name, digest in record["data_sha256"].items():
        if sha256_file(data / name) != digest:
            raise ValueError(f"{data / name} does not match its sha256 in {data / 'run.json'}; re-export the run")
    df = read_metrics(data / "metrics.parquet")
    set_order = record["set_order"]
    status = (
        f"complete run, root record sha256 `{record['root_record_sha256'][:16]}`"
        if record["complete"]
        else "**incomplete run** (no root record: only the shards finished so far)"
    )
    folder = shown_as or str(data)
    table = summary(df, set_order, record["well_specified_sets"])
    variance = json.loads((data / "variance.json").read_text(encoding="utf-8"))
    prior = json.loads((data / "prior.json").read_text(encoding="utf-8"))
    return "\n".join(
        [
            BEGIN,
            f"*Generated by `python benchmarks/findings_tables.py {folder} --write docs/findings.md` from {folder} "
            f"(suite `{record['suite']}`, {status}; {record['solve_artifacts']} solve artifacts, "
            f"{record['metric_rows']} metric rows read, {len(df)} kept).*",
            "",
            "#### The fitted mixture",
            "",
            prior_table(prior),
            "",
            markdown(table),
            "#### Per-step variance of the prior-gradient estimator",
            "",
            "Mean over latent coordinates of the variance over 64 fresh-noise calls at fixed particles (4 prior "
            "samples), in units of (gamma s_t / (N d_z))^2:",
            "",
            variance_table(variance),
            "",
            "#### Checked claims",
            "",
            claims_markdown(evaluate_claims(Cells(table, variance, prior))),
            END,
        ]
    )


# -- step 3: the prose's claims, checked on the data ---------------------------------------------------------------
#
# Every comparative sentence of docs/findings.md's sections (the test bed, 1-7) is one :class:`Claim` of
# :data:`CLAIMS`, evaluated on the rendered summary (:func:`summary`) and the variance table; the tables block lists
# them with ✔ (holds), ✘ (contradicted) or "not run" (a row it needs is absent: a method restricted to other tasks,
# an ablation left out), and tests/test_findings.py fails on a ✘. The prose cites claims by key, not numbers.

WS, HO, OOD = "well_specified", "held_out", "ood"
STEPS = (20, 50, 100, 250, 998)  # the step ablations' values; 100 is the main row (variant `main`)
HOLDS, CONTRADICTED, NOT_RUN = "✔", "✘", "not run"
PARTLY = "✔ (partly not run)"  # the evaluated parts hold; rows for the others are absent


class NotRun(LookupError):
    """A row (set, task, method, variant) or a value a claim needs is absent from the data."""


class Cells:
    """Look-ups into the summary table by (set, task, ``method`` or ``method/variant``, column)."""

    def __init__(self, table: pd.DataFrame, variance: dict | None = None, prior: dict | None = None):
        self.rows = {(r["image_set"], r["task"], r["method"], r["variant"]): r for r in table.to_dict("records")}
        self.variance, self.prior = variance, prior

    @staticmethod
    def _key(row: str) -> tuple[str, str]:
        method, _, variant = row.partition("/")
        return method, variant or ("reference" if method == "exact mean" else "main")

    def row(self, image_set: str, task: str, row: str) -> dict:
        found = self.rows.get((image_set, task, *self._key(row)))
        if found is None:
            raise NotRun(f"{row} on {image_set}/{task}")
        return found

    def value(self, image_set: str, task: str, row: str, column: str) -> float:
        value = self.row(image_set, task, row)[column]
        if not isinstance(value, (int, float)) or math.isnan(value):
            raise NotRun(f"{column} of {row} on {image_set}/{task}")
        return float(value)

    def solved(self, image_set: str, task: str, row: str) -> tuple[int, int]:
        text = self.row(image_set, task, row)["ok"]
        if text == NOT_RUN:
            raise NotRun(f"{row} on {image_set}/{task}")
        ok, planned = text.split("/")
        return int(ok), int(planned)


class Claim(NamedTuple):
    """One sentence of the prose (``text``, cited as ``key`` in ``section``); ``check(cells)`` -> (holds, evidence)."""

    key: str
    section: str
    text: str
    check: Callable[[Cells], tuple[bool, str]]


def _where(image_set: str, task: str) -> str:
    return f"{image_set}/{task}"


def greater(image_set: str, task: str, a: str, b: str, column: str, factor: float = 1.0):
    """``column`` of row ``a`` > ``factor`` x that of row ``b`` (factor 1: plainly greater)."""

    def check(cells: Cells) -> tuple[bool, str]:
        va, vb = cells.value(image_set, task, a, column), cells.value(image_set, task, b, column)
        scale = f"{factor:g} x " if factor != 1.0 else ""
        return va > factor * vb, f"{_where(image_set, task)} {column}: {a} {fmt(va)} vs {scale}{b} {fmt(vb)}"

    return check


def less(image_set: str, task: str, a: str, b: str, column: str):
    def check(cells: Cells) -> tuple[bool, str]:
        va, vb = cells.value(image_set, task, a, column), cells.value(image_set, task, b, column)
        return va < vb, f"{_where(image_set, task)} {column}: {a} {fmt(va)} vs {b} {fmt(vb)}"

    return check


def ratio(image_set: str, task: str, a: str, b: str, column: str, low: float, high: float):
    """``column`` of ``a`` / that of ``b`` lies in [low, high]."""

    def check(cells: Cells) -> tuple[bool, str]:
        va, vb = cells.value(image_set, task, a, column), cells.value(image_set, task, b, column)
        r = va / vb if vb else math.inf
        return low <= r <= high, f"{_where(image_set, task)} {column} {a} / {b}: {fmt(r)}"

    return check


def across(image_set: str, row: str, column: str, task_a: str, task_b: str):
    """``column`` of ``row`` is higher on ``task_a`` than on ``task_b``."""

    def check(cells: Cells) -> tuple[bool, str]:
        va, vb = cells.value(image_set, task_a, row, column), cells.value(image_set, task_b, row, column)
        return va > vb, f"{image_set} {column} of {row}: {task_a} {fmt(va)} vs {task_b} {fmt(vb)}"

    return check


def within(image_set: str, task: str, row: str, column: str, low: float, high: float):
    def check(cells: Cells) -> tuple[bool, str]:
        v = cells.value(image_set, task, row, column)
        return low <= v <= high, f"{_where(image_set, task)} {column} of {row}: {fmt(v)} (in [{low:g}, {high:g}]?)"

    return check


def close_to(image_set: str, task: str, a: str, b: str, column: str, tolerance: float):
    def check(cells: Cells) -> tuple[bool, str]:
        va, vb = cells.value(image_set, task, a, column), cells.value(image_set, task, b, column)
        return abs(va - vb) <= tolerance, f"{_where(image_set, task)} {column}: {a} {fmt(va)} vs {b} {fmt(vb)}"

    return check


def monotone(image_set: str, task: str, rows: list[str], column: str, increasing: bool = True):
    """``column`` non-decreasing (``increasing``) or non-increasing along ``rows``."""

    def check(cells: Cells) -> tuple[bool, str]:
        values = [cells.value(image_set, task, row, column) for row in rows]
        pairs = list(zip(values, values[1:]))
        holds = all(b >= a for a, b in pairs) if increasing else all(b <= a for a, b in pairs)
        return holds, f"{_where(image_set, task)} {column}: " + " -> ".join(fmt(v) for v in values)

    return check


def best(image_set: str, task: str, row: str, column: str, highest: bool = True, among: str = "main"):
    """``row`` has the highest (lowest) ``column`` of the task's rows (``among="main"``: the main-variant rows)."""

    def check(cells: Cells) -> tuple[bool, str]:
        mine = cells.value(image_set, task, row, column)
        others = {}
        for (s, t, method, variant), r in cells.rows.items():
            if (s, t) != (image_set, task) or method == "exact mean" or (among == "main" and variant != "main"):
                continue
            name = method if variant == "main" else f"{method}/{variant}"
            value = r[column]
            if name != row and isinstance(value, (int, float)) and not math.isnan(value):
                others[name] = float(value)
        if not others:
            raise NotRun(f"other rows of {image_set}/{task}")
        runner = max(others, key=others.get) if highest else min(others, key=others.get)
        holds = mine > others[runner] if highest else mine < others[runner]
        return holds, f"{_where(image_set, task)} {column}: {row} {fmt(mine)}, next {runner} {fmt(others[runner])}"

    return check


def diverged(image_set: str, task: str, row: str):
    """Every planned image of ``row`` diverged or failed (``ok`` 0/n)."""

    def check(cells: Cells) -> tuple[bool, str]:
        ok, planned = cells.solved(image_set, task, row)
        return ok == 0 and planned > 0, f"{_where(image_set, task)} ok of {row}: {ok}/{planned}"

    return check


def all_solved(image_sets: list[str], tasks: list[str], rows: list[str]):
    """No image of these rows diverged or failed (every ``ok`` n/n); a row not run on a task is skipped."""

    def check(cells: Cells) -> tuple[bool, str]:
        bad, seen = [], 0
        for image_set in image_sets:
            for task in tasks:
                for row in rows:
                    try:
                        ok, planned = cells.solved(image_set, task, row)
                    except NotRun:
                        continue
                    seen += 1
                    if ok < planned:
                        bad.append(f"{row} on {_where(image_set, task)} {ok}/{planned}")
        if not seen:
            raise NotRun(f"{rows}")
        return not bad, ("not solved: " + ", ".join(bad)) if bad else f"{seen} rows, every image solved"

    return check


def variance_ratio(estimator: str, low: float, high: float, timesteps: tuple[int, ...]):
    """official variance / ``estimator``'s variance lies in [low, high] at each of ``timesteps``."""

    def check(cells: Cells) -> tuple[bool, str]:
        if cells.variance is None or estimator not in cells.variance["rows"]:
            raise NotRun(f"variance row {estimator}")
        at = {t: k for k, t in enumerate(cells.variance["timesteps"])}
        ratios = []
        for t in timesteps:
            if t not in at:
                raise NotRun(f"variance at t = {t}")
            mine = cells.variance["rows"][estimator][at[t]]
            ratios.append(cells.variance["rows"]["official (1 draw)"][at[t]] / mine if mine > 0 else math.inf)
        text = ", ".join(f"t = {t}: {r:.3g}" for t, r in zip(timesteps, ratios))
        return all(low <= r <= high for r in ratios), f"official / {estimator}: {text}"

    return check


def components_real(cells: Cells) -> tuple[bool, str]:
    """Every fitted component holds at least the repair's minimum number of training crops."""
    if cells.prior is None:
        raise NotRun("prior.json")
    em = cells.prior["config"]["em"]
    minimum = (em.get("min_component_size") or {}).get("min_size")
    if minimum is None:
        raise NotRun("min_component_size")
    return min(em["component_sizes"]) >= minimum, f"smallest component {min(em['component_sizes'])}, minimum {minimum}"


def every(*checks):
    """All of ``checks`` hold (evidence joined). Parts whose rows are absent are left out and named (the claim is
    then marked :data:`PARTLY`, or ✘ if an evaluated part fails); only when every part is absent is the whole claim
    "not run"."""

    def check(cells: Cells) -> tuple[bool, str, bool]:
        results, missing = [], []
        for part in checks:
            try:
                results.append(part(cells)[:2])
            except NotRun as absent:
                missing.append(str(absent))
        if not results:
            raise NotRun("; ".join(missing))
        evidence = "; ".join(("" if h else "✘ ") + e for h, e in results)
        if missing:
            evidence += "; not run: " + ", ".join(missing)
        return all(h for h, _ in results), evidence, bool(missing)

    return check


def _steps(method: str) -> list[str]:
    return [method if n == 100 else f"{method}/steps_{method}-{n}" for n in STEPS]


ONE_HOT_TASKS = ["box", "sr8", "cs2", "cs10", "cs25"]
CS_TASKS = ["cs2", "cs10", "cs25"]
NOISE_VARIANTS = ["dwgf_anti", "dwgf_k4", "dwgf_cv", "dwgf_shared"]
WS_TASKS = ["box", "sr8", "sr32", *CS_TASKS]
#: the kde_weight ablation's points 0, 1, 4, 16; weight 1 is DWGF's default, read from the main run (not solved twice)
KDE_WEIGHT_ROWS = ["dwgf/kde_weight-0", "dwgf", "dwgf/kde_weight-4", "dwgf/kde_weight-16"]
#: the tasks of the step-size and variance-reduction variants (their `tasks` key in config.yaml)
NARROW_TASKS = ["box", "sr8"]

CLAIMS: list[Claim] = [
    # -- the test bed
    Claim("bed-components", "test bed", "after the repair every mixture component holds at least the minimum number "
          "of training crops", components_real),
    Claim("bed-one-hot", "test bed", "in the well-specified set the exact posterior is (numerically) one-hot, "
          "H < 1e-6, on the box, SR x8 and every CS ratio", every(
              *[within(WS, t, "dwgf", "H", 0.0, 1e-6) for t in ONE_HOT_TASKS])),
    Claim("bed-sr32-multimodal", "test bed", "SR x32 is multimodal (H > 0.5) in the well-specified and held-out "
          "sets, but not for the OOD texture (H < 0.01)", every(
              within(WS, "sr32", "dwgf", "H", 0.5, math.inf), within(HO, "sr32", "dwgf", "H", 0.5, math.inf),
              within(OOD, "sr32", "dwgf", "H", 0.0, 0.01))),
    Claim("bed-sr32-gap-ill-posed", "test bed", "on well-specified SR x32 the exact posterior mean is within 1 dB "
          "of DWGF's PSNR gt, so that task's `gap` column divides by almost nothing and is not read",
          close_to(WS, "sr32", "exact mean", "dwgf", "PSNR gt", 1.0)),
    # -- 1. few steps
    *[Claim(f"steps-{m}-{t}-post", "1", f"{m}'s `PSNR post` does not fall with the step count (20, 50, 100, 250, "
            f"998) on {t}", monotone(WS, t, _steps(m), "PSNR post")) for m in ("dwgf",) for t in ("box", "sr8")],
    Claim("steps-rlsd-post", "1", "RLSD's `PSNR post` does not fall from 20 to 250 steps on box and SR x8, and "
          "998 steps are no worse than 100", every(
              *[monotone(WS, t, _steps("rlsd")[:4], "PSNR post") for t in ("box", "sr8")],
              *[greater(WS, t, "rlsd/steps_rlsd-998", "rlsd", "PSNR post") for t in ("box", "sr8")])),
    *[Claim(f"steps-{m}-spread", "1", f"{m}'s spread ratio falls with the step count on box and SR x8",
            every(*[monotone(WS, t, _steps(m), "spread", increasing=False) for t in ("box", "sr8")]))
      for m in ("dwgf", "rlsd")],
    Claim("steps-calibration", "1", "DWGF and RLSD are less over-confident at 20 steps than at 100 (`calib` lower) "
          "on box and SR x8", every(
              *[less(WS, t, f"{m}/steps_{m}-20", m, "calib") for m in ("dwgf", "rlsd") for t in ("box", "sr8")])),
    Claim("steps-dwgf-998-gap", "1", "even at 998 steps DWGF closes less than a fifth of its gap to the exact "
          "posterior mean on box and SR x8", every(
              *[within(WS, t, "dwgf/steps_dwgf-998", "gap", -math.inf, 0.2) for t in ("box", "sr8")])),
    Claim("steps-psld-dps-not-monotone", "1", "PSLD's and Latent-DPS's `PSNR post` is not monotone in the steps on "
          "the box, but their 998-step row is their best on box and SR x8", every(
              *[greater(WS, t, f"{m}/steps_{m}-998", f"{m}/steps_{m}-{n}", "PSNR post")
                for m in ("psld", "latent_dps") for t in ("box", "sr8") for n in (20, 50, 250)],
              *[greater(WS, t, f"{m}/steps_{m}-998", m, "PSNR post")
                for m in ("psld", "latent_dps") for t in ("box", "sr8")],
              lambda cells: (not monotone(WS, "box", _steps("psld"), "PSNR post")(cells)[0]
                             and not monotone(WS, "box", _steps("latent_dps"), "PSNR post")(cells)[0],
                             "box: PSLD and Latent-DPS not monotone"))),
    Claim("steps-cost", "1", "the 998-step rows cost more per image than the 20-step rows, every method, box and "
          "SR x8", every(*[greater(WS, t, f"{m}/steps_{m}-998", f"{m}/steps_{m}-20", "s/img")
                           for m in ("dwgf", "rlsd", "psld", "latent_dps") for t in ("box", "sr8")])),
    # -- 2. repulsion / entropy
    Claim("kde-weight-knob", "2", "the KDE weight is a spread knob: along weights 0, 1, 4, 16 the spread ratio "
          "rises and the calibration ratio falls, on SR x8 and SR x32, crossing 1 between weights 1 and 4", every(
              *[monotone(WS, t, KDE_WEIGHT_ROWS, "spread") for t in ("sr8", "sr32")],
              *[monotone(WS, t, KDE_WEIGHT_ROWS, "calib", increasing=False) for t in ("sr8", "sr32")],
              *[within(WS, t, "dwgf", "calib", 1.0, math.inf) for t in ("sr8", "sr32")],
              *[within(WS, t, "dwgf/kde_weight-4", "calib", 0.0, 1.0) for t in ("sr8", "sr32")])),
    Claim("svgd-weight", "2", "a stronger SVGD term (weights 10, 100, 1000) raises the spread and lowers `PSNR "
          "post` on SR x8 and SR x32", every(
              *[monotone(WS, t, [f"dwgf/svgd_weight-{w}" for w in (10, 100, 1000)], "spread") for t in ("sr8", "sr32")],
              *[monotone(WS, t, [f"dwgf/svgd_weight-{w}" for w in (10, 100, 1000)], "PSNR post", increasing=False)
                for t in ("sr8", "sr32")])),
    Claim("svgd-overshoots", "2", "`dwgf_svgd` (weight 100) is over-dispersed (spread > 2) and under-confident "
          "(`calib` < 0.5) on SR x8 and SR x32, with a lower `PSNR post` than DWGF on SR x32", every(
              *[within(WS, t, "dwgf_svgd", "spread", 2.0, math.inf) for t in ("sr8", "sr32")],
              *[within(WS, t, "dwgf_svgd", "calib", 0.0, 0.5) for t in ("sr8", "sr32")],
              less(WS, "sr32", "dwgf_svgd", "dwgf", "PSNR post"))),
    Claim("svgd-cover-held-out", "2", "on SR x32, repulsion (`dwgf_svgd`, `dwgf_kde4`) raises mode coverage over "
          "DWGF's in the held-out set but lowers it in the well-specified set", every(
              *[greater(HO, "sr32", m, "dwgf", "cover") for m in ("dwgf_svgd", "dwgf_kde4")],
              *[less(WS, "sr32", m, "dwgf", "cover") for m in ("dwgf_svgd", "dwgf_kde4")])),
    Claim("kde4-sr32", "2", "`dwgf_kde4` brings the SR x32 spread ratio into [0.8, 1.25] in the held-out set and "
          "to within [0.8, 1.5] in the well-specified set, and multiplies DWGF's spread on SR x8 by more than 2",
          every(within(HO, "sr32", "dwgf_kde4", "spread", 0.8, 1.25),
                within(WS, "sr32", "dwgf_kde4", "spread", 0.8, 1.5),
                greater(WS, "sr8", "dwgf_kde4", "dwgf", "spread", factor=2.0))),
    Claim("kde4-sw2-held-out", "2", "`dwgf_kde4` has the lowest sliced W2 of the held-out SR x32 rows (not in the "
          "well-specified set, where DWGF's is lower)", every(
              best(HO, "sr32", "dwgf_kde4", "SW2", highest=False), less(WS, "sr32", "dwgf", "dwgf_kde4", "SW2"))),
    Claim("feat-barely-changes", "2", "`dwgf_feat` keeps DWGF's spread ratio within 25 % on SR x8 and SR x32",
          every(*[ratio(WS, t, "dwgf_feat", "dwgf", "spread", 0.8, 1.25) for t in ("sr8", "sr32")])),
    Claim("bw4-sr32", "2", "`dwgf_bw4` (a weaker entropy term) lowers the SR x32 spread below DWGF's and raises "
          "`PSNR post` there", every(less(WS, "sr32", "dwgf_bw4", "dwgf", "spread"),
                                     greater(WS, "sr32", "dwgf_bw4", "dwgf", "PSNR post"))),
    # -- 3. step-size schedule
    Claim("cos-settles", "3", "`dwgf_cos` lowers DWGF's spread on box and SR x8",
          every(*[less(WS, t, "dwgf_cos", "dwgf", "spread") for t in NARROW_TASKS])),
    Claim("cos-over-confident", "3", "`dwgf_cos` raises the calibration ratio over DWGF's on box and SR x8",
          every(*[greater(WS, t, "dwgf_cos", "dwgf", "calib") for t in NARROW_TASKS])),
    Claim("cos-post", "3", "`dwgf_cos` lowers `PSNR post` on the box and SR x8",
          every(*[less(WS, t, "dwgf_cos", "dwgf", "PSNR post") for t in NARROW_TASKS])),
    # -- 4. variance reduction
    Claim("var-antithetic", "4", "the antithetic pair cancels the prior term's noise to round-off at t = 100 and 20",
          variance_ratio("antithetic", 1e20, math.inf, (100, 20))),
    Claim("var-k4", "4", "K = 4 draws divide the variance by 3-5 at every t", variance_ratio("K = 4 draws", 3, 5,
          (900, 500, 100, 20))),
    Claim("var-cv", "4", "the control variate divides the variance by more than 2 at t <= 500, but barely changes "
          "it at t = 900", every(variance_ratio("control variate", 2, math.inf, (500, 100, 20)),
                                 variance_ratio("control variate", 0.8, 1.25, (900,)))),
    Claim("var-shared", "4", "shared noise leaves the per-coordinate variance within 10 %",
          variance_ratio("shared noise", 0.9, 1.1, (900, 500, 100, 20))),
    Claim("noise-collapse", "4", "every variance-reduced variant (K = 4, control variate, shared, antithetic noise) "
          "has a lower spread and a higher calibration ratio than DWGF on the well-specified box and SR x8", every(
              *[less(WS, t, m, "dwgf", "spread") for m in NOISE_VARIANTS for t in NARROW_TASKS],
              *[greater(WS, t, m, "dwgf", "calib") for m in NOISE_VARIANTS for t in NARROW_TASKS])),
    Claim("noise-mean", "4", "no variance-reduced variant closes more than 0.15 of DWGF's gap on box or SR x8",
          every(*[within(WS, t, m, "gap", -math.inf, 0.15) for m in NOISE_VARIANTS for t in NARROW_TASKS])),
    Claim("noise-stable", "4", "no variance-reduced variant diverged or failed, in any set", all_solved(
        [WS, HO, OOD], NARROW_TASKS, NOISE_VARIANTS)),
    # -- 5. encoder variance
    Claim("sigma-enc", "5", "sigma_enc in {0, 0.01, 0.1} moves DWGF's PSNR gt by less than 2 % of its gap on box "
          "and SR x8", every(*[within(WS, t, f"dwgf/sigma_enc-{v}", "gap", -0.02, 0.02)
                               for t in ("box", "sr8") for v in ("0", "0.01", "0.1")])),
    # -- 6. out of distribution
    Claim("ood-exact-not-optimal", "6", "in the held-out and OOD sets the exact posterior mean is no upper bound: "
          "DWGF's PSNR gt exceeds it on CS 2 % in both, RLSD's on the box in both", every(
              *[greater(s, "cs2", "dwgf", "exact mean", "PSNR gt") for s in (HO, OOD)],
              *[greater(s, "box", "rlsd", "exact mean", "PSNR gt") for s in (HO, OOD)])),
    Claim("ood-langevin-tracks-model", "6", "in the held-out and OOD sets `dwgf_langevin` has the highest `PSNR "
          "post` on box, CS 10 % and CS 25 %, and its PSNR gt is within 1 dB of the exact posterior mean's on CS 10 "
          "% and CS 25 %", every(
              *[best(s, t, "dwgf_langevin", "PSNR post") for s in (HO, OOD) for t in ("box", "cs10", "cs25")],
              *[close_to(s, t, "dwgf_langevin", "exact mean", "PSNR gt", 1.0) for s in (HO, OOD)
                for t in ("cs10", "cs25")])),
    Claim("langevin-stable", "6", "`dwgf_langevin` (with its step cap) solved every image of every task in all "
          "three sets, SR x32 included", all_solved([WS, HO, OOD], WS_TASKS, ["dwgf_langevin"])),
    # -- the finding (section "The finding")
    Claim("finding-box", "finding", "on the well-specified box `dwgf_langevin` (998 steps) closes at least 80 % of "
          "DWGF's gap with a spread ratio in [0.8, 1.25]", every(
              within(WS, "box", "dwgf_langevin", "gap", 0.8, math.inf),
              within(WS, "box", "dwgf_langevin", "spread", 0.8, 1.25))),
    Claim("finding-sr8-missed", "finding", "on the well-specified SR x8 it does not: below 80 % of the gap and "
          "over-dispersed (spread > 1.25) at 998 steps, still short of both at 2994 steps (`steps_langevin-2994`), "
          "though closer", every(
              within(WS, "sr8", "dwgf_langevin", "gap", -math.inf, 0.8),
              within(WS, "sr8", "dwgf_langevin", "spread", 1.25, math.inf),
              within(WS, "sr8", "dwgf_langevin/steps_langevin-2994", "gap", -math.inf, 0.8),
              within(WS, "sr8", "dwgf_langevin/steps_langevin-2994", "spread", 1.25, math.inf),
              greater(WS, "sr8", "dwgf_langevin/steps_langevin-2994", "dwgf_langevin", "gap"))),
    Claim("finding-cost", "finding", "its cost per image at 998 steps is below DWGF's at 998 steps on box and SR x8",
          every(*[less(WS, t, "dwgf_langevin", "dwgf/steps_dwgf-998", "s/img") for t in ("box", "sr8")])),
    # -- 7. compressed sensing
    Claim("cs-dwgf-ratio", "7", "DWGF's PSNR gt is higher at CS 10 % than at 2 %, but not higher at 25 % than at "
          "10 % (100 steps)", every(across(WS, "dwgf", "PSNR gt", "cs10", "cs2"),
                                    lambda cells: (not across(WS, "dwgf", "PSNR gt", "cs25", "cs10")(cells)[0],
                                                   across(WS, "dwgf", "PSNR gt", "cs25", "cs10")(cells)[1]))),
    Claim("cs-langevin", "7", "`dwgf_langevin` (250 steps on CS) has the best `PSNR post` at CS 10 % and 25 %, "
          "but at CS 2 % it is over-dispersed (spread > 10) below DWGF", every(
              *[best(WS, t, "dwgf_langevin", "PSNR post") for t in ("cs10", "cs25")],
              within(WS, "cs2", "dwgf_langevin", "spread", 10.0, math.inf),
              less(WS, "cs2", "dwgf_langevin", "dwgf", "PSNR post"))),
    Claim("cs-rlsd", "7", "RLSD has the lowest PSNR gt of the main rows at every CS ratio (well-specified set)",
          every(*[best(WS, t, "rlsd", "PSNR gt", highest=False) for t in CS_TASKS])),
]  # fmt: skip


def evaluate_claims(cells: Cells, claims: list[Claim] | None = None) -> list[tuple[Claim, str, str]]:
    """(claim, ✔ / ✘ / "not run", evidence) for each claim; a missing row never raises."""
    out = []
    for claim in CLAIMS if claims is None else claims:
        try:
            holds, evidence, *partly = claim.check(cells)
        except NotRun as missing:
            out.append((claim, NOT_RUN, f"absent: {missing}"))
            continue
        mark = CONTRADICTED if not holds else PARTLY if partly and partly[0] else HOLDS
        out.append((claim, mark, evidence))
    return out


def claims_markdown(results: list[tuple[Claim, str, str]]) -> str:
    counts = {mark: sum(1 for _, m, _ in results if m == mark) for mark in (HOLDS, PARTLY, CONTRADICTED, NOT_RUN)}
    partly = f", {counts[PARTLY]} hold where run (rows of some parts absent)" if counts[PARTLY] else ""
    lines = [
        f"Each comparative sentence of the prose above, as evaluated on this data by `CLAIMS` in "
        f"benchmarks/findings_tables.py ({counts[HOLDS]} ✔ hold{partly}, {counts[CONTRADICTED]} ✘ contradicted, "
        f"{counts[NOT_RUN]} not run: a row they need is absent); tests/test_findings.py fails on a ✘.",
        "",
    ]
    for claim, mark, evidence in results:
        lines.append(f"- {mark} **`{claim.key}`** (§ {claim.section}) {claim.text}. *{evidence}*")
    return "\n".join(lines)


def tables_block(text: str) -> str:
    """The ``BEGIN ... END`` part of a findings file (markers included)."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"no {BEGIN} ... {END} section")
    return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a data folder (docs/findings-data) or a run (results/research)")
    parser.add_argument("--export", type=Path, help="write the data folder of the run `source` here")
    parser.add_argument("--write", type=Path, help="findings file whose tables section is replaced")
    args = parser.parse_args()
    if args.export is not None:
        record = export(args.source, args.export)
        print(f"exported {record['metric_rows']} rows of {args.source} to {args.export}")
        return
    if (args.source / "metrics").is_dir():  # a run folder: export into a temporary folder first
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            export(args.source, Path(tmp))
            text = render(Path(tmp), shown_as=str(args.source))
    else:
        text = render(args.source)
    if args.write is None:
        print(text)
        return
    from dwgf.io import atomic_write_text

    current = args.write.read_text(encoding="utf-8")
    block = tables_block(current)
    atomic_write_text(args.write, current.replace(block, text))
    print(f"wrote the tables of {args.write}")


if __name__ == "__main__":
    main()
