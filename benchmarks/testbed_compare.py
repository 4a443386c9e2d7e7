"""Benchmark: DWGF, PSLD, RLSD and Latent-DPS against the exact posterior of the 64-px test bed.

A thin wrapper of the CLI verb ``dwgf testbed-compare`` (:mod:`dwgf.cli.compare`: the settings are those of the
``demo`` suite of config.yaml, the metrics are documented there), with outputs under ``results/testbed_compare/``
(git-ignored) by default::

    python benchmarks/testbed_compare.py                    # 8 images per regime x task, all methods
    python benchmarks/testbed_compare.py --n-images 2 --tasks box
    python benchmarks/testbed_compare.py --prior-dir results/demo   # reuse the DAG's own fitted prior

Any option of ``dwgf testbed-compare --help`` is passed through. The prior fitted by the DAG's fit-prior step is
cached in ``results/testbed_compare/<suite>`` so that reruns skip the ~30 s fit.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dwgf.cli import main

RESULTS = Path(__file__).resolve().parent.parent / "results" / "testbed_compare"


def default_arguments(argv: list[str]) -> list[str]:
    """Add the default output paths and the prior cache unless the caller chose their own."""
    args = ["testbed-compare", *argv]
    if "--prior-dir" not in argv:
        suite = argv[argv.index("--suite") + 1] if "--suite" in argv[:-1] else "demo"
        args += ["--prior-dir", str(RESULTS / suite)]
    defaults = {
        "--csv": RESULTS / "testbed_compare.csv",
        "--per-image-csv": RESULTS / "testbed_compare_per_image.csv",
        "--markdown": RESULTS / "testbed_compare.md",
    }
    for flag, path in defaults.items():
        if flag not in argv:
            args += [flag, str(path)]
    return args


if __name__ == "__main__":
    sys.exit(main(default_arguments(sys.argv[1:])))
