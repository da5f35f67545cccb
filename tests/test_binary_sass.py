"""The sm_90 machine code of the XNOR tensor-core kernel, read with cuobjdump (PyPI's
nvidia-cuda-cuobjdump, which the test extra and the bootstrap install): one native
BMMA.168256.AND.POPC per 256-bit k-slice and 8-filter tile, and no emulated XOR form (mma .xor.popc
compiles to two AND BMMAs and LOP3 negations on sm_90)."""

import glob
import os
import re
import shutil
import subprocess

import pytest
import torch

import cvops

KERNEL = "xnor_bmma_kernel"
TILES_PER_WARP = 4  # kTileN / 8 in csrc/binary/binary_cuda.cu


def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    site = os.path.dirname(os.path.dirname(torch.__file__))
    candidates = sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "bin", "cuobjdump")))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="module")
def sass():
    if not cvops._C.with_cuda():
        pytest.skip("a CPU-only build has no SASS")
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump is not installed (pip install nvidia-cuda-cuobjdump)")
    library = cvops._C.__file__
    out = subprocess.run([tool, "-sass", library], capture_output=True, text=True, timeout=600, check=True).stdout
    functions = re.split(r"\n\s*Function : ", out)
    found = {f.split("\n", 1)[0].strip(): f for f in functions[1:] if "binary" in f.split("\n", 1)[0]}
    assert found, "no binary-family kernels in the SASS"
    return found


def test_tensor_core_kernel_issues_native_and_popc_bmma(sass):
    kernels = {name: body for name, body in sass.items() if KERNEL in name}
    assert len(kernels) == 2  # float and double outputs
    for name, body in kernels.items():
        bmma = re.findall(r"\bBMMA\.[\w.]+", body)
        assert bmma == ["BMMA.168256.AND.POPC"] * TILES_PER_WARP, (name, bmma)
        assert "XOR" not in " ".join(bmma)


def test_popc_kernel_uses_popc_and_no_tensor_cores(sass):
    kernels = {name: body for name, body in sass.items() if "xnor_popc_kernel" in name}
    assert len(kernels) == 2
    for body in kernels.values():
        assert "POPC" in body and "LOP3" in body
        assert "BMMA" not in body
