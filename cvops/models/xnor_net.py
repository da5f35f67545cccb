"""XNOR-Net (Rastegari et al., ECCV 2016): binary AlexNet and ResNet-18, a small binary CNN for 8×8
digits, and helpers that pack a trained model for inference and measure its size.

As in the paper, the first convolution and the last linear layer stay real-valued (nn.Conv2d /
nn.Linear); every other convolution and linear layer is binary (cvops.nn.XNORConv2d / XNORLinear;
ResNet's 1×1 shortcut convolutions excepted, see BinaryBasicBlock), in XNOR-Net's block ordering

    BatchNorm → binarise (sign, inside the XNOR layer) → binary conv → activation / pool,

so the BatchNorm centres the input before the sign throws its magnitude away. The builders pass
`scaling` ("alpha" by default: the per-filter mean |w|), `weight_grad` and `pad_value` through to
every binary layer.

In eval mode the XNOR layers already run the packed weights (cached, repacked when the latent weight
changes), so model.eval() computes exactly what the packed model computes; pack_model(model,
keep_latent=False) then drops the latent float weights, leaving what inference needs (about 32×
smaller for the binary layers), and that state_dict loads into a freshly built model.
"""

import torch
from torch import Tensor, nn

from cvops.nn.binary import XNORConv2d, XNORLinear
from cvops.ops._registration import opmath
from cvops.ops._validate import check_bool, check_int

__all__ = [
    "BinaryBasicBlock",
    "XNORAlexNet",
    "XNORDigitsCNN",
    "XNORResNet",
    "binary_modules",
    "model_size_bytes",
    "model_sizes",
    "pack_model",
    "xnor_alexnet",
    "xnor_digits_cnn",
    "xnor_resnet18",
]

_BINARY = (XNORConv2d, XNORLinear)


def _binary_kwargs(scaling="alpha", weight_grad="ste", pad_value=0.0):
    return {"scaling": scaling, "weight_grad": weight_grad, "pad_value": pad_value}


def _linear_kwargs(kwargs):
    """XNORLinear has no padding: the conv-only pad_value is not passed on."""
    return {key: value for key, value in kwargs.items() if key != "pad_value"}


class BinaryBasicBlock(nn.Module):
    """ResNet's basic block with binary 3×3 convolutions in XNOR-Net order:

        h   = XNORConv2d(BN(x))              3×3, stride s   (binarised input and weight)
        h   = XNORConv2d(BN(ReLU(h)))        3×3, stride 1
        out = h + shortcut(x)

    The block is pre-activation (it starts with BN, no ReLU after the sum), so the next block's BN
    sees the full-precision sum. The downsampling shortcut (stride ≠ 1 or a change of width) is a
    real-valued 1×1 conv + BN, as in most binary ResNets: it holds ~1.5 % of ResNet-18's weights
    and carries the full-precision signal past the binary convolutions."""

    expansion = 1

    def __init__(self, in_channels, out_channels, stride=1, **binary):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = XNORConv2d(in_channels, out_channels, 3, stride=stride, padding=1, **binary)
        self.relu = nn.ReLU(inplace=True)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = XNORConv2d(out_channels, out_channels, 3, padding=1, **binary)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.conv1(self.bn1(x)))
        return self.conv2(self.bn2(h)) + self.shortcut(x)


class XNORResNet(nn.Module):
    """A binary ResNet of BinaryBasicBlock stages (widths 64, 128, 256, 512).

    Real-valued: the stem (7×7 stride-2 conv + BN + ReLU + 3×3 stride-2 max-pool for ImageNet, or
    cifar=True: a 3×3 stride-1 conv + BN + ReLU without the pool, for 32×32 inputs), the shortcut
    convolutions, and the final BN + ReLU → global average pool → nn.Linear classifier."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000, cifar=False, **binary):
        super().__init__()
        owner = "XNORResNet"
        check_int(owner, "num_classes", num_classes)
        self.cifar = check_bool(owner, "cifar", cifar)
        if cifar:
            stem = [nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        else:
            stem = [
                nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            ]
        self.stem = nn.Sequential(*stem)
        stages, in_channels = [], 64
        for index, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(check_int(owner, f"layers[{index}]", blocks)):
                stage.append(BinaryBasicBlock(in_channels, width, stride if block == 0 else 1, **binary))
                in_channels = width
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        # The real-valued stem runs channels-last (oneDNN's convolution and a max-pool ten times
        # faster than on NCHW); the binary layers pack either layout and return NCHW.
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.head(x).flatten(1))


class XNORAlexNet(nn.Module):
    """XNOR-Net's binary AlexNet, laid out as the authors' XNOR-Net-PyTorch model.

    Real-valued: conv1 (11×11 stride 4, + BN + ReLU + max-pool) and the last nn.Linear. Binary:
    conv2–conv5 and fc6–fc7, each BN → binarise → XNOR layer → ReLU, the max-pools after conv2 and
    conv5; fc7 is followed by BN1d and dropout before the classifier. conv1 pads by 2 (torchvision's
    AlexNet) so a 224×224 input gives the 6×6 conv5 grid; an adaptive average pool to 6×6 keeps the
    classifier's 256·6·6 inputs for other sizes (≥ 63×63)."""

    def __init__(self, num_classes=1000, dropout=0.5, **binary):
        super().__init__()
        check_int("XNORAlexNet", "num_classes", num_classes)

        def conv(c_in, c_out, kernel, padding):
            return [nn.BatchNorm2d(c_in), XNORConv2d(c_in, c_out, kernel, padding=padding, **binary), nn.ReLU(True)]

        def linear(c_in, c_out):
            return [nn.BatchNorm1d(c_in), XNORLinear(c_in, c_out, **_linear_kwargs(binary)), nn.ReLU(True)]

        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4, padding=2),
            nn.BatchNorm2d(96),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            *conv(96, 256, 5, 2),
            nn.MaxPool2d(3, stride=2),
            *conv(256, 384, 3, 1),
            *conv(384, 384, 3, 1),
            *conv(384, 256, 3, 1),
            nn.MaxPool2d(3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            *linear(256 * 6 * 6, 4096),
            nn.Dropout(dropout),
            *linear(4096, 4096),
            nn.BatchNorm1d(4096),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class XNORDigitsCNN(nn.Module):
    """A small binary CNN for 8×8 grey digits (sklearn's load_digits), [B, 1, 8, 8] → [B, 10] logits:

        real 3×3 conv (width) + BN + ReLU                                   8×8
        BN → XNORConv2d 3×3 (2·width) → ReLU → 2×2 average pool             4×4
        BN → XNORConv2d 3×3 (4·width) → ReLU → 2×2 average pool             2×2
        BN1d → real nn.Linear (16·width → num_classes)

    Average pooling keeps more of the binary layers' coarse outputs than max-pooling on 8×8 inputs;
    a binary hidden linear layer before the classifier costs several points of accuracy here."""

    def __init__(self, num_classes=10, width=32, **binary):
        super().__init__()
        check_int("XNORDigitsCNN", "num_classes", num_classes)
        check_int("XNORDigitsCNN", "width", width)
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(width),
            XNORConv2d(width, 2 * width, 3, padding=1, **binary),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
            nn.BatchNorm2d(2 * width),
            XNORConv2d(2 * width, 4 * width, 3, padding=1, **binary),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.BatchNorm1d(16 * width), nn.Linear(16 * width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def xnor_resnet18(num_classes=1000, cifar=False, *, scaling="alpha", weight_grad="ste", pad_value=0.0) -> XNORResNet:
    """Binary ResNet-18 (XNORResNet with two BinaryBasicBlocks a stage); cifar=True for 32×32 inputs."""
    return XNORResNet((2, 2, 2, 2), num_classes, cifar, **_binary_kwargs(scaling, weight_grad, pad_value))


def xnor_alexnet(num_classes=1000, *, dropout=0.5, scaling="alpha", weight_grad="ste", pad_value=0.0) -> XNORAlexNet:
    """XNOR-Net's binary AlexNet (XNORAlexNet), for 224×224 inputs."""
    return XNORAlexNet(num_classes, dropout, **_binary_kwargs(scaling, weight_grad, pad_value))


def xnor_digits_cnn(num_classes=10, width=32, *, scaling="alpha", weight_grad="ste", pad_value=0.0) -> XNORDigitsCNN:
    """The small binary CNN for 8×8 digits (XNORDigitsCNN)."""
    return XNORDigitsCNN(num_classes, width, **_binary_kwargs(scaling, weight_grad, pad_value))


def binary_modules(model: nn.Module):
    """The model's XNORConv2d and XNORLinear modules, in module order."""
    return [module for module in model.modules() if isinstance(module, _BINARY)]


def _batchnorm_inputs(model):
    """(parent, BatchNorm's name, binary layer) for each BatchNorm whose output feeds only a binary
    layer: consecutive children of an nn.Sequential, and BinaryBasicBlock's bn1 → conv1, bn2 → conv2."""
    pairs = []
    for parent in model.modules():
        if isinstance(parent, BinaryBasicBlock):
            pairs += [(parent, "bn1", parent.conv1), (parent, "bn2", parent.conv2)]
        elif isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for name, after in zip(names, names[1:]):
                if isinstance(parent._modules[name], nn.modules.batchnorm._BatchNorm):
                    pairs.append((parent, name, parent._modules[after]))
    return [(parent, name, layer) for parent, name, layer in pairs if isinstance(layer, _BINARY)]


def pack_model(model: nn.Module, keep_latent=True, fold_batchnorm=False) -> nn.Module:
    """Pack every binary layer's weight now (module.pack(keep_latent)); keep_latent=False drops the
    latent float weights, so the model keeps only what inference needs. fold_batchnorm=True (an
    eval-mode model) also folds each BatchNorm that feeds only a binary layer into that layer's
    packing (XNORConv2d.fold_batchnorm: exactly the same bits) and replaces it by nn.Identity; the
    model is then inference-only (its parameters stop requiring grad), and its state_dict has the
    bounds in place of those BatchNorms. Returns the model."""
    check_bool("pack_model", "keep_latent", keep_latent)
    if check_bool("pack_model", "fold_batchnorm", fold_batchnorm):
        if model.training:
            raise ValueError("cvops.pack_model: fold_batchnorm=True needs an eval-mode model (call model.eval())")
        for parent, name, layer in _batchnorm_inputs(model):
            if layer.scaling != "alpha_k" and layer.fold_batchnorm(getattr(parent, name)):
                setattr(parent, name, nn.Identity())
        model.requires_grad_(False)
    for module in binary_modules(model):
        module.pack(keep_latent=keep_latent)
    return model


def _weight_shape(module):
    if isinstance(module, XNORConv2d):
        return module.out_channels, module.in_channels, *module.kernel_size
    return module.out_features, module.in_features


def _packed_weight_bytes(module):
    """The bytes of the module's packed bits and alpha, from its shape (nothing is packed or run)."""
    out_channels, channels, *kernel = _weight_shape(module)
    taps = kernel[0] * kernel[1] if kernel else 1
    alpha_dtype = module.packed_alpha.dtype if module.packed_alpha is not None else opmath(module.weight.dtype)
    words = (channels + 63) // 64
    return out_channels * taps * words * 8 + out_channels * alpha_dtype.itemsize


def _tensor_bytes(tensor, float32):
    return tensor.numel() * (4 if float32 else tensor.element_size())


def model_size_bytes(model: nn.Module, packed=True) -> int:
    """The bytes of the tensors inference needs, computed from the shapes (nothing is run).

    packed=True: each binary layer as its packed bits (int64 words, ceil(C / 64) a pixel) and alpha,
    plus every other floating-point parameter and buffer as stored (biases, BatchNorm statistics,
    the real-valued layers). packed=False: the float model, every weight (the binary layers' latent
    weights included) and floating-point buffer as float32. BatchNorm's integer num_batches_tracked
    counters are not counted."""
    check_bool("model_size_bytes", "packed", packed)
    total = 0
    binary = set()
    for module in binary_modules(model):
        binary.add(id(module))
        if packed:
            total += _packed_weight_bytes(module)
        else:
            shape = _weight_shape(module)
            numel = 1
            for size in shape:
                numel *= size
            total += 4 * numel
        if module.bias is not None:
            total += _tensor_bytes(module.bias, not packed)
    for module in model.modules():
        if id(module) in binary:
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor is not None and tensor.dtype.is_floating_point:
                total += _tensor_bytes(tensor, not packed)
    return total


def model_sizes(model: nn.Module) -> dict:
    """dict(float_bytes, packed_bytes, ratio = float_bytes / packed_bytes) of model_size_bytes."""
    float_bytes = model_size_bytes(model, packed=False)
    packed_bytes = model_size_bytes(model, packed=True)
    return {"float_bytes": float_bytes, "packed_bytes": packed_bytes, "ratio": float_bytes / packed_bytes}
