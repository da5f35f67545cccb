"""Detection box ops (the `boxes` family): IoU / GIoU / DIoU / CIoU and non-maximum suppression.

Same values as torchvision.ops.box_iou / generalized_box_iou / distance_box_iou / complete_box_iou
(eps = 1e-7), for boxes in "xyxy", "xywh" or "cxcywh" form, with leading batch dims broadcast,
computed pair by pair in one kernel without N×M×k temporaries. Degenerate boxes follow the same
formulas (a zero-area pair gives 0/0 = NaN IoU, as in torchvision); NaN coordinates give NaN.
Float16/bfloat16 boxes are computed in float32 (and autocast runs the op in float32).

NMS (nms, batched_nms, multiclass_nms, soft_nms) — one policy on CPU and CUDA:
- IoU as torchvision's nms computes it, `iou > iou_threshold` suppresses (iou_threshold >= 0);
  boxes are taken by decreasing score, ties lower index first.
- A NaN score drops its box (never kept, never suppresses). A box with a NaN or infinite
  coordinate overlaps nothing: it is kept if its score allows and never suppresses or is
  suppressed. Degenerate boxes (x2 <= x1 or y2 <= y1) overlap nothing, as in torchvision.
- Empty inputs give empty (or all-padding) results.
"""
import torch
from torch import Tensor

from cvops.ops._validate import check_choice, check_int

__all__ = ["batched_nms", "box_iou", "box_iou_aligned", "multiclass_nms", "nms", "soft_nms"]

_KINDS = ("iou", "giou", "diou", "ciou")
_FORMATS = ("xyxy", "xywh", "cxcywh")


def box_iou(boxes1: Tensor, boxes2: Tensor, *, kind="iou", fmt="xyxy") -> Tensor:
    """boxes1 [..., N, 4], boxes2 [..., M, 4] → [..., N, M] (leading dims broadcast).

    kind: "iou" | "giou" | "diou" | "ciou"; fmt: "xyxy" | "xywh" | "cxcywh". Not differentiable
    (for IoU losses, the element-wise pairs are what a loss needs)."""
    check_choice("box_iou", "kind", kind, _KINDS)
    check_choice("box_iou", "fmt", fmt, _FORMATS)
    return torch.ops.cvops.box_iou(boxes1, boxes2, kind, fmt)


def box_iou_aligned(boxes1: Tensor, boxes2: Tensor, *, kind="iou", fmt="xyxy") -> Tensor:
    """Element-wise pairs: boxes1 [..., 4] and boxes2 [..., 4] (broadcast) → [...], differentiable in
    both — the IoU / GIoU / DIoU / CIoU term of box-regression losses (loss = 1 − value). CIoU keeps
    its trade-off α out of the gradient, as torchvision's complete_box_iou_loss does."""
    check_choice("box_iou_aligned", "kind", kind, _KINDS)
    check_choice("box_iou_aligned", "fmt", fmt, _FORMATS)
    return torch.ops.cvops.box_iou_aligned(boxes1, boxes2, kind, fmt)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: boxes [N, 4] xyxy, scores [N] → int64 indices of the kept boxes by decreasing
    score — the output of torchvision.ops.nms."""
    return torch.ops.cvops.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category idxs[i] (a box only suppresses boxes of its own category), computed
    as one segmented pass — the output of torchvision.ops.batched_nms (kept indices by decreasing
    score, ties lower index first)."""
    return torch.ops.cvops.batched_nms(boxes, scores, idxs, iou_threshold)


def multiclass_nms(boxes: Tensor, scores: Tensor, *, iou_threshold: float, score_threshold: float = 0.0,
                   max_per_class: int = 100, max_total: int = 100, class_agnostic: bool = False):
    """Per-class NMS for a batch of images with fixed-size outputs (no host synchronisation, so it
    works under torch.compile, CUDA graphs and export).

    boxes [B, N, 4] (shared by the classes) or [B, N, C, 4] (per class), scores [B, N, C] →
    (boxes [B, K, 4], scores [B, K], classes [B, K] int64, indices [B, K] int64, num_valid [B] int64),
    K = max_total. For each image and class, candidates are the boxes with score > score_threshold,
    greedy NMS keeps at most max_per_class of them; an image's detections are the best K over its
    classes, by decreasing score (ties: lower class, then lower box index). Padding: boxes 0,
    scores 0, classes -1, indices -1. class_agnostic: one NMS per image over all (box, class)
    candidates, so a box suppresses overlapping boxes of every class (and its own other classes);
    max_per_class does not apply."""
    check_int("multiclass_nms", "max_per_class", max_per_class)
    check_int("multiclass_nms", "max_total", max_total)
    return torch.ops.cvops.multiclass_nms(boxes, scores, iou_threshold, score_threshold, max_per_class,
                                          max_total, bool(class_agnostic))


def soft_nms(boxes: Tensor, scores: Tensor, *, sigma: float = 0.5, iou_threshold: float = 0.3,
             score_threshold: float = 0.001, method: str = "gaussian"):
    """Soft-NMS (Bodla et al. 2017): repeatedly take the box with the highest current score (ties:
    lower index) and decay the others' scores by exp(-IoU²/sigma) ("gaussian") or by (1 - IoU)
    where IoU > iou_threshold ("linear"); boxes whose score falls below score_threshold are dropped.
    → (int64 indices in pick order, their scores when picked)."""
    check_choice("soft_nms", "method", method, ("linear", "gaussian"))
    return torch.ops.cvops.soft_nms(boxes, scores, sigma, iou_threshold, score_threshold, method)


@torch.library.register_fake("cvops::box_iou")
def _box_iou_fake(boxes1, boxes2, kind, fmt):
    torch._check(boxes1.dim() >= 2 and boxes2.dim() >= 2, lambda: "cvops.box_iou: boxes must have shape [..., n, 4]")
    batch = torch.broadcast_shapes(boxes1.shape[:-2], boxes2.shape[:-2])
    return boxes1.new_empty((*batch, boxes1.shape[-2], boxes2.shape[-2]))


@torch.library.register_fake("cvops::box_iou_aligned")
def _box_iou_aligned_fake(boxes1, boxes2, kind, fmt):
    return boxes1.new_empty(torch.broadcast_shapes(boxes1.shape[:-1], boxes2.shape[:-1]))


@torch.library.register_fake("cvops::_box_iou_aligned_backward")
def _box_iou_aligned_backward_fake(grad, boxes1, boxes2, kind, fmt):
    return torch.empty_like(boxes1), torch.empty_like(boxes2)


def _kept_indices_fake(boxes):
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.long)


@torch.library.register_fake("cvops::nms")
def _nms_fake(boxes, scores, iou_threshold):
    return _kept_indices_fake(boxes)


@torch.library.register_fake("cvops::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    return _kept_indices_fake(boxes)


@torch.library.register_fake("cvops::multiclass_nms")
def _multiclass_nms_fake(boxes, scores, iou_threshold, score_threshold, max_per_class, max_total, class_agnostic):
    torch._check(scores.dim() == 3, lambda: "cvops.multiclass_nms: scores must have shape [B, N, C]")
    B = scores.shape[0]
    long = dict(dtype=torch.long)
    return (boxes.new_empty((B, max_total, 4)), scores.new_empty((B, max_total)),
            scores.new_empty((B, max_total), **long), scores.new_empty((B, max_total), **long),
            scores.new_empty((B,), **long))


@torch.library.register_fake("cvops::soft_nms")
def _soft_nms_fake(boxes, scores, sigma, iou_threshold, score_threshold, method):
    kept = _kept_indices_fake(boxes)
    return kept, scores.new_empty(kept.shape)


def _aligned_setup(ctx, inputs, output):
    boxes1, boxes2, ctx.kind, ctx.fmt = inputs
    ctx.save_for_backward(boxes1, boxes2)


def _aligned_backward(ctx, grad):
    boxes1, boxes2 = ctx.saved_tensors
    grad1, grad2 = torch.ops.cvops._box_iou_aligned_backward(grad, boxes1, boxes2, ctx.kind, ctx.fmt)
    return grad1, grad2, None, None


torch.library.register_autograd("cvops::box_iou_aligned", _aligned_backward, setup_context=_aligned_setup)

for _op in ("cvops::box_iou", "cvops::box_iou_aligned", "cvops::nms", "cvops::batched_nms",
            "cvops::multiclass_nms", "cvops::soft_nms"):
    for _device in ("cpu", "cuda"):
        torch.library.register_autocast(_op, _device, torch.float32)
