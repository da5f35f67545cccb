"""local family: cvops.locally_connected2d against the F.unfold + einsum layer users write
(reference/local.py), on DeepFace's three locally connected layers (Taigman et al. 2014; 16 channels
in and out): L4 16×63×63 → 55×55 by 9×9, L5 16×55×55 → 25×25 by 7×7 stride 2, L6 16×25×25 → 21×21
by 5×5; at batch 32, and L4 also at batches 1 and 128 (forward only on the CPU); forward, and
forward+backward (all three gradients; the weight's is compared); on CUDA also L4 at batch 128 in
float16 (the tensor-core path); and a whole DeepFace forward. The peer materialises
every patch (B·C·kh·kw·oH·oW values: 500 MB for L4 at batch 32), hence the peak memory columns."""

import math
from unittest import mock

import torch

import cvops
import cvops.nn.local
import reference.local as ref
from benchmarks.cases import Case

# name: (C, D out channels, H, kernel, stride): square inputs and kernels.
LAYERS = {
    "L4": (16, 16, 63, 9, 1),
    "L5": (16, 16, 55, 7, 2),
    "L6": (16, 16, 25, 5, 1),
}
SHAPES = [("L4", 1), ("L4", 32), ("L4", 128), ("L5", 32), ("L6", 32)]
# The peer takes 5–6 s a forward (and ~3 GB) for L4 at batch 128 on a 2-core CPU, and several times
# that with its backward: on the CPU that shape is timed forward only.
CPU_FORWARD_ONLY = {("L4", 128)}
QUICK = ("L4", 32)


def output_size(H, kernel, stride):
    return (H - kernel) // stride + 1


def inputs(C, D, H, kernel, stride, B, device, grad, dtype=torch.float32):
    """x, and weight and bias at nn.Conv2d's scale (1/√fan_in) so outputs are O(1)."""
    gen = torch.Generator().manual_seed(B + H + kernel)
    out = output_size(H, kernel, stride)
    scale = 1 / math.sqrt(C * kernel * kernel)
    x = torch.randn(B, C, H, H, generator=gen)
    weight = torch.randn(out, out, D, C, kernel, kernel, generator=gen) * scale
    bias = torch.randn(D, out, out, generator=gen) * scale
    return [t.to(device, dtype).requires_grad_(grad) for t in (x, weight, bias)]


def step(fn, x, weight, bias, stride, backward):
    """A closure: the output (forward), or the weight's gradient after forward+backward of a weighted sum."""
    if not backward:
        return lambda: fn(x, weight, bias, stride=stride)
    out = output_size(x.shape[2], weight.shape[4], stride)
    shape = (x.shape[0], weight.shape[2], out, out)
    weights = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(x.device)

    def fwd_bwd():
        x.grad = weight.grad = bias.grad = None
        (fn(x, weight, bias, stride=stride) * weights).sum().backward()
        return weight.grad

    return fwd_bwd


def local_case(layer, B, device, backward, dtype=torch.float32):
    C, D, H, kernel, stride = LAYERS[layer]
    out = output_size(H, kernel, stride)

    def build():
        x, weight, bias = inputs(C, D, H, kernel, stride, B, device, backward, dtype)
        return step(ref.locally_connected2d, x, weight, bias, stride, backward), step(
            cvops.locally_connected2d, x, weight, bias, stride, backward
        )

    weight_numel = out * out * D * C * kernel * kernel
    size = dtype.itemsize
    return Case(
        f"locally_connected2d{' fwd+bwd' if backward else ''}",
        f"DeepFace {layer} {B}x{C}x{H}x{H} -> {D}x{out}x{out} k{kernel}"
        + (f" s{stride}" if stride > 1 else "")
        + ("" if dtype == torch.float32 else f" {str(dtype).removeprefix('torch.')}"),
        device,
        "unfold + einsum",
        build,
        peak_memory=True,
        quick=(layer, B) == QUICK and not backward,
        # forward: x, weight and bias read, the output written once
        bytes_moved=0 if backward else size * (B * C * H * H + weight_numel + D * out * out + B * D * out * out),
    )


def deepface_case(device, B=8):
    """A random-init DeepFace's embedding of B faces (eval mode, no_grad): the peer is the same network
    with its L4–L6 running the unfold + einsum layer, swapped in where LocallyConnected2d.forward
    looks up locally_connected2d, so the whole model's time and peak memory show what L4–L6 cost."""
    from cvops.models.deepface import DeepFace

    def build():
        torch.manual_seed(0)
        model = DeepFace(4030).to(device).eval()
        x = torch.randn(B, 3, DeepFace.INPUT_SIZE, DeepFace.INPUT_SIZE, generator=torch.Generator().manual_seed(0))
        x = x.to(device)

        def forward():
            with torch.no_grad():
                return model.embed(x)

        def peer():
            with mock.patch.object(cvops.nn.local, "locally_connected2d", ref.locally_connected2d):
                return forward()

        return peer, forward

    return Case(
        "DeepFace forward", f"embed {B}x3x152x152", device, "same, unfold + einsum L4-L6", build, peak_memory=True
    )


def cases(device):
    return (
        [
            local_case(layer, B, device, backward)
            for layer, B in SHAPES
            for backward in (False, True)
            if device == "cuda" or not (backward and (layer, B) in CPU_FORWARD_ONLY)
        ]
        + (
            # float16 runs cvops's tensor-core tiles (TF32 mma, float32 sums) and the peer's cuBLAS HMMA
            [local_case("L4", 128, device, False, torch.float16)] if device == "cuda" else []
        )
        + [deepface_case(device)]
    )
