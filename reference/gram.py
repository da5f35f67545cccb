"""Reference Gram matrix and style loss: a bmm and the textbook squared error."""

import torch


def gram_matrix(x, normalize="chw"):
    batch, channels = x.shape[:2]
    features = x.reshape(batch, channels, x.shape[2:].numel())
    gram = torch.bmm(features, features.transpose(1, 2))
    if normalize == "none":
        return gram
    if normalize == "hw":
        n = features.shape[2]
    elif normalize == "chw":
        n = channels * features.shape[2]
    else:
        n = float(normalize)
    return gram / max(n, 1)


def style_loss(x, target, normalize="chw", target_index=None, reduction="mean"):
    gram = gram_matrix(x, normalize)
    if target_index is not None:
        target = target[target_index]
    squared = (gram - target) ** 2
    if reduction == "mean":
        return squared.mean()
    if reduction == "sum":
        return squared.sum()
    return squared.sum(dim=(1, 2))
