"""Bilinear pooling and its compact / low-rank approximations (the `bilinear` family).

Second-order pooling of x [B, C, *spatial] and y [B, D, *spatial] (y = x when None):
  bilinear_pool             vec(Σ_p x_p y_pᵀ) → [B, C·D]                       (Lin et al., B-CNN)
  compact_bilinear_pool     Tensor Sketch or Random Maclaurin of it → [B, d]  (Gao et al.)
  factorized_bilinear_pool  the MFB pooling stage x∘y summed over groups of k (Yu et al.)
  lowrank_bilinear_score    Σ_p ‖U₊ᵀx_p‖² − ‖U₋ᵀx_p‖² per class              (Kong & Fowlkes, LRBP)
The pooled vectors are optionally passed through sign(z)·√(|z| + eps) and L2 normalisation
(u / max(‖u‖, 1e-12), as F.normalize). Float16/bfloat16 accumulate in float32. Results are
deterministic: no float atomics, fixed reduction orders.

Each pooling op also returns the row norms of the L2 step, a by-product for its backward: the ops
save their inputs, out and norm (never the C·D-sized pre-epilogue values), and the backward reads
the signed sqrt's slope back from out·norm.
"""

import functools

import torch
from torch import Tensor

from cvops.ops._registration import check_features_fake, grads, opmath, register_fake
from cvops.ops._validate import (
    COMPACT_KINDS,
    POOL_NORMALIZE,
    check_bool,
    check_choice,
    check_eps,
    check_int,
    check_min_dim,
    check_output_size,
    check_tensor,
)

__all__ = [
    "bilinear_pool",
    "compact_bilinear_params",
    "compact_bilinear_pool",
    "factorized_bilinear_pool",
    "lowrank_bilinear_score",
]

DEFAULT_EPS = 1e-8
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed's range
INT64_MAX = 2**63 - 1  # sizes the C++ schemas take (int64)


def _same_dtype(*tensors):
    """One compute dtype for the floating inputs: autocast's when it is on for their device (the
    ops accumulate half/bfloat16 in float32), else the promotion of their dtypes. Any non-floating
    input leaves them all as they are, for the op to name the one at fault."""
    present = [t for t in tensors if t is not None]
    if not all(t.dtype.is_floating_point for t in present):
        return list(tensors)
    device_type = present[0].device.type
    if device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in present])
    return [t if t is None or t.dtype == dtype else t.to(dtype) for t in tensors]


def _check_pool_flags(op, signed_sqrt, l2_normalize):
    return check_bool(op, "signed_sqrt", signed_sqrt), check_bool(op, "l2_normalize", l2_normalize)


def _pool_outputs_fake(x, width, l2_normalize):
    """(out [B, width], norm [B] in opmath, or [0] without L2 normalisation)."""
    batch = x.shape[0]
    return x.new_empty(batch, width), x.new_empty((batch if l2_normalize else 0,), dtype=opmath(x.dtype))


def _input_grads_fake(x, y):
    # The backward ops return contiguous gradients; grad_y is empty when y is None.
    return x.new_empty(x.shape), (x.new_empty((0,)) if y is None else y.new_empty(y.shape))


# ---------------------------------------------------------------------------- bilinear_pool


def bilinear_pool(
    x: Tensor, y: Tensor = None, *, normalize="hw", signed_sqrt=True, l2_normalize=True, eps=DEFAULT_EPS
) -> Tensor:
    """Full bilinear pooling: x [B, C, *spatial], y [B, D, *spatial] (None: y = x) → [B, C·D] =
    vec(Σ_p x_p y_pᵀ), divided by the number of positions (normalize="hw") or not ("none"), then
    the signed square root and L2 normalisation if asked. [B, C] inputs count as one position.
    With y = None only the upper triangle of the Gram matrix is multiplied (the gram family's kernel)."""
    op = "bilinear_pool"
    check_tensor(op, "x", x)
    check_tensor(op, "y", y, optional=True)
    check_choice(op, "normalize", normalize, POOL_NORMALIZE)
    signed_sqrt, l2_normalize = _check_pool_flags(op, signed_sqrt, l2_normalize)
    x, y = _same_dtype(x, y)
    eps = check_eps(op, eps, x.dtype)
    out, _ = torch.ops.cvops._bilinear_pool(x, y, normalize, signed_sqrt, l2_normalize, eps)
    return out


@register_fake("cvops::_bilinear_pool")
def _bilinear_pool_fake(x, y, normalize, signed_sqrt, l2_normalize, eps):
    check_features_fake("bilinear_pool", x, 2)
    channels_y = x.shape[1] if y is None else y.shape[1]
    return _pool_outputs_fake(x, x.shape[1] * channels_y, l2_normalize)


@register_fake("cvops::_bilinear_pool_backward")
def _bilinear_pool_backward_fake(grad, x, y, out, norm, normalize, signed_sqrt, l2_normalize):
    return _input_grads_fake(x, y)


def _bilinear_pool_setup(ctx, inputs, output):
    x, y, ctx.normalize, ctx.signed_sqrt, ctx.l2_normalize, _ = inputs
    out, norm = output
    ctx.mark_non_differentiable(norm)
    ctx.save_for_backward(x, y, out, norm)


def _bilinear_pool_backward(ctx, grad, _grad_norm):
    x, y, out, norm = ctx.saved_tensors
    grad_x, grad_y = torch.ops.cvops._bilinear_pool_backward(
        grad, x, y, out, norm, ctx.normalize, ctx.signed_sqrt, ctx.l2_normalize
    )
    return grads(ctx, "cvops::_bilinear_pool", x=grad_x, y=grad_y)


torch.library.register_autograd("cvops::_bilinear_pool", _bilinear_pool_backward, setup_context=_bilinear_pool_setup)


# ---------------------------------------------------------------------------- compact_bilinear_pool


@functools.lru_cache(maxsize=32)
def _params_cpu(kind, x_channels, y_channels, output_dim, seed):
    gen = torch.Generator().manual_seed(seed)
    cpu = torch.device("cpu")  # the draw is the CPU generator's, whatever the default device

    def signs(*shape):
        return (torch.randint(0, 2, shape, generator=gen, device=cpu) * 2 - 1).to(torch.float32)

    if kind == "ts":
        h1 = torch.randint(0, output_dim, (x_channels,), generator=gen, device=cpu)
        s1 = signs(x_channels)
        h2 = torch.randint(0, output_dim, (y_channels,), generator=gen, device=cpu)
        s2 = signs(y_channels)
        return h1, s1, h2, s2
    return signs(x_channels, output_dim), signs(y_channels, output_dim)


def _check_device(op, device):
    if device is None:
        return None
    try:
        return torch.device(device)
    except (TypeError, RuntimeError, ValueError):
        raise ValueError(
            f"cvops.{op}: device must be None, a torch.device or a device string, got {device!r}"
        ) from None


def _check_params_size(op, kind, x_channels, y_channels, output_dim, device):
    """compact_bilinear_params' tensors, refused before they are drawn (on the CPU, then moved)."""
    targets = [torch.device("cpu")] + ([device] if device is not None and device.type != "cpu" else [])
    for target in targets:
        for name, channels in (("x_channels", x_channels), ("y_channels", y_channels)):
            if kind == "ts":
                check_output_size(op, name, (channels,), torch.int64, target, value=channels)
            else:  # the larger of the two sizes is the one to blame
                culprit = ("output_dim", output_dim) if output_dim >= channels else (name, channels)
                check_output_size(op, culprit[0], (channels, output_dim), torch.float32, target, value=culprit[1])


def compact_bilinear_params(kind, x_channels, y_channels=None, output_dim=8192, seed=0, device=None):
    """The fixed random parameters of compact bilinear pooling, a function of the seed alone:
    kind "ts": (h1 int64 [C], s1 ±1 [C], h2 int64 [D], s2 ±1 [D]), bins in [0, output_dim);
    kind "rm": (W1 ±1 [C, output_dim], W2 ±1 [D, output_dim]). y_channels defaults to x_channels
    (two independent draws even when y = x)."""
    op = "compact_bilinear_params"
    check_choice(op, "kind", kind, COMPACT_KINDS)
    check_int(op, "x_channels", x_channels, 0, INT64_MAX)
    y_channels = x_channels if y_channels is None else check_int(op, "y_channels", y_channels, 0, INT64_MAX)
    check_int(op, "output_dim", output_dim, 1, INT64_MAX)
    check_int(op, "seed", seed, 0, SEED_MAX)
    device = _check_device(op, device)
    _check_params_size(op, kind, x_channels, y_channels, output_dim, device)
    params = _params_cpu(kind, x_channels, y_channels, output_dim, seed)
    # Copies: the drawn tensors are cached, and a caller may write into what it gets.
    return tuple(p.clone() if device is None else p.to(device, copy=True) for p in params)


def compact_bilinear_pool(
    x: Tensor,
    y: Tensor = None,
    *,
    output_dim=8192,
    kind="ts",
    seed=0,
    normalize="hw",
    signed_sqrt=True,
    l2_normalize=True,
    eps=DEFAULT_EPS,
    params=None,
) -> Tensor:
    """Compact bilinear pooling (Gao et al. 2016): x [B, C, *spatial], y [B, D, *spatial] (None: y = x)
    → [B, output_dim] approximating bilinear_pool's kernel.

    kind "ts": Tensor Sketch of Σ_p x_p ⊗ y_p. The sketch is linear, so it is computed as the sketch
    of one C×D GEMM (G = Σ_p x_p y_pᵀ): no FFT, same value as the FFT formulation with the same hashes.
    kind "rm": Random Maclaurin, Σ_p (W1ᵀx_p)∘(W2ᵀy_p)/√d.
    normalize: "hw" (divide by the number of positions) or "none" (sum), as bilinear_pool.
    params: the tensors of compact_bilinear_params (CompactBilinearPool keeps them as buffers);
    by default they are drawn from `seed`. Differentiable in x and y.
    """
    op = "compact_bilinear_pool"
    check_tensor(op, "x", x)
    check_tensor(op, "y", y, optional=True)
    check_choice(op, "kind", kind, COMPACT_KINDS)
    check_choice(op, "normalize", normalize, POOL_NORMALIZE)
    check_int(op, "output_dim", output_dim, 1)  # too large: check_output_size below
    check_int(op, "seed", seed, 0, SEED_MAX)
    signed_sqrt, l2_normalize = _check_pool_flags(op, signed_sqrt, l2_normalize)
    params = _check_params(op, kind, params)
    check_output_size(op, "output_dim", (x.shape[0] if x.dim() else 1, output_dim), x.dtype, x.device, value=output_dim)
    x, y = _same_dtype(x, y)
    eps = check_eps(op, eps, x.dtype)
    if params is None:
        check_min_dim(op, "x", x, 2, "[B, C, *spatial]")
        if y is not None:
            check_min_dim(op, "y", y, 2, "[B, D, *spatial]")
        channels_y = x.shape[1] if y is None else y.shape[1]
        params = compact_bilinear_params(kind, x.shape[1], channels_y, output_dim, seed, device=x.device)
    if kind == "ts":
        h1, s1, h2, s2 = params
        out, _ = torch.ops.cvops._compact_bilinear_pool_ts(
            x, y, h1, s1, h2, s2, output_dim, normalize, signed_sqrt, l2_normalize, eps
        )
    else:
        w1, w2 = params
        if w1.dim() == 2 and w1.shape[1] != output_dim:  # other shapes: the op words the error
            raise ValueError(f"cvops.{op}: params' w1 has {w1.shape[1]} output columns, but output_dim is {output_dim}")
        out, _ = torch.ops.cvops._compact_bilinear_pool_rm(x, y, w1, w2, normalize, signed_sqrt, l2_normalize, eps)
    return out


_PARAM_NAMES = {"ts": ("h1", "s1", "h2", "s2"), "rm": ("w1", "w2")}


def _check_params(op, kind, params):
    """None, or the tensors of compact_bilinear_params(kind, ...) as a tuple or list."""
    if params is None:
        return None
    names = _PARAM_NAMES[kind]
    if not isinstance(params, (tuple, list)) or len(params) != len(names):
        got = f"{type(params).__name__} of length {len(params)}" if isinstance(params, (tuple, list)) else repr(params)
        raise ValueError(
            f"cvops.{op}: params must be None or the {len(names)} tensors ({', '.join(names)}) of "
            f"compact_bilinear_params({kind!r}, ...), got {got}"
        )
    for name, tensor in zip(names, params):
        check_tensor(op, f"params' {name}", tensor)
    return tuple(params)


@register_fake("cvops::_compact_bilinear_pool_ts", op="compact_bilinear_pool")
def _compact_bilinear_pool_ts_fake(x, y, h1, s1, h2, s2, output_dim, normalize, signed_sqrt, l2_normalize, eps):
    check_features_fake("compact_bilinear_pool", x, 2)
    torch._check(output_dim >= 1, lambda: f"cvops.compact_bilinear_pool: output_dim must be >= 1, got {output_dim}")
    return _pool_outputs_fake(x, output_dim, l2_normalize)


@register_fake("cvops::_compact_bilinear_pool_ts_backward", op="compact_bilinear_pool_backward")
def _compact_bilinear_pool_ts_backward_fake(
    grad, x, y, h1, s1, h2, s2, out, norm, normalize, signed_sqrt, l2_normalize
):
    return _input_grads_fake(x, y)


@register_fake("cvops::_compact_bilinear_pool_rm", op="compact_bilinear_pool")
def _compact_bilinear_pool_rm_fake(x, y, w1, w2, normalize, signed_sqrt, l2_normalize, eps):
    check_features_fake("compact_bilinear_pool", x, 2)
    return _pool_outputs_fake(x, w1.shape[1], l2_normalize)


@register_fake("cvops::_compact_bilinear_pool_rm_backward", op="compact_bilinear_pool_backward")
def _compact_bilinear_pool_rm_backward_fake(grad, x, y, w1, w2, out, norm, normalize, signed_sqrt, l2_normalize):
    return _input_grads_fake(x, y)


def _compact_bilinear_pool_ts_setup(ctx, inputs, output):
    x, y, h1, s1, h2, s2, _, ctx.normalize, ctx.signed_sqrt, ctx.l2_normalize, _ = inputs
    out, norm = output
    ctx.mark_non_differentiable(norm)
    ctx.save_for_backward(x, y, h1, s1, h2, s2, out, norm)


def _compact_bilinear_pool_ts_backward(ctx, grad, _grad_norm):
    x, y, h1, s1, h2, s2, out, norm = ctx.saved_tensors
    grad_x, grad_y = torch.ops.cvops._compact_bilinear_pool_ts_backward(
        grad, x, y, h1, s1, h2, s2, out, norm, ctx.normalize, ctx.signed_sqrt, ctx.l2_normalize
    )
    return grads(ctx, "cvops::_compact_bilinear_pool_ts", x=grad_x, y=grad_y)


torch.library.register_autograd(
    "cvops::_compact_bilinear_pool_ts",
    _compact_bilinear_pool_ts_backward,
    setup_context=_compact_bilinear_pool_ts_setup,
)


def _compact_bilinear_pool_rm_setup(ctx, inputs, output):
    x, y, w1, w2, ctx.normalize, ctx.signed_sqrt, ctx.l2_normalize, _ = inputs
    out, norm = output
    ctx.mark_non_differentiable(norm)
    ctx.save_for_backward(x, y, w1, w2, out, norm)


def _compact_bilinear_pool_rm_backward(ctx, grad, _grad_norm):
    x, y, w1, w2, out, norm = ctx.saved_tensors
    grad_x, grad_y = torch.ops.cvops._compact_bilinear_pool_rm_backward(
        grad, x, y, w1, w2, out, norm, ctx.normalize, ctx.signed_sqrt, ctx.l2_normalize
    )
    return grads(ctx, "cvops::_compact_bilinear_pool_rm", x=grad_x, y=grad_y)


torch.library.register_autograd(
    "cvops::_compact_bilinear_pool_rm",
    _compact_bilinear_pool_rm_backward,
    setup_context=_compact_bilinear_pool_rm_setup,
)


# ---------------------------------------------------------------------------- factorized_bilinear_pool


def factorized_bilinear_pool(
    x: Tensor, y: Tensor, *, k, signed_sqrt=True, l2_normalize=True, eps=DEFAULT_EPS
) -> Tensor:
    """The MFB pooling stage (Yu et al. 2017) after the projections: x, y [B, k·o] → [B, o] =
    Σ over contiguous groups of k of x∘y, then the signed square root and L2 normalisation, in one
    pass (and one pass backward)."""
    op = "factorized_bilinear_pool"
    check_tensor(op, "x", x)
    check_tensor(op, "y", y)
    check_int(op, "k", k, 1)
    signed_sqrt, l2_normalize = _check_pool_flags(op, signed_sqrt, l2_normalize)
    x, y = _same_dtype(x, y)
    eps = check_eps(op, eps, x.dtype)
    out, _ = torch.ops.cvops._factorized_bilinear_pool(x, y, k, signed_sqrt, l2_normalize, eps)
    return out


@register_fake("cvops::_factorized_bilinear_pool")
def _factorized_bilinear_pool_fake(x, y, k, signed_sqrt, l2_normalize, eps):
    torch._check(
        x.dim() == 2, lambda: f"cvops.factorized_bilinear_pool: x must have 2 dimensions [B, k·o], got {x.dim()}"
    )
    torch._check(k >= 1, lambda: f"cvops.factorized_bilinear_pool: k must be >= 1, got {k}")
    return _pool_outputs_fake(x, x.shape[1] // k, l2_normalize)


@register_fake("cvops::_factorized_bilinear_pool_backward")
def _factorized_bilinear_pool_backward_fake(grad, x, y, out, norm, k, signed_sqrt, l2_normalize):
    return x.new_empty(x.shape), y.new_empty(y.shape)


def _factorized_bilinear_pool_setup(ctx, inputs, output):
    x, y, ctx.k, ctx.signed_sqrt, ctx.l2_normalize, _ = inputs
    out, norm = output
    ctx.mark_non_differentiable(norm)
    ctx.save_for_backward(x, y, out, norm)


def _factorized_bilinear_pool_backward(ctx, grad, _grad_norm):
    x, y, out, norm = ctx.saved_tensors
    grad_x, grad_y = torch.ops.cvops._factorized_bilinear_pool_backward(
        grad, x, y, out, norm, ctx.k, ctx.signed_sqrt, ctx.l2_normalize
    )
    return grads(ctx, "cvops::_factorized_bilinear_pool", x=grad_x, y=grad_y)


torch.library.register_autograd(
    "cvops::_factorized_bilinear_pool",
    _factorized_bilinear_pool_backward,
    setup_context=_factorized_bilinear_pool_setup,
)


# ---------------------------------------------------------------------------- lowrank_bilinear_score


def lowrank_bilinear_score(x: Tensor, U: Tensor, *, num_positive) -> Tensor:
    """Low-rank bilinear classifier scores (Kong & Fowlkes 2017): x [B, C, *spatial], U [K, C, r] →
    [B, K] = Σ_p ‖U₊ᵀx_p‖² − ‖U₋ᵀx_p‖², U₊ = U[:, :, :num_positive], U₋ the rest; i.e. the
    bilinear form tr(W·Σ_p x_p x_pᵀ) with W = U₊U₊ᵀ − U₋U₋ᵀ of rank r, without forming W or the Gram.
    Differentiable in x and U."""
    op = "lowrank_bilinear_score"
    check_tensor(op, "x", x)
    check_tensor(op, "U", U)
    check_int(op, "num_positive", num_positive, 0)
    x, U = _same_dtype(x, U)
    return torch.ops.cvops.lowrank_bilinear_score(x, U, num_positive)


@register_fake("cvops::lowrank_bilinear_score")
def _lowrank_bilinear_score_fake(x, U, num_positive):
    check_features_fake("lowrank_bilinear_score", x, 2)
    torch._check(U.dim() == 3, lambda: f"cvops.lowrank_bilinear_score: U must have shape [K, C, r], got {U.dim()} dims")
    return x.new_empty(x.shape[0], U.shape[0])


@register_fake("cvops::_lowrank_bilinear_score_backward")
def _lowrank_bilinear_score_backward_fake(grad, x, U, num_positive):
    return x.new_empty(x.shape), U.new_empty(U.shape)


def _lowrank_bilinear_score_setup(ctx, inputs, output):
    x, U, ctx.num_positive = inputs
    ctx.save_for_backward(x, U)


def _lowrank_bilinear_score_backward(ctx, grad):
    x, U = ctx.saved_tensors
    grad_x, grad_u = torch.ops.cvops._lowrank_bilinear_score_backward(grad, x, U, ctx.num_positive)
    return grads(ctx, "cvops::lowrank_bilinear_score", x=grad_x, U=grad_u)


torch.library.register_autograd(
    "cvops::lowrank_bilinear_score", _lowrank_bilinear_score_backward, setup_context=_lowrank_bilinear_score_setup
)
