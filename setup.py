"""Build of the cvops._C extension: every CPU kernel always, every CUDA kernel when it can build.

    pip install --no-build-isolation -e .

Environment: FORCE_CUDA=1 builds CUDA even without a visible GPU, CVOPS_CPU_ONLY=1 skips it,
TORCH_CUDA_ARCH_LIST picks the GPU architectures (default 9.0 = H100 when no GPU is visible),
MAX_JOBS caps parallel compiler jobs, CUDA_HOME points at the toolkit (found by itself otherwise).
"""

import glob
import os
import shutil
import site
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "9.0"


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _find_cuda_home():
    """CUDA_HOME must be set before torch.utils.cpp_extension is imported: its own guess from
    `which nvcc` can land on /usr/local and then fails to link."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        path = os.environ.get(var)
        if path and os.path.exists(os.path.join(path, "bin", "nvcc")):
            return path
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return None


CUDA_HOME = _find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME

import torch  # noqa: E402  (after CUDA_HOME is fixed)
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _pip_cuda_include_dirs():
    """torch's CUDA headers include cusparse.h/cublas_v2.h, shipped by the pip wheels under
    site-packages/nvidia/cu*/include rather than in the toolkit on these machines."""
    roots = set(site.getsitepackages() + [site.getusersitepackages()])
    roots.add(os.path.dirname(os.path.dirname(torch.__file__)))
    found = []
    for root in sorted(roots):
        found += sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "include")))
    return found


def _build_config():
    if _flag("CVOPS_CPU_ONLY"):
        return False, "CVOPS_CPU_ONLY=1"
    if _flag("FORCE_CUDA"):
        if CUDA_HOME is None:
            sys.exit("cvops setup: FORCE_CUDA=1 but no nvcc was found (set CUDA_HOME)")
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, "torch is a CPU build"
    if CUDA_HOME is None:
        return False, "no nvcc found (set CUDA_HOME)"
    return True, f"torch CUDA {torch.version.cuda} and nvcc in {CUDA_HOME}"


def _arch_list(with_cuda):
    if not with_cuda:
        return ""
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        if torch.cuda.is_available():
            caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
            os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(f"{a}.{b}" for a, b in sorted(caps))
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
    return os.environ["TORCH_CUDA_ARCH_LIST"]


def _write_build_info(with_cuda, reason, archs):
    info = {
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "with_cuda": with_cuda,
        "cuda_reason": reason,
        "cuda_home": CUDA_HOME if with_cuda else None,
        "cuda_arch_list": archs,
        "python": sys.version.split()[0],
    }
    with open(os.path.join(ROOT, "cvops", "_build_info.py"), "w") as f:
        f.write("# Written by setup.py at build time; what the extension was built with.\n")
        f.write(f"BUILD_INFO = {info!r}\n")
    return info


def get_extensions():
    with_cuda, reason = _build_config()
    archs = _arch_list(with_cuda)
    info = _write_build_info(with_cuda, reason, archs)
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    # -fopenmp at compile time only: at::parallel_for is an inline OpenMP template (serial without
    # it); the GOMP symbols resolve through libtorch_cpu to torch's own libgomp, never a second one.
    # -fno-trapping-math -fno-math-errno, as PyTorch builds itself: nothing here relies on FP traps
    # or errno, and without them GCC will not if-convert (so not vectorise) loops with divisions.
    # -ffp-contract=off: no fused multiply-adds the source did not write, so every CPU level
    # (csrc/common/cpu_levels.h) computes the same bits.
    cxx_flags = ["-O3", "-fvisibility=hidden", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    kwargs = dict(name="cvops._C", include_dirs=include_dirs, py_limited_api=False)
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
        include_dirs += _pip_cuda_include_dirs()
        ext = CUDAExtension(
            sources=sources,
            define_macros=[("CVOPS_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]},
            **kwargs,
        )
    else:
        ext = CppExtension(sources=sources, extra_compile_args={"cxx": cxx_flags}, **kwargs)
    print(
        "cvops build: torch {torch_version} | CUDA {cuda} | archs {archs} | {jobs} jobs".format(
            torch_version=info["torch_version"],
            cuda=f"yes ({reason})" if with_cuda else f"no, CPU only ({reason})",
            archs=archs or "-",
            jobs=os.environ.get("MAX_JOBS", "default"),
        ),
        flush=True,
    )
    return [ext]


setup(
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
