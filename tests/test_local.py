"""The local family: cvops.locally_connected2d against the F.unfold + einsum reference
(reference/local.py) over kernel sizes, strides, padding, dilation, odd and non-square shapes,
empty batches and layouts; against F.conv2d when every location holds the same filters; gradients
of x, weight and bias, float16/bfloat16, determinism across thread counts, opcheck, torch.compile;
the LocallyConnected2d module (initialisation, converters checked against Keras's and unfold's own
formulas), bad input."""

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cvops
import reference.local as ref
from cvops.nn.local import LocallyConnected2d, from_keras_kernel, output_size, to_keras_kernel
from tolerances import cuda_rtol

# (B, C, D = out channels, (H, W), (kh, kw), stride, padding, dilation)
SHAPES = [
    (2, 3, 4, (7, 7), (1, 1), 1, 0, 1),  # 1×1: a per-pixel linear map
    (2, 3, 5, (9, 8), (3, 3), 1, 0, 1),
    (1, 1, 1, (6, 6), (3, 3), 2, 2, 1),  # C = O = 1, padding 2, stride 2
    (3, 5, 7, (11, 10), (5, 5), 1, 2, 2),  # dilation 2
    (2, 2, 3, (12, 12), (9, 9), 1, 0, 1),  # 9×9 (DeepFace L4's kernel)
    (2, 4, 3, (13, 11), (9, 9), 2, 2, 1),
    (2, 3, 2, (10, 13), (3, 5), 2, 0, 2),  # non-square input and kernel
    (1, 7, 9, (8, 5), (2, 3), (2, 1), (1, 2), (1, 2)),  # per-axis stride, padding, dilation
    (2, 3, 4, (5, 5), (5, 5), 1, 0, 1),  # kernel = input: one location
    (2, 3, 2, (10, 10), (1, 1), 3, 0, 1),  # stride past the kernel: skipped pixels
    (3, 5, 3, (9, 7), (3, 3), 2, 1, 1),
    (1, 16, 16, (13, 13), (7, 7), 2, 0, 1),  # DeepFace L5's kernel and stride
]
IDS = [f"B{s[0]}-C{s[1]}-O{s[2]}-{s[3][0]}x{s[3][1]}-k{s[4][0]}x{s[4][1]}-s{s[5]}-p{s[6]}-d{s[7]}" for s in SHAPES]


def inputs(B, C, D, hw, kernel, stride, padding, dilation, dtype=torch.float64, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed + B * 100 + C * 10 + kernel[0])
    oh, ow = output_size(hw, kernel, stride, padding, dilation)
    x = torch.randn(B, C, *hw, generator=g, dtype=dtype)
    weight = torch.randn(oh, ow, D, C, *kernel, generator=g, dtype=dtype)
    b = torch.randn(D, oh, ow, generator=g, dtype=dtype) if bias else None
    return x, weight, b, dict(stride=stride, padding=padding, dilation=dilation)


def assert_matches_reference(x, weight, bias, options, rtol=1e-11, atol=1e-11):
    got = cvops.locally_connected2d(x, weight, bias, **options)
    want = ref.locally_connected2d(x, weight, bias, **options)
    assert got.shape == want.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_matches_unfold_reference(shape, bias):
    assert_matches_reference(*inputs(*shape, bias=bias))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [1, 3, 4, 5, 9, 17, 30, 33, 60, 70])
def test_both_cpu_batch_paths(batch, dtype):
    """Up to 4 samples the CPU streams each location's filter rows against its patches; past 4 the
    samples are the vector lanes forward (blocks of 4 vectors, the last of 1 to 4, partial ones
    included; 6 filters: whole and single rows), and so does the backward's patch gradient (dW: batched
    GEMMs): both against the reference, forward and every gradient, 45 taps (a partial vector)."""
    x, weight, bias, options = inputs(batch, 5, 6, (9, 8), (3, 3), 1, 1, 1, dtype=dtype)
    tol = 1e-11 if dtype == torch.float64 else 2e-5
    leaves = [t.requires_grad_() for t in (x, weight, bias)]
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    got, want = cvops.locally_connected2d(*leaves, **options), ref.locally_connected2d(*ref_leaves, **options)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    w = torch.randn(want.shape, dtype=want.dtype)
    for g, r in zip(
        torch.autograd.grad((got * w).sum(), leaves), torch.autograd.grad((want * w).sum(), ref_leaves), strict=True
    ):
        torch.testing.assert_close(g, r, rtol=tol, atol=tol)


def test_deepface_l6_shape():
    """DeepFace's L6 (16×25×25 → 16×21×21, 5×5), at batch 2."""
    assert_matches_reference(*inputs(2, 16, 16, (25, 25), (5, 5), 1, 0, 1))


def test_shared_filters_are_conv2d():
    """Every location holding the same filters is nn.Conv2d: a check of the definition itself."""
    g = torch.Generator().manual_seed(1)
    for hw, kernel, stride, padding, dilation in [((9, 11), (3, 2), (2, 1), (1, 0), (1, 2)), ((8, 8), (5, 5), 1, 2, 1)]:
        x = torch.randn(2, 3, *hw, generator=g, dtype=torch.float64)
        conv_w, conv_b = torch.randn(4, 3, *kernel, generator=g, dtype=x.dtype), torch.randn(4, dtype=x.dtype)
        oh, ow = output_size(hw, kernel, stride, padding, dilation)
        weight = conv_w.expand(oh, ow, *conv_w.shape)
        bias = conv_b[:, None, None].expand(4, oh, ow)
        got = cvops.locally_connected2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
        want = F.conv2d(x, conv_w, conv_b, stride=stride, padding=padding, dilation=dilation)
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


def test_pairs_as_tuples_and_lists():
    x, weight, bias, _ = inputs(2, 3, 4, (9, 10), (3, 2), (2, 1), (1, 0), (1, 2))
    want = ref.locally_connected2d(x, weight, bias, stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    got = cvops.locally_connected2d(x, weight, bias, stride=[2, 1], padding=[1, 0], dilation=[1, 2])
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


def test_layouts():
    """channels_last and strided x, a permuted-storage weight, transposed and expanded biases."""
    x, weight, bias, options = inputs(2, 6, 5, (11, 9), (3, 3), 2, 1, 1)
    strided_x = torch.randn(2, 6, 11, 18, dtype=x.dtype)[..., ::2].copy_(x)
    permuted_w = weight.permute(5, 4, 3, 2, 1, 0).contiguous().permute(5, 4, 3, 2, 1, 0)
    for xi, wi, bi in [
        (x.to(memory_format=torch.channels_last), weight, bias),
        (strided_x, permuted_w, bias.transpose(1, 2).contiguous().transpose(1, 2)),
        (x, torch.cat([weight, weight], 1)[:, ::2], bias[:, :1, :].expand_as(bias)),  # every other location
        (x, weight[:1, :1].expand_as(weight), None),
    ]:
        want = ref.locally_connected2d(
            xi.contiguous(), wi.contiguous(), None if bi is None else bi.contiguous(), **options
        )
        torch.testing.assert_close(cvops.locally_connected2d(xi, wi, bi, **options), want, rtol=1e-11, atol=1e-11)


def test_empty_batch():
    x, weight, bias, options = inputs(0, 3, 4, (7, 6), (3, 3), 1, 1, 1)
    leaves = [t.requires_grad_() for t in (x, weight, bias)]
    out = cvops.locally_connected2d(*leaves, **options)
    assert out.shape == (0, 4, 7, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(weight.grad, torch.zeros_like(weight)) and torch.equal(bias.grad, torch.zeros_like(bias))


# Empty filters, channels or planes (an x of zero rows or columns whose windows are all padding).
EMPTY_SIZES = [(2, 3, 5, 5, 0, 0), (2, 0, 5, 5, 4, 0), (2, 3, 0, 4, 4, 1), (2, 3, 4, 0, 4, 1)]


def _empty_sizes_check(device):
    for B, C, H, W, filters, pad in EMPTY_SIZES:
        x = torch.randn(B, C, H, W, dtype=torch.float64, device=device, requires_grad=True)
        weight = torch.randn(
            H + 2 * pad, W + 2 * pad, filters, C, 1, 1, dtype=torch.float64, device=device, requires_grad=True
        )
        out = cvops.locally_connected2d(x, weight, padding=pad)
        assert out.shape == (B, filters, H + 2 * pad, W + 2 * pad) and not out.any()
        out.sum().backward()
        assert x.grad.shape == x.shape and torch.equal(weight.grad, torch.zeros_like(weight))


def test_empty_filters_channels_and_planes():
    _empty_sizes_check("cpu")


@pytest.mark.cuda
def test_cuda_empty_filters_channels_and_planes():
    _empty_sizes_check("cuda")


def test_inputs_not_mutated():
    x, weight, bias, options = inputs(2, 3, 4, (8, 9), (3, 3), 2, 1, 2)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    out = cvops.locally_connected2d(*leaves, **options)
    grad = torch.randn_like(out)
    saved = grad.clone()
    out.backward(grad)
    for original, leaf in zip((x, weight, bias), leaves):
        assert torch.equal(original, leaf.detach())
    assert torch.equal(grad, saved)


@pytest.mark.parametrize("wrt", ["x", "weight", "bias", "all"])
@pytest.mark.parametrize("shape", [SHAPES[3], SHAPES[6], SHAPES[7]], ids=[IDS[3], IDS[6], IDS[7]])
def test_gradients_match_reference(shape, wrt):
    """Each gradient alone (the others not requiring one) and all three, against the reference's autograd."""
    x, weight, bias, options = inputs(*shape)
    names = ("x", "weight", "bias")

    def leaves():
        return [t.clone().requires_grad_(wrt in (name, "all")) for name, t in zip(names, (x, weight, bias))]

    got_leaves, want_leaves = leaves(), leaves()
    out = cvops.locally_connected2d(*got_leaves, **options)
    w = torch.randn(out.shape, dtype=out.dtype)
    wanted = [t for t in got_leaves if t.requires_grad]
    got = torch.autograd.grad((out * w).sum(), wanted)
    want = torch.autograd.grad(
        (ref.locally_connected2d(*want_leaves, **options) * w).sum(), [t for t in want_leaves if t.requires_grad]
    )
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_batch_lanes_match_reference(shape):
    """Every shape at 21 samples (past 4: the batch-lanes forward, the patch gradient in phases of rows
    that read disjoint input rows, dW by batched GEMMs), forward and all three gradients."""
    x, weight, bias, options = inputs(21, *shape[1:])
    leaves = [t.requires_grad_() for t in (x, weight, bias)]
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    got, want = cvops.locally_connected2d(*leaves, **options), ref.locally_connected2d(*ref_leaves, **options)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)
    w = torch.randn(want.shape, dtype=want.dtype)
    for g, r in zip(
        torch.autograd.grad((got * w).sum(), leaves), torch.autograd.grad((want * w).sum(), ref_leaves), strict=True
    ):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_gradcheck():
    x, weight, bias, options = inputs(2, 2, 2, (6, 5), (3, 2), (2, 1), 1, (1, 2))
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    assert torch.autograd.gradcheck(lambda *args: cvops.locally_connected2d(*args, **options), leaves)
    # Without a bias, and with only x or only weight requiring a gradient (fast mode: the backward's other paths).
    for wanted in ((0, 1), (0,), (1,)):
        args = [t.clone().requires_grad_(k in wanted) for k, t in enumerate((x, weight))]
        fn = lambda a, w: cvops.locally_connected2d(a, w, **options)  # noqa: E731
        assert torch.autograd.gradcheck(fn, args, fast_mode=True)


def test_gradcheck_padding_beyond_kernel():
    """Padding 2 with a 1×2 kernel: border outputs see only padding (zero gradient to x there)."""
    x, weight, bias, options = inputs(1, 2, 2, (4, 3), (1, 2), 1, 2, 1)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    assert torch.autograd.gradcheck(lambda a, b, c: cvops.locally_connected2d(a, b, c, **options), leaves)


def test_reduced_precision():
    x, weight, bias, options = inputs(2, 8, 6, (12, 11), (5, 3), (2, 1), 1, 1, dtype=torch.float32)
    want64 = ref.locally_connected2d(x.double(), weight.double(), bias.double(), **options)
    torch.testing.assert_close(
        cvops.locally_connected2d(x, weight, bias, **options).double(), want64, rtol=1e-5, atol=1e-5
    )
    for dtype, rtol in ((torch.float16, 2e-3), (torch.bfloat16, 1e-2)):
        leaves = [t.to(dtype).requires_grad_() for t in (x, weight, bias)]
        got = cvops.locally_connected2d(*leaves, **options)
        assert got.dtype == dtype
        exact_leaves = [t.detach().double().requires_grad_() for t in leaves]  # float32 accumulation: ~exact
        exact = ref.locally_connected2d(*exact_leaves, **options)
        torch.testing.assert_close(got.double(), exact, rtol=rtol, atol=rtol * exact.abs().max().item() / 10)
        w = torch.randn(got.shape)
        grads = torch.autograd.grad((got * w.to(dtype)).sum(), leaves)
        exact_grads = torch.autograd.grad((exact * w.to(dtype).double()).sum(), exact_leaves)
        for g, e in zip(grads, exact_grads):
            assert g.dtype == dtype
            torch.testing.assert_close(g.double(), e, rtol=rtol, atol=rtol * e.abs().max().item() / 10)


_THREADS = r"""
import sys, torch, cvops
g = torch.Generator().manual_seed(0)
weight = torch.randn(16, 16, 8, 8, 5, 5, generator=g).requires_grad_()
bias = torch.randn(8, 16, 16, generator=g).requires_grad_()
results = []
for threads in (1, 2, 3, 1):
    torch.set_num_threads(threads)
    result = []
    for batch in (4, 10, 70):  # the small-batch rows, then the batch lanes (70: two blocks of samples)
        x = torch.randn(batch, 8, 16, 16, generator=torch.Generator().manual_seed(batch)).requires_grad_()
        w = torch.randn(batch, 8, 16, 16, generator=torch.Generator().manual_seed(batch + 1))
        y = cvops.locally_connected2d(x, weight, bias, padding=2)
        result += [y, *torch.autograd.grad((y * w).sum(), (x, weight, bias))]
    results.append(result)
torch.save(results, sys.argv[1])
"""


def test_same_bits_at_any_thread_count(tmp_path):
    """1, 2, 3 and again 1 thread, in a subprocess (the thread count is process-wide)."""
    path = tmp_path / "threads.pt"
    subprocess.run([sys.executable, "-c", _THREADS, str(path)], check=True, timeout=120)
    first, *others = torch.load(path)
    for threads, other in zip((2, 3, 1), others):
        names = [
            f"{name} at batch {batch}"
            for batch in (4, 10, 70)
            for name in ("out", "grad_x", "grad_weight", "grad_bias")
        ]
        for name, a, b in zip(names, first, other, strict=True):
            assert torch.equal(a, b), f"{name} at {threads} threads"


def test_opcheck():
    x, weight, bias, _ = inputs(2, 3, 4, (7, 8), (3, 2), 1, 1, 1, dtype=torch.float32)
    forward = torch.ops.cvops._locally_connected2d.default
    backward = torch.ops.cvops._locally_connected2d_backward.default
    pairs = ([1, 1], [1, 1], [1, 1])
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    torch.library.opcheck(forward, (*leaves, *pairs))
    x2, w2, _, _ = inputs(2, 3, 4, (9, 8), (3, 3), 2, 0, (1, 2), dtype=torch.float32, bias=False)
    strided = ([2, 2], [0, 0], [1, 2])
    torch.library.opcheck(forward, (x2, w2, None, *strided))
    grad = torch.randn(forward(x2, w2, None, *strided).shape)
    torch.library.opcheck(backward, (grad, x2, w2, *strided))


def test_compile():
    x, weight, bias, options = inputs(2, 3, 4, (9, 8), (3, 3), 2, 1, 1, dtype=torch.float32)
    torch._dynamo.reset()

    def fn(a, w, b):
        return cvops.locally_connected2d(a, w, b, **options).square().mean()

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    eager_leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    got, want = compiled(*leaves), fn(*eager_leaves)
    torch.testing.assert_close(got, want)
    for g, e in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(want, eager_leaves)):
        torch.testing.assert_close(g, e)


# ---------------------------------------------------------------------------- the module


def test_module_forward_and_shapes():
    torch.manual_seed(0)
    layer = LocallyConnected2d(3, 5, (10, 9), (3, 2), stride=(2, 1), padding=1, dilation=(1, 2))
    assert layer.output_size == (5, 9)
    assert layer.weight.shape == (5, 9, 5, 3, 3, 2) and layer.bias.shape == (5, 5, 9)
    x = torch.randn(4, 3, 10, 9)
    out = layer(x)
    assert out.shape == (4, 5, 5, 9)
    want = ref.locally_connected2d(
        x.double(), layer.weight.double(), layer.bias.double(), stride=(2, 1), padding=1, dilation=(1, 2)
    )
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert layer.weight.grad.shape == layer.weight.shape and layer.bias.grad.shape == layer.bias.shape
    no_bias = LocallyConnected2d(3, 2, 6, 3, bias=False)
    assert no_bias.bias is None and "bias" not in dict(no_bias.named_parameters())
    assert no_bias(torch.randn(1, 3, 6, 6)).shape == (1, 2, 4, 4)
    half = LocallyConnected2d(3, 2, 6, 3, dtype=torch.bfloat16)
    assert half.weight.dtype == torch.bfloat16 and half(torch.randn(2, 3, 6, 6, dtype=torch.bfloat16)).dtype == (
        torch.bfloat16
    )


def test_module_initialisation_is_conv2d_at_every_location():
    """nn.Conv2d's kaiming_uniform_(a=√5): weight and bias uniform in ±1/√(C·kh·kw), drawn per location."""
    torch.manual_seed(0)
    layer = LocallyConnected2d(6, 8, (12, 12), (3, 3))
    bound = 1 / math.sqrt(6 * 3 * 3)
    conv = torch.nn.Conv2d(6, 8, 3)
    assert conv.weight.abs().max() <= bound  # the same bound as nn.Conv2d's
    for t in (layer.weight, layer.bias):
        assert t.abs().max() <= bound and t.abs().max() > 0.99 * bound
        spread = bound / math.sqrt(t.numel())  # ~4 standard errors of the mean (2.3·spread) and std (1·spread)
        assert abs(t.mean().item()) < 2.3 * spread
        assert abs(t.std().item() - bound / math.sqrt(3)) < spread
    assert not torch.equal(layer.weight[0, 0], layer.weight[0, 1])  # unshared: each location its own draw
    assert not torch.equal(layer.bias[:, 0, 0], layer.bias[:, 0, 1])
    before = layer.weight.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.weight)


def test_module_extra_repr_and_state_dict():
    layer = LocallyConnected2d(3, 4, (9, 8), 3, stride=2, padding=(1, 0), dilation=(1, 2), bias=False)
    text = repr(layer)
    assert text == (
        "LocallyConnected2d(3, 4, input_size=(9, 8), kernel_size=(3, 3), stride=(2, 2), padding=(1, 0), "
        "dilation=(1, 2), bias=False, output_size=(5, 2))"
    )
    assert repr(LocallyConnected2d(1, 1, 5, 5)) == (
        "LocallyConnected2d(1, 1, input_size=(5, 5), kernel_size=(5, 5), stride=(1, 1), output_size=(1, 1))"
    )
    a = LocallyConnected2d(3, 4, (9, 8), (3, 2), stride=2)
    b = LocallyConnected2d(3, 4, (9, 8), (3, 2), stride=2)
    assert set(a.state_dict()) == {"weight", "bias"}
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 9, 8)
    assert torch.equal(a(x), b(x))


def test_module_compile():
    layer = LocallyConnected2d(3, 4, (8, 7), 3, padding=1)
    x = torch.randn(2, 3, 8, 7)
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: layer(t).relu().sum(), backend="aot_eager", fullgraph=True)
    got = compiled(x)
    torch.testing.assert_close(got, layer(x).relu().sum())
    (grad,) = torch.autograd.grad(got, layer.weight)
    torch.testing.assert_close(grad, torch.autograd.grad(layer(x).relu().sum(), layer.weight)[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_channels=0), r"in_channels must be an int >= 1, got 0"),
        (dict(out_channels=2.0), r"out_channels must be an int >= 1, got 2.0"),
        (dict(input_size=(8,)), r"input_size must be an int >= 1 or a pair \(h, w\) of them, got \(8,\)"),
        (dict(input_size=None), r"input_size must be an int >= 1 or a pair"),
        (dict(kernel_size=(3, 0)), r"kernel_size must be an int >= 1 or a pair"),
        (dict(kernel_size=True), r"kernel_size must be an int >= 1 or a pair"),
        (dict(stride=0), r"stride must be an int >= 1 or a pair"),
        (dict(padding=-1), r"padding must be an int >= 0 or a pair"),
        (dict(dilation=(1, 1.5)), r"dilation must be an int >= 1 or a pair"),
        (dict(bias=1), r"bias must be True or False, got 1"),
        (
            dict(kernel_size=(5, 3), dilation=2),
            r"kernel_size \(5 x 3, spanning 9 x 5 with dilation \(2, 2\)\) is larger than the padded "
            r"input_size \(8 x 7\)",
        ),
        (dict(input_size=(2**20, 2**20), kernel_size=1), r"the unshared weight asks for a .* more than"),
    ],
)
def test_module_bad_arguments(kwargs, match):
    args = dict(in_channels=3, out_channels=4, input_size=(8, 7), kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=r"cvops.LocallyConnected2d: " + match):
        LocallyConnected2d(**args)


def test_module_bad_input():
    layer = LocallyConnected2d(3, 4, (8, 7), 3)
    for x, match in [
        (
            torch.randn(2, 3, 7, 8),
            r"x must have shape \[B, in_channels, \*input_size\] = \[B, 3, 8, 7\], got \[2, 3, 7",
        ),
        (torch.randn(2, 4, 8, 7), r"x must have shape .* got \[2, 4, 8, 7\]"),
        (torch.randn(3, 8, 7), r"x must have shape .* got \[3, 8, 7\]"),
        (torch.randn(2, 3, 8, 7).long(), r"x must be a floating-point tensor"),
        (torch.randn(2, 3, 8, 7).double(), r"x must have the module's dtype float32"),
        (torch.randn(2, 3, 8, 7, device="meta"), r"x must be on the module's device"),
        (None, r"x must be a tensor, got None"),
    ]:
        with pytest.raises(ValueError, match=r"cvops.LocallyConnected2d: " + match):
            layer(x)


# ---------------------------------------------------------------------------- converters


def keras_locally_connected(x_nhwc_or_nchw, kernel, bias, kernel_size, strides, data_format):
    """Keras LocallyConnected2D's implementation=1 forward (tf.keras backend.local_conv), in NumPy:
    for each output position (i, j) in row-major order, the input patch flattened in the data
    format's own order, times kernel[i·oW + j]; then + bias. Output NHWC (NCHW for channels_first)."""
    x = np.asarray(x_nhwc_or_nchw)
    (kh, kw), (sh, sw) = kernel_size, strides
    first = data_format == "channels_first"
    height, width = x.shape[2:4] if first else x.shape[1:3]
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    rows = []
    for i, j in itertools.product(range(out_h), range(out_w)):
        window = (slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
        patch = x[(slice(None), slice(None), *window)] if first else x[(slice(None), *window, slice(None))]
        rows.append(patch.reshape(x.shape[0], -1) @ kernel[i * out_w + j])  # [B, O]
    out = np.stack(rows, 1).reshape(x.shape[0], out_h, out_w, -1)
    if first:
        out = out.transpose(0, 3, 1, 2)
    return out if bias is None else out + bias


def unfold_einsum(x, weight, bias, kernel_size, stride, padding, dilation):
    """What an unfold + einsum re-implementation computes: weight [oH·oW, O, C·kh·kw], bias [O, oH·oW]."""
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    out = torch.einsum("bkl,lok->bol", cols, weight)
    if bias is not None:
        out = out + bias
    oh, ow = output_size(x.shape[2:], kernel_size, stride, padding, dilation)
    return out.reshape(x.shape[0], -1, oh, ow)


KERAS_CASES = [  # (C, D, (H, W), (kh, kw), strides)
    (3, 4, (7, 6), (3, 2), (2, 1)),
    (2, 5, (5, 5), (1, 1), (1, 1)),
    (4, 3, (6, 8), (6, 3), (1, 2)),  # kernel as tall as the input
    (1, 1, (9, 9), (3, 3), (3, 3)),
]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("case", KERAS_CASES)
def test_from_keras_matches_keras_formula(case, data_format):
    C, D, (H, W), kernel_size, strides = case
    rng = np.random.default_rng(C * 10 + D)
    oh, ow = (H - kernel_size[0]) // strides[0] + 1, (W - kernel_size[1]) // strides[1] + 1
    kernel = rng.standard_normal((oh * ow, kernel_size[0] * kernel_size[1] * C, D))
    bias = rng.standard_normal((oh, ow, D) if data_format == "channels_last" else (D, oh, ow))
    x_nchw = rng.standard_normal((3, C, H, W))
    x_keras = x_nchw if data_format == "channels_first" else x_nchw.transpose(0, 2, 3, 1)
    want = keras_locally_connected(x_keras, kernel, bias, kernel_size, strides, data_format)
    if data_format == "channels_last":
        want = want.transpose(0, 3, 1, 2)
    layer = LocallyConnected2d.from_keras(kernel, bias, (H, W), kernel_size, strides, data_format=data_format)
    assert layer.weight.dtype == torch.float64 and layer.output_size == (oh, ow)
    got = layer(torch.from_numpy(x_nchw))
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-11, atol=1e-11)
    # And the export: a random layer's to_keras() weights in Keras's formula give the layer's output.
    other = LocallyConnected2d(C, D, (H, W), kernel_size, strides, dtype=torch.float64)
    k, b = other.to_keras(data_format)
    exported = keras_locally_connected(x_keras, k.numpy(), b.numpy(), kernel_size, strides, data_format)
    if data_format == "channels_last":
        exported = exported.transpose(0, 3, 1, 2)
    torch.testing.assert_close(other(torch.from_numpy(x_nchw)), torch.from_numpy(exported), rtol=1e-11, atol=1e-11)


def test_from_keras_float32_no_bias_and_copies():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((4 * 3, 3 * 3 * 2, 5)).astype(np.float32)
    layer = LocallyConnected2d.from_keras(kernel, None, (6, 5), 3)
    assert layer.weight.dtype == torch.float32 and layer.bias is None
    x = rng.standard_normal((2, 6, 5, 2)).astype(np.float32)
    want = keras_locally_connected(
        x.astype(np.float64), kernel.astype(np.float64), None, (3, 3), (1, 1), "channels_last"
    )
    got = layer(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(got.double(), torch.from_numpy(want), rtol=1e-5, atol=1e-5)
    kernel[:] = 0  # the layer holds its own copy
    assert layer.weight.abs().sum() > 0
    weight, bias = from_keras_kernel(torch.from_numpy(kernel), None, output_size=(4, 3), kernel_size=3)
    assert bias is None and weight.shape == (4, 3, 5, 2, 3, 3) and weight.is_contiguous()
    back, _ = to_keras_kernel(weight)
    assert torch.equal(back, torch.from_numpy(kernel))


@pytest.mark.parametrize("bias_rank", [2, 3, None])
def test_from_unfold_matches_unfold_formula(bias_rank):
    g = torch.Generator().manual_seed(bias_rank or 0)
    C, D, hw, kernel_size, stride, padding, dilation = 3, 4, (9, 8), (3, 2), (2, 1), (1, 0), (1, 2)
    oh, ow = output_size(hw, kernel_size, stride, padding, dilation)
    weight = torch.randn(oh * ow, D, C * kernel_size[0] * kernel_size[1], generator=g, dtype=torch.float64)
    bias = None if bias_rank is None else torch.randn(D, oh * ow, generator=g, dtype=torch.float64)
    x = torch.randn(2, C, *hw, generator=g, dtype=torch.float64)
    want = unfold_einsum(x, weight, bias, kernel_size, stride, padding, dilation)
    given = bias if bias_rank != 3 else bias.reshape(D, oh, ow)
    layer = LocallyConnected2d.from_unfold(weight, given, hw, kernel_size, stride, padding, dilation)
    torch.testing.assert_close(layer(x), want, rtol=1e-11, atol=1e-11)
    other = LocallyConnected2d(C, D, hw, kernel_size, stride, padding, dilation, dtype=torch.float64)
    w, b = other.to_unfold()
    assert w.shape == (oh * ow, D, C * 6) and b.shape == (D, oh * ow)
    torch.testing.assert_close(
        other(x), unfold_einsum(x, w, b, kernel_size, stride, padding, dilation), rtol=1e-11, atol=1e-11
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: LocallyConnected2d.from_keras(torch.randn(11, 18, 5), None, (6, 5), 3),
            r"from_keras: kernel must have shape \[oH·oW, kh·kw·C, O\] with oH·oW = 12 and a multiple of kh·kw = 9",
        ),
        (
            lambda: LocallyConnected2d.from_keras(torch.randn(12, 17, 5), None, (6, 5), 3),
            r"from_keras: kernel must have shape",
        ),
        (
            lambda: LocallyConnected2d.from_keras(torch.randn(12, 18, 5), torch.randn(5, 4, 3), (6, 5), 3),
            r"from_keras: bias must have shape \[oH, oW, O\] = \[4, 3, 5\], got \[5, 4, 3\]",
        ),
        (
            lambda: LocallyConnected2d.from_keras(torch.randn(12, 18, 5), None, (6, 5), 3, data_format="nhwc"),
            r"from_keras: data_format must be one of 'channels_last', 'channels_first'",
        ),
        (
            lambda: LocallyConnected2d.from_keras(np.zeros((12, 18, 5), dtype=np.int32), None, (6, 5), 3),
            r"from_keras: kernel must be floating-point, got int32",
        ),
        (lambda: LocallyConnected2d.from_keras("kernel", None, (6, 5), 3), r"from_keras: kernel must be a tensor"),
        (
            lambda: LocallyConnected2d.from_unfold(torch.randn(20, 4, 18), torch.randn(4, 21), (6, 7), 3),
            r"from_unfold: bias must have shape \[O, oH·oW\] = \[4, 20\], got \[4, 21\]",
        ),
        (
            lambda: LocallyConnected2d.from_unfold(torch.randn(20, 4, 18), None, (6, 7), 4),
            r"from_unfold: weight must have shape \[oH·oW, O, C·kh·kw\] with oH·oW = 12",
        ),
        (
            lambda: LocallyConnected2d(2, 3, 6, 3, padding=1).to_keras(),
            r"to_keras: Keras's LocallyConnected2D has no padding or dilation",
        ),
    ],
)
def test_converter_bad_input(call, match):
    with pytest.raises(ValueError, match=r"cvops.LocallyConnected2d." + match):
        call()


# ---------------------------------------------------------------------------- bad input to the op

X = torch.randn(2, 4, 8, 7)
W = torch.randn(6, 5, 3, 4, 3, 3)  # 8×7 by 3×3, stride 1: 6×5 locations
B = torch.randn(3, 6, 5)
LC = cvops.locally_connected2d
OP = r"cvops\.locally_connected2d: [^\n]*"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: LC(X, torch.randn(5, 5, 3, 4, 3, 3)), OP + r"\bweight\b"),  # 5 rows of locations, not 6
        (lambda: LC(X, W, stride=2), OP + r"\bweight\b"),  # stride 2 gives 3×3 locations
        (lambda: LC(X, W[0]), OP + r"\bweight\b"),
        (lambda: LC(X, torch.randn(6, 5, 3, 5, 3, 3)), OP + r"\b(weight|x)\b"),  # 5 channels, x has 4
        (lambda: LC(X, W, torch.randn(3, 6, 4)), OP + r"\bbias\b"),
        (lambda: LC(X, W, torch.randn(3)), OP + r"\bbias\b"),
        (lambda: LC(X[0], W), OP + r"\bx\b"),
        (
            lambda: LC(X, torch.randn(1, 1, 3, 4, 9, 9)),
            OP + r"the kernel \(9 x 9 with dilation\) is larger than the padded input \(8 x 7\)",
        ),
        (
            lambda: LC(X, torch.randn(1, 1, 3, 4, 3, 3), padding=1, dilation=5),
            OP + r"the kernel \(11 x 11 with dilation\) is larger than the padded input \(10 x 9\)",
        ),
        (lambda: LC(X.long(), W.long()), OP + r"\bx\b"),
        (lambda: LC(X, W.long()), OP + r"\bweight\b"),
        (lambda: LC(X, W, B.int()), OP + r"\bbias\b"),
        (lambda: LC(X, W.to("meta")), OP + r"\bweight\b"),
        (lambda: LC(X, W, B.to("meta")), OP + r"\bbias\b"),
        (lambda: LC(None, W), OP + r"\bx\b"),
        (lambda: LC(X, W, stride=0), OP + r"\bstride\b"),
        (lambda: LC(X, W, stride=(1, 1, 1)), OP + r"\bstride\b"),
        (lambda: LC(X, W, padding=-1), OP + r"\bpadding\b"),
        (lambda: LC(X, W, dilation=(1, 0)), OP + r"\bdilation\b"),
        (lambda: LC(X, W, dilation=1.0), OP + r"\bdilation\b"),
        (lambda: torch.ops.cvops._locally_connected2d(X, None, None, [1, 1], [0, 0], [1, 1]), OP + r"\bweight\b"),
        (lambda: torch.ops.cvops._locally_connected2d(X, W, None, [0, 1], [0, 0], [1, 1]), OP + r"\bstride\b"),
        (lambda: torch.ops.cvops._locally_connected2d(X, W, None, [1, 1], [-1, 0], [1, 1]), OP + r"\bpadding\b"),
        (
            lambda: torch.ops.cvops._locally_connected2d_backward(
                torch.randn(2, 3, 6, 4), X, W, [1, 1], [0, 0], [1, 1]
            ),
            r"cvops\.locally_connected2d_backward: [^\n]*\bgrad\b",
        ),
        (
            lambda: torch.ops.cvops._locally_connected2d_backward(
                torch.randn(2, 3, 6, 5).double(), X, W, [1, 1], [0, 0], [1, 1]
            ),
            r"cvops\.locally_connected2d_backward: [^\n]*\bgrad\b",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((RuntimeError, ValueError), match=match):
        call()


@pytest.mark.cuda
def test_cuda_matches_cpu():
    for shape in [SHAPES[3], SHAPES[7], (4, 16, 16, (25, 25), (5, 5), 1, 0, 1), (2, 16, 16, (55, 55), (7, 7), 2, 0, 1)]:
        x, weight, bias, options = inputs(*shape, dtype=torch.float32)
        leaves = [t.cuda().requires_grad_() for t in (x, weight, bias)]
        cpu_leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        got, want = cvops.locally_connected2d(*leaves, **options), cvops.locally_connected2d(*cpu_leaves, **options)
        tol = cuda_rtol(torch.float32)
        torch.testing.assert_close(got.cpu(), want, rtol=tol, atol=tol * want.abs().max().item())
        w = torch.randn(want.shape)
        for g, c in zip(
            torch.autograd.grad((got * w.cuda()).sum(), leaves), torch.autograd.grad((want * w).sum(), cpu_leaves)
        ):
            torch.testing.assert_close(g.cpu(), c, rtol=tol, atol=tol * c.abs().max().item())
        for dtype in (torch.float16, torch.bfloat16):
            low = [t.detach().to(dtype) for t in leaves]
            half = cvops.locally_connected2d(*low, **options)
            exact = cvops.locally_connected2d(*[t.cpu().double() for t in low], **options)
            assert half.dtype == dtype
            tol = cuda_rtol(dtype)
            torch.testing.assert_close(half.cpu().double(), exact, rtol=tol, atol=tol * exact.abs().max().item())


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [1, 2, 3, 8, 9, 33, 70, 130])
def test_cuda_batch_paths(batch):
    """Every CUDA forward path (weight streaming up to 8 samples; register tiles of 32, 64 and 128 samples,
    several tiles past 128) and the backward against the CPU, in float64 and float32: 17 output channels (a
    partial channel tile), 45 taps (a partial tap chunk), padding at the borders."""
    x, weight, bias, options = inputs(batch, 5, 17, (11, 10), (3, 3), 1, 1, 1)
    for dtype in (torch.float64, torch.float32):
        cpu_leaves = [t.to(dtype).requires_grad_() for t in (x, weight, bias)]
        leaves = [t.detach().cuda().requires_grad_() for t in cpu_leaves]
        got, want = cvops.locally_connected2d(*leaves, **options), cvops.locally_connected2d(*cpu_leaves, **options)
        tol = 1e-12 if dtype == torch.float64 else cuda_rtol(dtype)
        torch.testing.assert_close(got.cpu(), want, rtol=tol, atol=tol * want.abs().max().item())
        w = torch.randn(want.shape, dtype=dtype)
        grads = torch.autograd.grad((got * w.cuda()).sum(), leaves)
        for g, c in zip(grads, torch.autograd.grad((want * w).sum(), cpu_leaves), strict=True):
            torch.testing.assert_close(g.cpu(), c, rtol=tol, atol=tol * c.abs().max().item())


def _round_to_tf32(t):
    """float32 rounded to TF32's 10 mantissa bits, to nearest with ties away from zero (cvt.rna.tf32.f32)."""
    bits = t.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [9, 33, 70, 130])
def test_cuda_tensor_cores(batch):
    """Past 8 samples, float16/bfloat16 inputs run on TF32 tensor cores (their values are exact in TF32, the
    sums float32), and so does float32 where torch.backends.cuda.matmul.allow_tf32 allows: then the result is
    the float64 sum of the TF32-rounded inputs, to float32 accuracy."""
    x, weight, bias, options = inputs(batch, 5, 17, (11, 10), (3, 3), 1, 1, 1, dtype=torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        low = [t.to(dtype) for t in (x, weight, bias)]
        got = cvops.locally_connected2d(*[t.cuda() for t in low], **options)
        exact = cvops.locally_connected2d(*[t.double() for t in low], **options)
        tol = cuda_rtol(dtype)
        torch.testing.assert_close(got.cpu().double(), exact, rtol=tol, atol=tol * exact.abs().max().item())
    allowed = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        got = cvops.locally_connected2d(x.cuda(), weight.cuda(), bias.cuda(), **options)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    rounded = cvops.locally_connected2d(
        _round_to_tf32(x).double(), _round_to_tf32(weight).double(), bias.double(), **options
    )
    tol = cuda_rtol(torch.float32)
    torch.testing.assert_close(got.cpu().double(), rounded, rtol=tol, atol=tol * rounded.abs().max().item())
