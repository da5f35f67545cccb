"""XNORConv2d and XNORLinear: binary layers trained with latent float weights and the straight-through
estimator (cvops.ops.binary), run by the bit-packed kernels.

In training mode (and in compiled graphs) each forward packs the latent weight. In eval mode the packed
weight is kept as the buffers `packed_bits` and `packed_alpha` and reused, repacked whenever the
latent weight has changed since (its version counter), so an optimizer step or a load_state_dict
never leaves stale bits. `pack(keep_latent=False)` drops the latent weight: the module then holds
only the packed form (about 32× smaller), which round-trips through state_dict.
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

__all__ = ["XNORConv2d", "XNORLinear"]

_PACKED = ("packed_bits", "packed_alpha")


class _PackedWeightMixin:
    """The packed-weight cache shared by XNORConv2d and XNORLinear."""

    def _init_packing(self):
        for name in _PACKED:
            self.register_buffer(name, None)
        self._packed_version = None

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
        for name in _PACKED:
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
            x, self._weight_for_forward(), bias=self.bias, scaling=self.scaling, weight_grad=self.weight_grad
        )

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"scaling={self.scaling!r}, weight_grad={self.weight_grad!r}"
        )
