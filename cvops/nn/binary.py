"""XNORConv2d and XNORLinear: binary layers trained with latent float weights and the straight-through
estimator (cvops.ops.binary), run by the bit-packed kernels.

In training mode (and in compiled graphs) each forward packs the latent weight. In eval mode the packed
weight is kept as the buffers `packed_bits` and `packed_alpha` and reused, repacked whenever the
latent weight has changed since (its version counter), so an optimizer step or a load_state_dict
never leaves stale bits. `pack(keep_latent=False)` drops the latent weight: the module then holds
only the packed form (about 32× smaller), which round-trips through state_dict.

For inference a BatchNorm whose output only feeds a binary layer can be folded into the layer's
packing (`fold_batchnorm(bn)`, or cvops.models.xnor_net.pack_model(..., fold_batchnorm=True)):
sign(BN(x)) is monotone in x per channel, so it is the interval test low[c] <= x <= high[c]. The
bounds are found by bisecting over the floats with torch's own eval-mode BatchNorm and then checked
against it (the bounds' neighbours, ±0, ±inf, NaN, the extremes and random values, in the
contiguous, channels-last and strided layouts), so the folded layer packs exactly the bits the
BatchNorm and the sign would have; a BatchNorm that fails the check is not folded. The layer keeps
the bounds as its buffer `input_bounds` (in its state_dict) and is then inference-only.
"""

import math

import torch
from torch import Tensor, nn

from cvops.ops._validate import check_bool, check_choice, check_int, check_int_pair, check_module_input
from cvops.ops.binary import (
    SCALINGS,
    WEIGHT_GRADS,
    PackedBinaryWeight,
    _check_pad_value,
    pack_binary_weight,
    xnor_conv2d,
    xnor_linear,
)

__all__ = ["XNORConv2d", "XNORLinear", "batchnorm_sign_bounds"]

_PACKED = ("packed_bits", "packed_alpha")


class _PackedWeightMixin:
    """The packed-weight cache shared by XNORConv2d and XNORLinear."""

    def _init_packing(self):
        for name in (*_PACKED, "input_bounds"):
            self.register_buffer(name, None)
        self._packed_version = None

    def fold_batchnorm(self, bn):
        """Fold an eval-mode BatchNorm whose output feeds only this layer into its packing (module
        docstring): True when folded (the caller then drops the BatchNorm), False when its sign is
        not an exact interval test (nothing changes)."""
        owner = type(self).__name__
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.num_features != self.in_features_or_channels:
            raise ValueError(
                f"cvops.{owner}.fold_batchnorm: bn must be a BatchNorm of {self.in_features_or_channels} features, got {bn!r}"
            )
        if self.scaling == "alpha_k":
            raise ValueError(f"cvops.{owner}.fold_batchnorm: scaling='alpha_k' needs |BN(x)|, not only its sign")
        bounds = batchnorm_sign_bounds(bn)
        if bounds is None:
            return False
        self.input_bounds = bounds
        return True

    def _bounds_for_forward(self):
        if self.input_bounds is not None and self.training:
            raise RuntimeError(
                f"cvops.{type(self).__name__}: a BatchNorm is folded into this layer (input_bounds), "
                "which is inference-only: call eval()"
            )
        return self.input_bounds

    def _weight_version(self):
        return (self.weight._version, self.weight.data_ptr(), self.weight.device, self.weight.dtype)

    def pack(self, keep_latent=True):
        """Pack the latent weight now for inference; keep_latent=False then deletes it (the module
        can no longer train its weight). Returns self."""
        check_bool(type(self).__name__, "keep_latent", keep_latent)
        if self.weight is not None:
            packed = pack_binary_weight(self.weight.detach())
            self.packed_bits, self.packed_alpha = packed.bits, packed.alpha
            self._packed_version = self._weight_version()
            if not keep_latent:
                self.weight = None
        return self

    def packed_weight(self):
        """The current PackedBinaryWeight (packing, or repacking a changed latent weight, first)."""
        if self.weight is not None and (self.packed_bits is None or self._packed_version != self._weight_version()):
            self.pack()
        return PackedBinaryWeight(self.packed_bits, self.packed_alpha, self.in_features_or_channels)

    def _weight_for_forward(self):
        if self.weight is None:
            if self.packed_bits is None:
                raise RuntimeError(f"cvops.{type(self).__name__}: neither a latent nor a packed weight is set")
            return self.packed_weight()
        if self.training or torch.compiler.is_compiling():
            # A compiled graph cannot check the version counter: it packs the latent weight itself.
            return self.weight
        return self.packed_weight()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # The state decides the form: packed buffers (their shapes from the state) and/or a latent
        # weight. A latent-only state clears a cached packing; a packed-only one drops the latent.
        has_weight, has_packed = prefix + "weight" in state_dict, prefix + "packed_bits" in state_dict
        held = self.weight if self.weight is not None else self.packed_alpha
        device = held.device if held is not None else None
        for name in (*_PACKED, "input_bounds"):
            key = prefix + name
            setattr(self, name, torch.empty_like(state_dict[key], device=device) if key in state_dict else None)
        if has_weight and self.weight is None:
            self.weight = nn.Parameter(torch.empty_like(state_dict[prefix + "weight"], device=device))
        elif has_packed and not has_weight:
            self.weight = None
        self._packed_version = None
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if self.weight is not None and self.packed_bits is not None:
            # Loaded latent and packed weights agree as saved; record the version they belong to.
            self._packed_version = self._weight_version()


def _check_modes(owner, scaling, weight_grad):
    check_choice(owner, "scaling", scaling, SCALINGS)
    check_choice(owner, "weight_grad", weight_grad, WEIGHT_GRADS)


class XNORConv2d(_PackedWeightMixin, nn.Module):
    """A binary convolution: y = xnor_conv2d(x, weight, ...) with a latent float weight
    [out_channels, in_channels, kh, kw] trained by the straight-through estimator."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=False,
        *,
        pad_value=0.0,
        scaling="alpha",
        weight_grad="ste",
        device=None,
        dtype=None,
    ):
        super().__init__()
        owner = "XNORConv2d"
        self.in_channels = check_int(owner, "in_channels", in_channels)
        self.out_channels = check_int(owner, "out_channels", out_channels)
        self.kernel_size = check_int_pair(owner, "kernel_size", kernel_size, 1)
        self.stride = check_int_pair(owner, "stride", stride, 1)
        self.padding = check_int_pair(owner, "padding", padding, 0)
        self.dilation = check_int_pair(owner, "dilation", dilation, 1)
        _check_pad_value(owner, pad_value)
        _check_modes(owner, scaling, weight_grad)
        self.pad_value, self.scaling, self.weight_grad = float(pad_value), scaling, weight_grad
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((out_channels, in_channels, *self.kernel_size), **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if check_bool(owner, "bias", bias) else None
        self._init_packing()
        self.reset_parameters()

    @property
    def in_features_or_channels(self):
        return self.in_channels

    def reset_parameters(self):
        # Latent weights inside the STE's clip [-1, 1], so every weight starts with a gradient.
        nn.init.uniform_(self.weight, -1.0, 1.0)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_module_input("XNORConv2d", "x", x, self.packed_alpha if self.weight is None else self.weight)
        return xnor_conv2d(
            x,
            self._weight_for_forward(),
            bias=self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            pad_value=self.pad_value,
            scaling=self.scaling,
            weight_grad=self.weight_grad,
            input_bounds=self._bounds_for_forward(),
        )

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
            f"pad_value={self.pad_value}, scaling={self.scaling!r}, weight_grad={self.weight_grad!r}"
        )


class XNORLinear(_PackedWeightMixin, nn.Module):
    """A binary fully connected layer: y = xnor_linear(x, weight, ...) with a latent float weight
    [out_features, in_features] trained by the straight-through estimator."""

    def __init__(
        self, in_features, out_features, bias=True, *, scaling="alpha", weight_grad="ste", device=None, dtype=None
    ):
        super().__init__()
        owner = "XNORLinear"
        self.in_features = check_int(owner, "in_features", in_features)
        self.out_features = check_int(owner, "out_features", out_features)
        _check_modes(owner, scaling, weight_grad)
        self.scaling, self.weight_grad = scaling, weight_grad
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if check_bool(owner, "bias", bias) else None
        self._init_packing()
        self.reset_parameters()

    @property
    def in_features_or_channels(self):
        return self.in_features

    def reset_parameters(self):
        nn.init.uniform_(self.weight, -1.0, 1.0)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1.0 / math.sqrt(self.in_features), 1.0 / math.sqrt(self.in_features))

    def forward(self, x: Tensor) -> Tensor:
        check_module_input("XNORLinear", "x", x, self.packed_alpha if self.weight is None else self.weight)
        return xnor_linear(
            x,
            self._weight_for_forward(),
            bias=self.bias,
            scaling=self.scaling,
            weight_grad=self.weight_grad,
            input_bounds=self._bounds_for_forward(),
        )

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"scaling={self.scaling!r}, weight_grad={self.weight_grad!r}"
        )


def _bit_format(dtype):
    """The integer type of a float's bits, and the mask of its magnitude bits."""
    return (torch.int32 if dtype == torch.float32 else torch.int64), (1 << (8 * dtype.itemsize - 1)) - 1


def _ordered(values):
    """Float bits → integers in the floats' order (−0.0 just below +0.0), and back: flip the
    magnitude bits of the negatives (an involution)."""
    bits, magnitude = _bit_format(values.dtype)
    i = values.view(bits).to(torch.int64)
    return torch.where(i < 0, i ^ magnitude, i)


def _from_ordered(keys, dtype):
    bits, magnitude = _bit_format(dtype)
    return torch.where(keys < 0, keys ^ magnitude, keys).to(bits).view(dtype)


def _batchnorm_sign(bn, t):
    """Eval-mode bn(t) >= 0 (F.batch_norm, the kernels BatchNorm modules run)."""
    return (
        torch.nn.functional.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps) >= 0
    )


def _batchnorm_bits(bn, values):
    """values [V, C] → [layouts, V, C]: BN(values) >= 0 as a 2-D batch, an NCHW plane per channel,
    channels-last pixels and a strided view."""
    V, C = values.shape
    planes = values.t().reshape(1, C, V, 1).contiguous()
    pixels = values[:, :, None, None].expand(V, C, 1, 2).contiguous(memory_format=torch.channels_last)
    strided = values.t()[None, :, :, None].expand(1, C, V, 2)[..., :1]
    return torch.stack(
        [
            _batchnorm_sign(bn, values),
            _batchnorm_sign(bn, planes)[0, :, :, 0].t(),
            _batchnorm_sign(bn, pixels)[:, :, 0, 1],
            _batchnorm_sign(bn, strided)[0, :, :, 0].t(),
        ]
    )


@torch.no_grad()
def batchnorm_sign_bounds(bn) -> "Tensor | None":
    """bounds [2, C] (low, high) with low[c] <= x <= high[c] exactly where eval-mode bn(x)[c] >= 0 (NaN
    excluded), for every float x; None when no such interval reproduces bn (checked, module
    docstring) or bn has no running statistics."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"cvops.batchnorm_sign_bounds: bn must be a torch BatchNorm module, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_mean.dtype not in (torch.float32, torch.float64):
        return None
    dtype = bn.running_mean.dtype
    info = torch.finfo(dtype)

    def full(value):
        return torch.full_like(bn.running_mean, value)

    # Bisected through the 2-D batch; _reproduces checks the other layouts.
    ends = _batchnorm_sign(bn, torch.stack([full(-info.max), full(info.max), full(-math.inf), full(math.inf)]))
    at_min, at_max, at_minus_inf, at_inf = ends
    # Bisect each channel whose sign changes between the extremes: low keeps at_min's bit.
    low, high = _ordered(full(-info.max)), _ordered(full(info.max))
    changing = at_min != at_max
    for _ in range(8 * info.bits):
        if not bool((changing & (high > low + 1)).any()):  # (high - low overflows for float64)
            break
        middle = (low >> 1) + (high >> 1) + (low & high & 1)
        same = _batchnorm_sign(bn, _from_ordered(middle, dtype)[None])[0] == at_min
        low, high = torch.where(same, middle, low), torch.where(same, high, middle)
    first_one, last_one = _from_ordered(high, dtype), _from_ordered(low, dtype)
    below = torch.where(at_minus_inf, full(-math.inf), full(-info.max))
    above = torch.where(at_inf, full(math.inf), full(info.max))
    increasing, decreasing = ~at_min & at_max, at_min & ~at_max
    lower = torch.where(increasing, first_one, torch.where(at_min, below, full(math.inf)))
    upper = torch.where(decreasing, last_one, torch.where(at_max, above, full(-math.inf)))
    bounds = torch.stack([lower, upper])
    return bounds if _reproduces(bn, bounds) else None


def _reproduces(bn, bounds):
    """Whether the interval test gives every layout's BatchNorm sign on the probes: each bound and
    its neighbouring floats, ±0, ±inf, NaN, the extremes, the smallest normals and random values at
    three scales around the running mean."""
    lower, upper = bounds
    dtype, C = bounds.dtype, bounds.shape[1]
    info = torch.finfo(dtype)

    def full(value):
        return torch.full_like(lower, value)

    def neighbours(v):
        up, down = _from_ordered(_ordered(v) + 1, dtype), _from_ordered(_ordered(v) - 1, dtype)
        return [v, up, down]

    specials = [full(v) for v in (0.0, -0.0, math.inf, -math.inf, math.nan, info.max, -info.max, info.tiny, -info.tiny)]
    generator = torch.Generator().manual_seed(0)
    scale = torch.sqrt(bn.running_var.abs() + bn.eps)
    random = [
        (torch.randn(C, generator=generator, dtype=dtype).to(lower.device) * s * scale + bn.running_mean)
        for s in (1e-3, 1.0, 1e3)
        for _ in range(10)
    ]
    finite = [bound.nan_to_num(0.0, 0.0, 0.0) for bound in bounds]  # an infinite bound probes 0 instead
    probes = torch.stack(neighbours(finite[0]) + neighbours(finite[1]) + specials + random)
    expected = (probes >= lower) & (probes <= upper)
    return bool((_batchnorm_bits(bn, probes) == expected).all())
