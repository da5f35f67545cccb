"""ConditionalInstanceNorm2d: instance norm with one (γ, β) per style, chosen or mixed per sample."""

import torch
from torch import Tensor, nn

from cvops.ops import conditional_instance_norm
from cvops.ops._validate import broadcast_style, check_activation, check_eps, check_tensor


class ConditionalInstanceNorm2d(nn.Module):
    """Parameters weight [S, C] (ones) and bias [S, C] (zeros); forward(x, style) with style an int64
    tensor [B] of style indices (or one int for the batch) or float mixing weights [B, S]."""

    def __init__(self, num_features: int, num_styles: int, eps: float = 1e-5, activation=None):
        super().__init__()
        owner = "ConditionalInstanceNorm2d"
        for name, value in (("num_features", num_features), ("num_styles", num_styles)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"cvops.{owner}: {name} must be an int >= 1, got {value!r}")
        if num_features < 1 or num_styles < 1:
            raise ValueError(
                f"cvops.{owner}: num_features and num_styles must be >= 1, got {num_features} and {num_styles}"
            )
        # eps is checked against the input's dtype too, by conditional_instance_norm
        self.num_features, self.num_styles, self.eps = num_features, num_styles, check_eps(owner, eps)
        self.activation = None if activation is None else check_activation(owner, activation)
        self.weight = nn.Parameter(torch.empty(num_styles, num_features))
        self.bias = nn.Parameter(torch.empty(num_styles, num_features))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, style) -> Tensor:
        owner = "ConditionalInstanceNorm2d"
        check_tensor(owner, "x", x)
        if isinstance(style, bool) or not isinstance(style, (int, Tensor)):
            raise ValueError(
                f"cvops.{owner}: style must be an int, int64 indices [B] or float mixing weights [B, S], got {style!r}"
            )
        if isinstance(style, int) and x.dim() != 4:  # before reading the batch size
            raise ValueError(f"cvops.{owner}: x must have 4 dimensions [B, C, H, W], got shape {list(x.shape)}")
        style = broadcast_style(style, x.shape[0], x.device)
        return conditional_instance_norm(x, self.weight, self.bias, style, eps=self.eps, activation=self.activation)

    def extra_repr(self):
        return f"{self.num_features}, num_styles={self.num_styles}, eps={self.eps}, activation={self.activation!r}"
