"""Non-maximum suppression (the `nms` family): nms, batched_nms, multiclass_nms, soft_nms.

The one policy of every NMS op, on CPU and CUDA (reference/nms.py, the tests and the docs refer here):
- Boxes are xyxy. IoU is torchvision's nms IoU: inter = max(0, min(x2) − max(x1))·max(0, min(y2) − max(y1)),
  IoU = inter / (area_i + area_j − inter); float16/bfloat16 boxes are computed in float32. Boxes and
  scores have one dtype; empty boxes may be given as torchvision's `torch.empty((0,))`.
- Thresholds are compared in float64 against the IoU as computed, as torchvision's kernels do:
  `iou > iou_threshold` suppresses, `score > score_threshold` makes a candidate. nms and
  batched_nms take any iou_threshold, as torchvision does: a negative one suppresses every pair of a
  category, so one box per category remains (torchvision also keeps boxes whose IoU is NaN, and its
  coordinate-offset path, below 4000 CPU boxes, suppresses across categories too and keeps one box
  in all); multiclass_nms and soft_nms need iou_threshold >= 0.
- Order: boxes are taken by decreasing score, ties lower index first (a stable order; torchvision's
  tie order follows an unstable sort and its internal paths, so with tied scores its kept order, and
  what survives a later top-K cut, can differ; with distinct scores the results are identical).
  Where classes are involved, by (score descending, class ascending, box index ascending).
- batched_nms categories: integer (or bool) idxs as given; floating idxs by value, each distinct value
  one category (whole numbers stored as floats give the integer result). NaN idxs are an error.
- A NaN score drops its box: it is never kept and never suppresses (torchvision would sort it first).
- A box with a NaN coordinate has IoU NaN with everything, and NaN compares false: it neither
  suppresses nor is suppressed (kept if its score allows). The same holds for a pair whose union is
  0 (0/0). A degenerate box (x2 <= x1 or y2 <= y1) or one with an infinite coordinate overlaps
  nothing: its IoU with any box is 0 or NaN, as in torchvision. soft_nms counts a NaN IoU as 0.
- Empty inputs give empty (or all-padding) results.
"""

import torch
from torch import Tensor

from cvops.ops._registration import autocast_float32, register_fake
from cvops.ops._validate import check_bool, check_choice, check_int, check_number, check_tensor

__all__ = ["batched_nms", "multiclass_nms", "nms", "soft_nms"]


def _kept_indices_fake(boxes):
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.long)


# ---------------------------------------------------------------------------- nms


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: boxes [N, 4] xyxy, scores [N] → int64 indices of the kept boxes by decreasing
    score (ties lower index first) — the output of torchvision.ops.nms."""
    op = "nms"
    check_tensor(op, "boxes", boxes)
    check_tensor(op, "scores", scores)
    return torch.ops.cvops.nms(boxes, scores, check_number(op, "iou_threshold", iou_threshold))


@register_fake("cvops::nms")
def _nms_fake(boxes, scores, iou_threshold):
    return _kept_indices_fake(boxes)


autocast_float32("cvops::nms")


# ---------------------------------------------------------------------------- batched_nms


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category idxs[i] (a box only suppresses boxes of its own category), computed
    as one segmented pass — the output of torchvision.ops.batched_nms (kept indices by decreasing
    score, ties lower index first). idxs: integer category ids, or floats (each distinct value one
    category)."""
    op = "batched_nms"
    for name, value in (("boxes", boxes), ("scores", scores), ("idxs", idxs)):
        check_tensor(op, name, value)
    return torch.ops.cvops.batched_nms(boxes, scores, idxs, check_number(op, "iou_threshold", iou_threshold))


@register_fake("cvops::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    return _kept_indices_fake(boxes)


autocast_float32("cvops::batched_nms")


# ---------------------------------------------------------------------------- multiclass_nms


def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    *,
    iou_threshold: float,
    score_threshold: float = 0.0,
    max_per_class: int = 100,
    max_total: int = 100,
    class_agnostic: bool = False,
):
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
    op = "multiclass_nms"
    check_tensor(op, "boxes", boxes)
    check_tensor(op, "scores", scores)
    return torch.ops.cvops.multiclass_nms(
        boxes,
        scores,
        check_number(op, "iou_threshold", iou_threshold),
        check_number(op, "score_threshold", score_threshold),
        check_int(op, "max_per_class", max_per_class),
        check_int(op, "max_total", max_total),
        check_bool(op, "class_agnostic", class_agnostic),
    )


@register_fake("cvops::multiclass_nms")
def _multiclass_nms_fake(boxes, scores, iou_threshold, score_threshold, max_per_class, max_total, class_agnostic):
    torch._check(scores.dim() == 3, lambda: "cvops.multiclass_nms: scores must have shape [B, N, C]")
    B = scores.shape[0]
    long = dict(dtype=torch.long)
    return (
        boxes.new_empty((B, max_total, 4)),
        scores.new_empty((B, max_total)),
        scores.new_empty((B, max_total), **long),
        scores.new_empty((B, max_total), **long),
        scores.new_empty((B,), **long),
    )


autocast_float32("cvops::multiclass_nms")


# ---------------------------------------------------------------------------- soft_nms


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    *,
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    method: str = "gaussian",
):
    """Soft-NMS (Bodla et al. 2017): repeatedly take the box with the highest current score (ties:
    lower index) and decay the others' scores by exp(-IoU²/sigma) ("gaussian") or by (1 - IoU)
    where IoU > iou_threshold ("linear"); boxes whose score falls below score_threshold are dropped.
    → (int64 indices in pick order, their scores when picked)."""
    op = "soft_nms"
    check_tensor(op, "boxes", boxes)
    check_tensor(op, "scores", scores)
    numbers = [
        check_number(op, name, value)
        for name, value in (("sigma", sigma), ("iou_threshold", iou_threshold), ("score_threshold", score_threshold))
    ]
    check_choice(op, "method", method, ("linear", "gaussian"))
    return torch.ops.cvops.soft_nms(boxes, scores, *numbers, method)


@register_fake("cvops::soft_nms")
def _soft_nms_fake(boxes, scores, sigma, iou_threshold, score_threshold, method):
    kept = _kept_indices_fake(boxes)
    return kept, scores.new_empty(kept.shape)


autocast_float32("cvops::soft_nms")
