"""VGG-16 convolutional features laid out as torchvision's vgg16().features, shared by the models
(BilinearCNN's backbone, style transfer's VGGFeatures). Nothing is downloaded: the layers start from
random weights, and load_torchvision_vgg16 copies in a torchvision vgg16 state_dict."""

from torch import nn

__all__ = ["VGG16_BLOCKS", "load_torchvision_vgg16", "vgg16_features"]

# torchvision's vgg16 `features`: five blocks of 3×3 convs (+ ReLU), a 2×2 max-pool between blocks.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16_features(num_blocks: int = 5, width_mult: float = 1.0) -> nn.Sequential:
    """torchvision's vgg16().features up to the last ReLU of block num_blocks (no pool after it), with
    its layer indices: num_blocks=5 is features[:30] (relu5_3), 4 is features[:23] (relu4_3).

    width_mult scales every layer's width (tests and CPU demos; torchvision weights need 1). He init
    over fan-in keeps the feature scale about constant from layer to layer (torchvision's fan-out init
    shrinks it ~10× per block), so an untrained VGG still gives usable features at every depth."""
    layers, in_channels = [], 3
    for block, widths in enumerate(VGG16_BLOCKS[:num_blocks]):
        if block:
            layers.append(nn.MaxPool2d(2, 2))
        for width in widths:
            width = max(1, round(width * width_mult))
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = width
    features = nn.Sequential(*layers)
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return features


def load_torchvision_vgg16(features: nn.Sequential, state_dict, owner: str) -> None:
    """Copy torchvision vgg16 weights into features (a vgg16_features): state_dict is
    vgg16().features.state_dict() (keys "0.weight", …) or vgg16().state_dict() (keys
    "features.0.weight", …); layers past features' end and the classifier are ignored. A missing or
    mis-shaped layer raises a ValueError naming owner."""
    own = features.state_dict()
    mapped = {}
    for key, value in state_dict.items():
        key = key.removeprefix("features.")
        if key in own and own[key].shape == value.shape:
            mapped[key] = value
    missing = sorted(set(own) - set(mapped), key=lambda k: int(k.split(".")[0]))
    if missing:
        raise ValueError(
            f"cvops.{owner}: state_dict is not a torchvision vgg16 `features` state_dict: missing or mis-shaped "
            f"{missing[:4]}{' …' if len(missing) > 4 else ''} (expected keys like '0.weight' or 'features.0.weight')"
        )
    features.load_state_dict(mapped)
