"""Bilinear pooling and its compact / low-rank approximations (the `bilinear` family).

Second-order pooling of x [B, C, *spatial] and y [B, D, *spatial] (y = x when None):
  bilinear_pool             vec(Σ_p x_p y_pᵀ) → [B, C·D]                       (Lin et al., B-CNN)
  compact_bilinear_pool     Tensor Sketch or Random Maclaurin of it → [B, d]  (Gao et al.)
  factorized_bilinear_pool  the MFB pooling stage x∘y summed over groups of k (Yu et al.)
  lowrank_bilinear_score    Σ_p ‖U₊ᵀx_p‖² − ‖U₋ᵀx_p‖² per class              (Kong & Fowlkes, LRBP)
The pooled vectors are optionally passed through sign(z)·√(|z| + eps) and L2 normalisation
(u / max(‖u‖, 1e-12), as F.normalize). Float16/bfloat16 accumulate in float32. Results are
deterministic: no float atomics, fixed reduction orders.
"""
import functools
import math

import torch
from torch import Tensor

from cvops.ops._validate import check_choice, check_int

__all__ = [
    "bilinear_pool",
    "compact_bilinear_params",
    "compact_bilinear_pool",
    "factorized_bilinear_pool",
    "lowrank_bilinear_score",
]

_REDUCE = ("mean", "sum")
_NORMALIZE_OF = {"mean": "hw", "sum": "none"}
_KINDS = ("ts", "rm")
DEFAULT_EPS = 1e-8


def _check_eps(op, eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:  # NaN fails too
        raise ValueError(f"cvops.{op}: eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


def _same_dtype(*tensors):
    """One compute dtype for the inputs: autocast's when it is on for their device (the ops
    accumulate half/bfloat16 in float32), else the promotion of their dtypes."""
    present = [t for t in tensors if t is not None]
    device_type = present[0].device.type
    if device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in present])
    return [None if t is None else (t if t.dtype == dtype or not t.dtype.is_floating_point else t.to(dtype)) for t in tensors]


def bilinear_pool(x: Tensor, y: Tensor = None, *, reduce="mean", signed_sqrt=True, l2_normalize=True,
                  eps=DEFAULT_EPS) -> Tensor:
    """Full bilinear pooling: x [B, C, *spatial], y [B, D, *spatial] (None: y = x) → [B, C·D] =
    vec(Σ_p x_p y_pᵀ) (divided by the number of positions for reduce="mean"), then the signed
    square root and L2 normalisation if asked. [B, C] inputs count as one position.
    With y = None only the upper triangle of the Gram matrix is multiplied (the gram family's kernel)."""
    op = "bilinear_pool"
    check_choice(op, "reduce", reduce, _REDUCE)
    x, y = _same_dtype(x, y)
    out, _ = torch.ops.cvops._bilinear_pool(x, y, _NORMALIZE_OF[reduce], bool(signed_sqrt), bool(l2_normalize), _check_eps(op, eps))
    return out


@functools.lru_cache(maxsize=32)
def _params_cpu(kind, x_channels, y_channels, output_dim, seed):
    gen = torch.Generator().manual_seed(seed)

    def signs(*shape):
        return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(torch.float32)

    if kind == "ts":
        h1 = torch.randint(0, output_dim, (x_channels,), generator=gen)
        s1 = signs(x_channels)
        h2 = torch.randint(0, output_dim, (y_channels,), generator=gen)
        s2 = signs(y_channels)
        return h1, s1, h2, s2
    return signs(x_channels, output_dim), signs(y_channels, output_dim)


def compact_bilinear_params(kind, x_channels, y_channels=None, output_dim=8192, seed=0, device=None):
    """The fixed random parameters of compact bilinear pooling, a function of the seed alone:
    kind "ts": (h1 int64 [C], s1 ±1 [C], h2 int64 [D], s2 ±1 [D]), bins in [0, output_dim);
    kind "rm": (W1 ±1 [C, output_dim], W2 ±1 [D, output_dim]). y_channels defaults to x_channels
    (two independent draws even when y = x)."""
    op = "compact_bilinear_params"
    check_choice(op, "kind", kind, _KINDS)
    check_int(op, "x_channels", x_channels, 0)
    y_channels = x_channels if y_channels is None else check_int(op, "y_channels", y_channels, 0)
    check_int(op, "output_dim", output_dim, 1)
    check_int(op, "seed", seed, 0)
    params = _params_cpu(kind, x_channels, y_channels, output_dim, seed)
    return tuple(p.to(device) if device is not None else p.clone() for p in params)


def compact_bilinear_pool(x: Tensor, y: Tensor = None, *, output_dim=8192, kind="ts", seed=0, reduce="mean",
                          signed_sqrt=True, l2_normalize=True, eps=DEFAULT_EPS, params=None) -> Tensor:
    """Compact bilinear pooling (Gao et al. 2016): x [B, C, *spatial], y [B, D, *spatial] (None: y = x)
    → [B, output_dim] approximating bilinear_pool's kernel.

    kind "ts": Tensor Sketch of Σ_p x_p ⊗ y_p. The sketch is linear, so it is computed as the sketch
    of one C×D GEMM (G = Σ_p x_p y_pᵀ): no FFT, same value as the FFT formulation with the same hashes.
    kind "rm": Random Maclaurin, Σ_p (W1ᵀx_p)∘(W2ᵀy_p)/√d.
    params: the tensors of compact_bilinear_params (CompactBilinearPooling keeps them as buffers);
    by default they are drawn from `seed`. Differentiable in x and y.
    """
    op = "compact_bilinear_pool"
    check_choice(op, "kind", kind, _KINDS)
    check_choice(op, "reduce", reduce, _REDUCE)
    check_int(op, "output_dim", output_dim, 1)
    eps = _check_eps(op, eps)
    x, y = _same_dtype(x, y)
    if params is None:
        channels_y = x.shape[1] if y is None else y.shape[1]
        params = compact_bilinear_params(kind, x.shape[1], channels_y, output_dim, seed, device=x.device)
    if kind == "ts":
        h1, s1, h2, s2 = params
        out, _ = torch.ops.cvops._compact_bilinear_pool_ts(x, y, h1, s1, h2, s2, output_dim, _NORMALIZE_OF[reduce], bool(signed_sqrt),
                                                    bool(l2_normalize), eps)
    else:
        w1, w2 = params
        if w1.shape[-1] != output_dim:
            raise ValueError(f"cvops.{op}: params' W1 has {w1.shape[-1]} output columns, but output_dim is {output_dim}")
        out, _ = torch.ops.cvops._compact_bilinear_pool_rm(x, y, w1, w2, _NORMALIZE_OF[reduce], bool(signed_sqrt), bool(l2_normalize), eps)
    return out


def factorized_bilinear_pool(x: Tensor, y: Tensor, *, k, signed_sqrt=True, l2_normalize=True, eps=DEFAULT_EPS) -> Tensor:
    """The MFB pooling stage (Yu et al. 2017) after the projections: x, y [B, k·o] → [B, o] =
    Σ over contiguous groups of k of x∘y, then the signed square root and L2 normalisation, in one
    pass (and one pass backward)."""
    op = "factorized_bilinear_pool"
    check_int(op, "k", k, 1)
    x, y = _same_dtype(x, y)
    out, _ = torch.ops.cvops._factorized_bilinear_pool(x, y, k, bool(signed_sqrt), bool(l2_normalize), _check_eps(op, eps))
    return out


def lowrank_bilinear_score(x: Tensor, U: Tensor, *, num_positive) -> Tensor:
    """Low-rank bilinear classifier scores (Kong & Fowlkes 2017): x [B, C, *spatial], U [K, C, r] →
    [B, K] = Σ_p ‖U₊ᵀx_p‖² − ‖U₋ᵀx_p‖², U₊ = U[:, :, :num_positive], U₋ the rest; i.e. the
    bilinear form tr(W·Σ_p x_p x_pᵀ) with W = U₊U₊ᵀ − U₋U₋ᵀ of rank r, without forming W or the Gram.
    Differentiable in x and U."""
    check_int("lowrank_bilinear_score", "num_positive", num_positive, 0)
    x, U = _same_dtype(x, U)
    return torch.ops.cvops.lowrank_bilinear_score(x, U, num_positive)


# ---------------------------------------------------------------------------- fake kernels


def _opmath(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_features_fake(op, x):
    torch._check(x.dim() >= 2, lambda: f"cvops.{op}: x must have at least 2 dimensions [B, C, *spatial], got {x.dim()}")
    torch._check(x.dtype.is_floating_point, lambda: f"cvops.{op}: x must be a floating-point tensor, got {x.dtype}")


def _pool_outputs(x, width, l2_normalize):
    batch = x.shape[0]
    return x.new_empty(batch, width), x.new_empty((batch if l2_normalize else 0,), dtype=_opmath(x.dtype))


def _input_grads(x, y):
    # The backward ops return contiguous gradients.
    return x.new_empty(x.shape), (x.new_empty((0,)) if y is None else y.new_empty(y.shape))


@torch.library.register_fake("cvops::_bilinear_pool")
def _bilinear_pool_fake(x, y, reduce, signed_sqrt, l2_normalize, eps):
    _check_features_fake("bilinear_pool", x)
    channels_y = x.shape[1] if y is None else y.shape[1]
    return _pool_outputs(x, x.shape[1] * channels_y, l2_normalize)


@torch.library.register_fake("cvops::_bilinear_pool_backward")
def _bilinear_pool_backward_fake(grad, x, y, out, norm, reduce, signed_sqrt, l2_normalize):
    return _input_grads(x, y)


@torch.library.register_fake("cvops::_compact_bilinear_pool_ts")
def _tensor_sketch_pool_fake(x, y, h1, s1, h2, s2, output_dim, reduce, signed_sqrt, l2_normalize, eps):
    _check_features_fake("tensor_sketch_pool", x)
    torch._check(output_dim >= 1, lambda: f"cvops.tensor_sketch_pool: output_dim must be >= 1, got {output_dim}")
    return _pool_outputs(x, output_dim, l2_normalize)


@torch.library.register_fake("cvops::_compact_bilinear_pool_ts_backward")
def _tensor_sketch_pool_backward_fake(grad, x, y, h1, s1, h2, s2, out, norm, reduce, signed_sqrt, l2_normalize):
    return _input_grads(x, y)


@torch.library.register_fake("cvops::_compact_bilinear_pool_rm")
def _random_maclaurin_pool_fake(x, y, w1, w2, reduce, signed_sqrt, l2_normalize, eps):
    _check_features_fake("random_maclaurin_pool", x)
    return _pool_outputs(x, w1.shape[1], l2_normalize)


@torch.library.register_fake("cvops::_compact_bilinear_pool_rm_backward")
def _random_maclaurin_pool_backward_fake(grad, x, y, w1, w2, out, norm, reduce, signed_sqrt, l2_normalize):
    return _input_grads(x, y)


@torch.library.register_fake("cvops::_factorized_bilinear_pool")
def _factorized_bilinear_pool_fake(x, y, k, signed_sqrt, l2_normalize, eps):
    torch._check(x.dim() == 2, lambda: f"cvops.factorized_bilinear_pool: x must have 2 dimensions [B, k·o], got {x.dim()}")
    torch._check(k >= 1, lambda: f"cvops.factorized_bilinear_pool: k must be >= 1, got {k}")
    return _pool_outputs(x, x.shape[1] // k, l2_normalize)


@torch.library.register_fake("cvops::_factorized_bilinear_pool_backward")
def _factorized_bilinear_pool_backward_fake(grad, x, y, out, norm, k, signed_sqrt, l2_normalize):
    return x.new_empty(x.shape), y.new_empty(y.shape)


@torch.library.register_fake("cvops::lowrank_bilinear_score")
def _lowrank_bilinear_score_fake(x, U, num_positive):
    _check_features_fake("lowrank_bilinear_score", x)
    torch._check(U.dim() == 3, lambda: f"cvops.lowrank_bilinear_score: U must have shape [K, C, r], got {U.dim()} dims")
    return x.new_empty(x.shape[0], U.shape[0])


@torch.library.register_fake("cvops::_lowrank_bilinear_score_backward")
def _lowrank_bilinear_score_backward_fake(grad, x, U, num_positive):
    return x.new_empty(x.shape), U.new_empty(U.shape)


# ---------------------------------------------------------------------------- autograd
# Each pooling op saves its inputs, out and norm (never the C·D-sized pre-epilogue values): the
# backward reads the signed sqrt's slope back from out·norm.


def _input_grad_slots(ctx, grad_x, grad_y, y):
    return (grad_x if ctx.needs_input_grad[0] else None,
            grad_y if (y is not None and ctx.needs_input_grad[1]) else None)


def _bilinear_pool_setup(ctx, inputs, output):
    x, y, ctx.reduce, ctx.signed_sqrt, ctx.l2_normalize, _ = inputs
    out, norm = output
    ctx.mark_non_differentiable(norm)
    ctx.has_y = y is not None
    ctx.save_for_backward(x, y, out, norm)


def _bilinear_pool_backward(ctx, grad, _grad_norm):
    x, y, out, norm = ctx.saved_tensors
    grad_x, grad_y = torch.ops.cvops._bilinear_pool_backward(grad, x, y, out, norm, ctx.reduce, ctx.signed_sqrt,
                                                            ctx.l2_normalize)
    return (*_input_grad_slots(ctx, grad_x, grad_y, y), None, None, None, None)


torch.library.register_autograd("cvops::_bilinear_pool", _bilinear_pool_backward, setup_context=_bilinear_pool_setup)


def _tensor_sketch_setup(ctx, inputs, output):
    x, y, h1, s1, h2, s2, _, ctx.reduce, ctx.signed_sqrt, ctx.l2_normalize, _ = inputs
    out, norm = output
    ctx.mark_non_differentiable(norm)
    ctx.save_for_backward(x, y, h1, s1, h2, s2, out, norm)


def _tensor_sketch_backward(ctx, grad, _grad_norm):
    x, y, h1, s1, h2, s2, out, norm = ctx.saved_tensors
    grad_x, grad_y = torch.ops.cvops._compact_bilinear_pool_ts_backward(grad, x, y, h1, s1, h2, s2, out, norm, ctx.reduce,
                                                                 ctx.signed_sqrt, ctx.l2_normalize)
    return (*_input_grad_slots(ctx, grad_x, grad_y, y), None, None, None, None, None, None, None, None, None)


torch.library.register_autograd("cvops::_compact_bilinear_pool_ts", _tensor_sketch_backward, setup_context=_tensor_sketch_setup)


def _random_maclaurin_setup(ctx, inputs, output):
    x, y, w1, w2, ctx.reduce, ctx.signed_sqrt, ctx.l2_normalize, _ = inputs
    out, norm = output
    ctx.mark_non_differentiable(norm)
    ctx.save_for_backward(x, y, w1, w2, out, norm)


def _random_maclaurin_backward(ctx, grad, _grad_norm):
    x, y, w1, w2, out, norm = ctx.saved_tensors
    grad_x, grad_y = torch.ops.cvops._compact_bilinear_pool_rm_backward(grad, x, y, w1, w2, out, norm, ctx.reduce,
                                                                    ctx.signed_sqrt, ctx.l2_normalize)
    return (*_input_grad_slots(ctx, grad_x, grad_y, y), None, None, None, None, None, None)


torch.library.register_autograd("cvops::_compact_bilinear_pool_rm", _random_maclaurin_backward,
                                setup_context=_random_maclaurin_setup)


def _factorized_setup(ctx, inputs, output):
    x, y, ctx.k, ctx.signed_sqrt, ctx.l2_normalize, _ = inputs
    out, norm = output
    ctx.mark_non_differentiable(norm)
    ctx.save_for_backward(x, y, out, norm)


def _factorized_backward(ctx, grad, _grad_norm):
    x, y, out, norm = ctx.saved_tensors
    grad_x, grad_y = torch.ops.cvops._factorized_bilinear_pool_backward(grad, x, y, out, norm, ctx.k, ctx.signed_sqrt,
                                                                       ctx.l2_normalize)
    return (*_input_grad_slots(ctx, grad_x, grad_y, y), None, None, None, None)


torch.library.register_autograd("cvops::_factorized_bilinear_pool", _factorized_backward, setup_context=_factorized_setup)


def _lowrank_setup(ctx, inputs, output):
    x, U, ctx.num_positive = inputs
    ctx.save_for_backward(x, U)


def _lowrank_backward(ctx, grad):
    x, U = ctx.saved_tensors
    grad_x, grad_u = torch.ops.cvops._lowrank_bilinear_score_backward(grad, x, U, ctx.num_positive)
    return (grad_x if ctx.needs_input_grad[0] else None, grad_u if ctx.needs_input_grad[1] else None, None)


torch.library.register_autograd("cvops::lowrank_bilinear_score", _lowrank_backward, setup_context=_lowrank_setup)
