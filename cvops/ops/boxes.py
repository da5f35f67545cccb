"""Detection box overlaps (the `boxes` family): IoU / GIoU / DIoU / CIoU, pairwise and element-wise.

Same values as torchvision.ops.box_iou / generalized_box_iou / distance_box_iou / complete_box_iou
(eps = 1e-7), for boxes in "xyxy", "xywh" or "cxcywh" form, with leading batch dims broadcast,
computed pair by pair in one kernel without N×M×k temporaries. Degenerate boxes follow the same
formulas (a zero-area pair gives 0/0 = NaN IoU, as in torchvision); NaN coordinates give NaN.
Float16/bfloat16 boxes are computed in float32 (and autocast runs the op in float32).
Non-maximum suppression is the `nms` family (cvops/ops/nms.py).
"""

import torch
from torch import Tensor

from cvops.ops._registration import autocast_float32, grads
from cvops.ops._validate import check_choice

__all__ = ["box_iou", "box_iou_aligned"]

_KINDS = ("iou", "giou", "diou", "ciou")
_FORMATS = ("xyxy", "xywh", "cxcywh")


# ---------------------------------------------------------------------------- box_iou


def box_iou(boxes1: Tensor, boxes2: Tensor, *, kind="iou", fmt="xyxy") -> Tensor:
    """boxes1 [..., N, 4], boxes2 [..., M, 4] → [..., N, M] (leading dims broadcast).

    kind: "iou" | "giou" | "diou" | "ciou"; fmt: "xyxy" | "xywh" | "cxcywh". Not differentiable
    (for IoU losses, the element-wise pairs are what a loss needs)."""
    check_choice("box_iou", "kind", kind, _KINDS)
    check_choice("box_iou", "fmt", fmt, _FORMATS)
    return torch.ops.cvops.box_iou(boxes1, boxes2, kind, fmt)


@torch.library.register_fake("cvops::box_iou")
def _box_iou_fake(boxes1, boxes2, kind, fmt):
    torch._check(boxes1.dim() >= 2 and boxes2.dim() >= 2, lambda: "cvops.box_iou: boxes must have shape [..., n, 4]")
    batch = torch.broadcast_shapes(boxes1.shape[:-2], boxes2.shape[:-2])
    return boxes1.new_empty((*batch, boxes1.shape[-2], boxes2.shape[-2]))


autocast_float32("cvops::box_iou")


# ---------------------------------------------------------------------------- box_iou_aligned


def box_iou_aligned(boxes1: Tensor, boxes2: Tensor, *, kind="iou", fmt="xyxy") -> Tensor:
    """Element-wise pairs: boxes1 [..., 4] and boxes2 [..., 4] (broadcast) → [...], differentiable in
    both — the IoU / GIoU / DIoU / CIoU term of box-regression losses (loss = 1 − value). CIoU keeps
    its trade-off α out of the gradient, as torchvision's complete_box_iou_loss does."""
    check_choice("box_iou_aligned", "kind", kind, _KINDS)
    check_choice("box_iou_aligned", "fmt", fmt, _FORMATS)
    return torch.ops.cvops.box_iou_aligned(boxes1, boxes2, kind, fmt)


@torch.library.register_fake("cvops::box_iou_aligned")
def _box_iou_aligned_fake(boxes1, boxes2, kind, fmt):
    return boxes1.new_empty(torch.broadcast_shapes(boxes1.shape[:-1], boxes2.shape[:-1]))


@torch.library.register_fake("cvops::_box_iou_aligned_backward")
def _box_iou_aligned_backward_fake(grad, boxes1, boxes2, kind, fmt):
    return torch.empty_like(boxes1), torch.empty_like(boxes2)


def _box_iou_aligned_setup(ctx, inputs, output):
    boxes1, boxes2, ctx.kind, ctx.fmt = inputs
    ctx.save_for_backward(boxes1, boxes2)


def _box_iou_aligned_backward(ctx, grad):
    boxes1, boxes2 = ctx.saved_tensors
    grad1, grad2 = torch.ops.cvops._box_iou_aligned_backward(grad, boxes1, boxes2, ctx.kind, ctx.fmt)
    return grads(ctx, "cvops::box_iou_aligned", boxes1=grad1, boxes2=grad2)


torch.library.register_autograd(
    "cvops::box_iou_aligned", _box_iou_aligned_backward, setup_context=_box_iou_aligned_setup
)
autocast_float32("cvops::box_iou_aligned")
