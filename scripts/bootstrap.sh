#!/usr/bin/env bash
# Fresh machine → .venv with torch 2.14.1 (+ torchvision 0.29.1) and cvops built in place.
# CUDA kernels compile when nvcc is found (FORCE_CUDA=1 makes a missing nvcc an error,
# CVOPS_CPU_ONLY=1 skips them); see setup.py for TORCH_CUDA_ARCH_LIST and MAX_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=(torch==2.14.1 torchvision==0.29.1)
# The [test] and [bench] extras of pyproject.toml, by name: cvops itself is installed last, without
# build isolation, so that it compiles against the torch above.
EXTRAS=("pytest>=8" pytest-timeout "hypothesis>=6" numpy "matplotlib>=3.7" scikit-image scikit-learn tqdm
        "pytest-benchmark>=4")
# CI's lint (scripts/lint.sh) and SASS inspection (cuobjdump and nvdisasm land in
# .venv/lib/python*/site-packages/nvidia/cu13/bin).
TOOLS=(ruff==0.17.5 clang-format==23.1.3 nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37)
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q "${TORCH[@]}"
# The torch pins again, so that resolving the rest cannot move them.
.venv/bin/python -m pip install -q "${TORCH[@]}" ninja "${EXTRAS[@]}" "${TOOLS[@]}"
.venv/bin/python -m pip install -q --no-build-isolation -e .
.venv/bin/python -m cvops.info
