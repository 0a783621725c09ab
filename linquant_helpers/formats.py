"""Non-linear 4-bit grids: FP4 (E2M1), NF4, and k-means codebooks (lesson 09).

A linear grid puts its 16 levels at equal steps, ``w_hat = s * q``. These grids
put them elsewhere, and a weight is stored as a 4-bit *index* into a codebook
``c`` of 16 values, times one absmax scale per group::

    s = max|w_group| / max|c|,    i = argmin_k |w / s - c_k|,    w_hat = s * c_i

* :func:`fp4_e2m1_grid`: the 16 values of a 4-bit float with 1 sign, 2 exponent
  and 1 mantissa bit (OCP Microscaling spec), ``{0, 0.5, 1, 1.5, 2, 3, 4, 6}`` and negatives.
* :func:`nf4_grid`: NormalFloat4 (Dettmers et al. 2023, QLoRA), levels at quantiles
  of the standard normal, for weights that are roughly normal.
* :func:`kmeans_codebook`: 16 levels fitted to each row by Lloyd's algorithm.
* :func:`quantize_to_codebook`, :func:`dequantize_codebook`, :func:`fake_quantize_codebook`.

Everything is vectorized over rows and groups, and computed in float64.
"""

from __future__ import annotations

import torch

from .granularity import Granularity
from .validation import check_finite, check_float_tensor, check_int_tensor

NF4_OFFSET = 1 - 0.5 * (1 / 30 + 1 / 32)
"""QLoRA's outermost probability, ``(1 - 1/(2*15) + 1 - 1/(2*16)) / 2`` (about 0.9677):
just inside 1, where the normal's quantile function would be infinite."""


def fp4_e2m1_grid() -> torch.Tensor:
    """The 16 values of FP4 E2M1, by code ``0b seem`` (sign, 2 exponent bits, 1 mantissa bit).

    ``v = (-1)^sign * 2^(e - 1) * (1 + m / 2)`` for ``e > 0`` (normal), and
    ``v = (-1)^sign * m / 2`` for ``e = 0`` (subnormal; exponent bias 1). No
    infinities or NaN. Codes 0-7 are ``0, 0.5, 1, 1.5, 2, 3, 4, 6``; codes 8-15
    their negatives (code 8 is -0). Returns float64 of shape ``(16,)``.
    """
    code = torch.arange(16)
    sign = 1.0 - 2.0 * (code >> 3).double()
    e, m = ((code >> 1) & 0b11).double(), (code & 1).double()
    magnitude = torch.where(e > 0, 2.0 ** (e - 1) * (1 + m / 2), m / 2)
    return sign * magnitude


def nf4_grid() -> torch.Tensor:
    """The 16 NF4 levels of QLoRA, increasing from -1 to 1 with an exact 0.

    8 positive levels at the normal quantiles ``Phi^-1(p)`` for ``p`` evenly spaced
    from :data:`NF4_OFFSET` down to 1/2 (the last, 0, dropped), 7 negative ones at
    ``-Phi^-1(p)`` for 8 points from the same offset to 1/2 (again without 0), and
    0; each side divided by the largest, so that the ends are -1 and 1. One more
    positive than negative level, as the format's 16 codes with an exact zero must.
    Returns float64 of shape ``(16,)``.
    """
    positive = torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative])
    return levels.sort().values / levels.abs().max()


def _check_codebook(codebook: torch.Tensor) -> torch.Tensor:
    if not isinstance(codebook, torch.Tensor):
        raise TypeError(f"codebook must be a torch.Tensor, got {type(codebook).__name__}")
    if codebook.ndim != 1 or not 2 <= codebook.numel() <= 256:
        raise ValueError(
            f"codebook must be 1-D with 2 to 256 values, got shape {tuple(codebook.shape)}"
        )
    if not codebook.is_floating_point() or not torch.isfinite(codebook).all():
        raise ValueError("codebook must hold finite floating-point values")
    if codebook.abs().max() == 0:
        raise ValueError("codebook must hold a nonzero value: its absmax sets the scale")
    return codebook.double()


def quantize_to_codebook(
    x: torch.Tensor, codebook: torch.Tensor, *, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into ``codebook`` and one absmax scale per group of ``group_size`` (last dim).

    ``s = max|x_group| / max|codebook|`` (an all-zero group gets ``s = 1``),
    ``i = argmin_k |x / s - codebook_k|``. In 1-D the nearest level is found
    between midpoints: with the levels sorted, ``c_(0) <= .. <= c_(K-1)``, a value
    ``v`` goes to ``c_(m)`` where ``(c_(m-1) + c_(m)) / 2 < v <= (c_(m) + c_(m+1)) / 2``
    (:func:`torch.searchsorted`), so a value exactly at a midpoint takes the
    *lower* level, and of equal levels the one first in ``codebook``. No
    ``(..., K)`` table of distances: besides ``x`` itself, the memory is a float64
    copy of ``x`` and the indices. Returns ``(indices, scale)``: uint8 indices of
    ``x``'s shape and a float32 scale of shape ``x.shape[:-1] + (x.shape[-1] //
    group_size,)``, as ``choose_qparams`` gives per group. Raises
    ``TypeError``/``ValueError`` for a bad ``x`` (NaN or infinity included),
    ``codebook`` or ``group_size``.
    """
    x = check_float_tensor(x)
    c = _check_codebook(codebook).to(x.device)
    g = Granularity.of(x.shape, None, group_size)
    check_finite(x, "x")
    v = g.grouped(x).to(torch.float64, copy=True)
    absmax = v.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / c.abs().max(), 1.0).float()
    v.div_(scale.double())  # in place: the only float64 copy of x
    levels, order = torch.sort(c, stable=True)
    new = torch.ones_like(levels, dtype=torch.bool)
    new[1:] = levels[1:] != levels[:-1]  # equal levels (0 and -0): all map to the first one
    order = order[new.nonzero().squeeze(1)][new.cumsum(0) - 1]
    position = torch.searchsorted((levels[1:] + levels[:-1]) / 2, v, out_int32=True)
    del v
    indices = order.to(torch.uint8)[position]
    return indices.reshape(x.shape), scale.squeeze(-1)


def dequantize_codebook(
    indices: torch.Tensor, scale: torch.Tensor, codebook: torch.Tensor, *, group_size: int
) -> torch.Tensor:
    """``w_hat = scale * codebook[indices]``, per group of ``group_size``; float32.

    The inverse of :func:`quantize_to_codebook`. Raises ``TypeError`` for
    indices that are not integers, ``ValueError`` for indices outside
    ``[0, K - 1]`` (a negative index would wrap to the last levels) or a scale
    of the wrong shape.
    """
    c = _check_codebook(codebook)
    indices = check_int_tensor(indices, "indices")
    if indices.numel():
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= c.numel():
            bad = low if low < 0 else high
            raise ValueError(f"indices must be integers in [0, {c.numel() - 1}], got {bad}")
    g = Granularity.of(indices.shape, None, group_size)
    s = g.broadcastable(scale, "scale").double()
    values = c.to(indices.device)[indices.long()]
    return (g.grouped(values) * s).reshape(indices.shape).float()


def fake_quantize_codebook(
    x: torch.Tensor, codebook: torch.Tensor, *, group_size: int
) -> torch.Tensor:
    """:func:`dequantize_codebook` of :func:`quantize_to_codebook`, in ``x``'s dtype."""
    indices, scale = quantize_to_codebook(x, codebook, group_size=group_size)
    return dequantize_codebook(indices, scale, codebook, group_size=group_size).to(x.dtype)


def kmeans_codebook(
    rows: torch.Tensor, k: int = 16, *, iters: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` levels per row that minimize ``sum_j (w_j - c_{i_j})^2``: Lloyd's algorithm.

    Start from the row's quantiles ``(2m + 1) / (2k)``, ``m = 0..k-1``; then
    ``iters`` times: assign each value to its nearest level (the lower one at a
    midpoint), and move each level to the mean of its values (a level with no values
    stays put). ``rows`` is ``(R, n)``; returns ``(centroids, indices)``:
    float64 centroids ``(R, k)``, sorted, and the int64 indices ``(R, n)`` of
    each value's nearest final centroid. Raises ``ValueError`` for ``rows`` that
    are not 2-D, ``k`` outside 2..256 or above ``n``, and ``iters < 1``.
    """
    rows = check_float_tensor(rows, "rows")
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D (R, n), got shape {tuple(rows.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= min(256, rows.shape[1]):
        raise ValueError(f"k must be an int in [2, min(256, n = {rows.shape[1]})], got {k!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    check_finite(rows, "rows")
    w = rows.detach().double()
    q = (2 * torch.arange(k, dtype=torch.float64, device=w.device) + 1) / (2 * k)
    centroids = torch.quantile(w, q, dim=1).T.contiguous()  # (R, k)

    def assign(c: torch.Tensor) -> torch.Tensor:
        # In 1-D the nearest of sorted levels is found between midpoints: a value at
        # or below the midpoint of levels m and m+1 goes to m. No (R, n, k) distances.
        return torch.searchsorted((c[:, 1:] + c[:, :-1]) / 2, w)  # (R, n)

    for _ in range(iters):
        idx = assign(centroids)
        sums = torch.zeros_like(centroids).scatter_add_(1, idx, w)
        counts = torch.zeros_like(centroids).scatter_add_(1, idx, torch.ones_like(w))
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        # an empty level keeps its place and may fall out of order: sort again
        centroids = centroids.sort(dim=1).values
    return centroids, assign(centroids)
