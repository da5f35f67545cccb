"""One small CUDA call of every kernel, forward and backward, against the CPU result in float64.
scripts/gpu_check.sh runs these (marker `sanitize`) under compute-sanitizer memcheck and racecheck,
so they stay small: a few blocks each, odd sizes that exercise the tile and vector edges."""

import pytest
import torch

import cvops

pytestmark = [pytest.mark.cuda, pytest.mark.sanitize]


def both(fn, *tensors, backward=True):
    """fn on CPU float64 and on CUDA float64; with backward, also the inputs' gradients of sum(out)."""
    results = []
    for device in ("cpu", "cuda"):
        inputs = [t.detach().to(device).requires_grad_(backward and t.is_floating_point()) for t in tensors]
        out = fn(*inputs)
        outs = out if isinstance(out, tuple) else (out,)
        grads = []
        if backward:
            diff = [t for t in inputs if t.requires_grad]
            total = sum(
                (
                    o.double() * torch.linspace(0.5, 1.5, o.numel(), device=device, dtype=torch.float64).view(o.shape)
                ).sum()
                for o in outs
                if o.is_floating_point()
            )
            grads = torch.autograd.grad(total, diff, allow_unused=True)
        results.append([o.detach().cpu() for o in outs] + [g.cpu() for g in grads if g is not None])
    for cpu, cuda in zip(*results, strict=True):
        torch.testing.assert_close(cuda, cpu, rtol=1e-9, atol=1e-9)


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def boxes(n):
    b = torch.rand(n, 4, dtype=torch.float64) * 40
    b[:, 2:] += b[:, :2] + 1
    return b


def test_gram_kernels():
    both(lambda x: cvops.gram_matrix(x), rand(2, 67, 5, 7))
    target = rand(67, 67)
    both(lambda x, t: cvops.style_loss(x, t), rand(2, 67, 5, 7), target)
    both(lambda x, t: cvops.style_loss(x, t, reduction="none"), rand(1, 9, 100, 90), rand(9, 9))  # split N


def test_instance_norm_kernels():
    w, b = rand(3, 5), rand(3, 5)
    style = torch.tensor([0, 2, 1])
    both(
        lambda x, w, b: cvops.conditional_instance_norm(x, w, b, style.to(x.device), activation="relu"),
        rand(3, 5, 7, 9),
        w,
        b,
    )
    x = rand(3, 70, 6, 5).to(memory_format=torch.channels_last)
    w, b = rand(2, 70), rand(2, 70)
    both(lambda x, w, b: cvops.conditional_instance_norm(x, w, b, torch.tensor([1, 0, 1], device=x.device)), x, w, b)


def test_boxes_kernels():
    for kind in ("iou", "giou", "diou", "ciou"):
        both(lambda a, b, kind=kind: cvops.box_iou(a, b, kind=kind), boxes(37), boxes(65))
        both(lambda a, b, kind=kind: cvops.box_iou_aligned(a, b, kind=kind), boxes(37), boxes(37))
        both(lambda a, b, kind=kind: cvops.generalized_box_iou_loss(a, b), boxes(37), boxes(37))


def test_nms_kernels():
    b, s = boxes(300), torch.rand(300, dtype=torch.float64)
    both(lambda b, s: cvops.nms(b, s, 0.3), b, s, backward=False)
    idxs = torch.randint(0, 4, (300,))
    both(lambda b, s: cvops.batched_nms(b, s, idxs.to(b.device), 0.3), b, s, backward=False)
    scores = torch.rand(2, 150, 3, dtype=torch.float64)
    both(
        lambda b, s: cvops.multiclass_nms(b, s, iou_threshold=0.4, max_total=20),
        boxes(300).view(2, 150, 4),
        scores,
        backward=False,
    )
    both(
        lambda b, s: cvops.soft_nms(b, s, method="gaussian"),
        boxes(80),
        torch.rand(80, dtype=torch.float64),
        backward=False,
    )


def test_bilinear_kernels():
    x, y = rand(2, 9, 5, 3), rand(2, 6, 5, 3)
    both(lambda x: cvops.bilinear_pool(x), x)
    both(lambda x, y: cvops.bilinear_pool(x, y), x, y)
    params = [p.double() if p.is_floating_point() else p for p in cvops.compact_bilinear_params("ts", 9, 6, 40)]

    def ts(x, y):
        return cvops.compact_bilinear_pool(x, y, output_dim=40, params=[p.to(x.device) for p in params])

    both(ts, x, y)
    both(lambda x: cvops.compact_bilinear_pool(x, output_dim=40, kind="rm"), x)
    both(lambda a, b: cvops.factorized_bilinear_pool(a, b, k=5), rand(3, 35), rand(3, 35))
    both(lambda x, u: cvops.lowrank_bilinear_score(x, u, num_positive=2), x, rand(4, 9, 3))


def test_xcorr_kernels():
    scale = torch.tensor(0.5, dtype=torch.float64)
    for mode in ("full", "depthwise"):
        both(
            lambda x, z, s, mode=mode: cvops.xcorr(x, z, mode=mode, scale=s, padding=1),
            rand(3, 19, 13, 11),
            rand(3, 19, 5, 4),
            scale,
        )
        both(
            lambda x, z, mode=mode: cvops.xcorr(x, z, mode=mode), rand(2, 5, 70, 70), rand(1, 5, 65, 66)
        )  # global taps


def test_local_kernels():
    for stride, padding, dilation in [(1, 0, 1), (2, 2, 2)]:
        x = rand(3, 5, 13, 11)
        oh = (13 + 2 * padding - dilation * 2 - 1) // stride + 1
        ow = (11 + 2 * padding - dilation * 2 - 1) // stride + 1
        both(
            lambda x, w, b, s=stride, p=padding, d=dilation: cvops.locally_connected2d(
                x, w, b, stride=s, padding=p, dilation=d
            ),
            x,
            rand(oh, ow, 4, 5, 3, 3),
            rand(4, oh, ow),
        )
    # batches of the weight-streaming kernel, of the 32- and 64-sample tiles and of dx's 128-sample
    # tiles; 17 channels (a partial channel tile), 45 taps (a partial tap chunk)
    for batch in (3, 20, 40, 70):
        both(
            lambda x, w, b: cvops.locally_connected2d(x, w, b, padding=1),
            rand(batch, 5, 7, 6),
            rand(7, 6, 17, 5, 3, 3),
            rand(17, 7, 6),
        )


def _binary_checks():
    for C, pad_value, scaling in [(3, 0.0, "alpha"), (70, 1.0, "alpha_k"), (130, -1.0, "none")]:
        x, w = rand(3, C, 11, 9), rand(37, C, 3, 3)
        options = dict(padding=1, dilation=(1, 2), pad_value=pad_value, scaling=scaling)
        for dtype in (torch.float32, torch.float64):
            cpu = cvops.xnor_conv2d(x.to(dtype), w.to(dtype), **options)
            assert torch.equal(cvops.xnor_conv2d(x.to(dtype).cuda(), w.to(dtype).cuda(), **options).cpu(), cpu)
        assert torch.equal(cvops.pack_bits(x.cuda()).cpu(), cvops.pack_bits(x))
        assert torch.equal(torch.ops.cvops._pack_bits(x.cuda(), 1.0).cpu(), torch.ops.cvops._pack_bits(x, 1.0))
        bounds = rand(2, C).sort(0).values
        want = torch.ops.cvops._pack_bits(x, None, bounds)
        assert torch.equal(torch.ops.cvops._pack_bits(x.cuda(), None, bounds.cuda()).cpu(), want)
        # A bias and the K map: every step of the epilogue rounded on its own, as on the CPU.
        bias = rand(37)
        for dtype in (torch.float32, torch.float64):
            xd, wd, bd = x.to(dtype), w.to(dtype), bias.to(dtype)
            cpu = cvops.xnor_conv2d(xd, wd, bias=bd, padding=1, scaling="alpha_k")
            assert torch.equal(
                cvops.xnor_conv2d(xd.cuda(), wd.cuda(), bias=bd.cuda(), padding=1, scaling="alpha_k").cpu(), cpu
            )
    both(lambda x, w: cvops.xnor_conv2d(x, w, padding=1, scaling="alpha_k"), rand(2, 40, 7, 6), rand(5, 40, 3, 3))
    both(lambda x, w: cvops.xnor_linear(x, w), rand(9, 300), rand(17, 300))


def test_binary_kernels():
    """Packing and the 1-bit tensor-core XNOR path: the CPU's bits, and the straight-through backward."""
    _binary_checks()


def test_binary_popc_kernels():
    """The LOP3/POPC path, which CVOPS_CUDA_BMMA=0 selects (once per process: in a child process)."""
    import os
    import subprocess
    import sys

    code = "import sys; sys.path.insert(0, 'tests'); import test_cuda_sanitize as t; t._binary_checks()"
    env = dict(os.environ, CVOPS_CUDA_BMMA="0")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)


def test_binary_kernels_capture_in_a_cuda_graph():
    """No host copies or synchronisations inside the ops: a CUDA graph replays them."""
    x, w = rand(3, 70, 9, 9).float().cuda(), rand(11, 70, 3, 3).float().cuda()
    packed = cvops.pack_binary_weight(w)
    want = cvops.xnor_conv2d(x, packed, padding=1, pad_value=1.0)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        cvops.xnor_conv2d(x, packed, padding=1, pad_value=1.0)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = cvops.xnor_conv2d(x, packed, padding=1, pad_value=1.0)
    graph.replay()
    assert torch.equal(out, want)
