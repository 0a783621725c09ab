"""Weight quantization: scales of a 2-D view, fake-quantized weights and models, their size.

One owner for the scales of a tensor seen as rows: :func:`rows_qparams`, for
weights viewed as ``(out, rest)`` rows and activations as ``(tokens, features)``.
Its granularity keywords are the core's (:mod:`~linquant_helpers.granularity`)
on that view:

* per-tensor  (neither): one scale, ``s = max|w| / (2^(b-1) - 1)`` when symmetric;
* per-channel (``axis=0``): one scale per row, ``s_c = max_j |w[c, j]| / (2^(b-1) - 1)``;
* per-group   (``group_size=g``): one scale per ``g`` consecutive values of a row.

The observer contract (the same in :func:`~linquant_helpers.calibration.calibrate`
and :func:`~linquant_helpers.layers.quantize_model`): ``observer`` is an
:class:`~linquant_helpers.observers.Observer` class, or a ``functools.partial`` of one
that binds its own settings (``percentile``, ``grid``, ``max_samples``); the function
calls it as ``observer(bits, symmetric=.., signed=.., narrow=.., axis=..)``.

* :func:`fake_quantize_weight` / :func:`weight_qparams` / :func:`quantize_weight` - one weight;
* :func:`fake_quantize_weights` - every quantizable layer of a copy of a model;
* :func:`mse_observer`, :func:`mse_weight_scale`, :func:`fake_quantize_weights_mse` - MSE clipping;
* :func:`quantized_weight_nbytes` - bytes of packed codes plus scales.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from .affine import choose_qparams, fake_quantize, quantize
from .granularity import Granularity
from .observers import MSEObserver, Observer
from .packing import packed_numel
from .qtensor import QTensor
from .surgery import quantizable_layers
from .validation import check_float_tensor

MSE_GRID = 20
"""Candidate clipping ratios 1/20, 2/20, .., 1 of :func:`mse_observer`: enough for
per-channel and per-group scales, and few enough to be fast on a transformer."""


def rows_qparams(
    rows: torch.Tensor,
    bits: int = 8,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    symmetric: bool = True,
    narrow: bool = True,
    observer: Callable[..., Observer] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` of a 2-D ``rows`` at the core's ``axis``/``group_size``.

    ``observer=None``: from each block's own range, with :func:`choose_qparams`
    (``scale = max|x| / (2^(b-1) - 1)`` when symmetric and narrow: absmax).
    Otherwise ``observer(bits, symmetric=.., signed=True, narrow=.., axis=..)``
    sees the blocks and chooses the range: per group it sees
    ``rows.reshape(-1, g)`` with ``axis=0``, one row per group. Returns a float32
    scale and an int32 zero point of shape ``()``, ``(rows.shape[axis],)`` or
    ``(n, m // g)``. Raises ``ValueError`` for a tensor that is not 2-D and as
    :func:`choose_qparams` does.
    """
    if rows.ndim != 2:
        raise ValueError(f"rows must be a 2-D view, got shape {tuple(rows.shape)}")
    where = Granularity.of(rows.shape, axis, group_size)
    if observer is None:
        return choose_qparams(
            rows, bits, symmetric=symmetric, narrow=narrow, axis=axis, group_size=group_size
        )
    blocks = rows.reshape(-1, group_size) if group_size else rows
    obs_axis = 0 if group_size else where.axis
    obs = observer(bits, symmetric=symmetric, signed=True, narrow=narrow, axis=obs_axis)
    obs.update(blocks)
    scale, zero_point = obs.qparams()
    return scale.reshape(where.qparam_shape), zero_point.reshape(where.qparam_shape)


def _weight_rows(
    w: torch.Tensor, axis: int | None, group_size: int | None
) -> tuple[torch.Tensor, dict[str, int | None]]:
    """``w`` as ``(out, rest)`` rows, and the granularity that quantizes them.

    A row whose length is not a multiple of ``group_size`` (the 9 weights of a 3x3
    depthwise filter with ``g = 8``) is one group: per-channel.
    """
    w = check_float_tensor(w, "w")
    rows = w.detach().reshape(w.shape[0], -1)
    cut = axis is None and type(group_size) is int and group_size > 0  # else Granularity raises
    if cut and rows.shape[1] % group_size:
        return rows, dict(axis=0, group_size=None)
    return rows, dict(axis=axis, group_size=group_size)


def weight_qparams(
    w: torch.Tensor,
    bits: int = 8,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    **settings: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rows_qparams` of a weight viewed as ``(out, rest)`` rows (see
    :func:`fake_quantize_weight`); ``settings``: ``symmetric``, ``narrow``, ``observer``."""
    rows, where = _weight_rows(w, axis, group_size)
    return rows_qparams(rows, bits, **where, **settings)


def fake_quantize_weight(
    w: torch.Tensor,
    bits: int = 8,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    symmetric: bool = True,
    narrow: bool = True,
    observer: Callable[..., Observer] | None = None,
) -> torch.Tensor:
    """Fake-quantize a weight viewed as ``(out_channels, rest)`` rows.

    A conv weight ``(out, in, kh, kw)`` becomes ``(out, in * kh * kw)``; then
    per-tensor (default), per output channel (``axis=0``) or per ``group_size``
    consecutive weights of a row (a row shorter than a multiple of ``g`` is one
    group). Defaults: symmetric, signed, narrow (codes ``-127..127`` at 8 bits,
    ``scale = max|w| / 127``), the usual choice for weights (Wu et al. 2020).
    ``observer`` chooses clipped ranges instead (see :func:`rows_qparams`).
    Returns a tensor of ``w``'s shape, dtype and device. Raises as
    :func:`choose_qparams` does.
    """
    rows, where = _weight_rows(w, axis, group_size)
    settings = dict(symmetric=symmetric, narrow=narrow, observer=observer)
    scale, zero_point = rows_qparams(rows, bits, **where, **settings)
    return fake_quantize(rows, scale, zero_point, bits, narrow=narrow, **where).reshape(w.shape)


def quantize_weight(
    w: torch.Tensor, bits: int = 8, *, axis: int | None = None, group_size: int | None = None
) -> QTensor:
    """Symmetric, narrow codes of an ``(out, in)`` weight: ``q = round(w / s)``, float32.

    ``s`` as :func:`rows_qparams` chooses it (absmax); codes are int8 in
    ``[-(2^(b-1) - 1), 2^(b-1) - 1]``. What the quantized layers store.
    """
    w = check_float_tensor(w, "weight").detach().float()
    where = dict(axis=axis, group_size=group_size)
    scale, zero_point = rows_qparams(w, bits, **where)
    q = quantize(w, scale, zero_point, bits, narrow=True, **where)
    return QTensor(q, scale, zero_point, bits, True, True, True, axis, group_size)


def fake_quantize_weights(
    model: nn.Module,
    bits: int = 8,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    **settings,
) -> nn.Module:
    """A copy of ``model`` whose quantizable layers' weights are fake-quantized
    (:func:`~linquant_helpers.surgery.quantizable_layers`, :func:`fake_quantize_weight`;
    ``settings`` go to it, e.g. ``observer=mse_observer()``). Biases stay in float,
    as integer kernels keep them in int32 at a much finer scale. The original
    model is untouched."""
    quantized = copy.deepcopy(model)
    for layer in quantizable_layers(quantized).values():
        with torch.no_grad():
            w_hat = fake_quantize_weight(
                layer.weight, bits, axis=axis, group_size=group_size, **settings
            )
            layer.weight.copy_(w_hat)
    return quantized


def mse_observer(grid: int = MSE_GRID) -> Callable[..., MSEObserver]:
    """:class:`~linquant_helpers.observers.MSEObserver` with ``grid`` candidates, for
    ``observer=``. A weight is known in full, so it keeps every value (up to
    ``1 << 24``; by default an observer keeps a sample of a large tensor)."""
    return partial(MSEObserver, grid=grid, max_samples=1 << 24)


def mse_weight_scale(
    w: torch.Tensor,
    bits: int,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    grid: int = MSE_GRID,
) -> torch.Tensor:
    """Symmetric scales of an ``(out, in)`` weight that minimize the quantization MSE.

    ``s = r * max|w| / (2^(b-1) - 1)``, with the ratio ``r`` in ``1/grid, .., 1``
    that minimizes ``mean((fake_quantize(w) - w)^2)`` per block, chosen by
    :func:`mse_observer`. ``r = 1`` is the absmax scale, so the MSE is never
    worse. Returns a float32 scale of the shape ``choose_qparams`` gives.
    Raises ``ValueError`` for a ``group_size`` that does not divide ``in``.
    """
    Granularity.of(w.shape, axis, group_size)  # no per-channel fallback for a bad group size
    scale, _ = weight_qparams(
        w, bits, axis=axis, group_size=group_size, observer=mse_observer(grid)
    )
    return scale


def fake_quantize_weights_mse(
    model: nn.Module, bits: int, *, axis: int | None = None, group_size: int | None = None
) -> nn.Module:
    """:func:`fake_quantize_weights` with MSE-clipped scales (``observer=mse_observer()``)."""
    return fake_quantize_weights(
        model, bits, axis=axis, group_size=group_size, observer=mse_observer()
    )


def quantized_weight_nbytes(
    shape: Sequence[int],
    bits: int,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    scale_bytes: int = 4,
) -> int:
    """Bytes of an ``(out, in)`` weight stored as packed ``bits``-bit codes plus its scales.

    ``ceil(out * in * bits / 8) + n_scales * scale_bytes``, with one scale per
    tensor, per output channel or per group (float32 by default); symmetric
    codes need no zero point. Raises ``ValueError`` for ``bits`` not in
    (1, 2, 4, 8) and for a bad granularity.
    """
    g = Granularity.of(torch.Size(shape), axis, group_size)
    return packed_numel(g.shape.numel(), bits) + g.qparam_shape.numel() * scale_bytes
