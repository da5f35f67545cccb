"""The binary family: pack_bits / unpack_bits, xnor_conv2d and xnor_linear against the float
simulation (reference/binary.py) bit for bit, the straight-through backward against its formulas,
the epilogue's gradients, opcheck, torch.compile, the packed weight and the modules."""

import copy
import itertools
import os
import subprocess
import sys

import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.testing._internal.optests import opcheck
from torch.utils import _pytree

import cvops
import reference.binary as ref

PAD_VALUES = (0.0, -1.0, 1.0)
SCALINGS = ("none", "alpha", "alpha_k")
CHANNELS = (1, 3, 31, 32, 33, 64, 65, 127, 256)


def _inputs(B, C, H, W, filters, k, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=gen, dtype=dtype)
    w = torch.randn(filters, C, k, k, generator=gen, dtype=dtype)
    return x, w, torch.randn(filters, generator=gen, dtype=dtype)


def _check_equal(x, w, bias=None, **options):
    want = ref.xnor_conv2d(x, w, bias=bias, **options)
    got = cvops.xnor_conv2d(x, w, bias=bias, **options)
    packed = cvops.xnor_conv2d(x, cvops.pack_binary_weight(w), bias=bias, **options)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want), (got - want).abs().max()
    assert torch.equal(packed, want)


# Every C, with kernel, stride, dilation, padding, pad value and scaling rotating over the cases.
GEOMETRIES = [
    (C, k, s, d, pad_value, scaling)
    for i, C in enumerate(CHANNELS)
    for k, s, d in [((1, 3, 5, 7)[i % 4], 1 + i % 2, 1 + (i // 2) % 2), ((3, 5, 7, 1)[i % 4], 2 - i % 2, 1)]
    for pad_value, scaling in [(PAD_VALUES[i % 3], SCALINGS[(i + 1) % 3])]
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C,k,stride,dilation,pad_value,scaling", GEOMETRIES)
def test_equals_the_float_simulation(C, k, stride, dilation, pad_value, scaling, dtype):
    x, w, b = _inputs(2, C, 13, 10, 5, k, dtype)  # non-square
    padding = (k // 2, k // 2 + 1)
    _check_equal(x, w, b, stride=stride, padding=padding, dilation=dilation, pad_value=pad_value, scaling=scaling)


@pytest.mark.parametrize("pad_value,scaling", list(itertools.product(PAD_VALUES, SCALINGS)))
@pytest.mark.parametrize("C", [33, 256])
def test_every_pad_value_and_scaling(C, pad_value, scaling):
    for dtype in (torch.float32, torch.float64):
        x, w, b = _inputs(3, C, 9, 8, 19, 3, dtype, seed=C)
        _check_equal(x, w, b, padding=2, dilation=2, pad_value=pad_value, scaling=scaling)
        _check_equal(x, w, None, stride=2, padding=1, pad_value=pad_value, scaling=scaling)


def test_memory_formats_and_strides():
    x, w, b = _inputs(2, 70, 12, 11, 6, 3)
    want = ref.xnor_conv2d(x, w, bias=b, padding=1)
    for variant in (
        x.contiguous(memory_format=torch.channels_last),
        torch.randn(2, 70, 12, 22)[..., ::2].copy_(x),
        x.transpose(2, 3).contiguous().transpose(2, 3),
    ):
        assert torch.equal(cvops.xnor_conv2d(variant, w, bias=b, padding=1), want)
    # alpha is the reference's mean over the weight as given (its memory format sets the order).
    w_cl = w.contiguous(memory_format=torch.channels_last)
    assert torch.equal(cvops.xnor_conv2d(x, w_cl, bias=b, padding=1), ref.xnor_conv2d(x, w_cl, bias=b, padding=1))


def test_signed_zero_and_nan():
    """sign(−0.0) = +1 and sign(NaN) = −1, for inputs and weights (torch.sign would give 0 and NaN)."""
    x, w, _ = _inputs(1, 8, 5, 5, 3, 3)
    x[0, :, 2, 2] = -0.0
    x[0, 3, 1, 1] = float("nan")
    w[1, :, 0, 0] = -0.0
    w[2, 4, 1, 1] = float("nan")
    got = cvops.xnor_conv2d(x, w, padding=1, scaling="none")
    assert torch.equal(got, ref.xnor_conv2d(x, w, padding=1, scaling="none"))
    bits = cvops.pack_bits(torch.tensor([[-0.0, float("nan"), 0.0, -1e-30]]))
    assert bits.tolist() == [[0b0101]]


def test_half_inputs_give_float32():
    x, w, b = _inputs(2, 40, 7, 7, 4, 3)
    for dtype in (torch.float16, torch.bfloat16):
        got = cvops.xnor_conv2d(x.to(dtype), w.to(dtype), bias=b, padding=1, scaling="alpha_k")
        assert got.dtype == torch.float32
        assert torch.equal(got, ref.xnor_conv2d(x.to(dtype), w.to(dtype), bias=b, padding=1, scaling="alpha_k"))


def test_empty_batch_and_large_counts():
    x, w, b = _inputs(0, 5, 6, 6, 3, 3)
    assert cvops.xnor_conv2d(x, w, bias=b, padding=1).shape == (0, 3, 6, 6)
    # 2^16 taps·channels: the counts stay exact in float32.
    x, w, _ = _inputs(1, 4096, 4, 4, 2, 4, seed=3)
    _check_equal(x, w, scaling="none")


# The AMX int8 tiles (CVOPS_CPU_LEVEL=amx) in a child process: the forward tests again, against the
# same float simulation.
_AMX_RUN = r"""
import sys, pytest, cvops
assert cvops._C.cpu_level()["level"] == "amx", cvops._C.cpu_level()
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:logging", sys.argv[1], "-k", sys.argv[2]]))
"""


def test_amx_tiles_equal_the_float_simulation():
    if cvops._C.cpu_level()["supported"] != "amx":
        pytest.skip("this CPU has no AMX int8 tiles")
    forward = (
        "(equals_the_float_simulation or every_pad_value or memory_formats or signed_zero or half_inputs "
        "or empty_batch or input_bounds_equal or folded_layer_equals) and not amx_tiles"
    )
    env = dict(os.environ, CVOPS_CPU_LEVEL="amx")
    run = subprocess.run(
        [sys.executable, "-c", _AMX_RUN, __file__, forward], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "failed" not in run.stdout


def test_inputs_are_not_mutated():
    x, w, b = _inputs(2, 9, 6, 6, 3, 3)
    copies = [t.clone() for t in (x, w, b)]
    cvops.xnor_conv2d(x, w, bias=b, padding=1, pad_value=1.0, scaling="alpha_k")
    assert all(torch.equal(t, c) for t, c in zip((x, w, b), copies))


@pytest.mark.parametrize("scaling", SCALINGS)
def test_linear_equals_the_float_simulation(scaling):
    for C in (1, 63, 64, 65, 300):
        for dtype in (torch.float32, torch.float64):
            gen = torch.Generator().manual_seed(C)
            x, w, b = (torch.randn(*s, generator=gen, dtype=dtype) for s in ((7, C), (11, C), (11,)))
            want = ref.xnor_linear(x, w, bias=b, scaling=scaling)
            assert torch.equal(cvops.xnor_linear(x, w, bias=b, scaling=scaling), want)
            assert torch.equal(cvops.xnor_linear(x, cvops.pack_binary_weight(w), bias=b, scaling=scaling), want)


# ---------------------------------------------------------------------------- the bit layout


def test_pack_bits_layout():
    """Bit c % 64 of word c // 64 is sign(x[n, c]) >= 0; the tail bits are 0; pixels channels-last."""
    x = torch.randn(2, 70, 3, 4)
    bits = cvops.pack_bits(x)
    assert bits.shape == (2, 3, 4, 2) and bits.dtype == torch.int64
    n, c, i, j = 1, 66, 2, 3
    assert (bits[n, i, j, c // 64].item() >> (c % 64)) & 1 == int(x[n, c, i, j] >= 0)
    assert (bits[..., 1] >> 6).eq(0).all()  # channels 70..127 do not exist
    assert torch.equal(cvops.unpack_bits(bits, 70), ref.sign(x))
    assert torch.equal(cvops.pack_bits(x.contiguous(memory_format=torch.channels_last)), bits)
    assert torch.equal(cvops.pack_bits(x.half()), bits)
    assert cvops.pack_bits(torch.randn(5, 130)).shape == (5, 3)


def test_raw_unpack_pads_and_maps_values():
    x = torch.randn(2, 70, 5, 4, dtype=torch.float64)
    bits = cvops.pack_bits(x)
    for dtype in (torch.float32, torch.float64):
        for low, padding, pad_value in [(-1.0, (0, 0), 0.0), (0.0, (1, 2), -1.0), (-1.0, (2, 0), 1.0)]:
            got = torch.ops.cvops._unpack_bits(bits, 70, dtype, low, list(padding), pad_value)
            values = torch.where(x >= 0, 1.0, low).to(dtype)
            want = torch.nn.functional.pad(values, (padding[1], padding[1], padding[0], padding[0]), value=pad_value)
            assert got.dtype == dtype and torch.equal(got, want)
    opcheck(torch.ops.cvops._unpack_bits.default, (bits, 70, torch.float32, 0.0, [1, 1], -1.0))
    with pytest.raises(RuntimeError, match="dtype must be float32 or float64"):
        torch.ops.cvops._unpack_bits(bits, 70, torch.float16, -1.0, [0, 0], 0.0)


def test_clip_bits_are_the_ste_mask():
    x = torch.tensor([[[-1.0, 1.0, 1.5, -2.0, float("nan"), 0.0, -0.0]]]).transpose(1, 2)  # [1, 7, 1]
    mask = torch.ops.cvops._pack_bits(x, 1.0)
    assert mask.tolist() == [[[0b1100011]]]


def test_packed_weight_is_small_and_a_pytree():
    w = torch.randn(256, 256, 3, 3)
    packed = cvops.pack_binary_weight(w)
    assert packed.bits.shape == (256, 3, 3, 4) and packed.alpha.shape == (256,)
    assert w.numel() * w.element_size() / packed.numel_bytes() > 30
    leaves, spec = _pytree.tree_flatten(packed)
    assert any(leaf is packed.bits for leaf in leaves) and any(leaf is packed.alpha for leaf in leaves)
    rebuilt = _pytree.tree_unflatten(leaves, spec)
    assert isinstance(rebuilt, cvops.PackedBinaryWeight) and rebuilt.channels == 256
    assert packed.to(torch.float64).alpha.dtype == torch.float64


# ---------------------------------------------------------------------------- training


@pytest.mark.parametrize("weight_grad", ["ste", "xnor"])
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("pad_value", PAD_VALUES)
def test_backward_is_the_straight_through_estimator(pad_value, scaling, weight_grad):
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 67, 7, 6, generator=gen, dtype=torch.float64) * 1.5).requires_grad_()
    w = (torch.randn(5, 67, 3, 3, generator=gen, dtype=torch.float64) * 0.8).requires_grad_()
    b = torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_()
    options = dict(stride=(1, 2), padding=1, dilation=(2, 1), pad_value=pad_value, scaling=scaling)
    out = cvops.xnor_conv2d(x, w, bias=b, weight_grad=weight_grad, **options)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, (x, w, b), grad)
    want = ref.ste_grads(x, w, grad, bias=b, weight_grad=weight_grad, **options)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    # The estimator's mask: no gradient where |x| > 1, and for "ste" none where |w| > 1.
    if scaling != "alpha_k":
        assert got[0][x.detach().abs() > 1].eq(0).all()
    if weight_grad == "ste":
        assert got[1][w.detach().abs() > 1].eq(0).all()


def test_linear_backward():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 70, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 70, generator=gen, dtype=torch.float64, requires_grad=True)
    out = cvops.xnor_linear(x, w, scaling="alpha")
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, (x, w), grad)
    want = ref.ste_grads(x[:, :, None, None], w[:, :, None, None], grad[:, :, None, None], scaling="alpha")
    torch.testing.assert_close(got[0], want[0][:, :, 0, 0])
    torch.testing.assert_close(got[1], want[1][:, :, 0, 0])


def test_gradcheck_of_the_epilogue():
    """scale, k_map and bias are differentiable inputs of the raw op (the bits are not)."""
    x, w, _ = _inputs(2, 70, 6, 5, 3, 3, torch.float64)
    xb, wb = cvops.pack_bits(x), cvops.pack_bits(w)
    scale = torch.rand(3, dtype=torch.float64, requires_grad=True)
    k_map = torch.rand(2, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.rand(3, dtype=torch.float64, requires_grad=True)

    def fn(scale, k_map, bias):
        return torch.ops.cvops._xnor_conv2d(xb, wb, scale, k_map, bias, 70, [1, 1], [1, 1], [1, 1], 0)

    assert torch.autograd.gradcheck(fn, (scale, k_map, bias))


def test_opcheck():
    x, w, _ = _inputs(2, 70, 6, 5, 3, 3)
    xb, wb = cvops.pack_bits(x), cvops.pack_bits(w)
    opcheck(torch.ops.cvops._pack_bits.default, (x,))
    opcheck(torch.ops.cvops._pack_bits.default, (x, 1.0))
    scale = torch.rand(3, requires_grad=True)
    k_map = torch.rand(2, 1, 3, 5, requires_grad=True)
    bias = torch.rand(3, requires_grad=True)
    opcheck(torch.ops.cvops._xnor_conv2d.default, (xb, wb, scale, k_map, bias, 70, [2, 1], [1, 1], [1, 1], 1))
    opcheck(torch.ops.cvops._xnor_conv2d.default, (xb, wb, scale, None, None, 70, [1, 1], [0, 0], [1, 2], -1))


def test_compiles_with_fullgraph():
    x, w, b = _inputs(2, 40, 8, 8, 6, 3)
    packed = cvops.pack_binary_weight(w)

    def fn(x, w, b):
        return cvops.xnor_conv2d(x, w, bias=b, padding=1, scaling="alpha_k")

    want = fn(x, w, b)
    torch._dynamo.reset()
    # Inductor fuses the alpha and K-map reductions in its own order: close, not the same bits.
    torch.testing.assert_close(torch.compile(fn, fullgraph=True)(x, w, b), want)
    torch.testing.assert_close(torch.compile(fn, fullgraph=True)(x, packed, b), want)
    module = cvops.nn.XNORConv2d(40, 6, 3, padding=1, bias=True).eval()
    y = module(x)
    torch.testing.assert_close(torch.compile(module, fullgraph=True)(x), y)
    module.pack(keep_latent=False)  # packed buffers only: the compiled graph reads the same alpha
    assert torch.equal(torch.compile(module, fullgraph=True)(x), y)
    # Training through the compiled function gives the eager gradients.
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    compiled = torch.compile(fn, fullgraph=True)(xg, wg, b)
    compiled.sum().backward()
    xe, we = x.clone().requires_grad_(), w.clone().requires_grad_()
    fn(xe, we, b).sum().backward()
    torch.testing.assert_close(xg.grad, xe.grad)
    torch.testing.assert_close(wg.grad, we.grad)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(weight=torch.randn(4, 6, 3, 3)), "weight must have x's 5 channels"),
        (dict(pad_value=0.5), "pad_value must be 0, -1 or +1"),
        (dict(scaling="beta"), "scaling must be one of"),
        (dict(weight_grad="exact"), "weight_grad must be one of"),
        (dict(x=torch.ones(2, 5, 6, 6, dtype=torch.int32)), "x must be a floating-point tensor"),
        (dict(x=torch.ones(2, 5, 6, 6, dtype=torch.complex64)), "x must be a floating-point tensor"),
        (dict(weight=cvops.pack_binary_weight(torch.randn(4, 70, 3, 3))), "the packed weight holds 70 channels"),
        (dict(weight=cvops.pack_binary_weight(torch.randn(4, 5))), "weight.bits must be int64 words [O, kh, kw, Cw]"),
        (dict(stride=0), "stride must be an int >= 1"),
        (dict(dilation=-1), "dilation must be an int >= 1"),
        (dict(weight=torch.randn(4, 5, 9, 3)), "larger than the padded input"),
        (dict(bias=torch.randn(3)), "bias must be a floating-point [4] tensor"),
    ],
)
def test_bad_input_is_a_clear_error(change, message):
    args = dict(x=torch.randn(2, 5, 6, 6), weight=torch.randn(4, 5, 3, 3), padding=1)
    args.update(change)
    x, weight = args.pop("x"), args.pop("weight")
    with pytest.raises((ValueError, RuntimeError), match="^cvops.xnor_conv2d: ") as info:
        cvops.xnor_conv2d(x, weight, **args)
    assert message in str(info.value)


def test_raw_op_refuses_inconsistent_bits():
    xb = cvops.pack_bits(torch.randn(2, 70, 6, 6))
    wb = cvops.pack_bits(torch.randn(3, 70, 3, 3))
    scale = torch.ones(3)
    call = torch.ops.cvops._xnor_conv2d
    with pytest.raises(RuntimeError, match="x_bits must hold 1 words per pixel for 64 channels"):
        call(xb, wb, scale, None, None, 64, [1, 1], [0, 0], [1, 1], 0)
    with pytest.raises(RuntimeError, match="pad_value must be 0, -1 or \\+1, got 2"):
        call(xb, wb, scale, None, None, 70, [1, 1], [0, 0], [1, 1], 2)
    with pytest.raises(RuntimeError, match="scale must be float32 or float64"):
        call(xb, wb, scale.half(), None, None, 70, [1, 1], [0, 0], [1, 1], 0)
    with pytest.raises(RuntimeError, match="weight_bits must be int64 words"):
        call(xb, wb.int(), scale, None, None, 70, [1, 1], [0, 0], [1, 1], 0)
    # Garbage in the tail bits never counts.
    noisy = xb.clone()
    noisy[..., 1] |= -(1 << 20)
    assert torch.equal(
        call(noisy, wb, scale, None, None, 70, [1, 1], [1, 1], [1, 1], 1),
        call(xb, wb, scale, None, None, 70, [1, 1], [1, 1], [1, 1], 1),
    )


# ---------------------------------------------------------------------------- modules


def test_module_trains_and_repacks_when_the_weight_changes():
    torch.manual_seed(0)
    layer = cvops.nn.XNORConv2d(16, 8, 3, padding=1, bias=True, scaling="alpha_k", weight_grad="xnor")
    x = torch.randn(4, 16, 6, 6)
    train_out = layer(x)
    layer.eval()
    eval_out = layer(x)
    assert torch.equal(train_out, eval_out)
    assert layer.packed_bits is not None
    layer.train()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x).square().mean().backward()
    assert layer.weight.grad.abs().sum() > 0
    optimizer.step()
    layer.eval()
    assert torch.equal(layer(x), ref.xnor_conv2d(x, layer.weight, bias=layer.bias, padding=1, scaling="alpha_k"))


def test_packed_state_dict_round_trips():
    torch.manual_seed(1)
    layer = cvops.nn.XNORConv2d(70, 5, 3, stride=2, padding=1, pad_value=-1.0).eval()
    x = torch.randn(2, 70, 9, 9)
    want = layer(x)
    fresh = cvops.nn.XNORConv2d(70, 5, 3, stride=2, padding=1, pad_value=-1.0).eval()
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x), want)
    layer.pack(keep_latent=False)
    state = layer.state_dict()
    assert set(state) == {"packed_bits", "packed_alpha"}
    small = cvops.nn.XNORConv2d(70, 5, 3, stride=2, padding=1, pad_value=-1.0).eval()
    small.load_state_dict(state)
    assert small.weight is None and torch.equal(small(x), want)
    linear = cvops.nn.XNORLinear(100, 7).eval()
    z = torch.randn(3, 100)
    y = linear(z)
    restored = cvops.nn.XNORLinear(100, 7).eval()
    restored.load_state_dict(linear.pack(keep_latent=False).state_dict())
    assert torch.equal(restored(z), y)


def test_saves_bits_not_float_activations():
    """The forward saves the packed sign and mask bits (C/4 bytes a pixel) instead of x."""
    layer = cvops.nn.XNORConv2d(256, 256, 3, padding=1)
    x = torch.randn(4, 256, 14, 14, requires_grad=True)

    def saved_bytes(fn):
        seen = {}

        def pack(t):
            if not isinstance(t, torch.nn.Parameter) and t.data_ptr() != x.data_ptr():
                seen[t.data_ptr()] = t.numel() * t.element_size()
            return t

        with saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(seen.values())

    ours = saved_bytes(lambda: layer(x))
    simulated = saved_bytes(lambda: ref.simulated_xnor_conv2d(x, layer.weight, padding=1))
    assert ours <= 2 * 4 * 14 * 14 * 4 * 8 + 256 * 3 * 3 * 4 * 8 + 256 * 8  # x and mask bits, weight bits, scale
    assert simulated / ours > 10


def test_eval_matches_functional_with_packed_weight():
    layer = cvops.nn.XNORLinear(50, 4, scaling="alpha_k").eval()
    x = torch.randn(6, 50)
    want = cvops.xnor_linear(x, cvops.pack_binary_weight(layer.weight), bias=layer.bias, scaling="alpha_k")
    assert torch.equal(layer(x), want)
    assert torch.equal(want, ref.xnor_linear(x, layer.weight, bias=layer.bias, scaling="alpha_k"))


def test_unpack_bits_validates():
    bits = cvops.pack_bits(torch.randn(2, 10))
    with pytest.raises(ValueError, match="channels must be an int in \\[1, 64\\]"):
        cvops.unpack_bits(bits, 65)
    with pytest.raises(ValueError, match="bits must be int64 words"):
        cvops.unpack_bits(bits.int(), 10)
    x = torch.randn(3, 130, 5)
    assert torch.equal(cvops.unpack_bits(cvops.pack_bits(x), 130, torch.float64), ref.sign(x.double()))


def test_state_dict_forms_load_into_any_module():
    """A training checkpoint loads into an evaluated (cached) module, and a latent state into a
    packed-only one: the state decides the form."""
    source = cvops.nn.XNORConv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    cached = cvops.nn.XNORConv2d(4, 4, 3, padding=1).eval()
    cached(x)
    cached.load_state_dict(source.state_dict())
    assert cached.packed_bits is None and torch.equal(cached(x), source.eval()(x))
    packed_only = cvops.nn.XNORConv2d(4, 4, 3, padding=1).pack(keep_latent=False)
    packed_only.load_state_dict(source.state_dict())
    assert isinstance(packed_only.weight, torch.nn.Parameter) and torch.equal(packed_only.eval()(x), source(x))


# ---------------------------------------------------------------------------- folded BatchNorm


def _interval_bits(x, bounds):
    """The bits of low[c] <= x <= high[c], through pack_bits of the reference's ±1 tensor."""
    return cvops.pack_bits(ref.input_sign(x.to(bounds.dtype), bounds))


def _special_inputs(dtype=torch.float32):
    x = torch.randn(3, 70, 5, 7, dtype=dtype)
    x[0, :, 0, 0] = float("nan")
    x[0, :, 0, 1], x[0, :, 0, 2] = float("inf"), float("-inf")
    x[0, :, 0, 3], x[0, :, 0, 4] = 0.0, -0.0
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_bounds_pack_the_interval_test(dtype):
    x = _special_inputs().to(dtype)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    bounds = torch.randn(2, 70, dtype=compute).sort(0).values
    bounds[:, 3] = torch.tensor([0.0, float("inf")])  # the sign itself
    bounds[:, 4] = torch.tensor([float("inf"), float("-inf")])  # empty
    bounds[:, 5] = torch.tensor([float("-inf"), float("inf")])  # everything but NaN
    bounds[:, 6] = x[1, 6, 2, 3]  # one value
    want = _interval_bits(x, bounds)
    call = torch.ops.cvops._pack_bits
    for layout in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, :, ::2], x.transpose(2, 3)):
        assert torch.equal(call(layout, None, bounds), _interval_bits(layout, bounds))
    assert torch.equal(call(x, None, bounds), want)
    assert torch.equal(call(x[:, :, 0, 0], None, bounds), want[:, 0, 0])
    sign = torch.stack([torch.zeros(70, dtype=compute), torch.full((70,), float("inf"), dtype=compute)])
    assert torch.equal(call(x, None, sign), cvops.pack_bits(x))
    opcheck(call.default, (x, None, bounds))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_input_bounds_equal_the_reference(dtype):
    x, w, bias = _inputs(2, 70, 6, 5, 9, 3, dtype)
    bounds = torch.randn(2, 70, dtype=dtype).sort(0).values
    for options in (dict(padding=1), dict(stride=2, dilation=(1, 2), pad_value=-1.0, scaling="none")):
        want = ref.xnor_conv2d(x, w, bias=bias, input_bounds=bounds, **options)
        assert torch.equal(cvops.xnor_conv2d(x, w, bias=bias, input_bounds=bounds, **options), want)
    xl, wl = x[:, :, 0, 0], w[:, :, 0, 0]
    want = ref.xnor_linear(xl, wl, bias=bias, input_bounds=bounds)
    assert torch.equal(cvops.xnor_linear(xl, wl, bias=bias, input_bounds=bounds), want)


def test_raw_pack_validates_bounds():
    x, call = torch.randn(2, 70, 3, 3), torch.ops.cvops._pack_bits
    with pytest.raises(RuntimeError, match=r"pack_bits: bounds must have shape \[2, 70\]"):
        call(x, None, torch.zeros(2, 69))
    with pytest.raises(RuntimeError, match="pack_bits: bounds must be Float"):
        call(x, None, torch.zeros(2, 70, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="pack_bits: clip and bounds are exclusive"):
        call(x, 1.0, torch.zeros(2, 70))
    with pytest.raises(RuntimeError, match="pack_bits: bounds must have 2 dimensions"):
        call(x, None, torch.zeros(140))


def _batchnorm(C, dtype=torch.float32, seed=0, affine=True, eps=1e-5):
    gen = torch.Generator().manual_seed(seed)
    bn = torch.nn.BatchNorm2d(C, eps=eps, affine=affine, dtype=dtype).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(C, generator=gen, dtype=dtype))
        bn.running_var.copy_(torch.rand(C, generator=gen, dtype=dtype) * 2 + 1e-3)
        if affine:
            bn.weight.copy_(torch.randn(C, generator=gen, dtype=dtype))
            bn.bias.copy_(torch.randn(C, generator=gen, dtype=dtype))
            bn.weight[:4] = torch.tensor([0.0, -0.0, 1e-30, -1e30], dtype=dtype)  # flat, tiny, huge
            bn.bias[4:6] = 0.0
            bn.running_mean[4:6] = 0.0  # the threshold at ±0
    return bn


@pytest.mark.parametrize(
    "dtype,affine,eps",
    [
        (torch.float32, True, 1e-5),
        (torch.float64, True, 1e-5),
        (torch.float32, False, 1e-5),
        (torch.float32, True, 10.0),
    ],
)
def test_batchnorm_sign_bounds_reproduce_the_batchnorm(dtype, affine, eps):
    bn = _batchnorm(70, dtype, affine=affine, eps=eps)
    bounds = cvops.nn.batchnorm_sign_bounds(bn)
    assert bounds is not None and bounds.shape == (2, 70) and bounds.dtype == dtype
    x = _special_inputs(dtype) * 3
    # Every channel's threshold and its neighbours inside the batch.
    x[1] = bounds[0].where(bounds[0].isfinite(), 0.0)[:, None, None]
    x[2] = bounds[1].where(bounds[1].isfinite(), 0.0)[:, None, None]
    x[1, :, 1, 1:3] = torch.stack(
        [x[1, :, 0, 0].nextafter(x.new_tensor(-1e300)), x[1, :, 0, 0].nextafter(x.new_tensor(1e300))], 1
    )
    x[2, :, 1, 1:3] = torch.stack(
        [x[2, :, 0, 0].nextafter(x.new_tensor(-1e300)), x[2, :, 0, 0].nextafter(x.new_tensor(1e300))], 1
    )
    with torch.no_grad():
        for layout in (x, x.contiguous(memory_format=torch.channels_last)):
            assert torch.equal(torch.ops.cvops._pack_bits(layout, None, bounds), cvops.pack_bits(bn(layout)))


def test_batchnorm_sign_bounds_need_running_statistics():
    assert cvops.nn.batchnorm_sign_bounds(torch.nn.BatchNorm2d(8, track_running_stats=False)) is None
    with pytest.raises(ValueError, match="bn must be a torch BatchNorm module"):
        cvops.nn.batchnorm_sign_bounds(torch.nn.LayerNorm(8))


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_folded_layer_equals_the_batchnorm_then_the_layer(kind):
    torch.manual_seed(0)
    if kind == "conv":
        layer = cvops.nn.XNORConv2d(70, 9, 3, padding=1, bias=True).eval()
        bn, x = _batchnorm(70), _special_inputs()
    else:
        layer = cvops.nn.XNORLinear(70, 9).eval()
        bn = torch.nn.BatchNorm1d(70).eval()
        bn.load_state_dict(_batchnorm(70).state_dict())
        x = _special_inputs()[:, :, 1, 1]
    with torch.no_grad():
        want = layer(bn(x))
    folded = copy.deepcopy(layer)
    assert folded.fold_batchnorm(bn)
    with torch.no_grad():
        assert torch.equal(folded(x), want)
        fresh = copy.deepcopy(layer)
        fresh.load_state_dict(folded.state_dict())  # the bounds travel in the state_dict
        assert torch.equal(fresh(x), want)
        # Packed buffers only: the compiled graph reads the same alpha.
        assert torch.equal(torch.compile(folded.pack(keep_latent=False), fullgraph=True)(x), want)
    torch._dynamo.reset()
    with pytest.raises(ValueError, match="input_bounds is for inference"):
        folded(x.requires_grad_())
    with pytest.raises(RuntimeError, match="inference-only: call eval"):
        folded.train()(x.detach())
    other = cvops.nn.XNORConv2d(70, 9, 3, scaling="alpha_k")
    with pytest.raises(ValueError, match="scaling='alpha_k' needs"):
        other.fold_batchnorm(bn)
    with pytest.raises(ValueError, match="bn must be a BatchNorm of 70 features"):
        layer.fold_batchnorm(torch.nn.BatchNorm2d(8))


def test_input_bounds_are_validated():
    x, w = torch.randn(2, 5, 6, 6), torch.randn(4, 5, 3, 3)
    with pytest.raises(ValueError, match=r"input_bounds must be a torch.float32 \[2, 5\] tensor"):
        cvops.xnor_conv2d(x, w, input_bounds=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="input_bounds cannot be used with scaling='alpha_k'"):
        cvops.xnor_conv2d(x, w, input_bounds=torch.zeros(2, 5), scaling="alpha_k")
    with pytest.raises(ValueError, match="input_bounds must be a tensor or None"):
        cvops.xnor_linear(x[:, :, 0, 0], w[:, :, 0, 0], input_bounds=[0.0, 1.0])
