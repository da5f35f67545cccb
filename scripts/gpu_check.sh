#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (python3 with CUDA torch, nvcc, ninja, pytest; no network):
# build cvops, run the CUDA tests and the GPU benchmark report, and write everything to RESULTS_DIR.
#   bash scripts/gpu_check.sh RESULTS_DIR
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh RESULTS_DIR}
mkdir -p "$out"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
"$PY" -m pip install -q --no-build-isolation --no-deps -e . >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
"$PY" -m cvops.info | tee "$out/info.txt"
"$PY" -m pytest -m cuda -q -p no:cacheprovider 2>&1 | tee "$out/pytest_cuda.txt" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
"$PY" benchmarks/run.py --device cuda --json "$out/bench_cuda.json" --markdown "$out/bench_cuda.md" 2>&1 | tee "$out/bench_cuda.txt" | tail -40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
