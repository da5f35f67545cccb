"""The bilinear family: bilinear_pool, compact_bilinear_pool (Tensor Sketch against the textbook FFT
formulation, Random Maclaurin against explicit projections), factorized_bilinear_pool (unfused MFB)
and lowrank_bilinear_score (explicit LRBP) against reference/bilinear.py in float64; autograd,
opcheck, torch.compile, determinism, edge sizes, bad input, the nn modules and CUDA."""

import itertools
import math

import pytest
import torch

import cvops
import cvops.nn
from reference import bilinear as ref
from tolerances import cuda_rtol

EPILOGUES = list(itertools.product([True, False], [True, False]))  # (signed_sqrt, l2_normalize)
# Looser than the CUDA table for the pooled vectors: the signed square root halves the exponent of
# every entry and doubles the relative error of entries near 0, and a sketch bin sums C·D signed
# products that largely cancel; the L2 step then spreads the largest error over the whole row.
POOL_RTOL = dict(float32=1e-4, float16=2e-3, bfloat16=2e-2)


def randn(*shape, device="cpu", dtype=torch.float64, requires_grad=False):
    return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(requires_grad)


def ts_params(c, d_channels, d, seed=0, dtype=torch.float64, device="cpu"):
    h1, s1, h2, s2 = cvops.compact_bilinear_params("ts", c, d_channels, d, seed, device=device)
    return h1, s1.to(dtype), h2, s2.to(dtype)


def close(got, want, tol=1e-12):
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------- values (float64)


@pytest.mark.parametrize(
    "shape_x,channels_y", [((2, 5, 3, 4), None), ((2, 5, 3, 4), 6), ((3, 4, 7), 2), ((2, 3), 4), ((1, 70, 2, 3), None)]
)
@pytest.mark.parametrize("normalize", ["hw", "none"])
@pytest.mark.parametrize("signed_sqrt,l2", EPILOGUES)
def test_bilinear_pool_matches_outer_products(shape_x, channels_y, normalize, signed_sqrt, l2):
    x = randn(*shape_x)
    y = None if channels_y is None else randn(shape_x[0], channels_y, *shape_x[2:])
    got = cvops.bilinear_pool(x, y, normalize=normalize, signed_sqrt=signed_sqrt, l2_normalize=l2)
    close(got, ref.bilinear_pool(x, y, normalize, signed_sqrt, l2))


@pytest.mark.parametrize("with_y", [False, True])
@pytest.mark.parametrize("normalize", ["hw", "none"])
@pytest.mark.parametrize("l2", [True, False])
def test_tensor_sketch_matches_fft_formulation(with_y, normalize, l2):
    x = randn(2, 6, 3, 5)
    y = randn(2, 4, 3, 5) if with_y else None
    d = 11
    params = ts_params(6, 4 if with_y else 6, d, seed=5)
    got = cvops.compact_bilinear_pool(
        x, y, output_dim=d, params=params, normalize=normalize, signed_sqrt=False, l2_normalize=l2
    )
    close(
        got,
        ref.compact_bilinear_pool(
            x, y, params=params, output_dim=d, normalize=normalize, signed_sqrt=False, l2_normalize=l2
        ),
    )


@pytest.mark.parametrize("channels", [70, 130])
def test_tensor_sketch_symmetric_panels(channels):
    """y = x on CPU sketches the Gram's upper-triangle GEMM panels directly (2–3 panels here)."""
    x, d = randn(3, channels, 3, 3), 97
    params = ts_params(channels, channels, d, seed=2)
    got = cvops.compact_bilinear_pool(x, output_dim=d, params=params, signed_sqrt=False)
    close(got, ref.compact_bilinear_pool(x, params=params, output_dim=d, signed_sqrt=False))
    via_gemm = cvops.compact_bilinear_pool(x, x, output_dim=d, params=params, signed_sqrt=False)  # the bmm route
    close(got, via_gemm)


def test_tensor_sketch_signed_sqrt_matches_fft_formulation():
    # The FFT leaves ~1e-16 instead of 0 in empty bins, which sign(z)·√(|z| + eps) turns into √eps:
    # compare where every bin is hit (36 channel pairs into 7 bins).
    x, d = randn(3, 6, 4, 4), 7
    params = ts_params(6, 6, d, seed=1)
    bins = (params[0][:, None] + params[2][None, :]) % d
    assert bins.unique().numel() == d
    close(
        cvops.compact_bilinear_pool(x, output_dim=d, params=params),
        ref.compact_bilinear_pool(x, params=params, output_dim=d),
        1e-10,
    )


def test_tensor_sketch_is_seeded():
    x = randn(2, 8, 3, 3)
    a = cvops.compact_bilinear_pool(x, output_dim=32, seed=3)
    assert torch.equal(a, cvops.compact_bilinear_pool(x, output_dim=32, seed=3))
    assert not torch.equal(a, cvops.compact_bilinear_pool(x, output_dim=32, seed=4))
    assert torch.equal(
        a, cvops.compact_bilinear_pool(x, output_dim=32, params=cvops.compact_bilinear_params("ts", 8, 8, 32, 3))
    )


def test_tensor_sketch_approximates_the_bilinear_kernel():
    """⟨TS(a), TS(b)⟩ is an unbiased estimate of ⟨vec G_a, vec G_b⟩: its mean over seeds is close."""
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    full = cvops.bilinear_pool(x, signed_sqrt=False, l2_normalize=False)
    exact = full[0] @ full[1]
    estimates = []
    for seed in range(64):
        sketch = cvops.compact_bilinear_pool(x, output_dim=256, seed=seed, signed_sqrt=False, l2_normalize=False)
        estimates.append(sketch[0] @ sketch[1])
    estimates = torch.stack(estimates)
    assert abs(estimates.mean() - exact) < 3 * estimates.std() / 8


@pytest.mark.parametrize("with_y", [False, True])
@pytest.mark.parametrize("normalize", ["hw", "none"])
@pytest.mark.parametrize("signed_sqrt,l2", EPILOGUES)
def test_random_maclaurin_matches_projections(with_y, normalize, signed_sqrt, l2):
    x = randn(2, 6, 3, 5)
    y = randn(2, 4, 3, 5) if with_y else None
    w1, w2 = cvops.compact_bilinear_params("rm", 6, 4 if with_y else 6, 9, seed=2)
    got = cvops.compact_bilinear_pool(
        x, y, output_dim=9, kind="rm", seed=2, normalize=normalize, signed_sqrt=signed_sqrt, l2_normalize=l2
    )
    close(
        got,
        ref.compact_bilinear_pool(
            x, y, params=(w1, w2), kind="rm", normalize=normalize, signed_sqrt=signed_sqrt, l2_normalize=l2
        ),
    )


def test_random_maclaurin_chunks_positions():
    """More positions than one GEMM chunk holds (2^20 / d rows): the chunks add up in order."""
    x, d = randn(3, 4, 30, 30), 2048  # 2700 rows, 512 per chunk
    w1, w2 = cvops.compact_bilinear_params("rm", 4, 4, d)
    close(
        cvops.compact_bilinear_pool(x, output_dim=d, kind="rm", signed_sqrt=False),
        ref.compact_bilinear_pool(x, params=(w1, w2), kind="rm", signed_sqrt=False),
    )


@pytest.mark.parametrize("k,o", [(1, 7), (3, 5), (5, 4), (6, 3), (8, 2)])
@pytest.mark.parametrize("signed_sqrt,l2", EPILOGUES)
def test_factorized_matches_unfused_mfb(k, o, signed_sqrt, l2):
    x, y = randn(4, k * o), randn(4, k * o)
    got = cvops.factorized_bilinear_pool(x, y, k=k, signed_sqrt=signed_sqrt, l2_normalize=l2)
    close(got, ref.factorized_bilinear_pool(x, y, k, signed_sqrt, l2))


@pytest.mark.parametrize(
    "shape,classes,rank,positive",
    [((2, 5, 3, 4), 7, 4, 2), ((3, 6, 5), 3, 3, 0), ((2, 4), 5, 2, 2), ((1, 8, 40, 40), 2, 1, 1)],
)
def test_lowrank_matches_explicit_scores(shape, classes, rank, positive):
    x, u = randn(*shape), randn(classes, shape[1], rank)
    close(cvops.lowrank_bilinear_score(x, u, num_positive=positive), ref.lowrank_bilinear_score(x, u, positive), 1e-10)


@pytest.mark.parametrize(
    "make",
    [
        lambda: randn(2, 4, 5, 3).transpose(2, 3),
        lambda: randn(2, 4, 5, 3).to(memory_format=torch.channels_last),
        lambda: randn(2, 8, 5, 3)[:, ::2],
    ],
    ids=["transposed", "channels_last", "sliced"],
)
def test_non_contiguous(make):
    x, y = make(), make()
    assert not x.is_contiguous()
    close(cvops.bilinear_pool(x, y), ref.bilinear_pool(x, y))
    params = ts_params(4, 4, 6)
    close(
        cvops.compact_bilinear_pool(x, y, output_dim=6, params=params, signed_sqrt=False),
        ref.compact_bilinear_pool(x, y, params=params, output_dim=6, signed_sqrt=False),
    )
    u = randn(3, 4, 2)
    close(cvops.lowrank_bilinear_score(x, u, num_positive=1), ref.lowrank_bilinear_score(x, u, 1), 1e-10)
    xf, yf = randn(3, 12).t(), randn(3, 12).t()
    close(cvops.factorized_bilinear_pool(xf, yf, k=3), ref.factorized_bilinear_pool(xf, yf, 3))


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 4, 0, 3), (1, 1, 1, 1), (2, 0, 3, 3)])
def test_edge_sizes(shape):
    x = randn(*shape)
    out = cvops.bilinear_pool(x)
    assert out.shape == (shape[0], shape[1] ** 2)
    close(out, ref.bilinear_pool(x))
    sketch = cvops.compact_bilinear_pool(x, output_dim=5)
    assert sketch.shape == (shape[0], 5) and torch.isfinite(sketch).all()
    rm = cvops.compact_bilinear_pool(x, output_dim=5, kind="rm")
    assert rm.shape == (shape[0], 5) and torch.isfinite(rm).all()
    u = randn(3, shape[1], 2)
    assert cvops.lowrank_bilinear_score(x, u, num_positive=1).shape == (shape[0], 3)
    if x.numel() == 0:
        assert not sketch.any() and not rm.any()


def test_factorized_edge_sizes():
    for batch, k, o in [(0, 2, 3), (1, 1, 1), (3, 4, 0)]:
        x, y = randn(batch, k * o, requires_grad=True), randn(batch, k * o, requires_grad=True)
        out = cvops.factorized_bilinear_pool(x, y, k=k)
        assert out.shape == (batch, o)
        close(out, ref.factorized_bilinear_pool(x, y, k))
        out.sum().backward()
        assert x.grad.shape == x.shape


def test_zero_input_is_finite_with_zero_gradient():
    x = torch.zeros(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    out = cvops.bilinear_pool(x)
    assert not out.any()
    (out.sum()).backward()
    assert torch.isfinite(x.grad).all() and not x.grad.any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_reduced_precision_cpu(dtype):
    x = torch.rand(2, 16, 5, 5).to(dtype)
    y = torch.rand(2, 12, 5, 5).to(dtype)
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    got = cvops.bilinear_pool(x, y)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), ref.bilinear_pool(x.double(), y.double()), rtol=tol, atol=tol / 10)
    params = ts_params(16, 12, 64)
    sketch = cvops.compact_bilinear_pool(x, y, output_dim=64, params=params, signed_sqrt=False)
    torch.testing.assert_close(
        sketch.double(),
        ref.compact_bilinear_pool(x.double(), y.double(), params=params, output_dim=64, signed_sqrt=False),
        rtol=tol,
        atol=tol / 10,
    )
    xf, yf = torch.rand(4, 30).to(dtype), torch.rand(4, 30).to(dtype)
    torch.testing.assert_close(
        cvops.factorized_bilinear_pool(xf, yf, k=3).double(),
        ref.factorized_bilinear_pool(xf.double(), yf.double(), 3),
        rtol=tol,
        atol=tol / 10,
    )


def test_mixed_dtypes_promote():
    x, y = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4, dtype=torch.float64)
    assert cvops.bilinear_pool(x, y).dtype == torch.float64
    assert (
        cvops.lowrank_bilinear_score(x, torch.rand(2, 3, 2, dtype=torch.float64), num_positive=1).dtype == torch.float64
    )


def test_inputs_are_not_mutated():
    x, y = randn(2, 4, 3, 3, requires_grad=True), randn(2, 5, 3, 3, requires_grad=True)
    u = randn(3, 4, 2, requires_grad=True)
    params = ts_params(4, 5, 7)
    xf, yf = randn(2, 6, requires_grad=True), randn(2, 6, requires_grad=True)
    tensors = [x, y, u, xf, yf, *params]
    saved = [t.detach().clone() for t in tensors]
    cvops.bilinear_pool(x, y).sum().backward()
    cvops.bilinear_pool(x).sum().backward()
    cvops.compact_bilinear_pool(x, y, output_dim=7, params=params).sum().backward()
    cvops.compact_bilinear_pool(x, y, output_dim=7, kind="rm").sum().backward()
    cvops.lowrank_bilinear_score(x, u, num_positive=1).sum().backward()
    cvops.factorized_bilinear_pool(xf, yf, k=2).sum().backward()
    for before, after in zip(saved, tensors):
        assert torch.equal(before, after.detach())


def test_deterministic_bitwise():
    x = torch.rand(3, 64, 9, 9, requires_grad=True)

    def run():
        x.grad = None
        out = cvops.compact_bilinear_pool(x, output_dim=512) + cvops.compact_bilinear_pool(x, output_dim=512, kind="rm")
        (out * torch.arange(512.0)).sum().backward()
        return out.detach(), x.grad.clone()

    (a, ga), (b, gb) = run(), run()
    assert torch.equal(a, b) and torch.equal(ga, gb)


# ---------------------------------------------------------------------------- autograd


@pytest.mark.parametrize("with_y", [False, True])
@pytest.mark.parametrize("normalize", ["hw", "none"])
@pytest.mark.parametrize("signed_sqrt,l2", EPILOGUES)
def test_bilinear_pool_gradcheck(with_y, normalize, signed_sqrt, l2):
    x = randn(2, 3, 2, 3, requires_grad=True)
    inputs = (x, randn(2, 4, 2, 3, requires_grad=True)) if with_y else (x,)
    fn = lambda *t: cvops.bilinear_pool(*t, normalize=normalize, signed_sqrt=signed_sqrt, l2_normalize=l2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("kind", ["ts", "rm"])
@pytest.mark.parametrize("with_y", [False, True])
@pytest.mark.parametrize("signed_sqrt,l2", [(True, True), (False, False)])
def test_compact_gradcheck(kind, with_y, signed_sqrt, l2):
    x = randn(2, 3, 2, 3, requires_grad=True)
    inputs = (x, randn(2, 4, 2, 3, requires_grad=True)) if with_y else (x,)
    fn = lambda *t: cvops.compact_bilinear_pool(*t, output_dim=5, kind=kind, signed_sqrt=signed_sqrt, l2_normalize=l2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("signed_sqrt,l2", EPILOGUES)
def test_factorized_gradcheck(signed_sqrt, l2):
    x, y = randn(3, 12, requires_grad=True), randn(3, 12, requires_grad=True)
    fn = lambda a, b: cvops.factorized_bilinear_pool(a, b, k=3, signed_sqrt=signed_sqrt, l2_normalize=l2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y))


@pytest.mark.parametrize("positive", [0, 1, 3])
def test_lowrank_gradcheck(positive):
    x, u = randn(2, 4, 2, 3, requires_grad=True), randn(3, 4, 3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: cvops.lowrank_bilinear_score(a, b, num_positive=positive), (x, u))


def test_gradient_of_one_input_only():
    x, y = randn(2, 3, 4, requires_grad=True), randn(2, 5, 4)
    cvops.bilinear_pool(x, y).sum().backward()
    assert x.grad is not None and y.grad is None


def test_norm_output_is_not_differentiable():
    x = randn(2, 3, 4, requires_grad=True)
    out, norm = torch.ops.cvops._bilinear_pool(x, None, "hw", True, True, 1e-8)
    assert out.requires_grad and not norm.requires_grad
    close(norm, ref.epilogue(ref.bilinear_pool(x, None, "hw", False, False), l2_normalize=False).norm(dim=1))


# ---------------------------------------------------------------------------- torch.library checks


def _opcheck_cases():
    x, xg = randn(2, 4, 3, 2), randn(2, 4, 3, 2, requires_grad=True)
    yg = randn(2, 3, 3, 2, requires_grad=True)
    h1, s1, h2, s2 = ts_params(4, 3, 6)
    w1, w2 = (w.double() for w in cvops.compact_bilinear_params("rm", 4, 3, 6))
    xf, yf = randn(3, 8, requires_grad=True), randn(3, 8, requires_grad=True)
    out, norm = torch.ops.cvops._bilinear_pool(x, None, "hw", True, True, 1e-8)
    return [
        ("_bilinear_pool", (xg, yg, "hw", True, True, 1e-8)),
        ("_bilinear_pool", (x, None, "none", False, False, 1e-8)),
        ("_bilinear_pool_backward", (randn(2, 16), x, None, out, norm, "hw", True, True)),
        ("_compact_bilinear_pool_ts", (xg, yg, h1, s1, h2, s2, 6, "hw", True, True, 1e-8)),
        ("_compact_bilinear_pool_ts", (xg, None, h1, s1, h1, s1, 6, "none", False, True, 1e-8)),
        ("_compact_bilinear_pool_rm", (xg, yg, w1, w2, "hw", True, True, 1e-8)),
        ("_compact_bilinear_pool_rm", (xg, None, w1, w1, "none", True, False, 1e-8)),
        ("_factorized_bilinear_pool", (xf, yf, 4, True, True, 1e-8)),
        ("_factorized_bilinear_pool", (xf, yf, 2, False, False, 1e-8)),
        ("lowrank_bilinear_score", (xg, randn(5, 4, 3, requires_grad=True), 2)),
        ("_lowrank_bilinear_score_backward", (randn(2, 5), x, randn(5, 4, 3), 1)),
    ]


@pytest.mark.parametrize("name,args", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, args):
    torch.library.opcheck(getattr(torch.ops.cvops, name).default, args)


class _Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.compact = cvops.nn.CompactBilinearPool(6, 32)
        self.rm = cvops.nn.CompactBilinearPool(6, 16, kind="rm", in_channels2=4)
        self.lowrank = cvops.nn.LowRankBilinearClassifier(6, 3, rank=2)
        self.mfb = cvops.nn.MFB(6, 4, k=3, o=5, dropout=0.0)

    def forward(self, x, y):
        pooled = torch.cat(
            [cvops.bilinear_pool(x, y), self.compact(x), self.rm(x, y), self.mfb(x.mean((2, 3)), y.mean((2, 3)))], 1
        )
        return pooled.square().sum() + self.lowrank(x).sum()


def test_torch_compile_fullgraph_aot_eager():
    """Forward and (AOT-compiled) backward of every op match eager."""
    torch._dynamo.reset()
    head = _Head()
    x, y = torch.rand(2, 6, 4, 4, requires_grad=True), torch.rand(2, 4, 4, 4, requires_grad=True)
    compiled = torch.compile(head, backend="aot_eager", fullgraph=True)
    got = compiled(x, y)
    got_grads = torch.autograd.grad(got, (x, y))
    want = head(x, y)
    want_grads = torch.autograd.grad(want, (x, y))
    torch.testing.assert_close(got, want)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b)


def test_torch_compile_inductor_dynamic():
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: cvops.bilinear_pool(t) * 2, backend="inductor", fullgraph=True, dynamic=True)
    for shape in [(2, 3, 4, 5), (3, 4, 6, 2)]:
        x = torch.rand(*shape)
        torch.testing.assert_close(compiled(x), 2 * ref.bilinear_pool(x))


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,error,match",
    [
        (
            lambda: cvops.bilinear_pool(randn(3)),
            RuntimeError,
            r"cvops.bilinear_pool: x must have at least 2 dimensions",
        ),
        (
            lambda: cvops.bilinear_pool(torch.ones(2, 3, 4, dtype=torch.long)),
            RuntimeError,
            r"cvops.bilinear_pool: x must be a floating-point",
        ),
        (
            lambda: cvops.bilinear_pool(randn(2, 3, 4, 5), randn(2, 3, 4, 6)),
            RuntimeError,
            r"cvops.bilinear_pool: y must have x's batch and spatial sizes \[2, D, 4, 5\], got shape \[2, 3, 4, 6\]",
        ),
        (
            lambda: cvops.bilinear_pool(randn(2, 3, 4), randn(3, 3, 4)),
            RuntimeError,
            r"cvops.bilinear_pool: y must have x's batch",
        ),
        (
            lambda: cvops.bilinear_pool(randn(2, 3, 4), normalize="max"),
            ValueError,
            r"cvops.bilinear_pool: normalize must be one of",
        ),
        (lambda: cvops.bilinear_pool(randn(2, 3, 4), eps=-1.0), ValueError, r"cvops.bilinear_pool: eps must be"),
        (
            lambda: torch.ops.cvops._bilinear_pool(randn(2, 3, 4), None, "max", True, True, 1e-8),
            RuntimeError,
            r"cvops.bilinear_pool: normalize must be 'hw' or 'none'",
        ),
        (
            lambda: cvops.compact_bilinear_pool(randn(2, 3, 4), output_dim=0),
            ValueError,
            r"cvops.compact_bilinear_pool: output_dim must be an int >= 1, got 0",
        ),
        (
            lambda: cvops.compact_bilinear_pool(randn(2, 3, 4), kind="fft"),
            ValueError,
            r"cvops.compact_bilinear_pool: kind must be one of",
        ),
        (
            lambda: cvops.compact_bilinear_pool(randn(2, 3, 4), randn(2, 3, 5), output_dim=8),
            RuntimeError,
            r"cvops.compact_bilinear_pool: y must have x's batch",
        ),
        (
            lambda: torch.ops.cvops._compact_bilinear_pool_ts(
                randn(2, 3, 4), None, *ts_params(3, 3, 8), 0, "hw", True, True, 1e-8
            ),
            RuntimeError,
            r"cvops.compact_bilinear_pool: output_dim must be >= 1, got 0",
        ),
        (
            lambda: torch.ops.cvops._compact_bilinear_pool_ts(
                randn(2, 3, 4), None, *ts_params(3, 3, 8), 4, "hw", True, True, 1e-8
            ),
            RuntimeError,
            r"cvops.compact_bilinear_pool: h1 values must lie in \[0, 4\)",
        ),
        (
            lambda: cvops.compact_bilinear_pool(randn(2, 3, 4), output_dim=8, params=ts_params(4, 3, 8)),
            RuntimeError,
            r"cvops.compact_bilinear_pool: h1 must have shape \[3\] \(one bin per channel\), got \[4\]",
        ),
        (
            lambda: cvops.compact_bilinear_pool(
                randn(2, 3, 4), output_dim=8, kind="rm", params=cvops.compact_bilinear_params("rm", 2, 3, 8)
            ),
            RuntimeError,
            r"cvops.compact_bilinear_pool: w1 must have shape \[3, output_dim\]",
        ),
        (
            lambda: cvops.factorized_bilinear_pool(randn(2, 10), randn(2, 10), k=3),
            RuntimeError,
            r"cvops.factorized_bilinear_pool: k must divide the width of x \(k·o\), got k = 3 and width 10",
        ),
        (
            lambda: cvops.factorized_bilinear_pool(randn(2, 10), randn(2, 12), k=2),
            RuntimeError,
            r"cvops.factorized_bilinear_pool: y must have x's shape",
        ),
        (
            lambda: cvops.factorized_bilinear_pool(randn(2, 10), randn(2, 10), k=0),
            ValueError,
            r"cvops.factorized_bilinear_pool: k must be an int >= 1",
        ),
        (
            lambda: cvops.factorized_bilinear_pool(randn(2, 2, 5), randn(2, 2, 5), k=5),
            RuntimeError,
            r"cvops.factorized_bilinear_pool: x must have 2 dimensions",
        ),
        (
            lambda: cvops.lowrank_bilinear_score(randn(2, 3, 4), randn(5, 4, 2), num_positive=1),
            RuntimeError,
            r"cvops.lowrank_bilinear_score: U must have shape \[K, C, r\] with C = 3 channels of x, got \[5, 4, 2\]",
        ),
        (
            lambda: cvops.lowrank_bilinear_score(randn(2, 3, 4), randn(5, 3), num_positive=1),
            RuntimeError,
            r"cvops.lowrank_bilinear_score: U must have shape",
        ),
        (
            lambda: cvops.lowrank_bilinear_score(randn(2, 3, 4), randn(5, 3, 2), num_positive=3),
            RuntimeError,
            r"cvops.lowrank_bilinear_score: num_positive must lie in \[0, r\] = \[0, 2\], got 3",
        ),
        (
            lambda: cvops.nn.CompactBilinearPool(4, 0),
            ValueError,
            r"cvops.CompactBilinearPool: output_dim must be an int >= 1",
        ),
        (
            lambda: cvops.nn.CompactBilinearPool(4, 8, in_channels2=3)(randn(2, 4, 3)),
            ValueError,
            r"cvops.CompactBilinearPool: y is required",
        ),
        (
            lambda: cvops.nn.LowRankBilinearClassifier(4, 3, rank=2, num_positive=3),
            ValueError,
            r"cvops.LowRankBilinearClassifier: num_positive",
        ),
        (lambda: cvops.nn.MFB(4, 4, dropout=1.0), ValueError, r"cvops.MFB: dropout must be"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------- nn modules


@pytest.mark.parametrize("kind", ["ts", "rm"])
def test_compact_module_state_dict_round_trip(kind):
    module = cvops.nn.CompactBilinearPool(5, 16, in_channels2=3, kind=kind, seed=7)
    names = {"ts": {"h1", "s1", "h2", "s2"}, "rm": {"w1", "w2"}}[kind]
    assert set(module.state_dict()) == names
    x, y = randn(2, 5, 3, 3), randn(2, 3, 3, 3)
    want = module.double()(x, y)
    other = cvops.nn.CompactBilinearPool(5, 16, in_channels2=3, kind=kind, seed=8).double()
    assert not torch.equal(other(x, y), want)
    other.load_state_dict(module.state_dict())
    assert torch.equal(other(x, y), want)
    assert f"kind='{kind}'" in repr(module)


def test_bilinear_module():
    module = cvops.nn.BilinearPool(normalize="none", signed_sqrt=False)
    x = randn(2, 3, 4, 4)
    close(module(x), ref.bilinear_pool(x, None, "none", False, True))
    assert "normalize='none'" in repr(module)


def test_mfb_module_matches_unfused():
    module = cvops.nn.MFB(6, 4, k=3, o=5, dropout=0.0).double()
    x, y = randn(7, 6), randn(7, 4)
    want = ref.factorized_bilinear_pool(module.proj_x(x), module.proj_y(y), 3)
    close(module(x, y), want)
    close(module(x.view(7, 1, 6).expand(7, 2, 6), y.view(7, 1, 4).expand(7, 2, 4))[:, 1], want)  # leading dims


def test_mfb_dropout_is_on_the_product():
    module = cvops.nn.MFB(6, 4, k=3, o=5, dropout=0.5).double().train()
    x, y = randn(3, 6), randn(3, 4)
    torch.manual_seed(1)
    got, expanded = module(x, y, return_expanded=True)
    torch.manual_seed(1)
    product = torch.nn.functional.dropout(module.proj_x(x) * module.proj_y(y), 0.5)
    close(expanded, product)
    close(got, ref.factorized_bilinear_pool(product, torch.ones_like(product), 3))


def test_mfh_module_cascades():
    module = cvops.nn.MFH(6, 4, k=2, o=3, order=2, dropout=0.0).double()
    x, y = randn(5, 6), randn(5, 4)
    s1, s2 = module.stages
    e1 = s1.proj_x(x) * s1.proj_y(y)
    e2 = s2.proj_x(x) * s2.proj_y(y) * e1
    want = torch.cat(
        [
            ref.factorized_bilinear_pool(e1, torch.ones_like(e1), 2),
            ref.factorized_bilinear_pool(e2, torch.ones_like(e2), 2),
        ],
        1,
    )
    close(module(x, y), want)


def test_mlb_module():
    module = cvops.nn.MLB(6, 4, rank=8, output_dim=3).double()
    x, y = randn(5, 6), randn(5, 4)
    close(module(x, y), module.out(torch.tanh(module.proj_x(x)) * torch.tanh(module.proj_y(y))))


def test_lowrank_module():
    module = cvops.nn.LowRankBilinearClassifier(6, 4, rank=4, reduced_channels=3).double()
    x = randn(2, 6, 5, 5)
    want = ref.lowrank_bilinear_score(module.reduce(x), module.U, 2) + module.bias
    close(module(x), want, 1e-10)
    assert "num_positive=2" in repr(module)


# ---------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("with_y", [False, True])
def test_cuda_pools(dtype, with_y):
    x = torch.rand(3, 64, 9, 9, device="cuda").to(dtype)
    y = torch.rand(3, 48, 9, 9, device="cuda").to(dtype) if with_y else None
    xd, yd = x.double(), None if y is None else y.double()
    rtol = cuda_rtol(dtype, **POOL_RTOL)
    got = cvops.bilinear_pool(x, y)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), ref.bilinear_pool(xd, yd), rtol=rtol, atol=rtol / 100)
    params = cvops.compact_bilinear_params("ts", 64, 48 if with_y else 64, 256, device="cuda")
    sketch = cvops.compact_bilinear_pool(x, y, output_dim=256, params=params, signed_sqrt=False)
    params64 = (params[0], params[1].double(), params[2], params[3].double())
    want = ref.compact_bilinear_pool(xd, yd, params=params64, output_dim=256, signed_sqrt=False)
    torch.testing.assert_close(sketch.double(), want, rtol=rtol, atol=rtol / 10)
    w = cvops.compact_bilinear_params("rm", 64, 48 if with_y else 64, 128, device="cuda")
    rm = cvops.compact_bilinear_pool(x, y, output_dim=128, kind="rm", params=w, signed_sqrt=False)
    torch.testing.assert_close(
        rm.double(),
        ref.compact_bilinear_pool(xd, yd, params=w, kind="rm", signed_sqrt=False),
        rtol=rtol,
        atol=rtol / 10,
    )


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_pooled_gram_stays_in_float32(dtype):
    """Sums past half's range (10·10 over 32² points = 102400): G is float32, as the y ≠ x path's."""
    x = torch.full((1, 4, 32, 32), 10.0, device="cuda", dtype=dtype)
    for y in (None, x):
        got = cvops.bilinear_pool(x, y, normalize="none")
        assert bool(got.isfinite().all())
        torch.testing.assert_close(
            got.double().cpu(), torch.full((1, 16), 0.25, dtype=torch.float64), rtol=1e-2, atol=1e-3
        )


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_factorized_and_lowrank(dtype):
    x, y = torch.rand(64, 5000, device="cuda").to(dtype), torch.rand(64, 5000, device="cuda").to(dtype)
    rtol = cuda_rtol(dtype, **POOL_RTOL)
    got = cvops.factorized_bilinear_pool(x, y, k=5)
    torch.testing.assert_close(
        got.double(), ref.factorized_bilinear_pool(x.double(), y.double(), 5), rtol=rtol, atol=rtol / 100
    )
    feats, u = torch.rand(2, 32, 7, 7, device="cuda").to(dtype), (torch.randn(10, 32, 4, device="cuda") * 0.1).to(dtype)
    score = cvops.lowrank_bilinear_score(feats, u, num_positive=2)
    torch.testing.assert_close(
        score.double(), ref.lowrank_bilinear_score(feats.double(), u.double(), 2), rtol=rtol * 10, atol=rtol
    )


@pytest.mark.cuda
def test_cuda_gradients_match_cpu():
    x = torch.rand(2, 24, 5, 5, dtype=torch.float64)
    y = torch.rand(2, 16, 5, 5, dtype=torch.float64)
    u = torch.randn(4, 24, 3, dtype=torch.float64)
    xf, yf = torch.randn(3, 30, dtype=torch.float64), torch.randn(3, 30, dtype=torch.float64)

    def grads(device):
        a, b, c = (t.to(device).requires_grad_(True) for t in (x, y, u))
        fa, fb = (t.to(device).requires_grad_(True) for t in (xf, yf))
        ts = cvops.compact_bilinear_params("ts", 24, 16, 64, device=device)
        rm = cvops.compact_bilinear_params("rm", 24, 16, 32, device=device)
        total = (
            cvops.bilinear_pool(a, b).sum()
            + cvops.bilinear_pool(a).square().sum()
            + (cvops.compact_bilinear_pool(a, b, output_dim=64, params=ts) * torch.arange(64.0, device=device)).sum()
            + (
                cvops.compact_bilinear_pool(a, b, output_dim=32, kind="rm", params=rm)
                * torch.arange(32.0, device=device)
            ).sum()
            + cvops.lowrank_bilinear_score(a, c, num_positive=1).sum()
            + (cvops.factorized_bilinear_pool(fa, fb, k=3) * torch.arange(10.0, device=device)).sum()
        )
        return [g.cpu() for g in torch.autograd.grad(total, (a, b, c, fa, fb))]

    for got, want in zip(grads("cuda"), grads("cpu")):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.cuda
def test_cuda_deterministic_and_large_sketch():
    x = torch.rand(8, 512, 14, 14, device="cuda", requires_grad=True)

    def run():
        x.grad = None
        out = cvops.compact_bilinear_pool(x, output_dim=8192)
        (out * torch.arange(8192.0, device="cuda")).sum().backward()
        return out.detach(), x.grad.clone()

    (a, ga), (b, gb) = run(), run()
    assert torch.equal(a, b) and torch.equal(ga, gb)
    params = cvops.compact_bilinear_params("ts", 512, 512, 8192, device="cuda")
    xd = x.detach().double()
    want = ref.compact_bilinear_pool(
        xd, params=(params[0], params[1].double(), params[2], params[3].double()), output_dim=8192
    )
    torch.testing.assert_close(a.double(), want, rtol=cuda_rtol(torch.float32, **POOL_RTOL), atol=1e-6)


def test_nan_features_give_nan_like_the_reference():
    # The epilogue must not hide a NaN (signed sqrt of NaN, L2 norm of a row holding NaN).
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    x[0, 1, 2, 2] = math.nan
    got = cvops.bilinear_pool(x)
    want = ref.bilinear_pool(x)
    assert torch.isnan(got[0]).all() and torch.isnan(want[0]).all()
    torch.testing.assert_close(got[1], want[1])


def test_tensor_sketch_backward_rejects_an_empty_sketch():
    # out [B, 0] cannot come from the forward; a direct call gets an error, never a read of a bin.
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    h, s = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.float64)
    empty = torch.zeros(2, 0, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"cvops.compact_bilinear_pool_backward: out must be the forward's output"):
        torch.ops.cvops._compact_bilinear_pool_ts_backward(
            empty, x, None, h, s, h, s, empty, torch.zeros(0, dtype=torch.float64), "hw", True, False
        )


# ---------------------------------------------------------------------------- arguments checked before use


def _mfb(cls=cvops.nn.MFB, **kw):
    return cls(4, 3, k=2, o=2, dropout=0.0, **kw)


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda: cvops.compact_bilinear_pool(randn(5)),
            r"cvops.compact_bilinear_pool: x must have at least 2 dimensions \[B, C, \*spatial\], got shape \[5\]",
        ),
        (
            lambda: cvops.compact_bilinear_pool(randn(2, 3, 4), randn(4)),
            r"cvops.compact_bilinear_pool: y must have at least 2 dimensions",
        ),
        (lambda: cvops.bilinear_pool(3), r"cvops.bilinear_pool: x must be a tensor, got int"),
        (lambda: cvops.bilinear_pool(None), r"cvops.bilinear_pool: x must be a tensor, got None"),
        (
            lambda: cvops.bilinear_pool(randn(2, 3, 4), [1.0]),
            r"cvops.bilinear_pool: y must be a tensor or None, got list",
        ),
        (
            lambda: cvops.bilinear_pool(randn(2, 3, 4), signed_sqrt="no"),
            r"cvops.bilinear_pool: signed_sqrt must be True or False, got 'no'",
        ),
        (
            lambda: cvops.compact_bilinear_pool(randn(2, 3, 4), params=3),
            r"cvops.compact_bilinear_pool: params must be None or the 4 tensors \(h1, s1, h2, s2\) of "
            r"compact_bilinear_params\('ts', ...\), got 3",
        ),
        (
            lambda: cvops.compact_bilinear_pool(randn(2, 3, 4), kind="rm", params=(randn(3, 8), 2.0)),
            r"cvops.compact_bilinear_pool: params' w2 must be a tensor, got float",
        ),
        (
            lambda: cvops.compact_bilinear_pool(randn(2, 3, 4), l2_normalize=None),
            r"cvops.compact_bilinear_pool: l2_normalize must be True or False, got None",
        ),
        (
            lambda: cvops.compact_bilinear_params("ts", 3, seed=2**64),
            r"cvops.compact_bilinear_params: seed must be an int in \[0, 18446744073709551615\], got 18446744073709551616",
        ),
        (
            lambda: cvops.compact_bilinear_pool(randn(2, 3, 4), seed=2**64),
            r"cvops.compact_bilinear_pool: seed must be an int in \[0, 18446744073709551615\]",
        ),
        (lambda: cvops.compact_bilinear_params("ts", 3, device=2.5), r"cvops.compact_bilinear_params: device must be"),
        (
            lambda: cvops.factorized_bilinear_pool(randn(2, 4), None, k=2),
            r"factorized_bilinear_pool: y must be a tensor",
        ),
        (lambda: cvops.factorized_bilinear_pool(randn(2, 4), randn(2, 4), k=2.0), r"k must be an int >= 1, got 2.0"),
        (lambda: cvops.lowrank_bilinear_score(randn(2, 3), "U", num_positive=1), r"U must be a tensor, got str"),
        (lambda: cvops.nn.BilinearPool(l2_normalize=None), r"cvops.BilinearPool: l2_normalize must be True or False"),
        (lambda: cvops.nn.CompactBilinearPool(4, 8, seed=2**64), r"cvops.CompactBilinearPool: seed must be an int in"),
        (lambda: cvops.nn.CompactBilinearPool(4, 8, signed_sqrt="no"), r"cvops.CompactBilinearPool: signed_sqrt"),
        (
            lambda: _mfb()(randn(2, 4).float(), randn(3, 3).float()),
            r"cvops.MFB: y's leading dims must broadcast to x's \[2\], got y of shape \[3, 3\]",
        ),
        (
            lambda: _mfb(cvops.nn.MFH)(randn(2, 4).float(), randn(3, 3).float()),
            r"cvops.MFH: y's leading dims must broadcast to x's \[2\]",
        ),
        (
            lambda: cvops.nn.MLB(4, 3, rank=2)(randn(2, 4).float(), randn(3, 3).float()),
            r"cvops.MLB: the leading dims of x \[2\] and y \[3\] must broadcast together",
        ),
        (
            lambda: _mfb()(randn(2, 5).float(), randn(2, 3).float()),
            r"cvops.MFB: x must have shape \[..., x_dim\] = \[..., 4\], got shape \[2, 5\]",
        ),
        (lambda: _mfb()(randn(2, 4), randn(2, 3).float()), r"cvops.MFB: x must have the module's dtype float32"),
        (lambda: _mfb()(randn(2, 4).float(), torch.ones(2, 3, dtype=torch.long)), r"cvops.MFB: y must be a floating"),
        (
            lambda: _mfb()(torch.ones(2, 4, device="meta"), randn(2, 3).float()),
            r"cvops.MFB: x must be on the module's device \(cpu\), got meta",
        ),
        (lambda: cvops.nn.MLB(4, 3, rank=2)(None, randn(2, 3).float()), r"cvops.MLB: x must be a tensor, got None"),
        (lambda: cvops.nn.MFH(4, 3, k=0), r"cvops.MFH: k must be an int >= 1"),
        (lambda: _mfb(signed_sqrt=1), r"cvops.MFB: signed_sqrt must be True or False, got 1"),
        (
            lambda: cvops.nn.LowRankBilinearClassifier(4, 3, reduced_channels=2)(randn(2, 5, 3, 3).float()),
            r"cvops.LowRankBilinearClassifier: x must have shape \[B, 4, H, W\] for the 1×1 reduction",
        ),
        (lambda: cvops.nn.LowRankBilinearClassifier(4, 3, bias=None), r"bias must be True or False, got None"),
    ],
)
def test_arguments_are_checked_before_use(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_eps_must_be_finite_in_the_compute_dtype():
    """eps = 1e300 is inf in float32 (all-NaN pools) but finite in float64."""
    x = randn(2, 3, 4)
    assert torch.isfinite(cvops.bilinear_pool(x, eps=1e300)).all()
    assert torch.isfinite(cvops.bilinear_pool(x.float(), eps=3e38)).all()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        with pytest.raises(
            ValueError,
            match=rf"cvops.bilinear_pool: eps must be a finite number >= 0 in float32 "
            rf"\(the compute dtype of {name} inputs, largest 3.4028234663852886e\+38\), got 1e\+300",
        ):
            cvops.bilinear_pool(x.to(dtype), eps=1e300)
    calls = [
        lambda t: cvops.compact_bilinear_pool(t, output_dim=8, eps=1e39),
        lambda t: cvops.compact_bilinear_pool(t, output_dim=8, kind="rm", eps=1e39),
        lambda t: cvops.factorized_bilinear_pool(t.flatten(1), t.flatten(1), k=2, eps=1e39),
        lambda t: cvops.nn.BilinearPool(eps=1e39)(t),
    ]
    for call in calls:
        assert torch.isfinite(call(x)).all()
        with pytest.raises(ValueError, match=r"eps must be a finite number >= 0 in float32"):
            call(x.float())


def _memory_gib():
    import os

    return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f}"


def test_a_huge_output_dim_is_refused_before_allocating():
    with pytest.raises(
        ValueError,
        match=rf"cvops.compact_bilinear_params: output_dim = 1099511627776 asks for a \[512, 1099511627776\] "
        rf"float32 tensor \(2097152.0 GiB\), more than this machine's memory \({_memory_gib()} GiB\)",
    ):
        cvops.compact_bilinear_params("rm", 512, output_dim=2**40)
    with pytest.raises(ValueError, match=r"x_channels = 1099511627776 asks for a \[1099511627776\] int64 tensor"):
        cvops.compact_bilinear_params("ts", 2**40)
    for kind in ("ts", "rm"):
        with pytest.raises(
            ValueError,
            match=r"cvops.compact_bilinear_pool: output_dim = 1099511627776 asks for a \[2, 1099511627776\] float64",
        ):
            cvops.compact_bilinear_pool(randn(2, 3, 4), output_dim=2**40, kind=kind)
    with pytest.raises(ValueError, match=r"cvops.CompactBilinearPool: output_dim = 1099511627776 asks for"):
        cvops.nn.CompactBilinearPool(512, 2**40, kind="rm")
    # Sizes are Python ints: no overflow however large, and int64's range is stated.
    with pytest.raises(ValueError, match=r"output_dim = 9223372036854775808 asks for .* more than 2\*\*63 - 1 bytes"):
        cvops.compact_bilinear_pool(randn(2, 3, 4), output_dim=2**63)
    with pytest.raises(ValueError, match=r"output_dim must be an int in \[1, 9223372036854775807\]"):
        cvops.compact_bilinear_params("ts", 3, output_dim=2**63)
    # Meta tensors allocate nothing: shape inference of a huge sketch is fine.
    out = cvops.compact_bilinear_pool(torch.ones(2, 3, 4, device="meta"), output_dim=2**40)
    assert out.shape == (2, 2**40) and out.device.type == "meta"


def test_compact_params_are_copies_of_the_cached_draw():
    first = cvops.compact_bilinear_params("ts", 3, output_dim=16, device="cpu")
    want = [t.clone() for t in first]
    for t in first:
        t.zero_()
    again = cvops.compact_bilinear_params("ts", 3, output_dim=16, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(again, want))


def test_mixed_meta_and_cpu_inputs_are_refused_by_the_fake_kernels():
    x, meta = randn(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.float64, device="meta")
    with pytest.raises(RuntimeError, match=r"cvops.bilinear_pool: y must be on the same device as x \(cpu\), got meta"):
        cvops.bilinear_pool(x, meta)
    with pytest.raises(RuntimeError, match=r"cvops.bilinear_pool: y must be on the same device as x \(meta\), got cpu"):
        cvops.bilinear_pool(meta, x)
    out, norm = torch.ops.cvops._bilinear_pool(x, None, "hw", True, True, 1e-8)
    with pytest.raises(RuntimeError, match=r"cvops.bilinear_pool_backward: norm must be on the same device as grad"):
        torch.ops.cvops._bilinear_pool_backward(torch.ones_like(out), x, None, out, norm.to("meta"), "hw", True, True)
    params = [p.to("meta") if i == 0 else p for i, p in enumerate(cvops.compact_bilinear_params("ts", 3, 3, 8))]
    with pytest.raises(RuntimeError, match=r"cvops.compact_bilinear_pool: h1 must be on the same device as x \(cpu\)"):
        cvops.compact_bilinear_pool(x, output_dim=8, params=params)
    # All meta: shape inference.
    out, norm = torch.ops.cvops._bilinear_pool(meta, meta[:, :2], "hw", True, True, 1e-8)
    assert out.shape == (2, 6) and norm.shape == (2,) and out.device.type == "meta"


# ---- rank 1, secondary tensors ------------------------------------------------------------------------------


@pytest.mark.parametrize("positive", [0, 1])
def test_rank_one_scores_keep_their_sign(positive):
    # With one column per class, num_positive = 0 makes every score ≤ 0 (the negative part only).
    x, u = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(4, 3, 1, dtype=torch.float64)
    squares = (torch.einsum("bcn,kcr->bknr", x.flatten(2), u) ** 2).sum((2, 3))
    got = cvops.lowrank_bilinear_score(x, u, num_positive=positive)
    close(got, squares if positive else -squares, 1e-12)
    leaves = (x.clone().requires_grad_(), u.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: cvops.lowrank_bilinear_score(a, b, num_positive=positive), leaves)
    classifier = cvops.nn.LowRankBilinearClassifier(3, 4, rank=1, num_positive=0, bias=False).double()
    assert (classifier(x) <= 0).all()


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda x, out, norm: torch.ops.cvops._bilinear_pool_backward(
                out.double(), x, None, out, norm, "hw", True, True
            ),
            r"cvops.bilinear_pool_backward: grad must have the dtype of x \(Float\), got Double",
        ),
        (
            lambda x, out, norm: torch.ops.cvops._bilinear_pool_backward(
                out, x, None, out.to(torch.int16), norm, "hw", True, True
            ),
            r"cvops.bilinear_pool_backward: out must have the dtype of x \(Float\), got Short",
        ),
        (
            lambda x, out, norm: torch.ops.cvops._bilinear_pool_backward(
                out, x, None, out, norm.to(torch.complex64), "hw", True, True
            ),
            r"cvops.bilinear_pool_backward: norm must be Float, got ComplexFloat",
        ),
        (
            lambda x, out, norm: torch.ops.cvops._compact_bilinear_pool_rm_backward(
                out, x, None, torch.randn(3, 8), torch.randn(3, 7), out, norm, "hw", True, True
            ),
            r"cvops.compact_bilinear_pool_backward: w2 must have w1's output_dim 8",
        ),
        (
            lambda x, out, norm: torch.ops.cvops._bilinear_pool_backward(out, None, None, out, norm, "hw", True, True),
            r"cvops.bilinear_pool_backward: x must be a tensor, got None",
        ),
    ],
)
def test_backward_ops_check_their_secondary_tensors(call, match):
    x = torch.randn(2, 3, 4)
    out, norm = torch.ops.cvops._bilinear_pool(x, None, "hw", True, True, 1e-8)
    with pytest.raises(RuntimeError, match=match):
        call(x, out, norm)
