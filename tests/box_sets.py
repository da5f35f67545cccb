"""Generated box sets shared by the boxes and nms tests: the cases a detector meets."""

import torch


def boxes_like(kind, n, dtype=torch.float64, device="cpu", generator=None):
    """xyxy boxes: uniform, clustered around a few objects (the detector case), duplicated, tiny, huge."""
    g = generator or torch.Generator().manual_seed(n)
    rand = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    if kind == "uniform":
        xy, wh = rand(n, 2) * 1000, rand(n, 2) * 200 + 1
    elif kind == "clustered":
        centers = rand(5, 2) * 1000
        xy = centers[torch.randint(0, 5, (n,), generator=g)] + torch.randn(n, 2, generator=g, dtype=torch.float64) * 10
        wh = 50 + torch.randn(n, 2, generator=g, dtype=torch.float64).abs() * 10
    elif kind == "duplicates":
        base = rand(max(n // 4, 1), 2) * 100  # each box about four times
        xy, wh = base.repeat(n // len(base) + 1, 1)[:n], torch.full((n, 2), 20.0, dtype=torch.float64)
    elif kind == "tiny":
        xy, wh = rand(n, 2) * 10, rand(n, 2) * 1e-3 + 1e-4
    else:  # huge
        xy, wh = rand(n, 2) * 1e5, rand(n, 2) * 1e5 + 1
    return torch.cat([xy, xy + wh], -1).to(device=device, dtype=dtype)


SETS = ["uniform", "clustered", "duplicates", "tiny", "huge"]


def random_boxes(n, generator, dtype=torch.float64, spread=100.0, size=30.0):
    """n uniform xyxy boxes: corners in [0, spread)², sides in [1, size + 1)."""
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * spread
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size + 1
    return torch.cat([xy, xy + wh], -1).to(dtype)
