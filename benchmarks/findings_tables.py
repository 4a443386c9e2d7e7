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

* ``PSNR gt``: PSNR of the particle-mean image against the ground truth (``psnr``/``standard``, particle -1);
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
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

COLUMNS = [
    ("PSNR gt", "psnr", "standard", -1),
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
    for (image_set, task), cell in df.groupby(["image_set", "task"], sort=True):
        exact = _mean(cell, *EXACT)
        base = cell[(cell["method"] == BASELINE[0]) & (cell["variant"] == BASELINE[1])]
        base_psnr = _mean(base, "psnr", "standard", -1)
        reference = {"image_set": image_set, "task": task, "method": "exact mean", "variant": "reference"}
        reference.update({name: math.nan for name in SHOWN})
        reference["PSNR gt"] = float(exact.mean()) if len(exact) else math.nan
        reference.update({"gap": 1.0 if image_set in well_specified else math.nan, "ok": "–"})
        out.append(reference)
        for (method, variant), part in cell.groupby(["method", "variant"], sort=True):
            row = {"image_set": image_set, "task": task, "method": method, "variant": variant}
            for name, metric, protocol, particle in COLUMNS:
                values = _mean(part, metric, protocol, particle)
                row[name] = float(values.mean()) if len(values) else math.nan
            psnr = _mean(part, "psnr", "standard", -1)
            ids = psnr.index.intersection(base_psnr.index).intersection(exact.index)
            closed, open_gap = float(psnr[ids].mean() - base_psnr[ids].mean()), float((exact - base_psnr)[ids].mean())
            row["gap"] = closed / open_gap if len(ids) and image_set in well_specified else math.nan
            runtime = part[part["metric"] == "runtime_s"]
            row["ok"] = f"{int((runtime['status'] == 'ok').sum())}/{part['image_id'].nunique()}"
            out.append(row)
    table = pd.DataFrame(out)
    rank = {name: k for k, name in enumerate(set_order)}
    table["_set"] = table["image_set"].map(lambda s: rank.get(s, len(rank)))
    return table.sort_values(["_set", "task"], kind="stable").drop(columns="_set")


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
    return "\n".join(
        [
            BEGIN,
            f"*Generated by `python benchmarks/findings_tables.py {folder} --write docs/findings.md` from {folder} "
            f"(suite `{record['suite']}`, {status}; {record['solve_artifacts']} solve artifacts, "
            f"{record['metric_rows']} metric rows read, {len(df)} kept).*",
            "",
            "#### The fitted mixture",
            "",
            prior_table(json.loads((data / "prior.json").read_text(encoding="utf-8"))),
            "",
            markdown(summary(df, set_order, record["well_specified_sets"])),
            "#### Per-step variance of the prior-gradient estimator",
            "",
            "Mean over latent coordinates of the variance over 64 fresh-noise calls at fixed particles (4 prior "
            "samples), in units of (gamma s_t / (N d_z))^2:",
            "",
            variance_table(json.loads((data / "variance.json").read_text(encoding="utf-8"))),
            END,
        ]
    )


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
