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


UNSUPPORTED_INT_DTYPES = (torch.uint16, torch.uint32, torch.uint64)
"""Integer dtypes PyTorch supports only in part (no min/max, few kernels): refused up front."""


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is an ordinary (dense, non-meta, non-quantized) tensor.

    Raises ``TypeError`` naming ``name`` for anything else: a meta tensor has
    no values, a sparse one no dense layout, and a PyTorch quantized tensor
    (``torch.qint8``...) carries its own qparams (``x.int_repr()`` gives its codes,
    ``x.dequantize()`` its values).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_quantized:
        raise TypeError(
            f"{name} is a PyTorch quantized tensor (dtype {x.dtype}); pass its integer codes "
            f"{name}.int_repr() with its qparams, or call {name}.dequantize() for its values"
        )
    if x.is_meta:
        raise TypeError(f"{name} is a meta tensor: it has a shape but no values to work on")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {x.layout}; call .to_dense()")
    return x


def check_float_tensor(x: object, name: str = "x") -> torch.Tensor:
    """Return ``x`` if it is a real floating-point tensor; raise ``TypeError`` otherwise."""
    x = check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype}; "
            "integer tensors are already quantized"
        )
    return x


def check_int_tensor(q: object, name: str = "q") -> torch.Tensor:
    """Return ``q`` if it is an integer tensor; raise ``TypeError`` otherwise.

    Bool, float, complex and the partly supported ``uint16``/``uint32``/``uint64``
    dtypes are refused.
    """
    q = check_tensor(q, name)
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {q.dtype}")
    if q.dtype in UNSUPPORTED_INT_DTYPES:
        raise TypeError(
            f"{name} must be an int8, uint8, int16, int32 or int64 tensor, got dtype {q.dtype} "
            f"(PyTorch lacks most kernels for it); convert with {name}.to(torch.int32)"
        )
    return q


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` if it is a Python int (not a bool, not a float) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_real(value: object, name: str) -> float:
    """``value`` as a float if it is a real Python number (not a bool); else ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"{name} is too large, got an int of {value.bit_length()} bits") from None


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


MIN_SCALE = float(1.0 / torch.finfo(torch.float32).max)
"""About 2.94e-39: below it (subnormal scales) ``1 / scale`` overflows float32 to infinity,
and every code would saturate or, for ``x = 0``, become NaN."""


def _qparam_tensor(value: object, name: str, device: torch.device, kinds: str) -> torch.Tensor:
    """``value`` (a Python number or a real tensor) as a tensor on ``device``, type-checked."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise TypeError(f"{name} must be {kinds}, got {type(value).__name__}")
    if isinstance(value, torch.Tensor):
        check_tensor(value, name)
        if value.is_complex() or value.dtype in (torch.bool, *UNSUPPORTED_INT_DTYPES):
            raise TypeError(f"{name} must be {kinds}, got a tensor of dtype {value.dtype}")
    return value


def as_scale(scale: object, device: torch.device, name: str = "scale") -> torch.Tensor:
    """Return ``scale`` as a float32 tensor on ``device``, checking ``MIN_SCALE <= scale`` finite.

    A positive scale below :data:`MIN_SCALE` (a float32 subnormal) is refused:
    ``1 / scale`` would be infinite. ``name`` is the argument named in errors.
    """
    _qparam_tensor(scale, name, device, "a float or a tensor")
    if isinstance(scale, int):  # a huge int would overflow inside torch.as_tensor
        scale = check_real(scale, name)
    s = torch.as_tensor(scale, dtype=torch.float32, device=device)
    if s.numel():  # one reduction decides; NaN spoils min and max. 1 / s is largest at min(s).
        low, high = s.aminmax()
        if bool(low > 0) and bool(torch.isfinite(high)) and bool(torch.isfinite(1.0 / low)):
            return s
    bad = ~(torch.isfinite(s) & (s > 0))  # something is wrong: find it, to name it
    if bool(bad.any()):
        raise ValueError(f"{name} must be positive and finite, got {_short(s[bad][:1])}")
    tiny = ~torch.isfinite(1.0 / s)  # exactly what quantize computes
    if bool(tiny.any()):
        raise ValueError(
            f"{name} must be at least {MIN_SCALE:.3g} so that 1 / {name} is finite in float32, "
            f"got {_short(s[tiny][:1])}"
        )
    return s


def as_zero_point(
    zero_point: object, device: torch.device, qmin: int = INT32_MIN, qmax: int = INT32_MAX
) -> torch.Tensor:
    """Return ``zero_point`` as an int32 tensor on ``device``.

    Floats are accepted when they hold whole numbers (what ``torch.round``
    returns); 127.6 is rejected, and so is a value outside ``[qmin, qmax]``
    (by default the int32 range, so that the cast never wraps around).
    """
    _qparam_tensor(zero_point, "zero_point", device, "an integer or an integer tensor")
    if isinstance(zero_point, int) and not qmin <= zero_point <= qmax:  # before any int64 overflow
        raise ValueError(f"zero_point must be an integer in [{qmin}, {qmax}], got {zero_point}")
    z = torch.as_tensor(zero_point, device=device)
    if z.numel() and not z.is_floating_point():  # one reduction decides
        low, high = z.aminmax()
        if qmin <= int(low) and int(high) <= qmax:
            return z.to(torch.int32)
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
