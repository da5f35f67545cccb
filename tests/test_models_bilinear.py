"""The bilinear models: BilinearCNN with each pooling head (shapes, a training step on random data,
torchvision weight layout) and the MFB/MFH VQA head. Small widths and images only."""

import pytest
import torch
import torchvision

from cvops.models import MFBVQA, BilinearCNN
from cvops.models.bilinear_cnn import POOLINGS, train_step


@pytest.mark.parametrize("pooling", POOLINGS)
def test_bilinear_cnn_trains(pooling):
    torch.manual_seed(0)
    model = BilinearCNN(num_classes=5, pooling=pooling, output_dim=256, rank=4, width_mult=1 / 16)
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    assert model(images).shape == (4, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = [train_step(model, optimizer, images, labels) for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_bilinear_cnn_layout_matches_torchvision_vgg16():
    model = BilinearCNN(num_classes=3, pooling="compact_ts", output_dim=64)
    vgg = torchvision.models.vgg16()  # random weights, nothing downloaded
    model.load_torchvision_backbone(vgg.state_dict())
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.features(image), vgg.features[:30](image))
    assert model.channels == 512
    with pytest.raises(ValueError, match="cvops.BilinearCNN: state_dict is not a torchvision vgg16"):
        BilinearCNN(num_classes=3, width_mult=0.5).load_torchvision_backbone(vgg.state_dict())


def test_bilinear_cnn_compact_state_dict_keeps_hashes():
    model = BilinearCNN(num_classes=3, pooling="compact_ts", output_dim=64, width_mult=1 / 16, seed=1)
    other = BilinearCNN(num_classes=3, pooling="compact_ts", output_dim=64, width_mult=1 / 16, seed=2)
    assert not torch.equal(model.pool.h1, other.pool.h1)
    other.load_state_dict(model.state_dict())
    image = torch.rand(2, 3, 32, 32)
    model.eval(), other.eval()
    assert torch.equal(model(image), other(image))


def test_bilinear_cnn_bad_input():
    with pytest.raises(ValueError, match="cvops.BilinearCNN: pooling must be one of"):
        BilinearCNN(pooling="max")
    with pytest.raises(ValueError, match=r"cvops.BilinearCNN: images must be \[B, 3, H, W\]"):
        BilinearCNN(num_classes=2, width_mult=1 / 16)(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("high_order", [False, True])
def test_mfb_vqa_trains(high_order):
    torch.manual_seed(0)
    model = MFBVQA(
        num_answers=6,
        vocab_size=30,
        image_channels=16,
        embed_dim=8,
        hidden_dim=12,
        k=3,
        o=10,
        glimpses=2,
        high_order=high_order,
        attention_dim=8,
        dropout=0.1,
    )
    image = torch.rand(4, 16, 5, 5)
    tokens = torch.tensor([[3, 4, 5, 0], [7, 8, 0, 0], [1, 2, 3, 4], [9, 0, 0, 0]])
    answers = torch.tensor([0, 1, 2, 3])
    assert model(image, tokens).shape == (4, 6)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(image, tokens), answers)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_mfb_vqa_question_state_ignores_padding():
    model = MFBVQA(num_answers=3, vocab_size=10, image_channels=4, embed_dim=4, hidden_dim=5, k=2, o=3).eval()
    short = model.encode_question(torch.tensor([[3, 4, 0, 0]]))
    trimmed = model.encode_question(torch.tensor([[3, 4]]))
    torch.testing.assert_close(short, trimmed)


def test_mfb_vqa_bad_input():
    model = MFBVQA(num_answers=3, vocab_size=10, image_channels=4, embed_dim=4, hidden_dim=5, k=2, o=3)
    with pytest.raises(ValueError, match="cvops.MFBVQA: tokens must be int64"):
        model(torch.rand(2, 4, 3, 3), torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="cvops.MFBVQA: image must be grid features"):
        model(torch.rand(2, 4, 3), torch.ones(2, 4, dtype=torch.long))
