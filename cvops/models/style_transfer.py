"""Multi-style neural style transfer: Johnson et al.'s feed-forward network with Dumoulin et al.'s
conditional instance norm (one network, S styles, mixable), Gatys et al.'s loss
J = α·J_content + β·J_style (+ total variation) on VGG-16 features with Gram matrices, and
Gatys et al.'s optimisation-based transfer.

Images are float RGB in [0, 1] throughout; VGGFeatures applies the ImageNet normalisation itself.
A style is given per sample as an int64 index [B] or as mixing weights [B, S] (an int means the
same style for the whole batch). Nothing is downloaded: VGGFeatures starts from random weights
unless given a torchvision vgg16 state_dict (see VGGFeatures.from_torchvision_state_dict).

Demo: python -m cvops.models.style_transfer --demo out.png [--steps N]
"""
import argparse
import time
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import cvops
from cvops.nn import ConditionalInstanceNorm2d, StyleLoss
from cvops.ops._validate import check_int

__all__ = [
    "FEATURE_NAMES", "TransformerNet", "VGGFeatures", "VGGOutputs", "StyleTransferLoss",
    "total_variation", "train_step", "gatys_transfer",
]

FEATURE_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
VGGOutputs = namedtuple("VGGOutputs", FEATURE_NAMES)

# torchvision's vgg16 `features`: blocks of 3×3 convs (+ReLU), a 2×2 max-pool between blocks. Only
# the first four blocks are built: relu4_3 is the deepest layer the losses use.
_VGG16_BLOCK_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))
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
        return torch.full((batch,), style, dtype=torch.long, device=device)
    if isinstance(style, Tensor):
        if style.dtype == torch.long and style.shape == (batch,):
            return style
        if style.dtype.is_floating_point and style.shape == (batch, num_styles):
            return style
    got = f"{style.dtype} {tuple(style.shape)}" if isinstance(style, Tensor) else repr(style)
    raise ValueError(
        f"cvops.{owner}: style must be an int, int64 indices [B] = [{batch}] or floating mixing weights "
        f"[B, S] = [{batch}, {num_styles}], got {got}")


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
        self.down = nn.ModuleList([_ConvNorm(32, 64, 3, num_styles, stride=2), _ConvNorm(64, 128, 3, num_styles, stride=2)])
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
        layers, self._taps, in_channels = [], [], 3
        for block, widths in enumerate(_VGG16_BLOCK_WIDTHS):
            if block:
                layers.append(nn.MaxPool2d(2, 2))
            for width in widths:
                layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = width
            self._taps.append(len(layers) - 1)  # the block's last ReLU
        self.layers = nn.Sequential(*layers)
        self._init_random_weights()
        # Constants, not state: keep them out of the state_dict so it holds only VGG weights.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(requires_grad)

    def _init_random_weights(self):
        # He init over fan-in keeps the feature scale about constant from layer to layer (torchvision's
        # fan-out init shrinks it ~10× per block), so an untrained VGG still gives every layer's Gram
        # a say in the style loss: a crude but usable texture descriptor.
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    @classmethod
    def from_torchvision_state_dict(cls, state_dict, **kwargs) -> "VGGFeatures":
        """VGGFeatures with weights from torchvision's vgg16().features.state_dict() (keys "0.weight", …)
        or vgg16().state_dict() (keys "features.0.weight", …; the classifier is ignored)."""
        model = cls(**kwargs)
        model.load_torchvision_state_dict(state_dict)
        return model

    def load_torchvision_state_dict(self, state_dict) -> None:
        """Load torchvision vgg16 weights (see from_torchvision_state_dict); layers past relu4_3 are ignored."""
        own = self.layers.state_dict()
        mapped = {}
        for key, value in state_dict.items():
            key = key.removeprefix("features.")
            if key in own:
                mapped[key] = value
        missing = sorted(set(own) - set(mapped), key=lambda k: int(k.split(".")[0]))
        if missing:
            raise ValueError(
                f"cvops.VGGFeatures: state_dict is not a torchvision vgg16 `features` state_dict: missing {missing[:4]}"
                f"{' …' if len(missing) > 4 else ''} (expected keys like '0.weight' or 'features.0.weight')")
        self.layers.load_state_dict(mapped)

    def forward(self, x: Tensor) -> VGGOutputs:
        _check_images("VGGFeatures", "x", x)
        h = (x - self.mean) / self.std
        features, start = [], 0
        for tap in self._taps:
            h = self.layers[start:tap + 1](h)
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

    def __init__(self, vgg: VGGFeatures, styles, *, content_weight: float = 1.0, style_weight: float = 5.0,
                 tv_weight: float = 0.1, content_layer: str = "relu2_2"):
        super().__init__()
        if content_layer not in FEATURE_NAMES:
            raise ValueError(f"cvops.StyleTransferLoss: content_layer must be one of {FEATURE_NAMES}, got {content_layer!r}")
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
        widths = [widths[-1] for widths in _VGG16_BLOCK_WIDTHS]
        shapes = [tuple(bank.shape) for bank in banks]
        if (len(banks) != len(widths) or any(len(s) != 3 or s[1:] != (c, c) for s, c in zip(shapes, widths))
                or len({s[0] for s in shapes}) != 1):
            raise ValueError(
                "cvops.StyleTransferLoss: styles must be style images [S, 3, H, W] or one Gram bank [S, C, C] per "
                f"VGG layer {FEATURE_NAMES} with C = {widths} and the same S, got shapes {shapes}")
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
        return (f"num_styles={self.num_styles}, content_layer={self.content_layer!r}, content_weight={self.content_weight}, "
                f"style_weight={self.style_weight}, tv_weight={self.tv_weight}")


# ---------------------------------------------------------------------------- training and optimisation


def train_step(model: TransformerNet, loss_fn: StyleTransferLoss, optimizer: torch.optim.Optimizer,
               content_batch: Tensor, style) -> dict:
    """One optimisation step of the multi-style network on content_batch [B, 3, H, W] with the given
    styles (int, indices [B] or mixing weights [B, S]). Returns the losses before the step as floats:
    {"total", "content", "style", "tv"}."""
    optimizer.zero_grad(set_to_none=True)
    total, parts = loss_fn(model(content_batch, style), content_batch, style)
    total.backward()
    optimizer.step()
    return {"total": total.item(), **{name: value.item() for name, value in parts.items()}}


def gatys_transfer(content: Tensor, style: Tensor, *, vgg: VGGFeatures = None, steps: int = 100,
                   content_weight: float = 1.0, style_weight: float = 5.0, tv_weight: float = 0.1,
                   lr: float = None, optimizer: str = "adam", init: str = "content", generator=None):
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
        raise ValueError(f"cvops.gatys_transfer: style must be one image [3, h, w] or [1, 3, h, w], got {tuple(style.shape)}")

    vgg = VGGFeatures().to(content.device) if vgg is None else vgg
    loss_fn = StyleTransferLoss(vgg, style_images, content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight)
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


# ---------------------------------------------------------------------------- demo


def _unit_grid(size: int):
    """Coordinates y, x in [0, 1], each [size, size]."""
    axis = torch.linspace(0, 1, size)
    return torch.meshgrid(axis, axis, indexing="ij")


def demo_content_image(size: int = 64) -> Tensor:
    """A procedural scene [3, size, size]: sky gradient, sun, ground, a house with a roof."""
    y, x = _unit_grid(size)
    sky = torch.stack([0.3 + 0.4 * y, 0.5 + 0.3 * y, torch.full_like(y, 0.95)])
    image = torch.where(y > 0.7, torch.tensor([0.2, 0.55, 0.2]).view(3, 1, 1), sky)
    shapes = [
        ((x - 0.78) ** 2 + (y - 0.2) ** 2 < 0.012, (1.0, 0.85, 0.1)),                    # sun
        ((x > 0.2) & (x < 0.5) & (y > 0.45) & (y < 0.75), (0.8, 0.3, 0.25)),              # walls
        ((y > 0.25) & (y <= 0.45) & ((x - 0.35).abs() < (y - 0.25) * 0.9), (0.45, 0.2, 0.1)),  # roof
        ((x > 0.31) & (x < 0.39) & (y > 0.6) & (y < 0.75), (0.3, 0.2, 0.1)),              # door
    ]
    for mask, colour in shapes:
        image = torch.where(mask, torch.tensor(colour).view(3, 1, 1), image)
    return image


def demo_style_images(size: int = 64, generator=None) -> dict:
    """Synthetic styles {name: [3, size, size]}: diagonal stripes, checks, smoothed colour noise, dots."""
    y, x = _unit_grid(size)
    cells = size / 8
    stripes = torch.sin((x + y) * cells * torch.pi) > 0
    checks = ((x * cells).floor() + (y * cells).floor()) % 2 == 0
    dots = ((x * cells) % 1 - 0.5) ** 2 + ((y * cells) % 1 - 0.5) ** 2 < 0.09
    noise = torch.rand(1, 3, size // 4, size // 4, generator=generator)
    noise = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1)

    def two_colours(mask, first, second):
        return torch.where(mask, torch.tensor(first).view(3, 1, 1), torch.tensor(second).view(3, 1, 1))

    return {
        "stripes": two_colours(stripes, (0.95, 0.8, 0.1), (0.1, 0.1, 0.4)),
        "checks": two_colours(checks, (0.9, 0.1, 0.1), (0.95, 0.95, 0.9)),
        "noise": noise,
        "dots": two_colours(dots, (0.1, 0.7, 0.6), (0.05, 0.05, 0.05)),
    }


def run_demo(path: str, *, steps: int = 80, size: int = 64, seed: int = 0) -> None:
    """Train a TransformerNet briefly on the procedural scene in each synthetic style, then save a grid:
    the content and styles, the network's output per style, and mixtures of styles.

    The style weight is ~30× below StyleTransferLoss's default: a network trained for a few dozen steps
    is far from its optimum, and with the full weight it matches the styles' colours by giving up the
    content altogether."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    content = demo_content_image(size)
    styles = demo_style_images(size, generator)
    names, style_images = list(styles), torch.stack(list(styles.values()))
    num_styles = len(names)

    vgg = VGGFeatures()
    loss_fn = StyleTransferLoss(vgg, style_images, content_weight=1.0, style_weight=0.15, tv_weight=0.1)
    model = TransformerNet(num_styles)
    # Only the norms' [S, C] scales and shifts tell the styles apart; a 10× learning rate lets them
    # diverge within the few steps of the demo.
    norms = [m for m in model.modules() if isinstance(m, ConditionalInstanceNorm2d)]
    style_parameters = [p for norm in norms for p in norm.parameters()]
    shared_parameters = [p for p in model.parameters() if all(p is not q for q in style_parameters)]
    optimizer = torch.optim.Adam([{"params": shared_parameters}, {"params": style_parameters, "lr": 3e-2}], lr=3e-3)
    batch = content.expand(num_styles, -1, -1, -1)  # the scene once per style
    style_index = torch.arange(num_styles)
    start = time.perf_counter()
    for step in range(steps):
        losses = train_step(model, loss_fn, optimizer, batch, style_index)
        if step == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps}: " + ", ".join(f"{k} {v:.4g}" for k, v in losses.items()))
    print(f"trained {steps} steps in {time.perf_counter() - start:.1f} s")

    eye = torch.eye(num_styles)  # half-and-half of neighbouring styles, then all in equal parts
    mixtures = {f"{names[i - 1]}+{names[i]}": (eye[i - 1] + eye[i]) / 2 for i in range(num_styles)}
    mixtures["all"] = torch.full((num_styles,), 1 / num_styles)
    with torch.no_grad():
        stylised = model(content.expand(num_styles, -1, -1, -1), style_index)
        mixed = model(content.expand(len(mixtures), -1, -1, -1), torch.stack(list(mixtures.values())))

    rows = [
        [("content", content)] + [(f"style: {n}", img) for n, img in zip(names, style_images)],
        [("", None)] + [(f"→ {n}", img) for n, img in zip(names, stylised)],
        [(f"mix {n}", img) for n, img in zip(mixtures, mixed)],
    ]
    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2 * columns, 2.2 * len(rows)))
    for row_axes, row in zip(axes, rows):
        for ax, (title, image) in zip(row_axes, row + [("", None)] * (columns - len(row))):
            ax.axis("off")
            if image is not None:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                ax.set_title(title, fontsize=8)
    figure.suptitle(f"cvops TransformerNet, {steps} steps, random-weight VGG-16", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    print(f"saved {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Train a multi-style TransformerNet briefly on synthetic images and save a grid of its styles and mixtures.")
    parser.add_argument("--demo", metavar="OUT.png", required=True, help="where to save the demo grid")
    parser.add_argument("--steps", type=int, default=80, help="training steps (default 80)")
    parser.add_argument("--size", type=int, default=64, help="image size (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_demo(args.demo, steps=args.steps, size=args.size, seed=args.seed)


if __name__ == "__main__":
    main()
