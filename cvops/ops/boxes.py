"""Detection box overlaps and box utilities (the `boxes` family), torchvision.ops' box API on fused
kernels.

Pairwise (boxes1 [..., N, 4] against boxes2 [..., M, 4] → [..., N, M], leading dims broadcast):
box_iou, generalized_box_iou, distance_box_iou, complete_box_iou, computed pair by pair in one
kernel without N×M×k temporaries, differentiable in both sets. Element-wise (boxes [..., 4] →
[...]): box_iou_aligned and the losses generalized_box_iou_loss, distance_box_iou_loss,
complete_box_iou_loss. Utilities: box_area, box_convert, clip_boxes_to_image, remove_small_boxes.
Non-maximum suppression is the `nms` family (cvops/ops/nms.py).

As torchvision (same names, positional order and defaults, same values):
- Boxes may be any floating or integer dtype. IoUs are float32, or float64 when either set is
  float64 (float16/bfloat16 and integer boxes are computed in float32); gradients come back in each
  input's dtype. Under autocast the ops run in float32.
- Degenerate boxes follow the formulas. Pairwise values have no eps in the IoU: two zero-area boxes
  give 0/0 = NaN IoU and GIoU (and NaN DIoU/CIoU), as torchvision's. The losses add eps to the
  union (and GIoU's to the enclosing area), so zero-area pairs give a loss of 1 with finite
  gradients — except complete_box_iou_loss, whose aspect term atan(w/h) is atan(0/0) = NaN for a
  zero-size box, as in torchvision (its eps enters only the trade-off α there). NaN coordinates
  give NaN.
- CIoU holds its trade-off α out of the gradient, as torchvision computes it under no_grad.
- Only the axis-aligned formats "xyxy", "xywh", "cxcywh"; the rotated ones are not supported.
"""

import math

import torch
from torch import Tensor

from cvops.ops._registration import autocast_float32, grads, register_fake
from cvops.ops._validate import check_choice, check_eps, check_tensor

__all__ = [
    "box_area",
    "box_convert",
    "box_iou",
    "box_iou_aligned",
    "clip_boxes_to_image",
    "complete_box_iou",
    "complete_box_iou_loss",
    "distance_box_iou",
    "distance_box_iou_loss",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "remove_small_boxes",
]

KINDS = ("iou", "giou", "diou", "ciou")
FORMATS = ("xyxy", "xywh", "cxcywh")
LOSS_REDUCTIONS = ("none", "mean", "sum")
DEFAULT_EPS = 1e-7


def _check_boxes(op, name, boxes):
    """A box tensor [..., 4] of a real dtype, checked before the utilities index it."""
    check_tensor(op, name, boxes)
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise ValueError(f"cvops.{op}: {name} must be a floating-point or integer tensor, got {boxes.dtype}")
    if boxes.dim() < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"cvops.{op}: {name} must have shape [..., 4], got {list(boxes.shape)}")
    return boxes


def _iou_dtype(boxes1, boxes2):
    """float64 when the promoted dtype is, else float32 (integer and half boxes included)."""
    return torch.float64 if torch.promote_types(boxes1.dtype, boxes2.dtype) == torch.float64 else torch.float32


# ---------------------------------------------------------------------------- box_iou (pairwise)


def box_iou(
    boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy", *, kind: str = "iou", eps: float = DEFAULT_EPS
) -> Tensor:
    """boxes1 [..., N, 4], boxes2 [..., M, 4] in `fmt` → [..., N, M] (leading dims broadcast).

    torchvision.ops.box_iou(boxes1, boxes2, fmt) with kind="iou" (the default); kind="giou" | "diou" |
    "ciou" give generalized_box_iou, distance_box_iou and complete_box_iou (eps: their eps).
    Differentiable in both sets."""
    op = "box_iou"
    check_choice(op, "fmt", fmt, FORMATS)
    check_choice(op, "kind", kind, KINDS)
    check_tensor(op, "boxes1", boxes1)
    check_tensor(op, "boxes2", boxes2)
    return torch.ops.cvops.box_iou(boxes1, boxes2, kind, fmt, check_eps(op, eps))


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, *, fmt: str = "xyxy") -> Tensor:
    """torchvision.ops.generalized_box_iou: pairwise GIoU, [..., N, 4] × [..., M, 4] → [..., N, M]."""
    return box_iou(boxes1, boxes2, fmt, kind="giou")


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = DEFAULT_EPS, *, fmt: str = "xyxy") -> Tensor:
    """torchvision.ops.distance_box_iou: pairwise DIoU, [..., N, 4] × [..., M, 4] → [..., N, M]."""
    return box_iou(boxes1, boxes2, fmt, kind="diou", eps=eps)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = DEFAULT_EPS, *, fmt: str = "xyxy") -> Tensor:
    """torchvision.ops.complete_box_iou: pairwise CIoU, [..., N, 4] × [..., M, 4] → [..., N, M]."""
    return box_iou(boxes1, boxes2, fmt, kind="ciou", eps=eps)


def _batch_shape(boxes1, boxes2, set_dims):
    torch._check(
        boxes1.dim() >= set_dims and boxes2.dim() >= set_dims,
        lambda: f"cvops.box_iou: boxes must have at least {set_dims} dimensions",
    )
    return torch.broadcast_shapes(boxes1.shape[: boxes1.dim() - set_dims], boxes2.shape[: boxes2.dim() - set_dims])


@register_fake("cvops::box_iou")
def _box_iou_fake(boxes1, boxes2, kind, fmt, eps=DEFAULT_EPS):
    batch = _batch_shape(boxes1, boxes2, 2)
    return boxes1.new_empty((*batch, boxes1.shape[-2], boxes2.shape[-2]), dtype=_iou_dtype(boxes1, boxes2))


@register_fake("cvops::_box_iou_backward")
def _box_iou_backward_fake(grad, boxes1, boxes2, kind, fmt, eps=DEFAULT_EPS):
    return torch.empty_like(boxes1), torch.empty_like(boxes2)


def _pair_setup(ctx, inputs, output):
    # Schema defaults may be left out of `inputs` (eps; box_iou_aligned's loss_form).
    boxes1, boxes2, ctx.kind, ctx.fmt, *rest = inputs
    ctx.eps = rest[0] if rest else DEFAULT_EPS
    ctx.loss_form = rest[1:]
    ctx.save_for_backward(boxes1, boxes2)


def _box_iou_backward(ctx, grad):
    boxes1, boxes2 = ctx.saved_tensors
    grad1, grad2 = torch.ops.cvops._box_iou_backward(grad, boxes1, boxes2, ctx.kind, ctx.fmt, ctx.eps)
    return grads(ctx, "cvops::box_iou", boxes1=grad1, boxes2=grad2)


torch.library.register_autograd("cvops::box_iou", _box_iou_backward, setup_context=_pair_setup)
autocast_float32("cvops::box_iou")


# ---------------------------------------------------------------------------- element-wise pairs and losses


def box_iou_aligned(boxes1: Tensor, boxes2: Tensor, *, kind="iou", fmt="xyxy", eps: float = DEFAULT_EPS) -> Tensor:
    """Element-wise pairs: boxes1 [..., 4] and boxes2 [..., 4] (broadcast) → [...], differentiable
    in both; the values of box_iou's diagonal (no eps in the IoU, so zero-area pairs give NaN: for
    losses use the *_box_iou_loss functions)."""
    op = "box_iou_aligned"
    check_choice(op, "kind", kind, KINDS)
    check_choice(op, "fmt", fmt, FORMATS)
    check_tensor(op, "boxes1", boxes1)
    check_tensor(op, "boxes2", boxes2)
    return torch.ops.cvops.box_iou_aligned(boxes1, boxes2, kind, fmt, check_eps(op, eps), False)


def _iou_loss(op, kind, boxes1, boxes2, reduction, eps):
    """1 − the loss form of `kind` (eps in the union), reduced as torchvision's losses reduce
    (the mean of no boxes is 0)."""
    check_choice(op, "reduction", reduction, LOSS_REDUCTIONS)
    check_tensor(op, "boxes1", boxes1)
    check_tensor(op, "boxes2", boxes2)
    loss = 1 - torch.ops.cvops.box_iou_aligned(boxes1, boxes2, kind, "xyxy", check_eps(op, eps), True)
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    return loss.sum() if reduction == "sum" else loss


def generalized_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = DEFAULT_EPS
) -> Tensor:
    """torchvision.ops.generalized_box_iou_loss: 1 − GIoU of xyxy pairs [..., 4], with eps in the
    union and the enclosing area."""
    return _iou_loss("generalized_box_iou_loss", "giou", boxes1, boxes2, reduction, eps)


def distance_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = DEFAULT_EPS) -> Tensor:
    """torchvision.ops.distance_box_iou_loss: 1 − DIoU of xyxy pairs [..., 4], with eps in the union
    and the enclosing diagonal."""
    return _iou_loss("distance_box_iou_loss", "diou", boxes1, boxes2, reduction, eps)


def complete_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = DEFAULT_EPS) -> Tensor:
    """torchvision.ops.complete_box_iou_loss: 1 − CIoU of xyxy pairs [..., 4]. As torchvision's, eps
    enters the trade-off α; the IoU and distance terms use 1e-7. NaN for a zero-size box (atan(0/0))."""
    return _iou_loss("complete_box_iou_loss", "ciou", boxes1, boxes2, reduction, eps)


@register_fake("cvops::box_iou_aligned")
def _box_iou_aligned_fake(boxes1, boxes2, kind, fmt, eps=DEFAULT_EPS, loss_form=False):
    return boxes1.new_empty(_batch_shape(boxes1, boxes2, 1), dtype=_iou_dtype(boxes1, boxes2))


@register_fake("cvops::_box_iou_aligned_backward")
def _box_iou_aligned_backward_fake(grad, boxes1, boxes2, kind, fmt, eps=DEFAULT_EPS, loss_form=False):
    return torch.empty_like(boxes1), torch.empty_like(boxes2)


def _box_iou_aligned_backward(ctx, grad):
    boxes1, boxes2 = ctx.saved_tensors
    grad1, grad2 = torch.ops.cvops._box_iou_aligned_backward(
        grad, boxes1, boxes2, ctx.kind, ctx.fmt, ctx.eps, *ctx.loss_form
    )
    return grads(ctx, "cvops::box_iou_aligned", boxes1=grad1, boxes2=grad2)


torch.library.register_autograd("cvops::box_iou_aligned", _box_iou_aligned_backward, setup_context=_pair_setup)
autocast_float32("cvops::box_iou_aligned")


# ---------------------------------------------------------------------------- box utilities (torch ops)


def _upcast(t):
    """torchvision's _upcast: float16/bfloat16 → float32, small integers → int32."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """torchvision.ops.box_area: boxes [..., 4] → areas [...] (float16/bfloat16 give float32, small
    integer types int32)."""
    op = "box_area"
    check_choice(op, "fmt", fmt, FORMATS)
    boxes = _upcast(_check_boxes(op, "boxes", boxes))
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """torchvision.ops.box_convert between "xyxy", "xywh" and "cxcywh" (a new tensor, also when the
    formats are equal)."""
    op = "box_convert"
    check_choice(op, "in_fmt", in_fmt, FORMATS)
    check_choice(op, "out_fmt", out_fmt, FORMATS)
    _check_boxes(op, "boxes", boxes)
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    # (a, b, c, d) are corners now.
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return torch.stack((a, b, c, d), dim=-1)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """torchvision.ops.clip_boxes_to_image: xyxy boxes [..., 4] clamped to an image of size
    (height, width)."""
    op = "clip_boxes_to_image"
    _check_boxes(op, "boxes", boxes)
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"cvops.{op}: size must be (height, width), got {size!r}")
    for value in size:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"cvops.{op}: size must be (height, width) numbers, got {size!r}")
    height, width = size
    boxes_x = boxes[..., 0::2].clamp(min=0, max=width)
    boxes_y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((boxes_x, boxes_y), dim=boxes.dim()).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """torchvision.ops.remove_small_boxes: int64 indices of the xyxy boxes [N, 4] whose sides are
    both >= min_size."""
    op = "remove_small_boxes"
    _check_boxes(op, "boxes", boxes)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, float)) or math.isnan(min_size):
        raise ValueError(f"cvops.{op}: min_size must be a number, got {min_size!r}")
    ws, hs = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]
