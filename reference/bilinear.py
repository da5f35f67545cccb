"""Reference bilinear pooling and its approximations, written the textbook way: explicit outer
products, the FFT Tensor Sketch (count sketch per position, rfft, product, irfft, sum), explicit
random projections, unfused MFB, explicit low-rank scores. Float64-capable; slow by design."""
import math

import torch
import torch.nn.functional as F


def signed_sqrt(z, eps=1e-8):
    return torch.sign(z) * torch.sqrt(torch.abs(z) + eps)


def epilogue(z, signed_sqrt_on=True, l2_normalize=True, eps=1e-8):
    if signed_sqrt_on:
        z = signed_sqrt(z, eps)
    if l2_normalize:
        z = F.normalize(z, dim=-1)
    return z


def _positions(x):
    """[B, C, *spatial] (or [B, C]) → [B, N, C]."""
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:])).transpose(1, 2)


def _reduce(total, points, reduce):
    return total / max(points, 1) if reduce == "mean" else total


def bilinear_pool(x, y=None, reduce="mean", signed_sqrt_on=True, l2_normalize=True, eps=1e-8):
    px = _positions(x)
    py = px if y is None else _positions(y)
    outer = px.unsqueeze(-1) * py.unsqueeze(-2)  # [B, N, C, D]: every x_p y_pᵀ
    pooled = _reduce(outer.sum(1), px.shape[1], reduce).flatten(1)
    return epilogue(pooled, signed_sqrt_on, l2_normalize, eps)


def count_sketch(v, h, s, d):
    """v [..., C] → [..., d]: Σ_{c: h(c) = k} s(c)·v_c."""
    out = v.new_zeros(*v.shape[:-1], d)
    return out.index_add_(-1, h, v * s.to(v.dtype))


def tensor_sketch_fft(x, y, h1, s1, h2, s2, d, reduce="mean", signed_sqrt_on=True, l2_normalize=True, eps=1e-8):
    """Gao et al.'s formulation: per position, irfft(rfft(CS1(x_p))·rfft(CS2(y_p))), then summed."""
    px = _positions(x)
    py = px if y is None else _positions(y)
    fx = torch.fft.rfft(count_sketch(px, h1, s1, d), n=d)
    fy = torch.fft.rfft(count_sketch(py, h2, s2, d), n=d)
    per_position = torch.fft.irfft(fx * fy, n=d)  # [B, N, d]
    pooled = _reduce(per_position.sum(1), px.shape[1], reduce)
    return epilogue(pooled, signed_sqrt_on, l2_normalize, eps)


def random_maclaurin(x, y, w1, w2, reduce="mean", signed_sqrt_on=True, l2_normalize=True, eps=1e-8):
    px = _positions(x)
    py = px if y is None else _positions(y)
    d = w1.shape[1]
    projected = (px @ w1.to(px.dtype)) * (py @ w2.to(py.dtype)) / d**0.5  # [B, N, d]
    pooled = _reduce(projected.sum(1), px.shape[1], reduce)
    return epilogue(pooled, signed_sqrt_on, l2_normalize, eps)


def factorized_bilinear_pool(x, y, k, signed_sqrt_on=True, l2_normalize=True, eps=1e-8):
    product = x * y
    pooled = product.reshape(x.shape[0], x.shape[1] // k, k).sum(-1)
    return epilogue(pooled, signed_sqrt_on, l2_normalize, eps)


def lowrank_bilinear_score(x, u, num_positive):
    px = _positions(x)  # [B, N, C]
    projected = torch.einsum("bnc,kcr->bknr", px, u.to(px.dtype))
    squares = projected.square().sum(2)  # [B, K, r]
    return squares[..., :num_positive].sum(-1) - squares[..., num_positive:].sum(-1)
