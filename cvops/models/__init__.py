"""Full model assemblies built from cvops.nn (one module per model)."""
from cvops.models import detection, style_transfer

__all__ = ["detection", "style_transfer"]
