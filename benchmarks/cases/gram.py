"""Gram family: cvops.gram_matrix / style_loss against torch.bmm composites, on VGG-16 style layers."""

import torch

import cvops
from benchmarks.cases import Case

# (B, C, H, W): the VGG-16 relu layers of a 256² image at B=4, and the B-CNN layer B=8 C=512 28².
VGG_256 = [(4, 64, 256, 256), (4, 128, 128, 128), (4, 256, 64, 64), (4, 512, 32, 32)]
GRAM_SHAPES = VGG_256 + [(8, 512, 28, 28)]
STYLE_SHAPES = VGG_256
# The target cases, kept in --quick.
QUICK_GRAM = {(4, 64, 256, 256), (8, 512, 28, 28)}
QUICK_STYLE = {(4, 512, 32, 32)}


def bmm_gram(x):
    """The peer: F·Fᵀ / (C·H·W) with one torch.bmm."""
    f = x.reshape(x.shape[0], x.shape[1], -1)
    return torch.bmm(f, f.transpose(1, 2)) / (f.shape[1] * f.shape[2])


def bmm_style_loss(x, target):
    return ((bmm_gram(x) - target) ** 2).mean()


def features(shape, device, dtype=torch.float32, seed=0):
    # Post-ReLU like VGG features; seeded so every run and both impls see the same data.
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).relu_().to(device, dtype)


def shape_label(shape, dtype=torch.float32):
    label = "x".join(map(str, shape))
    return label if dtype == torch.float32 else f"{label} {str(dtype).removeprefix('torch.')}"


def gram_case(shape, device, dtype=torch.float32):
    def build():
        x = features(shape, device, dtype)
        return (lambda: bmm_gram(x)), (lambda: cvops.gram_matrix(x))

    return Case(
        "gram_matrix",
        shape_label(shape, dtype),
        device,
        "torch.bmm",
        build,
        quick=shape in QUICK_GRAM and dtype == torch.float32,
        rtol=1e-3 if dtype == torch.float32 else 2e-2,
    )


def style_case(shape, device, backward):
    def build():
        x = features(shape, device).requires_grad_(backward)
        target = bmm_gram(features((1, *shape[1:]), device, seed=1))[0]  # one [C, C] style Gram
        return loss_step(bmm_style_loss, x, target, backward), loss_step(cvops.style_loss, x, target, backward)

    op = "style_loss fwd+bwd" if backward else "style_loss fwd"
    return Case(
        op,
        shape_label(shape),
        device,
        "bmm composite",
        build,
        peak_memory=True,
        quick=backward and shape in QUICK_STYLE,
    )


def loss_step(loss_fn, x, target, backward):
    """A closure returning x.grad after forward+backward, or the loss of a no-grad forward."""

    def fwd_bwd():
        x.grad = None  # a fresh gradient each call, as in a training step
        loss_fn(x, target).backward()
        return x.grad

    def fwd():
        with torch.no_grad():
            return loss_fn(x, target)

    return fwd_bwd if backward else fwd


def cases(device):
    dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])
    grams = [gram_case(s, device, d) for d in dtypes for s in GRAM_SHAPES if d == torch.float32 or s[1] >= 256]
    styles = [style_case(s, device, backward) for backward in (True, False) for s in STYLE_SHAPES]
    return grams + styles
