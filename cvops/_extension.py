"""Loading of the compiled extension cvops._C, with an error that says how to fix a failure."""

import importlib

import torch


def build_info():
    """What the extension was built with (written by setup.py), or None before the first build."""
    try:
        return importlib.import_module("cvops._build_info").BUILD_INFO
    except ImportError:
        return None


def _describe_build(info):
    if info is None:
        return "no build record (cvops/_build_info.py is missing: the extension was never built here)"
    cuda = (
        f"CUDA {info['torch_cuda_version']} kernels for archs {info['cuda_arch_list']}"
        if info["with_cuda"]
        else "CPU only"
    )
    return f"torch {info['torch_version']}, {cuda}"


def load():
    """Import cvops._C, which registers every torch.ops.cvops kernel as a side effect."""
    try:
        return importlib.import_module("cvops._C")
    except ImportError as error:
        running = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (CPU build)'}"
        raise ImportError(
            "cvops: the compiled extension cvops._C failed to load.\n"
            f"  built with: {_describe_build(build_info())}\n"
            f"  running:    {running}\n"
            f"  cause:      {error}\n"
            "Rebuild against the torch you run: pip install --no-build-isolation -e ."
        ) from error
