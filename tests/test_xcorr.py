"""The xcorr family: cvops.xcorr against the grouped-conv2d reference (reference/xcorr.py) in both
modes, one template for all search images, padding, odd sizes, layouts, empty batches, gradients of
every input, determinism across thread counts, opcheck, torch.compile, the XCorr module, bad input."""

import subprocess
import sys

import pytest
import torch

import cvops
import reference.xcorr as ref
from tolerances import cuda_rtol

MODES = ["full", "depthwise"]

SHAPES = [  # (B, C, H, W, h, w)
    (3, 5, 11, 13, 4, 3),
    (2, 7, 9, 9, 9, 9),  # h = H: a 1×1 response
    (1, 1, 5, 8, 1, 2),
    (4, 16, 22, 22, 6, 6),  # the SiamFC shape, smaller
]


def pair(B, C, H, W, h, w, Bz=None, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(B * 1000 + C * 10 + h)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    z = torch.randn(B if Bz is None else Bz, C, h, w, generator=g, dtype=dtype)
    return x.to(device), z.to(device)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("one_template", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_matches_grouped_conv(mode, shape, one_template, padding):
    x, z = pair(*shape, Bz=1 if one_template else None)
    got = cvops.xcorr(x, z, mode=mode, padding=padding)
    torch.testing.assert_close(got, ref.xcorr(x, z, mode=mode, padding=padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_scale_and_bias(mode):
    x, z = pair(2, 6, 10, 12, 3, 4)
    for scale, bias in [
        (torch.tensor(0.001, dtype=torch.float64), None),
        (None, torch.tensor([0.5], dtype=torch.float64)),
        (torch.tensor(2.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)),
    ] + ([(torch.rand(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64))] if mode == "depthwise" else []):
        got = cvops.xcorr(x, z, mode=mode, scale=scale, bias=bias)
        want = ref.xcorr(x, z, mode=mode, scale=scale, bias=bias)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_layouts_and_reduced_precision(mode):
    x, z = pair(3, 8, 15, 17, 5, 5, dtype=torch.float32)
    want = ref.xcorr(x.double(), z.double(), mode=mode)
    strided = torch.randn(3, 8, 15, 34)[..., ::2].copy_(x)
    for xi, zi in [
        (x.to(memory_format=torch.channels_last), z),
        (strided, z.transpose(2, 3).contiguous().transpose(2, 3)),
    ]:
        torch.testing.assert_close(cvops.xcorr(xi, zi, mode=mode).double(), want, rtol=1e-5, atol=1e-4)
    for dtype in (torch.float16, torch.bfloat16):
        got = cvops.xcorr(x.to(dtype), z.to(dtype), mode=mode)
        assert got.dtype == dtype
        exact = ref.xcorr(x.to(dtype).double(), z.to(dtype).double(), mode=mode)  # float32 accumulation
        torch.testing.assert_close(got.double(), exact, rtol=1e-2, atol=0.05 * exact.abs().max().item() / 10)


def test_empty_batch_and_inputs_not_mutated():
    x, z = pair(0, 4, 8, 8, 3, 3)
    assert cvops.xcorr(x, z).shape == (0, 1, 6, 6)
    assert cvops.xcorr(x, torch.randn(1, 4, 3, 3, dtype=x.dtype), mode="depthwise").shape == (0, 4, 6, 6)
    x, z = pair(2, 3, 8, 8, 3, 3)
    saved = x.clone(), z.clone()
    cvops.xcorr(x, z, mode="depthwise", scale=torch.tensor(2.0, dtype=x.dtype), padding=1)
    assert torch.equal(saved[0], x) and torch.equal(saved[1], z)


@pytest.mark.parametrize("one_template", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode, one_template):
    x, z = pair(2, 3, 7, 8, 3, 2, Bz=1 if one_template else None)
    channels = 3 if mode == "depthwise" else 1
    scale = torch.rand(channels, dtype=x.dtype) + 0.5
    bias = torch.randn(channels, dtype=x.dtype)
    leaves = [t.clone().requires_grad_() for t in (x, z, scale, bias)]
    fn = lambda a, b, s, c: cvops.xcorr(a, b, mode=mode, scale=s, bias=c, padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_match_grouped_conv(mode):
    x, z = pair(4, 16, 22, 22, 6, 6, Bz=1)
    weights = torch.randn(ref.xcorr(x, z, mode=mode).shape, dtype=x.dtype)
    leaves, ref_leaves = [t.clone().requires_grad_() for t in (x, z)], [t.clone().requires_grad_() for t in (x, z)]
    got = torch.autograd.grad((cvops.xcorr(*leaves, mode=mode) * weights).sum(), leaves)
    want = torch.autograd.grad((ref.xcorr(*ref_leaves, mode=mode) * weights).sum(), ref_leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


_THREADS = r"""
import sys, torch, cvops
torch.set_num_threads(int(sys.argv[2]))
g = torch.Generator().manual_seed(0)
x = torch.randn(8, 64, 22, 22, generator=g).requires_grad_()
z = torch.randn(1, 64, 6, 6, generator=g).requires_grad_()
out = {}
for mode in ("full", "depthwise"):
    y = cvops.xcorr(x, z, mode=mode)
    out[mode] = [y, *torch.autograd.grad((y * torch.randn(y.shape, generator=g)).sum(), (x, z))]
torch.save(out, sys.argv[1])
"""


def test_same_bits_at_one_and_two_threads(tmp_path):
    results = []
    for threads in (1, 2):
        path = tmp_path / f"{threads}.pt"
        subprocess.run([sys.executable, "-c", _THREADS, str(path), str(threads)], check=True, timeout=120)
        results.append(torch.load(path))
    for mode in MODES:
        for a, b in zip(results[0][mode], results[1][mode]):
            assert torch.equal(a, b), mode


@pytest.mark.parametrize("mode", MODES)
def test_opcheck_and_compile(mode):
    x, z = pair(2, 4, 9, 10, 3, 3, dtype=torch.float32)
    scale = torch.tensor(0.5)
    torch.library.opcheck(
        torch.ops.cvops._xcorr.default, (x.requires_grad_(), z.requires_grad_(), scale, None, mode, 1)
    )
    torch.library.opcheck(torch.ops.cvops._xcorr.default, (x.detach(), z.detach(), None, None, mode, 0))
    torch._dynamo.reset()
    fn = lambda a, b, s: cvops.xcorr(a, b, mode=mode, scale=s).square().mean()  # noqa: E731
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    got = compiled(x, z, scale)
    torch.testing.assert_close(got, fn(x, z, scale))
    torch.testing.assert_close(torch.autograd.grad(got, z)[0], torch.autograd.grad(fn(x, z, scale), z)[0])


def test_module():
    x, z = pair(3, 8, 22, 22, 6, 6, dtype=torch.float32)
    head = cvops.nn.XCorr()
    torch.testing.assert_close(head(x, z), 0.001 * ref.xcorr(x, z), rtol=1e-5, atol=1e-7)
    learned = cvops.nn.XCorr("depthwise", learn_scale=True, bias=True, channels=8)
    learned(x, z).sum().backward()
    assert learned.scale.grad is not None and learned.bias.grad.shape == (8,)
    bn = cvops.nn.XCorr(batchnorm=True, scale=1.0)
    assert bn(x, z).shape == (3, 1, 17, 17)
    assert "mode='depthwise'" in repr(learned) and "learned" in repr(learned)
    with pytest.raises(ValueError, match="cvops.XCorr: depthwise mode with bias or batchnorm needs channels"):
        cvops.nn.XCorr("depthwise", bias=True)


X, Z = torch.randn(2, 4, 10, 10), torch.randn(2, 4, 3, 3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cvops.xcorr(X, torch.randn(2, 5, 3, 3)), r"cvops.xcorr: z must have x's 4 channels"),
        (lambda: cvops.xcorr(X, torch.randn(2, 4, 11, 3)), r"cvops.xcorr: the kernel \(11 x 3"),
        (
            lambda: cvops.xcorr(X, torch.randn(3, 4, 3, 3)),
            r"cvops.xcorr: z must hold one template per search image \(2\)",
        ),
        (lambda: cvops.xcorr(X, Z, mode="group"), r"cvops.xcorr: mode must be one of 'full', 'depthwise'"),
        (lambda: cvops.xcorr(X.long(), Z), r"cvops.xcorr: x must be a floating-point tensor"),
        (lambda: cvops.xcorr(X, Z.double()), r"cvops.xcorr: z must have the dtype of x \(Float\), got Double"),
        (lambda: cvops.xcorr(X, Z.to("meta")), r"cvops.xcorr: z must be on the same device as x"),
        (
            lambda: cvops.xcorr(X, Z, scale=torch.ones(4)),
            r"cvops.xcorr: scale must be one value \(\[\] or \[1\]\), got shape \[4\]",
        ),
        (
            lambda: cvops.xcorr(X, Z, mode="depthwise", bias=torch.ones(3)),
            r"cvops.xcorr: bias must be one value .* or one per channel \[4\]",
        ),
        (lambda: cvops.xcorr(X, Z, padding=-1), r"cvops.xcorr: padding must be an int >= 0"),
        (lambda: cvops.xcorr(X[0], Z), r"cvops.xcorr: x must have 4 dimensions"),
        (lambda: cvops.xcorr(X, None), r"cvops.xcorr: z must be a tensor"),
        (lambda: torch.ops.cvops._xcorr(X, None, None, None, "full", 0), r"cvops.xcorr: z must be a tensor, got None"),
        (lambda: torch.ops.cvops._xcorr(X, Z, None, None, "full", -2), r"cvops.xcorr: padding must be >= 0"),
        (
            lambda: torch.ops.cvops._xcorr_backward(
                torch.rand(2, 1, 8, 8).double(), X, Z, None, None, torch.empty(0), "full", 0
            ),
            r"cvops.xcorr_backward: grad must have the dtype of x \(Float\), got Double",
        ),
        (
            lambda: torch.ops.cvops._xcorr_backward(
                torch.rand(2, 4, 8, 8), X, Z, None, None, torch.empty(0), "full", 0
            ),
            r"cvops.xcorr_backward: grad must have the output's shape \[2, 1, 8, 8\]",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((RuntimeError, ValueError), match=match):
        call()


@pytest.mark.cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_cpu(mode):
    for shape, Bz in [((8, 256, 22, 22, 6, 6), 1), ((3, 17, 30, 29, 7, 5), None), ((2, 3, 90, 90, 70, 70), None)]:
        x, z = pair(*shape, Bz=Bz, dtype=torch.float32)
        leaves = [t.cuda().requires_grad_() for t in (x, z)]
        cpu_leaves = [t.clone().requires_grad_() for t in (x, z)]
        got, want = cvops.xcorr(*leaves, mode=mode, padding=1), cvops.xcorr(*cpu_leaves, mode=mode, padding=1)
        tol = cuda_rtol(torch.float32)
        torch.testing.assert_close(got.cpu(), want, rtol=tol, atol=tol * want.abs().max().item())
        w = torch.randn(want.shape)
        for g, c in zip(
            torch.autograd.grad((got * w.cuda()).sum(), leaves), torch.autograd.grad((want * w).sum(), cpu_leaves)
        ):
            torch.testing.assert_close(g.cpu(), c, rtol=tol, atol=tol * c.abs().max().item())
        half = cvops.xcorr(leaves[0].detach().half(), leaves[1].detach().half(), mode=mode, padding=1)
        assert half.dtype == torch.float16


@pytest.mark.cuda
def test_cuda_full_mode_past_65535_channel_blocks():
    # 16 channels a block would need more than 65535 blocks (grid.y's limit): the blocks grow.
    x, z = pair(1, 1_100_000, 3, 3, 1, 1, dtype=torch.float64)
    got = cvops.xcorr(x.cuda(), z.cuda())
    torch.testing.assert_close(got.cpu(), cvops.xcorr(x, z))
