"""LocallyConnected2d: a convolution whose filters are not shared across output locations (DeepFace's
L4–L6, Taigman et al. 2014) over cvops.locally_connected2d, and converters from and to the two weight
layouts such layers are usually found in:

- Keras LocallyConnected2D (tf.keras / tf_keras 2.x, implementation=1, padding "valid"): kernel
  [oH·oW, kh·kw·C, O], row i·oW + j for location (i, j), each row the patch flattened row-major over
  (u, v, c) with data_format "channels_last" (x_nhwc[b, i·s + u, j·s + v, c]) or over (c, u, v) with
  "channels_first"; bias [oH, oW, O] ("channels_last") or [O, oH, oW] ("channels_first").
- unfold + einsum re-implementations: weight [oH·oW, O, C·kh·kw] with F.unfold's patch order
  (column c·kh·kw + u·kw + v), used as einsum("bkl,lok->bol", F.unfold(x, ...), weight); bias
  [O, oH·oW] (added to that [B, O, oH·oW] result) or [O, oH, oW].

cvops' own layout is weight [oH, oW, O, C, kh, kw] (each location an nn.Conv2d weight) and bias
[O, oH, oW]. The converters return new tensors (never views of their inputs) and accept NumPy
arrays, as Keras's get_weights() gives.
"""

import math

import torch
from torch import Tensor, nn

from cvops.ops._validate import (
    check_bool,
    check_choice,
    check_int,
    check_int_pair,
    check_module_input,
    check_output_size,
)
from cvops.ops.local import locally_connected2d

__all__ = [
    "LocallyConnected2d",
    "from_keras_kernel",
    "from_unfold_weight",
    "output_size",
    "to_keras_kernel",
    "to_unfold_weight",
]

KERAS_FORMATS = ("channels_last", "channels_first")
OWNER = "LocallyConnected2d"


def _output_size(owner, input_size, kernel_size, stride, padding, dilation):
    """torch's convolution output size, refusing a kernel that does not fit the padded input."""
    padded = [n + 2 * p for n, p in zip(input_size, padding)]
    span = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation)]
    if any(s > n for s, n in zip(span, padded)):
        raise ValueError(
            f"cvops.{owner}: kernel_size ({kernel_size[0]} x {kernel_size[1]}, spanning {span[0]} x {span[1]} "
            f"with dilation {dilation}) is larger than the padded input_size ({padded[0]} x {padded[1]})"
        )
    return tuple((n - s) // st + 1 for n, s, st in zip(padded, span, stride))


def output_size(input_size, kernel_size, stride=1, padding=0, dilation=1):
    """(oH, oW) of a locally connected layer (torch's convolution formula); each argument an int or (h, w)."""
    owner = OWNER
    return _output_size(
        owner,
        check_int_pair(owner, "input_size", input_size, 1),
        check_int_pair(owner, "kernel_size", kernel_size, 1),
        check_int_pair(owner, "stride", stride, 1),
        check_int_pair(owner, "padding", padding, 0),
        check_int_pair(owner, "dilation", dilation, 1),
    )


def _as_tensor(owner, name, value, optional=False):
    """A floating tensor from a tensor or anything torch.as_tensor takes (a NumPy array)."""
    if value is None and optional:
        return None
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"cvops.{owner}: {name} must be a tensor or an array, got {type(value).__name__}"
            ) from None
    if not value.dtype.is_floating_point:
        raise ValueError(f"cvops.{owner}: {name} must be floating-point, got {str(value.dtype).removeprefix('torch.')}")
    return value


def _check_shape(owner, name, t, want, layout):
    if tuple(t.shape) != tuple(want):
        raise ValueError(f"cvops.{owner}: {name} must have shape {layout} = {list(want)}, got {list(t.shape)}")


def _new(t):
    """A contiguous copy: converted weights never alias the caller's arrays."""
    return t.clone(memory_format=torch.contiguous_format)


def _kernel_channels(owner, name, t, rows, kernel_size, layout, patch_dim):
    """The input channel count C of a weight whose dim `patch_dim` holds the kh·kw·C patch values."""
    taps = kernel_size[0] * kernel_size[1]
    if t.dim() != 3 or t.shape[0] != rows or 0 in t.shape or t.shape[patch_dim] % taps:
        raise ValueError(
            f"cvops.{owner}: {name} must have shape {layout} with oH·oW = {rows} and a multiple of "
            f"kh·kw = {taps} patch values, got {list(t.shape)}"
        )
    return t.shape[patch_dim] // taps


def from_keras_kernel(kernel, bias=None, *, output_size, kernel_size, data_format="channels_last"):
    """Keras LocallyConnected2D (implementation=1) kernel [oH·oW, kh·kw·C, O] and bias (or None) →
    cvops' (weight [oH, oW, O, C, kh, kw], bias [O, oH, oW] or None). output_size (oH, oW) is the
    Keras layer's (output_row, output_col)."""
    owner = f"{OWNER}.from_keras"
    check_choice(owner, "data_format", data_format, KERAS_FORMATS)
    (out_h, out_w), (kh, kw) = (
        check_int_pair(owner, "output_size", output_size, 1),
        check_int_pair(owner, "kernel_size", kernel_size, 1),
    )
    kernel = _as_tensor(owner, "kernel", kernel)
    channels = _kernel_channels(owner, "kernel", kernel, out_h * out_w, (kh, kw), "[oH·oW, kh·kw·C, O]", 1)
    filters = kernel.shape[2]
    if data_format == "channels_last":
        weight = kernel.reshape(out_h, out_w, kh, kw, channels, filters).permute(0, 1, 5, 4, 2, 3)
    else:
        weight = kernel.reshape(out_h, out_w, channels, kh, kw, filters).permute(0, 1, 5, 2, 3, 4)
    bias = _as_tensor(owner, "bias", bias, optional=True)
    if bias is not None:
        if data_format == "channels_last":
            _check_shape(owner, "bias", bias, (out_h, out_w, filters), "[oH, oW, O]")
            bias = bias.permute(2, 0, 1)
        else:
            _check_shape(owner, "bias", bias, (filters, out_h, out_w), "[O, oH, oW]")
        bias = _new(bias)
    return _new(weight), bias


def to_keras_kernel(weight, bias=None, *, data_format="channels_last"):
    """The inverse of from_keras_kernel: cvops' weight [oH, oW, O, C, kh, kw] and bias [O, oH, oW]
    (or None) → Keras's kernel [oH·oW, kh·kw·C, O] and bias [oH, oW, O] ([O, oH, oW] channels_first)."""
    owner = f"{OWNER}.to_keras"
    check_choice(owner, "data_format", data_format, KERAS_FORMATS)
    weight = _as_tensor(owner, "weight", weight)
    if weight.dim() != 6:
        raise ValueError(f"cvops.{owner}: weight must have shape [oH, oW, O, C, kh, kw], got {list(weight.shape)}")
    out_h, out_w, filters, channels, kh, kw = weight.shape
    order = (0, 1, 4, 5, 3, 2) if data_format == "channels_last" else (0, 1, 3, 4, 5, 2)
    kernel = _new(weight.permute(order)).reshape(out_h * out_w, kh * kw * channels, filters)
    bias = _as_tensor(owner, "bias", bias, optional=True)
    if bias is not None:
        _check_shape(owner, "bias", bias, (filters, out_h, out_w), "[O, oH, oW]")
        bias = _new(bias.permute(1, 2, 0) if data_format == "channels_last" else bias)
    return kernel, bias


def from_unfold_weight(weight, bias=None, *, output_size, kernel_size):
    """An unfold + einsum layer's weight [oH·oW, O, C·kh·kw] and bias [O, oH·oW] or [O, oH, oW] (or
    None) → cvops' (weight [oH, oW, O, C, kh, kw], bias [O, oH, oW] or None)."""
    owner = f"{OWNER}.from_unfold"
    (out_h, out_w), (kh, kw) = (
        check_int_pair(owner, "output_size", output_size, 1),
        check_int_pair(owner, "kernel_size", kernel_size, 1),
    )
    weight = _as_tensor(owner, "weight", weight)
    channels = _kernel_channels(owner, "weight", weight, out_h * out_w, (kh, kw), "[oH·oW, O, C·kh·kw]", 2)
    filters = weight.shape[1]
    bias = _as_tensor(owner, "bias", bias, optional=True)
    if bias is not None:
        if bias.dim() == 2:
            _check_shape(owner, "bias", bias, (filters, out_h * out_w), "[O, oH·oW]")
        else:
            _check_shape(owner, "bias", bias, (filters, out_h, out_w), "[O, oH, oW]")
        bias = _new(bias).reshape(filters, out_h, out_w)
    return _new(weight).reshape(out_h, out_w, filters, channels, kh, kw), bias


def to_unfold_weight(weight, bias=None):
    """The inverse of from_unfold_weight: → (weight [oH·oW, O, C·kh·kw], bias [O, oH·oW] or None)."""
    owner = f"{OWNER}.to_unfold"
    weight = _as_tensor(owner, "weight", weight)
    if weight.dim() != 6:
        raise ValueError(f"cvops.{owner}: weight must have shape [oH, oW, O, C, kh, kw], got {list(weight.shape)}")
    out_h, out_w, filters, channels, kh, kw = weight.shape
    bias = _as_tensor(owner, "bias", bias, optional=True)
    if bias is not None:
        _check_shape(owner, "bias", bias, (filters, out_h, out_w), "[O, oH, oW]")
        bias = _new(bias).reshape(filters, out_h * out_w)
    return _new(weight).reshape(out_h * out_w, filters, channels * kh * kw), bias


class LocallyConnected2d(nn.Module):
    """x [B, in_channels, *input_size] → [B, out_channels, oH, oW] with a separate [out_channels,
    in_channels, kh, kw] filter bank (and bias) at each output location (see cvops.locally_connected2d).
    input_size (H, W) is fixed: it sizes the unshared weight [oH, oW, O, C, kh, kw]. kernel_size,
    stride, padding and dilation are an int or (h, w); initialised as nn.Conv2d initialises each
    location's filters."""

    def __init__(
        self,
        in_channels,
        out_channels,
        input_size,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=True,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in_channels = check_int(OWNER, "in_channels", in_channels)
        self.out_channels = check_int(OWNER, "out_channels", out_channels)
        self.input_size = check_int_pair(OWNER, "input_size", input_size, 1)
        self.kernel_size = check_int_pair(OWNER, "kernel_size", kernel_size, 1)
        self.stride = check_int_pair(OWNER, "stride", stride, 1)
        self.padding = check_int_pair(OWNER, "padding", padding, 0)
        self.dilation = check_int_pair(OWNER, "dilation", dilation, 1)
        check_bool(OWNER, "bias", bias)
        self.output_size = _output_size(
            OWNER, self.input_size, self.kernel_size, self.stride, self.padding, self.dilation
        )
        shape = (*self.output_size, out_channels, in_channels, *self.kernel_size)
        check_output_size(OWNER, "the unshared weight", shape, dtype or torch.get_default_dtype(), device)
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, *self.output_size, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Conv2d's initialisation at every location: kaiming_uniform_(a=√5) with fan_in = C·kh·kw
        (weights uniform in ±1/√fan_in), bias uniform in ±1/√fan_in. One call over the weight viewed
        as [oH·oW·O, C, kh, kw]: the same fan_in, one draw for all locations."""
        nn.init.kaiming_uniform_(self.weight.view(-1, self.in_channels, *self.kernel_size), a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        check_module_input(OWNER, "x", x, self.weight)
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"cvops.{OWNER}: x must have shape [B, in_channels, *input_size] = "
                f"[B, {self.in_channels}, {self.input_size[0]}, {self.input_size[1]}], got {list(x.shape)}"
            )
        return locally_connected2d(
            x, self.weight, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation
        )

    def extra_repr(self):
        text = (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        return text + f", output_size={self.output_size}"

    # ------------------------------------------------------------------ converters

    @classmethod
    def _with_weights(cls, weight, bias, input_size, kernel_size, stride, padding, dilation):
        """A layer holding copies of cvops-layout weights, built without drawing an initialisation."""
        _, _, out_channels, in_channels, _, _ = weight.shape
        layer = nn.utils.skip_init(
            cls,
            in_channels,
            out_channels,
            input_size,
            kernel_size,
            stride,
            padding,
            dilation,
            bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    @classmethod
    def from_keras(cls, kernel, bias, input_size, kernel_size, strides=1, *, data_format="channels_last"):
        """The layer computing what Keras's LocallyConnected2D(filters, kernel_size, strides,
        padding="valid", data_format, implementation=1) computes with weights (kernel, bias) (its
        get_weights(); bias None without use_bias), on NCHW inputs: with channels_last Keras data,
        layer(x_nhwc.permute(0, 3, 1, 2)) == keras(x_nhwc).permute(0, 3, 1, 2). input_size (H, W)."""
        owner = f"{OWNER}.from_keras"
        input_size = check_int_pair(owner, "input_size", input_size, 1)
        kernel_size = check_int_pair(owner, "kernel_size", kernel_size, 1)
        strides = check_int_pair(owner, "strides", strides, 1)
        out = _output_size(owner, input_size, kernel_size, strides, (0, 0), (1, 1))
        weight, bias = from_keras_kernel(
            kernel, bias, output_size=out, kernel_size=kernel_size, data_format=data_format
        )
        return cls._with_weights(weight, bias, input_size, kernel_size, strides, 0, 1)

    @classmethod
    def from_unfold(cls, weight, bias, input_size, kernel_size, stride=1, padding=0, dilation=1):
        """The layer computing einsum("bkl,lok->bol", F.unfold(x, kernel_size, dilation, padding,
        stride), weight) (+ bias) reshaped to [B, O, oH, oW]: weight [oH·oW, O, C·kh·kw], bias
        [O, oH·oW], [O, oH, oW] or None."""
        owner = f"{OWNER}.from_unfold"
        input_size = check_int_pair(owner, "input_size", input_size, 1)
        kernel_size = check_int_pair(owner, "kernel_size", kernel_size, 1)
        stride = check_int_pair(owner, "stride", stride, 1)
        padding = check_int_pair(owner, "padding", padding, 0)
        dilation = check_int_pair(owner, "dilation", dilation, 1)
        out = _output_size(owner, input_size, kernel_size, stride, padding, dilation)
        weight, bias = from_unfold_weight(weight, bias, output_size=out, kernel_size=kernel_size)
        return cls._with_weights(weight, bias, input_size, kernel_size, stride, padding, dilation)

    def to_keras(self, data_format="channels_last"):
        """(kernel, bias) for Keras's LocallyConnected2D (implementation=1); bias None without one.
        Keras has no padding or dilation: a layer with either has no Keras equivalent."""
        if self.padding != (0, 0) or self.dilation != (1, 1):
            raise ValueError(
                f"cvops.{OWNER}.to_keras: Keras's LocallyConnected2D has no padding or dilation, this layer has "
                f"padding={self.padding}, dilation={self.dilation}"
            )
        return to_keras_kernel(self.weight.detach(), _detach(self.bias), data_format=data_format)

    def to_unfold(self):
        """(weight [oH·oW, O, C·kh·kw], bias [O, oH·oW] or None) for an unfold + einsum layer."""
        return to_unfold_weight(self.weight.detach(), _detach(self.bias))


def _detach(t):
    return None if t is None else t.detach()
