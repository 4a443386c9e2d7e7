"""Ablation plots (``dwgf plots``): one panel per metric, metric vs the ablated parameter, one line per task
(and, when the ablation's images span several image sets, one line style per set: the sets are never averaged
together, :func:`dwgf.reporting.tables.report_sets`).

Points are the mean over the ablation's images of the per-image (particle-averaged) value
(:func:`dwgf.reporting.summary.per_image`); error bars are ± one sample standard deviation over images
(seaborn ``lineplot(..., errorbar="sd")``, which computes both from the per-image values). The x axis is
logarithmic when every value is positive and they span a factor of 4 or more (γ ∈ {0.05, 0.15, 0.5}, N ∈ {1, 2, 4, 8}).
Each metric has its own panel and y scale; a ratio with an ideal value (the spread ratio, ideal 1:
:attr:`dwgf.reporting.summary.MetricColumn.target`) is drawn on a log y axis with a dashed reference line at that
value, so under- and over-dispersion by the same factor look alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from dwgf.io import atomic_path
from dwgf.reporting.summary import ABLATION_COLUMNS, per_image


def ablation_frame(df: pd.DataFrame, spec: dict[str, Any], ablation: dict[str, Any]) -> pd.DataFrame:
    """Long frame: metric label, task label, image set (None for a suite of one set), parameter value, image id,
    per-image value."""
    from dwgf.reporting.tables import report_sets

    ids = spec["ids"][: ablation["images"]]
    set_of = {i: s.name for s in report_sets(spec, ids) for i in s.ids}
    parts = []
    for column in ABLATION_COLUMNS:
        values = per_image(df, column)
        values = values[(values["method"] == ablation["method"]) & values["image_id"].isin(ids)]
        for task in ablation["tasks"]:
            for text, variant in ablation["variants"][task].items():
                chosen = values[(values["task"] == task) & (values["variant"] == variant)].dropna(subset=["value"])
                if chosen.empty:
                    continue
                parts.append(
                    pd.DataFrame(
                        {
                            "metric": column.label + column.arrow,
                            "task": spec["tasks"][task]["label"],
                            "set": chosen["image_id"].map(set_of).to_numpy(),
                            "x": float(text),
                            "image_id": chosen["image_id"].to_numpy(),
                            "value": chosen["value"].to_numpy(),
                        }
                    )
                )
    if not parts:
        raise ValueError(
            f"no per-image metric values for ablation {ablation['name']!r} in metrics.parquet; check that its "
            f"evaluate jobs ran (variants {ablation['variants']})"
        )
    return pd.concat(parts, ignore_index=True)


def plot_ablation(
    spec: dict[str, Any], root: str | os.PathLike, metrics_path: str | os.PathLike, name: str, out: str | os.PathLike
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dwgf.metrics.schema import read_metrics
    from dwgf.pipeline.layout import suite_path
    from dwgf.pipeline.records import recorded_input
    from dwgf.provenance import Recorder

    ablations = {a["name"]: a for a in spec["ablations"]}
    if name not in ablations:
        raise ValueError(
            f"--ablation {name!r} is not an ablation of suite {spec['suite']!r}; choose one of {sorted(ablations)}"
        )
    ablation = ablations[name]
    recorder = Recorder("plots", root=root, config={**spec, "ablation": name}, seeds={})
    inputs = recorded_input(metrics_path, suite_path(root, "aggregate_record"), root)  # only what aggregate wrote
    fig = ablation_figure(ablation_frame(read_metrics(metrics_path), spec, ablation), spec, ablation)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    recorder.write(f"{out}.prov.json", outputs=[out], inputs=inputs)
    return Path(out)


def ablation_figure(frame: pd.DataFrame, spec: dict[str, Any], ablation: dict[str, Any]):
    """The matplotlib figure of one ablation: one panel (own y scale) per metric of :func:`ablation_frame`."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import seaborn as sns

    metrics = list(dict.fromkeys(frame["metric"]))
    targets = {c.label + c.arrow: c.target for c in ABLATION_COLUMNS}
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.0), squeeze=False)
    xs = sorted(frame["x"].unique())
    log_x = xs[0] > 0 and xs[-1] / xs[0] >= 4  # gamma 0.05..0.5 and N 1..8 read better on a log axis
    sets = list(dict.fromkeys(frame["set"].dropna())) if "set" in frame else []
    style = {"style": "set", "style_order": sets} if len(sets) > 1 else {}  # one line per task x set
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(
            data=frame[frame["metric"] == metric], x="x", y="value", hue="task", errorbar="sd", marker="o",
            err_style="bars", ax=ax, **style,
        )  # fmt: skip
        ax.set_title(metric)
        ax.set_xlabel(ablation["label"])
        ax.set_ylabel("")
        target = targets.get(metric)
        if target is not None:
            _ratio_axis(ax, frame[frame["metric"] == metric]["value"], target)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # only the ablated values are ticked
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs])
        if ax is not axes[0][0] and ax.get_legend() is not None:
            ax.get_legend().remove()
    method = spec["methods"][ablation["method"]]
    n_images = len(spec["ids"][: ablation["images"]])
    where = f"set {sets[0]}, " if len(sets) == 1 else (f"sets {', '.join(sets)} apart, " if sets else "")
    fig.suptitle(f"{method}: ablation of {ablation['label']} ({where}{n_images} images, mean ± sd)")
    fig.tight_layout()
    return fig


def _ratio_axis(ax, values: pd.Series, target: float) -> None:
    """Log y axis around ``target`` with a dashed reference line at it (a ratio of 1/2 and 2 are equally far)."""
    import matplotlib.ticker

    positive = values[values > 0]
    if positive.empty:
        return  # nothing to put on a log axis; the linear panel shows the (non-positive) values as they are
    ax.axhline(target, color="0.3", linestyle="--", linewidth=1, zorder=0)
    ax.set_yscale("log")
    low, high = min(float(positive.min()), target), max(float(positive.max()), target)
    ax.set_ylim(low / 1.5, high * 1.5)
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 0.2, 0.5, 1, 2...
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.text(0.98, 0.02, f"dashed: ideal {target:g}", transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
            color="0.3")  # fmt: skip
