"""torch.nn modules over the cvops ops."""
from cvops.nn.gram import GramMatrix, StyleLoss

__all__ = ["GramMatrix", "StyleLoss"]
