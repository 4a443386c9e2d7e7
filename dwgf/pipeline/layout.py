"""Where every artifact of a suite lives: :data:`LAYOUT`, declared once.

The Snakefile's rules (through :class:`dwgf.pipeline.plan.Plan`) and the steps that write files inside a folder
(``acquire-images``, ``observe``, ``solve``, ``aggregate``, ``tables``) take their paths from here, so a path is
never spelled twice. Paths are relative to the suite's results folder ``<results>/<suite>/``; ``logs/``,
``benchmarks/`` and ``audit/`` (the report of ``snakemake verify``) are not covered by provenance records.

This module never imports torch: it runs at Snakefile parse time.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

#: Regular expressions for the Snakemake wildcards.
WILDCARD_CONSTRAINTS = {
    "method": r"[a-z][a-z0-9_]*",
    "task": r"[a-z][a-z0-9_]*",
    "variant": r"[A-Za-z0-9_]+(-[0-9eE.+-]+)?",
    "shard": r"[0-9][0-9][0-9]+",
    "image": r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    "ablation": r"[a-z][a-z0-9_]*",
}

#: Artifact paths relative to the suite's results folder. Folders (``*_folder``, ``solve_images``) hold one file
#: per image named by the step that writes it (``<id>.png``; ``<id>.npz`` + ``<id>.png`` preview; ``<id>.npz``,
#: ``<id>_p<j>.png`` and ``<id>.json``).
LAYOUT = {
    "images_manifest": "data/images.prov.json",
    "image_folder": "data/images",
    "prior": "prior/prior.prov.json",
    "metric_weights": "weights/metric_weights.prov.json",
    "observations": "observations/{task}/observe.prov.json",
    "observation_folder": "observations/{task}",
    "shard": "solve/{method}/{task}/{variant}/shard-{shard}.prov.json",
    "solve_images": "solve/{method}/{task}/{variant}/images",
    "shard_metrics": "metrics/{method}/{task}/{variant}/shard-{shard}.parquet",
    "set_metrics": "set_metrics/{method}/{task}/{variant}.parquet",
    "reference_stats": "reference/{name}/stats.npz",
    "metrics": "metrics.parquet",
    "set_metrics_all": "set_metrics.parquet",
    "runtime": "runtime.parquet",
    "aggregate_record": "aggregate.prov.json",
    "tables_folder": "tables",
    "tables_record": "tables/tables.prov.json",
    "table_main": "tables/main.{ext}",
    "table_ablation": "tables/ablation-{ablation}.{ext}",
    "table_runtime": "tables/runtime.{ext}",
    "table_paper": "tables/paper.{ext}",
    "plot_ablation": "plots/ablation-{ablation}.png",
    "plot_qualitative": "plots/qualitative-{task}.png",
    "verify": "audit/verify.json",
    "invocation": "run/invocation.json",
    "root_record": "run/root.prov.json",
    "log": "logs/{rule}/{name}.log",
    "benchmark": "benchmarks/{rule}/{name}.tsv",
}

TABLE_FORMATS = ("md", "tex", "html")


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def relative(kind: str, **wildcards: str) -> str:
    """``LAYOUT[kind]`` with the given wildcards filled in (the others stay ``{wildcard}`` for Snakemake)."""
    if kind not in LAYOUT:
        raise KeyError(f"no artifact kind {kind!r} in dwgf.pipeline.layout.LAYOUT; kinds are {sorted(LAYOUT)}")
    return LAYOUT[kind].format_map(_KeepMissing(wildcards))


def suite_path(root: str | os.PathLike, kind: str, **wildcards: str) -> Path:
    """``<root>/<LAYOUT[kind]>`` as a Path, for the steps (``root`` is the suite's results folder)."""
    return Path(root) / relative(kind, **wildcards)


class Layout:
    """The artifact paths of one suite, as POSIX strings under ``root`` (``<results>/<suite>``) for Snakemake."""

    def __init__(self, root: str):
        self.root = str(PurePosixPath(root))

    def path(self, kind: str, **wildcards: str) -> str:
        """``<root>/<LAYOUT[kind]>`` with the given wildcards filled in (others stay ``{wildcard}``)."""
        return f"{self.root}/{relative(kind, **wildcards)}"

    def log(self, rule: str, name: str = "{rule}") -> str:
        return self.path("log", rule=rule, name=name)

    def benchmark(self, rule: str, name: str = "{rule}") -> str:
        return self.path("benchmark", rule=rule, name=name)
