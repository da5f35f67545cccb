"""The functional API: one module per op family, each registering fake and autograd kernels."""
from cvops.ops.gram import gram_matrix, style_loss

__all__ = ["gram_matrix", "style_loss"]
