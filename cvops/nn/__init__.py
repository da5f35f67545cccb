"""torch.nn modules over the cvops ops."""

from cvops.nn.bilinear import (
    MFB,
    MFH,
    MLB,
    BilinearPool,
    CompactBilinearPool,
    LowRankBilinearClassifier,
)
from cvops.nn.binary import XNORConv2d, XNORLinear, batchnorm_sign_bounds
from cvops.nn.gram import GramMatrix, StyleLoss
from cvops.nn.instance_norm import ConditionalInstanceNorm2d
from cvops.nn.local import LocallyConnected2d
from cvops.nn.xcorr import XCorr

__all__ = [
    "BilinearPool",
    "CompactBilinearPool",
    "ConditionalInstanceNorm2d",
    "GramMatrix",
    "LocallyConnected2d",
    "LowRankBilinearClassifier",
    "MFB",
    "MFH",
    "MLB",
    "StyleLoss",
    "XCorr",
    "XNORConv2d",
    "XNORLinear",
    "batchnorm_sign_bounds",
]
