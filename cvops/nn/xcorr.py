"""XCorr: the Siamese cross-correlation head (cvops.xcorr) with SiamFC's response adjustment."""

import torch
from torch import Tensor, nn

from cvops.ops._validate import check_bool, check_choice, check_int, check_positive_number
from cvops.ops.xcorr import MODES, xcorr


class XCorr(nn.Module):
    """forward(x, z) = cvops.xcorr(x, z, mode, padding) adjusted as SiamFC does: ·scale (a fixed
    buffer, 0.001 by default, or a learned parameter), + a learned bias (optional), or a BatchNorm
    over the response (as the original SiamFC's adjust layer). Depthwise mode with a learned
    per-channel bias or BatchNorm needs `channels`."""

    def __init__(
        self,
        mode: str = "full",
        *,
        scale: float = 0.001,
        learn_scale: bool = False,
        bias: bool = False,
        batchnorm: bool = False,
        channels: int = None,
        padding: int = 0,
    ):
        super().__init__()
        owner = "XCorr"
        self.mode = check_choice(owner, "mode", mode, MODES)
        self.padding = check_int(owner, "padding", padding, minimum=0)
        check_bool(owner, "learn_scale", learn_scale)
        check_bool(owner, "bias", bias)
        check_bool(owner, "batchnorm", batchnorm)
        if channels is not None:
            check_int(owner, "channels", channels)
        out_channels = 1 if mode == "full" else channels
        if out_channels is None and (bias or batchnorm):
            raise ValueError(f"cvops.{owner}: depthwise mode with bias or batchnorm needs channels, got None")
        value = torch.tensor(check_positive_number(owner, "scale", scale))
        if learn_scale:
            self.scale = nn.Parameter(value)
        else:
            self.register_buffer("scale", value)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.batchnorm = nn.BatchNorm2d(out_channels) if batchnorm else None

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        out = xcorr(x, z, mode=self.mode, scale=self.scale, bias=self.bias, padding=self.padding)
        return out if self.batchnorm is None else self.batchnorm(out)

    def extra_repr(self):
        learned = isinstance(self.scale, nn.Parameter)
        return (
            f"mode={self.mode!r}, scale={float(self.scale.detach()):g}{' (learned)' if learned else ''}, "
            f"bias={self.bias is not None}, batchnorm={self.batchnorm is not None}, padding={self.padding}"
        )
