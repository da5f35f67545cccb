"""Gram matrix and Gatys style loss (the `gram` family).

G = s·F·Fᵀ for features F = x.reshape(B, C, N), N = product of the spatial dims, computed from the
tiles on and above the diagonal only. The style loss Σ(G − S)² against one target Gram, one per
sample, or a bank of styles picked per sample by index never materialises the bank B times.
"""

import torch
from torch import Tensor

from cvops.ops._registration import check_features_fake, grads, opmath, register_fake
from cvops.ops._validate import REDUCTIONS, check_choice, check_gram_normalize, check_tensor

__all__ = ["gram_matrix", "style_loss"]


# ---------------------------------------------------------------------------- gram_matrix


def gram_matrix(x: Tensor, *, normalize="chw") -> Tensor:
    """Gram matrix of x [B, C, *spatial] → [B, C, C] = F·Fᵀ / n with F = x.reshape(B, C, -1).

    normalize: "none" (n = 1), "hw" (n = H·W), "chw" (n = C·H·W) or a positive number n.
    Float16/bfloat16 inputs are accumulated in float32.
    """
    check_tensor("gram_matrix", "x", x)
    mode, divisor = check_gram_normalize("gram_matrix", normalize)
    return torch.ops.cvops.gram_matrix(x, mode, divisor)


@register_fake("cvops::gram_matrix")
def _gram_matrix_fake(x, normalize, divisor):
    check_features_fake("gram_matrix", x, 3)
    return x.new_empty(x.shape[0], x.shape[1], x.shape[1])


@register_fake("cvops::_gram_matrix_backward")
def _gram_matrix_backward_fake(grad, x, normalize, divisor):
    check_features_fake("gram_matrix_backward", x, 3)
    return x.new_empty(x.shape)


def _gram_matrix_setup(ctx, inputs, output):
    x, ctx.normalize, ctx.divisor = inputs
    ctx.save_for_backward(x)


def _gram_matrix_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    grad_x = torch.ops.cvops._gram_matrix_backward(grad, x, ctx.normalize, ctx.divisor)
    return grads(ctx, "cvops::gram_matrix", x=grad_x)


torch.library.register_autograd("cvops::gram_matrix", _gram_matrix_backward, setup_context=_gram_matrix_setup)


# ---------------------------------------------------------------------------- style_loss


def style_loss(x: Tensor, target: Tensor, *, normalize="chw", target_index=None, reduction="mean") -> Tensor:
    """Squared error between gram_matrix(x) and target Grams.

    target: [C, C] (one style for every sample), [B, C, C] (one per sample), or a bank [S, C, C]
    with target_index int64 [B] picking each sample's style. reduction: "mean" (over B·C·C),
    "sum", or "none" (per sample, [B]). Differentiable in x and target.
    """
    op = "style_loss"
    check_tensor(op, "x", x)
    check_tensor(op, "target", target)
    check_tensor(op, "target_index", target_index, optional=True)
    mode, divisor = check_gram_normalize(op, normalize)
    check_choice(op, "reduction", reduction, REDUCTIONS)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or target.requires_grad)
    loss, _ = torch.ops.cvops._style_loss(x, target, target_index, mode, divisor, reduction, needs_grad)
    return loss


@register_fake("cvops::_style_loss")
def _style_loss_fake(x, target, target_index, normalize, divisor, reduction, keep_residual):
    check_features_fake("style_loss", x, 3)
    batch, channels = x.shape[0], x.shape[1]
    loss = x.new_empty((batch,) if reduction == "none" else ())
    residual_shape = (batch, channels, channels) if keep_residual else (0,)
    return loss, x.new_empty(residual_shape, dtype=opmath(x.dtype))


@register_fake("cvops::_style_loss_backward")
def _style_loss_backward_fake(grad_loss, x, residual, normalize, divisor, reduction):
    check_features_fake("style_loss_backward", x, 3)
    return x.new_empty(x.shape)


def _style_loss_setup(ctx, inputs, output):
    x, target, target_index, ctx.normalize, ctx.divisor, ctx.reduction, _ = inputs
    _, residual = output
    ctx.mark_non_differentiable(residual)  # a by-product kept for the backward, not a result
    ctx.save_for_backward(x, target, residual, target_index)


def _style_loss_backward(ctx, grad_loss, _grad_residual):
    x, target, residual, target_index = ctx.saved_tensors
    grad_x = grad_target = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.cvops._style_loss_backward(grad_loss, x, residual, ctx.normalize, ctx.divisor, ctx.reduction)
    if ctx.needs_input_grad[1]:
        grad_target = _style_target_grad(grad_loss, target, residual, target_index, ctx.reduction)
    return grads(ctx, "cvops::_style_loss", x=grad_x, target=grad_target)


def _style_target_grad(grad_loss, target, residual, target_index, reduction):
    """dL/dS = −2·w_b·(G_b − S_b) per sample, gathered back to the target's layout (C×C-sized work).
    The saved residual is the symmetric G − (S + Sᵀ)/2, so G − S adds back S's antisymmetric part."""
    batch, channels = residual.shape[0], residual.shape[1]
    weight = grad_loss.to(residual.dtype)
    if reduction == "mean":
        weight = weight / (batch * channels * channels)
    selected = target if target_index is None else target[target_index]
    difference = residual - 0.5 * (selected - selected.transpose(-1, -2)).to(residual.dtype)
    per_sample = difference * (-2.0 * weight.expand(batch)).view(batch, 1, 1)
    if target.dim() == 2:
        grad = per_sample.sum(0)
    elif target_index is None:
        grad = per_sample
    else:
        grad = per_sample.new_zeros(target.shape).index_add_(0, target_index, per_sample)
    return grad.to(target.dtype)


torch.library.register_autograd("cvops::_style_loss", _style_loss_backward, setup_context=_style_loss_setup)
