"""Argument checks shared by the functional API and the nn modules; each error names the op (or
module) and the argument."""

import math
import os

import torch

from cvops.ops._registration import opmath

GRAM_NORMALIZE = ("none", "hw", "chw")  # gram_matrix / style_loss: also a positive number
POOL_NORMALIZE = ("hw", "none")  # the bilinear pools: divide by the number of positions, or sum
COMPACT_KINDS = ("ts", "rm")  # compact_bilinear_pool: Tensor Sketch, Random Maclaurin
REDUCTIONS = ("mean", "sum", "none")  # style_loss
ACTIVATIONS = ("none", "relu")  # conditional_instance_norm


def check_choice(op, name, value, choices):
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"cvops.{op}: {name} must be one of {options}, got {value!r}")
    return value


def check_int(op, name, value, minimum=1, maximum=None):
    if maximum is None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"cvops.{op}: {name} must be an int >= {minimum}, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"cvops.{op}: {name} must be an int in [{minimum}, {maximum}], got {value!r}")
    return value


def check_int_pair(op, name, value, minimum):
    """An int or a pair (h, w) of ints, each >= minimum → (h, w): the window arguments of the
    convolution-like ops."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < minimum for n in items):
        raise ValueError(f"cvops.{op}: {name} must be an int >= {minimum} or a pair (h, w) of them, got {value!r}")
    return items


def check_bool(op, name, value):
    # bool() would take any object (a string, a tensor, None) as a flag.
    if not isinstance(value, bool):
        raise ValueError(f"cvops.{op}: {name} must be True or False, got {value!r}")
    return value


def check_number(op, name, value):
    """A real number (an int or a float, not a bool): the ops compare it, so NaN is theirs to refuse."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"cvops.{op}: {name} must be a number, got {value!r}")
    return float(value)


def check_tensor(op, name, value, *, optional=False):
    """value must be a tensor (or None when optional); returns it."""
    if value is None and optional:
        return value
    if not isinstance(value, torch.Tensor):
        got = "None" if value is None else type(value).__name__
        raise ValueError(f"cvops.{op}: {name} must be a {'tensor or None' if optional else 'tensor'}, got {got}")
    return value


def check_min_dim(op, name, t, min_dim, layout):
    """Before indexing t's dims, in the C++ kernels' words."""
    if t.dim() < min_dim:
        raise ValueError(
            f"cvops.{op}: {name} must have at least {min_dim} dimensions {layout}, got shape {list(t.shape)}"
        )
    return t


def check_module_input(owner, name, t, parameter):
    """An input that a module multiplies with its own parameter (nn.Linear, nn.Conv2d) before any
    cvops op sees it: a floating tensor on the parameter's device, in its dtype unless autocast is on."""
    check_tensor(owner, name, t)
    if not t.dtype.is_floating_point:
        raise ValueError(f"cvops.{owner}: {name} must be a floating-point tensor, got {_dtype_name(t.dtype)}")
    if t.device != parameter.device:
        raise ValueError(f"cvops.{owner}: {name} must be on the module's device ({parameter.device}), got {t.device}")
    if t.dtype != parameter.dtype and not torch.is_autocast_enabled(t.device.type):
        raise ValueError(
            f"cvops.{owner}: {name} must have the module's dtype {_dtype_name(parameter.dtype)} "
            f"(convert one of them, or run under autocast), got {_dtype_name(t.dtype)}"
        )
    return t


def check_positive_number(op, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"cvops.{op}: {name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"cvops.{op}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def check_eps(op, eps, dtype=None):
    """eps must be a finite number >= 0, and finite in the dtype it is computed in: opmath(dtype)
    (float32 for float16/bfloat16/float32 inputs, float64 for float64) when dtype is given. A
    non-floating dtype is left to the op's own check of its input."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:  # NaN fails too
        raise ValueError(f"cvops.{op}: eps must be a finite number >= 0, got {eps!r}")
    if dtype is not None and dtype.is_floating_point:
        compute = opmath(dtype)
        largest = torch.finfo(compute).max
        if eps > largest:
            raise ValueError(
                f"cvops.{op}: eps must be a finite number >= 0 in {_dtype_name(compute)} (the compute dtype of "
                f"{_dtype_name(dtype)} inputs, largest {largest!r}), got {eps!r}"
            )
    return float(eps)


def _dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def _device_memory(device):
    """The device's total memory in bytes, or None where there is no limit to state (meta)."""
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
            return None
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None


_INT64_MAX = 2**63 - 1


def check_output_size(op, argument, shape, dtype, device, *, value=None):
    """Refuse, before allocating it, a tensor of `shape` and `dtype` on `device` larger than the
    device's memory, naming the argument that asked for it (`value`: its value, for the message).
    Sizes are Python ints, so the byte count is exact however large; more than 2**63 - 1 bytes is
    refused on any device. Nothing is checked while torch.compile traces (it cannot trace
    os.sysconf, and its sizes may be symbolic)."""
    if torch.compiler.is_compiling() or not all(isinstance(n, int) for n in shape):
        return
    device = torch.device(device if device is not None else "cpu")
    numel = math.prod(shape)
    nbytes = numel * dtype.itemsize
    asked = f"{argument} = {value}" if value is not None else argument
    tensor = f"a {list(shape)} {_dtype_name(dtype)} tensor ({nbytes / 2**30:.1f} GiB)"
    if nbytes > _INT64_MAX:
        raise ValueError(f"cvops.{op}: {asked} asks for {tensor}, more than 2**63 - 1 bytes")
    memory = _device_memory(device)
    if memory is not None and nbytes > memory:
        where = "this machine's memory" if device.type == "cpu" else f"the memory of {device}"
        raise ValueError(f"cvops.{op}: {asked} asks for {tensor}, more than {where} ({memory / 2**30:.1f} GiB)")


def check_gram_normalize(op, normalize):
    """gram_matrix's normalize → the (mode, divisor) pair of the C++ schema: "none" | "hw" | "chw",
    or "value" with a positive divisor. Shapes stay symbolic under torch.compile: the C++ side resolves n."""
    if isinstance(normalize, str):
        return check_choice(op, "normalize", normalize, GRAM_NORMALIZE), 1.0
    return "value", check_positive_number(op, "normalize", normalize)


def check_activation(op, activation):
    """None or "none" → "none"; "relu" → "relu"."""
    return "none" if activation is None else check_choice(op, "activation", activation, ACTIVATIONS)


def broadcast_style(style, batch, device):
    """A style given as one int for the whole batch → int64 [batch] of it; anything else unchanged
    (the ops check tensors' dtype, shape and range; a bool is not a style index)."""
    if isinstance(style, int) and not isinstance(style, bool):
        return torch.full((batch,), style, dtype=torch.long, device=device)
    return style
