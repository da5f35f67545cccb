"""Argument checks shared by the functional API and the nn modules; each error names the op (or
module) and the argument."""

import math

import torch

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


def check_int(op, name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"cvops.{op}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def check_positive_number(op, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"cvops.{op}: {name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"cvops.{op}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def check_eps(op, eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:  # NaN fails too
        raise ValueError(f"cvops.{op}: eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


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
    (the ops check tensors' dtype, shape and range)."""
    if isinstance(style, int):
        return torch.full((batch,), style, dtype=torch.long, device=device)
    return style
