"""Full model assemblies built from cvops.nn (one module per model)."""

from cvops.models import bilinear_cnn, deepface, detection, mfb_vqa, siamfc, style_transfer, vgg
from cvops.models.bilinear_cnn import BilinearCNN
from cvops.models.mfb_vqa import MFBVQA

__all__ = [
    "BilinearCNN",
    "MFBVQA",
    "bilinear_cnn",
    "deepface",
    "detection",
    "mfb_vqa",
    "siamfc",
    "style_transfer",
    "vgg",
]
