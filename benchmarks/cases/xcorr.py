"""xcorr family: cvops.xcorr against the grouped-conv2d trick Siamese trackers use (reference/xcorr.py):
SiamFC's full correlation (8 pairs of 256×6×6 over 256×22×22, and 1 template × 3 scales) and
SiamRPN++'s depthwise one (32 × 256 channels, 5×5 over 29×29), forward and forward+backward; and a
whole SiamFC tracker update (3 scales through the backbone, then the correlation) on a 480×640 frame."""

from unittest import mock

import numpy as np
import torch

import cvops
import reference.xcorr as ref
from benchmarks.cases import Case

# (mode, B, Bz, C, H, h): search H×H, template h×h.
SHAPES = [
    ("full", 8, 8, 256, 22, 6),  # SiamFC training pairs
    ("full", 3, 1, 256, 22, 6),  # SiamFC inference: one template, three scales
    ("depthwise", 32, 32, 256, 29, 5),  # SiamRPN++ depthwise correlation
]


def inputs(B, Bz, C, H, h, device, grad):
    gen = torch.Generator().manual_seed(B + C + H)
    x = torch.randn(B, C, H, H, generator=gen).to(device).requires_grad_(grad)
    z = torch.randn(Bz, C, h, h, generator=gen).to(device).requires_grad_(grad)
    return x, z


def step(fn, x, z, mode, backward):
    """A closure: the response (forward), or dz after forward+backward of a weighted sum."""
    if not backward:
        return lambda: fn(x, z, mode=mode)
    weights = torch.randn(fn(x, z, mode=mode).shape, generator=torch.Generator().manual_seed(3)).to(x.device)

    def fwd_bwd():
        x.grad = z.grad = None
        (fn(x, z, mode=mode) * weights).sum().backward()
        return z.grad

    return fwd_bwd


def xcorr_case(mode, B, Bz, C, H, h, device, backward):
    def build():
        x, z = inputs(B, Bz, C, H, h, device, backward)
        return step(ref.xcorr, x, z, mode, backward), step(cvops.xcorr, x, z, mode, backward)

    out = H - h + 1
    return Case(
        f"xcorr {mode}{' fwd+bwd' if backward else ''}",
        f"{B}x{C}x{H}x{H} by {Bz}x{C}x{h}x{h}",
        device,
        "grouped conv2d",
        build,
        quick=(mode == "full" and B == 8),
        bytes_moved=4 * (B * C * H * H + Bz * C * h * h + B * (1 if mode == "full" else C) * out * out),
    )


def tracker_case(device):
    """One SiamFCTracker.update (random-init SiamFC, eval mode): the peer is the same update with the
    grouped-conv2d correlation swapped in."""
    from cvops.models.siamfc import SiamFC, SiamFCTracker

    def build():
        torch.manual_seed(0)
        model = SiamFC().to(device).eval()
        frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        trackers = []
        for _ in range(2):
            tracker = SiamFCTracker(model.embed)
            with torch.no_grad():
                tracker.init(frame, (300.0, 200.0, 60.0, 80.0))
            trackers.append(tracker)

        def update(tracker):
            with torch.no_grad():
                return torch.tensor(tracker.update(frame))

        def peer():
            with mock.patch.object(cvops, "xcorr", ref.xcorr):
                return update(trackers[0])

        return peer, lambda: update(trackers[1])

    return Case("SiamFC tracker update", "3 scales, 480x640 frame", device, "same, grouped conv2d", build, rtol=1e-2)


def cases(device):
    return [xcorr_case(*shape, device, backward) for shape in SHAPES for backward in (False, True)] + [
        tracker_case(device)
    ]
