"""Bilinear family: cvops bilinear/compact/factorized pooling and LRBP scores against the textbook
FFT Tensor Sketch (reference/bilinear.py) and the best pure-PyTorch composites, on the B-CNN layer
(VGG-16 conv5_3 at 448²/2 = 28², B = 8, C = 512) and the MFB stage of a VQA head."""

import torch
import torch.nn.functional as F

import cvops
from benchmarks.cases import Case
from reference import bilinear as ref

BCNN = (8, 512, 28, 28)
SKETCH_DIM = 8192
MFB = (64, 5, 1000)  # B, k, o
LRBP = (8, 512, 28, 28, 200, 8)  # B, C, H, W, K classes, rank r
EPS = 1e-8


def features(shape, device, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).relu_().to(device, dtype)  # post-ReLU, like conv5_3


def shape_label(shape, dtype=torch.float32, extra=""):
    label = "x".join(map(str, shape)) + extra
    return label if dtype == torch.float32 else f"{label} {str(dtype).removeprefix('torch.')}"


def epilogue(z):
    return F.normalize(torch.sign(z) * torch.sqrt(z.abs() + EPS), dim=1)


def bmm_gram(x):
    f = x.reshape(x.shape[0], x.shape[1], -1)
    return torch.bmm(f, f.transpose(1, 2)) / f.shape[2]


def bmm_bilinear_pool(x):
    """The peer: one torch.bmm, then signed sqrt and F.normalize."""
    return epilogue(bmm_gram(x).flatten(1))


def sketch_composite(h1, s1, h2, s2, d):
    """The best pure-PyTorch Tensor Sketch we found: the same GEMM route (G = F·Fᵀ by torch.bmm,
    then the signed entries of G index_add'ed into their bins). Faster than a CSR sparse matmul
    of G (29 ms) and ~80× faster than the per-position FFT formulation on the B-CNN layer."""
    bins = ((h1[:, None] + h2[None, :]) % d).flatten()
    signs = (s1[:, None] * s2[None, :]).flatten()

    def pool(x):
        g = bmm_gram(x).flatten(1)
        z = g.new_zeros(g.shape[0], d).index_add_(1, bins, g * signs.to(g.dtype))
        return epilogue(z)

    return pool


def sparse_sketch_fft(h1, s1, h2, s2, d):
    """The FFT formulation as the public PyTorch implementations run it (e.g. gdlg's
    CompactBilinearPooling): count sketches as sparse-matrix products over every position, rfft,
    product, irfft, sum over positions. reference.bilinear.compact_bilinear_pool (kind "ts") scatters
    the sketches with index_add instead, about twice as fast on CPU."""

    def sketch_matrix(h, s, channels):
        index = torch.stack([torch.arange(channels, device=h.device), h])
        # The indices are in range by construction: say so, rather than have torch warn per call.
        return torch.sparse_coo_tensor(index, s.float(), (channels, d), check_invariants=False).t().coalesce()

    def pool(x):
        B, C = x.shape[:2]
        p = x.flatten(2).transpose(1, 2).reshape(-1, C)
        a = torch.sparse.mm(sketch_matrix(h1, s1, C), p.t()).t().reshape(B, -1, d)
        b = torch.sparse.mm(sketch_matrix(h2, s2, C), p.t()).t().reshape(B, -1, d)
        z = torch.fft.irfft(torch.fft.rfft(a, n=d) * torch.fft.rfft(b, n=d), n=d).sum(1) / a.shape[1]
        return epilogue(z)

    return pool


def compact_cases(device):
    def build_fft():
        x = features(BCNN, device)
        h1, s1, h2, s2 = cvops.compact_bilinear_params("ts", BCNN[1], BCNN[1], SKETCH_DIM, device=device)
        peer = lambda: ref.compact_bilinear_pool(x, params=(h1, s1, h2, s2), output_dim=SKETCH_DIM)  # noqa: E731
        return peer, lambda: cvops.compact_bilinear_pool(x, output_dim=SKETCH_DIM, params=(h1, s1, h2, s2))

    def build_public_fft():
        x = features(BCNN, device)
        params = cvops.compact_bilinear_params("ts", BCNN[1], BCNN[1], SKETCH_DIM, device=device)
        peer = sparse_sketch_fft(*params, SKETCH_DIM)
        return (lambda: peer(x)), lambda: cvops.compact_bilinear_pool(x, output_dim=SKETCH_DIM, params=params)

    def build_composite():
        x = features(BCNN, device)
        params = cvops.compact_bilinear_params("ts", BCNN[1], BCNN[1], SKETCH_DIM, device=device)
        peer = sketch_composite(*params, SKETCH_DIM)
        return (lambda: peer(x)), lambda: cvops.compact_bilinear_pool(x, output_dim=SKETCH_DIM, params=params)

    def build_fwd_bwd():
        x = features(BCNN, device).requires_grad_(True)
        params = cvops.compact_bilinear_params("ts", BCNN[1], BCNN[1], SKETCH_DIM, device=device)
        peer = sketch_composite(*params, SKETCH_DIM)
        weight = torch.randn(SKETCH_DIM, device=device)
        ours = lambda t: cvops.compact_bilinear_pool(t, output_dim=SKETCH_DIM, params=params)  # noqa: E731
        return grad_step(peer, x, weight), grad_step(ours, x, weight)

    label = shape_label(BCNN, extra=f" d={SKETCH_DIM}")
    # The FFT formulation is measured on CPU and GPU alike: it is the baseline the speed-up targets are stated against.
    return [
        Case(
            "compact_bilinear_pool ts",
            label,
            device,
            "FFT formulation (reference)",
            build_fft,
            peak_memory=True,
            quick=True,
            rtol=1e-3,
        ),
        Case(
            "compact_bilinear_pool ts",
            label,
            device,
            "FFT, sparse-mm sketch (public impls)",
            build_public_fft,
            peak_memory=True,
            quick=True,
            rtol=1e-3,
        ),
        Case(
            "compact_bilinear_pool ts",
            label,
            device,
            "bmm + index_add composite",
            build_composite,
            peak_memory=True,
            quick=True,
        ),
        # Gradients through the signed sqrt of bins whose sum nearly cancels (slope up to 1/(2√eps))
        # differ between two float32 computations by ~1e-3 of the largest gradient: the float64
        # tests check them exactly.
        Case(
            "compact_bilinear_pool ts fwd+bwd",
            label,
            device,
            "bmm + index_add composite",
            build_fwd_bwd,
            peak_memory=True,
            atol_scale=2e-3,
        ),
    ]


def grad_step(pool, x, weight):
    """A closure returning x.grad after forward + backward of (pool(x)·weight).sum()."""

    def run():
        x.grad = None
        (pool(x) * weight).sum().backward()
        return x.grad

    return run


def bilinear_cases(device):
    dtypes = [torch.float32] + ([torch.float16] if device == "cuda" else [])
    cases = []
    for dtype in dtypes:

        def build(dtype=dtype):
            x = features(BCNN, device, dtype)
            return (lambda: bmm_bilinear_pool(x)), (lambda: cvops.bilinear_pool(x))

        cases.append(
            Case(
                "bilinear_pool",
                shape_label(BCNN, dtype),
                device,
                "torch.bmm pooling",
                build,
                peak_memory=True,
                quick=dtype == torch.float32,
                rtol=1e-3 if dtype == torch.float32 else 2e-2,
            )
        )

    def build_xy():
        x, y = features(BCNN, device), features((8, 256, 28, 28), device, seed=1)
        peer = lambda: epilogue((torch.bmm(x.flatten(2), y.flatten(2).transpose(1, 2)) / 784).flatten(1))  # noqa: E731
        return peer, lambda: cvops.bilinear_pool(x, y)

    def build_fwd_bwd():
        x = features(BCNN, device).requires_grad_(True)
        weight = torch.randn(BCNN[1] ** 2, device=device)
        return grad_step(bmm_bilinear_pool, x, weight), grad_step(cvops.bilinear_pool, x, weight)

    cases.append(
        Case(
            "bilinear_pool x,y",
            shape_label(BCNN, extra=" y 8x256x28x28"),
            device,
            "torch.bmm pooling",
            build_xy,
            peak_memory=True,
        )
    )
    cases.append(
        Case("bilinear_pool fwd+bwd", shape_label(BCNN), device, "torch.bmm pooling", build_fwd_bwd, peak_memory=True)
    )
    return cases


def mfb_composite(x, y, k):
    return epilogue((x * y).view(x.shape[0], -1, k).sum(-1))


def mfb_cases(device):
    batch, k, o = MFB
    label = f"B={batch} k={k} o={o}"

    def inputs():
        # Positive inputs keep the pooled sums away from 0, where the signed sqrt's slope (and so the
        # float32 agreement of two implementations' gradients) is ill-conditioned.
        gen = torch.Generator().manual_seed(0)
        return [torch.rand(batch, k * o, generator=gen).to(device) for _ in range(2)]

    def build():
        x, y = inputs()
        return (lambda: mfb_composite(x, y, k)), (lambda: cvops.factorized_bilinear_pool(x, y, k=k))

    def build_fwd_bwd():
        x, y = (t.requires_grad_(True) for t in inputs())
        weight = torch.randn(o, device=device)

        def step(pool):
            def run():
                x.grad = y.grad = None
                (pool(x, y) * weight).sum().backward()
                return torch.cat([x.grad, y.grad], 1)

            return run

        return step(lambda a, b: mfb_composite(a, b, k)), step(lambda a, b: cvops.factorized_bilinear_pool(a, b, k=k))

    return [
        Case("factorized_bilinear_pool", label, device, "mul + sum + sqrt + normalize", build, quick=True),
        Case("factorized_bilinear_pool fwd+bwd", label, device, "mul + sum + sqrt + normalize", build_fwd_bwd),
    ]


def lowrank_cases(device):
    batch, channels, height, width, classes, rank = LRBP
    label = f"{batch}x{channels}x{height}x{width} K={classes} r={rank}"

    def build():
        x = features((batch, channels, height, width), device)
        u = torch.randn(classes, channels, rank, generator=torch.Generator().manual_seed(1)).to(device) * 0.05
        positive = rank // 2

        def peer():  # one matmul over all positions, then square and sum
            z = torch.matmul(x.flatten(2).transpose(1, 2), u.permute(1, 0, 2).reshape(channels, -1))
            sq = z.square().sum(1).view(batch, classes, rank)
            return sq[..., :positive].sum(-1) - sq[..., positive:].sum(-1)

        return peer, lambda: cvops.lowrank_bilinear_score(x, u, num_positive=positive)

    return [Case("lowrank_bilinear_score", label, device, "matmul + square + sum", build, peak_memory=True)]


def cases(device):
    return compact_cases(device) + bilinear_cases(device) + mfb_cases(device) + lowrank_cases(device)
