"""The functional API: one module per op family, each registering fake and autograd kernels."""
from cvops.ops.boxes import batched_nms, box_iou, box_iou_aligned, multiclass_nms, nms, soft_nms
from cvops.ops.gram import gram_matrix, style_loss
from cvops.ops.instance_norm import conditional_instance_norm

__all__ = ["batched_nms", "box_iou", "box_iou_aligned", "multiclass_nms", "nms", "soft_nms", "conditional_instance_norm", "gram_matrix", "style_loss"]
