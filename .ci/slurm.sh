#!/usr/bin/env bash
# CI step: bring up the single-node Slurm (munge, MariaDB + slurmdbd, slurmctld, slurmd with one fake GPU) that
# tests/test_slurm.py runs the smoke suite on, then check it end to end. Called by .ci/run before pytest.
#
# tests/test_slurm.py skips only when `sbatch` is absent; so this script must fail loudly (exit non-zero, with
# the failing step named) instead of leaving a half-started cluster for the tests to trip over.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "[ci/slurm] FAILED: $*" >&2
  for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/slurm/slurmdbd.log; do
    [ -f "$f" ] && { echo "--- last lines of $f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || fail "not root and no sudo: the local Slurm needs root (Debian packages, daemons)"
  SUDO="sudo -n"
fi

start=$(date +%s)
$SUDO bash tests/slurm/start-local-slurm.sh || fail "tests/slurm/start-local-slurm.sh exited non-zero"

# Acceptance checks, each a real job: a CPU job, a job asking the fake GPU, and accounting that records both.
out=$(sbatch --parsable --wait -t 2 --mem 100 -o /dev/null --wrap true) || fail "sbatch of a trivial CPU job failed"
gpu=$(sbatch --parsable --wait -t 2 --mem 100 --gpus=1 -o /dev/null --wrap 'test "$CUDA_VISIBLE_DEVICES" = 0') ||
  fail "a job with --gpus=1 failed (fake GRES gpu:1 missing? see /etc/slurm/gres.conf)"
for _ in $(seq 60); do
  rec=$(sacct -n -X -P -j "$out,$gpu" -o JobID,State,ReqTRES 2>/dev/null || true)
  # slurmdbd can store a job's TRES a moment after its state: wait for both, not only COMPLETED.
  [ "$(grep -c COMPLETED <<<"$rec")" = 2 ] && grep "^$gpu|" <<<"$rec" | grep -q "gres/gpu=1" && break
  sleep 1
done
grep -q COMPLETED <<<"$(grep "^$out|" <<<"$rec")" || fail "sacct has no COMPLETED record of job $out (slurmdbd?): $rec"
grep "^$gpu|" <<<"$rec" | grep -q "gres/gpu=1" || fail "sacct does not show gres/gpu=1 for job $gpu: $rec"
echo "[ci/slurm] local Slurm ready in $(($(date +%s) - start)) s (jobs $out and $gpu ran; sacct records them)"
