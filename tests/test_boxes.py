"""The boxes family: parity with torchvision.ops' box API (values, dtypes, gradients, positional order) on
generated box sets, formats, broadcasting, edge sizes, reduced precision and autocast, opcheck,
torch.compile, bad input."""

import math

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
    for dtype in (torch.float16, torch.bfloat16):  # computed and returned in float32, as torchvision
        got = cvops.box_iou(a.to(dtype), b.to(dtype))
        want = tv.box_iou(a.to(dtype), b.to(dtype))
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cvops.box_iou(a.bfloat16(), b.bfloat16())
    assert out.dtype == torch.float32  # the op runs in float32 under autocast


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("kind", KINDS)
def test_integer_boxes_give_float32(kind, dtype):
    a = torch.tensor([[0, 0, 100, 100], [0, 0, 50, 50], [10, 20, 60, 90]]).to(dtype)
    b = torch.tensor([[5, 5, 40, 60], [0, 0, 100, 100]]).to(dtype)
    want = KINDS[kind](a, b)
    got = cvops.box_iou(a, b, kind=kind)
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_mixed_dtypes_promote():
    a, b = boxes_like("uniform", 7, torch.float32), boxes_like("clustered", 5, torch.float64)
    for x, y in [(a, b), (b, a), (a.half(), b), (a.int(), b)]:
        got, want = cvops.box_iou(x, y, kind="giou"), tv.generalized_box_iou(x, y)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_torchvision_positional_api():
    a, b = boxes_like("uniform", 9), boxes_like("clustered", 6)
    for fmt in FORMATS:
        x, y = tv.box_convert(a, "xyxy", fmt), tv.box_convert(b, "xyxy", fmt)
        torch.testing.assert_close(cvops.box_iou(x, y, fmt), tv.box_iou(x, y, fmt), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cvops.generalized_box_iou(a, b), tv.generalized_box_iou(a, b), rtol=1e-12, atol=1e-12)
    for eps in (1e-7, 1e-2, 10.0):
        torch.testing.assert_close(
            cvops.distance_box_iou(a, b, eps), tv.distance_box_iou(a, b, eps), rtol=1e-12, atol=1e-12
        )
        torch.testing.assert_close(
            cvops.complete_box_iou(a, b, eps), tv.complete_box_iou(a, b, eps), rtol=1e-12, atol=1e-12
        )


def test_single_box_is_one_row():
    with pytest.raises(RuntimeError, match=r"boxes1 must have shape \[..., n, 4\] \(one box is \[1, 4\]\), got \[4\]"):
        cvops.box_iou(torch.rand(4), torch.rand(2, 4))


def test_empty_output_allocates_no_broadcast():
    # The broadcast of boxes2 to [65536·65536, 100, 4] would be 1.4 TB: an empty result must not make it.
    a, b = torch.rand(65536, 65536, 0, 4).expand(65536, 65536, 0, 4), torch.rand(100, 4)
    got = cvops.box_iou(a, b)
    assert got.shape == (65536, 65536, 0, 100) and got.dtype == torch.float32
    assert cvops.box_iou_aligned(torch.rand(65536, 65536, 0, 4), torch.rand(4)).shape == (65536, 65536, 0)


# ---------------------------------------------------------------------------- pairwise gradients


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_gradients_match_torchvision(kind, fmt):
    a, b = boxes_like("clustered", 11), boxes_like("clustered", 13, generator=torch.Generator().manual_seed(2))
    a, b = tv.box_convert(a, "xyxy", fmt), tv.box_convert(b, "xyxy", fmt)
    weights = torch.randn(11, 13, dtype=a.dtype)
    leaves = [t.clone().requires_grad_() for t in (a, b)]
    got = cvops.box_iou(*leaves, fmt, kind=kind)
    ref = [t.clone().requires_grad_() for t in (a, b)]
    xyxy = [tv.box_convert(t, fmt, "xyxy") for t in ref]
    want = tv.box_iou(*ref, fmt) if kind == "iou" else KINDS[kind](*xyxy)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, w in zip(
        torch.autograd.grad((got * weights).sum(), leaves), torch.autograd.grad((want * weights).sum(), ref)
    ):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", ["iou", "giou", "diou"])  # CIoU holds α out of the gradient, as torchvision
def test_pairwise_gradcheck(kind):
    a, b = boxes_like("clustered", 4), boxes_like("clustered", 3, generator=torch.Generator().manual_seed(2))
    leaves = [a.view(2, 2, 4).clone().requires_grad_(), b.view(1, 3, 4).clone().requires_grad_()]
    assert torch.autograd.gradcheck(lambda x, y: cvops.box_iou(x, y, kind=kind), leaves)


def test_pairwise_backward_in_blocks():
    # Sets of 2·300000 pairs run in several row blocks; 5000 small sets run several sets per block.
    for shape_a, shape_b in [((2, 4), (300000, 4)), ((5000, 3, 4), (5000, 40, 4))]:
        a = boxes_like("uniform", math.prod(shape_a) // 4).view(shape_a).requires_grad_()
        b = boxes_like("clustered", math.prod(shape_b) // 4).view(shape_b).requires_grad_()
        weights = torch.randn(cvops.box_iou(a, b).shape, dtype=a.dtype)
        got = torch.autograd.grad((cvops.box_iou(a, b, kind="diou") * weights).sum(), (a, b))
        pa, pb = torch.broadcast_tensors(a.unsqueeze(-2), b.unsqueeze(-3))  # the same pairs, element-wise
        want = torch.autograd.grad((cvops.box_iou_aligned(pa, pb, kind="diou") * weights).sum(), (a, b))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)


def test_generalized_box_iou_trains_through_a_detr_style_matching_cost():
    # DETR's box cost backpropagates through pairwise GIoU: the loss term must reach the predictions.
    pred = boxes_like("clustered", 5).requires_grad_()
    target = boxes_like("clustered", 3, generator=torch.Generator().manual_seed(4))
    (-cvops.generalized_box_iou(pred, target).diagonal().sum()).backward()
    ref = pred.detach().clone().requires_grad_()
    (-tv.generalized_box_iou(ref, target).diagonal().sum()).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    torch.testing.assert_close(pred.grad, ref.grad, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------- losses and box utilities

TV_LOSSES = {
    "generalized_box_iou_loss": tv.generalized_box_iou_loss,
    "distance_box_iou_loss": tv.distance_box_iou_loss,
    "complete_box_iou_loss": tv.complete_box_iou_loss,
}


@pytest.mark.parametrize("eps", [1e-7, 1e-3])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", TV_LOSSES)
def test_losses_match_torchvision(name, reduction, eps):
    a, b = boxes_like("clustered", 20), boxes_like("clustered", 20, generator=torch.Generator().manual_seed(9))
    zero = torch.zeros(2, 4, dtype=a.dtype)  # zero-padded targets against zero and real boxes
    a, b = torch.cat([a, zero, a[:2]]), torch.cat([b, zero, zero])
    leaves, ref = [[t.clone().requires_grad_() for t in (a, b)] for _ in range(2)]
    got = getattr(cvops, name)(*leaves, reduction, eps)
    want = TV_LOSSES[name](*ref, reduction, eps)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, equal_nan=True)
    if name != "complete_box_iou_loss":  # atan(0/0): NaN there, as in torchvision
        assert torch.isfinite(got).all()
        for g, w in zip(torch.autograd.grad(got.sum(), leaves), torch.autograd.grad(want.sum(), ref)):
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)
    empty = [torch.zeros(0, 4, dtype=a.dtype)] * 2
    torch.testing.assert_close(getattr(cvops, name)(*empty, reduction), TV_LOSSES[name](*empty, reduction))


def test_zero_area_pairs_give_a_loss_of_one():
    z = torch.zeros(3, 4, requires_grad=True)
    for loss in (cvops.generalized_box_iou_loss, cvops.distance_box_iou_loss):
        value = loss(z, z)
        torch.testing.assert_close(value, torch.ones(3))
        (grad,) = torch.autograd.grad(value.sum(), z)
        assert torch.isfinite(grad).all()
    assert torch.isnan(cvops.box_iou_aligned(z, z, kind="giou")).all()  # the pairwise formula: 0/0, as torchvision


def test_box_utilities_match_torchvision():
    a = boxes_like("uniform", 12) - 100
    for dtype in (torch.float64, torch.float32, torch.float16, torch.int16, torch.int64):
        x = a.to(dtype)
        for fmt in FORMATS:
            got, want = cvops.box_area(x, fmt), tv.box_area(x, fmt)
            assert got.dtype == want.dtype
            torch.testing.assert_close(got, want)
        for in_fmt in FORMATS:
            for out_fmt in FORMATS:
                got, want = cvops.box_convert(x, in_fmt, out_fmt), tv.box_convert(x, in_fmt, out_fmt)
                assert got.dtype == want.dtype
                torch.testing.assert_close(got, want)
        got, want = (
            cvops.clip_boxes_to_image(x.view(3, 4, 4), (480, 640)),
            tv.clip_boxes_to_image(x.view(3, 4, 4), (480, 640)),
        )
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(cvops.remove_small_boxes(x, 120.0), tv.remove_small_boxes(x, 120.0))
    assert cvops.box_convert(a, "xyxy", "xyxy") is not a


def test_pairwise_opcheck_and_compile_with_backward():
    a, b = boxes_like("uniform", 6), boxes_like("clustered", 8)
    for kind in KINDS:
        torch.library.opcheck(
            torch.ops.cvops.box_iou.default,
            (a.clone().requires_grad_(), b.clone().requires_grad_(), kind, "xyxy", 1e-7),
        )
        torch.library.opcheck(
            torch.ops.cvops._box_iou_backward.default, (torch.randn(6, 8, dtype=a.dtype), a, b, kind, "xywh", 1e-7)
        )
    torch._dynamo.reset()
    fn = lambda x, y: (1 - cvops.generalized_box_iou(x, y)).mean()  # noqa: E731
    x = a.float().requires_grad_()
    got = torch.compile(fn, backend="aot_eager", fullgraph=True)(x, b.float())
    torch.testing.assert_close(got, fn(x, b.float()))
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(fn(x, b.float()), x)[0])


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
    torch.library.opcheck(torch.ops.cvops.box_iou.default, (a, b, kind, "xyxy", 1e-7))
    torch.library.opcheck(torch.ops.cvops.box_iou.default, (a.view(2, 3, 4), b.view(1, 8, 4), kind, "xywh", 1e-7))


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
            lambda: cvops.box_iou(torch.ones(3, 4, dtype=torch.bool), torch.rand(2, 4)),
            RuntimeError,
            r"cvops.box_iou: boxes1 must hold box coordinates as a floating-point or integer tensor, got Bool",
        ),
        (
            lambda: cvops.box_iou([[0, 0, 1, 1]], torch.rand(2, 4)),
            ValueError,
            r"cvops.box_iou: boxes1 must be a tensor",
        ),
        (
            lambda: torch.ops.cvops.box_iou(torch.rand(3, 4), None, "iou", "xyxy"),
            RuntimeError,
            r"cvops.box_iou: boxes2 must be a tensor, got None",
        ),
        (
            lambda: cvops.box_iou(torch.rand(3, 4), torch.rand(2, 4), kind="diou", eps=1e300),
            RuntimeError,
            r"cvops.box_iou: eps must be a number >= 0 that is finite in Float, got 1e\+300",
        ),
        (
            lambda: torch.ops.cvops._box_iou_backward(
                torch.rand(3, 2, dtype=torch.float64), torch.rand(3, 4), torch.rand(2, 4), "iou", "xyxy"
            ),
            RuntimeError,
            r"cvops.box_iou_backward: grad must be Float, got Double",
        ),
        (
            lambda: torch.ops.cvops._box_iou_backward(
                torch.rand(2, 3), torch.rand(3, 4), torch.rand(2, 4), "iou", "xyxy"
            ),
            RuntimeError,
            r"cvops.box_iou_backward: grad must have the output's shape \[3, 2\]",
        ),
        (
            lambda: cvops.generalized_box_iou_loss(torch.rand(3, 4), torch.rand(3, 4), "avg"),
            ValueError,
            r"cvops.generalized_box_iou_loss: reduction must be one of",
        ),
        (
            lambda: cvops.box_convert(torch.rand(3, 4), "xyxy", "xywhr"),
            ValueError,
            r"cvops.box_convert: out_fmt must be one of",
        ),
        (lambda: cvops.box_area(torch.rand(3, 5)), ValueError, r"cvops.box_area: boxes must have shape \[..., 4\]"),
        (
            lambda: cvops.clip_boxes_to_image(torch.rand(3, 4), 480),
            ValueError,
            r"cvops.clip_boxes_to_image: size must be \(height, width\)",
        ),
        (
            lambda: cvops.remove_small_boxes(torch.rand(3, 4), None),
            ValueError,
            r"cvops.remove_small_boxes: min_size must be a number",
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
        torch.ops.cvops.box_iou_aligned.default,
        (a.clone().requires_grad_(), b.clone().requires_grad_(), kind, "xyxy", 1e-7, False),
    )
    for loss_form in (False, True):
        torch.library.opcheck(
            torch.ops.cvops._box_iou_aligned_backward.default,
            (torch.randn(8, dtype=a.dtype), a, b, kind, "cxcywh", 1e-7, loss_form),
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
            lambda: cvops.box_iou_aligned(torch.ones(3, 4, dtype=torch.complex64), torch.rand(3, 4)),
            r"boxes1 must hold box coordinates as a floating-point or integer tensor, got ComplexFloat",
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


def test_pairwise_backward_of_strided_boxes():
    base = boxes_like("uniform", 24).view(4, 6, 4).transpose(0, 1)  # [6, 4, 4], strided
    a = base.clone().requires_grad_()
    strided = base.detach().clone().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    b = boxes_like("clustered", 5)
    assert not strided.is_contiguous()
    for leaf in (a, strided):
        cvops.box_iou(leaf, b, kind="giou").sum().backward()
    torch.testing.assert_close(strided.grad, a.grad, rtol=0, atol=0)
    assert strided.grad.shape == (6, 4, 4)
