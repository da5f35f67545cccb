"""Full model assemblies built from cvops.nn (one module per model)."""

from cvops.models import bilinear_cnn, deepface, detection, mfb_vqa, siamfc, style_transfer, vgg, xnor_net
from cvops.models.bilinear_cnn import BilinearCNN
from cvops.models.mfb_vqa import MFBVQA
from cvops.models.xnor_net import (
    model_size_bytes,
    model_sizes,
    pack_model,
    xnor_alexnet,
    xnor_digits_cnn,
    xnor_resnet18,
)

__all__ = [
    "BilinearCNN",
    "MFBVQA",
    "bilinear_cnn",
    "deepface",
    "detection",
    "mfb_vqa",
    "model_size_bytes",
    "model_sizes",
    "pack_model",
    "siamfc",
    "style_transfer",
    "vgg",
    "xnor_alexnet",
    "xnor_digits_cnn",
    "xnor_net",
    "xnor_resnet18",
]
