"""The sm_90 machine code of the tensor-core kernels, read with cuobjdump (PyPI's
nvidia-cuda-cuobjdump, which the test extra and the bootstrap install). XNOR: one native
BMMA.168256.AND.POPC per 256-bit k-slice and 8-filter tile, and no emulated XOR form (mma .xor.popc
compiles to two AND BMMAs and LOP3 negations on sm_90). Locally connected tiles: TF32 HMMAs where
tensor cores are asked for, none in the FFMA tiles."""

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
    found = {f.split("\n", 1)[0].strip(): f for f in functions[1:]}
    assert any("binary" in name for name in found) and any("local" in name for name in found)
    return found


def test_tensor_core_kernel_issues_native_and_popc_bmma(sass):
    kernels = {name: body for name, body in sass.items() if "binary" in name and KERNEL in name}
    assert len(kernels) == 2  # float and double outputs
    for name, body in kernels.items():
        bmma = re.findall(r"\bBMMA\.[\w.]+", body)
        assert bmma == ["BMMA.168256.AND.POPC"] * TILES_PER_WARP, (name, bmma)
        assert "XOR" not in " ".join(bmma)


def test_popc_kernel_uses_popc_and_no_tensor_cores(sass):
    kernels = {name: body for name, body in sass.items() if "binary" in name and "xnor_popc_kernel" in name}
    assert len(kernels) == 2
    for body in kernels.values():
        assert "POPC" in body and "LOP3" in body
        assert "BMMA" not in body


def test_local_tiles_use_tf32_tensor_cores_where_asked(sass):
    """forward_tile_kernel<T, samples, tensor_cores>: the three float TF32 tiles issue
    HMMA.1684.F32.TF32 (two per 16×16×8 wmma: samples / 16 fragments × 4 k-steps per 32-tap chunk, at
    least), the FFMA tiles (float and double) none."""
    tiles = {name: body for name, body in sass.items() if "local" in name and "forward_tile_kernel" in name}
    tensor_core = {name: body for name, body in tiles.items() if re.search(r"kernelIfLi\d+ELb1E", name)}
    assert len(tensor_core) == 3 and len(tiles) == 8, sorted(tiles)
    for name, body in tiles.items():
        hmma = re.findall(r"\bHMMA\.[\w.]+", body)
        if name in tensor_core:
            samples = int(re.search(r"kernelIfLi(\d+)E", name).group(1))
            assert set(hmma) == {"HMMA.1684.F32.TF32"} and len(hmma) >= 2 * (samples // 16) * 4, (name, len(hmma))
        else:
            assert not hmma and "FFMA" in body.replace("DFMA", "FFMA"), name


def test_xnor_epilogues_round_each_step(sass):
    """count · scale (· K) (+ bias) as separate roundings, as on the CPU: no fused multiply-add."""
    kernels = {name: body for name, body in sass.items() if "binary" in name and "xnor_" in name}
    assert len(kernels) == 4
    for name, body in kernels.items():
        assert not re.search(r"\b[FD]FMA\b", body), name
