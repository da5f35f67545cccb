"""Reference locally connected layer: F.unfold + einsum, what users write without an op for it. The
tests and benchmarks compare cvops.locally_connected2d to this. It materialises every patch, a
[B, C·kh·kw, oH·oW] tensor (B·C·kh·kw·oH·oW values), before the per-location products."""

import torch
import torch.nn.functional as F


def locally_connected2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1):
    """x [B, C, H, W], weight [oH, oW, O, C, kh, kw] (one filter bank per output location), bias
    [O, oH, oW] or None → [B, O, oH, oW]: out[b, o, i, j] = Σ_{c,u,v} weight[i, j, o, c, u, v] ·
    x_padded[b, c, i·s + u·d, j·s + v·d] + bias[o, i, j]."""
    out_h, out_w, out_channels, channels, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # [B, C·kh·kw, L]
    if cols.shape[2] != out_h * out_w:
        raise ValueError(
            f"reference locally_connected2d: weight's {out_h} x {out_w} locations do not match the "
            f"{cols.shape[2]} positions of the kernel over x"
        )
    out = torch.einsum("bkl,lok->bol", cols, weight.reshape(out_h * out_w, out_channels, channels * kh * kw))
    out = out.reshape(x.shape[0], out_channels, out_h, out_w)
    return out if bias is None else out + bias
