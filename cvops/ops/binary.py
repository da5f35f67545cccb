"""Binary (XNOR) convolution and fully connected layers over bit-packed ±1 tensors (the `binary`
family, XNOR-Net).

sign(v) = +1 where v >= 0 (−0.0 included), −1 elsewhere (NaN included). With alpha[o] = mean |w[o]|
over (C, kh, kw):

    xnor_conv2d(x, w) = F.conv2d(sign(x) padded with pad_value, sign(w), stride, dilation) · s[o] (+ bias)

s = 1 (scaling="none"), alpha ("alpha") or alpha · K ("alpha_k", XNOR-Net's K map: the channel mean
of |x|, zero-padded like x, summed over each kh × kw window at the output's stride and dilation and
divided by kh·kw). pad_value 0 is F.conv2d's zero padding; −1 and +1 are the exact binary paddings.

Bit layout (pack_bits): x [N, C, *spatial] → int64 words [N, *spatial, Cw], Cw = ceil(C / 64); bit
c % 64 of word c // 64 (bit 0 the least significant) is 1 where x[n, c, ...] >= 0; the tail bits of
the last word are 0; each pixel's words are contiguous (channels last). The dot product of two
packed pixels is C − 2·popcount(a ^ b), summed over their words and the kernel taps: the counts
are exact integers, and the epilogue multiplies count · alpha · K (+ bias) in that order, so
float32 and float64 outputs equal the float reference bit for bit. float16/bfloat16 inputs give
float32 outputs. The output [B, O, H', W'] is channels-last in memory (a pixel's filters are
computed together), as F.conv2d's is for channels-last input.

Training: the straight-through estimator. The input gradient passes where |x| <= 1; the weight
gradient, from dW̃ = ∂L/∂W̃ with W̃ = s · sign(W) the weight the convolution sees, is
    weight_grad="ste":  dW = ∂L/∂sign(W) · 1[|W| <= 1] = s · dW̃ · 1[|W| <= 1]   (s a constant: the
                        simulated layers' gradient, alpha.detach() · ste_sign(W))
    weight_grad="xnor": dW = dW̃ · (1/n + alpha · 1[|W| <= 1]),  n = C·kh·kw (Rastegari et al., eq. 3)
The public XNOR-Net-PyTorch code updates with the exact derivative through alpha instead of the
1/n term (α·1[|W| <= 1]·dW̃ + sign(W)·mean(sign(W)·dW̃)) and rescales it by n·(1 − 1/C). The K map
is differentiated exactly. The forward saves the packed sign bits and the bits of |x| <= 1 (C/4
bytes a pixel), not the float input.
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from cvops.ops._registration import grads, opmath, register_fake
from cvops.ops._validate import check_choice, check_int_pair, check_tensor

__all__ = [
    "PackedBinaryWeight",
    "pack_binary_weight",
    "pack_bits",
    "unpack_bits",
    "xnor_conv2d",
    "xnor_linear",
]

SCALINGS = ("none", "alpha", "alpha_k")
WEIGHT_GRADS = ("ste", "xnor")
PAD_VALUES = (0.0, -1.0, 1.0)


def _words(channels):
    return (channels + 63) // 64


def pack_bits(x: Tensor) -> Tensor:
    """x [N, C, *spatial] (floating) → its sign bits as int64 words [N, *spatial, ceil(C / 64)]
    (layout in the module docstring)."""
    check_tensor("pack_bits", "x", x)
    return torch.ops.cvops._pack_bits(x)


def unpack_bits(bits: Tensor, channels: int, dtype=torch.float32) -> Tensor:
    """The inverse of pack_bits: int64 words [N, *spatial, Cw] → ±1 values [N, channels, *spatial]
    of `dtype`."""
    op = "unpack_bits"
    check_tensor(op, "bits", bits)
    if bits.dtype != torch.int64 or bits.dim() < 2:
        raise ValueError(
            f"cvops.{op}: bits must be int64 words [N, *spatial, Cw], got {bits.dtype} {tuple(bits.shape)}"
        )
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 64 * bits.shape[-1]:
        raise ValueError(
            f"cvops.{op}: channels must be an int in [1, {64 * bits.shape[-1]}] for {bits.shape[-1]} words, got {channels!r}"
        )
    # The C++ loop unpacks [N, H, W, Cw]: any spatial rank goes through as [N, S, 1, Cw].
    spatial = tuple(bits.shape[1:-1])
    flat = bits.reshape(bits.shape[0], -1, 1, bits.shape[-1])
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    values = torch.ops.cvops._unpack_bits(flat, channels, compute, -1.0, [0, 0], 0.0)
    return values.reshape(bits.shape[0], channels, *spatial).to(dtype)


@dataclasses.dataclass
class PackedBinaryWeight:
    """A binary weight packed once for inference: bits int64 [O, kh, kw, Cw] (convolution) or
    [O, Cw] (linear), alpha [O] = mean |w[o]|, and the channel count C. About 32× smaller than the
    float weight. Registered with torch's pytree (and torch.export), so torch.compile and export
    see its tensors."""

    bits: Tensor
    alpha: Tensor
    channels: int

    @property
    def out_channels(self):
        return self.bits.shape[0]

    @property
    def kernel_size(self):
        return tuple(self.bits.shape[1:3]) if self.bits.dim() == 4 else (1, 1)

    def to(self, *args, **kwargs):
        return PackedBinaryWeight(self.bits.to(*args, **kwargs), self.alpha.to(*args, **kwargs), self.channels)

    def numel_bytes(self):
        """The bytes the packed weight occupies (bits and alpha)."""
        return self.bits.numel() * self.bits.element_size() + self.alpha.numel() * self.alpha.element_size()


torch.export.register_dataclass(PackedBinaryWeight, serialized_type_name="cvops.PackedBinaryWeight")


def _alpha(weight):
    """alpha[o] = mean |w[o]| over every dimension but the first, in opmath(weight.dtype); the
    forward casts it to x's compute dtype."""
    w = weight.to(opmath(weight.dtype))
    return w.abs().mean(dim=tuple(range(1, w.dim())))


def pack_binary_weight(weight: Tensor) -> PackedBinaryWeight:
    """weight [O, C, kh, kw] (convolution) or [O, C] (linear) → its PackedBinaryWeight."""
    op = "pack_binary_weight"
    check_tensor(op, "weight", weight)
    if weight.dim() not in (2, 4) or not weight.dtype.is_floating_point:
        raise ValueError(
            f"cvops.{op}: weight must be a floating-point [O, C, kh, kw] or [O, C] tensor, got {weight.dtype} {tuple(weight.shape)}"
        )
    with torch.no_grad():
        return PackedBinaryWeight(torch.ops.cvops._pack_bits(weight), _alpha(weight), weight.shape[1])


def _check_packed(op, packed, channels, dim):
    layout = "[O, kh, kw, Cw]" if dim == 4 else "[O, Cw]"
    bits, alpha = packed.bits, packed.alpha
    if not isinstance(bits, Tensor) or bits.dtype != torch.int64 or bits.dim() != dim:
        raise ValueError(f"cvops.{op}: weight.bits must be int64 words {layout} (cvops.pack_binary_weight)")
    if packed.channels != channels or bits.shape[-1] != _words(channels):
        raise ValueError(
            f"cvops.{op}: the packed weight holds {packed.channels} channels in {bits.shape[-1]} words, "
            f"x has {channels} (ceil(C / 64) = {_words(channels)} words)"
        )
    if not isinstance(alpha, Tensor) or alpha.shape != (bits.shape[0],) or not alpha.dtype.is_floating_point:
        raise ValueError(f"cvops.{op}: weight.alpha must be a floating-point [{bits.shape[0]}] tensor")


def _check_x(op, x, dim, layout):
    check_tensor(op, "x", x)
    if not x.dtype.is_floating_point:
        raise ValueError(f"cvops.{op}: x must be a floating-point tensor, got {x.dtype}")
    if x.dim() != dim:
        raise ValueError(f"cvops.{op}: x must be {layout}, got shape {tuple(x.shape)}")


def _check_pad_value(op, pad_value):
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)) or float(pad_value) not in PAD_VALUES:
        raise ValueError(f"cvops.{op}: pad_value must be 0, -1 or +1, got {pad_value!r}")
    return int(pad_value)


def _k_map(x, kernel_size, stride, padding, dilation):
    """XNOR-Net's K: the channel mean of |x|, zero-padded, summed over each window, / kh·kw."""
    kh, kw = kernel_size
    a = x.abs().mean(1, keepdim=True)
    ones = torch.ones((1, 1, kh, kw), dtype=x.dtype, device=x.device)
    return F.conv2d(a, ones, stride=stride, padding=padding, dilation=dilation) / (kh * kw)


def _forward(x, bias, weight_bits, alpha, geometry, pad_value, scaling, input_bounds=None):
    """The packed forward: (out, x's sign bits, scale, K map or None). _pack_bits reads half x
    itself: only the K map needs x in the compute dtype."""
    stride, padding, dilation = geometry
    compute = opmath(x.dtype)
    x_bits = torch.ops.cvops._pack_bits(x, None, input_bounds)
    scale = alpha.to(compute) if scaling != "none" else torch.ones_like(alpha, dtype=compute)
    kernel_size = tuple(weight_bits.shape[1:3])
    k = _k_map(x.to(compute), kernel_size, stride, padding, dilation) if scaling == "alpha_k" else None
    b = None if bias is None else bias.to(compute)
    out = torch.ops.cvops._xnor_conv2d(
        x_bits, weight_bits, scale, k, b, x.shape[1], list(stride), list(padding), list(dilation), pad_value
    )
    return out, x_bits, scale, k


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _apply(x, weight, bias, weight_bits, alpha, geometry, pad_value, scaling, weight_grad, input_bounds=None):
    if _needs_grad(x, weight, bias):  # never with input_bounds (_check_input_bounds)
        return _XNORConv2d.apply(x, weight, bias, weight_bits, alpha, geometry, pad_value, scaling, weight_grad)
    # inference: no autograd node
    return _forward(x, bias, weight_bits, alpha, geometry, pad_value, scaling, input_bounds)[0]


def _check_input_bounds(op, input_bounds, x, scaling, weight, bias):
    """input_bounds [2, C] (low, high) in x's compute dtype, on x's device: inference only, and not
    with the K map (which needs x's magnitude, not only its bits)."""
    check_tensor(op, "input_bounds", input_bounds, optional=True)
    if input_bounds is None:
        return
    C, compute = x.shape[1], opmath(x.dtype)
    if input_bounds.shape != (2, C) or input_bounds.dtype != compute:
        raise ValueError(
            f"cvops.{op}: input_bounds must be a {compute} [2, {C}] tensor (low and high per channel of x), "
            f"got {input_bounds.dtype} {tuple(input_bounds.shape)}"
        )
    _check_devices(op, x, input_bounds=input_bounds)
    if scaling == "alpha_k":
        raise ValueError(f"cvops.{op}: input_bounds cannot be used with scaling='alpha_k' (the K map needs |x|)")
    if _needs_grad(x, weight, bias, input_bounds):
        raise ValueError(
            f"cvops.{op}: input_bounds is for inference (a folded BatchNorm has no gradient): "
            "run under torch.no_grad() or without tensors that require grad"
        )


class _XNORConv2d(torch.autograd.Function):
    """The packed forward and the straight-through backward (module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, weight_bits, alpha, geometry, pad_value, scaling, weight_grad):
        out, x_bits, scale, k = _forward(x, bias, weight_bits, alpha, geometry, pad_value, scaling)
        if any(ctx.needs_input_grad[:3]):
            mask_bits = torch.ops.cvops._pack_bits(x, 1.0)
            ctx.save_for_backward(x_bits, mask_bits, weight, weight_bits, scale, k)
        ctx.shape, ctx.x_dtype = tuple(x.shape), x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.geometry, ctx.pad_value, ctx.scaling, ctx.weight_grad = geometry, pad_value, scaling, weight_grad
        return out

    @staticmethod
    def backward(ctx, grad):
        x_bits, mask_bits, weight, weight_bits, scale, k = ctx.saved_tensors
        stride, (ph, pw), dilation = ctx.geometry
        channels = ctx.shape[1]
        dtype = grad.dtype
        grad_x = grad_weight = grad_bias = None
        sign_x_padded = torch.ops.cvops._unpack_bits(x_bits, channels, dtype, -1.0, [ph, pw], float(ctx.pad_value))
        sign_x = sign_x_padded[:, :, ph : ph + ctx.shape[2], pw : pw + ctx.shape[3]]
        sign_w = torch.ops.cvops._unpack_bits(weight_bits, channels, dtype, -1.0, [0, 0], 0.0)
        grad_k = grad if k is None else grad * k  # ∂L/∂(conv(sx, W̃))
        if ctx.needs_input_grad[0]:
            effective = sign_w * scale.view(-1, 1, 1, 1)
            grad_sx = torch.nn.grad.conv2d_input(
                sign_x_padded.shape, effective, grad_k, stride=stride, padding=0, dilation=dilation
            )
            grad_sx = grad_sx[:, :, ph : ph + ctx.shape[2], pw : pw + ctx.shape[3]]
            grad_x = grad_sx * torch.ops.cvops._unpack_bits(mask_bits, channels, dtype, 0.0, [0, 0], 0.0)
            if k is not None:
                # The K map's exact derivative: d mean_c |x| / dx = sign(x) / C.
                count = torch.ops.cvops._xnor_conv2d(
                    x_bits,
                    weight_bits,
                    torch.ones_like(scale),
                    None,
                    None,
                    channels,
                    list(stride),
                    [ph, pw],
                    list(dilation),
                    ctx.pad_value,
                )
                grad_kmap = (grad * count * scale.view(1, -1, 1, 1)).sum(1, keepdim=True)
                kh, kw = sign_w.shape[2:]
                box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=dtype, device=grad.device)
                grad_a = torch.nn.grad.conv2d_input(
                    (ctx.shape[0], 1, ctx.shape[2], ctx.shape[3]),
                    box,
                    grad_kmap,
                    stride=stride,
                    padding=(ph, pw),
                    dilation=dilation,
                )
                grad_x = grad_x + grad_a * sign_x / channels
            grad_x = grad_x.to(ctx.x_dtype)
        if ctx.needs_input_grad[1] and weight is not None:
            grad_effective = torch.nn.grad.conv2d_weight(
                sign_x_padded, sign_w.shape, grad_k, stride=stride, padding=0, dilation=dilation
            )
            w = weight.to(dtype)
            inside = (w.abs() <= 1).to(dtype)
            if ctx.weight_grad == "xnor":
                alpha = _alpha(weight).to(dtype).view(-1, 1, 1, 1)
                grad_weight = grad_effective * (1.0 / w[0].numel() + alpha * inside)
            else:
                grad_weight = grad_effective * scale.view(-1, 1, 1, 1) * inside
            grad_weight = grad_weight.to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3)).to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


def _resolve_weight(op, weight, channels, dim):
    """(latent float weight or None, PackedBinaryWeight) from a float weight or a packed one."""
    if isinstance(weight, PackedBinaryWeight):
        _check_packed(op, weight, channels, dim)
        return None, weight
    check_tensor(op, "weight", weight)
    layout = "[O, C, kh, kw]" if dim == 4 else "[O, C]"
    if weight.dim() != dim or not weight.dtype.is_floating_point:
        raise ValueError(
            f"cvops.{op}: weight must be a floating-point {layout} tensor or a cvops.PackedBinaryWeight, "
            f"got {weight.dtype} {tuple(weight.shape)}"
        )
    if weight.shape[1] != channels:
        raise ValueError(
            f"cvops.{op}: weight must have x's {channels} channels in dim 1 {layout}, got shape {tuple(weight.shape)}"
        )
    return weight, pack_binary_weight(weight)


def _check_devices(op, x, **tensors):
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"cvops.{op}: {name} must be on the same device as x ({x.device}), got {t.device}")


def _check_bias(op, bias, out_channels):
    check_tensor(op, "bias", bias, optional=True)
    if bias is not None and (bias.shape != (out_channels,) or not bias.dtype.is_floating_point):
        raise ValueError(
            f"cvops.{op}: bias must be a floating-point [{out_channels}] tensor, got {bias.dtype} {tuple(bias.shape)}"
        )


def xnor_conv2d(
    x: Tensor,
    weight,
    *,
    bias: Tensor = None,
    stride=1,
    padding=0,
    dilation=1,
    pad_value=0.0,
    scaling="alpha",
    weight_grad="ste",
    input_bounds: Tensor = None,
) -> Tensor:
    """The XNOR convolution of x [B, C, H, W] by weight [O, C, kh, kw] (packed on the fly) or a
    PackedBinaryWeight → [B, O, H', W'] (module docstring). input_bounds [2, C] replaces sign(x)
    by +1 where low[c] <= x <= high[c], −1 elsewhere (NaN included): the sign of a BatchNorm folded
    into the packing (cvops.nn.batchnorm_sign_bounds); inference only."""
    op = "xnor_conv2d"
    _check_x(op, x, 4, "[B, C, H, W]")
    latent, packed = _resolve_weight(op, weight, x.shape[1], 4)
    _check_bias(op, bias, packed.out_channels)
    _check_devices(op, x, weight=packed.bits, bias=bias)
    geometry = (
        check_int_pair(op, "stride", stride, 1),
        check_int_pair(op, "padding", padding, 0),
        check_int_pair(op, "dilation", dilation, 1),
    )
    pad = _check_pad_value(op, pad_value)
    check_choice(op, "scaling", scaling, SCALINGS)
    check_choice(op, "weight_grad", weight_grad, WEIGHT_GRADS)
    _check_input_bounds(op, input_bounds, x, scaling, latent, bias)
    return _apply(x, latent, bias, packed.bits, packed.alpha, geometry, pad, scaling, weight_grad, input_bounds)


def xnor_linear(
    x: Tensor, weight, *, bias: Tensor = None, scaling="alpha", weight_grad="ste", input_bounds: Tensor = None
) -> Tensor:
    """The XNOR fully connected layer: x [B, C] by weight [O, C] or a PackedBinaryWeight → [B, O];
    scaling "alpha_k" multiplies by K[b] = mean |x[b]|; input_bounds as in xnor_conv2d."""
    op = "xnor_linear"
    _check_x(op, x, 2, "[B, C]")
    latent, packed = _resolve_weight(op, weight, x.shape[1], 2)
    _check_bias(op, bias, packed.out_channels)
    _check_devices(op, x, weight=packed.bits, bias=bias)
    check_choice(op, "scaling", scaling, SCALINGS)
    check_choice(op, "weight_grad", weight_grad, WEIGHT_GRADS)
    _check_input_bounds(op, input_bounds, x, scaling, latent, bias)
    conv_latent = None if latent is None else latent[:, :, None, None]
    one = ((1, 1), (0, 0), (1, 1))
    args = (packed.bits[:, None, None, :], packed.alpha, one, 0, scaling)
    if input_bounds is not None:
        return _forward(x[:, :, None, None], bias, *args, input_bounds)[0][:, :, 0, 0]
    return _XNORConv2d.apply(x[:, :, None, None], conv_latent, bias, *args, weight_grad)[:, :, 0, 0]


@register_fake("cvops::_pack_bits")
def _pack_bits_fake(x, clip=None, bounds=None):
    torch._check(x.dim() >= 2, lambda: "cvops.pack_bits: x must have at least 2 dimensions [N, C, *spatial]")
    return x.new_empty((x.shape[0], *x.shape[2:], _words(x.shape[1])), dtype=torch.int64)


@register_fake("cvops::_unpack_bits")
def _unpack_bits_fake(bits, channels, dtype, low, padding, pad_value):
    torch._check(bits.dim() == 4, lambda: "cvops.unpack_bits: bits must have 4 dimensions [N, H, W, Cw]")
    N, H, W = bits.shape[:3]
    return bits.new_empty((N, channels, H + 2 * padding[0], W + 2 * padding[1]), dtype=dtype)


@register_fake("cvops::_xnor_conv2d")
def _xnor_conv2d_fake(x_bits, weight_bits, scale, k_map, bias, channels, stride, padding, dilation, pad_value):
    B, H, W = x_bits.shape[:3]
    out_channels, kh, kw = weight_bits.shape[:3]
    out_h = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    shape = (B, out_channels, out_h, out_w)
    return torch.empty(shape, dtype=scale.dtype, device=scale.device, memory_format=torch.channels_last)


def _setup(ctx, inputs, output):
    x_bits, weight_bits, scale, k_map, bias, channels, stride, padding, dilation, pad_value = inputs
    ctx.args = (channels, stride, padding, dilation, pad_value)
    ctx.has_k, ctx.has_bias = k_map is not None, bias is not None
    ctx.save_for_backward(x_bits, weight_bits, scale, k_map)


def _backward(ctx, grad):
    """The epilogue's gradients (scale, k_map, bias); the bits are not differentiable."""
    x_bits, weight_bits, scale, k_map = ctx.saved_tensors
    grad_scale = grad_k = grad_bias = None
    if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
        count = torch.ops.cvops._xnor_conv2d(x_bits, weight_bits, torch.ones_like(scale), None, None, *ctx.args)
        if ctx.needs_input_grad[2]:
            grad_scale = (grad * count * (1 if k_map is None else k_map)).sum((0, 2, 3))
        if ctx.has_k and ctx.needs_input_grad[3]:
            grad_k = (grad * count * scale.view(1, -1, 1, 1)).sum(1, keepdim=True)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        grad_bias = grad.sum((0, 2, 3))
    return grads(ctx, "cvops::_xnor_conv2d", scale=grad_scale, k_map=grad_k, bias=grad_bias)


torch.library.register_autograd("cvops::_xnor_conv2d", _backward, setup_context=_setup)
