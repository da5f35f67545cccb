"""Modules of the gram family: GramMatrix and StyleLoss (target Grams held as buffers)."""

import torch
from torch import Tensor, nn

from cvops.ops import gram_matrix, style_loss
from cvops.ops._validate import (
    REDUCTIONS,
    broadcast_style,
    check_choice,
    check_gram_normalize,
    check_min_dim,
    check_tensor,
)


class GramMatrix(nn.Module):
    """x [B, C, *spatial] → [B, C, C] Gram matrices (see cvops.gram_matrix)."""

    def __init__(self, normalize="chw"):
        super().__init__()
        check_gram_normalize("GramMatrix", normalize)  # fail at construction, not at first call
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        return gram_matrix(x, normalize=self.normalize)

    def extra_repr(self):
        return f"normalize={self.normalize!r}"


class StyleLoss(nn.Module):
    """Style loss against target Grams kept in the state_dict as the buffer `target`.

    target: one Gram [C, C], or a bank [S, C, C] of S styles; with a bank, forward takes each
    sample's style index (an int for the whole batch, or an int64 tensor [B]).
    """

    def __init__(self, target: Tensor, *, normalize="chw", reduction="mean"):
        super().__init__()
        check_tensor("StyleLoss", "target", target)
        if not target.dtype.is_floating_point:
            raise ValueError(f"cvops.StyleLoss: target must be a floating-point tensor, got {target.dtype}")
        if target.dim() not in (2, 3) or target.shape[-1] != target.shape[-2]:
            raise ValueError(
                f"cvops.StyleLoss: target must be [C, C] or a bank [S, C, C], got shape {tuple(target.shape)}"
            )
        check_gram_normalize("StyleLoss", normalize)
        self.normalize = normalize
        self.reduction = check_choice("StyleLoss", "reduction", reduction, REDUCTIONS)
        self.register_buffer("target", target.detach().clone())

    @classmethod
    def from_features(cls, style_features: Tensor, **kwargs) -> "StyleLoss":
        """A bank with one style per sample of style_features [S, C, *spatial]."""
        with torch.no_grad():
            grams = gram_matrix(style_features, normalize=kwargs.get("normalize", "chw"))
        return cls(grams, **kwargs)

    @property
    def num_styles(self) -> int:
        return 1 if self.target.dim() == 2 else self.target.shape[0]

    def forward(self, x: Tensor, style_index=None) -> Tensor:
        check_min_dim("StyleLoss", "x", check_tensor("StyleLoss", "x", x), 3, "[B, C, *spatial]")
        if style_index is not None and (
            isinstance(style_index, bool) or not isinstance(style_index, (int, torch.Tensor))
        ):
            raise ValueError(
                f"cvops.StyleLoss: style_index must be None, an int or an int64 tensor [B], got {style_index!r}"
            )
        target, index = self.target, None
        if target.dim() == 3:
            if style_index is None:
                if self.num_styles != 1:
                    raise ValueError(
                        f"cvops.StyleLoss: style_index is required with a bank of {self.num_styles} styles"
                    )
                target = target[0]
            else:
                index = self._style_index(style_index, x)
        elif style_index is not None:
            raise ValueError("cvops.StyleLoss: style_index given, but the target is a single Gram [C, C]")
        return style_loss(x, target, normalize=self.normalize, target_index=index, reduction=self.reduction)

    @staticmethod
    def _style_index(style_index, x):
        """style_index (an int, or int64 [B]) → int64 [B], checked here so that errors name it."""
        index = broadcast_style(style_index, x.shape[0], x.device)
        owner, batch = "StyleLoss", x.shape[0]
        if index.dtype != torch.long:
            raise ValueError(f"cvops.{owner}: style_index must be an int or an int64 tensor, got {index.dtype}")
        if index.dim() != 1 or index.shape[0] != batch:
            raise ValueError(f"cvops.{owner}: style_index must have shape [B] = [{batch}], got {list(index.shape)}")
        if index.device != x.device:
            raise ValueError(f"cvops.{owner}: style_index must be on x's device ({x.device}), got {index.device}")
        return index

    def extra_repr(self):
        channels = self.target.shape[-1]
        return f"num_styles={self.num_styles}, channels={channels}, normalize={self.normalize!r}, reduction={self.reduction!r}"
