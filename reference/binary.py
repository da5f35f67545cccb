"""Reference binary (XNOR) layers: the float simulation every PyTorch XNOR-Net implementation runs,
F.conv2d / F.linear of ±1 tensors times the scale. The tests compare cvops.xnor_conv2d and
cvops.xnor_linear to these bit for bit; the benchmarks time them (and the simulated training layer
with its saved float activations) against the packed kernels."""

import torch
import torch.nn.functional as F


def opmath(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def sign(v):
    """+1 where v >= 0 (−0.0 included), −1 elsewhere (NaN included); torch.sign(0) would be 0."""
    return torch.where(v >= 0, 1.0, -1.0).to(v.dtype)


def input_sign(x, input_bounds=None):
    """sign(x), or with input_bounds [2, C] +1 where low[c] <= x <= high[c] and −1 elsewhere (NaN
    included): the sign of a BatchNorm folded into the packing."""
    if input_bounds is None:
        return sign(x)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    low, high = input_bounds[0].view(shape), input_bounds[1].view(shape)
    return torch.where((x >= low) & (x <= high), 1.0, -1.0).to(x.dtype)


def alpha(weight):
    """mean |w[o]| over (C, kh, kw), in opmath(weight.dtype)."""
    w = weight.to(opmath(weight.dtype))
    return w.abs().mean(dim=tuple(range(1, w.dim())))


def k_map(x, kernel_size, stride, padding, dilation):
    """XNOR-Net's K: the channel mean of |x|, zero-padded, summed over each window, / kh·kw."""
    kh, kw = kernel_size
    a = x.abs().mean(1, keepdim=True)
    ones = torch.ones((1, 1, kh, kw), dtype=x.dtype, device=x.device)
    return F.conv2d(a, ones, stride=stride, padding=padding, dilation=dilation) / (kh * kw)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def xnor_conv2d(
    x, weight, *, bias=None, stride=1, padding=0, dilation=1, pad_value=0.0, scaling="alpha", input_bounds=None
):
    """F.conv2d(sign(x) padded with pad_value, sign(weight), stride, dilation) · s[o] (+ bias)."""
    compute = opmath(x.dtype)
    x = x.to(compute)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    sx = input_sign(x, input_bounds)
    conv_padding = padding
    if pad_value != 0:
        sx = F.pad(sx, (padding[1], padding[1], padding[0], padding[0]), value=float(pad_value))
        conv_padding = (0, 0)
    out = F.conv2d(sx, sign(weight.to(compute)), stride=stride, padding=conv_padding, dilation=dilation)
    if scaling != "none":
        out = out * alpha(weight).to(compute).view(1, -1, 1, 1)
    if scaling == "alpha_k":
        out = out * k_map(x, weight.shape[2:], stride, padding, dilation)
    if bias is not None:
        out = out + bias.to(compute).view(1, -1, 1, 1)
    return out


def xnor_linear(x, weight, *, bias=None, scaling="alpha", input_bounds=None):
    """F.linear(sign(x), sign(weight)) · s[o] (· mean |x[b]| for "alpha_k") (+ bias)."""
    compute = opmath(x.dtype)
    x = x.to(compute)
    out = F.linear(input_sign(x, input_bounds), sign(weight.to(compute)))
    if scaling != "none":
        out = out * alpha(weight).to(compute)
    if scaling == "alpha_k":
        out = out * x.abs().mean(1, keepdim=True)
    if bias is not None:
        out = out + bias.to(compute)
    return out


class _STESign(torch.autograd.Function):
    """sign(v) forward; the gradient passes where |v| <= 1 (the simulated layers' estimator)."""

    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return sign(v)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * (v.abs() <= 1).to(grad.dtype)


def simulated_xnor_conv2d(x, weight, *, bias=None, stride=1, padding=0, dilation=1):
    """The training layer of the public XNOR-Net re-implementations: F.conv2d of the STE sign of x
    by alpha · STE sign of the weight, all in float (it saves x and sign(x) for the backward)."""
    w = _STESign.apply(weight) * alpha(weight).detach().view(-1, 1, 1, 1)
    return F.conv2d(_STESign.apply(x), w, bias, stride=stride, padding=padding, dilation=dilation)


def ste_grads(
    x, weight, grad, *, bias=None, stride=1, padding=0, dilation=1, pad_value=0.0, scaling="alpha", weight_grad="ste"
):
    """The straight-through gradients (dx, dW, dbias) of xnor_conv2d at grad, computed in float by
    autograd on the simulated graph: dx = ∂L/∂sign(x) · 1[|x| <= 1] (+ the K map's exact
    derivative), dW from dW̃ = ∂L/∂(s·sign(W)) by the rule weight_grad names: "ste" s·dW̃·1[|W| <= 1]
    (what simulated_xnor_conv2d's autograd gives), "xnor" dW̃·(1/n + alpha·1[|W| <= 1])."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    weight = weight.detach()
    x = x.detach().requires_grad_(scaling == "alpha_k")
    sx = sign(x.detach())
    sx_padded = F.pad(sx, (padding[1], padding[1], padding[0], padding[0]), value=float(pad_value)).requires_grad_()
    s = alpha(weight) if scaling != "none" else torch.ones(weight.shape[0], dtype=x.dtype)
    effective = (sign(weight.detach()) * s.view(-1, 1, 1, 1)).requires_grad_()
    out = F.conv2d(sx_padded, effective, stride=stride, dilation=dilation)
    if scaling == "alpha_k":
        out = out * k_map(x, weight.shape[2:], stride, padding, dilation)
    b = None if bias is None else bias.detach().requires_grad_()
    if b is not None:
        out = out + b.view(1, -1, 1, 1)
    out.backward(grad)
    H, W = x.shape[2:]
    grad_x = sx_padded.grad[:, :, padding[0] : padding[0] + H, padding[1] : padding[1] + W]
    grad_x = grad_x * (x.detach().abs() <= 1).to(x.dtype)
    if scaling == "alpha_k":
        grad_x = grad_x + x.grad
    inside = (weight.abs() <= 1).to(weight.dtype)
    if weight_grad == "xnor":
        n = weight[0].numel()
        grad_w = effective.grad * (1.0 / n + alpha(weight).view(-1, 1, 1, 1) * inside)
    else:
        grad_w = effective.grad * s.view(-1, 1, 1, 1) * inside
    return grad_x, grad_w, None if b is None else b.grad
