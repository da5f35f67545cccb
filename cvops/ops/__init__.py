"""The functional API: one module per op family, each registering fake and autograd kernels."""

from cvops.ops.bilinear import (
    bilinear_pool,
    compact_bilinear_params,
    compact_bilinear_pool,
    factorized_bilinear_pool,
    lowrank_bilinear_score,
)
from cvops.ops.binary import (
    PackedBinaryWeight,
    pack_binary_weight,
    pack_bits,
    unpack_bits,
    xnor_conv2d,
    xnor_linear,
)
from cvops.ops.boxes import (
    box_area,
    box_convert,
    box_iou,
    box_iou_aligned,
    clip_boxes_to_image,
    complete_box_iou,
    complete_box_iou_loss,
    distance_box_iou,
    distance_box_iou_loss,
    generalized_box_iou,
    generalized_box_iou_loss,
    remove_small_boxes,
)
from cvops.ops.gram import gram_matrix, style_loss
from cvops.ops.instance_norm import conditional_instance_norm
from cvops.ops.local import locally_connected2d
from cvops.ops.nms import batched_nms, multiclass_nms, nms, soft_nms
from cvops.ops.xcorr import xcorr

__all__ = [
    "PackedBinaryWeight",
    "batched_nms",
    "bilinear_pool",
    "box_area",
    "box_convert",
    "box_iou",
    "box_iou_aligned",
    "clip_boxes_to_image",
    "compact_bilinear_params",
    "compact_bilinear_pool",
    "complete_box_iou",
    "complete_box_iou_loss",
    "conditional_instance_norm",
    "distance_box_iou",
    "distance_box_iou_loss",
    "factorized_bilinear_pool",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "gram_matrix",
    "locally_connected2d",
    "lowrank_bilinear_score",
    "multiclass_nms",
    "nms",
    "pack_binary_weight",
    "pack_bits",
    "remove_small_boxes",
    "soft_nms",
    "style_loss",
    "unpack_bits",
    "xcorr",
    "xnor_conv2d",
    "xnor_linear",
]
