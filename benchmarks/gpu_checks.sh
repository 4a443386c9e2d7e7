#!/usr/bin/env bash
# The GPU checks, as one script for a short lease of a GPU machine (run from the repository root).
#
#   bash benchmarks/gpu_checks.sh OUTDIR
#
# 1. the GPU-marked tests (operators on CUDA == CPU; SD-2.1-base architecture forward in bf16; every solver on
#    CUDA follows its CPU run on the tiny SD);
# 2. benchmarks/dwgf_step.py at the SD-2.1-base architecture (random weights), 512 px, N = 4: DWGF (ours and the
#    naive official-cost loop) and the baselines in bf16, then DWGF ours/naive in fp32.
# Each step has its own time limit and writes its log and JSON into OUTDIR as it finishes, so a step that runs
# out of time costs only itself. The machine needs torch; diffusers can come from wheels in .whl/ (installed into
# /tmp/site when present, since the GPU image has no diffusers).
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
started=$SECONDS
step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit} s, at $((SECONDS - started)) s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
}
step env 45 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python3 -c "import torch, diffusers, transformers; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda,
  \"diffusers\", diffusers.__version__, \"transformers\", transformers.__version__)"'
step bench_bf16 250 python3 benchmarks/dwgf_step.py --device cuda --arch sd21 --dtype bf16 --image-size 512 \
  --variants ours,naive,psld,rlsd,latent_dps --threads 8 --json "$out/bench_bf16.json"
step pytest_gpu 110 python3 -m pytest -q -s -m gpu -p no:cacheprovider \
  tests/test_operators.py tests/test_stable_diffusion.py tests/test_baselines.py
step bench_fp32 140 python3 benchmarks/dwgf_step.py --device cuda --arch sd21 --dtype fp32 --image-size 512 \
  --variants ours,naive --threads 8 --json "$out/bench_fp32.json"
