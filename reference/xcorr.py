"""Reference Siamese cross-correlation: the grouped-conv2d trick of SiamFC / SiamRPN++ (the search
batch folded into channels, one group per image, or per image and channel). The tests and
benchmarks compare cvops.xcorr to this."""

import torch.nn.functional as F


def xcorr(x, z, *, mode="full", scale=None, bias=None, padding=0):
    """x [B, C, H, W] by z [B, C, h, w] (or [1, C, h, w], one template for every b): "full" →
    [B, 1, H', W'], "depthwise" → [B, C, H', W'], H' = H + 2·padding − h + 1; then ·scale + bias
    (a scalar tensor, or [C] in depthwise mode)."""
    batch, channels, height, width = x.shape
    z = z.expand(batch, -1, -1, -1)
    folded = x.reshape(1, batch * channels, height, width)
    if mode == "full":
        out = F.conv2d(folded, z, padding=padding, groups=batch)
    elif mode == "depthwise":
        out = F.conv2d(folded, z.reshape(batch * channels, 1, *z.shape[2:]), padding=padding, groups=batch * channels)
    else:
        raise ValueError(f"reference xcorr: mode must be 'full' or 'depthwise', got {mode!r}")
    out = out.view(batch, -1, *out.shape[2:])
    if scale is not None:
        out = out * (scale.view(1, -1, 1, 1) if scale.dim() == 1 else scale)
    if bias is not None:
        out = out + (bias.view(1, -1, 1, 1) if bias.dim() == 1 else bias)
    return out
