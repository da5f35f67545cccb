"""Siamese cross-correlation (the `xcorr` family): the response map of a template over a search
region, as Siamese trackers compute it (SiamFC: "full", summed over channels; SiamRPN++:
"depthwise", per channel) — the result of the grouped-convolution trick, computed directly.

x [B, C, H, W] (search), z [B, C, h, w] or [1, C, h, w] (one template for every search image, e.g.
the scales of a frame) → [B, 1, H', W'] (full) or [B, C, H', W'] (depthwise), H' = H + 2·padding −
h + 1. scale and bias (tensors: one value, or one per channel in depthwise mode) are applied to the
response in the same op: out = scale·corr + bias (SiamFC's 0.001 adjustment, or learned).
Differentiable in x, z, scale and bias; float16/bfloat16 accumulate in float32 and return the
input dtype; results do not depend on the thread count (fixed-order sums, no float atomics).
"""

import torch
from torch import Tensor

from cvops.ops._registration import autocast_float32, grads, opmath, register_fake
from cvops.ops._validate import check_choice, check_int, check_tensor

__all__ = ["xcorr"]

MODES = ("full", "depthwise")


def xcorr(x: Tensor, z: Tensor, *, mode: str = "full", scale: Tensor = None, bias: Tensor = None, padding: int = 0):
    """The cross-correlation of each search image x[b] by its template z[b] (or the one template
    z[0]): mode "full" → [B, 1, H', W'], "depthwise" → [B, C, H', W']; then ·scale + bias."""
    op = "xcorr"
    check_choice(op, "mode", mode, MODES)
    check_int(op, "padding", padding, minimum=0)
    check_tensor(op, "x", x)
    check_tensor(op, "z", z)
    check_tensor(op, "scale", scale, optional=True)
    check_tensor(op, "bias", bias, optional=True)
    out, _ = torch.ops.cvops._xcorr(x, z, scale, bias, mode, padding)
    return out


def _output_size(x, z, padding):
    torch._check(x.dim() == 4 and z.dim() == 4, lambda: "cvops.xcorr: x and z must have 4 dimensions")
    return x.shape[2] + 2 * padding - z.shape[2] + 1, x.shape[3] + 2 * padding - z.shape[3] + 1


@register_fake("cvops::_xcorr")
def _xcorr_fake(x, z, scale, bias, mode, padding):
    out_h, out_w = _output_size(x, z, padding)
    channels = 1 if mode == "full" else x.shape[1]
    out = x.new_empty((x.shape[0], channels, out_h, out_w))
    corr = out.new_empty(out.shape if scale is not None else (0,), dtype=opmath(x.dtype))
    return out, corr


@register_fake("cvops::_xcorr_backward")
def _xcorr_backward_fake(grad, x, z, scale, bias, corr, mode, padding):
    def like(t):
        return x.new_empty((0,)) if t is None else torch.empty_like(t)

    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(z), like(scale), like(bias)


def _xcorr_setup(ctx, inputs, output):
    x, z, scale, bias, ctx.mode, ctx.padding = inputs
    ctx.save_for_backward(x, z, scale, bias, output[1])


def _xcorr_backward(ctx, grad, _grad_corr):
    x, z, scale, bias, corr = ctx.saved_tensors
    grad_x, grad_z, grad_scale, grad_bias = torch.ops.cvops._xcorr_backward(
        grad, x, z, scale, bias, corr, ctx.mode, ctx.padding
    )
    return grads(ctx, "cvops::_xcorr", x=grad_x, z=grad_z, scale=grad_scale, bias=grad_bias)


torch.library.register_autograd("cvops::_xcorr", _xcorr_backward, setup_context=_xcorr_setup)
autocast_float32("cvops::_xcorr")
