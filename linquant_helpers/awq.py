"""AWQ-style activation-aware weight scaling (Lin et al. 2023), for lesson 09.

Weights that meet large activations matter more: their rounding error is
multiplied by a large ``x_j``. Scale input channel ``j`` of the weight up by
``s_j`` before rounding and the activation down by it; in exact arithmetic
nothing changes::

    y = W x = (W diag(s)) (diag(s)^-1 x)

but the rounding error of column ``j``, seen at the output, shrinks by about
``s_j`` (the scale of its group grows less than ``s_j`` when only a few
columns grow). AWQ searches ``s = mean_t |x_tj|^alpha`` over a grid of ``alpha``
on calibration data, keeping the ``alpha`` with the smallest layer-output error;
``diag(s)^-1`` is folded into the op before the layer (a LayerNorm's
``gamma`` and ``beta``, or the rows of a previous linear layer).

SmoothQuant (lesson 08, :func:`~linquant_helpers.capstone.smoothquant_scales`)
uses the same algebra for the opposite goal: it divides the *activation* to
make it easy to quantize, ``s = max|x|^alpha / max|W|^(1 - alpha)``, and the
weights pay. AWQ keeps activations in float and makes the *weights* easier.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .affine import EPS, choose_qparams, fake_quantize
from .granularity import Granularity
from .validation import check_bits, check_finite, check_float_tensor

ALPHAS = tuple(i / 20 for i in range(21))
"""The default grid of exponents: 0, 0.05, .., 1 (AWQ's own grid has 20 steps)."""


class AWQResult(NamedTuple):
    """What :func:`awq_search` returns: the best ``alpha``, its scales ``s`` ``(in,)`` float64,
    the weight ``Q(W diag(s)) diag(s)^-1`` (float32), and the output error of every ``alpha``."""

    weight: torch.Tensor
    alpha: float
    scale: torch.Tensor
    errors: torch.Tensor


def awq_scales(act_mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s_j = m_j^alpha / sqrt(max(m^alpha) min(m^alpha))`` with ``m_j = mean_t |x_tj|``; float64.

    ``act_mean_abs`` is ``m``, ``(in,)``, clamped at ``EPS``. The division
    centres ``s`` on 1 (geometric mean of its extremes) and changes nothing else:
    a common factor of all columns cancels in every per-channel or per-group
    absmax scale. ``alpha = 0`` gives ``s = 1``: plain round-to-nearest.
    Raises ``ValueError`` for ``alpha`` outside ``[0, 1]``, a non-1-D ``act_mean_abs``,
    or one holding NaN or infinity.
    """
    act_mean_abs = check_float_tensor(act_mean_abs, "act_mean_abs")
    if act_mean_abs.ndim != 1:
        raise ValueError(f"act_mean_abs must be 1-D (in,), got shape {tuple(act_mean_abs.shape)}")
    check_finite(act_mean_abs, "act_mean_abs")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    s = act_mean_abs.double().clamp(min=EPS) ** alpha
    return s / (s.max() * s.min()).sqrt()


def _fake_quantize_rows(w: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """Symmetric absmax fake quantization (narrow codes) per output channel or per group."""
    per = {"group_size": group_size} if group_size else {"axis": 0}
    scale, _ = choose_qparams(w, bits, symmetric=True, narrow=True, **per)
    return fake_quantize(w, scale, 0, bits, narrow=True, **per)


def awq_search(
    weight: torch.Tensor,
    x: torch.Tensor,
    bits: int = 4,
    *,
    group_size: int | None = None,
    alphas: Sequence[float] = ALPHAS,
) -> AWQResult:
    """Grid-search AWQ's ``alpha`` for an ``(out, in)`` weight and its calibration input ``x``.

    For each ``alpha``: ``s = awq_scales(mean|x|, alpha)``, ``W_hat = Q(W diag(s))
    diag(s)^-1`` with symmetric absmax codes per output channel (``group_size=None``)
    or per group, and the error ``mean((x W^T - x W_hat^T)^2)``, all in float64.
    Returns the ``alpha`` with the smallest error (the first on a tie) as
    :class:`AWQResult`. With ``0`` in ``alphas`` the result is never worse than
    round-to-nearest on ``x``. Raises ``ValueError`` for mismatched shapes, NaN or
    infinity in ``weight`` or ``x``, an empty or out-of-range ``alphas``, or a bad
    ``bits``/``group_size``.
    """
    weight, x = check_float_tensor(weight, "weight"), check_float_tensor(x, "x")
    check_bits(bits)
    if weight.ndim != 2 or x.ndim != 2 or x.shape[1] != weight.shape[1] or x.shape[0] == 0:
        raise ValueError(
            f"weight must be (out, in) and x (n, in) with n >= 1, got {tuple(weight.shape)} "
            f"and {tuple(x.shape)}"
        )
    Granularity.of(weight.shape, None, group_size)
    check_finite(weight, "weight")
    check_finite(x, "x")
    if len(alphas) == 0:
        raise ValueError("alphas must hold at least one exponent in [0, 1]")
    w, x = weight.detach().double(), x.detach().double()
    mean_abs, y = x.abs().mean(dim=0), x @ w.T
    errors, candidates = [], []
    for alpha in alphas:  # a short grid, not a loop over channels
        s = awq_scales(mean_abs, alpha)
        w_hat = _fake_quantize_rows(w * s, bits, group_size) / s
        errors.append(((x @ w_hat.T - y) ** 2).mean())
        candidates.append((w_hat, s))
    errors_t = torch.stack(errors)
    best = int(torch.argmin(errors_t))
    w_hat, s = candidates[best]
    return AWQResult(w_hat.float(), float(alphas[best]), s, errors_t)


def awq_quantize_model(
    model: nn.Module,
    inputs: dict[str | tuple[str, ...], torch.Tensor],
    bits: int = 4,
    **settings: Any,
) -> tuple[nn.Module, dict[str | tuple[str, ...], float]]:
    """A copy of ``model`` whose named ``nn.Linear`` layers hold ``Q(W diag(s)) diag(s)^-1``.

    ``inputs`` maps a layer name, or a tuple of names of layers that share one
    input (query, key and value), to that input ``x`` ``(n, in)``. Layers that
    share an input share one ``s`` (their weights are searched stacked as one
    ``(sum out, in)`` weight), as they must for ``diag(s)^-1`` to fold into the
    op before them. ``settings`` go to :func:`awq_search`. Returns the copy and
    the ``alpha`` chosen for each key; ``model`` is not modified. Raises
    ``ValueError`` for a name that is not an ``nn.Linear`` of ``model``, and for
    layers grouped under one key whose input widths differ from each other or
    from their ``x``.
    """
    quantized = copy.deepcopy(model)
    modules = dict(quantized.named_modules())
    chosen = {}
    for key, x in inputs.items():
        names = (key,) if isinstance(key, str) else tuple(key)
        layers = [modules.get(name) for name in names]
        bad = [
            name
            for name, layer in zip(names, layers, strict=True)
            if not isinstance(layer, nn.Linear)
        ]
        if bad or not names:
            raise ValueError(
                f"inputs: key {key!r} must name nn.Linear layers of model; not: {bad[:3]}"
            )
        widths = {name: layer.in_features for name, layer in zip(names, layers, strict=True)}
        width_x = x.shape[-1] if isinstance(x, torch.Tensor) and x.ndim else None
        if len(set(widths.values())) > 1 or width_x not in widths.values():
            raise ValueError(
                f"inputs: the layers under key {key!r} share one input, so they need one width "
                f"equal to x's; got in_features {widths} and x of shape "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        stacked = torch.cat([layer.weight.detach() for layer in layers])
        result = awq_search(stacked, x, bits, **settings)
        rows = torch.split(result.weight, [layer.out_features for layer in layers])
        for layer, w_hat in zip(layers, rows, strict=True):
            layer.weight.data = w_hat.to(layer.weight.dtype)
        chosen[key] = result.alpha
    return quantized, chosen
