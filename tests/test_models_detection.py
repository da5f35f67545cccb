"""The detection assembly: grid anchors, box coding, IoU assignment, DetectionPostprocess (a synthetic head
output holding known objects comes out as exactly those objects; duplicates are suppressed; compiles),
YoloHead and DetectionLoss, bad input."""

import math

import pytest
import torch

import cvops
from box_sets import random_boxes
from cvops.models.detection import (
    DetectionLoss,
    DetectionPostprocess,
    YoloHead,
    assign_targets,
    decode,
    decode_boxes,
    encode,
    grid_anchors,
)
from reference import nms as ref

# ---------------------------------------------------------------------------- anchors and box coding


@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_grid_anchors_layout_and_centres(dtype):
    sizes = [(10.0, 20.0), (30.0, 6.0)]
    anchors = grid_anchors((2, 3), (8, 16), sizes, dtype=dtype)
    assert anchors.shape == (2 * 3 * 2, 4) and anchors.dtype == (dtype or torch.get_default_dtype())
    for row in range(2):
        for col in range(3):
            for a, (w, h) in enumerate(sizes):
                cx, cy = (col + 0.5) * 16, (row + 0.5) * 8
                want = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=anchors.dtype)
                assert torch.equal(anchors[(row * 3 + col) * 2 + a], want)
    square = grid_anchors(4, 32, [(32, 32)])  # ints for a square grid and stride
    assert square.shape == (16, 4) and torch.equal(square[5], torch.tensor([32.0, 32, 64, 64]))


def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(0)
    anchors = random_boxes(64, g, spread=500, size=100)
    gt = random_boxes(2 * 64, g, spread=500, size=100).view(2, 64, 4)
    deltas = encode(gt, anchors)
    torch.testing.assert_close(decode_boxes(deltas, anchors), gt, rtol=0, atol=1e-12)
    torch.testing.assert_close(encode(decode_boxes(deltas, anchors), anchors), deltas, rtol=0, atol=1e-12)
    assert torch.equal(encode(anchors, anchors), torch.zeros(64, 4, dtype=torch.float64))
    # tw, th are clamped at log(1000/16): no overflow however large the raw output
    huge = decode_boxes(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    torch.testing.assert_close(huge, torch.tensor([[-492.0, -492.0, 508.0, 508.0]]))


def test_decode_scores_are_objectness_times_class():
    anchors = grid_anchors((2, 2), 16, [(16, 16), (24, 12)])
    raw = torch.randn(3, len(anchors), 5 + 4)
    boxes, scores = decode(raw, anchors, num_classes=4)
    assert boxes.shape == (3, 8, 4) and scores.shape == (3, 8, 4)
    torch.testing.assert_close(scores, raw[..., 4:5].sigmoid() * raw[..., 5:].sigmoid())
    torch.testing.assert_close(boxes, decode_boxes(raw[..., :4], anchors))


# ---------------------------------------------------------------------------- assignment

ANCHORS = torch.tensor(
    [
        [0.0, 0, 10, 10],  # 0: IoU 1 with gt 0 → positive
        [5, 0, 15, 10],  # 1: IoU 1/3 with gt 0 → negative
        [4, 0, 14, 10],  # 2: IoU 60/140 ≈ 0.43 with gt 0 → ignored
        [20, 20, 30, 30],  # 3: IoU 0.25 with gt 1, its best anchor (the first of a tie) → forced positive
        [100, 100, 110, 110],  # 4: matches only padding in image 0 → negative; the object of image 1
        [25, 25, 35, 35],  # 5: IoU 0.25 with gt 1 too (the tie's second) → negative
    ]
)
GT_BOXES = torch.tensor(
    [
        [[0.0, 0, 10, 10], [20, 20, 40, 40], [100, 100, 110, 110]],
        [[100.0, 100, 110, 110], [0, 0, 0, 0], [0, 0, 0, 0]],
    ]
)
GT_LABELS = torch.tensor([[3, 1, -1], [0, -1, -1]])


def test_assign_targets_positive_negative_ignore_forced_and_padding():
    out = assign_targets(ANCHORS, GT_BOXES, GT_LABELS, pos_iou=0.5, neg_iou=0.4)
    assert out.labels.tolist() == [[3, -1, -2, 1, -1, -1], [-1, -1, -1, -1, 0, -1]]
    assert out.matched_gt.tolist() == [[0, -1, -1, 1, -1, -1], [-1, -1, -1, -1, 0, -1]]
    want_boxes = torch.zeros(2, 6, 4)
    want_boxes[0, 0], want_boxes[0, 3], want_boxes[1, 4] = GT_BOXES[0, 0], GT_BOXES[0, 1], GT_BOXES[1, 0]
    assert torch.equal(out.matched_boxes, want_boxes)
    want_targets = torch.zeros(2, 6, 4)
    want_targets[0, 3] = torch.tensor([0.5, 0.5, math.log(2), math.log(2)])  # gt 1 is anchor 3 shifted and doubled
    torch.testing.assert_close(out.box_targets, want_targets)
    single = assign_targets(ANCHORS, GT_BOXES[0], GT_LABELS[0])  # one image: [G, 4] and [G]
    assert all(torch.equal(s, o[0]) for s, o in zip(single, out))


def test_assign_targets_conflicts_no_overlap_and_no_gt():
    anchors = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    # both gts' best anchor is 0: the higher IoU (gt 0) takes it; gt 2 overlaps no anchor and is not forced
    gt = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [200, 200, 220, 220]])
    out = assign_targets(anchors, gt, torch.tensor([0, 1, 2]))
    assert out.labels.tolist() == [0, -1] and out.matched_gt.tolist() == [0, -1]
    none = assign_targets(anchors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long))
    assert none.labels.tolist() == [[-1, -1]] * 2 and not none.box_targets.any()
    nan = assign_targets(anchors, torch.tensor([[float("nan"), 0, 10, 10], [50, 50, 60, 60]]), torch.tensor([4, 5]))
    assert nan.labels.tolist() == [-1, 5]  # a NaN gt matches nothing and does not spoil the others


# ---------------------------------------------------------------------------- DetectionPostprocess

GRID, STRIDE, SIZES, CLASSES = (8, 8), 16, [(24.0, 24.0), (48.0, 32.0), (32.0, 64.0)], 4
OBJECTS = torch.tensor(
    [  # image 0: three objects; image 1: one object and padding
        [[10.0, 12, 40, 38], [60, 20, 110, 60], [30, 70, 60, 125]],
        [[50.0, 50, 90, 80], [0, 0, 0, 0], [0, 0, 0, 0]],
    ]
)
OBJECT_CLASSES = torch.tensor([[2, 0, 3], [1, -1, -1]])
OBJECTNESS = torch.tensor([[4.0, 8.0, 6.0], [5.0, 0.0, 0.0]])  # distinct scores fix the output order


def synthetic_head_output(duplicates=False):
    """A head output in which the anchors assigned to each object encode it exactly (high objectness and
    class logits) and everything else is near zero probability. duplicates: the other anchors overlapping
    an object (IoU ≥ 0.25) also fire, on a box shifted by 2 px and with a lower objectness."""
    anchors = grid_anchors(GRID, STRIDE, SIZES)
    targets = assign_targets(anchors, OBJECTS, OBJECT_CLASSES)
    raw = torch.full((2, len(anchors), 5 + CLASSES), -12.0)
    raw[..., :4] = 0
    g = torch.Generator().manual_seed(0)
    for b in range(2):
        for j in torch.nonzero(OBJECT_CLASSES[b] >= 0).flatten().tolist():
            fire = targets.matched_gt[b] == j
            if duplicates:
                near = (cvops.box_iou(OBJECTS[b, j : j + 1], anchors)[0] >= 0.25) & (targets.labels[b] < 0)
                shift = (torch.randint(0, 2, (len(anchors), 4), generator=g) * 4 - 2).float()
                raw[b, near, :4] = encode(OBJECTS[b, j] + shift, anchors)[near]
                raw[b, near, 4] = OBJECTNESS[b, j] - 1
                raw[b, near, 5 + OBJECT_CLASSES[b, j]] = 10.0
                fire = fire & ~near
            raw[b, fire, :4] = targets.box_targets[b, fire]
            raw[b, fire, 4] = OBJECTNESS[b, j]
            raw[b, fire, 5 + OBJECT_CLASSES[b, j]] = 10.0
    return anchors, targets, raw


def check_finds_exactly_the_objects(detections, targets, max_total):
    for b, count in enumerate([3, 1]):
        order = OBJECTNESS[b, :count].argsort(descending=True)
        assert detections.num_valid[b] == count
        torch.testing.assert_close(detections.boxes[b, :count], OBJECTS[b, order], rtol=0, atol=1e-4)
        assert torch.equal(detections.classes[b, :count], OBJECT_CLASSES[b, order])
        want_scores = OBJECTNESS[b, order].sigmoid() * torch.tensor(10.0).sigmoid()
        torch.testing.assert_close(detections.scores[b, :count], want_scores)
        for slot, j in enumerate(order.tolist()):  # ties between an object's anchors: the lowest index
            assert detections.indices[b, slot] == torch.nonzero(targets.matched_gt[b] == j).min()
        assert (detections.indices[b, count:] == -1).all() and (detections.classes[b, count:] == -1).all()
        assert not detections.scores[b, count:].any() and not detections.boxes[b, count:].any()
    assert detections.boxes.shape == (2, max_total, 4) and detections.num_valid.dtype == torch.int64


def test_postprocess_finds_exactly_the_objects_in_a_synthetic_head_output():
    anchors, targets, raw = synthetic_head_output()
    anchors_per_object = torch.bincount(targets.matched_gt[0][targets.matched_gt[0] >= 0], minlength=3)
    assert anchors_per_object.min() >= 1 and anchors_per_object.max() >= 2  # tied copies: NMS keeps the first
    postprocess = DetectionPostprocess(anchors, CLASSES, iou_threshold=0.5, score_threshold=0.05, max_total=10)
    check_finds_exactly_the_objects(postprocess(raw), targets, 10)


def test_postprocess_suppresses_duplicates_near_objects():
    anchors, targets, raw = synthetic_head_output(duplicates=True)
    fired = (raw[..., 4] > -12).sum()
    assert fired > 3 * (targets.labels >= 0).sum()  # many more boxes fire than there are objects
    postprocess = DetectionPostprocess(anchors, CLASSES, iou_threshold=0.5, score_threshold=0.05, max_total=10)
    check_finds_exactly_the_objects(postprocess(raw), targets, 10)


def test_postprocess_per_class_versus_class_agnostic():
    anchors, targets, raw = synthetic_head_output()
    # a second anchor sees object 1 of image 0 as another class, with a lower score
    other = torch.nonzero((targets.labels[0] < 0) & (cvops.box_iou(OBJECTS[0, 1:2], anchors)[0] > 0.3))[0, 0]
    raw[0, other, :4] = encode(OBJECTS[0, 1], anchors[other])
    raw[0, other, 4], raw[0, other, 5 + 1] = 3.0, 10.0
    per_class = DetectionPostprocess(anchors, CLASSES, max_total=10)(raw)
    assert per_class.num_valid[0] == 4 and per_class.classes[0, 3] == 1 and per_class.indices[0, 3] == other
    agnostic = DetectionPostprocess(anchors, CLASSES, max_total=10, class_agnostic=True)(raw)
    check_finds_exactly_the_objects(agnostic, targets, 10)


def test_postprocess_limits_and_clipping_match_the_reference():
    anchors = grid_anchors((4, 5), 16, [(20.0, 20.0), (40.0, 24.0)], dtype=torch.float64)
    raw = torch.randn(3, len(anchors), 5 + 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    for options in [
        dict(max_per_class=3, max_total=7, score_threshold=0.2),
        dict(class_agnostic=True, max_total=50),
        dict(image_size=(64, 80), iou_threshold=0.3),
    ]:
        got = DetectionPostprocess(anchors, 3, **options)(raw)
        boxes, scores = decode(raw, anchors)
        if "image_size" in options:
            boxes = torch.stack(
                [
                    boxes[..., 0].clamp(0, 80),
                    boxes[..., 1].clamp(0, 64),
                    boxes[..., 2].clamp(0, 80),
                    boxes[..., 3].clamp(0, 64),
                ],
                -1,
            )
        nms_options = {k: v for k, v in options.items() if k != "image_size"}
        want = ref.multiclass_nms(boxes, scores, **{"iou_threshold": 0.5, "score_threshold": 0.05, **nms_options})
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_postprocess_compiles_fullgraph():
    torch._dynamo.reset()
    anchors, targets, raw = synthetic_head_output(duplicates=True)
    postprocess = DetectionPostprocess(anchors, CLASSES, max_total=10, image_size=(128, 128))
    compiled = torch.compile(postprocess, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(raw), postprocess(raw)):
        torch.testing.assert_close(got, want)
    check_finds_exactly_the_objects(compiled(raw), targets, 10)


def test_postprocess_buffers_and_repr():
    anchors = grid_anchors(2, 16, [(16.0, 16.0)])
    postprocess = DetectionPostprocess(anchors, 3, iou_threshold=0.6, max_total=20, class_agnostic=True)
    assert "anchors" not in postprocess.state_dict() and torch.equal(postprocess.anchors, anchors)
    assert postprocess.to(torch.float64).anchors.dtype == torch.float64
    text = repr(postprocess)
    for part in ["num_anchors=4", "num_classes=3", "iou_threshold=0.6", "max_total=20", "class_agnostic=True"]:
        assert part in text


# ---------------------------------------------------------------------------- YoloHead and DetectionLoss


def test_yolo_head_layout_matches_the_anchors():
    head = YoloHead(6, num_anchors=3, num_classes=2)
    features = torch.randn(2, 6, 4, 5)
    raw = head(features)
    assert raw.shape == (2, 4 * 5 * 3, 7)
    conv = head.conv(features)  # channel a·7 + k at (row, col) is raw[:, (row·W + col)·A + a, k]
    assert torch.equal(raw[1, (2 * 5 + 3) * 3 + 1], conv[1, 7:14, 2, 3])
    objectness = head(torch.zeros(1, 6, 4, 5))[..., 4].sigmoid()
    torch.testing.assert_close(objectness, torch.full_like(objectness, 0.01))
    assert "num_anchors=3, num_classes=2" in repr(head)


def test_detection_loss_is_small_for_a_perfect_output_and_trains_a_head():
    anchors, targets, raw = synthetic_head_output()
    loss_fn = DetectionLoss(anchors, CLASSES)
    perfect = raw.clone()
    perfect[..., 4] = torch.where(targets.labels >= 0, 12.0, -12.0)
    total, parts = loss_fn(perfect, OBJECTS, OBJECT_CLASSES)
    assert set(parts) == {"box", "obj", "cls"} and float(total) < 1e-3, parts
    torch.testing.assert_close(total, sum(parts.values()))

    torch.manual_seed(0)
    head = YoloHead(8, len(SIZES), CLASSES)
    features = torch.randn(2, 8, *GRID)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    history = []
    for _ in range(15):
        optimizer.zero_grad()
        total, _ = loss_fn(head(features), OBJECTS, OBJECT_CLASSES)
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.5 * history[0], history
    assert head.conv.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- bad input

ANCHORS_2x2 = grid_anchors(2, 16, [(16.0, 16.0)])


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda: DetectionPostprocess(ANCHORS_2x2, 3)(torch.zeros(1, 4, 9)),
            r"cvops.DetectionPostprocess: raw's last dim must be 5 \+ C = 8 for C = 3 classes .* got 9",
        ),
        (
            lambda: DetectionPostprocess(ANCHORS_2x2, 3)(torch.zeros(1, 5, 8)),
            r"cvops.DetectionPostprocess: raw has 5 anchors .* but there are 4 anchors",
        ),
        (
            lambda: DetectionPostprocess(ANCHORS_2x2, 3)(torch.zeros(4, 8)),
            r"cvops.DetectionPostprocess: raw must be a head output \[B, N, 5 \+ C\]",
        ),
        (
            lambda: DetectionPostprocess(ANCHORS_2x2[:, :3], 3),
            r"cvops.DetectionPostprocess: anchors must be xyxy boxes \[N, 4\]",
        ),
        (
            lambda: DetectionPostprocess(ANCHORS_2x2, 0),
            r"cvops.DetectionPostprocess: num_classes must be an int >= 1, got 0",
        ),
        (
            lambda: DetectionPostprocess(ANCHORS_2x2, 3, max_total=0),
            r"cvops.DetectionPostprocess: max_total must be an int >= 1",
        ),
        (
            lambda: DetectionPostprocess(ANCHORS_2x2, 3, iou_threshold=float("nan")),
            r"iou_threshold must be a number in \[0, 1\]",
        ),
        (
            lambda: DetectionPostprocess(ANCHORS_2x2, 3, score_threshold=float("inf")),
            r"score_threshold must be a finite number",
        ),
        (lambda: decode(torch.zeros(1, 4, 5), ANCHORS_2x2), r"cvops.decode: raw's last dim must be 5 \+ C with C ≥ 1"),
        (
            lambda: decode(torch.zeros(1, 4, 8, dtype=torch.long), ANCHORS_2x2),
            r"cvops.decode: raw must be floating-point",
        ),
        (lambda: grid_anchors((2, 0), 16, [(8, 8)]), r"cvops.grid_anchors: grid_size must be a positive int or a pair"),
        (lambda: grid_anchors(2, -1.0, [(8, 8)]), r"cvops.grid_anchors: stride must be a positive number"),
        (
            lambda: grid_anchors(2, 16, [(8, 8, 8)]),
            r"cvops.grid_anchors: anchor_sizes must be A ≥ 1 positive finite pairs",
        ),
        (
            lambda: assign_targets(ANCHORS, GT_BOXES, GT_LABELS[:, :2]),
            r"cvops.assign_targets: gt_labels must have gt_boxes' shape",
        ),
        (
            lambda: assign_targets(ANCHORS, GT_BOXES, GT_LABELS.float()),
            r"cvops.assign_targets: gt_labels must be an integer",
        ),
        (
            lambda: assign_targets(ANCHORS, GT_BOXES[..., :2], GT_LABELS),
            r"cvops.assign_targets: gt_boxes must be xyxy boxes",
        ),
        (lambda: assign_targets(ANCHORS, GT_BOXES, GT_LABELS, pos_iou=0.3, neg_iou=0.4), r"neg_iou must be ≤ pos_iou"),
        (lambda: YoloHead(6, 3, 2)(torch.zeros(1, 5, 4, 4)), r"cvops.YoloHead: features must be \[B, 6, H, W\]"),
        (
            lambda: DetectionLoss(ANCHORS_2x2, 3)(torch.zeros(1, 4, 8), GT_BOXES, GT_LABELS),
            r"cvops.DetectionLoss: gt_boxes must be \[B, G, 4\] with B = 1",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
