"""cvops: fast C++/CUDA computer-vision operators as autograd-aware torch.ops.cvops.* ops."""

import torch  # noqa: F401  (the extension links against torch: load it first)

from cvops import _extension

_C = _extension.load()

# models registers the output types (Detections, …) with torch.export, which loading a saved
# program that returns them needs: `import cvops` is all a loading side imports.
from cvops import models, nn, ops  # noqa: E402
from cvops.ops import *  # noqa: E402,F401,F403

__version__ = "0.2.0"
__all__ = ["models", "nn", "ops", *ops.__all__]
