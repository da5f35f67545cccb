"""binary family: cvops's bit-packed XNOR layers against the float layers they replace.

- xnor_conv2d on ResNet-18's 3×3 layer shapes (C = O = 64 at 56², 128 at 28², 256 at 14², 512 at 7²;
  batch 16, and 128 for 256 at 14² on CUDA), with the weight packed once in build (as a deployed
  layer holds it); and xnor_linear, 256 × 4096 → 4096. The peer row times F.conv2d / F.linear of the
  same shapes on the float x and the float weight (oneDNN on CPU; cuDNN on CUDA in float32 (TF32
  where torch allows it), float16 and bfloat16, where cvops packs the same reduced-precision x). The
  outputs differ by design (binary against float), so the peer closure times the float layer and
  returns the bit-exact float simulation reference.binary.xnor_conv2d / xnor_linear, computed once
  in build on the CPU (a direct convolution: its integer counts are exact, where cuDNN's Winograd
  or FFT algorithms could round): the check compares cvops with that reference, within 1e-6.
- xnor_conv2d fwd+bwd: a training step (forward and backward of a weighted sum) of
  cvops.nn.XNORConv2d against the simulated float layer every PyTorch XNOR-Net runs
  (reference.binary.simulated_xnor_conv2d), 16×256×14² 3×3, with the CPU memory of one step. The
  input gradients are compared: both pass ∂L/∂sign(x) where |x| <= 1 (the weight gradients agree
  too: weight_grad="ste" is the simulated layer's alpha · dW̃ · 1[|W| <= 1]).
- XNOR-Net ResNet-18 inference (cvops.models.xnor_net, packed, eval) against torchvision's float
  ResNet-18, batch 8 at 224²: different models, so this row compares time only (both closures
  return the logits' shape). A second row folds the BatchNorms in front of the binary layers into
  their packing (pack_model(..., fold_batchnorm=True): the same bits, 16 fewer passes over the
  activations).

On CUDA the layer rows run as CUDA graphs (batch 16 is launch-bound there: a few microseconds of
work per kernel), peer and cvops alike.

The bytes autograd saves for backward, which run.py's table has no column for, and the float
against packed weight sizes: `python -m benchmarks.cases.binary` prints them (saved_activation_bytes,
weight_sizes).
"""

import torch
import torch.nn.functional as F

import cvops
import reference.binary as ref
from benchmarks.cases import Case

# (C = O, H = W) of ResNet-18's 3×3 convolutions, and the batches they run at.
LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]
BATCH = 16
CUDA_BATCHES = {(256, 14): (16, 128)}
QUICK_LAYER = (256, 14, 16)
LINEAR = (256, 4096, 4096)  # B, C in, D out
TRAIN_LAYER = (16, 256, 14)  # B, C = O, H = W
MODEL_BATCH = 8

PEER_LIBRARY = {"cpu": "oneDNN", "cuda": "cuDNN"}


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def dtypes(device):
    return [torch.float32] + ([torch.float16, torch.bfloat16] if device == "cuda" else [])


def conv_inputs(B, C, H, device, dtype, seed=0):
    """x [B, C, H, H] and a latent weight [C, C, 3, 3] in [-1, 1] (XNORConv2d's init)."""
    gen = torch.Generator().manual_seed(seed + B + C + H)
    x = torch.randn(B, C, H, H, generator=gen)
    w = torch.rand(C, C, 3, 3, generator=gen) * 2 - 1
    return x.to(device, dtype), w.to(device, dtype)


def graphed(fn, device):
    """On CUDA, fn captured once in a CUDA graph and replayed (its output is the graph's static
    output); on the CPU, fn itself."""
    if device != "cuda":
        return fn
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside the capture (allocator, cuBLAS/cuDNN handles)
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay():
        graph.replay()
        return out

    return replay


def timed_peer(fn, expected, device):
    """The peer row: fn timed (graphed on CUDA), the float reference returned for the check."""
    run = graphed(fn, device)

    def peer():
        run()
        return expected

    return peer


def conv_case(C, H, B, device, dtype):
    def build():
        x, w = conv_inputs(B, C, H, device, dtype)
        packed = cvops.pack_binary_weight(w)
        expected = ref.xnor_conv2d(x.cpu(), w.cpu(), padding=1).to(device)
        peer = timed_peer(lambda: F.conv2d(x, w, padding=1), expected, device)
        return peer, graphed(lambda: cvops.xnor_conv2d(x, packed, padding=1), device)

    packed_bytes = C * 9 * ((C + 63) // 64) * 8 + C * 4
    suffix = "" if dtype == torch.float32 else f" {dtype_name(dtype)}"
    return Case(
        "xnor_conv2d",
        f"{B}x{C}x{H}x{H} 3x3 p1{suffix}",
        device,
        f"F.conv2d {dtype_name(dtype)} ({PEER_LIBRARY[device]})",
        build,
        quick=(C, H, B) == QUICK_LAYER and dtype in (torch.float32, torch.float16),
        rtol=1e-6,
        atol_scale=1e-6,
        # x read, the packed weight read, the float32 output written
        bytes_moved=B * C * H * H * torch.tensor([], dtype=dtype).element_size() + packed_bytes + B * C * H * H * 4,
    )


def linear_case(device, dtype):
    B, C, D = LINEAR

    def build():
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(B, C, generator=gen).to(device, dtype)
        w = (torch.rand(D, C, generator=gen) * 2 - 1).to(device, dtype)
        packed = cvops.pack_binary_weight(w)
        expected = ref.xnor_linear(x.cpu(), w.cpu()).to(device)
        return timed_peer(lambda: F.linear(x, w), expected, device), graphed(
            lambda: cvops.xnor_linear(x, packed), device
        )

    suffix = "" if dtype == torch.float32 else f" {dtype_name(dtype)}"
    return Case(
        "xnor_linear",
        f"{B}x{C} -> {D}{suffix}",
        device,
        f"F.linear {dtype_name(dtype)}",
        build,
        rtol=1e-6,
        atol_scale=1e-6,
        bytes_moved=B * C * torch.tensor([], dtype=dtype).element_size() + D * (C // 64 * 8 + 4) + B * D * 4,
    )


def train_step(layer, x, weights):
    """A closure: x.grad after forward+backward of a weighted sum of layer(x)."""

    def fwd_bwd():
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        (layer(x) * weights).sum().backward()
        return x.grad

    return fwd_bwd


class SimulatedXNORConv2d(torch.nn.Module):
    """The float training layer (reference.binary.simulated_xnor_conv2d) over a latent weight."""

    def __init__(self, weight, padding):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)
        self.padding = padding

    def forward(self, x):
        return ref.simulated_xnor_conv2d(x, self.weight, padding=self.padding)


def train_layers(device):
    """(x requiring grad, the simulated layer, cvops.nn.XNORConv2d), the same latent weight in both."""
    B, C, H = TRAIN_LAYER
    torch.manual_seed(0)
    layer = cvops.nn.XNORConv2d(C, C, 3, padding=1).to(device).train()
    simulated = SimulatedXNORConv2d(layer.weight.detach().clone(), padding=1)
    x = torch.randn(B, C, H, H, generator=torch.Generator().manual_seed(2)).to(device).requires_grad_()
    return x, simulated, layer


def train_case(device):
    B, C, H = TRAIN_LAYER

    def build():
        x, simulated, layer = train_layers(device)
        weights = torch.randn(B, C, H, H, generator=torch.Generator().manual_seed(3)).to(device)
        return train_step(simulated, x, weights), train_step(layer, x, weights)

    return Case(
        "xnor_conv2d fwd+bwd",
        f"XNORConv2d {B}x{C}x{H}x{H} 3x3 p1",
        device,
        "simulated float layer (STE)",
        build,
        peak_memory=True,
        # On CUDA both input gradients are cuDNN convolution backwards, TF32 where torch allows it.
        rtol=1e-3 if device == "cpu" else 1e-2,
        atol_scale=1e-4 if device == "cpu" else 1e-3,
    )


def model_case(device, fold_batchnorm):
    def build():
        import torchvision

        from cvops.models.xnor_net import pack_model, xnor_resnet18

        torch.manual_seed(0)
        model = xnor_resnet18().to(device).eval()
        pack_model(model, keep_latent=False, fold_batchnorm=fold_batchnorm)
        float_model = torchvision.models.resnet18().to(device).eval()
        x = torch.randn(MODEL_BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)

        def forward(net):
            with torch.no_grad():
                return torch.tensor(net(x).shape, dtype=torch.float32)

        return (lambda: forward(float_model)), (lambda: forward(model))

    return Case(
        "XNOR-Net ResNet-18 inference",
        f"{MODEL_BATCH}x3x224x224, packed" + (", BN folded" if fold_batchnorm else ""),
        device,
        "torchvision resnet18 float32",
        build,
    )


def cases(device):
    convs = [
        conv_case(C, H, B, device, dtype)
        for dtype in dtypes(device)
        for C, H in LAYERS
        for B in (CUDA_BATCHES.get((C, H), (BATCH,)) if device == "cuda" else (BATCH,))
    ]
    linears = [linear_case(device, dtype) for dtype in dtypes(device)]
    return convs + linears + [train_case(device), model_case(device, False), model_case(device, True)]


def saved_bytes(fn, exclude=()):
    """(bytes, [(shape, dtype, bytes)]) of the tensors autograd saves while fn() runs, each storage
    counted once (by data_ptr), the tensors in `exclude` (the parameters) left out."""
    excluded = {t.data_ptr() for t in exclude}
    saved = {}

    def pack(t):
        if t.data_ptr() not in excluded:
            nbytes = t.numel() * t.element_size()
            if nbytes > saved.get(t.data_ptr(), (0,))[0]:
                saved[t.data_ptr()] = (nbytes, tuple(t.shape), dtype_name(t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    tensors = [(shape, dtype, nbytes) for nbytes, shape, dtype in saved.values()]
    return sum(nbytes for _, _, nbytes in tensors), tensors


def saved_activation_bytes(device="cpu"):
    """The bytes autograd saves for backward in one forward of the TRAIN_LAYER layer, the simulated
    float layer against cvops.nn.XNORConv2d (the input x counted, the latent weight not)."""
    x, simulated, layer = train_layers(device)
    result = {}
    for name, module in (("simulated", simulated), ("cvops", layer)):
        result[name], result[f"{name}_tensors"] = saved_bytes(lambda m=module: m(x), list(module.parameters()))
    result["ratio"] = result["simulated"] / result["cvops"]
    return result


def weight_sizes(C=256, D=256, k=3):
    """float32 against packed bytes of a C → D k×k binary convolution's weight."""
    w = torch.rand(D, C, k, k) * 2 - 1
    float_bytes = w.numel() * w.element_size()
    packed_bytes = cvops.pack_binary_weight(w).numel_bytes()
    return {"float_bytes": float_bytes, "packed_bytes": packed_bytes, "ratio": float_bytes / packed_bytes}


def main():
    B, C, H = TRAIN_LAYER
    saved = saved_activation_bytes()
    print(f"Saved for backward, one forward of a {C}->{C} 3x3 layer on {B}x{C}x{H}x{H} (cpu):")
    for name in ("simulated", "cvops"):
        print(f"  {name}: {saved[name]} bytes")
        for shape, dtype, nbytes in saved[f"{name}_tensors"]:
            print(f"    {dtype} {list(shape)}: {nbytes} bytes")
    print(f"  ratio simulated / cvops: {saved['ratio']:.1f}x")
    sizes = weight_sizes()
    print(
        f"Weight of a {C}->{C} 3x3 layer: float32 {sizes['float_bytes']} bytes, packed {sizes['packed_bytes']} "
        f"bytes ({sizes['ratio']:.1f}x smaller)"
    )
    try:
        from cvops.models.xnor_net import model_sizes, pack_model, xnor_resnet18
    except ImportError as e:
        print(f"XNOR-Net ResNet-18: unavailable ({e})")
        return
    model = xnor_resnet18()
    pack_model(model, keep_latent=False)
    sizes = model_sizes(model)
    print(
        f"XNOR-Net ResNet-18: float32 {sizes['float_bytes']} bytes, packed {sizes['packed_bytes']} bytes "
        f"({sizes['ratio']:.1f}x smaller)"
    )


if __name__ == "__main__":
    main()
