"""The functional API: one module per op family, each registering fake and autograd kernels."""

from cvops.ops.bilinear import (
    bilinear_pool,
    compact_bilinear_params,
    compact_bilinear_pool,
    factorized_bilinear_pool,
    lowrank_bilinear_score,
)
from cvops.ops.boxes import box_iou, box_iou_aligned
from cvops.ops.gram import gram_matrix, style_loss
from cvops.ops.instance_norm import conditional_instance_norm
from cvops.ops.nms import batched_nms, multiclass_nms, nms, soft_nms

__all__ = [
    "batched_nms",
    "bilinear_pool",
    "box_iou",
    "box_iou_aligned",
    "compact_bilinear_params",
    "compact_bilinear_pool",
    "conditional_instance_norm",
    "factorized_bilinear_pool",
    "gram_matrix",
    "lowrank_bilinear_score",
    "multiclass_nms",
    "nms",
    "soft_nms",
    "style_loss",
]
