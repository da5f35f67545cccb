"""instance_norm family: cvops.conditional_instance_norm against the usual composite, a gather of
(γ, β) around F.instance_norm (which PyTorch runs as batch_norm on a reshaped tensor)."""

import copy
import types

import torch
import torch.nn.functional as F

import cvops
from benchmarks.cases import Case
from cvops.models.style_transfer import TransformerNet
from cvops.nn import ConditionalInstanceNorm2d

NUM_STYLES = 4
# The target shape, and the TransformerNet CIN layers for a 4×3×256×256 image.
SHAPES = [(8, 128, 128, 128), (4, 32, 256, 256), (4, 64, 128, 128), (4, 128, 64, 64)]
QUICK = {(8, 128, 128, 128)}


def composite_cin(x, weight, bias, style, activation=None):
    gamma, beta = weight[style], bias[style]
    y = F.instance_norm(x) * gamma[:, :, None, None] + beta[:, :, None, None]
    return y.relu() if activation == "relu" else y


def with_composite_norms(net):
    """A copy of net (same weights) whose ConditionalInstanceNorm2d layers run the composite."""
    twin = copy.deepcopy(net)
    for module in twin.modules():
        if isinstance(module, ConditionalInstanceNorm2d):
            module.forward = types.MethodType(
                lambda self, x, style: composite_cin(x, self.weight, self.bias, style, self.activation), module
            )
    return twin


def transformer_net_case(device):
    def build():
        torch.manual_seed(0)
        net = TransformerNet(NUM_STYLES).to(device).eval()
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, ConditionalInstanceNorm2d):
                    module.weight.uniform_(0.5, 1.5)
        twin = with_composite_norms(net)
        images = torch.rand(4, 3, 256, 256, device=device)
        style = torch.arange(4, device=device) % NUM_STYLES

        def run(model):
            def forward():
                with torch.no_grad():
                    return model(images, style)

            return forward

        return run(twin), run(net)

    return Case("TransformerNet fwd", "4x3x256x256", device, "same net, composite CIN", build)


def inputs(shape, device, channels_last, requires_grad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(NUM_STYLES, shape[1], generator=gen).to(device)
    bias = torch.randn(NUM_STYLES, shape[1], generator=gen).to(device)
    style = (torch.arange(shape[0]) % NUM_STYLES).to(device)
    leaves = [t.requires_grad_(requires_grad) for t in (x, weight, bias)]
    return leaves, style


def step(fn, leaves, style, grad_out):
    """Forward only (grad_out None), or forward+backward returning x's gradient (fresh grads every
    call)."""
    x, weight, bias = leaves

    def forward():
        return fn(x, weight, bias, style)

    def forward_backward():
        for t in leaves:
            t.grad = None
        fn(x, weight, bias, style).backward(grad_out)
        return x.grad

    return forward if grad_out is None else forward_backward


def cin_case(shape, device, channels_last, backward):
    def build():
        leaves, style = inputs(shape, device, channels_last, backward)
        grad_out = torch.randn_like(leaves[0]) if backward else None  # the same for both
        return (
            step(composite_cin, leaves, style, grad_out),
            step(cvops.conditional_instance_norm, leaves, style, grad_out),
        )

    numel = torch.Size(shape).numel()
    # x read and out written once (forward); + grad_out read, grad_x written (backward) — fp32.
    bytes_moved = 4 * numel * (4 if backward else 2)
    op = "cond_instance_norm " + ("fwd+bwd" if backward else "fwd")
    label = "x".join(map(str, shape)) + (" cl" if channels_last else "")
    return Case(
        op,
        label,
        device,
        "gather + F.instance_norm",
        build,
        peak_memory=True,
        quick=shape in QUICK and not channels_last,
        bytes_moved=bytes_moved,
    )


def cases(device):
    norms = [
        cin_case(shape, device, channels_last, backward)
        for backward in (False, True)
        for shape in SHAPES
        for channels_last in ((False, True) if shape == SHAPES[0] else (False,))
    ]
    return norms + [transformer_net_case(device)]
