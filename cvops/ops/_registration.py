"""Helpers for the fake (meta) and autograd registrations of the ops in cvops/ops/<family>.py."""

import functools

import torch

__all__ = ["autocast_float32", "check_features_fake", "grads", "opmath"]


def opmath(dtype):
    """The dtype the kernels accumulate in: float32 for float16/bfloat16, else dtype itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_features_fake(op, x, min_dim):
    """The fake kernels' check of a features input x [B, C, *spatial], as the C++ kernels word it."""
    shape = "[B, C, *spatial]"
    torch._check(
        x.dim() >= min_dim, lambda: f"cvops.{op}: x must have at least {min_dim} dimensions {shape}, got {x.dim()}"
    )
    torch._check(x.dtype.is_floating_point, lambda: f"cvops.{op}: x must be a floating-point tensor, got {x.dtype}")


@functools.cache
def _argument_names(qualname):
    namespace, name = qualname.split("::")
    return tuple(argument.name for argument in getattr(getattr(torch.ops, namespace), name).default._schema.arguments)


def grads(ctx, qualname, **by_name):
    """The tuple a backward registered with torch.library.register_autograd returns for op `qualname`
    ("cvops::NAME"): by_name[argument] for each schema argument named there whose input needs a
    gradient (ctx.needs_input_grad), None for every other argument."""
    names = _argument_names(qualname)
    unknown = set(by_name) - set(names)
    if unknown:
        raise TypeError(
            f"{qualname} has no argument {', '.join(sorted(unknown))}; its arguments are {', '.join(names)}"
        )
    return tuple(by_name.get(name) if needed else None for name, needed in zip(names, ctx.needs_input_grad))


def autocast_float32(qualname):
    """Under autocast (CPU and CUDA), run op `qualname` in float32."""
    for device in ("cpu", "cuda"):
        torch.library.register_autocast(qualname, device, torch.float32)
