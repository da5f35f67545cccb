#!/usr/bin/env bash
# Compile one .cu file of cvops as the build does (sm_90), to check it without a full rebuild;
# flags after the file go to nvcc (e.g. -Xptxas -v for registers and spills):
#   bash scripts/nvcc_check.sh csrc/boxes/nms_cuda.cu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TORCH=$("$PY" -c "import torch, os; print(os.path.dirname(torch.__file__))")
SITE=$(dirname "$TORCH")
ABI=$("$PY" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
exec /usr/local/cuda/bin/nvcc -c "$1" -o /tmp/$(basename "$1").o -Icsrc -I"$TORCH/include" \
  -I"$TORCH/include/torch/csrc/api/include" $(ls -d "$SITE"/nvidia/cu*/include 2>/dev/null | sed 's/^/-I/') \
  -std=c++20 -O3 --expt-relaxed-constexpr -gencode arch=compute_90,code=sm_90 \
  -D_GLIBCXX_USE_CXX11_ABI=$ABI -DCVOPS_WITH_CUDA -Xcompiler -fPIC -D__CUDA_NO_HALF_OPERATORS__ \
  -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ "${@:2}"
