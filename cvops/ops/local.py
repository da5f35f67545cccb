"""Locally connected layers (the `local` family): convolution-shaped, with different weights at every
output location (DeepFace's L4–L6: eyes and mouths need different filters).

x [B, C, H, W], weight [oH, oW, O, C, kh, kw], bias [O, oH, oW] or None → [B, O, oH, oW]:
    out[b, o, i, j] = Σ_{c, u, v} weight[i, j, o, c, u, v] · x_padded[b, c, i·s + u·d, j·s + v·d] + bias[o, i, j]
with oH, oW from torch's convolution formula. The unfolded input (B·C·kh·kw·oH·oW values) is never
materialised: on the CPU chunks of locations gather their patches and run one GEMM per location
(at::bmm, MKL); on CUDA fused kernels gather the patches into shared memory. The backward reduces
each location's weight gradient over the batch once and sums the input gradient in a fixed order
(deterministic). float16/bfloat16 compute in float32 and return the input dtype; on CUDA, past 8 samples, their
products run on TF32 tensor cores (exact: their values are TF32 values), and so do float32's where
torch.backends.cuda.matmul.allow_tf32 is set (off by default: float32 stays float32).
"""

import torch
from torch import Tensor

from cvops.ops._registration import autocast_float32, grads, register_fake
from cvops.ops._validate import check_int_pair, check_tensor

__all__ = ["locally_connected2d"]


def locally_connected2d(x: Tensor, weight: Tensor, bias: Tensor = None, *, stride=1, padding=0, dilation=1) -> Tensor:
    """The locally connected layer: each output location (i, j) its own filter bank weight[i, j]
    [O, C, kh, kw] over its window of x."""
    op = "locally_connected2d"
    check_tensor(op, "x", x)
    check_tensor(op, "weight", weight)
    check_tensor(op, "bias", bias, optional=True)
    return torch.ops.cvops._locally_connected2d(
        x,
        weight,
        bias,
        list(check_int_pair(op, "stride", stride, 1)),
        list(check_int_pair(op, "padding", padding, 0)),
        list(check_int_pair(op, "dilation", dilation, 1)),
    )


@register_fake("cvops::_locally_connected2d")
def _locally_connected2d_fake(x, weight, bias, stride, padding, dilation):
    torch._check(weight.dim() == 6, lambda: "cvops.locally_connected2d: weight must be [oH, oW, O, C, kh, kw]")
    return x.new_empty((x.shape[0], weight.shape[2], weight.shape[0], weight.shape[1]))


@register_fake("cvops::_locally_connected2d_backward")
def _locally_connected2d_backward_fake(grad, x, weight, stride, padding, dilation):
    return x.new_empty(x.shape), weight.new_empty(weight.shape)


def _setup(ctx, inputs, output):
    x, weight, bias, ctx.stride, ctx.padding, ctx.dilation = inputs
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.save_for_backward(x, weight)


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        grad_x, grad_weight = torch.ops.cvops._locally_connected2d_backward(
            grad, x, weight, ctx.stride, ctx.padding, ctx.dilation
        )
    if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
        grad_bias = grad.sum(0, dtype=torch.float32 if grad.dtype != torch.float64 else None).to(ctx.bias_dtype)
    return grads(ctx, "cvops::_locally_connected2d", x=grad_x, weight=grad_weight, bias=grad_bias)


torch.library.register_autograd("cvops::_locally_connected2d", _backward, setup_context=_setup)
autocast_float32("cvops::_locally_connected2d")
