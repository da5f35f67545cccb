"""The style-transfer models: TransformerNet (index and mixed styles), VGGFeatures (layout, torchvision
weights), StyleTransferLoss, train_step, gatys_transfer, bad input and the demo (cvops.demos.style_transfer).
Small images only."""

import pytest
import torch
import torchvision

import cvops.nn
from cvops.demos.style_transfer import main
from cvops.models.style_transfer import (
    FEATURE_NAMES,
    StyleTransferLoss,
    TransformerNet,
    VGGFeatures,
    gatys_transfer,
    train_step,
)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
MIXING = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGGFeatures()


def images(batch, size=64):
    return torch.rand(batch, 3, size, size)


def net_with_distinct_styles(num_styles):
    """A TransformerNet whose styles differ (fresh norms are all γ = 1, β = 0, i.e. one style)."""
    net = TransformerNet(num_styles)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, cvops.nn.ConditionalInstanceNorm2d):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
    return net


# ---------------------------------------------------------------------------- TransformerNet


@pytest.mark.parametrize("size", [(64, 64), (30, 42)], ids=["64x64", "30x42"])
@pytest.mark.parametrize("style", [torch.tensor([0, 2]), MIXING, 1], ids=["index", "mixing", "int"])
@torch.no_grad()
def test_transformer_net_output_is_an_image_of_the_input_size(size, style):
    x = torch.rand(2, 3, *size)
    y = TransformerNet(3)(x, style)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1


@torch.no_grad()
def test_one_hot_mixing_equals_index():
    net, x, index = net_with_distinct_styles(3), images(2), torch.tensor([2, 0])
    by_index = net(x, index)
    assert not torch.allclose(by_index, net(x, torch.tensor([1, 1])), atol=1e-3)  # the styles do differ
    torch.testing.assert_close(net(x, torch.nn.functional.one_hot(index, 3).float()), by_index)
    torch.testing.assert_close(net(x, 2), net(x, torch.tensor([2, 2])))


# ---------------------------------------------------------------------------- VGGFeatures


def test_vgg_feature_shapes_frozen_by_default(vgg):
    features = vgg(images(2))
    assert features._fields == FEATURE_NAMES
    assert [tuple(f.shape) for f in features] == [(2, 64, 64, 64), (2, 128, 32, 32), (2, 256, 16, 16), (2, 512, 8, 8)]
    assert not any(p.requires_grad for p in vgg.parameters())
    assert all(p.requires_grad for p in VGGFeatures(requires_grad=True).parameters())
    assert all(key.startswith("layers.") for key in vgg.state_dict())  # the normalisation is not state


def test_vgg_loads_torchvision_weights():
    torchvision_vgg = torchvision.models.vgg16(weights=None).eval()  # weights=None: random, no download
    features_state = torchvision_vgg.features.state_dict()
    x = images(2, size=32)
    with torch.no_grad():
        want = [torchvision_vgg.features[: end + 1]((x - IMAGENET_MEAN) / IMAGENET_STD) for end in (3, 8, 15, 22)]
        for state_dict in (features_state, torchvision_vgg.state_dict()):  # "0.weight" and "features.0.weight" keys
            got = VGGFeatures.from_torchvision_state_dict(state_dict)(x)
            for name, got_layer, want_layer in zip(FEATURE_NAMES, got, want):
                torch.testing.assert_close(got_layer, want_layer, msg=lambda m, name=name: f"{name}: {m}")


# ---------------------------------------------------------------------------- losses and training


def test_style_transfer_loss_parts_and_style_forms(vgg):
    styles, content = images(3, size=32), images(2, size=32)
    loss = StyleTransferLoss(vgg, styles, content_weight=2.0, style_weight=3.0, tv_weight=0.5)
    output, index = images(2, size=32), torch.tensor([2, 0])
    total, parts = loss(output, content, index)
    assert set(parts) == {"content", "style", "tv"}
    torch.testing.assert_close(total, sum(parts.values()))
    assert loss(content, content, index)[1]["content"] == 0
    # one-hot mixing weights aim at exactly the indexed Grams; reused content features give the same J
    torch.testing.assert_close(loss(output, content, torch.nn.functional.one_hot(index, 3).double())[0], total)
    torch.testing.assert_close(loss(output, loss.content_features(content), index)[0], total)
    # the Gram banks are state: a loss built from them (or from its state_dict) gives the same J
    banks = [module.target for module in loss.style_losses]
    assert all(f"style_losses.{i}.target" in loss.state_dict() for i in range(len(FEATURE_NAMES)))
    from_banks = StyleTransferLoss(vgg, banks, content_weight=2.0, style_weight=3.0, tv_weight=0.5)
    torch.testing.assert_close(from_banks(output, content, index)[0], total)


def test_train_step_lowers_the_loss(vgg):
    torch.manual_seed(0)
    content, styles = images(2), images(2)
    net = TransformerNet(2)
    loss_fn = StyleTransferLoss(vgg, styles)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    totals = [train_step(net, optimizer, content, torch.tensor([0, 1]), loss_fn=loss_fn) for _ in range(6)]
    assert all(isinstance(total, float) for total in totals)  # J as a float; loss_fn itself gives the parts
    assert sum(totals[-2:]) / 2 < totals[0], totals


def test_train_step_with_mixing_weights_trains_every_mixed_style(vgg):
    net = TransformerNet(3)
    loss_fn = StyleTransferLoss(vgg, images(3, size=32))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    loss = train_step(net, optimizer, images(2, size=32), MIXING, loss_fn=loss_fn)
    assert torch.isfinite(torch.tensor(loss))
    grad = net.stem.norm.weight.grad  # [S, C]: style 2 has weight 0 in sample 0 but 0.5 in sample 1
    assert grad.abs().sum(dim=1).gt(0).all()


@pytest.mark.parametrize("optimizer,steps,init,ratio", [("adam", 20, "content", 0.6), ("lbfgs", 10, "noise", 0.9)])
def test_gatys_transfer_lowers_the_loss(vgg, optimizer, steps, init, ratio):
    """J falls by a good margin (typical ratios at these sizes: Adam 0.35, L-BFGS 0.55-0.8)."""
    content, style = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    image, history = gatys_transfer(content, style, vgg=vgg, steps=steps, optimizer=optimizer, init=init)
    assert image.shape == content.shape and image.min() >= 0 and image.max() <= 1
    assert len(history) == steps + 1
    assert history[-1] < ratio * history[0], history


def test_demo_writes_a_grid(tmp_path):
    path = tmp_path / "grid.png"
    main([str(path), "--steps", "1", "--size", "32"])
    assert path.stat().st_size > 0


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,error,match",
    [
        (
            lambda: TransformerNet(2)(torch.rand(2, 4, 16, 16), torch.tensor([0, 1])),
            ValueError,
            r"cvops.TransformerNet: x must be RGB images \[B, 3, H, W\] in \[0, 1\], got \(2, 4, 16, 16\)",
        ),
        (
            lambda: TransformerNet(2)(torch.rand(2, 3, 16, 16), MIXING),
            ValueError,
            r"cvops.TransformerNet: style must be an int, int64 indices \[B\] = \[2\] or floating mixing weights \[B, S\] = \[2, 2\]",
        ),
        (
            lambda: TransformerNet(2)(torch.rand(2, 3, 16, 16), torch.tensor([0, 2])),
            RuntimeError,
            r"cvops.conditional_instance_norm: style values must lie in \[0, 2\)",
        ),
        (lambda: TransformerNet(0), ValueError, r"cvops.TransformerNet: num_styles must be an int >= 1"),
        (lambda: VGGFeatures()(torch.rand(1, 1, 16, 16)), ValueError, r"cvops.VGGFeatures: x must be RGB images"),
        (
            lambda: VGGFeatures.from_torchvision_state_dict({"0.weight": torch.zeros(64, 3, 3, 3)}),
            ValueError,
            r"cvops.VGGFeatures: state_dict is not a torchvision vgg16 `features` state_dict: missing or mis-shaped \['0.bias'",
        ),
        (
            lambda: StyleTransferLoss(VGGFeatures(), [torch.zeros(2, 64, 64)]),
            ValueError,
            r"cvops.StyleTransferLoss: styles must be style images \[S, 3, H, W\] or one Gram bank",
        ),
        (
            lambda: StyleTransferLoss(VGGFeatures(), torch.rand(2, 3, 16, 16), content_layer="conv4_2"),
            ValueError,
            r"cvops.StyleTransferLoss: content_layer must be one of",
        ),
        (
            lambda: gatys_transfer(torch.rand(3, 16, 16), torch.rand(3, 16, 16), optimizer="sgd"),
            ValueError,
            r"cvops.gatys_transfer: optimizer must be 'adam' or 'lbfgs'",
        ),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
