"""Input checks shared by the helpers.

Every public function validates its arguments here, so that bad input gets one
clear ``TypeError``/``ValueError`` that names the argument and the value,
instead of a NaN or a silently wrong tensor further down.
"""

from __future__ import annotations

import torch

MIN_BITS, MAX_BITS = 2, 16
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def check_bits(bits: object, *, low: int = MIN_BITS, high: int = MAX_BITS) -> int:
    """Return ``bits`` if it is an int in ``[low, high]``; raise otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int, got {bits!r} ({type(bits).__name__})")
    if not low <= bits <= high:
        raise ValueError(f"bits must be in [{low}, {high}], got {bits}")
    return bits


def check_float_tensor(x: object, name: str = "x") -> torch.Tensor:
    """Return ``x`` if it is a floating-point tensor; raise ``TypeError`` otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype}; "
            "integer tensors are already quantized"
        )
    return x


def check_int_tensor(q: object, name: str = "q") -> torch.Tensor:
    """Return ``q`` if it is an integer tensor; raise ``TypeError`` otherwise."""
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(q).__name__}")
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {q.dtype}")
    return q


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        kind = "NaN" if bool(torch.isnan(x).any()) else "infinity"
        raise ValueError(f"{name} must be finite, but it contains {kind}")


def _short(t: torch.Tensor) -> str:
    """A readable rendering of a possibly large tensor for error messages."""
    if t.numel() == 1:
        return f"{t.item():g}"
    return f"tensor of shape {tuple(t.shape)}"


def as_scale(scale: object, device: torch.device) -> torch.Tensor:
    """Return ``scale`` as a float32 tensor on ``device``, checking scale > 0 and finite."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, torch.Tensor)):
        raise TypeError(f"scale must be a float or a tensor, got {type(scale).__name__}")
    s = torch.as_tensor(scale, dtype=torch.float32, device=device)
    bad = ~(torch.isfinite(s) & (s > 0))
    if bool(bad.any()):
        raise ValueError(f"scale must be positive and finite, got {_short(s[bad][:1])}")
    return s


def as_zero_point(
    zero_point: object, device: torch.device, qmin: int = INT32_MIN, qmax: int = INT32_MAX
) -> torch.Tensor:
    """Return ``zero_point`` as an int32 tensor on ``device``.

    Floats are accepted when they hold whole numbers (what ``torch.round``
    returns); 127.6 is rejected, and so is a value outside ``[qmin, qmax]``
    (by default the int32 range, so that the cast never wraps around).
    """
    if isinstance(zero_point, bool) or not isinstance(zero_point, (int, float, torch.Tensor)):
        raise TypeError(
            f"zero_point must be an integer or an integer tensor, got {type(zero_point).__name__}"
        )
    z = torch.as_tensor(zero_point, device=device)
    if z.is_floating_point():
        not_whole = ~torch.isfinite(z) | (z != torch.round(z))
        if bool(not_whole.any()):
            raise ValueError(f"zero_point must be an integer, got {_short(z[not_whole][:1])}")
    out_of_range = (z < qmin) | (z > qmax)
    if bool(out_of_range.any()):
        raise ValueError(
            f"zero_point must be an integer in [{qmin}, {qmax}], got {_short(z[out_of_range][:1])}"
        )
    return z.to(torch.int32)
