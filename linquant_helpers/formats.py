"""Non-linear 4-bit grids: FP4 (E2M1), NF4, and k-means codebooks (lesson 09).

A linear grid puts its 16 levels at equal steps, ``w_hat = s * q``. These grids
put them elsewhere, and a weight is stored as a 4-bit *index* into a codebook
``c`` of 16 values, times one absmax scale per group::

    s = max|w_group| / max|c|,    i = argmin_k |w / s - c_k|,    w_hat = s * c_i

* :func:`fp4_e2m1_grid`: the 16 values of a 4-bit float with 1 sign, 2 exponent
  and 1 mantissa bit (OCP Microscaling spec), ``{0, 0.5, 1, 1.5, 2, 3, 4, 6}`` and negatives.
* :func:`nf4_grid`: NormalFloat4 (Dettmers et al. 2023, QLoRA), levels at quantiles
  of the standard normal, for weights that are roughly normal.
* :func:`kmeans_codebook`: 16 levels fitted to each row by 1-D k-means (dynamic
  programming, then Lloyd's algorithm); :func:`kmeans_error`, the error it minimizes.
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


def _contiguous_dp(
    sorted_rows: torch.Tensor, k: int, bins: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best split of each sorted row into ``k`` runs of whole bins: ``(centroids, ends)``.

    ``bins=None``: every value is its own bin (the exact optimum). Otherwise the
    row's ``n`` sorted values are cut at ``round(n (1 - cos(pi t / bins)) / 2)``,
    ``t = 0..bins`` (each position once): single values at both ends, wider
    runs in the middle. A level's cluster is a run of whole bins. With prefix
    sums ``P1``, ``P2`` of the values and their squares, values ``a..b-1`` cost
    ``SSE(a, b) = P2_b - P2_a - (P1_b - P1_a)^2 / (b - a)``, and ``D_m(b) = min_a
    D_{m-1}(a) + SSE(a, b)`` (``D_1(b) = SSE(0, b)``) is the least cost of ``m``
    clusters over the first ``b`` bins. Vectorized over rows and bin pairs; a
    Python loop over the ``k`` levels only.
    """
    r, n = sorted_rows.shape
    if bins is None or bins >= n:
        edges = torch.arange(n + 1)
    else:
        t = torch.arange(bins + 1, dtype=torch.float64) / bins
        edges = torch.unique(torch.round(n * (1 - torch.cos(torch.pi * t)) / 2).long())
        if len(edges) <= k:  # too few distinct cuts for k levels: every value its own bin
            edges = torch.arange(n + 1)
    edges = edges.to(sorted_rows.device)
    bins = len(edges) - 1
    v = sorted_rows - sorted_rows.mean(dim=1, keepdim=True)  # centred: less cancellation
    zero = v.new_zeros(r, 1)
    p1, p2 = torch.cat([zero, v.cumsum(1)], 1), torch.cat([zero, (v * v).cumsum(1)], 1)
    s1, s2 = p1[:, edges], p2[:, edges]  # (R, bins + 1)
    count = (edges.unsqueeze(0) - edges.unsqueeze(1)).double()  # [a, b]: values in bins a..b-1
    sse = (s2.unsqueeze(1) - s2.unsqueeze(2)) - (s1.unsqueeze(1) - s1.unsqueeze(2)) ** 2 / count
    sse = sse.clamp(min=0).masked_fill(count <= 0, float("inf"))  # (R, a, b), a < b only
    cost, choices = sse[:, 0, :], []
    for _ in range(k - 1):
        cost, arg = (cost.unsqueeze(2) + sse).min(dim=1)  # over a: the last cluster's start
        choices.append(arg)
    ends = torch.empty(r, k + 1, dtype=torch.long, device=v.device)
    ends[:, k] = bins
    ends[:, 0] = 0
    for m in range(k - 1, 0, -1):  # walk back: where the cluster of level m starts
        ends[:, m] = choices[m - 1].gather(1, ends[:, m + 1 : m + 2]).squeeze(1)
    at = edges[ends]  # (R, k + 1) value positions
    sums = sorted_rows.new_zeros(r, 1)
    sums = torch.cat([sums, sorted_rows.cumsum(1)], 1)
    centroids = (sums.gather(1, at[:, 1:]) - sums.gather(1, at[:, :-1])) / (at[:, 1:] - at[:, :-1])
    return centroids, at


def kmeans_codebook(
    rows: torch.Tensor, k: int = 16, *, iters: int = 10, bins: int | None = 48
) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` levels per row that minimize ``sum_j (w_j - c_{i_j})^2``: 1-D k-means.

    In 1-D an optimal clustering splits the *sorted* row into ``k`` runs of
    consecutive values, so dynamic programming finds it exactly: ``D_m(b) =
    min_a D_{m-1}(a) + SSE(a, b)``, the least squared error of ``m`` levels for
    the ``b`` smallest values, each level the mean of its run (Wang & Song 2011,
    Ckmeans.1d.dp). ``bins=None`` runs it on every value: exact, at
    ``O(k n^2)`` time and ``O(n^2)`` memory per row. The default, ``bins=48``,
    runs it on 48 runs of consecutive sorted values, single values at both ends
    and wider runs in the middle (cut at ``n (1 - cos(pi t / bins)) / 2``: the
    tails, where one level may serve a few outliers, are resolved value by
    value), then refines with up to ``iters`` steps of Lloyd's algorithm
    (stopping when the assignment repeats): assign each value to its nearest
    level (the lower one at a midpoint), move each level to the mean of its
    values. Lloyd never raises the error. On normal rows of 256 values this
    lands within 6% of the optimum, on MiniLM's weight rows within 20%, where
    Lloyd alone from the row's quantiles stalled at 1.3-2.6x.

    ``rows`` is ``(R, n)``; returns ``(centroids, indices)``: float64 centroids
    ``(R, k)``, sorted, and the int64 indices ``(R, n)`` of each value's nearest
    final centroid. Raises ``ValueError`` for ``rows`` that are not 2-D or hold
    NaN or infinity, ``k`` outside 2..256 or above ``n``, ``iters < 0``, and
    ``bins`` below ``k``.
    """
    rows = check_float_tensor(rows, "rows")
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D (R, n), got shape {tuple(rows.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= min(256, rows.shape[1]):
        raise ValueError(f"k must be an int in [2, min(256, n = {rows.shape[1]})], got {k!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be an int >= 0, got {iters!r}")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or bins < k):
        raise ValueError(f"bins must be None (exact) or an int >= k = {k}, got {bins!r}")
    check_finite(rows, "rows")
    w = rows.detach().double()
    centroids, _ = _contiguous_dp(w.sort(dim=1).values, k, bins)

    def assign(c: torch.Tensor) -> torch.Tensor:
        # In 1-D the nearest of sorted levels is found between midpoints: a value at
        # or below the midpoint of levels m and m+1 goes to m. No (R, n, k) distances.
        return torch.searchsorted((c[:, 1:] + c[:, :-1]) / 2, w)  # (R, n)

    previous = None
    for _ in range(iters):
        idx = assign(centroids)
        if previous is not None and torch.equal(idx, previous):
            break  # converged: the same assignment gives the same means
        previous = idx
        sums = torch.zeros_like(centroids).scatter_add_(1, idx, w)
        counts = torch.zeros_like(centroids).scatter_add_(1, idx, torch.ones_like(w))
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        # an empty level keeps its place and may fall out of order: sort again
        centroids = centroids.sort(dim=1).values
    return centroids, assign(centroids)


def kmeans_error(
    rows: torch.Tensor, centroids: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    """``sum_j (w_j - c_{i_j})^2`` per row, float64 ``(R,)``: what :func:`kmeans_codebook`
    minimizes, for its ``(centroids, indices)``."""
    return (rows.double() - centroids.gather(1, indices)).pow(2).sum(dim=1)
