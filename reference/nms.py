"""Reference NMS family: greedy loops over a full IoU matrix (reference/boxes.py's box_iou), written
to be read, not to be fast. Every function follows the NMS policy stated once in cvops/ops/nms.py's
docstring (IoU formula, float64 threshold comparisons, order and ties, NaN / inf / degenerate boxes);
here that policy falls out of plain comparisons: NaN compares false, so a NaN score is never kept
and a NaN IoU never suppresses. IoU is computed in the boxes' dtype (pass float64 for the exact answer).
"""

import torch

from reference.boxes import box_iou

__all__ = ["nms", "batched_nms", "multiclass_nms", "soft_nms"]


def _order(scores):
    """Indices by decreasing score, ties lower index first; NaN scores left out."""
    order = torch.sort(-scores, stable=True).indices
    return order[~torch.isnan(scores[order])]


def _greedy(iou, order, iou_threshold, limit=None):
    """Greedy NMS over candidates visited in `order`: keep one, suppress those with IoU > threshold."""
    suppressed = iou.new_zeros(iou.shape[0], dtype=torch.bool)
    over = iou.double() > iou_threshold  # NaN → False
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        if limit is not None and len(keep) == limit:
            break
        suppressed |= over[i]
    return torch.tensor(keep, dtype=torch.int64, device=iou.device)


def nms(boxes, scores, iou_threshold):
    """boxes [N, 4], scores [N] → int64 indices of the kept boxes, by decreasing score (= torchvision.ops.nms)."""
    return _greedy(box_iou(boxes, boxes), _order(scores), iou_threshold)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """nms within each category idxs[i] (boxes of different categories never suppress each other), the
    survivors merged by decreasing score, ties lower index first (= torchvision.ops.batched_nms; its
    per-class path uses an unstable sort, so exact ties may come out in another order there)."""
    keep = [torch.nonzero(idxs == c).flatten() for c in torch.unique(idxs)]
    keep = [members[nms(boxes[members], scores[members], iou_threshold)] for members in keep]
    keep = torch.cat(keep).sort().values if keep else idxs.new_zeros(0, dtype=torch.int64)
    return keep[torch.sort(-scores[keep], stable=True).indices]


def multiclass_nms(
    boxes, scores, *, iou_threshold, score_threshold=0.0, max_per_class=100, max_total=100, class_agnostic=False
):
    """Batched multi-class NMS with fixed-size, padded outputs (TF's combined_non_max_suppression).

    boxes [B, N, 4] (one box per anchor, shared by the classes) or [B, N, C, 4] (one box per anchor
    and class); scores [B, N, C]. Candidate (n, c) of image b has box boxes[b, n] (or boxes[b, n, c])
    and score scores[b, n, c]. For every image b independently:

    1. Candidates: the (n, c) with scores[b, n, c] > score_threshold (strictly; compared in float64;
       a NaN score is never a candidate, as cvops/ops/nms.py states).
    2. Order: candidates are visited by score descending, ties by class ascending, then box index n
       ascending.
    3. Suppression, class_agnostic=False: greedy NMS within each class c separately: visiting class c's
       candidates in that order, a candidate not yet suppressed is kept and suppresses every later
       candidate of class c whose box has IoU > iou_threshold with it. Only the first max_per_class kept
       candidates of each class survive.
       class_agnostic=True: one greedy NMS over all candidates of the image in that order; a kept
       candidate suppresses later candidates of every class (with shared boxes, the same box under a
       second class is suppressed by the first, since its IoU with itself is 1). max_per_class does
       not apply.
    4. Merge: the survivors of all classes, in the same order (score descending, class ascending, box
       index ascending); the first max_total are the image's detections, num_valid[b] their count.

    Returns (boxes [B, K, 4] in boxes' dtype, scores [B, K] in scores' dtype, classes [B, K] int64,
    indices [B, K] int64 (the box index n), num_valid [B] int64) with K = max_total; slots past
    num_valid[b] hold boxes 0, scores 0, classes −1, indices −1.
    """
    batch, num_boxes, num_classes = scores.shape
    per_class_boxes = boxes.dim() == 4
    out_boxes = boxes.new_zeros(batch, max_total, 4)
    out_scores = scores.new_zeros(batch, max_total)
    out_classes = torch.full((batch, max_total), -1, dtype=torch.int64, device=scores.device)
    out_indices = torch.full((batch, max_total), -1, dtype=torch.int64, device=scores.device)
    num_valid = torch.zeros(batch, dtype=torch.int64, device=scores.device)
    for b in range(batch):
        # Class-major flat candidates (c, n): a stable sort of −score then orders ties by (c, n).
        flat_scores = scores[b].t().reshape(-1)
        flat_boxes = (boxes[b].transpose(0, 1) if per_class_boxes else boxes[b].expand(num_classes, -1, -1)).reshape(
            -1, 4
        )
        flat_classes = torch.arange(num_classes, device=scores.device).repeat_interleave(num_boxes)
        candidates = torch.nonzero(flat_scores.double() > score_threshold).flatten()
        cand_scores, cand_boxes, cand_classes = (
            flat_scores[candidates],
            flat_boxes[candidates],
            flat_classes[candidates],
        )
        order = torch.sort(-cand_scores, stable=True).indices
        if class_agnostic:
            kept = _greedy(box_iou(cand_boxes, cand_boxes), order, iou_threshold)
        else:
            kept = []
            for c in range(num_classes):
                members = torch.nonzero(cand_classes == c).flatten()  # ascending n: ties stay box-ordered
                class_order = torch.sort(-cand_scores[members], stable=True).indices
                limited = _greedy(
                    box_iou(cand_boxes[members], cand_boxes[members]), class_order, iou_threshold, max_per_class
                )
                kept.append(members[limited])
            kept = torch.cat(kept)
        kept = kept.sort().values  # candidate order is (c, n): sort then stable-sort by −score
        kept = kept[torch.sort(-cand_scores[kept], stable=True).indices][:max_total]
        count = len(kept)
        flat = candidates[kept]
        out_boxes[b, :count] = cand_boxes[kept]
        out_scores[b, :count] = cand_scores[kept]
        out_classes[b, :count] = flat // num_boxes
        out_indices[b, :count] = flat % num_boxes
        num_valid[b] = count
    return out_boxes, out_scores, out_classes, out_indices, num_valid


def soft_nms(boxes, scores, *, sigma=0.5, iou_threshold=0.3, score_threshold=0.001, method="gaussian"):
    """Soft-NMS (Bodla et al. 2017): boxes [N, 4], scores [N] → (kept indices int64, their decayed scores).

    Candidates start as the boxes with score ≥ score_threshold (NaN never). Repeatedly: pick the
    remaining candidate with the highest current score (ties: lower index), output it with its current
    score, remove it, multiply every other remaining score by the weight w(IoU with the picked box),
    and drop those whose score is now < score_threshold. Gaussian: w = exp(−IoU²/sigma); linear:
    w = 1 − IoU if IoU > iou_threshold else 1 (iou_threshold is used by "linear" only). A NaN IoU
    counts as 0 (cvops/ops/nms.py). Scores decay in the promoted dtype of boxes and scores; the output has scores' dtype.
    """
    work = scores.to(torch.promote_types(boxes.dtype, scores.dtype)).clone()
    iou = torch.nan_to_num(box_iou(boxes, boxes).to(work.dtype), nan=0.0)
    alive = work.double() >= score_threshold  # NaN → False
    keep, kept_scores = [], []
    while alive.any():
        members = torch.nonzero(alive).flatten()
        pick = members[torch.argmax(work[members])].item()  # argmax: first maximum = lowest index
        keep.append(pick)
        kept_scores.append(work[pick].item())
        alive[pick] = False
        overlap = iou[pick]
        if method == "gaussian":
            weight = torch.exp(-(overlap * overlap) / sigma)
        else:
            weight = torch.where(overlap.double() > iou_threshold, 1 - overlap, torch.ones_like(overlap))
        work = torch.where(alive, work * weight, work)
        alive &= work.double() >= score_threshold
    return (
        torch.tensor(keep, dtype=torch.int64, device=scores.device),
        torch.tensor(kept_scores, dtype=work.dtype, device=scores.device).to(scores.dtype),
    )
