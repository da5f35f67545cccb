"""YOLO-style single-stage detection assembled from cvops ops: grid anchors, decoding of raw head
outputs into boxes and class scores, IoU-based assignment of ground truth to anchors (training
targets), post-processing (decode + cvops.multiclass_nms), a 1×1-conv head and a GIoU + BCE loss.

Layout. A feature map of H×W cells with a stride of s pixels carries A anchor shapes (w, h) per cell,
centred on the cell centre ((col + 0.5)·s_x, (row + 0.5)·s_y). Anchors and head outputs are
flattened cell-major, anchor index = (row·W + col)·A + a, so a head output is [B, H·W·A, 5 + C]:
(tx, ty, tw, th, objectness logit, C class logits) per anchor.

Boxes are xyxy in pixels. The box parametrisation is Faster R-CNN's / SSD's (not YOLOv2's sigmoid
offsets inside the cell: the IoU assignment may match a box to an anchor of a neighbouring cell, whose
centre offset a sigmoid could not reach):
    cx = a_cx + tx·a_w,   cy = a_cy + ty·a_h,   w = a_w·exp(tw),   h = a_h·exp(th)
and `encode` is its exact inverse. decode clamps tw, th at max_log_scale (log(1000/16), as
torchvision's BoxCoder) so that exp cannot overflow; encode∘decode is the identity below that.
Scores are YOLOv3's independent (multi-label) probabilities: score[c] = sigmoid(obj)·sigmoid(cls[c]).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import cvops
from cvops.models._outputs import output_type
from cvops.ops._validate import check_int

__all__ = [
    "AssignedTargets",
    "Detections",
    "DetectionLoss",
    "DetectionPostprocess",
    "YoloHead",
    "assign_targets",
    "decode",
    "decode_boxes",
    "encode",
    "grid_anchors",
]

MAX_LOG_SCALE = math.log(1000.0 / 16)


@output_type
class Detections:
    """DetectionPostprocess's output, per image b: boxes [B, K, 4] xyxy, scores [B, K], classes [B, K]
    int64, indices [B, K] int64 (the anchor index), num_valid [B] int64; slots past num_valid[b] hold
    boxes 0, scores 0, classes −1, indices −1 (K = max_total)."""

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    indices: Tensor
    num_valid: Tensor


@output_type
class AssignedTargets:
    """assign_targets's output, per anchor: labels int64 (class id if positive, −1 negative, −2
    ignore), matched_gt int64 (the gt index if positive, else −1), matched_boxes (the gt box if
    positive, else 0) and box_targets (encode(gt box, anchor) if positive, else 0)."""

    labels: Tensor
    matched_gt: Tensor
    matched_boxes: Tensor
    box_targets: Tensor


# ---------------------------------------------------------------------------- checks


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def _check_anchors(owner: str, anchors) -> None:
    if not isinstance(anchors, Tensor) or anchors.dim() != 2 or anchors.shape[1] != 4 or anchors.shape[0] == 0:
        raise ValueError(f"cvops.{owner}: anchors must be xyxy boxes [N, 4] with N ≥ 1, got {_shape(anchors)}")
    if not anchors.dtype.is_floating_point:
        raise ValueError(f"cvops.{owner}: anchors must be floating-point, got {anchors.dtype}")


def _check_raw(owner: str, raw, num_anchors: int, num_classes=None) -> int:
    """raw must be [B, N, 5 + C] with N = the anchors' count; returns C."""
    if not isinstance(raw, Tensor) or raw.dim() != 3:
        raise ValueError(f"cvops.{owner}: raw must be a head output [B, N, 5 + C], got {_shape(raw)}")
    if not raw.dtype.is_floating_point:
        raise ValueError(f"cvops.{owner}: raw must be floating-point, got {raw.dtype}")
    if raw.shape[1] != num_anchors:
        raise ValueError(
            f"cvops.{owner}: raw has {raw.shape[1]} anchors (dim 1 of {tuple(raw.shape)}) but there are "
            f"{num_anchors} anchors"
        )
    if num_classes is None:
        if raw.shape[2] < 6:
            raise ValueError(f"cvops.{owner}: raw's last dim must be 5 + C with C ≥ 1 classes, got {raw.shape[2]}")
        return raw.shape[2] - 5
    if raw.shape[2] != 5 + num_classes:
        raise ValueError(
            f"cvops.{owner}: raw's last dim must be 5 + C = {5 + num_classes} for C = {num_classes} classes "
            f"(tx, ty, tw, th, objectness, class logits), got {raw.shape[2]}"
        )
    return num_classes


def _check_fraction(owner: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"cvops.{owner}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _pair(owner: str, name: str, value, kind=(int, float)) -> tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, kind) or not v > 0 for v in values):
        what = "positive int" if kind is int else "positive number"
        raise ValueError(f"cvops.{owner}: {name} must be a {what} or a pair of them (y, x), got {value!r}")
    return values


# ---------------------------------------------------------------------------- anchors and box coding


def grid_anchors(grid_size, stride, anchor_sizes, *, device=None, dtype=None) -> Tensor:
    """Anchors of an H×W grid: [H·W·A, 4] xyxy, cell-major (row, col, anchor), centred on the cells.

    grid_size: H or (H, W); stride: pixels per cell, s or (s_y, s_x); anchor_sizes: A pairs (w, h) in
    pixels ([A, 2]). Computed in float64, then cast to dtype (default: torch's default dtype)."""
    height, width = _pair("grid_anchors", "grid_size", grid_size, int)
    stride_y, stride_x = _pair("grid_anchors", "stride", stride)
    sizes = torch.as_tensor(anchor_sizes, dtype=torch.float64)
    if (
        sizes.dim() != 2
        or sizes.shape[1] != 2
        or sizes.shape[0] == 0
        or not bool((sizes > 0).all() & sizes.isfinite().all())
    ):
        raise ValueError(
            f"cvops.grid_anchors: anchor_sizes must be A ≥ 1 positive finite pairs (w, h), got {anchor_sizes!r}"
        )
    cy = (torch.arange(height, dtype=torch.float64) + 0.5) * stride_y
    cx = (torch.arange(width, dtype=torch.float64) + 0.5) * stride_x
    centres = torch.stack(torch.meshgrid(cx, cy, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)
    half = sizes / 2
    anchors = torch.cat([centres[:, :, None] - half, centres[:, :, None] + half], dim=-1)  # [H, W, A, 4]
    return anchors.reshape(-1, 4).to(device=device, dtype=dtype or torch.get_default_dtype())


def _centre_size(boxes: Tensor):
    """xyxy → (cx, cy, w, h), each [...]."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return (x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1


def encode(gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """Regression targets (tx, ty, tw, th) of xyxy boxes gt_boxes [..., N, 4] against anchors [N, 4]
    (broadcast): the inverse of decode_boxes."""
    acx, acy, aw, ah = _centre_size(anchors)
    gcx, gcy, gw, gh = _centre_size(gt_boxes)
    return torch.stack([(gcx - acx) / aw, (gcy - acy) / ah, torch.log(gw / aw), torch.log(gh / ah)], dim=-1)


def decode_boxes(deltas: Tensor, anchors: Tensor, *, max_log_scale: float = MAX_LOG_SCALE) -> Tensor:
    """(tx, ty, tw, th) [..., N, 4] against anchors [N, 4] → xyxy boxes [..., N, 4] (tw, th clamped at
    max_log_scale so that exp cannot overflow)."""
    acx, acy, aw, ah = _centre_size(anchors)
    tx, ty, tw, th = deltas.unbind(-1)
    cx, cy = acx + tx * aw, acy + ty * ah
    w, h = aw * torch.exp(tw.clamp(max=max_log_scale)), ah * torch.exp(th.clamp(max=max_log_scale))
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def decode(raw: Tensor, anchors: Tensor, *, num_classes=None, max_log_scale: float = MAX_LOG_SCALE):
    """Raw head output [B, N, 5 + C] → (boxes [B, N, 4] xyxy, scores [B, N, C] = sigmoid(obj)·sigmoid(cls)).

    anchors [N, 4] as grid_anchors makes them; num_classes, when given, is checked against raw."""
    _check_anchors("decode", anchors)
    _check_raw("decode", raw, anchors.shape[0], num_classes)
    return _decode(raw, anchors, max_log_scale)


def _decode(raw: Tensor, anchors: Tensor, max_log_scale: float):
    boxes = decode_boxes(raw[..., :4], anchors.to(raw.dtype), max_log_scale=max_log_scale)
    scores = torch.sigmoid(raw[..., 4:5]) * torch.sigmoid(raw[..., 5:])
    return boxes, scores


# ---------------------------------------------------------------------------- assignment


def assign_targets(
    anchors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, *, pos_iou: float = 0.5, neg_iou: float = 0.4
) -> AssignedTargets:
    """Match ground truth to anchors by IoU (cvops.box_iou), for training targets.

    anchors [N, 4]; gt_boxes [B, G, 4] xyxy with gt_labels [B, G] int (class ids; −1 marks padding, so
    images with different object counts share one tensor), or [G, 4] and [G] for one image.
    Each anchor takes the gt it overlaps most (ties: the lower gt index): IoU ≥ pos_iou → positive,
    IoU < neg_iou → negative (−1), in between → ignored (−2). Then every gt's best anchor (the first
    of the highest IoU) is made positive for that gt, so each object gets an anchor even when no IoU
    reaches pos_iou — unless it overlaps no anchor at all (IoU 0), or another gt with a higher IoU
    claims the same anchor. A gt with NaN coordinates matches nothing. Returns AssignedTargets, each
    field [B, N] (box fields [B, N, 4]), or [N] / [N, 4] for one image.
    """
    owner = "assign_targets"
    _check_anchors(owner, anchors)
    pos_iou, neg_iou = _check_fraction(owner, "pos_iou", pos_iou), _check_fraction(owner, "neg_iou", neg_iou)
    if neg_iou > pos_iou:
        raise ValueError(f"cvops.{owner}: neg_iou must be ≤ pos_iou, got neg_iou={neg_iou} > pos_iou={pos_iou}")
    if not isinstance(gt_boxes, Tensor) or gt_boxes.dim() not in (2, 3) or gt_boxes.shape[-1] != 4:
        raise ValueError(f"cvops.{owner}: gt_boxes must be xyxy boxes [B, G, 4] or [G, 4], got {_shape(gt_boxes)}")
    if not gt_boxes.dtype.is_floating_point:
        raise ValueError(f"cvops.{owner}: gt_boxes must be floating-point, got {gt_boxes.dtype}")
    if not isinstance(gt_labels, Tensor) or gt_labels.shape != gt_boxes.shape[:-1]:
        raise ValueError(
            f"cvops.{owner}: gt_labels must have gt_boxes' shape without the 4, "
            f"{tuple(gt_boxes.shape[:-1])}, got {_shape(gt_labels)}"
        )
    if gt_labels.dtype.is_floating_point or gt_labels.dtype.is_complex or gt_labels.dtype == torch.bool:
        raise ValueError(
            f"cvops.{owner}: gt_labels must be an integer tensor (class ids, −1 = padding), got {gt_labels.dtype}"
        )
    if gt_boxes.dim() == 2:
        return AssignedTargets(
            *(t[0] for t in assign_targets(anchors, gt_boxes[None], gt_labels[None], pos_iou=pos_iou, neg_iou=neg_iou))
        )

    anchors = anchors.to(device=gt_boxes.device, dtype=gt_boxes.dtype)
    batch, num_gt, num_anchors = gt_boxes.shape[0], gt_boxes.shape[1], anchors.shape[0]
    gt_labels = gt_labels.long()
    if num_gt == 0:  # nothing to match: every anchor is background
        labels = torch.full((batch, num_anchors), -1, dtype=torch.long, device=anchors.device)
        zeros = anchors.new_zeros(batch, num_anchors, 4)
        return AssignedTargets(labels, labels.clone(), zeros, zeros.clone())

    valid = gt_labels >= 0
    iou = cvops.box_iou(gt_boxes, anchors)  # [B, G, N]
    iou = torch.where(valid[..., None] & (iou == iou), iou, -1.0)  # padding and NaN match nothing

    best_iou, best_gt = iou.max(dim=1)  # per anchor [B, N]
    best_anchor_iou, best_anchor = iou.max(dim=2)  # per gt [B, G]
    claims = (torch.arange(num_anchors, device=iou.device) == best_anchor[..., None]) & (best_anchor_iou > 0)[..., None]
    _, forced_gt = torch.where(claims, iou, -1.0).max(dim=1)  # the claiming gt with the highest IoU
    forced = claims.any(dim=1)

    matched = torch.where(forced, forced_gt, best_gt)
    positive = forced | (best_iou >= pos_iou)
    labels = torch.where(positive, gt_labels.gather(1, matched), torch.where(best_iou < neg_iou, -1, -2))
    gathered = gt_boxes.gather(1, matched[..., None].expand(-1, -1, 4))
    # Non-positive anchors are encoded against themselves, which gives exactly 0 (and no NaN from padding).
    safe = torch.where(positive[..., None], gathered, anchors)
    return AssignedTargets(
        labels=labels,
        matched_gt=torch.where(positive, matched, -1),
        matched_boxes=torch.where(positive[..., None], gathered, 0.0),
        box_targets=encode(safe, anchors),
    )


# ---------------------------------------------------------------------------- modules


class YoloHead(nn.Module):
    """1×1 conv from features [B, C_in, H, W] to raw outputs [B, H·W·A, 5 + C] in grid_anchors' order.

    The objectness bias starts at logit(prior) (RetinaNet's prior, 0.01): at first almost nothing
    passes the score threshold, and the many negatives do not swamp the early loss."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, *, prior: float = 0.01):
        super().__init__()
        self.num_anchors = check_int("YoloHead", "num_anchors", num_anchors)
        self.num_classes = check_int("YoloHead", "num_classes", num_classes)
        if not 0 < prior < 1:
            raise ValueError(f"cvops.YoloHead: prior must lie in (0, 1), got {prior!r}")
        self.prior = prior
        self.conv = nn.Conv2d(check_int("YoloHead", "in_channels", in_channels), num_anchors * (5 + num_classes), 1)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.conv.weight, std=0.01)
        bias = self.conv.bias.detach().view(self.num_anchors, 5 + self.num_classes)
        bias.zero_()
        bias[:, 4] = math.log(self.prior / (1 - self.prior))

    def forward(self, features: Tensor) -> Tensor:
        if not isinstance(features, Tensor) or features.dim() != 4 or features.shape[1] != self.conv.in_channels:
            raise ValueError(
                f"cvops.YoloHead: features must be [B, {self.conv.in_channels}, H, W], got {_shape(features)}"
            )
        batch, _, height, width = features.shape
        out = self.conv(features).view(batch, self.num_anchors, 5 + self.num_classes, height, width)
        return out.permute(0, 3, 4, 1, 2).reshape(batch, height * width * self.num_anchors, 5 + self.num_classes)

    def extra_repr(self):
        return f"num_anchors={self.num_anchors}, num_classes={self.num_classes}, prior={self.prior}"


class DetectionPostprocess(nn.Module):
    """Raw head output [B, N, 5 + C] → Detections: decode, optionally clip to the image, then
    cvops.multiclass_nms (fixed-size padded outputs, no host synchronisation: works under torch.compile).

    anchors [N, 4] (a buffer: follows .to(), not saved in the state_dict — it is configuration);
    image_size (H, W) in pixels clips the boxes to [0, W] × [0, H] before NMS, None leaves them.
    The NMS arguments are multiclass_nms's: candidates have score > score_threshold, IoU >
    iou_threshold suppresses (within a class unless class_agnostic), at most max_per_class per class
    and max_total per image are kept."""

    def __init__(
        self,
        anchors: Tensor,
        num_classes: int,
        *,
        iou_threshold: float = 0.5,
        score_threshold: float = 0.05,
        max_per_class: int = 100,
        max_total: int = 100,
        class_agnostic: bool = False,
        image_size=None,
        max_log_scale: float = MAX_LOG_SCALE,
    ):
        super().__init__()
        owner = "DetectionPostprocess"
        _check_anchors(owner, anchors)
        self.num_classes = check_int(owner, "num_classes", num_classes)
        self.iou_threshold = _check_fraction(owner, "iou_threshold", iou_threshold)
        if (
            isinstance(score_threshold, bool)
            or not isinstance(score_threshold, (int, float))
            or not math.isfinite(score_threshold)
        ):
            raise ValueError(f"cvops.{owner}: score_threshold must be a finite number, got {score_threshold!r}")
        self.score_threshold = float(score_threshold)
        self.max_per_class = check_int(owner, "max_per_class", max_per_class)
        self.max_total = check_int(owner, "max_total", max_total)
        self.class_agnostic = bool(class_agnostic)
        self.image_size = None if image_size is None else _pair(owner, "image_size", image_size)
        self.max_log_scale = float(max_log_scale)
        self.register_buffer("anchors", anchors.detach().clone(), persistent=False)

    def forward(self, raw: Tensor) -> Detections:
        _check_raw("DetectionPostprocess", raw, self.anchors.shape[0], self.num_classes)
        boxes, scores = _decode(raw, self.anchors, self.max_log_scale)
        if self.image_size is not None:
            height, width = self.image_size
            x1, y1, x2, y2 = boxes.unbind(-1)
            boxes = torch.stack(
                [x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)], dim=-1
            )
        return Detections(
            *cvops.multiclass_nms(
                boxes,
                scores,
                iou_threshold=self.iou_threshold,
                score_threshold=self.score_threshold,
                max_per_class=self.max_per_class,
                max_total=self.max_total,
                class_agnostic=self.class_agnostic,
            )
        )

    def extra_repr(self):
        return (
            f"num_anchors={self.anchors.shape[0]}, num_classes={self.num_classes}, iou_threshold={self.iou_threshold}, "
            f"score_threshold={self.score_threshold}, max_per_class={self.max_per_class}, max_total={self.max_total}, "
            f"class_agnostic={self.class_agnostic}, image_size={self.image_size}"
        )


class DetectionLoss(nn.Module):
    """J = box_weight·J_box + obj_weight·J_obj + cls_weight·J_cls for raw head outputs and padded gt.

    Targets come from assign_targets (pos_iou, neg_iou). J_box: mean over positive anchors of
    1 − GIoU(decoded box, matched gt) (cvops.generalized_box_iou_loss, finite for zero-area pairs). J_obj: binary cross-entropy
    of the objectness logit, target 1 on positives and 0 on negatives, mean over them (ignored anchors
    left out). J_cls: binary cross-entropy of the class logits against the one-hot class, summed over
    classes, mean over positives. Masks rather than boolean indexing keep shapes static (compilable).
    forward(raw, gt_boxes, gt_labels) returns (J, parts) with parts {"box", "obj", "cls"} weighted."""

    def __init__(
        self,
        anchors: Tensor,
        num_classes: int,
        *,
        pos_iou: float = 0.5,
        neg_iou: float = 0.4,
        box_weight: float = 5.0,
        obj_weight: float = 1.0,
        cls_weight: float = 1.0,
        max_log_scale: float = MAX_LOG_SCALE,
    ):
        super().__init__()
        _check_anchors("DetectionLoss", anchors)
        self.num_classes = check_int("DetectionLoss", "num_classes", num_classes)
        self.pos_iou = _check_fraction("DetectionLoss", "pos_iou", pos_iou)
        self.neg_iou = _check_fraction("DetectionLoss", "neg_iou", neg_iou)
        if self.neg_iou > self.pos_iou:
            raise ValueError(
                f"cvops.DetectionLoss: neg_iou must be ≤ pos_iou, got neg_iou={neg_iou} > pos_iou={pos_iou}"
            )
        self.box_weight, self.obj_weight, self.cls_weight = box_weight, obj_weight, cls_weight
        self.max_log_scale = float(max_log_scale)
        self.register_buffer("anchors", anchors.detach().clone(), persistent=False)

    def forward(self, raw: Tensor, gt_boxes: Tensor, gt_labels: Tensor):
        _check_raw("DetectionLoss", raw, self.anchors.shape[0], self.num_classes)
        if gt_boxes.dim() != 3 or gt_boxes.shape[0] != raw.shape[0]:
            raise ValueError(
                f"cvops.DetectionLoss: gt_boxes must be [B, G, 4] with B = {raw.shape[0]} (raw's batch), "
                f"got {_shape(gt_boxes)}"
            )
        with torch.no_grad():
            targets = assign_targets(
                self.anchors, gt_boxes.to(raw.dtype), gt_labels, pos_iou=self.pos_iou, neg_iou=self.neg_iou
            )
        positive = (targets.labels >= 0).to(raw.dtype)
        cared = (targets.labels != -2).to(raw.dtype)
        num_positive = positive.sum().clamp(min=1)

        boxes = decode_boxes(raw[..., :4], self.anchors.to(raw.dtype), max_log_scale=self.max_log_scale)
        # Non-positive anchors are compared with their anchor box: a finite value that the mask then zeroes.
        goal = torch.where(positive[..., None] > 0, targets.matched_boxes, self.anchors.to(raw.dtype))
        box = (cvops.generalized_box_iou_loss(boxes, goal) * positive).sum() / num_positive
        obj_terms = F.binary_cross_entropy_with_logits(raw[..., 4], positive, reduction="none")
        obj = (obj_terms * cared).sum() / cared.sum().clamp(min=1)
        one_hot = F.one_hot(targets.labels.clamp(min=0), self.num_classes).to(raw.dtype)
        cls_terms = F.binary_cross_entropy_with_logits(raw[..., 5:], one_hot, reduction="none").sum(-1)
        cls = (cls_terms * positive).sum() / num_positive
        parts = {"box": self.box_weight * box, "obj": self.obj_weight * obj, "cls": self.cls_weight * cls}
        return sum(parts.values()), parts

    def extra_repr(self):
        return (
            f"num_anchors={self.anchors.shape[0]}, num_classes={self.num_classes}, pos_iou={self.pos_iou}, "
            f"neg_iou={self.neg_iou}, box_weight={self.box_weight}, obj_weight={self.obj_weight}, "
            f"cls_weight={self.cls_weight}"
        )
