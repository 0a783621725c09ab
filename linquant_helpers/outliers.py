"""Keep the outliers in float: LLM.int8()'s mixed-precision decomposition (lesson 12).

Dettmers et al. (2022) split ``y = x W^T`` by the input's feature columns: the few
columns ``O`` of ``x`` that hold an outlier (any ``|x_tj| >= threshold``) are
multiplied in float, all the others in int8 with absmax scales per row of ``x``
(per token) and per output row of ``W`` ("vector-wise"):

    y = x_O W_O^T  +  s_x s_w^T * (Q(x_rest) Q(W)_rest^T)

* :func:`outlier_columns` - which feature columns hold an outlier;
* :func:`llm_int8_matmul` - the decomposition, with exact integer sums;
* :class:`LLMInt8Linear`, :func:`simulate_llm_int8` - a model whose linear layers use it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .affine import quantize
from .surgery import quantizable_layers, replace_modules
from .validation import check_bits, check_finite, check_float_tensor, check_real
from .weights import rows_qparams

LLM_INT8_THRESHOLD = 6.0
"""The paper's outlier threshold (bitsandbytes' ``llm_int8_threshold``)."""


def _threshold(threshold: object) -> float:
    t = check_real(threshold, "threshold")
    if not (t > 0 and t != float("inf")):
        raise ValueError(f"threshold must be positive and finite, got {threshold}")
    return t


def outlier_columns(x: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD) -> torch.Tensor:
    """The feature columns of ``x`` ``(..., features)`` that hold an outlier, as a bool mask.

    Column ``j`` is an outlier column when ``|x[t, j]| >= threshold`` for any token ``t``
    (all leading dimensions count as tokens). Returns a ``(features,)`` bool tensor on
    ``x``'s device. Raises ``TypeError`` for a non-float ``x`` and ``ValueError`` for a
    0-d ``x``, NaN or infinity, or a threshold that is not positive and finite.
    """
    x = check_float_tensor(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have a feature dimension, got a 0-d tensor")
    if not bool(torch.isfinite(x.sum())):  # one reduction; NaN and inf reach the sum
        check_finite(x, "x")
    t = _threshold(threshold)
    return (x.reshape(-1, x.shape[-1]).abs() >= t).any(dim=0)


def _weight_codes(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes as float64, float64 scales)`` of ``weight``, absmax per output row, narrow."""
    scale, _ = rows_qparams(weight, bits, axis=0)
    return quantize(weight, scale, 0, bits, narrow=True, axis=0).double(), scale.double()


def _decomposed(
    x: torch.Tensor,
    weight: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    outliers: torch.Tensor,
    act_bits: int,
) -> torch.Tensor:
    """LLM.int8()'s product for checked inputs and the weight's codes and row scales."""
    rows = x.reshape(-1, x.shape[-1])
    w = weight.to(x.dtype)
    y = rows[:, outliers] @ w[:, outliers].T  # the float part
    if rows.shape[0] and not bool(outliers.all()):
        rest = rows.masked_fill(outliers, 0.0)  # outlier columns: code 0 in the integer part
        sx, _ = rows_qparams(rest, act_bits, axis=0)  # one scale per token
        qx = quantize(rest, sx, 0, act_bits, narrow=True, axis=0)
        acc = qx.double() @ codes.T  # integer-valued operands: exact sums below 2^53
        y = y + (acc * sx.double()[:, None] * scale[None, :]).to(x.dtype)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def llm_int8_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    threshold: float = LLM_INT8_THRESHOLD,
    *,
    weight_bits: int = 8,
    act_bits: int = 8,
) -> torch.Tensor:
    """``x W^T`` by LLM.int8()'s decomposition: outlier columns in float, the rest in integers.

    ``O`` = :func:`outlier_columns` of ``x`` at ``threshold``. The float part is
    ``x_O W_O^T`` in ``x``'s dtype. The rest is quantized symmetrically (absmax, narrow
    codes ``-(2^(b-1) - 1) .. 2^(b-1) - 1``): each token ``t`` (row of ``x``) over its
    non-outlier columns, ``s_t = max_{j not in O} |x_tj| / (2^(b_a-1) - 1)``, and each
    output row ``i`` of ``W`` over all its columns, ``s_i = max_j |W_ij| / (2^(b_w-1) - 1)``
    (a weight is stored quantized before any input is seen, as bitsandbytes does). The
    codes are multiplied with exact integer sums (in float64, exact while
    ``|sum| < 2^53``) and scaled back by ``s_t s_i``:

        y = x_O W_O^T + s_t s_i * sum_{j not in O} q(x)_tj q(W)_ij

    ``weight_bits``/``act_bits`` other than 8 give the same decomposition at other widths.
    ``x`` is ``(..., in)``, ``weight`` ``(out, in)``, both floating-point on one device;
    returns ``(..., out)`` in ``x``'s dtype (no bias). Raises ``TypeError`` for non-float
    tensors, ``ValueError`` for shapes that do not match, tensors on different devices,
    NaN or infinity, and a bad ``threshold`` or bit width.
    """
    x, weight = check_float_tensor(x, "x"), check_float_tensor(weight, "weight")
    if x.ndim == 0 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x must be (..., in) and weight (out, in) with the same in; got x "
            f"{tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device} and weight on {weight.device}: use one device")
    check_bits(weight_bits), check_bits(act_bits)
    check_finite(weight, "weight")
    outliers = outlier_columns(x, threshold)  # checks x and threshold
    codes, scale = _weight_codes(weight.detach(), weight_bits)
    return _decomposed(x, weight.detach(), codes, scale, outliers, act_bits)


class LLMInt8Linear(nn.Module):
    """``y = llm_int8_matmul(x, W, threshold) + b``, a drop-in for ``nn.Linear``.

    The weight's codes and row scales are computed once. ``seen`` marks the input
    columns that some call kept in float (``seen.sum()`` counts them).
    """

    def __init__(
        self,
        linear: nn.Linear,
        threshold: float = LLM_INT8_THRESHOLD,
        *,
        weight_bits: int = 8,
        act_bits: int = 8,
    ) -> None:
        super().__init__()
        weight = linear.weight.detach()
        check_finite(weight, "linear.weight")
        self.weight_bits, self.act_bits = check_bits(weight_bits), check_bits(act_bits)
        self.threshold = _threshold(threshold)
        codes, scale = _weight_codes(weight, weight_bits)
        self.register_buffer("weight", weight.clone())
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.register_buffer("seen", torch.zeros(weight.shape[1], dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outliers = outlier_columns(x, self.threshold)
        self.seen |= outliers
        y = _decomposed(x, self.weight, self.codes, self.scale, outliers, self.act_bits)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}, threshold={self.threshold:g}"


def simulate_llm_int8(
    model: nn.Module,
    threshold: float = LLM_INT8_THRESHOLD,
    *,
    weight_bits: int = 8,
    act_bits: int = 8,
) -> nn.Module:
    """A copy of ``model`` whose quantizable ``nn.Linear`` layers are :class:`LLMInt8Linear`."""
    copied = copy.deepcopy(model)
    return replace_modules(
        copied,
        list(quantizable_layers(copied, (nn.Linear,))),
        lambda name, layer: LLMInt8Linear(
            layer, threshold, weight_bits=weight_bits, act_bits=act_bits
        ),
    )
