"""nms family: the NMS ops against torchvision.ops.nms / batched_nms, a per-image loop of batched_nms
for multiclass_nms, and the reference loop for soft_nms (torchvision has none)."""

import torch
import torchvision.ops as tv

import cvops
import reference.nms
from benchmarks.cases import Case
from benchmarks.cases.boxes import random_boxes


def clustered_boxes(n, device, seed, objects=50):
    """The detector case: several overlapping proposals around each object."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(objects, 2, generator=gen) * 1000
    xy = centres[torch.randint(0, objects, (n,), generator=gen)] + torch.randn(n, 2, generator=gen) * 8
    wh = 40 + torch.randn(n, 2, generator=gen).abs() * 10
    return torch.cat([xy, xy + wh], 1).to(device)


def distinct_scores(shape, device, seed):
    """Distinct values, so that every implementation agrees on the order (no ties)."""
    gen = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel()
    return (torch.randperm(n, generator=gen).float() / n).view(shape).to(device)


def nms_case(n, layout, device):
    make = random_boxes if layout == "uniform" else clustered_boxes

    def build():
        boxes, scores = make(n, device, 0), distinct_scores((n,), device, 1)
        return (lambda: tv.nms(boxes, scores, 0.5)), (lambda: cvops.nms(boxes, scores, 0.5))

    return Case(
        "nms", f"{n} {layout}", device, "torchvision.ops.nms", build, quick=(n == 10_000 and layout == "uniform")
    )


def batched_nms_case(n, classes, device):
    def build():
        boxes, scores = random_boxes(n, device, 0), distinct_scores((n,), device, 1)
        idxs = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(2)).to(device)
        return (lambda: tv.batched_nms(boxes, scores, idxs, 0.5)), (lambda: cvops.batched_nms(boxes, scores, idxs, 0.5))

    return Case("batched_nms", f"{n} boxes {classes} classes", device, "torchvision.ops.batched_nms", build, quick=True)


def torchvision_multiclass_nms(boxes, scores, iou_threshold, score_threshold, max_per_class, max_total):
    """The peer: per image, torchvision batched_nms over the candidates, then the per-class cap and
    the top max_total (scores are distinct, so the order is the same). Returns indices [B, K]."""
    B, N, C = scores.shape
    out = torch.full((B, max_total), -1, dtype=torch.long, device=scores.device)
    for b in range(B):
        n, c = torch.nonzero(scores[b] > score_threshold, as_tuple=True)
        keep = tv.batched_nms(boxes[b, n], scores[b, n, c], c, iou_threshold)
        kept_classes = c[keep]
        by_class = torch.sort(kept_classes, stable=True)
        first = torch.searchsorted(by_class.values, by_class.values, right=False)
        rank = torch.empty_like(keep)
        rank[by_class.indices] = torch.arange(len(keep), device=keep.device) - first
        keep = keep[rank < max_per_class][:max_total]
        out[b, : len(keep)] = n[keep]
    return out


def multiclass_case(B, N, C, device):
    def build():
        boxes = torch.stack([clustered_boxes(N, device, seed) for seed in range(B)])
        # Detector-like scores: most (box, class) pairs far below the threshold.
        gen = torch.Generator().manual_seed(3)
        scores = torch.sigmoid(torch.randn(B, N, C, generator=gen) * 2 - 6)
        scores = scores + distinct_scores((B, N, C), "cpu", 4) * 1e-6  # no ties
        scores = scores.to(device)
        kwargs = dict(iou_threshold=0.5, score_threshold=0.05, max_per_class=100, max_total=100)
        return (
            (lambda: torchvision_multiclass_nms(boxes, scores, **kwargs)),
            (lambda: cvops.multiclass_nms(boxes, scores, **kwargs)[3]),
        )

    return Case(
        "multiclass_nms", f"{B}x{N} boxes x{C} classes", device, "per-image tv batched_nms loop", build, quick=True
    )


def soft_nms_case(n, device):
    def build():
        boxes, scores = clustered_boxes(n, device, 0), distinct_scores((n,), device, 1)
        return (lambda: reference.nms.soft_nms(boxes, scores)[0]), (lambda: cvops.soft_nms(boxes, scores)[0])

    return Case("soft_nms gaussian", f"{n} clustered", device, "reference loop", build)


def cases(device):
    nms_sizes = [1_000, 10_000, 50_000] if device == "cpu" else [10_000, 50_000, 100_000]
    multiclass = (4, 5_000, 80) if device == "cpu" else (16, 10_000, 80)
    return [nms_case(n, "uniform", device) for n in nms_sizes] + [
        nms_case(10_000, "clustered", device),
        batched_nms_case(20_000, 80, device),
        multiclass_case(*multiclass, device),
        soft_nms_case(1_000, device),
    ]
