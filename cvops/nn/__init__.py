"""torch.nn modules over the cvops ops."""
from cvops.nn.gram import GramMatrix, StyleLoss
from cvops.nn.instance_norm import ConditionalInstanceNorm2d

__all__ = ["ConditionalInstanceNorm2d", "GramMatrix", "StyleLoss"]
