"""The functional API: one module per op family, each registering fake and autograd kernels."""
from cvops.ops.boxes import box_iou, box_iou_aligned
from cvops.ops.gram import gram_matrix, style_loss
from cvops.ops.instance_norm import conditional_instance_norm

__all__ = ["box_iou", "box_iou_aligned", "conditional_instance_norm", "gram_matrix", "style_loss"]
