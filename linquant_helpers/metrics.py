"""How far is the dequantized tensor from the original? Error metrics.

All are computed in float64 and returned as Python floats.
"""

from __future__ import annotations

import math

import torch

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
