"""torchvision's own detection code with its NMS swapped for cvops's: RetinaNet end to end and the
postprocessing of Faster R-CNN's box head and of SSD give identical detections when the scores are distinct;
with tied scores cvops keeps the same boxes as torchvision, in the stable order (score descending, then index)."""

import pytest
import torch
import torchvision
import torchvision.ops as tv
from torchvision.models.detection import (
    fasterrcnn_mobilenet_v3_large_320_fpn,
    retinanet_resnet50_fpn,
    ssdlite320_mobilenet_v3_large,
)

import cvops
from box_sets import boxes_like

# retinanet.py, roi_heads.py, ssd.py, rpn.py and fcos.py call `box_ops.batched_nms` after
# `from torchvision.ops import boxes as box_ops`, and box_ops.batched_nms calls `nms` from the same module:
# these two module attributes are what a swap replaces. box_iou (the matchers, box_similarity) runs only in
# training, not on the inference paths tested here.
BOX_OPS = torchvision.ops.boxes
SWAPS = {"batched_nms": cvops.batched_nms, "nms": cvops.nms}

# float64 throughout: thousands of float32 sigmoid or softmax scores collide by rounding (in float32 the
# RetinaNet below has two equal scores among an image's ~4900 candidates), and ties may be ordered differently.
DTYPE = torch.float64


def run(monkeypatch, name, impl, fn, *args):
    """fn(*args) without grad and with box_ops.<name> replaced by impl; also returns, for each call of it,
    (boxes fed, distinct scores among them, boxes kept)."""
    calls = []

    def recorded(boxes, scores, *rest):
        keep = impl(boxes, scores, *rest)
        calls.append((len(boxes), scores.unique().numel(), len(keep)))
        return keep

    with monkeypatch.context() as m, torch.no_grad():
        m.setattr(BOX_OPS, name, recorded)
        out = fn(*args)
    return out, calls


def assert_identical(got, want):
    if isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and torch.equal(got, want)
    elif isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            assert_identical(got[key], want[key])
    else:
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_identical(g, w)


def torchvision_vs_cvops(monkeypatch, swap, fn, *args):
    """fn's output under torchvision's NMS and under cvops's (swapped in as box_ops.<swap>) must be identical,
    every NMS call fed the same distinct scores; returns the output and torchvision's calls."""
    want, tv_calls = run(monkeypatch, swap, getattr(BOX_OPS, swap), fn, *args)
    got, cv_calls = run(monkeypatch, swap, SWAPS[swap], fn, *args)
    assert_identical(got, want)
    assert cv_calls == tv_calls
    assert all(fed == distinct for fed, distinct, _ in tv_calls)
    return want, tv_calls


def clustered(n, g, shape, objects=8):
    """n xyxy boxes in an image of shape (h, w), jittered around a few objects: the overlapping candidates
    NMS is there to thin out."""
    h, w = shape
    rand = lambda *s: torch.rand(*s, generator=g, dtype=DTYPE)  # noqa: E731
    centres, sizes = rand(objects, 2) * torch.tensor([w, h], dtype=DTYPE), 20 + rand(objects, 2) * 60
    pick = torch.randint(0, objects, (n,), generator=g)
    c = centres[pick] + torch.randn(n, 2, generator=g, dtype=DTYPE) * 6
    s = sizes[pick] * (1 + 0.15 * torch.randn(n, 2, generator=g, dtype=DTYPE)).clamp(min=0.5)
    return torch.cat([c - s / 2, c + s / 2], -1)


# ---------------------------------------------------------------------------- RetinaNet end to end


@pytest.fixture(scope="module")
def retinanet():
    """An untrained RetinaNet (ResNet-50 FPN, 91 classes) for 128x160 images. Its head's logits sit near the
    prior (sigmoid about 0.01, under the 0.05 score threshold): a fixed random ramp of distinct offsets in
    [0, 4) lifts thousands of candidates over it and keeps every score distinct."""
    torch.manual_seed(0)
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, min_size=128, max_size=160)
    model = model.eval().to(DTYPE)
    head = model.head.classification_head
    forward = head.forward

    def ramped(x):
        logits = forward(x)
        n = logits[0].numel()
        ramp = torch.randperm(n, generator=torch.Generator().manual_seed(1)).to(logits) / n
        return logits + 4 * ramp.view_as(logits[0])

    head.forward = ramped
    return model


@pytest.mark.parametrize("swap", SWAPS)
def test_retinanet_detections_are_identical(retinanet, monkeypatch, swap):
    images = list(torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(0), dtype=DTYPE))
    detections, calls = torchvision_vs_cvops(monkeypatch, swap, retinanet, images)
    assert [len(d["boxes"]) for d in detections] == [retinanet.detections_per_img] * 2
    fed = sum(c[0] for c in calls)
    assert fed > 2 * 4000  # up to 1000 candidates a level, 5 levels: torchvision's per-class path
    if swap == "batched_nms":  # one call an image, which keeps more than the top-K cut takes
        assert len(calls) == 2 and all(fed > kept > retinanet.detections_per_img for fed, _, kept in calls)


# ---------------------------------------------------------------------------- Faster R-CNN's box head


@pytest.fixture(scope="module")
def roi_heads():
    torch.manual_seed(0)
    return fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None).roi_heads.eval()


@pytest.mark.parametrize("swap", SWAPS)
@pytest.mark.parametrize("proposals", [100, 500])  # ~400 or ~2000 candidates an image: both torchvision paths
def test_faster_rcnn_box_head_postprocess_is_identical(roi_heads, monkeypatch, swap, proposals):
    """Random box-head outputs over 91 classes for proposals clustered around a few objects."""
    g = torch.Generator().manual_seed(proposals)
    shapes = [(240, 320), (256, 300)]
    boxes = [clustered(proposals, g, shape) for shape in shapes]
    class_logits = torch.randn(2 * proposals, 91, generator=g, dtype=DTYPE) * 2
    box_regression = torch.randn(2 * proposals, 91 * 4, generator=g, dtype=DTYPE) * 0.1
    out, calls = torchvision_vs_cvops(
        monkeypatch, swap, roi_heads.postprocess_detections, class_logits, box_regression, boxes, shapes
    )
    assert [len(b) for b in out[0]] == [roi_heads.detections_per_img] * 2
    fed = sum(c[0] for c in calls)
    assert fed > 2 * (1000 if proposals == 500 else 200)
    if swap == "batched_nms":
        assert all(fed > kept > roi_heads.detections_per_img for fed, _, kept in calls)


# ---------------------------------------------------------------------------- SSD


@pytest.fixture(scope="module")
def ssd():
    torch.manual_seed(0)
    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()


@pytest.mark.parametrize("swap", SWAPS)
def test_ssd_postprocess_is_identical(ssd, monkeypatch, swap):
    """Random head outputs over 21 classes for 1500 anchors clustered around a few objects: the top 300
    candidates of each of 20 classes, 6000 an image."""
    g = torch.Generator().manual_seed(0)
    anchors = [clustered(1500, g, (320, 320)) for _ in range(2)]
    head_outputs = {
        "bbox_regression": torch.randn(2, 1500, 4, generator=g, dtype=DTYPE) * 0.1,
        "cls_logits": torch.randn(2, 1500, 21, generator=g, dtype=DTYPE) * 2,
    }
    detections, calls = torchvision_vs_cvops(
        monkeypatch, swap, ssd.postprocess_detections, head_outputs, anchors, [(320, 320)] * 2
    )
    assert [len(d["boxes"]) for d in detections] == [ssd.detections_per_img] * 2
    assert sum(c[0] for c in calls) == 2 * 20 * ssd.topk_candidates
    if swap == "batched_nms":
        assert all(fed > kept > ssd.detections_per_img for fed, _, kept in calls)


# ---------------------------------------------------------------------------- tied scores


@pytest.mark.parametrize("ties", ["all equal", "four values"])
@pytest.mark.parametrize("n", [500, 1500])  # torchvision's coordinate-offset path; its per-class path (> 1000)
def test_tied_scores_keep_the_same_boxes_in_a_stable_order(n, ties):
    """With ties cvops keeps the boxes torchvision keeps (on CPU torchvision's nms kernel also visits tied
    boxes lower index first), ordered by score descending, then index ascending. torchvision's order among
    ties is not fixed: its per-class path re-sorts the kept boxes by score alone, and sorts are unstable."""
    g = torch.Generator().manual_seed(n)
    boxes = boxes_like("clustered", n, torch.float32, generator=g)
    idxs = torch.randint(0, 5, (n,), generator=g)
    scores = torch.ones(n) if ties == "all equal" else (torch.rand(n, generator=g) * 4).floor() / 4
    for got, want in [
        (cvops.batched_nms(boxes, scores, idxs, 0.5), tv.batched_nms(boxes, scores, idxs, 0.5)),
        (cvops.nms(boxes, scores, 0.5), tv.nms(boxes, scores, 0.5)),
    ]:
        assert len(got) < n // 2  # tied boxes overlap: which of them survives depends on the order
        assert torch.equal(got.sort().values, want.sort().values)
        assert got.tolist() == sorted(got.tolist(), key=lambda i: (-scores[i].item(), i))
