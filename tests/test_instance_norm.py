"""The instance_norm family: conditional_instance_norm against reference/instance_norm.py, autograd,
opcheck, torch.compile, layouts, edge sizes, bad input, determinism and the module."""

import pytest
import torch

import cvops
import cvops.nn
from reference import instance_norm as ref
from tolerances import cuda_rtol

ACTIVATIONS = [None, "relu"]
LAYOUTS = ["nchw", "channels_last"]
NORM_RTOL = dict(float32=1e-4, float16=3e-3, bfloat16=3e-2)  # CUDA: see test_cuda_matches_reference


def make_inputs(B=3, C=5, H=4, W=6, S=4, style_kind="index", layout="nchw", dtype=torch.float64, device="cpu"):
    x = torch.randn(B, C, H, W, dtype=dtype, device=device) * 3 + 1
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(S, C, dtype=dtype, device=device)
    bias = torch.randn(S, C, dtype=dtype, device=device)
    if style_kind == "index":
        style = torch.randint(0, S, (B,), device=device)
    else:
        style = torch.rand(B, S, dtype=dtype, device=device).softmax(-1)
    return x, weight, bias, style


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("style_kind", ["index", "mix"])
@pytest.mark.parametrize("size", [(3, 5, 4, 6), (2, 70, 9, 7), (1, 3, 1, 1), (2, 2, 1, 5)])
def test_matches_reference(layout, activation, style_kind, size):
    x, weight, bias, style = make_inputs(*size, style_kind=style_kind, layout=layout)
    out = cvops.conditional_instance_norm(x, weight, bias, style, activation=activation)
    torch.testing.assert_close(
        out, ref.conditional_instance_norm(x, weight, bias, style, activation=activation), rtol=1e-10, atol=1e-10
    )
    assert out.is_contiguous(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format
    )


def test_non_contiguous_input():
    x, weight, bias, style = make_inputs(2, 4, 6, 5)
    x = x.transpose(2, 3)
    torch.testing.assert_close(
        cvops.conditional_instance_norm(x, weight, bias, style), ref.conditional_instance_norm(x, weight, bias, style)
    )


def test_one_hot_mixing_equals_index():
    x, weight, bias, style = make_inputs(4, 6, 5, 5, S=3)
    one_hot = torch.nn.functional.one_hot(style, 3).to(x.dtype)
    torch.testing.assert_close(
        cvops.conditional_instance_norm(x, weight, bias, one_hot),
        cvops.conditional_instance_norm(x, weight, bias, style),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 0, 3, 3), (2, 4, 0, 3)])
def test_empty(shape):
    x, weight, bias, style = make_inputs(*shape)
    out = cvops.conditional_instance_norm(x, weight, bias, style)
    assert out.shape == x.shape


def test_float32_and_half_types():
    x, weight, bias, style = make_inputs(2, 8, 16, 16, dtype=torch.float32)
    want = ref.conditional_instance_norm(x.double(), weight.double(), bias.double(), style)
    torch.testing.assert_close(
        cvops.conditional_instance_norm(x, weight, bias, style).double(), want, rtol=1e-5, atol=1e-5
    )
    for dtype, tol in [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)]:
        got = cvops.conditional_instance_norm(x.to(dtype), weight, bias, style)
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * 4)


def test_inputs_not_mutated_and_deterministic():
    x, weight, bias, style = make_inputs(2, 8, 8, 8, style_kind="mix", layout="channels_last")
    saved = [t.clone() for t in (x, weight, bias, style)]
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias, style)]
    grads = []
    for _ in range(2):
        out = cvops.conditional_instance_norm(*leaves, activation="relu")
        grads.append(torch.autograd.grad(out.square().sum(), leaves))
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    for before, after in zip(saved, (x, weight, bias, style)):
        assert torch.equal(before, after)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("style_kind", ["index", "mix"])
def test_gradcheck(layout, activation, style_kind):
    x, weight, bias, style = make_inputs(2, 3, 3, 4, S=3, style_kind=style_kind, layout=layout)
    leaves = [x, weight, bias] + ([style] if style_kind == "mix" else [])
    leaves = [t.detach().clone().requires_grad_() for t in leaves]

    def fn(*args):
        s = args[3] if style_kind == "mix" else style
        return cvops.conditional_instance_norm(args[0], args[1], args[2], s, activation=activation)

    assert torch.autograd.gradcheck(fn, leaves)


def _opcheck_cases():
    x, weight, bias, index = make_inputs(2, 3, 4, 4)
    _, _, _, mix = make_inputs(2, 3, 4, 4, style_kind="mix")
    grad = lambda t: t.clone().requires_grad_()  # noqa: E731
    out, mean, rstd = torch.ops.cvops._conditional_instance_norm(x, weight, bias, index, 1e-5, "relu")
    return [
        ("_conditional_instance_norm", (x, weight, bias, index, 1e-5, "none")),
        ("_conditional_instance_norm", (grad(x), grad(weight), grad(bias), index, 1e-5, "relu")),
        (
            "_conditional_instance_norm",
            (grad(x.to(memory_format=torch.channels_last)), grad(weight), grad(bias), grad(mix), 1e-3, "none"),
        ),
        ("_conditional_instance_norm_backward", (torch.randn_like(x), x, out, weight, bias, index, mean, rstd, "relu")),
    ]


@pytest.mark.parametrize("name,args", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, args):
    torch.library.opcheck(getattr(torch.ops.cvops, name).default, args)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    module = cvops.nn.ConditionalInstanceNorm2d(6, 3, activation="relu").float()
    with torch.no_grad():
        module.weight.normal_()
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    style = torch.tensor([2, 0])
    compiled = torch.compile(lambda t, s: module(t, s) * 2, backend=backend, fullgraph=True)
    got, want = compiled(x, style), module(x, style) * 2
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


def test_module():
    module = cvops.nn.ConditionalInstanceNorm2d(4, 3)
    assert module.weight.shape == (3, 4) and torch.equal(module.weight, torch.ones(3, 4))
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(module(x, 1), torch.nn.functional.instance_norm(x, eps=1e-5))
    assert "num_styles=3" in repr(module)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4), torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 1])
            ),
            RuntimeError,
            r"cvops.conditional_instance_norm: x must have 4 dimensions",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.ones(2, 3, 4, 4, dtype=torch.int32), torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 1])
            ),
            RuntimeError,
            r"x must be a floating-point",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 2])
            ),
            RuntimeError,
            r"cvops.conditional_instance_norm: style values must lie in \[0, 2\), got values in \[0, 2\]",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.ones(2, 3), torch.tensor([-1, 0])
            ),
            RuntimeError,
            r"style values must lie in \[0, 2\)",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 1, 1])
            ),
            RuntimeError,
            r"style indices must have shape \[B\] = \[2\]",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.ones(2, 3), torch.rand(2, 3)
            ),
            RuntimeError,
            r"style mixing weights must have shape \[B, S\] = \[2, 2\]",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 1], dtype=torch.int32)
            ),
            RuntimeError,
            r"style must be int64 indices \[B\] or floating mixing weights",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), torch.ones(2, 4), torch.ones(2, 4), torch.tensor([0, 1])
            ),
            RuntimeError,
            r"weight must be \[S, C\] with C = 3",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.ones(3, 3), torch.tensor([0, 1])
            ),
            RuntimeError,
            r"bias must have weight's shape",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 1]), eps=-1
            ),
            ValueError,
            r"cvops.conditional_instance_norm: eps must be a finite number >= 0",
        ),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 1]), activation="gelu"
            ),
            ValueError,
            r"cvops.conditional_instance_norm: activation must be one of",
        ),
        (lambda: cvops.nn.ConditionalInstanceNorm2d(0, 3), ValueError, r"num_features and num_styles must be >= 1"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("style_kind", ["index", "mix"])
# Split reductions (few planes, many positions), ragged channel tiles (3, 9, 33, 48, 200 channels),
# odd plane sizes (no 16-byte packs), H·W = 1.
@pytest.mark.parametrize(
    "size",
    [
        (2, 8, 16, 16),
        (1, 3, 256, 256),
        (1, 64, 128, 128),
        (4, 64, 5, 7),
        (2, 4, 1, 1),
        (2, 33, 7, 9),
        (2, 9, 5, 5),
        (1, 48, 64, 64),
        (2, 200, 6, 6),
    ],
)
def test_cuda_matches_reference(dtype, layout, style_kind, size):
    x, weight, bias, style = make_inputs(
        *size, style_kind=style_kind, layout=layout, dtype=torch.float32, device="cuda"
    )
    want = ref.conditional_instance_norm(
        x.double(), weight.double(), bias.double(), style.double() if style_kind == "mix" else style, activation="relu"
    )
    got = cvops.conditional_instance_norm(x.to(dtype), weight, bias, style, activation="relu")
    # Looser than the CUDA table: (x − mean)·rstd divides by the standard deviation of planes of up to
    # 256² positions, so the statistics' rounding comes back amplified where x is close to its mean.
    tol = cuda_rtol(dtype, **NORM_RTOL)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * 4)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    grads = torch.autograd.grad(
        cvops.conditional_instance_norm(*leaves, style, activation="relu").square().sum(), leaves
    )
    cpu_leaves = [t.detach().double().cpu().requires_grad_() for t in (x, weight, bias)]
    s_cpu = style.cpu().double() if style_kind == "mix" else style.cpu()
    want_grads = torch.autograd.grad(
        ref.conditional_instance_norm(*cpu_leaves, s_cpu, activation="relu").square().sum(), cpu_leaves
    )
    if dtype == torch.float32:
        for g, w in zip(grads, want_grads):
            # The gradients subtract two per-plane means of products from grad_out·rstd: looser still.
            grad_rtol = cuda_rtol(torch.float32, float32=1e-3)
            torch.testing.assert_close(g.double().cpu(), w, rtol=grad_rtol, atol=grad_rtol * w.abs().max().item())


@pytest.mark.cuda
def test_cuda_gradcheck_opcheck_determinism():
    x, weight, bias, style = make_inputs(2, 3, 5, 4, style_kind="mix", device="cuda")
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias, style)]
    assert torch.autograd.gradcheck(lambda *a: cvops.conditional_instance_norm(*a, activation="relu"), leaves)
    torch.library.opcheck(torch.ops.cvops._conditional_instance_norm.default, (*leaves, 1e-5, "relu"))
    big = torch.randn(1, 2, 256, 256, device="cuda", requires_grad=True)  # few planes: split reductions
    w, b, s = torch.randn(1, 2, device="cuda"), torch.randn(1, 2, device="cuda"), torch.tensor([0], device="cuda")
    runs = [torch.autograd.grad(cvops.conditional_instance_norm(big, w, b, s).square().sum(), big)[0] for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.cuda
def test_cuda_misaligned_input_takes_the_scalar_path():
    base = torch.randn(2 * 4 * 8 * 8 + 1, device="cuda")
    x = base[1:].view(2, 4, 8, 8)  # storage offset of one float: not 16-byte aligned
    weight, bias, style = (
        torch.randn(3, 4, device="cuda"),
        torch.randn(3, 4, device="cuda"),
        torch.tensor([2, 0], device="cuda"),
    )
    want = ref.conditional_instance_norm(x.double(), weight.double(), bias.double(), style)
    tol = cuda_rtol(torch.float32, **NORM_RTOL)
    torch.testing.assert_close(
        cvops.conditional_instance_norm(x, weight, bias, style).double(), want, rtol=tol, atol=tol
    )


# ---------------------------------------------------------------------------- arguments checked before use


def _cin(**kw):
    x, weight, bias, style = make_inputs(2, 3, 4, 4, S=2)
    return cvops.conditional_instance_norm(x, weight, bias, style, **kw)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: _cin(eps=None), r"cvops.conditional_instance_norm: eps must be a finite number >= 0, got None"),
        (lambda: _cin(eps=True), r"cvops.conditional_instance_norm: eps must be a finite number >= 0, got True"),
        (
            lambda: cvops.conditional_instance_norm(
                torch.randn(2, 3, 4, 4), None, torch.ones(2, 3), torch.tensor([0, 1])
            ),
            r"cvops.conditional_instance_norm: weight must be a tensor, got None",
        ),
        (
            lambda: cvops.conditional_instance_norm(torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.ones(2, 3), 1),
            r"cvops.conditional_instance_norm: style must be a tensor, got int",
        ),
        (
            lambda: cvops.nn.ConditionalInstanceNorm2d(4, None),
            r"ConditionalInstanceNorm2d: num_styles must be an int >= 1, got None",
        ),
        (
            lambda: cvops.nn.ConditionalInstanceNorm2d(2.5, 3),
            r"ConditionalInstanceNorm2d: num_features must be an int >= 1, got 2.5",
        ),
        (lambda: cvops.nn.ConditionalInstanceNorm2d(True, 3), r"num_features must be an int >= 1, got True"),
        (
            lambda: cvops.nn.ConditionalInstanceNorm2d(4, 3, eps="1e-5"),
            r"ConditionalInstanceNorm2d: eps must be a finite",
        ),
        (
            lambda: cvops.nn.ConditionalInstanceNorm2d(4, 3)(torch.randn(2, 4, 3, 3), 1.5),
            r"cvops.ConditionalInstanceNorm2d: style must be an int, int64 indices \[B\] or float mixing weights",
        ),
        (lambda: cvops.nn.ConditionalInstanceNorm2d(4, 3)(torch.randn(2, 4, 3, 3), True), r"style must be an int"),
        (lambda: cvops.nn.ConditionalInstanceNorm2d(4, 3)([1.0], 1), r"ConditionalInstanceNorm2d: x must be a tensor"),
        (
            lambda: cvops.nn.ConditionalInstanceNorm2d(4, 3)(torch.randn(4), 1),
            r"cvops.ConditionalInstanceNorm2d: x must have 4 dimensions \[B, C, H, W\], got shape \[4\]",
        ),
    ],
)
def test_arguments_are_checked_before_use(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_eps_must_be_finite_in_the_compute_dtype():
    x, weight, bias, style = make_inputs(2, 3, 4, 4, S=2)
    assert torch.isfinite(cvops.conditional_instance_norm(x, weight, bias, style, eps=1e39)).all()  # float64
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        with pytest.raises(
            ValueError, match=r"cvops.conditional_instance_norm: eps must be a finite number >= 0 in float32"
        ):
            cvops.conditional_instance_norm(x.to(dtype), weight, bias, style, eps=1e39)


def test_mixed_meta_and_cpu_inputs_are_refused_by_the_fake_kernels():
    w = torch.ones(2, 3, device="meta")
    x, style = torch.randn(2, 3, 4, 4), torch.tensor([0, 1])
    with pytest.raises(
        RuntimeError, match=r"cvops.conditional_instance_norm: weight must be on the same device as x \(cpu\), got meta"
    ):
        cvops.conditional_instance_norm(x, w, w, style)
    with pytest.raises(RuntimeError, match=r"cvops.conditional_instance_norm: style must be on the same device as x"):
        cvops.conditional_instance_norm(x.to("meta"), w, w, style)
    ones = torch.ones(2, 3)
    out, mean, rstd = torch.ops.cvops._conditional_instance_norm(x, ones, ones, style, 1e-5, "none")
    with pytest.raises(
        RuntimeError, match=r"cvops.conditional_instance_norm_backward: rstd must be on the same device as grad_out"
    ):
        torch.ops.cvops._conditional_instance_norm_backward(
            torch.ones_like(out), x, out, ones, ones, style, mean, rstd.to("meta"), "none"
        )
    got = cvops.conditional_instance_norm(x.to("meta"), w, w, style.to("meta"))
    assert got.shape == x.shape and got.device.type == "meta"


def test_an_expanded_style_index_is_range_checked_without_expanding_it():
    # 2^31 styles from one stored value: the range check reads the one value, not a 17 GB copy.
    n = 2**31
    x = torch.zeros(1, 3, 1, 1).expand(n, 3, 1, 1)
    style = torch.full((1,), 5).expand(n)
    with pytest.raises(
        RuntimeError,
        match=r"cvops.conditional_instance_norm: style values must lie in \[0, 2\), got values in \[5, 5\]",
    ):
        cvops.conditional_instance_norm(x, torch.ones(2, 3), torch.zeros(2, 3), style)


def test_backward_op_checks_its_saved_tensors():
    x, w, b = torch.randn(2, 3, 4, 4), torch.ones(2, 3), torch.zeros(2, 3)
    style = torch.tensor([0, 1])
    out, mean, rstd = torch.ops.cvops._conditional_instance_norm(x, w, b, style, 1e-5, "none")
    backward = torch.ops.cvops._conditional_instance_norm_backward
    with pytest.raises(RuntimeError, match=r"grad_out must have the dtype of x \(Float\), got Bool"):
        backward(out.bool(), x, out, w, b, style, mean, rstd, "none")
    with pytest.raises(RuntimeError, match=r"rstd must be Float, got Double"):
        backward(out, x, out, w, b, style, mean, rstd.double(), "none")
