"""The functional API: one module per op family, each registering fake and autograd kernels."""
from cvops.ops.gram import gram_matrix, style_loss
from cvops.ops.instance_norm import conditional_instance_norm

__all__ = ["conditional_instance_norm", "gram_matrix", "style_loss"]
