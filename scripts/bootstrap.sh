#!/usr/bin/env bash
# Fresh machine → .venv with torch 2.14.1 (+ torchvision 0.29.1) and cvops built in place.
# CUDA kernels compile when nvcc is found (FORCE_CUDA=1 makes a missing nvcc an error,
# CVOPS_CPU_ONLY=1 skips them); see setup.py for TORCH_CUDA_ARCH_LIST and MAX_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 \
    ninja "pytest>=8" "hypothesis>=6" numpy "pytest-benchmark>=4" "matplotlib>=3.7"
.venv/bin/python -m pip install -q --no-build-isolation -e .
.venv/bin/python -m cvops.info
