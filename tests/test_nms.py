"""The nms family (nms, batched_nms, multiclass_nms, soft_nms): reference/nms.py against torchvision;
parity with torchvision.ops and with reference/nms.py on generated box sets (uniform, clustered,
duplicates, tiny, huge; tied scores; thresholds 0, 0.5, 1), the NaN/inf/degenerate policy of
cvops/ops/nms.py, reduced precision, empty inputs, opcheck, torch.compile and bad input."""

import math

import pytest
import torch
import torchvision.ops as tv
import torchvision.ops.boxes as tv_boxes
from hypothesis import given, settings
from hypothesis import strategies as st

import cvops
import reference.nms as ref
from box_sets import SETS, boxes_like, random_boxes
from conftest import devices

THRESHOLDS = [0.0, 0.5, 1.0]


def scores_for(n, tied=False, dtype=torch.float64, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g, dtype=torch.float64)
    if tied:  # few distinct values: ties everywhere, decided by the lower index
        s = (s * 4).floor() / 4
    return s.to(device=device, dtype=dtype)


def distinct_scores(n, dtype=torch.float64, device="cpu", seed=1):
    """A permutation of n distinct values (torchvision's batched_nms orders exact ties arbitrarily)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randperm(n, generator=g).to(torch.float64) / n).to(device=device, dtype=dtype)


# ---- reference/nms.py against torchvision ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_reference_nms_matches_torchvision(threshold, dtype):
    for seed, n in enumerate([0, 1, 50, 300]):
        g = torch.Generator().manual_seed(seed)
        boxes = random_boxes(n, g, dtype)
        scores = torch.rand(n, generator=g, dtype=dtype)
        tied = (scores * 4).round() / 4  # many exact ties: the lower index goes first
        for s in (scores, tied):
            assert torch.equal(ref.nms(boxes, s, threshold), tv.nms(boxes, s, threshold))
        idxs = torch.randint(0, 6, (n,), generator=g)
        assert torch.equal(ref.batched_nms(boxes, tied, idxs, threshold), tv.batched_nms(boxes, tied, idxs, threshold))
    # torchvision's per-class path (over 1000 boxes on CPU); distinct scores, as it sorts unstably
    g = torch.Generator().manual_seed(9)
    boxes, scores = random_boxes(1500, g, dtype, spread=400), torch.rand(1500, generator=g, dtype=dtype)
    idxs = torch.randint(0, 20, (1500,), generator=g)
    assert torch.equal(ref.batched_nms(boxes, scores, idxs, threshold), tv.batched_nms(boxes, scores, idxs, threshold))


def test_reference_multiclass_nms_matches_torchvision_per_image():
    g = torch.Generator().manual_seed(3)
    batch, n, classes, k, per_class = 3, 80, 5, 25, 6
    boxes = random_boxes(batch * n, g).view(batch, n, 4)
    scores = torch.rand(batch, n, classes, generator=g, dtype=torch.float64)
    got = ref.multiclass_nms(
        boxes, scores, iou_threshold=0.4, score_threshold=0.3, max_per_class=per_class, max_total=k
    )
    for b in range(batch):
        box_index, cls = torch.nonzero(scores[b] > 0.3, as_tuple=True)
        keep = tv.batched_nms(boxes[b, box_index], scores[b, box_index, cls], cls, 0.4)
        keep = torch.cat([keep[cls[keep] == c][:per_class] for c in range(classes)])
        keep = keep[scores[b, box_index[keep], cls[keep]].argsort(descending=True)][:k]
        count = len(keep)
        assert got[4][b] == count == k  # this many candidates fill every slot
        assert torch.equal(got[2][b, :count], cls[keep]) and torch.equal(got[3][b, :count], box_index[keep])
        assert torch.equal(got[0][b, :count], boxes[b, box_index[keep]])
        assert torch.equal(got[1][b, :count], scores[b, box_index[keep], cls[keep]])


# ---- nms ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("box_set", SETS)
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tied", [False, True])
def test_nms_matches_torchvision(device, box_set, threshold, dtype, tied):
    # 600 boxes: the x1 sweep (segments of >= 256 boxes) as well as the all-pairs loop below.
    for n in (37, 600):
        boxes = boxes_like(box_set, n, dtype, device)
        scores = scores_for(n, tied, dtype, device)
        want = tv.nms(boxes.cpu(), scores.cpu(), threshold)
        torch.testing.assert_close(cvops.nms(boxes, scores, threshold).cpu(), want, rtol=0, atol=0)


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_nms_matches_reference_on_many_sets(threshold):
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        n = int(torch.randint(1, 400, (1,), generator=g))
        boxes = boxes_like(SETS[seed % len(SETS)], n, generator=g)
        scores = scores_for(n, tied=seed % 2 == 0, seed=seed)
        torch.testing.assert_close(cvops.nms(boxes, scores, threshold), ref.nms(boxes, scores, threshold))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    threshold=st.floats(0, 1),
    seed=st.integers(0, 2**31 - 1),
    box_set=st.sampled_from(SETS),
    tied=st.booleans(),
    classes=st.integers(1, 9),
)
def test_nms_and_batched_nms_property(n, threshold, seed, box_set, tied, classes):
    g = torch.Generator().manual_seed(seed)
    boxes = boxes_like(box_set, n, torch.float32, generator=g)
    scores = scores_for(n, tied, torch.float32, seed=seed)
    idxs = torch.randint(0, classes, (n,), generator=g)
    assert torch.equal(cvops.nms(boxes, scores, threshold), ref.nms(boxes, scores, threshold))
    assert torch.equal(
        cvops.batched_nms(boxes, scores, idxs, threshold), ref.batched_nms(boxes, scores, idxs, threshold)
    )


# ---- batched_nms ------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("box_set", SETS)
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("num_classes", [1, 3, 80])
def test_batched_nms_matches_torchvision(device, box_set, threshold, num_classes):
    n = 700
    boxes = boxes_like(box_set, n, torch.float32, device)
    scores = distinct_scores(n, torch.float32, device)
    idxs = torch.randint(0, num_classes, (n,), device=device)
    want = tv.batched_nms(boxes.cpu(), scores.cpu(), idxs.cpu(), threshold)
    torch.testing.assert_close(cvops.batched_nms(boxes, scores, idxs, threshold).cpu(), want, rtol=0, atol=0)


@pytest.mark.parametrize("device", devices())
def test_batched_nms_ties_and_category_ids(device):
    # Tied scores (lower index first), negative / huge / sparse category ids, int32 ids.
    n = 500
    boxes = boxes_like("clustered", n, device=device)
    scores = scores_for(n, tied=True, device=device)
    for idxs in (
        torch.randint(-3, 3, (n,)),
        torch.randint(0, 4, (n,)) * 10**12,
        torch.randint(0, 5, (n,), dtype=torch.int32),
    ):
        got = cvops.batched_nms(boxes, scores, idxs.to(device), 0.5).cpu()
        torch.testing.assert_close(got, ref.batched_nms(boxes.cpu(), scores.cpu(), idxs.long(), 0.5))


def test_batched_nms_boxes_of_other_categories_never_suppress():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert cvops.batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


# ---- multiclass_nms -----------------------------------------------------------------------------------


def detector_output(B, N, C, per_class=False, dtype=torch.float64, device="cpu", seed=0):
    """Clustered boxes (several anchors per object) with random class scores."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.stack([boxes_like("clustered", N * (C if per_class else 1), generator=g) for _ in range(B)])
    boxes = boxes.view(B, N, C, 4) if per_class else boxes
    scores = torch.rand(B, N, C, generator=g, dtype=torch.float64)
    return boxes.to(device=device, dtype=dtype), scores.to(device=device, dtype=dtype)


def assert_same_detections(got, want):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g.cpu(), w.cpu(), rtol=0, atol=0)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("limits", [(100, 100), (3, 10), (50, 7)])
def test_multiclass_nms_matches_reference(device, per_class, class_agnostic, limits):
    max_per_class, max_total = limits
    boxes, scores = detector_output(3, 300, 5, per_class, device=device)
    kwargs = dict(
        iou_threshold=0.5,
        score_threshold=0.3,
        max_per_class=max_per_class,
        max_total=max_total,
        class_agnostic=class_agnostic,
    )
    got = cvops.multiclass_nms(boxes, scores, **kwargs)
    assert_same_detections(got, ref.multiclass_nms(boxes.cpu(), scores.cpu(), **kwargs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multiclass_nms_is_a_loop_of_torchvision_nms(dtype):
    boxes, scores = detector_output(2, 400, 4, dtype=dtype, seed=3)
    out_boxes, out_scores, classes, indices, num_valid = cvops.multiclass_nms(
        boxes, scores, iou_threshold=0.6, score_threshold=0.2, max_per_class=30, max_total=60
    )
    for b in range(2):
        dets = []
        for c in range(4):
            members = torch.nonzero(scores[b, :, c] > 0.2).flatten()
            kept = members[tv.nms(boxes[b, members], scores[b, members, c], 0.6)][:30]
            dets += [(-scores[b, n, c].item(), c, n) for n in kept.tolist()]
        dets = sorted(dets)[:60]
        k = int(num_valid[b])
        assert k == len(dets)
        assert list(zip(classes[b, :k].tolist(), indices[b, :k].tolist())) == [(c, n) for _, c, n in dets]
        torch.testing.assert_close(out_boxes[b, :k], boxes[b, indices[b, :k]])
        torch.testing.assert_close(out_scores[b, :k], scores[b, indices[b, :k], classes[b, :k]])
        assert (indices[b, k:] == -1).all() and (classes[b, k:] == -1).all()
        assert (out_scores[b, k:] == 0).all() and (out_boxes[b, k:] == 0).all()


def test_multiclass_nms_empty_and_all_padding():
    for B, N, C in [(0, 5, 3), (2, 0, 3), (2, 5, 0)]:
        out = cvops.multiclass_nms(torch.rand(B, N, 4), torch.rand(B, N, C), iou_threshold=0.5, max_total=4)
        assert [t.shape for t in out] == [(B, 4, 4), (B, 4), (B, 4), (B, 4), (B,)]
        assert (out[3] == -1).all() and (out[4] == 0).all()
    # No score above the threshold.
    out = cvops.multiclass_nms(torch.rand(2, 5, 4), torch.rand(2, 5, 3), iou_threshold=0.5, score_threshold=1.0)
    assert (out[4] == 0).all() and (out[3] == -1).all()


# ---- soft_nms --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("box_set", ["uniform", "clustered", "duplicates"])
def test_soft_nms_matches_reference(device, method, box_set):
    boxes = boxes_like(box_set, 300, device=device)
    scores = scores_for(300, tied=box_set == "duplicates", device=device)
    kwargs = dict(sigma=0.5, iou_threshold=0.3, score_threshold=0.01, method=method)
    kept, kept_scores = cvops.soft_nms(boxes, scores, **kwargs)
    want, want_scores = ref.soft_nms(boxes.cpu(), scores.cpu(), **kwargs)
    torch.testing.assert_close(kept.cpu(), want)
    torch.testing.assert_close(kept_scores.cpu(), want_scores, rtol=1e-12, atol=1e-12)


def test_soft_nms_decays_instead_of_removing():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    kept, kept_scores = cvops.soft_nms(boxes, scores, method="linear", iou_threshold=0.3)
    iou = 90 / 110
    assert kept.tolist() == [0, 2, 1]
    torch.testing.assert_close(kept_scores, torch.tensor([0.9, 0.7, 0.8 * (1 - iou)]))


# ---- the NaN / inf / degenerate policy (cvops/ops/nms.py) ----------------------------------------------


def policy_case(dtype=torch.float64, device="cpu"):
    nan, inf = math.nan, math.inf
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],  # 0: kept
            [1, 1, 10, 10],  # 1: suppressed by 0
            [0, 0, 10, 10],  # 2: NaN score: dropped, suppresses nothing
            [nan, 0, 10, 10],  # 3: NaN coordinate: kept, overlaps nothing
            [0, 0, inf, 10],  # 4: infinite coordinate: kept, overlaps nothing
            [10, 10, 0, 0],  # 5: degenerate (x2 < x1): kept, overlaps nothing
            [5, 5, 5, 15],  # 6: zero width: kept
        ],
        dtype=dtype,
        device=device,
    )
    scores = torch.tensor([0.5, 0.4, nan, 0.9, 0.8, 0.7, 0.6], dtype=dtype, device=device)
    return boxes, scores


@pytest.mark.parametrize("device", devices())
def test_nan_inf_and_degenerate_policy(device):
    boxes, scores = policy_case(device=device)
    assert cvops.nms(boxes, scores, 0.1).tolist() == [3, 4, 5, 6, 0]
    assert cvops.batched_nms(boxes, scores, torch.zeros(7, dtype=torch.long, device=device), 0.1).tolist() == [
        3,
        4,
        5,
        6,
        0,
    ]
    out = cvops.multiclass_nms(boxes[None], scores[None, :, None], iou_threshold=0.1, score_threshold=0.0)
    assert out[3][0, :5].tolist() == [3, 4, 5, 6, 0] and int(out[4][0]) == 5
    assert torch.isnan(out[0][0, 0, 0])  # the box as given, not its replacement
    kept, _ = cvops.soft_nms(boxes, scores, method="linear", iou_threshold=0.1)
    assert kept.tolist() == [3, 4, 5, 6, 0, 1]  # 1 is decayed, not removed
    nan = torch.full_like(scores, math.nan)
    assert cvops.nms(boxes, nan, 0.5).numel() == 0
    assert cvops.batched_nms(boxes, nan, torch.arange(7, device=device), 0.5).numel() == 0
    assert cvops.soft_nms(boxes, nan)[0].numel() == 0
    assert int(cvops.multiclass_nms(boxes[None], nan[None, :, None], iou_threshold=0.5)[4][0]) == 0


# ---- dtypes, layouts, inputs not mutated --------------------------------------------------------------


def test_reduced_precision_computes_in_float32():
    boxes, scores = boxes_like("clustered", 300, torch.float16), scores_for(300, dtype=torch.float16)
    want = cvops.nms(boxes.float(), scores.float(), 0.5)
    assert torch.equal(cvops.nms(boxes, scores, 0.5), want)
    out = cvops.multiclass_nms(boxes[None], scores[None, :, None], iou_threshold=0.5)
    assert out[0].dtype == torch.float16 and out[1].dtype == torch.float16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(cvops.nms(boxes.float(), scores.float(), 0.5), want)


def test_non_contiguous_inputs_and_no_mutation():
    boxes = boxes_like("clustered", 200)
    scores = scores_for(200)
    wide = torch.stack([boxes, boxes], -1).view(200, 8)[:, ::2]  # same values, strided
    assert not wide.is_contiguous()
    keep = cvops.nms(wide, scores, 0.5)
    torch.testing.assert_close(keep, tv.nms(boxes, scores, 0.5))
    before = (boxes.clone(), scores.clone())
    cvops.nms(boxes, scores, 0.5)
    cvops.soft_nms(boxes, scores)
    cvops.multiclass_nms(boxes[None], scores[None, :, None], iou_threshold=0.5)
    assert torch.equal(boxes, before[0]) and torch.equal(scores, before[1])


def test_empty_inputs():
    empty, none = torch.zeros(0, 4), torch.zeros(0)
    assert cvops.nms(empty, none, 0.5).shape == (0,)
    assert cvops.batched_nms(empty, none, torch.zeros(0, dtype=torch.long), 0.5).dtype == torch.long
    kept, kept_scores = cvops.soft_nms(empty, none)
    assert kept.shape == (0,) and kept_scores.shape == (0,)


# ---- opcheck and torch.compile -------------------------------------------------------------------------


def test_opcheck():
    boxes, scores = boxes_like("clustered", 50, torch.float32), scores_for(50, dtype=torch.float32)
    idxs = torch.randint(0, 3, (50,))
    ops = torch.ops.cvops
    torch.library.opcheck(ops.nms.default, (boxes, scores, 0.5))
    torch.library.opcheck(ops.batched_nms.default, (boxes, scores, idxs, 0.5))
    torch.library.opcheck(ops.soft_nms.default, (boxes, scores, 0.5, 0.3, 0.01, "linear"))
    b, s = detector_output(2, 30, 3, dtype=torch.float32)
    torch.library.opcheck(ops.multiclass_nms.default, (b, s, 0.5, 0.1, 5, 8, False))


def test_multiclass_nms_compiles_without_graph_breaks():
    boxes, scores = detector_output(2, 100, 3, dtype=torch.float32)

    def postprocess(boxes, scores):
        out_boxes, out_scores, classes, indices, num_valid = cvops.multiclass_nms(
            boxes * 2, scores.sigmoid(), iou_threshold=0.5, max_per_class=10, max_total=20
        )
        return out_boxes.sum(-1), out_scores, classes, num_valid

    compiled = torch.compile(postprocess, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(boxes, scores), postprocess(boxes, scores)):
        torch.testing.assert_close(got, want)


# torch's config.patch restores the setting; monkeypatch's setattr/delattr leaves dynamo's config
# module without the name for the tests that run after.
@torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True)
def test_nms_compiles_with_dynamic_output():
    boxes, scores = boxes_like("clustered", 100, torch.float32), scores_for(100, dtype=torch.float32)

    idxs = torch.randint(0, 3, (100,))

    def keep_boxes(boxes, scores):
        soft, soft_scores = cvops.soft_nms(boxes, scores, method="linear")
        return (boxes[cvops.nms(boxes, scores, 0.5)], cvops.batched_nms(boxes, scores, idxs, 0.5), soft, soft_scores)

    compiled = torch.compile(keep_boxes, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(boxes, scores), keep_boxes(boxes, scores)):
        torch.testing.assert_close(got, want)


# ---- bad input -------------------------------------------------------------------------------------------

B4, S = torch.rand(5, 4), torch.rand(5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cvops.nms(torch.rand(5, 3), S, 0.5), r"cvops.nms: boxes must have shape \[n, 4\]"),
        (lambda: cvops.nms(B4, torch.rand(4), 0.5), "cvops.nms: scores must have one value per box"),
        (lambda: cvops.nms(B4, torch.randint(0, 5, (5,)), 0.5), "cvops.nms: scores must be a floating-point"),
        (lambda: cvops.nms(B4, S.double(), 0.5), r"cvops.nms: scores must have the dtype of boxes \(Float\)"),
        (lambda: cvops.nms(B4, S, math.nan), "cvops.nms: iou_threshold must be a number, got nan"),
        (lambda: cvops.soft_nms(B4, S, iou_threshold=-0.1), "cvops.soft_nms: iou_threshold must be a number >= 0"),
        (lambda: torch.ops.cvops.nms(None, S, 0.5), "cvops.nms: boxes must be a tensor, got None"),
        (
            lambda: cvops.batched_nms(B4, S, torch.tensor([0.0, 1, math.nan, 1, 0]), 0.5),
            "cvops.batched_nms: idxs must not hold NaN",
        ),
        (
            lambda: cvops.multiclass_nms(torch.rand(2, 5, 4), torch.rand(2, 5, 3).double(), iou_threshold=0.5),
            r"cvops.multiclass_nms: scores must have the dtype of boxes \(Float\), got Double",
        ),
        (
            lambda: cvops.multiclass_nms(torch.rand(2, 5, 4), torch.rand(2, 5, 3), iou_threshold=0.5, max_total=2**40),
            r"cvops.multiclass_nms: max_total = 1099511627776 asks for 2 x 1099511627776 padded detections "
            r"\([\d.]+ GiB\), more than this machine's memory",
        ),
        (
            lambda: cvops.batched_nms(B4, S, torch.zeros(4, dtype=torch.long), 0.5),
            r"cvops.batched_nms: idxs must have shape \[n\]",
        ),
        (
            lambda: cvops.batched_nms(B4, S, torch.zeros(5, dtype=torch.complex64), 0.5),
            r"cvops.batched_nms: idxs must be a tensor of category ids \(integer or floating\)",
        ),
        (
            lambda: cvops.multiclass_nms(torch.rand(2, 5, 3), torch.rand(2, 5, 3), iou_threshold=0.5),
            "cvops.multiclass_nms: boxes must have shape",
        ),
        (
            lambda: cvops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 5, 3), iou_threshold=0.5),
            "cvops.multiclass_nms: boxes .* do not match scores",
        ),
        (
            lambda: cvops.multiclass_nms(torch.rand(2, 5, 2, 4), torch.rand(2, 5, 3), iou_threshold=0.5),
            "do not match scores",
        ),
        (
            lambda: cvops.multiclass_nms(torch.rand(2, 5, 4), torch.rand(2, 5), iou_threshold=0.5),
            r"scores must have shape \[B, N, C\]",
        ),
        (
            lambda: cvops.multiclass_nms(torch.rand(2, 5, 4), torch.rand(2, 5, 3), iou_threshold=0.5, max_total=0),
            "max_total must be an int >= 1",
        ),
        (
            lambda: cvops.multiclass_nms(torch.rand(2, 5, 4), torch.rand(2, 5, 3), iou_threshold=0.5, max_per_class=0),
            "max_per_class must be an int >= 1",
        ),
        (
            lambda: cvops.multiclass_nms(torch.rand(2, 5, 4), torch.rand(2, 5, 3), iou_threshold=0.5, max_total=2.5),
            "max_total must be an int >= 1, got 2.5",
        ),
        (
            lambda: cvops.multiclass_nms(
                torch.rand(2, 5, 4), torch.rand(2, 5, 3), iou_threshold=0.5, score_threshold=math.nan
            ),
            "score_threshold must be a number",
        ),
        (lambda: cvops.soft_nms(B4, S, method="hard"), "cvops.soft_nms: method must be one of"),
        (lambda: cvops.soft_nms(B4, S, sigma=0.0), "cvops.soft_nms: sigma must be > 0"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((RuntimeError, ValueError), match=match):
        call()


# ---- torchvision's calling conventions ---------------------------------------------------------------------


def test_empty_boxes_as_torchvision_writes_them():
    empty = torch.empty((0,))
    got = cvops.batched_nms(empty, empty, torch.empty((0,), dtype=torch.int64), 0.5)
    want = tv.batched_nms(empty, empty, torch.empty((0,), dtype=torch.int64), 0.5)
    assert got.shape == want.shape == (0,) and got.dtype == want.dtype == torch.int64
    assert cvops.nms(empty, empty, 0.5).shape == (0,)


def test_batched_nms_float_category_ids():
    g = torch.Generator().manual_seed(11)
    boxes, scores = random_boxes(400, g), torch.rand(400, generator=g, dtype=torch.float64)
    idxs = torch.randint(0, 5, (400,), generator=g)
    want = tv.batched_nms(boxes, scores, idxs, 0.5)
    for dtype in (torch.float32, torch.float64, torch.float16):  # whole numbers stored as floats
        assert torch.equal(cvops.batched_nms(boxes, scores, idxs.to(dtype), 0.5), want)
    # Fractional ids: each distinct value is one category.
    fractional = idxs.double() / 3 - 0.5
    assert torch.equal(cvops.batched_nms(boxes, scores, fractional, 0.5), want)
    assert torch.equal(
        cvops.batched_nms(boxes, scores, idxs.bool(), 0.5), tv.batched_nms(boxes, scores, idxs.bool().long(), 0.5)
    )


@pytest.mark.parametrize("threshold", [-0.1, -1.0, -math.inf])
def test_negative_iou_threshold_keeps_one_box_per_category(threshold):
    g = torch.Generator().manual_seed(12)
    boxes, scores = random_boxes(300, g), torch.rand(300, generator=g, dtype=torch.float64)
    idxs = torch.randint(0, 7, (300,), generator=g)
    assert torch.equal(cvops.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))
    got = cvops.batched_nms(boxes, scores, idxs, threshold)
    # torchvision's per-class path; its coordinate-offset path (used below 4000 CPU boxes) gives boxes
    # of other categories IoU 0 > threshold, so there a negative threshold suppresses across categories.
    assert torch.equal(got, tv_boxes._batched_nms_vanilla(boxes, scores, idxs, threshold))
    assert len(got) == 7 and set(idxs[got].tolist()) == set(range(7))
    scores[5] = math.nan  # never kept
    assert 5 not in cvops.batched_nms(boxes, scores, idxs, threshold).tolist()


# ---- CUDA --------------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("n", [1, 63, 64, 65, 4000])
def test_cuda_nms_sizes_match_cpu(n):
    boxes, scores = boxes_like("clustered", n, torch.float32), scores_for(n, tied=True, dtype=torch.float32)
    idxs = torch.randint(0, 7, (n,))
    torch.testing.assert_close(cvops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), cvops.nms(boxes, scores, 0.5))
    torch.testing.assert_close(
        cvops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu(),
        cvops.batched_nms(boxes, scores, idxs, 0.5),
    )


@pytest.mark.cuda
def test_cuda_multiclass_nms_large_matches_cpu():
    boxes, scores = detector_output(4, 3000, 20, dtype=torch.float32, seed=5)
    kwargs = dict(iou_threshold=0.5, score_threshold=0.05, max_per_class=100, max_total=300)
    assert_same_detections(
        cvops.multiclass_nms(boxes.cuda(), scores.cuda(), **kwargs), cvops.multiclass_nms(boxes, scores, **kwargs)
    )


@pytest.mark.cuda
def test_cuda_nms_many_chunks_and_all_nan():
    boxes, scores = boxes_like("uniform", 60_000, torch.float32), distinct_scores(60_000, torch.float32)
    torch.testing.assert_close(cvops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), cvops.nms(boxes, scores, 0.5))
    nan = torch.full((100,), math.nan, device="cuda")
    assert cvops.nms(boxes[:100].cuda(), nan, 0.5).numel() == 0
    assert cvops.soft_nms(boxes[:100].cuda(), nan)[0].numel() == 0


@pytest.mark.cuda
@pytest.mark.parametrize("per_class, class_agnostic, C", [(False, False, 1), (True, False, 3), (False, True, 4)])
def test_cuda_multiclass_nms_many_survivors(per_class, class_agnostic, C):
    # Tiny scattered boxes: almost every candidate survives, past the kernel's shared-memory cache.
    g = torch.Generator().manual_seed(0)
    boxes = boxes_like("tiny", 2 * 3000 * (C if per_class else 1), torch.float32, generator=g) * 100
    boxes = boxes.view(2, 3000, C, 4) if per_class else boxes.view(2, 3000, 4)
    scores = torch.rand(2, 3000, C, generator=g)
    kwargs = dict(
        iou_threshold=0.5, score_threshold=0.1, max_per_class=2000, max_total=2500, class_agnostic=class_agnostic
    )
    assert_same_detections(
        cvops.multiclass_nms(boxes.cuda(), scores.cuda(), **kwargs), cvops.multiclass_nms(boxes, scores, **kwargs)
    )


@pytest.mark.cuda
def test_cuda_multiclass_nms_in_a_cuda_graph():
    boxes, scores = detector_output(2, 500, 4, dtype=torch.float32)
    boxes, scores = boxes.cuda(), scores.cuda()
    run = lambda: cvops.multiclass_nms(boxes, scores, iou_threshold=0.5, max_total=50)  # noqa: E731
    want = run()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    graph.replay()
    torch.cuda.synchronize()
    assert_same_detections(captured, want)
