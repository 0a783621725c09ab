"""Activations of a transformer in int8: dynamic W8A8, simulated, and SmoothQuant.

* :func:`fake_quantize_activation` - dynamic symmetric fake quantization, per tensor
  or per token (``axis=0`` of the ``(tokens, features)`` view);
* :func:`activation_absmax` - per-channel input maxima of every layer (calibration);
* :func:`smoothquant_scales` - SmoothQuant's factors, which migrate activation
  outliers into the weights (Xiao et al. 2023);
* :class:`SimulatedW8A8Linear`, :func:`simulate_w8a8` - a model whose linear layers
  compute on fake-quantized int8 weights and activations.

Everything here is *simulated* (fake) quantization: the float values an
integer kernel would compute with. The simulation divides the input by ``s``
explicitly, wherever it is; a deployment must put that division somewhere, and
it is free only where the operation that produces the input absorbs a
per-channel factor and feeds nothing else: the norm before attention (query,
key and value share it, so they share one ``s``) or before the MLP in a pre-LN
model (Llama, OPT), whose ``gamma`` (and ``beta``) are divided by ``s``
offline, and the value's output rows for the attention output. In a post-LN
model such as BERT that LayerNorm's output is also the residual stream, so the
division costs a multiply there; after a GELU (FC2's input) it always does.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .affine import EPS, fake_quantize
from .calibration import calibrate
from .observers import MinMaxObserver
from .surgery import quantizable_layers, replace_modules
from .validation import check_finite, check_float_tensor, check_real
from .weights import fake_quantize_weight, rows_qparams


def activation_absmax(model: nn.Module, features: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per input channel, ``max_t |X[t, j]|`` of the input ``X`` of every quantizable layer.

    Lesson 05's :func:`~linquant_helpers.calibration.calibrate` runs ``model``
    once on ``features`` with a per-channel (``axis=-1``) min-max observer in a
    forward pre-hook of each layer. All token positions count, padding included
    (a per-tensor scale sees them too). Returns ``{name: (in_features,) float32}``.
    """
    observers = calibrate(model, [dict(features)], MinMaxObserver, axis=-1)
    return {name: torch.maximum(-obs.min_val, obs.max_val) for name, obs in observers.items()}


def fake_quantize_activation(
    x: torch.Tensor, bits: int = 8, *, axis: int | None = None, group_size: int | None = None
) -> torch.Tensor:
    """Dynamic symmetric fake quantization of an activation ``x`` of shape ``(..., features)``.

    ``x`` is viewed as ``(tokens, features)`` rows, with the scales of
    :func:`~linquant_helpers.weights.rows_qparams` (absmax, narrow codes):
    per tensor (default), one scale ``s = max|x| / (2^(b-1) - 1)`` for the whole
    batch; per token (``axis=0``), one scale per row,
    ``s_t = max_j |x[t, j]| / (2^(b-1) - 1)``, so that a token with an outlier
    does not coarsen the grid of every other token. Returns a tensor of ``x``'s
    shape and dtype. Errors as ``choose_qparams``.
    """
    rows, where = x.reshape(-1, x.shape[-1]), dict(axis=axis, group_size=group_size)
    scale, zero_point = rows_qparams(rows, bits, **where)
    return fake_quantize(rows, scale, zero_point, bits, narrow=True, **where).reshape(x.shape)


def smoothquant_scales(
    act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors ``s_j = max|X_j|^alpha / max_i |W_ij|^(1 - alpha)``.

    ``act_absmax`` is ``(in,)``, ``weight`` the ``(out, in)`` weight of ``nn.Linear``.
    Dividing the activation by ``s`` and multiplying the weight's columns by it
    leaves the product unchanged, ``(X diag(s)^-1)(W diag(s))^T = X W^T``, and
    moves the difficulty from outlier activation channels into the weights.
    Afterwards channel ``j`` of the activation reaches ``(max|X_j| max|W_j|)^(1-alpha)``
    and column ``j`` of the weight ``(max|X_j| max|W_j|)^alpha``: ``alpha = 1`` makes
    every activation channel reach 1, ``alpha = 0.5`` gives both the same range.
    Both maxima are clamped at ``EPS`` so that ``s`` is positive and finite.
    Raises ``TypeError`` for a non-float tensor or a non-number ``alpha``;
    ``ValueError`` for ``alpha`` outside ``[0, 1]``, mismatched shapes, NaN or
    infinity in either tensor (a NaN would become a NaN factor, an infinite one
    a zero column), or a negative ``act_absmax`` (it is a maximum of ``|X|``).
    """
    alpha = check_real(alpha, "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    check_float_tensor(act_absmax, "act_absmax")
    check_float_tensor(weight, "weight")
    if weight.ndim != 2 or act_absmax.shape != weight.shape[1:]:
        raise ValueError(
            f"act_absmax must be (in,) for a weight (out, in); got {tuple(act_absmax.shape)} "
            f"and {tuple(weight.shape)}"
        )
    check_finite(act_absmax, "act_absmax")
    check_finite(weight, "weight")
    if act_absmax.numel() and bool((act_absmax < 0).any()):
        raise ValueError(
            f"act_absmax must be >= 0 (a maximum of |X|), got {float(act_absmax.min()):g}"
        )
    w_absmax = weight.detach().abs().amax(dim=0)
    return act_absmax.clamp(min=EPS) ** alpha / w_absmax.clamp(min=EPS) ** (1.0 - alpha)


class SimulatedW8A8Linear(nn.Module):
    """``y = Q_a(x / s) Q_w(W diag(s))^T + b``, simulated in float.

    ``Q_w``: symmetric absmax weights per output channel
    (:func:`~linquant_helpers.weights.fake_quantize_weight` with ``axis=0``), computed
    once. ``Q_a``: dynamic :func:`fake_quantize_activation` on every call, per
    tensor (``act_axis=None``) or per token (``act_axis=0``), at ``act_bits``
    (default ``bits``; lesson 12's W4A8 has ``bits=4, act_bits=8``). ``smooth`` is
    SmoothQuant's ``s`` (``(in,)``, see :func:`smoothquant_scales`), or ``None``
    for no migration.
    """

    def __init__(
        self,
        linear: nn.Linear,
        *,
        bits: int = 8,
        act_axis: int | None = None,
        smooth: torch.Tensor | None = None,
        act_bits: int | None = None,
    ) -> None:
        super().__init__()
        weight = linear.weight.detach()
        if smooth is not None:
            weight = weight * smooth  # column j times s_j: W diag(s), in (out, in) layout
        self.register_buffer("weight", fake_quantize_weight(weight, bits, axis=0))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.register_buffer("smooth", smooth)
        self.bits, self.act_axis = bits, act_axis
        self.act_bits = bits if act_bits is None else act_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / self.smooth
        x = fake_quantize_activation(x, self.act_bits, axis=self.act_axis)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        where = "per tensor" if self.act_axis is None else "per token"
        smooth = self.smooth is not None
        return f"W{self.bits}A{self.act_bits}, activations {where}, smooth={smooth}"


def simulate_w8a8(
    model: nn.Module,
    *,
    act_axis: int | None = None,
    act_absmax: dict[str, torch.Tensor] | None = None,
    alpha: float = 0.5,
    bits: int = 8,
    act_bits: int | None = None,
) -> nn.Module:
    """A copy of ``model`` with every quantizable ``nn.Linear``
    (:func:`~linquant_helpers.surgery.quantizable_layers`) replaced by
    :class:`SimulatedW8A8Linear`, activations per tensor or per token (``act_axis=0``).

    The layers named in ``act_absmax`` (per-channel maxima from
    :func:`activation_absmax` on calibration data) first migrate their
    activation outliers into their weights with :func:`smoothquant_scales` at
    ``alpha``; the others are not smoothed. Weights at ``bits``, activations at
    ``act_bits`` (default ``bits``). ``model`` itself is not modified.
    """
    act_absmax = act_absmax or {}

    def simulate(name: str, layer: nn.Linear) -> SimulatedW8A8Linear:
        smooth = None
        if name in act_absmax:
            smooth = smoothquant_scales(act_absmax[name], layer.weight, alpha)
        return SimulatedW8A8Linear(
            layer, bits=bits, act_axis=act_axis, smooth=smooth, act_bits=act_bits
        )

    quantized = copy.deepcopy(model)
    return replace_modules(quantized, list(quantizable_layers(quantized, (nn.Linear,))), simulate)
