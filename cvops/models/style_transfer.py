"""Multi-style neural style transfer: Johnson et al.'s feed-forward network with Dumoulin et al.'s
conditional instance norm (one network, S styles, mixable), Gatys et al.'s loss
J = α·J_content + β·J_style (+ total variation) on VGG-16 features with Gram matrices, and
Gatys et al.'s optimisation-based transfer.

Images are float RGB in [0, 1] throughout; VGGFeatures applies the ImageNet normalisation itself.
A style is given per sample as an int64 index [B] or as mixing weights [B, S] (an int means the
same style for the whole batch). Nothing is downloaded: VGGFeatures starts from random weights
unless given a torchvision vgg16 state_dict (see VGGFeatures.from_torchvision_state_dict).
A demo that trains the network on synthetic images: python -m cvops.demos.style_transfer OUT.png.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import cvops
from cvops.models._outputs import output_type
from cvops.models.vgg import VGG16_BLOCKS, load_torchvision_vgg16, vgg16_features
from cvops.nn import ConditionalInstanceNorm2d, StyleLoss
from cvops.ops._validate import broadcast_style, check_int

__all__ = [
    "FEATURE_NAMES",
    "TransformerNet",
    "VGGFeatures",
    "VGGOutputs",
    "StyleTransferLoss",
    "total_variation",
    "train_step",
    "gatys_transfer",
]

FEATURE_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


@output_type
class VGGOutputs:
    """VGGFeatures's output: the activations after relu1_2, relu2_2, relu3_3 and relu4_3."""

    relu1_2: Tensor
    relu2_2: Tensor
    relu3_3: Tensor
    relu4_3: Tensor


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_images(owner: str, name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"cvops.{owner}: {name} must be RGB images [B, 3, H, W] in [0, 1], got {shape}")


def _style_tensor(owner: str, style, batch: int, num_styles: int, device) -> Tensor:
    """The style argument as the ops take it: int64 indices [B] or floating mixing weights [B, S].
    An int picks one style for the whole batch. Index values are range-checked by the ops."""
    if isinstance(style, int) and not isinstance(style, bool):
        return broadcast_style(style, batch, device)
    if isinstance(style, Tensor):
        if style.dtype == torch.long and style.shape == (batch,):
            return style
        if style.dtype.is_floating_point and style.shape == (batch, num_styles):
            return style
    got = f"{style.dtype} {tuple(style.shape)}" if isinstance(style, Tensor) else repr(style)
    raise ValueError(
        f"cvops.{owner}: style must be an int, int64 indices [B] = [{batch}] or floating mixing weights "
        f"[B, S] = [{batch}, {num_styles}], got {got}"
    )


# ---------------------------------------------------------------------------- feed-forward network


class _ConvNorm(nn.Module):
    """[nearest-neighbour upsample →] reflection pad → conv → conditional instance norm (+ fused ReLU).

    The conv has no bias: the instance norm subtracts each channel's mean, so a bias would cancel.
    """

    def __init__(self, in_channels, out_channels, kernel_size, num_styles, *, stride=1, activation="relu"):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, bias=False)
        self.norm = ConditionalInstanceNorm2d(out_channels, num_styles, activation=activation)

    def forward(self, x: Tensor, style: Tensor, upsample_to=None) -> Tensor:
        if upsample_to is not None:
            x = F.interpolate(x, size=upsample_to, mode="nearest")
        return self.norm(self.conv(self.pad(x)), style)


class _ResidualBlock(nn.Module):
    """x + CIN(conv(ReLU(CIN(conv(x))))) — no ReLU after the sum, as in Johnson et al."""

    def __init__(self, channels, num_styles):
        super().__init__()
        self.first = _ConvNorm(channels, channels, 3, num_styles)
        self.second = _ConvNorm(channels, channels, 3, num_styles, activation=None)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        return x + self.second(self.first(x, style), style)


class TransformerNet(nn.Module):
    """Johnson et al.'s image transformation network, conditioned on S styles (Dumoulin et al.).

    9×9 conv 32 → 3×3/2 conv 64 → 3×3/2 conv 128 → 5 residual blocks (128) → upsample ×2 + 3×3 conv
    64 → upsample ×2 + 3×3 conv 32 → 9×9 conv 3 → sigmoid. Every conv but the last is followed by a
    ConditionalInstanceNorm2d (ReLU fused into it where the network has conv-norm-ReLU); padding is
    reflective. Only the norms' [S, C] scale and shift depend on the style, so styles mix by mixing
    them. Nearest-neighbour upsampling + conv replaces the paper's transposed convs to avoid
    checkerboard artifacts (Dumoulin et al. / magenta). The sigmoid keeps the output in [0, 1], the
    range the input and VGGFeatures use. Any H, W work: each upsampling returns to the size the
    matching downsampling started from, so the output is the input's size.
    """

    def __init__(self, num_styles: int):
        super().__init__()
        self.num_styles = check_int("TransformerNet", "num_styles", num_styles)
        self.stem = _ConvNorm(3, 32, 9, num_styles)
        self.down = nn.ModuleList(
            [_ConvNorm(32, 64, 3, num_styles, stride=2), _ConvNorm(64, 128, 3, num_styles, stride=2)]
        )
        self.residual = nn.ModuleList([_ResidualBlock(128, num_styles) for _ in range(5)])
        self.up = nn.ModuleList([_ConvNorm(128, 64, 3, num_styles), _ConvNorm(64, 32, 3, num_styles)])
        self.head = nn.Sequential(nn.ReflectionPad2d(4), nn.Conv2d(32, 3, 9))

    def forward(self, x: Tensor, style) -> Tensor:
        """x [B, 3, H, W] in [0, 1]; style: int, int64 indices [B] or mixing weights [B, S] → [B, 3, H, W]."""
        _check_images("TransformerNet", "x", x)
        style = _style_tensor("TransformerNet", style, x.shape[0], self.num_styles, x.device)
        h = self.stem(x, style)
        sizes = []
        for layer in self.down:
            sizes.append(h.shape[-2:])
            h = layer(h, style)
        for block in self.residual:
            h = block(h, style)
        for layer, size in zip(self.up, reversed(sizes)):
            h = layer(h, style, upsample_to=size)
        return torch.sigmoid(self.head(h))

    def extra_repr(self):
        return f"num_styles={self.num_styles}"


# ---------------------------------------------------------------------------- VGG-16 features


class VGGFeatures(nn.Module):
    """VGG-16 features relu1_2, relu2_2, relu3_3, relu4_3 of images in [0, 1] (ImageNet-normalised here).

    Layers follow torchvision's vgg16().features numbering up to relu4_3 (index 22), so its weights load
    with from_torchvision_state_dict / load_torchvision_state_dict. Starts from random weights (nothing
    is downloaded) and is frozen unless requires_grad=True: the losses differentiate through it, not it.
    """

    def __init__(self, *, requires_grad: bool = False):
        super().__init__()
        # The first four blocks only: relu4_3 is the deepest layer the losses use. He-initialised
        # (see vgg16_features), an untrained VGG still gives every layer's Gram a say in the style
        # loss: a crude but usable texture descriptor.
        self.layers = vgg16_features(4)
        pools = [i for i, layer in enumerate(self.layers) if isinstance(layer, nn.MaxPool2d)]
        self._taps = [i - 1 for i in pools] + [len(self.layers) - 1]  # each block's last ReLU
        # Constants, not state: keep them out of the state_dict so it holds only VGG weights.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(requires_grad)

    @classmethod
    def from_torchvision_state_dict(cls, state_dict, **kwargs) -> "VGGFeatures":
        """VGGFeatures with weights from torchvision's vgg16().features.state_dict() (keys "0.weight", …)
        or vgg16().state_dict() (keys "features.0.weight", …; the classifier is ignored)."""
        model = cls(**kwargs)
        model.load_torchvision_state_dict(state_dict)
        return model

    def load_torchvision_state_dict(self, state_dict) -> None:
        """Load torchvision vgg16 weights (see from_torchvision_state_dict); layers past relu4_3 are ignored."""
        load_torchvision_vgg16(self.layers, state_dict, "VGGFeatures")

    def forward(self, x: Tensor) -> VGGOutputs:
        _check_images("VGGFeatures", "x", x)
        h = (x - self.mean) / self.std
        features, start = [], 0
        for tap in self._taps:
            h = self.layers[start : tap + 1](h)
            features.append(h)
            start = tap + 1
        return VGGOutputs(*features)


# ---------------------------------------------------------------------------- losses


def total_variation(images: Tensor) -> Tensor:
    """Mean squared difference between vertical and between horizontal neighbours (smooth, so L-BFGS
    copes with it), summed over the two directions."""
    vertical = (images[..., 1:, :] - images[..., :-1, :]).square().mean()
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).square().mean()
    return vertical + horizontal


class StyleTransferLoss(nn.Module):
    """J = content_weight·J_content + style_weight·J_style + tv_weight·J_tv over VGG features.

    J_content: mean squared error between the output's and the content's features at content_layer
    (relu2_2 by default, as Johnson et al.). J_style: Σ over relu1_2, relu2_2, relu3_3, relu4_3 of
    ‖gram(φ(output)) − S_style‖²_F (Grams normalised by C·H·W, cvops.style_loss), averaged over the
    batch. J_tv: total_variation(output).

    styles: style images [S, 3, H, W] in [0, 1], or target Gram banks, one [S, C, C] per VGG layer.
    The banks are buffers (one cvops.nn.StyleLoss per layer), so they travel with state_dict and .to().
    A style given as mixing weights w [B, S] aims at the same mixture of target Grams, Σ_s w_s·S_s —
    the way the network mixes its norms — so one-hot weights give exactly the index form's loss.

    forward returns (J, parts) with parts {"content", "style", "tv"} the weighted terms (they sum to J).
    The default weights (content 1 : style 5, as in Johnson et al.'s code) were checked with the random-weight
    VGGFeatures, where every layer's features have about unit scale; rebalance them for trained weights.
    """

    def __init__(
        self,
        vgg: VGGFeatures,
        styles,
        *,
        content_weight: float = 1.0,
        style_weight: float = 5.0,
        tv_weight: float = 0.1,
        content_layer: str = "relu2_2",
    ):
        super().__init__()
        if content_layer not in FEATURE_NAMES:
            raise ValueError(
                f"cvops.StyleTransferLoss: content_layer must be one of {FEATURE_NAMES}, got {content_layer!r}"
            )
        self.vgg = vgg
        self.content_layer = content_layer
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        banks = self._style_grams(styles)
        self.style_losses = nn.ModuleList(StyleLoss(bank, normalize="chw", reduction="none") for bank in banks)
        self.num_styles = banks[0].shape[0]

    def _style_grams(self, styles) -> list:
        if isinstance(styles, Tensor):
            _check_images("StyleTransferLoss", "style images", styles)
            with torch.no_grad():
                return [cvops.gram_matrix(f, normalize="chw") for f in self.vgg(styles)]
        banks = list(styles)
        widths = [widths[-1] for widths in VGG16_BLOCKS[: len(FEATURE_NAMES)]]
        shapes = [tuple(bank.shape) for bank in banks]
        if (
            len(banks) != len(widths)
            or any(len(s) != 3 or s[1:] != (c, c) for s, c in zip(shapes, widths))
            or len({s[0] for s in shapes}) != 1
        ):
            raise ValueError(
                "cvops.StyleTransferLoss: styles must be style images [S, 3, H, W] or one Gram bank [S, C, C] per "
                f"VGG layer {FEATURE_NAMES} with C = {widths} and the same S, got shapes {shapes}"
            )
        return banks

    def content_features(self, content: Tensor) -> VGGOutputs:
        """The content targets (no gradient); pass them to forward in place of the images to reuse them."""
        with torch.no_grad():
            return self.vgg(content)

    def forward(self, output: Tensor, content, style):
        """output [B, 3, H, W]; content: the content images or their content_features; style as TransformerNet."""
        style = _style_tensor("StyleTransferLoss", style, output.shape[0], self.num_styles, output.device)
        if not isinstance(content, VGGOutputs):
            content = self.content_features(content)
        features = self.vgg(output)
        content_loss = F.mse_loss(getattr(features, self.content_layer), getattr(content, self.content_layer))
        style_loss = sum(self._style_term(loss, layer, style) for loss, layer in zip(self.style_losses, features))
        parts = {
            "content": self.content_weight * content_loss,
            "style": self.style_weight * style_loss,
            "tv": self.tv_weight * total_variation(output),
        }
        return sum(parts.values()), parts

    @staticmethod
    def _style_term(loss: StyleLoss, features: Tensor, style: Tensor) -> Tensor:
        if style.dtype == torch.long:
            per_sample = loss(features, style)
        else:
            mixed_targets = torch.einsum("bs,scd->bcd", style.to(loss.target.dtype), loss.target)
            per_sample = cvops.style_loss(features, mixed_targets, normalize=loss.normalize, reduction="none")
        return per_sample.mean()

    def extra_repr(self):
        return (
            f"num_styles={self.num_styles}, content_layer={self.content_layer!r}, content_weight={self.content_weight}, "
            f"style_weight={self.style_weight}, tv_weight={self.tv_weight}"
        )


# ---------------------------------------------------------------------------- training and optimisation


def train_step(
    model: TransformerNet, optimizer: torch.optim.Optimizer, content_batch: Tensor, style, *, loss_fn: StyleTransferLoss
) -> float:
    """One optimisation step of the multi-style network on content_batch [B, 3, H, W] with the given
    styles (int, indices [B] or mixing weights [B, S]): J = loss_fn(model(content_batch, style),
    content_batch, style)[0]. Returns J before the step as a float (loss_fn gives its parts)."""
    optimizer.zero_grad(set_to_none=True)
    total, _ = loss_fn(model(content_batch, style), content_batch, style)
    total.backward()
    optimizer.step()
    return total.item()


def gatys_transfer(
    content: Tensor,
    style: Tensor,
    *,
    vgg: VGGFeatures = None,
    steps: int = 100,
    content_weight: float = 1.0,
    style_weight: float = 5.0,
    tv_weight: float = 0.1,
    lr: float = None,
    optimizer: str = "adam",
    init: str = "content",
    generator=None,
):
    """Gatys et al.'s style transfer: minimise J(G) = α·J_content + β·J_style (+ TV) over the image G.

    content: [3, H, W] or [B, 3, H, W] in [0, 1]; style: one style image [3, h, w] or [1, 3, h, w].
    G starts from the content (init="content") or uniform noise ("noise", drawn from generator).
    optimizer: "adam" (lr default 0.02; G is clamped to [0, 1] after every step) or "lbfgs" (lr default
    1, strong-Wolfe line search, one iteration per step; G is clamped once, at the end: clamping between
    steps breaks L-BFGS's curvature pairs, and it then stalls on a non-descent direction).
    vgg defaults to a random-weight VGGFeatures. Returns (G in [0, 1] with content's shape, history),
    history holding J before each of the `steps` steps and of the returned G (steps + 1 floats).
    """
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"cvops.gatys_transfer: optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
    if init not in ("content", "noise"):
        raise ValueError(f"cvops.gatys_transfer: init must be 'content' or 'noise', got {init!r}")
    batched_content = content if content.dim() == 4 else content.unsqueeze(0)
    style_images = style if style.dim() == 4 else style.unsqueeze(0)
    _check_images("gatys_transfer", "content", batched_content)
    _check_images("gatys_transfer", "style", style_images)
    if style_images.shape[0] != 1:
        raise ValueError(
            f"cvops.gatys_transfer: style must be one image [3, h, w] or [1, 3, h, w], got {tuple(style.shape)}"
        )

    vgg = VGGFeatures().to(content.device) if vgg is None else vgg
    loss_fn = StyleTransferLoss(
        vgg, style_images, content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight
    )
    content_targets = loss_fn.content_features(batched_content)
    style_index = torch.zeros(batched_content.shape[0], dtype=torch.long, device=content.device)
    if init == "content":
        image = batched_content.detach().clone()
    else:
        image = torch.rand(batched_content.shape, generator=generator, device=content.device, dtype=content.dtype)
    image.requires_grad_(True)
    if optimizer == "adam":
        opt = torch.optim.Adam([image], lr=0.02 if lr is None else lr)
    else:
        opt = torch.optim.LBFGS([image], lr=1.0 if lr is None else lr, max_iter=1, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        total, _ = loss_fn(image, content_targets, style_index)
        total.backward()
        return total

    history = []
    for _ in range(steps):
        history.append(opt.step(closure).item())  # J before this step
        if optimizer == "adam":
            with torch.no_grad():
                image.clamp_(0, 1)
    with torch.no_grad():
        image.clamp_(0, 1)
        history.append(loss_fn(image, content_targets, style_index)[0].item())
    return image.detach().reshape(content.shape), history
