"""Per-image values and their summaries, from the long-format metrics table (:mod:`dwgf.metrics.schema`).

Per-image value of a metric (docs/method.md#dwgf, the official protocol): the mean over the image's particles
(rows with ``particle >= 0``; the particle-mean image, ``particle = -1``, is not used). Metrics that are one
number per image (``particle`` null: exact-posterior metrics, diversity, runtime) are taken as they are.
Summaries are the mean and the sample standard deviation over images of those per-image values; null values
(a missing LPIPS backbone, a non-finite particle) are excluded and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class MetricColumn:
    """One metric as tables and plots show it.

    ``protocol_prefix`` selects the protocol (``standard``, ``space=image``...); ``higher_is_better`` picks the
    bold entry (None: no best); ``decimals`` formats the numbers; ``set_policy`` marks set-level metrics
    (FID/KID) and the sample policy they are read for, ``set_reference`` the prefix of their ``reference`` column
    (``gt:`` the suite's ground truth, ``ref:`` the extra reference set of ``metrics.set_level.reference``);
    ``definition`` is the sentence a table caption prints for the column (every shown column is defined there);
    ``target`` marks a ratio whose ideal value it is (plots use a log axis and draw a reference line there).
    """

    metric: str
    protocol_prefix: str
    label: str
    higher_is_better: bool | None
    decimals: int
    set_policy: str | None = None
    set_reference: str = "gt:"
    definition: str = ""
    target: float | None = None

    @property
    def arrow(self) -> str:
        return {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]


#: Columns of the main table, in order; a column is shown only when the table has rows for it.
MAIN_COLUMNS = (
    MetricColumn("psnr", "standard", "PSNR", True, 2,
                 definition="PSNR (dB) against the ground truth, on clamped 8-bit images scaled to [0, 1]"),
    MetricColumn("ssim", "standard", "SSIM", True, 3,
                 definition="SSIM against the ground truth (11x11 Gaussian window, clamped 8-bit images)"),
    MetricColumn("lpips_alex", "standard", "LPIPS-alex", False, 3,
                 definition="LPIPS distance to the ground truth (AlexNet backbone, inputs in [-1, 1])"),
    MetricColumn("posterior_mean_psnr", "space=image", "PSNR vs exact post. mean", True, 2,
                 definition="test bed only: PSNR (dB) of the particle mean against the exact posterior mean "
                 "E[D(z) | y] (what a perfect sampler's particle mean tends to), unclamped, data range 2"),
    MetricColumn("spread_ratio", "space=image", "Spread / exact", None, 2,
                 definition="test bed only: the particles' across-particle std divided by the exact posterior std "
                 "(means over pixels); 1 = calibrated spread, < 1 under-dispersed (mode collapse), > 1 "
                 "over-dispersed; no best is marked, the target is 1 (the sample std of a few particles is biased "
                 "low, by about 8 % at N = 4)", target=1.0),
    MetricColumn("fid", "clean-fid", "FID", False, 1, set_policy="all_particles",
                 definition="FID of all particles of all images against the ground-truth images (strongly biased "
                 "upwards with few images)"),
    MetricColumn("kid", "clean-fid", "KID", False, 4, set_policy="all_particles",
                 definition="KID (unbiased) of all particles of all images against the ground-truth images"),
    MetricColumn("fid", "clean-fid", "FID (ref)", False, 1, set_policy="all_particles", set_reference="ref:",
                 definition="FID of all particles against the separate reference set named below"),
    MetricColumn("kid", "clean-fid", "KID (ref)", False, 4, set_policy="all_particles", set_reference="ref:",
                 definition="KID of all particles against the separate reference set named below"),
)  # fmt: skip

#: Columns of ablation tables and panels of ablation plots (per-image metrics only).
ABLATION_COLUMNS = tuple(c for c in MAIN_COLUMNS if c.set_policy is None)


def select(df: pd.DataFrame, column: MetricColumn) -> pd.DataFrame:
    """Rows of ``df`` for one metric column (image level, or set level with its sample policy)."""
    mask = (df["metric"] == column.metric) & df["protocol"].str.startswith(column.protocol_prefix)
    if column.set_policy is None:
        mask &= df["level"] == "image"
    else:
        mask &= (df["level"] == "set") & (df["sample_policy"] == column.set_policy)
        mask &= df["reference"].fillna("").str.startswith(column.set_reference)
    return df[mask.fillna(False).astype(bool)]


def per_image(df: pd.DataFrame, column: MetricColumn) -> pd.DataFrame:
    """One row per (task, method, variant, image_id) with ``value`` (NaN when every particle was null)."""
    rows = select(df, column)
    keys = ["task", "method", "variant", "image_id"]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "value"])
    particle_rows = rows[rows["particle"].fillna(-2) >= 0]
    whole_rows = rows[rows["particle"].isna()]
    parts = []
    if not particle_rows.empty:
        parts.append(particle_rows.groupby(keys, dropna=False)["value"].mean().reset_index())
    if not whole_rows.empty:
        parts.append(whole_rows[[*keys, "value"]])
    out = pd.concat(parts, ignore_index=True)
    out["value"] = out["value"].astype("float64")
    return out


def summarise(values: pd.Series) -> dict[str, float | int]:
    """mean, sample std (ddof 1; NaN for a single value), count of non-null values and of nulls."""
    numeric = values.astype("float64")
    valid = numeric.dropna()
    return {
        "mean": float(valid.mean()) if len(valid) else float("nan"),
        "std": float(valid.std(ddof=1)) if len(valid) > 1 else float("nan"),
        "n": int(len(valid)),
        "n_null": int(numeric.isna().sum()),
    }
