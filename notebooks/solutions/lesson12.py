"""Reference solutions for notebook 12: the Walsh-Hadamard butterfly, LLM.int8()'s outliers."""

import torch


def hadamard_transform(x):
    n = x.shape[-1]
    y, h = x.reshape(-1, n), 1
    while h < n:  # log2(n) stages
        pairs = y.reshape(-1, n // (2 * h), 2, h)  # pairs h apart inside blocks of 2h
        a, b = pairs[:, :, 0], pairs[:, :, 1]
        y = torch.stack((a + b, a - b), dim=2)
        h *= 2
    return y.reshape(x.shape) / n**0.5


def outlier_columns(x, threshold):
    return (x.abs() >= threshold).reshape(-1, x.shape[-1]).any(dim=0)
