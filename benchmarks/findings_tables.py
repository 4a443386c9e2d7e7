"""The tables of docs/findings.md, regenerated from a research-suite run (no number is typed by hand).

    python benchmarks/findings_tables.py results/research [--write docs/findings.md]

Reads every per-shard metrics file under ``<run>/metrics/`` (``dwgf.metrics.schema.read_metrics``; the suite uses
``metrics.jobs: per_shard``, so a run still in progress already has the shards it finished) and prints, per task,
one row per method x variant with the mean over images of:

* ``PSNR gt``: PSNR of the particle-mean image against the ground truth (``psnr``/``standard``, particle -1);
* ``PSNR post``: PSNR of the particle mean against the exact posterior mean (``posterior_mean_psnr``, image space);
* ``spread``: ``spread_ratio`` (image space; 1 = the exact posterior's spread); ``SW2``: ``sliced_w2`` (latent);
* ``cover`` / ``cover*``: ``mode_coverage`` and what N exact samples reach (``mode_coverage_exact_expected``);
  ``H``: ``posterior_weight_entropy`` (nats) of the exact posterior;
* ``calib``: ``calibration_ratio`` (image space; ~1 calibrated, > 1 over-confident);
* ``s/img``: ``runtime_s`` (wall seconds per image of the solve, batch share); ``ok``: solved images / images.

It also measures the per-step variance of DWGF's prior-gradient estimator (:func:`dwgf.solvers.dwgf.
prior_gradient_variance`) for the variance-reduction variants, at latents drawn from the run's prior.
With ``--write``, the output replaces the part of the findings file between ``<!-- tables:begin -->`` and
``<!-- tables:end -->``.
"""

from __future__ import annotations

import argparse
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
VARIANCE_VARIANTS = {
    "official (1 draw)": {},
    "K = 4 draws": {"n_noise_draws": 4},
    "antithetic": {"antithetic": True},
    "shared noise": {"shared_noise": True},
    "control variate": {"control_variate": True},
}
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def load_rows(run: Path) -> pd.DataFrame:
    from dwgf.metrics.schema import concat_metrics, read_metrics

    files = sorted((run / "metrics").glob("**/shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no metrics under {run / 'metrics'}; run `snakemake -c 2 --config suite=research`")
    return concat_metrics(read_metrics(f) for f in files)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    image = df[df["level"] == "image"]
    out = []
    for (task, method, variant), part in image.groupby(["task", "method", "variant"], sort=True):
        row = {"task": task, "method": method, "variant": variant}
        for name, metric, protocol, particle in COLUMNS:
            sel = part[(part["metric"] == metric) & (part["status"] == "ok")]
            if protocol is not None:
                sel = sel[sel["protocol"].str.startswith(protocol)]
            if particle is not None:
                sel = sel[sel["particle"] == particle]
            row[name] = float(sel["value"].astype(float).mean()) if len(sel) else math.nan
        runtime = part[part["metric"] == "runtime_s"]
        row["ok"] = f"{int((runtime['status'] == 'ok').sum())}/{part['image_id'].nunique()}"
        out.append(row)
    return pd.DataFrame(out)


def fmt(value: float) -> str:
    if isinstance(value, str):
        return value
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def markdown(table: pd.DataFrame) -> str:
    names = [c[0] for c in COLUMNS] + ["ok"]
    lines = []
    for task, part in table.groupby("task", sort=False):
        lines += [f"#### Task `{task}`", "", "| method | variant | " + " | ".join(names) + " |"]
        lines += ["|---|---|" + "---:|" * len(names)]
        for _, r in part.iterrows():
            lines.append(f"| {r['method']} | {r['variant']} | " + " | ".join(fmt(r[n]) for n in names) + " |")
        lines.append("")
    return "\n".join(lines)


def variance_table(run: Path, seed: int = 0) -> str:
    import torch

    from dwgf.pipeline.solve import load_pipeline_prior
    from dwgf.seeding import make_generator
    from dwgf.solvers.dwgf import prior_gradient_variance

    prior, _ = load_pipeline_prior(run, run / "prior" / "prior.prov.json", "cpu", "float64")
    z = prior.sample_prior(4, make_generator(seed)).to(torch.float64)
    timesteps = (900, 500, 100, 20)
    lines = ["| estimator | " + " | ".join(f"t = {t}" for t in timesteps) + " |", "|---|" + "---:|" * len(timesteps)]
    for name, hyper in VARIANCE_VARIANTS.items():
        values = [prior_gradient_variance(prior, z, t, make_generator(seed + 1), hyper, repeats=64) for t in timesteps]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3g}" for v in values) + " |")
    return "\n".join(lines)


def prior_table(run: Path) -> str:
    """The fitted mixture: weight and training crops per component (``prior/testbed_prior.json``, ``config.em``)."""
    import json

    record = json.loads((run / "prior" / "testbed_prior.json").read_text(encoding="utf-8"))
    em = record["config"]["em"]
    repair = em.get("min_component_size", {})
    lines = [
        f"K = {len(em['weights'])} components; minimum size {repair.get('min_size', 'off')}; plain-EM sizes before "
        f"the repair {repair.get('initial_sizes', '–')}; split rounds {repair.get('split_rounds', 0)}, dropped "
        f"{repair.get('dropped', 0)}.",
        "",
        "| component | " + " | ".join(str(k) for k in range(len(em["weights"]))) + " |",
        "|---|" + "---:|" * len(em["weights"]),
        "| weight | " + " | ".join(f"{w:.3f}" for w in em["weights"]) + " |",
        "| training crops | " + " | ".join(str(c) for c in em["component_sizes"]) + " |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the research suite's results folder (results/research)")
    parser.add_argument("--write", type=Path, help="findings file whose tables section is replaced")
    args = parser.parse_args()
    df = load_rows(args.run)
    text = "\n".join(
        [
            BEGIN,
            f"*Generated by `python benchmarks/findings_tables.py {args.run}` from {df['run_sha256'].nunique()} "
            f"solve artifacts ({len(df)} metric rows).*",
            "",
            "#### The fitted mixture",
            "",
            prior_table(args.run),
            "",
            markdown(summary(df)),
            "#### Per-step variance of the prior-gradient estimator",
            "",
            "Mean over latent coordinates of the variance over 64 fresh-noise calls at fixed particles (4 prior "
            "samples), in units of (gamma s_t / (N d_z))^2:",
            "",
            variance_table(args.run),
            END,
        ]
    )
    if args.write is None:
        print(text)
        return
    from dwgf.io import atomic_write_text

    current = args.write.read_text(encoding="utf-8")
    if BEGIN not in current or END not in current:
        raise ValueError(f"{args.write} has no {BEGIN} ... {END} section to replace")
    head, rest = current.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    atomic_write_text(args.write, head + text + tail)
    print(f"wrote the tables of {args.write}")


if __name__ == "__main__":
    main()
