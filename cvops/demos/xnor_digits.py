"""XNOR-Net on handwritten digits: train the small binary CNN (cvops.models.xnor_net.xnor_digits_cnn)
on scikit-learn's load_digits (1797 grey 8×8 images, bundled, nothing is downloaded) with Adam and
the straight-through estimator, then report the held-out accuracy of the eval-mode model and of the
packed model (latent float weights dropped), and the float and packed model sizes.

    python -m cvops.demos.xnor_digits [--epochs N] [--seconds S] [--seed K]

Training runs N epochs (8 by default, a few seconds on 2 CPU cores), or stops early at the end of
the epoch that passes S seconds. A quarter of the images (stratified by digit) is held out; the
pixels are scaled to [0, 1].
"""

import argparse
import copy
import time
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cvops.models.xnor_net import model_sizes, pack_model, xnor_digits_cnn

__all__ = ["DigitsResult", "accuracy", "load_digits_split", "main", "train"]

DigitsResult = namedtuple(
    "DigitsResult", ["accuracy", "packed_accuracy", "epochs", "seconds", "sizes", "model", "packed_model"]
)
DigitsResult.__doc__ = """train: the held-out accuracy of the eval-mode model and of its packed copy (keep_latent=False),
the epochs run and the training time in seconds, model_sizes of the model, the trained model (eval
mode) and the packed copy."""

EPOCHS = 8
BATCH_SIZE = 64
LR = 1e-2


def load_digits_split(seed=0, test_size=0.25):
    """sklearn's digits as (x_train [N, 1, 8, 8] in [0, 1], y_train [N], x_test, y_test), split
    stratified by digit with random_state=seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_size, stratify=y.numpy(), random_state=seed
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


@torch.no_grad()
def accuracy(model, x: Tensor, y: Tensor) -> float:
    """The fraction of x the model classifies as y (the model must be in eval mode)."""
    return (model(x).argmax(1) == y).float().mean().item()


def train(epochs=EPOCHS, seconds=None, seed=0, lr=LR, batch_size=BATCH_SIZE) -> DigitsResult:
    """Train xnor_digits_cnn() on the digits for `epochs` epochs, or until `seconds` of training have
    passed at the end of an epoch (None: no time limit), with Adam and a learning rate annealed to 0
    (cosine) over the epochs' steps. The seed fixes the split, the initialisation and the batch
    order, so an epoch budget gives the same model on every run; a time budget depends on the machine."""
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = xnor_digits_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = (len(y_train) + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    start = time.perf_counter()
    done = 0
    model.train()
    while done < epochs and (seconds is None or time.perf_counter() - start < seconds):
        order = torch.randperm(len(y_train), generator=generator)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        done += 1
    elapsed = time.perf_counter() - start
    model.eval()
    held_out = accuracy(model, x_test, y_test)
    packed = pack_model(copy.deepcopy(model), keep_latent=False)
    return DigitsResult(held_out, accuracy(packed, x_test, y_test), done, elapsed, model_sizes(model), model, packed)


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description="Train a binary (XNOR-Net) CNN on sklearn's 8×8 digits.")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default {EPOCHS})")
    parser.add_argument("--seconds", type=float, help="stop after the epoch that passes this training time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = train(epochs=args.epochs, seconds=args.seconds, seed=args.seed)
    sizes = result.sizes
    print(f"trained {result.epochs} epochs in {result.seconds:.1f} s")
    print(f"held-out accuracy: {result.accuracy:.4f} (packed model: {result.packed_accuracy:.4f})")
    print(
        f"model size: float {sizes['float_bytes']} bytes, packed {sizes['packed_bytes']} bytes "
        f"({sizes['ratio']:.1f}× smaller)"
    )
    return result.accuracy


if __name__ == "__main__":
    main()
