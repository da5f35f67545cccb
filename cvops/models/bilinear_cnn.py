"""Bilinear CNN (Lin et al. 2015) for fine-grained recognition: a VGG-16 backbone up to relu5_3, a
second-order pooling head and a classifier.

pooling: "full" (cvops.bilinear_pool, C² dims), "compact_ts" / "compact_rm" (compact bilinear pooling
to output_dim, Gao et al. 2016) or "lowrank" (the low-rank bilinear classifier of Kong & Fowlkes,
which scores classes without forming the pooled vector). The backbone starts from random weights:
nothing is downloaded; load torchvision vgg16 weights with load_torchvision_backbone. width_mult
shrinks every VGG layer (tests and CPU demos); torchvision weights need width_mult = 1. The backbone
is cvops.models.vgg's vgg16_features, shared with style transfer.
"""

import torch
from torch import Tensor, nn

from cvops.models.vgg import load_torchvision_vgg16, vgg16_features
from cvops.nn import BilinearPool, CompactBilinearPool, LowRankBilinearClassifier
from cvops.ops._validate import check_int

__all__ = ["BilinearCNN", "POOLINGS", "train_step"]

POOLINGS = ("full", "compact_ts", "compact_rm", "lowrank")


class BilinearCNN(nn.Module):
    """images [B, 3, H, W] → class logits [B, num_classes].

    output_dim: compact pooling's d; rank: the low-rank classifier's r (num_positive = r/2) on
    `lowrank_channels` channels (a 1×1 reduction of conv5_3 as in Kong & Fowlkes; None keeps C).
    """

    def __init__(
        self,
        num_classes: int = 200,
        pooling: str = "full",
        *,
        output_dim: int = 8192,
        rank: int = 8,
        lowrank_channels=None,
        width_mult: float = 1.0,
        dropout: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(
                f"cvops.BilinearCNN: pooling must be one of {', '.join(map(repr, POOLINGS))}, got {pooling!r}"
            )
        check_int("BilinearCNN", "num_classes", num_classes)
        self.pooling_kind = pooling
        self.features = vgg16_features(5, width_mult)  # conv1_1 … relu5_3
        channels = self.features[-2].out_channels
        self.channels = channels
        if pooling == "lowrank":
            self.pool = None
            self.classifier = LowRankBilinearClassifier(
                channels, num_classes, rank=rank, reduced_channels=lowrank_channels
            )
        else:
            if pooling == "full":
                self.pool, dim = BilinearPool(), channels * channels
            else:
                kind = pooling.removeprefix("compact_")
                self.pool, dim = CompactBilinearPool(channels, output_dim, kind=kind, seed=seed), output_dim
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))

    def load_torchvision_backbone(self, state_dict) -> None:
        """Load torchvision vgg16 weights (vgg16().state_dict() or .features.state_dict()) up to conv5_3."""
        load_torchvision_vgg16(self.features, state_dict, "BilinearCNN")

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"cvops.BilinearCNN: images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        features = self.features(images)
        if self.pool is None:
            return self.classifier(features)
        return self.classifier(self.pool(features))

    def extra_repr(self):
        return f"pooling={self.pooling_kind!r}, channels={self.channels}"


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    loss_fn=nn.functional.cross_entropy,
) -> float:
    """One optimisation step of model (put in training mode) on images [B, 3, H, W] with labels [B]:
    J = loss_fn(model(images), labels), cross-entropy by default. Returns J before the step as a float."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()
