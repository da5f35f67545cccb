"""The boxes family's IoU ops (box_iou, box_iou_aligned): parity with torchvision.ops on generated box sets,
formats, broadcasting, edge sizes, reduced precision and autocast, opcheck, torch.compile, bad input."""

import pytest
import torch
import torchvision.ops as tv

import cvops
from box_sets import SETS, boxes_like
from tolerances import cuda_rtol

KINDS = {"iou": tv.box_iou, "giou": tv.generalized_box_iou, "diou": tv.distance_box_iou, "ciou": tv.complete_box_iou}
FORMATS = ["xyxy", "xywh", "cxcywh"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("box_set", SETS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torchvision(kind, box_set, dtype):
    a, b = boxes_like(box_set, 37, dtype), boxes_like(box_set, 53, dtype, generator=torch.Generator().manual_seed(7))
    want = KINDS[kind](a, b)
    got = cvops.box_iou(a, b, kind=kind)
    assert got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_formats(fmt, kind):
    a, b = boxes_like("uniform", 20), boxes_like("clustered", 30)
    got = cvops.box_iou(tv.box_convert(a, "xyxy", fmt), tv.box_convert(b, "xyxy", fmt), kind=kind, fmt=fmt)
    torch.testing.assert_close(got, KINDS[kind](a, b), rtol=1e-12, atol=1e-12)


def test_broadcasts_leading_dims():
    a = boxes_like("uniform", 2 * 5).view(2, 1, 5, 4)
    b = boxes_like("clustered", 3 * 7).view(3, 7, 4)
    got = cvops.box_iou(a, b, kind="giou")
    assert got.shape == (2, 3, 5, 7)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(got[i, j], tv.generalized_box_iou(a[i, 0], b[j]))


@pytest.mark.parametrize("n,m", [(0, 5), (5, 0), (0, 0), (1, 1)])
def test_edge_sizes(n, m):
    a, b = boxes_like("uniform", max(n, 1))[:n], boxes_like("uniform", max(m, 1))[:m]
    got = cvops.box_iou(a, b)
    assert got.shape == (n, m)
    torch.testing.assert_close(got, tv.box_iou(a, b))


def test_degenerate_boxes_follow_torchvision():
    a = torch.tensor([[0.0, 0, 0, 0], [5, 5, 2, 2], [0, 0, 4, 4]])  # a point, an inverted box, a box
    b = torch.tensor([[0.0, 0, 0, 0], [1, 1, 3, 3]])
    torch.testing.assert_close(cvops.box_iou(a, b), tv.box_iou(a, b), equal_nan=True)
    torch.testing.assert_close(cvops.box_iou(a, b, kind="giou"), tv.generalized_box_iou(a, b), equal_nan=True)


def test_reduced_precision_and_autocast():
    a, b = boxes_like("clustered", 40, torch.float32), boxes_like("uniform", 30, torch.float32)
    half = cvops.box_iou(a.half(), b.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), tv.box_iou(a.half().float(), b.half().float()), rtol=2e-3, atol=2e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cvops.box_iou(a.bfloat16(), b.bfloat16())
    assert out.dtype == torch.float32  # the op runs in float32 under autocast


def test_non_contiguous_inputs():
    a = boxes_like("uniform", 24).view(4, 6, 4).transpose(0, 1)[::2]  # [3, 4, 4], strided
    b = boxes_like("clustered", 20).t().contiguous().t()  # column-major [20, 4]
    assert not a.is_contiguous() and not b.is_contiguous()
    got = cvops.box_iou(a, b, kind="giou")
    for i in range(3):
        torch.testing.assert_close(got[i], tv.generalized_box_iou(a[i], b), rtol=1e-12, atol=1e-12)


def test_inputs_not_mutated():
    a, b = boxes_like("uniform", 9), boxes_like("uniform", 11)
    saved = a.clone(), b.clone()
    cvops.box_iou(a, b, kind="ciou", fmt="cxcywh")
    assert torch.equal(saved[0], a) and torch.equal(saved[1], b)


@pytest.mark.parametrize("kind", KINDS)
def test_opcheck(kind):
    a, b = boxes_like("uniform", 6), boxes_like("clustered", 8)
    torch.library.opcheck(torch.ops.cvops.box_iou.default, (a, b, kind, "xyxy"))
    torch.library.opcheck(torch.ops.cvops.box_iou.default, (a.view(2, 3, 4), b.view(1, 8, 4), kind, "xywh"))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    a, b = boxes_like("uniform", 12, torch.float32), boxes_like("uniform", 9, torch.float32)
    fn = lambda x, y: cvops.box_iou(x, y, kind="diou").max(dim=1).values  # noqa: E731
    torch.testing.assert_close(torch.compile(fn, backend="aot_eager", fullgraph=True)(a, b), fn(a, b))


@pytest.mark.parametrize(
    "call,error,match",
    [
        (
            lambda: cvops.box_iou(torch.rand(3, 5), torch.rand(2, 4)),
            RuntimeError,
            r"cvops.box_iou: boxes1 must have shape \[..., n, 4\]",
        ),
        (lambda: cvops.box_iou(torch.rand(4), torch.rand(2, 4)), RuntimeError, r"boxes1 must have shape \[..., n, 4\]"),
        (lambda: cvops.box_iou(torch.rand(3, 4), torch.rand(2, 3)), RuntimeError, r"boxes2 must have shape"),
        (
            lambda: cvops.box_iou(torch.ones(3, 4, dtype=torch.int64), torch.rand(2, 4)),
            RuntimeError,
            r"boxes1 must be a floating-point",
        ),
        (
            lambda: cvops.box_iou(torch.rand(3, 4), torch.rand(2, 4, dtype=torch.float64)),
            RuntimeError,
            r"must have the same dtype",
        ),
        (
            lambda: cvops.box_iou(torch.rand(2, 3, 4), torch.rand(3, 2, 4)),
            RuntimeError,
            r"leading dims of boxes1 \[2\] and boxes2 \[3\] do not broadcast",
        ),
        (
            lambda: cvops.box_iou(torch.rand(3, 4), torch.rand(2, 4), kind="iou2"),
            ValueError,
            r"cvops.box_iou: kind must be one of",
        ),
        (
            lambda: cvops.box_iou(torch.rand(3, 4), torch.rand(2, 4), fmt="xyhw"),
            ValueError,
            r"cvops.box_iou: fmt must be one of",
        ),
        (
            lambda: torch.ops.cvops.box_iou(torch.rand(3, 4), torch.rand(2, 4), "iou", "yxyx"),
            RuntimeError,
            r"cvops.box_iou: fmt must be 'xyxy'",
        ),
        (
            lambda: torch.ops.cvops.box_iou(torch.rand(3, 4), torch.rand(2, 4), "dice", "xyxy"),
            RuntimeError,
            r"cvops.box_iou: kind must be 'iou'",
        ),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("box_set", SETS)
def test_cuda_matches_torchvision(kind, box_set):
    for n, m in [(37, 53), (1000, 3), (2, 70000)]:
        a = boxes_like(box_set, n, torch.float32, "cuda")
        b = boxes_like(box_set, m, torch.float32, "cuda", generator=torch.Generator().manual_seed(3))
        tol = cuda_rtol(torch.float32)
        torch.testing.assert_close(cvops.box_iou(a, b, kind=kind), KINDS[kind](a, b), rtol=tol, atol=tol)
    a64, b64 = boxes_like(box_set, 40, device="cuda"), boxes_like(box_set, 30, device="cuda")
    torch.testing.assert_close(
        cvops.box_iou(a64, b64, kind=kind, fmt="xyxy"), KINDS[kind](a64, b64), rtol=1e-12, atol=1e-12
    )
    batched = cvops.box_iou(a64.view(2, 20, 4), b64.view(1, 30, 4), kind=kind)
    torch.testing.assert_close(batched[1], KINDS[kind](a64[20:], b64), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- box_iou_aligned

LOSSES = {"giou": tv.generalized_box_iou_loss, "diou": tv.distance_box_iou_loss, "ciou": tv.complete_box_iou_loss}


def aligned_pairs(n=48):
    """Element-wise pairs: half overlapping (perturbed copies), half unrelated."""
    a, b = boxes_like("uniform", n), boxes_like("uniform", n, generator=torch.Generator().manual_seed(5))
    near = a[: n // 2] + torch.randn(n // 2, 4, generator=torch.Generator().manual_seed(6), dtype=a.dtype) * 5
    near[:, 2:] = torch.maximum(near[:, 2:], near[:, :2] + 1)
    b[: n // 2] = near
    return a, b


@pytest.mark.parametrize("kind", KINDS)
def test_aligned_matches_torchvision_values_and_gradients(kind):
    a, b = aligned_pairs()
    weights = torch.randn(len(a), dtype=a.dtype)
    leaves = [t.clone().requires_grad_() for t in (a, b)]
    got = cvops.box_iou_aligned(*leaves, kind=kind)
    ref_leaves = [t.clone().requires_grad_() for t in (a, b)]
    if kind == "iou":
        want = torch.diagonal(tv.box_iou(*ref_leaves))
    else:  # torchvision's losses are 1 − value, with a 1e-7 eps inside the IoU
        want = 1 - LOSSES[kind](*ref_leaves, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
    grads = torch.autograd.grad((got * weights).sum(), leaves)
    want_grads = torch.autograd.grad((want * weights).sum(), ref_leaves)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["iou", "giou", "diou"])  # CIoU holds α out of the gradient, as torchvision
def test_aligned_gradcheck(kind, fmt):
    a, b = aligned_pairs(8)
    leaves = [tv.box_convert(t, "xyxy", fmt).clone().requires_grad_() for t in (a, b)]
    assert torch.autograd.gradcheck(lambda x, y: cvops.box_iou_aligned(x, y, kind=kind, fmt=fmt), leaves)


def test_aligned_broadcasts_and_reduces_gradients():
    a, b = aligned_pairs(6)
    one = b[:1].clone().requires_grad_()  # one target for every box
    many = a.view(2, 3, 4).clone().requires_grad_()
    got = cvops.box_iou_aligned(many, one, kind="giou")
    assert got.shape == (2, 3)
    got.sum().backward()
    assert one.grad.shape == (1, 4) and many.grad.shape == (2, 3, 4)
    ref_one = b[:1].clone().requires_grad_()
    torch.diagonal(tv.generalized_box_iou(a, ref_one.expand(6, 4))).sum().backward()
    torch.testing.assert_close(one.grad, ref_one.grad)


@pytest.mark.parametrize("kind", KINDS)
def test_aligned_opcheck_and_compile(kind):
    a, b = aligned_pairs(8)
    torch.library.opcheck(
        torch.ops.cvops.box_iou_aligned.default, (a.clone().requires_grad_(), b.clone().requires_grad_(), kind, "xyxy")
    )
    torch.library.opcheck(
        torch.ops.cvops._box_iou_aligned_backward.default, (torch.randn(8, dtype=a.dtype), a, b, kind, "cxcywh")
    )
    torch._dynamo.reset()
    loss = lambda x, y: (1 - cvops.box_iou_aligned(x, y, kind=kind)).mean()  # noqa: E731
    x = a.float().requires_grad_()
    got = torch.compile(loss, backend="aot_eager", fullgraph=True)(x, b.float())
    torch.testing.assert_close(got, loss(x, b.float()))
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(loss(x, b.float()), x)[0])


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda: cvops.box_iou_aligned(torch.rand(3, 5), torch.rand(3, 4)),
            r"cvops.box_iou_aligned: boxes1 must have shape \[..., 4\]",
        ),
        (
            lambda: cvops.box_iou_aligned(torch.rand(3, 4), torch.rand(2, 4)),
            r"cvops.box_iou_aligned: the leading dims of boxes1 \[3\] and boxes2 \[2\] do not broadcast",
        ),
        (
            lambda: cvops.box_iou_aligned(torch.ones(3, 4, dtype=torch.int32), torch.rand(3, 4)),
            r"boxes1 must be a floating-point",
        ),
        (
            lambda: torch.ops.cvops._box_iou_aligned_backward(
                torch.rand(2), torch.rand(3, 4), torch.rand(3, 4), "iou", "xyxy"
            ),
            r"cvops.box_iou_aligned_backward: grad must have the output's shape \[3\]",
        ),
    ],
)
def test_aligned_bad_input(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_aligned(kind):
    a, b = aligned_pairs(4000)
    leaves = [t.cuda().requires_grad_() for t in (a, b)]
    cpu_leaves = [t.clone().requires_grad_() for t in (a, b)]
    got, want = cvops.box_iou_aligned(*leaves, kind=kind), cvops.box_iou_aligned(*cpu_leaves, kind=kind)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad(got.sum(), leaves), torch.autograd.grad(want.sum(), cpu_leaves)):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-10, atol=1e-12)
