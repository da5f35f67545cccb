"""Helpers for the fake (meta) and autograd registrations of the ops in cvops/ops/<family>.py."""

import functools

import torch

__all__ = ["autocast_float32", "check_features_fake", "grads", "opmath", "register_fake"]


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


def _schema(qualname):
    namespace, name = qualname.split("::")
    return getattr(getattr(torch.ops, namespace), name).default._schema


@functools.cache
def _argument_names(qualname):
    return tuple(argument.name for argument in _schema(qualname).arguments)


def _tensor_kind(argument):
    """A schema argument's kind: "tensor" (Tensor), "optional" (Tensor?) or None (not a tensor)."""
    if isinstance(argument.type, torch.TensorType):
        return "tensor"
    if isinstance(argument.type, torch.OptionalType) and isinstance(argument.type.getElementType(), torch.TensorType):
        return "optional"
    return None


def _tensor_arguments(qualname):
    """(position, name, optional) of each tensor argument of op `qualname`, in schema order."""
    found = []
    for position, argument in enumerate(_schema(qualname).arguments):
        kind = _tensor_kind(argument)
        if kind is not None:
            found.append((position, argument.name, kind == "optional"))
    return tuple(found)


def _check_tensor_arguments(op, tensors, args, kwargs):
    first = None
    for position, name, optional in tensors:
        value = args[position] if position < len(args) else kwargs.get(name)
        if value is None:
            if not optional:
                raise RuntimeError(f"cvops.{op}: {name} must be a tensor, got None")
            continue
        if not isinstance(value, torch.Tensor):
            raise RuntimeError(f"cvops.{op}: {name} must be a tensor, got {type(value).__name__}")
        if first is None:
            first = (name, value.device)
        elif value.device != first[1]:
            raise RuntimeError(
                f"cvops.{op}: {name} must be on the same device as {first[0]} ({first[1]}), got {value.device}"
            )


def register_fake(qualname, *, op=None):
    """torch.library.register_fake for op `qualname` ("cvops::NAME") as a decorator, checking first,
    from the op's schema, that every non-optional tensor argument is a tensor and every tensor is on
    the first tensor argument's device, as the C++ kernels do. The dispatcher picks the Meta kernel
    as soon as one input is a meta tensor, so without this a meta tensor mixed with CPU tensors
    would return uninitialised CPU memory. All-meta inputs (shape inference) and FakeTensors
    (torch.compile; their .device is the fake device) pass. op: the name errors use (default: NAME
    without its leading underscore)."""
    name = op or qualname.split("::", 1)[1].lstrip("_")
    tensors = _tensor_arguments(qualname)

    def decorate(fake):
        @functools.wraps(fake)
        def checked(*args, **kwargs):
            _check_tensor_arguments(name, tensors, args, kwargs)
            return fake(*args, **kwargs)

        torch.library.register_fake(qualname, checked)
        return checked

    return decorate


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
