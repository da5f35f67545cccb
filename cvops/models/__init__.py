"""Full model assemblies built from cvops.nn (one module per model)."""
from cvops.models import style_transfer

__all__ = ["style_transfer"]
