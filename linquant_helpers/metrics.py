"""How far is the dequantized tensor from the original, and how far are two models' outputs?

* :func:`mse`, :func:`max_abs_error`, :func:`sqnr_db` - the error of a tensor;
* :func:`mean_cosine`, :func:`spearman` (with :func:`average_ranks`; :func:`spearman_rows`
  for many at once), :func:`top1_accuracy` - embeddings compared, ranked and retrieved (lesson 08).

All are computed in float64 and returned as Python floats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .validation import check_tensor


def _pair(x: torch.Tensor, y: torch.Tensor, names: tuple[str, str]) -> tuple[torch.Tensor, ...]:
    for t, name in zip((x, y), names, strict=True):
        check_tensor(t, name)
        if t.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype {t.dtype}")
    if x.shape != y.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"{names[0]} is empty: there is no error to measure")
    return x.double(), y.to(x.device).double()


def mse(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error: ``mean((x - y)^2)``."""
    x, y = _pair(x, y, ("x", "y"))
    return float(((x - y) ** 2).mean())


def max_abs_error(x: torch.Tensor, y: torch.Tensor) -> float:
    """Largest absolute difference: ``max |x - y|``."""
    x, y = _pair(x, y, ("x", "y"))
    return float((x - y).abs().max())


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in decibels.

    ``SQNR = 10 * log10(sum(x^2) / sum((x - x_hat)^2))``: higher is better;
    each extra bit adds about 6.02 dB. ``inf`` when ``x_hat == x`` exactly.
    """
    x, x_hat = _pair(x, x_hat, ("x", "x_hat"))
    noise = float(((x - x_hat) ** 2).sum())
    signal = float((x**2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of ``cos(a_i, b_i) = a_i . b_i / (|a_i| |b_i|)``; ``a``, ``b``: ``(N, D)``."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"a and b must be (N, D) of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    return float(F.cosine_similarity(a.double(), b.double(), dim=1).mean())


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of the values of a 1-D ``x``, ties given the mean of their ranks (float64).

    ``[10, 20, 20, 30]`` -> ``[1, 2.5, 2.5, 4]``. Sort once; a run of ``c`` equal
    values that ends at rank ``e`` shares ``e - (c - 1) / 2``.
    """
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty 1-D tensor, got shape {tuple(x.shape)}")
    values, order = torch.sort(x.double())
    _, run, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = torch.empty_like(values)
    ranks[order] = (ends - (counts - 1) / 2)[run]
    return ranks


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson's correlation of :func:`average_ranks`.

    ``rho = cov(rank x, rank y) / (std(rank x) std(rank y))``, in float64, as
    ``scipy.stats.spearmanr`` computes it. Raises ``ValueError`` for 1-D tensors
    of different lengths or fewer than 2 values, and when one of them is constant.
    """
    if x.ndim != 1 or x.shape != y.shape or x.numel() < 2:
        raise ValueError(
            f"x and y must be 1-D of one length >= 2, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = rx.norm() * ry.norm()
    if norm == 0:
        raise ValueError("x or y is constant: its rank correlation is undefined")
    return float((rx * ry).sum() / norm)


def spearman_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`spearman` of each row of ``x`` with the same row of ``y``, ``(B, n)`` -> ``(B,)``.

    For many small samples at once (bootstrap resamples, lesson 09): the average
    rank of ``x_i`` in its row is ``#{x_j < x_i} + (#{x_j = x_i} + 1) / 2``, from
    ``(B, n, n)`` comparisons, then Pearson's correlation per row, in float64.
    Raises ``ValueError`` for shapes that are not one ``(B, n)`` with ``n >= 2``,
    and for a constant row (its rank correlation is undefined).
    """
    if x.ndim != 2 or x.shape != y.shape or x.shape[1] < 2:
        raise ValueError(
            "x and y must be (B, n) of one shape with n >= 2, got "
            f"{tuple(x.shape)}, {tuple(y.shape)}"
        )

    def ranks(v: torch.Tensor) -> torch.Tensor:
        v = v.double()
        below = (v.unsqueeze(1) < v.unsqueeze(2)).sum(dim=2, dtype=torch.float64)
        equal = (v.unsqueeze(1) == v.unsqueeze(2)).sum(dim=2, dtype=torch.float64)
        return below + (equal + 1) / 2

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(dim=1, keepdim=True), ry - ry.mean(dim=1, keepdim=True)
    norm = rx.norm(dim=1) * ry.norm(dim=1)
    if bool((norm == 0).any()):
        row = int((norm == 0).nonzero()[0])
        raise ValueError(f"row {row} of x or y is constant: its rank correlation is undefined")
    return (rx * ry).sum(dim=1) / norm


def top1_accuracy(queries: torch.Tensor, corpus: torch.Tensor, answers: torch.Tensor) -> float:
    """Fraction of queries whose most cosine-similar corpus entry is their answer.

    ``queries`` ``(Q, D)``, ``corpus`` ``(C, D)``, ``answers`` ``(Q,)`` corpus indices.
    """
    sims = F.normalize(queries.double(), dim=1) @ F.normalize(corpus.double(), dim=1).T
    return float((sims.argmax(dim=1) == answers.to(sims.device)).double().mean())
