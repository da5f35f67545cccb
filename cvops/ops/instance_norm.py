"""Conditional instance normalisation (the `instance_norm` family).

Dumoulin et al.: one network renders S styles by keeping S sets of (γ, β); each sample picks its
set by index, or mixes them with weights (γ = style @ weight, β = style @ bias) — per sample, so
one batch can interpolate between styles. Statistics per (sample, channel) over H·W in float32
(float64 for float64 input), biased variance, eps inside the square root; ReLU can be fused.
"""

import torch
from torch import Tensor

from cvops.ops._registration import grads, opmath, register_fake
from cvops.ops._validate import check_activation, check_eps, check_tensor

__all__ = ["conditional_instance_norm"]


# ---------------------------------------------------------------------------- conditional_instance_norm


def conditional_instance_norm(
    x: Tensor, weight: Tensor, bias: Tensor, style: Tensor, *, eps=1e-5, activation=None
) -> Tensor:
    """x [B, C, H, W] (NCHW or channels_last; the output keeps the layout); weight, bias [S, C];
    style int64 [B] (each sample's style) or float [B, S] (each sample's mixing weights).
    activation: None or "relu". Differentiable in x, weight, bias and the mixing weights."""
    op = "conditional_instance_norm"
    for name, value in (("x", x), ("weight", weight), ("bias", bias), ("style", style)):
        check_tensor(op, name, value)
    activation = check_activation(op, activation)
    eps = check_eps(op, eps, x.dtype)
    out, _, _ = torch.ops.cvops._conditional_instance_norm(x, weight, bias, style, eps, activation)
    return out


def _output_like(x):
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.empty_like(x, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@register_fake("cvops::_conditional_instance_norm")
def _conditional_instance_norm_fake(x, weight, bias, style, eps, activation):
    torch._check(
        x.dim() == 4, lambda: f"cvops.conditional_instance_norm: x must have 4 dimensions [B, C, H, W], got {x.dim()}"
    )
    stats = x.new_empty(x.shape[:2], dtype=opmath(x.dtype))
    return _output_like(x), stats, torch.empty_like(stats)


@register_fake("cvops::_conditional_instance_norm_backward")
def _conditional_instance_norm_backward_fake(grad_out, x, out, weight, bias, style, mean, rstd, activation):
    grad_style = style.new_empty((0,), dtype=opmath(x.dtype)) if style.dtype == torch.long else torch.empty_like(style)
    return _output_like(x), torch.empty_like(weight), torch.empty_like(bias), grad_style


def _conditional_instance_norm_setup(ctx, inputs, output):
    x, weight, bias, style, _, ctx.activation = inputs
    out, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, out, weight, bias, style, mean, rstd)


def _conditional_instance_norm_backward(ctx, grad_out, _grad_mean, _grad_rstd):
    x, out, weight, bias, style, mean, rstd = ctx.saved_tensors
    grad_x, grad_weight, grad_bias, grad_style = torch.ops.cvops._conditional_instance_norm_backward(
        grad_out, x, out, weight, bias, style, mean, rstd, ctx.activation
    )
    # Style indices never need a gradient (grad_style is empty then): grads leaves them None.
    return grads(
        ctx, "cvops::_conditional_instance_norm", x=grad_x, weight=grad_weight, bias=grad_bias, style=grad_style
    )


torch.library.register_autograd(
    "cvops::_conditional_instance_norm",
    _conditional_instance_norm_backward,
    setup_context=_conditional_instance_norm_setup,
)
