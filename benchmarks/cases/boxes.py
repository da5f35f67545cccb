"""boxes family: cvops.box_iou against torchvision.ops (which builds N×M×2 temporaries)."""

import torch
import torchvision.ops as tv

import cvops
from benchmarks.cases import Case

PEERS = {"iou": tv.box_iou, "giou": tv.generalized_box_iou, "ciou": tv.complete_box_iou}
SIZES = [(1000, 1000), (4000, 4000)]


def random_boxes(n, device, seed):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 1000
    return torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 200 + 1], 1).to(device)


def iou_case(kind, n, m, device):
    def build():
        a, b = random_boxes(n, device, 0), random_boxes(m, device, 1)
        return (lambda: PEERS[kind](a, b)), (lambda: cvops.box_iou(a, b, kind=kind))

    return Case(
        f"box_iou {kind}",
        f"{n}x{m}",
        device,
        f"torchvision.ops.{PEERS[kind].__name__}",
        build,
        peak_memory=True,
        quick=(kind == "iou" and n == 4000),
        bytes_moved=4 * n * m,
    )


def cases(device):
    return [iou_case(kind, n, m, device) for kind in PEERS for n, m in SIZES]
