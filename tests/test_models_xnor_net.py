"""XNOR-Net models (cvops.models.xnor_net): the binary ResNet-18 and AlexNet layouts (which layers are
binary, which stay real, BN before every binary layer), forward shapes, a training step, the mode
pass-through; packed inference equal to the eval-mode forward bit for bit (after pack_model and a
state_dict round trip into a fresh model); model sizes against the state_dict; and the digits demo
(cvops.demos.xnor_digits) on a short, seeded budget."""

import copy
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cvops.models import xnor_net
from cvops.models.xnor_net import (
    BinaryBasicBlock,
    binary_modules,
    model_size_bytes,
    model_sizes,
    pack_model,
    xnor_alexnet,
    xnor_digits_cnn,
    xnor_resnet18,
)
from cvops.nn import XNORConv2d, XNORLinear

needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="the demo's digits are scikit-learn's load_digits()"
)


def _count(model, kind):
    return sum(type(module) is kind for module in model.modules())


def _train_steps(model, x, y, steps=2):
    """A few Adam steps, so the latent weights and the BatchNorm statistics are not the initial ones."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


# ---------------------------------------------------------------------------- one binary layer


@pytest.mark.parametrize("scaling", ["none", "alpha", "alpha_k"])
def test_binary_layer_train_forward_equals_packed_eval_forward(scaling):
    torch.manual_seed(0)
    conv = XNORConv2d(5, 7, 3, padding=1, scaling=scaling)
    linear = XNORLinear(20, 6, scaling=scaling)
    x, v = torch.randn(2, 5, 9, 9), torch.randn(3, 20)
    for module, inp in ((conv, x), (linear, v)):
        train_out = module.train()(inp)
        eval_out = module.eval()(inp)  # the cached packed weight
        assert module.packed_bits is not None and torch.equal(train_out, eval_out)
        with torch.no_grad():
            module.weight.mul_(-0.5)  # an in-place update: eval mode must repack
        assert torch.equal(module.eval()(inp), module.train()(inp))
        assert not torch.equal(module.eval()(inp), eval_out)


# ---------------------------------------------------------------------------- layouts and forward


def test_resnet18_cifar_layout_and_forward():
    torch.manual_seed(0)
    model = xnor_resnet18(num_classes=10, cifar=True)
    assert _count(model, XNORConv2d) == 16 and _count(model, XNORLinear) == 0
    assert _count(model, BinaryBasicBlock) == 8
    # Real-valued: the 3×3 stride-1 stem, the three downsampling shortcuts, the classifier.
    assert _count(model, nn.Conv2d) == 4 and _count(model, nn.Linear) == 1
    stem = model.stem[0]
    assert type(stem) is nn.Conv2d and stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.stem)
    assert type(model.fc) is nn.Linear and model.fc.out_features == 10
    for block in model.modules():
        if isinstance(block, BinaryBasicBlock):
            assert block.bn1.num_features == block.conv1.in_channels
            assert block.bn2.num_features == block.conv2.in_channels
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and bool(out.isfinite().all())


def test_resnet18_imagenet_layout():
    model = xnor_resnet18()
    stem = model.stem[0]
    assert type(stem) is nn.Conv2d and stem.kernel_size == (7, 7) and stem.stride == (2, 2)
    assert isinstance(model.stem[-1], nn.MaxPool2d)
    assert _count(model, XNORConv2d) == 16 and model.fc.out_features == 1000
    strides = [m.stride for m in binary_modules(model)]
    assert strides.count((2, 2)) == 3  # the first conv of stages 2–4


def test_alexnet_layout_and_forward():
    torch.manual_seed(0)
    model = xnor_alexnet(num_classes=10)
    assert _count(model, XNORConv2d) == 4 and _count(model, XNORLinear) == 2
    assert type(model.features[0]) is nn.Conv2d and type(model.classifier[-1]) is nn.Linear
    assert _count(model, nn.Conv2d) == 1 and _count(model, nn.Linear) == 1
    for sequence in (model.features, model.classifier):
        layers = list(sequence)
        for index, layer in enumerate(layers):
            if isinstance(layer, (XNORConv2d, XNORLinear)):
                assert isinstance(layers[index - 1], (nn.BatchNorm2d, nn.BatchNorm1d))
                assert isinstance(layers[index + 1], nn.ReLU)
    out = model.eval()(torch.randn(2, 3, 64, 64))  # any input ≥ 63×63: the classifier sees 256·6·6
    assert out.shape == (2, 10) and bool(out.isfinite().all())


def test_modes_pass_through_to_every_binary_layer():
    model = xnor_resnet18(num_classes=4, cifar=True, scaling="alpha_k", weight_grad="xnor", pad_value=-1.0)
    assert all((m.scaling, m.weight_grad, m.pad_value) == ("alpha_k", "xnor", -1.0) for m in binary_modules(model))
    alexnet = xnor_alexnet(num_classes=4, scaling="none", weight_grad="xnor")
    assert all((m.scaling, m.weight_grad) == ("none", "xnor") for m in binary_modules(alexnet))
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_training_step_changes_the_weights():
    torch.manual_seed(0)
    model = xnor_resnet18(num_classes=10, cifar=True).train()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = F.cross_entropy(model(x), y)
    assert bool(loss.isfinite())
    loss.backward()
    for module in [model.stem[0], model.fc, *binary_modules(model)]:
        assert module.weight.grad is not None and bool(module.weight.grad.isfinite().all())
        assert bool(module.weight.grad.abs().sum() > 0)
    optimizer.step()
    after = dict(model.named_parameters())
    changed = [name for name, p in after.items() if not torch.equal(p, before[name])]
    assert "stem.0.weight" in changed and "fc.weight" in changed
    assert all(f"{name}.weight" in changed for name, m in model.named_modules() if isinstance(m, XNORConv2d))
    assert bool(F.cross_entropy(model(x), y).isfinite())


# ---------------------------------------------------------------------------- packed inference


@pytest.mark.parametrize(
    "build, shape",
    [(lambda: xnor_resnet18(num_classes=10, cifar=True), (4, 3, 16, 16)), (xnor_digits_cnn, (8, 1, 8, 8))],
    ids=["resnet18_cifar", "digits_cnn"],
)
def test_packed_model_equals_eval_forward(build, shape):
    torch.manual_seed(0)
    model = build()
    x = torch.randn(shape)
    _train_steps(model, x, torch.arange(shape[0]) % 10)
    expected = model.eval()(x)

    kept = pack_model(copy.deepcopy(model))
    assert all(m.weight is not None for m in binary_modules(kept))
    assert torch.equal(kept(x), expected)

    packed = pack_model(copy.deepcopy(model), keep_latent=False)
    assert all(m.weight is None and m.packed_bits.dtype == torch.int64 for m in binary_modules(packed))
    assert torch.equal(packed(x), expected)

    state = packed.state_dict()
    bits_keys = [key for key in state if key.endswith(".packed_bits")]
    assert len(bits_keys) == len(binary_modules(model))
    assert not any(key.replace(".packed_bits", ".weight") in state for key in bits_keys)
    fresh = build()
    fresh.load_state_dict(state)
    assert all(m.weight is None for m in binary_modules(fresh))
    assert torch.equal(fresh.eval()(x), expected)

    # Every BatchNorm in front of a binary layer folded into its packing: the same bits.
    folded = pack_model(copy.deepcopy(model), keep_latent=False, fold_batchnorm=True)
    assert all(m.input_bounds is not None for m in binary_modules(folded))
    batchnorms = _count(model, nn.BatchNorm2d) + _count(model, nn.BatchNorm1d)
    assert _count(folded, nn.BatchNorm2d) + _count(folded, nn.BatchNorm1d) == batchnorms - len(binary_modules(model))
    assert torch.equal(folded(x), expected)
    refolded = pack_model(copy.deepcopy(model).eval(), keep_latent=False, fold_batchnorm=True)
    refolded.load_state_dict(folded.state_dict())
    assert torch.equal(refolded(x), expected)


def test_pack_model_rejects_a_non_bool():
    with pytest.raises(ValueError, match="keep_latent"):
        pack_model(xnor_digits_cnn(), keep_latent=0)
    with pytest.raises(ValueError, match="fold_batchnorm"):
        pack_model(xnor_digits_cnn(), fold_batchnorm=1)


def test_folding_needs_an_eval_model_and_keeps_the_k_map_layers():
    with pytest.raises(ValueError, match="fold_batchnorm=True needs an eval-mode model"):
        pack_model(xnor_digits_cnn(), fold_batchnorm=True)
    model = pack_model(xnor_digits_cnn(scaling="alpha_k").eval(), fold_batchnorm=True)
    assert all(m.input_bounds is None for m in binary_modules(model))  # the K map needs |BN(x)|
    assert _count(model, nn.BatchNorm2d) == 3


# ---------------------------------------------------------------------------- sizes


def _state_bytes(model):
    """Every state_dict tensor's bytes but BatchNorm's integer counters."""
    return sum(
        t.numel() * t.element_size() for key, t in model.state_dict().items() if not key.endswith("num_batches_tracked")
    )


def test_model_sizes_match_the_packed_state_dict():
    model = xnor_digits_cnn()
    sizes = model_sizes(model)
    assert sizes["float_bytes"] == _state_bytes(model)  # a float32 model: its state is the float size
    assert sizes["ratio"] == sizes["float_bytes"] / sizes["packed_bytes"]
    pack_model(model, keep_latent=False)
    assert model_size_bytes(model, packed=True) == sizes["packed_bytes"] == _state_bytes(model)
    assert model_size_bytes(model, packed=False) == sizes["float_bytes"]  # from the layers' shapes


def test_resnet18_imagenet_packs_more_than_10x():
    model = xnor_resnet18()  # nothing is run or packed: the sizes come from the shapes
    sizes = model_sizes(model)
    params = sum(p.numel() for p in model.parameters())
    assert 11_000_000 < params < 12_000_000
    assert sizes["float_bytes"] == _state_bytes(model)
    assert sizes["ratio"] > 10
    binary = sum(m.weight.numel() for m in binary_modules(model))
    assert sizes["packed_bytes"] == sizes["float_bytes"] - 4 * binary + binary // 8 + 4 * sum(
        m.out_channels for m in binary_modules(model)
    )  # every binary layer's C is a multiple of 64: its bits are exactly 1/32 of its float weight
    assert all(m.packed_bits is None for m in binary_modules(model))
    assert model_sizes(xnor_resnet18(cifar=True))["ratio"] > 10


def test_model_size_bytes_rejects_a_non_bool():
    with pytest.raises(ValueError, match="packed"):
        model_size_bytes(xnor_digits_cnn(), packed="yes")


# ---------------------------------------------------------------------------- the digits demo


@needs_sklearn
def test_digits_demo_trains_a_binary_cnn():
    from cvops.demos.xnor_digits import accuracy, load_digits_split, train

    x_train, y_train, x_test, y_test = load_digits_split(0)
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert float(x_train.min()) == 0.0 and float(x_train.max()) == 1.0
    per_digit = torch.bincount(torch.cat([y_train, y_test]))
    assert bool(((torch.bincount(y_test) - per_digit / 4).abs() <= 1).all())  # stratified: a quarter of each digit

    # Measured (seed 0): 3 epochs 0.953 in ~3 s, 8 epochs (the default) 0.976 in ~5 s.
    result = train(epochs=3, seed=0)
    assert result.epochs == 3 and result.accuracy >= 0.85
    assert not result.model.training and result.accuracy == accuracy(result.model, x_test, y_test)
    assert result.packed_accuracy == result.accuracy
    assert all(m.weight is None for m in binary_modules(result.packed_model))
    assert torch.equal(result.packed_model(x_test), result.model(x_test))
    assert result.sizes == xnor_net.model_sizes(result.model) and result.sizes["ratio"] > 5


@needs_sklearn
def test_digits_demo_main(capsys):
    from cvops.demos.xnor_digits import main

    accuracy = main(["--epochs", "1", "--seed", "1"])
    out = capsys.readouterr().out
    assert "trained 1 epochs" in out and f"held-out accuracy: {accuracy:.4f}" in out and "packed" in out
    assert 0.5 < accuracy <= 1.0
