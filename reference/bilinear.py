"""Reference bilinear pooling and its approximations, written the textbook way: explicit outer
products, the FFT Tensor Sketch (count sketch per position, rfft, product, irfft, sum), explicit
random projections, unfused MFB, explicit low-rank scores. Float64-capable; slow by design.
Arguments as cvops's: normalize "hw" (divide by the number of positions) or "none" (sum)."""

import math

import torch
import torch.nn.functional as F


def epilogue(z, signed_sqrt=True, l2_normalize=True, eps=1e-8):
    """sign(z)·√(|z| + eps) if signed_sqrt, then F.normalize over the last dim if l2_normalize."""
    if signed_sqrt:
        z = torch.sign(z) * torch.sqrt(torch.abs(z) + eps)
    if l2_normalize:
        z = F.normalize(z, dim=-1)
    return z


def _positions(x):
    """[B, C, *spatial] (or [B, C]) → [B, N, C]."""
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:])).transpose(1, 2)


def _normalize(total, points, normalize):
    return total / max(points, 1) if normalize == "hw" else total


def bilinear_pool(x, y=None, normalize="hw", signed_sqrt=True, l2_normalize=True, eps=1e-8):
    px = _positions(x)
    py = px if y is None else _positions(y)
    outer = px.unsqueeze(-1) * py.unsqueeze(-2)  # [B, N, C, D]: every x_p y_pᵀ
    pooled = _normalize(outer.sum(1), px.shape[1], normalize).flatten(1)
    return epilogue(pooled, signed_sqrt, l2_normalize, eps)


def _count_sketch(v, h, s, d):
    """v [..., C] → [..., d]: Σ_{c: h(c) = k} s(c)·v_c."""
    out = v.new_zeros(*v.shape[:-1], d)
    return out.index_add_(-1, h, v * s.to(v.dtype))


def compact_bilinear_pool(
    x, y=None, *, params, output_dim=None, kind="ts", normalize="hw", signed_sqrt=True, l2_normalize=True, eps=1e-8
):
    """params as cvops.compact_bilinear_params(kind, ...) makes them.

    kind "ts": Gao et al.'s FFT formulation: per position, irfft(rfft(CS1(x_p))·rfft(CS2(y_p))) with
    count sketches CS into output_dim bins, then summed. kind "rm": explicit random projections,
    Σ_p (W1ᵀx_p)∘(W2ᵀy_p)/√d (output_dim is W1's width)."""
    px = _positions(x)
    py = px if y is None else _positions(y)
    if kind == "ts":
        h1, s1, h2, s2 = params
        d = output_dim
        fx = torch.fft.rfft(_count_sketch(px, h1, s1, d), n=d)
        fy = torch.fft.rfft(_count_sketch(py, h2, s2, d), n=d)
        per_position = torch.fft.irfft(fx * fy, n=d)  # [B, N, d]
    else:
        w1, w2 = params
        per_position = (px @ w1.to(px.dtype)) * (py @ w2.to(py.dtype)) / w1.shape[1] ** 0.5  # [B, N, d]
    pooled = _normalize(per_position.sum(1), px.shape[1], normalize)
    return epilogue(pooled, signed_sqrt, l2_normalize, eps)


def factorized_bilinear_pool(x, y, k, signed_sqrt=True, l2_normalize=True, eps=1e-8):
    product = x * y
    pooled = product.reshape(x.shape[0], x.shape[1] // k, k).sum(-1)
    return epilogue(pooled, signed_sqrt, l2_normalize, eps)


def lowrank_bilinear_score(x, u, num_positive):
    px = _positions(x)  # [B, N, C]
    projected = torch.einsum("bnc,kcr->bknr", px, u.to(px.dtype))
    squares = projected.square().sum(2)  # [B, K, r]
    return squares[..., :num_positive].sum(-1) - squares[..., num_positive:].sum(-1)
