"""The one table of CUDA tolerances: relative tolerance per dtype of a CUDA result against its float64
reference. Each entry is the tightest bound the kernels meet (float32 tiles accumulate in another
order than the reference; float16/bfloat16 round the result once). A test that needs a looser bound
passes it to cuda_rtol by dtype name, with the reason beside the call."""

import torch

CUDA_RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def cuda_rtol(dtype, **looser):
    """CUDA_RTOL[dtype], or looser[name] where a value is given for the dtype's name
    (float32=..., float16=..., bfloat16=...); an override must not be tighter than the table."""
    name = str(dtype).removeprefix("torch.")
    unknown = set(looser) - {str(d).removeprefix("torch.") for d in CUDA_RTOL}
    assert not unknown, f"no CUDA tolerance for {sorted(unknown)}"
    rtol = looser.get(name, CUDA_RTOL[dtype])
    assert rtol >= CUDA_RTOL[dtype], f"{name}: override {rtol} is tighter than the table's {CUDA_RTOL[dtype]}"
    return rtol
