"""The gram family: gram_matrix and style_loss against reference/gram.py, autograd, opcheck,
torch.compile, layouts, edge sizes, bad input, and the nn modules."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cvops
import cvops.nn
from reference import gram as ref
from tolerances import cuda_rtol

NORMALIZE = ["none", "hw", "chw", 7.5]
REDUCTIONS = ["mean", "sum", "none"]


def randn(*shape, device="cpu", dtype=torch.float64, requires_grad=False):
    return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(requires_grad)


def style_targets(kind, batch, channels, device="cpu", dtype=torch.float64):
    """(target, target_index) for each way of naming the target Grams."""
    if kind == "shared":
        return randn(channels, channels, device=device, dtype=dtype), None
    if kind == "per_sample":
        return randn(batch, channels, channels, device=device, dtype=dtype), None
    bank = randn(3, channels, channels, device=device, dtype=dtype)
    return bank, torch.randint(0, 3, (batch,), device=device)


# ---------------------------------------------------------------------------- values (float64)


@pytest.mark.parametrize("shape", [(2, 5, 7), (3, 4, 6, 5), (2, 3, 2, 3, 4), (1, 70, 9, 9), (2, 130, 3, 5)])
@pytest.mark.parametrize("normalize", NORMALIZE)
def test_gram_matrix_matches_reference(shape, normalize):
    x = randn(*shape)
    torch.testing.assert_close(
        cvops.gram_matrix(x, normalize=normalize), ref.gram_matrix(x, normalize), rtol=1e-12, atol=1e-12
    )


def test_gram_matrix_is_exactly_symmetric():
    g = cvops.gram_matrix(randn(2, 150, 11, 13, dtype=torch.float32))
    assert torch.equal(g, g.transpose(1, 2))


@pytest.mark.parametrize(
    "make",
    [
        lambda: randn(3, 6, 5, 4).transpose(2, 3),
        lambda: randn(3, 6, 5, 4).to(memory_format=torch.channels_last),
        lambda: randn(3, 6, 5, 4)[:, ::2, 1:, :],
        lambda: randn(1, 6, 5, 4).expand(3, -1, -1, -1),
    ],
    ids=["transposed", "channels_last", "sliced", "expanded"],
)
def test_gram_matrix_non_contiguous(make):
    x = make()
    assert not x.is_contiguous()
    torch.testing.assert_close(cvops.gram_matrix(x), ref.gram_matrix(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 1, 3, 3), (2, 4, 1, 1), (2, 4, 1), (2, 0, 3, 3), (2, 4, 0, 3)])
def test_gram_matrix_edge_sizes(shape):
    x = randn(*shape)
    out = cvops.gram_matrix(x)
    assert out.shape == (shape[0], shape[1], shape[1])
    torch.testing.assert_close(out, ref.gram_matrix(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_reduced_precision_accumulates_in_float32(dtype):
    x = torch.randn(2, 40, 9, 9).to(dtype)
    got = cvops.gram_matrix(x)
    assert got.dtype == dtype
    want = ref.gram_matrix(x.double())
    # rounding of the result only: each output is within a few ulps of dtype
    torch.testing.assert_close(got.double(), want, rtol=1e-2 if dtype == torch.bfloat16 else 2e-3, atol=1e-3)
    target = ref.gram_matrix(torch.randn(1, 40, 9, 9))[0].to(dtype)
    loss = cvops.style_loss(x, target, reduction="sum")
    assert loss.dtype == dtype
    torch.testing.assert_close(
        loss.double(), ref.style_loss(x.double(), target.double(), reduction="sum"), rtol=1e-2, atol=1e-4
    )


@pytest.mark.parametrize("kind", ["shared", "per_sample", "bank"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("normalize", ["hw", 3.0])
def test_style_loss_matches_reference(kind, reduction, normalize):
    x = randn(4, 6, 5, 3)
    target, index = style_targets(kind, 4, 6)
    got = cvops.style_loss(x, target, normalize=normalize, target_index=index, reduction=reduction)
    want = ref.style_loss(x, target, normalize, index, reduction)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_style_loss_asymmetric_target():
    """The loss and its gradient are exact for a target that is not symmetric too."""
    x = randn(2, 5, 4, requires_grad=True)
    target = randn(5, 5)
    got = cvops.style_loss(x, target, reduction="sum")
    want = ref.style_loss(x, target, reduction="sum")
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0])


def test_style_loss_empty_batch():
    x = randn(0, 4, 3, 3)
    target = randn(4, 4)
    assert cvops.style_loss(x, target, reduction="sum").item() == 0
    assert cvops.style_loss(x, target, reduction="none").shape == (0,)


def test_inputs_are_not_mutated():
    x, (target, index) = randn(3, 4, 5, 5, requires_grad=True), style_targets("bank", 3, 4)
    saved = [t.detach().clone() for t in (x, target, index)]
    cvops.gram_matrix(x).sum().backward()
    cvops.style_loss(x, target, target_index=index).backward()
    for before, after in zip(saved, (x, target, index)):
        assert torch.equal(before, after.detach())


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(0, 3),
    channels=st.integers(1, 140),
    spatial=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    normalize=st.sampled_from(NORMALIZE),
)
def test_gram_matrix_property(batch, channels, spatial, normalize):
    x = randn(batch, channels, *spatial)
    torch.testing.assert_close(
        cvops.gram_matrix(x, normalize=normalize), ref.gram_matrix(x, normalize), rtol=1e-12, atol=1e-12
    )


# ---------------------------------------------------------------------------- autograd


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_gram_matrix_gradcheck(normalize):
    x = randn(2, 4, 3, 2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: cvops.gram_matrix(t, normalize=normalize), (x,))


@pytest.mark.parametrize("kind", ["shared", "per_sample", "bank"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_style_loss_gradcheck(kind, reduction):
    x = randn(3, 4, 3, 2, requires_grad=True)
    target, index = style_targets(kind, 3, 4)
    target.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, s: cvops.style_loss(t, s, target_index=index, reduction=reduction, normalize="hw"), (x, target)
    )


def test_style_loss_residual_is_not_differentiable():
    x = randn(2, 3, 4, requires_grad=True)
    loss, residual = torch.ops.cvops._style_loss(x, randn(3, 3), None, "chw", 1.0, "mean", True)
    assert loss.requires_grad and not residual.requires_grad


def test_style_loss_backward_needs_residual():
    x = randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="cvops.style_loss_backward: residual is empty"):
        torch.ops.cvops._style_loss_backward(torch.tensor(1.0, dtype=x.dtype), x, x.new_empty(0), "chw", 1.0, "mean")


# ---------------------------------------------------------------------------- torch.library checks


def _opcheck_cases():
    x = randn(2, 5, 3, 4)
    xg = randn(2, 5, 3, 4, requires_grad=True)
    bank, index = style_targets("bank", 2, 5)
    return [
        ("gram_matrix", (x, "chw", 1.0)),
        ("gram_matrix", (xg, "value", 2.5)),
        ("_gram_matrix_backward", (randn(2, 5, 5), x, "hw", 1.0)),
        ("_style_loss", (xg, bank, index, "chw", 1.0, "mean", True)),
        ("_style_loss", (x, randn(5, 5), None, "hw", 1.0, "none", False)),
        ("_style_loss", (xg, randn(2, 5, 5, requires_grad=True), None, "none", 1.0, "sum", True)),
        ("_style_loss_backward", (torch.tensor(1.0, dtype=x.dtype), x, randn(2, 5, 5), "chw", 1.0, "mean")),
    ]


@pytest.mark.parametrize("name,args", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, args):
    torch.library.opcheck(getattr(torch.ops.cvops, name).default, args)


def _combined_loss(x, target, index):
    return cvops.style_loss(x, target, target_index=index) + cvops.gram_matrix(x, normalize="hw").square().sum()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    """Forward and (AOT-compiled) backward match eager."""
    torch._dynamo.reset()
    x = randn(2, 6, 4, 4, dtype=torch.float32, requires_grad=True)
    target, index = style_targets("bank", 2, 6, dtype=torch.float32)
    compiled = torch.compile(_combined_loss, backend=backend, fullgraph=True)
    got = compiled(x, target, index)
    (got_grad,) = torch.autograd.grad(got, x)
    want = _combined_loss(x, target, index)
    (want_grad,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


def test_torch_compile_dynamic_shapes():
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda t: cvops.gram_matrix(t, normalize="chw"), backend="aot_eager", fullgraph=True, dynamic=True
    )
    for shape in [(2, 3, 4, 5), (3, 4, 6, 2)]:
        x = randn(*shape, dtype=torch.float32)
        torch.testing.assert_close(compiled(x), ref.gram_matrix(x))


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: cvops.gram_matrix(randn(3, 4)), RuntimeError, r"cvops.gram_matrix: x must have at least 3 dimensions"),
        (
            lambda: cvops.gram_matrix(torch.ones(2, 3, 4, dtype=torch.int64)),
            RuntimeError,
            r"cvops.gram_matrix: x must be a floating-point",
        ),
        (
            lambda: cvops.gram_matrix(torch.ones(2, 3, 4, dtype=torch.complex64)),
            RuntimeError,
            r"cvops.gram_matrix: x must be a floating-point",
        ),
        (
            lambda: cvops.gram_matrix(randn(2, 3, 4), normalize="chan"),
            ValueError,
            r"cvops.gram_matrix: normalize must be one of",
        ),
        (
            lambda: cvops.gram_matrix(randn(2, 3, 4), normalize=0),
            ValueError,
            r"cvops.gram_matrix: normalize must be a positive",
        ),
        (
            lambda: cvops.gram_matrix(randn(2, 3, 4), normalize=-2.0),
            ValueError,
            r"cvops.gram_matrix: normalize must be a positive",
        ),
        (
            lambda: cvops.gram_matrix(randn(2, 3, 4), normalize=float("nan")),
            ValueError,
            r"cvops.gram_matrix: normalize must be a positive",
        ),
        (
            lambda: torch.ops.cvops.gram_matrix(randn(2, 3, 4), "value", 0.0),
            RuntimeError,
            r"cvops.gram_matrix: normalize must be a positive",
        ),
        (
            lambda: torch.ops.cvops.gram_matrix(randn(2, 3, 4), "xyz", 1.0),
            RuntimeError,
            r"cvops.gram_matrix: normalize must be",
        ),
        (
            lambda: cvops.style_loss(randn(2, 3, 4), randn(4, 4)),
            RuntimeError,
            r"cvops.style_loss: target must be \[3, 3\]",
        ),
        (lambda: cvops.style_loss(randn(2, 3, 4), randn(5, 3, 3)), RuntimeError, r"cvops.style_loss: target must be"),
        (
            lambda: cvops.style_loss(randn(2, 3, 4), torch.ones(3, 3, dtype=torch.int32)),
            RuntimeError,
            r"cvops.style_loss: target must be a floating-point",
        ),
        (
            lambda: cvops.style_loss(randn(2, 3, 4), randn(3, 3), target_index=torch.tensor([0, 1])),
            RuntimeError,
            r"cvops.style_loss: with target_index, target must be a bank",
        ),
        (
            lambda: cvops.style_loss(randn(2, 3, 4), randn(4, 3, 3), target_index=torch.tensor([0, 4])),
            RuntimeError,
            r"cvops.style_loss: target_index values must lie in \[0, 4\), got values in \[0, 4\]",
        ),
        (
            lambda: cvops.style_loss(randn(2, 3, 4), randn(4, 3, 3), target_index=torch.tensor([-1, 0])),
            RuntimeError,
            r"cvops.style_loss: target_index values must lie in \[0, 4\)",
        ),
        (
            lambda: cvops.style_loss(
                randn(2, 3, 4), randn(4, 3, 3), target_index=torch.tensor([0, 1], dtype=torch.int32)
            ),
            RuntimeError,
            r"cvops.style_loss: target_index must be Long",
        ),
        (
            lambda: cvops.style_loss(randn(2, 3, 4), randn(4, 3, 3), target_index=torch.tensor([0, 1, 2])),
            RuntimeError,
            r"cvops.style_loss: target_index must have shape \[B\]",
        ),
        (
            lambda: cvops.style_loss(randn(2, 3, 4), randn(3, 3), reduction="avg"),
            ValueError,
            r"cvops.style_loss: reduction must be one of",
        ),
        (
            lambda: torch.ops.cvops._style_loss(randn(2, 3, 4), randn(3, 3), None, "chw", 1.0, "avg", False),
            RuntimeError,
            r"cvops.style_loss: reduction must be",
        ),
        (
            lambda: torch.ops.cvops._gram_matrix_backward(randn(2, 4, 4), randn(2, 3, 4), "chw", 1.0),
            RuntimeError,
            r"cvops.gram_matrix_backward: grad must have shape \[2, 3, 3\]",
        ),
        (
            lambda: cvops.nn.StyleLoss(randn(3, 3, 3))(randn(2, 3, 4)),
            ValueError,
            r"cvops.StyleLoss: style_index is required",
        ),
        (lambda: cvops.nn.StyleLoss(randn(3, 4)), ValueError, r"cvops.StyleLoss: target must be"),
        (lambda: cvops.nn.GramMatrix(normalize="hwc"), ValueError, r"cvops.GramMatrix: normalize must be one of"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------- nn modules


def test_gram_module():
    module = cvops.nn.GramMatrix(normalize="hw")
    x = randn(2, 3, 4, 4)
    torch.testing.assert_close(module(x), ref.gram_matrix(x, "hw"))
    assert "normalize='hw'" in repr(module)


def test_style_loss_module_bank_and_state_dict():
    styles = randn(3, 4, 6, 6)
    module = cvops.nn.StyleLoss.from_features(styles, normalize="chw", reduction="sum")
    assert module.num_styles == 3 and module.target.shape == (3, 4, 4)
    x, index = randn(2, 4, 6, 6), torch.tensor([2, 0])
    want = ref.style_loss(x, ref.gram_matrix(styles), "chw", index, "sum")
    torch.testing.assert_close(module(x, index), want)
    torch.testing.assert_close(
        module(x, 1), ref.style_loss(x, ref.gram_matrix(styles), "chw", torch.tensor([1, 1]), "sum")
    )
    clone = cvops.nn.StyleLoss(torch.zeros(3, 4, 4), reduction="sum")
    clone.load_state_dict(module.state_dict())
    torch.testing.assert_close(clone(x, index), want)


# ---------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 64, 16, 16), (2, 130, 7, 9), (1, 256, 64, 64), (1, 8, 256, 256), (3, 1, 5, 5)])
def test_cuda_gram_matrix(dtype, shape):
    x = torch.randn(*shape, device="cuda").to(dtype)
    want = ref.gram_matrix(x.double(), "chw")
    got = cvops.gram_matrix(x)
    assert got.dtype == dtype
    rtol = cuda_rtol(dtype)
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=rtol * want.abs().max().item())
    assert torch.equal(got, got.transpose(1, 2))


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(4, 70, 9, 9), (1, 32, 128, 128)], ids=["tiles", "split"])
@pytest.mark.parametrize("kind", ["shared", "per_sample", "bank"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_style_loss(shape, kind, reduction):
    x = torch.randn(*shape, device="cuda", requires_grad=True)
    target, index = style_targets(kind, shape[0], shape[1], device="cuda", dtype=torch.float32)
    got = cvops.style_loss(x, target, target_index=index, reduction=reduction)
    want = ref.style_loss(x.double(), target.double(), "chw", index, reduction)
    # Looser than the table: the loss sums (G − S)² over C² entries, and G − S cancels most of G.
    rtol = cuda_rtol(torch.float32, float32=1e-4)
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=1e-6)
    grad = torch.autograd.grad(got.sum(), x)[0]
    xd = x.detach().double().requires_grad_(True)
    want_grad = torch.autograd.grad(ref.style_loss(xd, target.double(), "chw", index, reduction).sum(), xd)[0]
    torch.testing.assert_close(grad.double(), want_grad, rtol=rtol, atol=rtol * want_grad.abs().max().item())
    with torch.no_grad():  # the fused forward that never writes G gives the same loss
        torch.testing.assert_close(cvops.style_loss(x, target, target_index=index, reduction=reduction), got.detach())


@pytest.mark.cuda
def test_cuda_deterministic_and_gradcheck():
    x = torch.randn(1, 48, 96, 96, device="cuda")  # few tiles: the N-split path
    assert torch.equal(cvops.gram_matrix(x), cvops.gram_matrix(x))
    xd = torch.randn(2, 5, 3, 3, device="cuda", dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: cvops.gram_matrix(t), (xd,))
    target = torch.randn(5, 5, device="cuda", dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: cvops.style_loss(t, target), (xd,))
    torch.library.opcheck(torch.ops.cvops.gram_matrix.default, (xd, "chw", 1.0))
    torch.library.opcheck(torch.ops.cvops._style_loss.default, (xd, target, None, "chw", 1.0, "mean", True))


@pytest.mark.cuda
def test_cuda_bad_device_mix():
    with pytest.raises(RuntimeError, match="cvops.style_loss: target must be on the same device as x"):
        cvops.style_loss(torch.randn(2, 3, 4, device="cuda"), torch.randn(3, 3))
    with pytest.raises(RuntimeError, match=r"cvops.style_loss: target_index values must lie in \[0, 2\)"):
        cvops.style_loss(
            torch.randn(2, 3, 4, device="cuda"),
            torch.randn(2, 3, 3, device="cuda"),
            target_index=torch.tensor([0, 5], device="cuda"),
        )


# ---------------------------------------------------------------------------- arguments checked before use


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: cvops.style_loss([1.0], randn(3, 3)), r"cvops.style_loss: x must be a tensor, got list"),
        (lambda: cvops.style_loss(randn(2, 3, 4), None), r"cvops.style_loss: target must be a tensor, got None"),
        (
            lambda: cvops.style_loss(randn(2, 3, 4), randn(3, 3, 3), target_index=[0, 1]),
            r"cvops.style_loss: target_index must be a tensor or None, got list",
        ),
        (lambda: cvops.gram_matrix(None), r"cvops.gram_matrix: x must be a tensor, got None"),
        (lambda: cvops.nn.GramMatrix()(3), r"cvops.gram_matrix: x must be a tensor, got int"),
        (lambda: cvops.nn.StyleLoss(3), r"cvops.StyleLoss: target must be a tensor, got int"),
        (
            lambda: cvops.nn.StyleLoss(torch.ones(3, 3, dtype=torch.long)),
            r"cvops.StyleLoss: target must be a floating-point tensor",
        ),
        (
            lambda: cvops.nn.StyleLoss(randn(2, 3, 3))(randn(2, 3, 4), style_index=1.5),
            r"cvops.StyleLoss: style_index must be None, an int or an int64 tensor \[B\], got 1.5",
        ),
        (lambda: cvops.nn.StyleLoss(randn(2, 3, 3))(randn(2, 3, 4), style_index=True), r"style_index must be None"),
        (
            lambda: cvops.nn.StyleLoss(randn(2, 3, 3))(randn(2, 3, 4), style_index=torch.tensor([0.0, 1.0])),
            r"cvops.StyleLoss: style_index must be an int or an int64 tensor, got torch.float32",
        ),
        (
            lambda: cvops.nn.StyleLoss(randn(2, 3, 3))(randn(2, 3, 4), style_index=torch.tensor([0, 1, 1])),
            r"cvops.StyleLoss: style_index must have shape \[B\] = \[2\], got \[3\]",
        ),
        (
            lambda: cvops.nn.StyleLoss(randn(2, 3, 3))(randn(3), style_index=0),
            r"cvops.StyleLoss: x must have at least 3 dimensions \[B, C, \*spatial\], got shape \[3\]",
        ),
        (lambda: cvops.nn.StyleLoss(randn(3, 3))(None), r"cvops.StyleLoss: x must be a tensor, got None"),
    ],
)
def test_arguments_are_checked_before_use(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_mixed_meta_and_cpu_inputs_are_refused_by_the_fake_kernels():
    x, meta = randn(2, 3, 4), torch.ones(3, 3, dtype=torch.float64, device="meta")
    with pytest.raises(
        RuntimeError, match=r"cvops.style_loss: target must be on the same device as x \(cpu\), got meta"
    ):
        cvops.style_loss(x, meta)
    with pytest.raises(RuntimeError, match=r"cvops.style_loss: target_index must be on the same device as x"):
        cvops.style_loss(x, randn(2, 3, 3), target_index=torch.tensor([0, 1], device="meta"))
    with pytest.raises(
        RuntimeError, match=r"cvops.gram_matrix_backward: x must be on the same device as grad \(meta\)"
    ):
        torch.ops.cvops._gram_matrix_backward(torch.ones(2, 3, 3, device="meta"), x, "chw", 1.0)
    with pytest.raises(RuntimeError, match=r"cvops.style_loss_backward: residual must be on the same device as"):
        torch.ops.cvops._style_loss_backward(
            torch.tensor(1.0), x, torch.ones(2, 3, 3, device="meta"), "chw", 1.0, "mean"
        )
    loss = cvops.style_loss(x.to("meta"), meta, reduction="none")
    assert loss.shape == (2,) and loss.device.type == "meta"
