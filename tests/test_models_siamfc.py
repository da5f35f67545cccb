"""SiamFC (cvops.models.siamfc): the network's shapes, the balanced logistic loss, a training step,
the tracker on a generated sequence (cvops.demos.siamfc) with the fixed LocalNormEmbedding, its
batched scales, the OTB-style measures against hand-computed cases, bad input and the demo."""

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference.xcorr
from cvops.models.siamfc import (
    LocalNormEmbedding,
    SiamFC,
    SiamFCLoss,
    SiamFCTracker,
    balance_weights,
    center_error,
    crop_and_resize,
    iou,
    logistic_labels,
    precision_at,
    success_auc,
    success_curve,
    track,
    train_step,
)

needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None, reason="the generated sequence uses scikit-image's pictures"
)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return SiamFC().eval()


@pytest.fixture(scope="module")
def still():
    """Two frames of smoothed colour noise and a box: the tracker's mechanics without pictures."""
    generator = torch.Generator().manual_seed(3)
    noise = torch.rand(1, 3, 30, 40, generator=generator) * 255
    frame = F.interpolate(noise, size=(240, 320), mode="bicubic", align_corners=False)[0].clamp(0, 255)
    frame = frame.round().to(torch.uint8).permute(1, 2, 0).numpy()
    return [frame, np.roll(frame, (3, -4), axis=(0, 1))], (140.0, 100.0, 50.0, 40.0)


@pytest.fixture(scope="module")
def sequence():
    from cvops.demos.siamfc import make_sequence

    return make_sequence(80, seed=0)


def test_shapes_and_head(network):
    z, x = torch.rand(1, 3, 127, 127) * 255, torch.rand(2, 3, 255, 255) * 255
    with torch.no_grad():
        fz, fx = network.embed(z), network.embed(x)
        assert fz.shape == (1, 256, 6, 6) and fx.shape == (2, 256, 22, 22)
        response = network(z, x)  # one exemplar against both search images
        assert response.shape == (2, 1, 17, 17)
        torch.testing.assert_close(response, reference.xcorr.xcorr(fx, fz) * 0.001, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(network(z.expand(2, -1, -1, -1), x), response, rtol=1e-4, atol=1e-6)
    assert {name for name, _ in network.named_buffers()} >= {"out_scale", "out_bias"}
    assert all("out_" not in name for name, _ in network.named_parameters())


def test_learned_adjustment_gets_gradients():
    torch.manual_seed(0)
    model = SiamFC(learn_adjust=True)
    model(torch.rand(1, 3, 127, 127), torch.rand(1, 3, 255, 255)).sum().backward()
    assert model.out_scale.grad is not None and model.out_bias.grad == 17 * 17
    assert model.backbone[0].weight.grad.abs().sum() > 0
    assert "learn_adjust=True" in repr(model)


def test_labels_and_balance():
    labels = logistic_labels(17)  # r_pos 16 px at stride 8: city-block distance ≤ 2 cells
    rows, cols = torch.nonzero(labels == 1, as_tuple=True)
    assert len(rows) == 13 and set(torch.unique(labels).tolist()) == {0.0, 1.0}
    assert ((rows - 8).abs() + (cols - 8).abs()).max() == 2 and labels[8, 8] == 1 and labels[8, 11] == 0
    ring = logistic_labels((9, 11), r_pos=8, r_neg=24)  # 1 cell positive, < 3 cells ignored
    assert ring[4, 5] == 1 and ring[4, 7] == 0.5 and ring[4, 8] == 0 and ring[0, 0] == 0

    weights = balance_weights(labels.expand(2, 1, 17, 17))
    torch.testing.assert_close(weights[labels.expand(2, 1, 17, 17) == 1].sum(), torch.tensor(0.5))
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    assert float(weights[0, 0, 8, 8]) == pytest.approx(0.5 / 26)
    assert float(weights[1, 0, 0, 0]) == pytest.approx(0.5 / (2 * (289 - 13)))
    weighted = balance_weights(labels, neg_weight=3.0)
    torch.testing.assert_close(weighted[labels == 0].sum(), torch.tensor(0.75))

    loss = SiamFCLoss()
    c = 0.7  # constant logits: ½·softplus(−c) over the positives + ½·softplus(c) over the negatives
    got = loss(torch.full((2, 1, 17, 17), c))
    torch.testing.assert_close(got, torch.tensor(0.5 * math.log1p(math.exp(-c)) + 0.5 * math.log1p(math.exp(c))))
    perfect = torch.where(labels == 1, 20.0, -20.0).expand(3, 1, 17, 17)
    assert loss(perfect) < 1e-8


def test_train_step_lowers_the_loss():
    torch.manual_seed(0)
    model = SiamFC()
    # A smaller search image keeps it quick: 191 → 14×14 features, a 9×9 response.
    z, x = torch.rand(1, 3, 127, 127) * 255, torch.rand(1, 3, 191, 191) * 255
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    history = [train_step(model, optimizer, z, x) for _ in range(3)]
    assert history[-1] < 0.9 * history[0], history


def test_local_norm_embedding():
    embed = LocalNormEmbedding()
    assert embed.total_stride == 8
    features = embed(torch.rand(2, 3, 255, 255) * 255)
    assert features.shape == (2, 48, 31, 31) and embed(torch.rand(1, 3, 127, 127)).shape == (1, 48, 15, 15)
    torch.testing.assert_close(features.mean(dim=1), torch.zeros(2, 31, 31), atol=1e-6, rtol=0)
    assert 0.95 < float(features.norm(dim=1).min()) and float(features.norm(dim=1).max()) <= 1
    flat = embed(torch.full((1, 3, 64, 64), 117.0))
    assert flat.abs().max() < 1e-5  # average-colour padding contributes nothing
    # Brightness and contrast change a cell's norm (through eps) but not its direction.
    image = torch.rand(1, 3, 64, 64) * 100
    cosine = torch.nn.functional.cosine_similarity(embed(image * 2 + 30), embed(image), dim=1)
    assert float(cosine.min()) > 1 - 1e-5


def test_crop_and_resize():
    image = torch.rand(3, 20, 30) * 255
    fill = torch.tensor([1.0, 2.0, 3.0])
    same = crop_and_resize(image, (15.0, 10.0), [20.0], 20, fill)  # the middle 20×20, pixel for pixel
    torch.testing.assert_close(same[0], image[:, :, 5:25], rtol=0, atol=1e-3)
    outside = crop_and_resize(image, (-50.0, -50.0), [10.0, 12.0], 8, fill)
    assert outside.shape == (2, 3, 8, 8) and torch.equal(outside, fill.view(1, 3, 1, 1).expand(2, 3, 8, 8))
    half = crop_and_resize(image, (0.0, 10.0), [20.0], 20, fill)[0]  # left half padded
    torch.testing.assert_close(half[:, :, 10:], image[:, :, :10], rtol=0, atol=1e-3)
    assert torch.equal(half[:, :, :9], fill.view(3, 1, 1).expand(3, 20, 9))


@needs_skimage
def test_tracker_follows_the_target(sequence):
    frames, truth = sequence
    embed = LocalNormEmbedding()
    # context 0: every exemplar cell counts alike in this fixed embedding, and with SiamFC's 0.5 the
    # static background (¾ of the exemplar) outvotes the moving target.
    predicted = track(SiamFCTracker(embed, total_stride=embed.total_stride, context=0.0), frames, truth[0].tolist())
    ious = iou(predicted, truth)
    auc, precision = success_auc(ious), precision_at(center_error(predicted, truth), 20)
    print(f"success AUC {auc:.3f}, precision@20 {precision:.3f}, lowest IoU {float(ious.min()):.3f}")
    assert bool((ious > 0.5).all()), ious
    assert auc > 0.8 and precision == 1.0


@needs_skimage
def test_sequence_is_smooth_and_on_real_pictures(sequence):
    frames, truth = sequence
    assert frames.shape == (80, 400, 600, 3) and frames.dtype == np.uint8 and truth.shape == (80, 4)
    centres = truth[:, :2] + truth[:, 2:] / 2
    assert (centres[1:] - centres[:-1]).norm(dim=1).max() < 12
    growth = (truth[1:, 2] / truth[:-1, 2]).log().abs()
    assert growth.max() < 0.02 and 0.2 < float((truth[:, 2].max() / truth[:, 2].min()).log()) < 0.35
    assert (truth[:, 2] / truth[:, 3]).std() < 1e-9  # the aspect stays
    assert (truth[:, :2] >= 0).all() and (truth[:, 0] + truth[:, 2] <= 600).all()
    assert (truth[:, 1] + truth[:, 3] <= 400).all()


@pytest.mark.parametrize("embedding", ["siamfc", "local_norm"])
def test_batched_scales_equal_per_scale_forwards(still, network, embedding):
    frames, box = still
    embed = network.embed if embedding == "siamfc" else LocalNormEmbedding()
    calls = []

    def counted(images):
        calls.append(images.shape[0])
        return embed(images)

    tracker = SiamFCTracker(counted, context=0.0 if embedding == "local_norm" else 0.5)
    tracker.init(frames[0], box)
    crops = tracker.search_crops(frames[1])
    assert crops.shape == (3, 3, 255, 255)
    batched = tracker.responses(crops)
    singles = torch.cat([tracker.responses(crops[k : k + 1]) for k in range(3)])
    assert batched.shape == (3, 1, 17, 17)
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-4 * float(singles.abs().max()))
    with torch.no_grad():
        want = reference.xcorr.xcorr(embed(crops), tracker.kernel)
    torch.testing.assert_close(batched, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    calls.clear()
    tracker.update(frames[1])
    assert calls == [3]  # the three scales in one forward


def test_tracker_scales_and_window(still):
    frames, box = still
    tracker = SiamFCTracker(LocalNormEmbedding(), context=0.0)
    torch.testing.assert_close(tracker.scale_factors, torch.tensor([1 / 1.0375, 1.0, 1.0375], dtype=torch.float64))
    assert tracker.window.shape == (272, 272) and float(tracker.window.sum()) == pytest.approx(1.0)
    tracker.init(frames[0], box)
    x, y, w, h = box
    assert tracker.z_size == pytest.approx(math.sqrt(w * h)) and tracker.x_size == pytest.approx(
        tracker.z_size * 255 / 127
    )
    assert tracker.update(frames[0]) == pytest.approx((x, y, w, h), abs=0.6)  # a still frame: the box stays
    # The frame shifted by (−4, +3) pixels (x, y): the box follows, its size stays.
    assert tracker.update(frames[1]) == pytest.approx((x - 4, y + 3, w, h), abs=0.6)


def test_evaluation_hand_computed():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [2.0, 3.0, 4.0, 6.0]])
    b = torch.tensor([[5.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 5.0, 5.0], [5.0, 7.0, 4.0, 6.0]])
    torch.testing.assert_close(iou(a, b), torch.tensor([50 / 150, 1.0, 0.0, 1 * 2 / (48 - 2)], dtype=torch.float64))
    torch.testing.assert_close(
        center_error(a, b), torch.tensor([5.0, 0.0, math.hypot(17.5, 2.5), 5.0], dtype=torch.float64)
    )
    ious = torch.tensor([0.0, 0.32, 0.51, 0.97])
    curve = success_curve(ious)  # thresholds 0, 0.05, …, 1; success is IoU > threshold
    assert curve.shape == (21,) and curve[0] == 0.75 and curve[7] == 0.5 and curve[11] == 0.25 and curve[20] == 0
    assert success_auc(ious) == pytest.approx((20 + 11 + 7 + 0) / (4 * 21))
    assert success_curve(ious, [0.5]).tolist() == [0.5]
    assert precision_at(torch.tensor([0.0, 5.0, 20.0, 20.5, 100.0]), 20) == pytest.approx(3 / 5)
    assert precision_at([1.0, 30.0]) == 0.5


@needs_skimage
def test_demo_writes_the_plots(tmp_path, capsys):
    from cvops.demos.siamfc import main

    main([str(tmp_path), "--frames", "8"])
    assert (tmp_path / "success.png").stat().st_size > 0 and (tmp_path / "frames.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "success AUC" in out and "precision@20" in out


# ---------------------------------------------------------------------------- bad input


def _still_frame():
    return np.zeros((40, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: SiamFCTracker(None), r"cvops.SiamFCTracker: embed must be callable"),
        (lambda: SiamFCTracker(LocalNormEmbedding(), scale_num=2), r"cvops.SiamFCTracker: scale_num must be odd"),
        (lambda: SiamFCTracker(LocalNormEmbedding(), scale_num=0), r"cvops.SiamFCTracker: scale_num must be an int"),
        (
            lambda: SiamFCTracker(LocalNormEmbedding(), instance_size=100),
            r"cvops.SiamFCTracker: instance_size must be ≥ exemplar_size \(127\)",
        ),
        (
            lambda: SiamFCTracker(LocalNormEmbedding(), scale_penalty=1.5),
            r"cvops.SiamFCTracker: scale_penalty must be a number in \(0.0, 1.0\]",
        ),
        (
            lambda: SiamFCTracker(LocalNormEmbedding(), window_influence=float("nan")),
            r"cvops.SiamFCTracker: window_influence must be a number in \[0.0, 1.0\]",
        ),
        (lambda: SiamFCTracker(LocalNormEmbedding(), context=-1), r"cvops.SiamFCTracker: context must be a number"),
        (lambda: SiamFCTracker(LocalNormEmbedding(), total_stride=0), r"cvops.SiamFCTracker: total_stride must be"),
        (lambda: SiamFCTracker(LocalNormEmbedding()).update(_still_frame()), r"call init\(frame, box\) before"),
        (
            lambda: SiamFCTracker(LocalNormEmbedding()).init(torch.zeros(3, 40, 40), (1, 1, 5, 5)),
            r"cvops.SiamFCTracker: frame must be an HWC uint8 RGB numpy array",
        ),
        (
            lambda: SiamFCTracker(LocalNormEmbedding()).init(_still_frame(), (1, 1, 0, 5)),
            r"cvops.SiamFCTracker: box must have a positive width and height",
        ),
        (
            lambda: track(SiamFCTracker(LocalNormEmbedding(cell=5)), [_still_frame()] * 2, (10, 10, 8, 8)),
            r"cvops.SiamFCTracker: the embedding gives a \(14, 14\) response, but response_size is 17",
        ),
        (lambda: SiamFC(out_scale=0), r"cvops.SiamFC: out_scale must be a number in \(0.0, inf\)"),
        (lambda: SiamFC(learn_adjust=1), r"cvops.SiamFC: learn_adjust must be True or False"),
        (lambda: SiamFC().embed(torch.zeros(1, 3, 80, 80)), r"cvops.SiamFC: img must be images \[N, 3, H, W\]"),
        (lambda: LocalNormEmbedding(cell=0), r"cvops.LocalNormEmbedding: cell must be an int >= 1"),
        (lambda: LocalNormEmbedding(eps=0), r"cvops.LocalNormEmbedding: eps must be a number"),
        (lambda: LocalNormEmbedding()(torch.zeros(1, 3, 4, 4)), r"cvops.LocalNormEmbedding: img must be images"),
        (lambda: SiamFCLoss(total_stride=0), r"cvops.SiamFCLoss: total_stride must be an int >= 1"),
        (lambda: SiamFCLoss()(torch.zeros(17, 17)), r"cvops.SiamFCLoss: responses must be float logits"),
        (lambda: iou(torch.zeros(3, 4), torch.zeros(2, 4)), r"cvops.iou: boxes_a and boxes_b must have the same"),
        (lambda: iou(torch.zeros(3, 2), torch.zeros(3, 2)), r"cvops.iou: boxes_a must be \(x, y, w, h\) boxes"),
        (lambda: success_curve([]), r"cvops.success_curve: ious must hold at least one frame"),
        (lambda: precision_at([]), r"cvops.precision_at: center_errors must hold at least one frame"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_module_is_listed():
    import cvops.models

    assert "siamfc" in cvops.models.__all__ and cvops.models.siamfc.SiamFC is SiamFC
