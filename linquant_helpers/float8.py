"""Small floats from their bits: FP8 E4M3 and E5M2, FP4 E2M1, and FP8 with a scale (lesson 11).

A float code is ``sign | exponent | mantissa``. With ``E`` exponent bits of bias
``b`` and ``M`` mantissa bits, code ``(s, e, m)`` means::

    (-1)^s * 2^(e - b) * (1 + m / 2^M)     if e > 0  (normal)
    (-1)^s * 2^(1 - b) * (m / 2^M)         if e = 0  (subnormal: the same step as e = 1)

* **E4M3** (``torch.float8_e4m3fn``): bias 7, no infinities ("fn": finite), NaN only at
  ``0x7F``/``0xFF``, so the all-ones exponent still holds numbers; largest 448.
* **E5M2** (``torch.float8_e5m2``): bias 15, IEEE-like: exponent 31 is infinity (m = 0)
  or NaN; largest 57344.
* **E2M1** (FP4, ``torch.float4_e2m1fn_x2`` holds two): bias 1, no inf or NaN; largest 6.

:func:`decode_float` and :func:`encode_float` do this by hand; the tests prove them
against torch's dtypes for all 256 codes. :func:`round_to_format` rounds to the
nearest representable value, ties to the even mantissa, after clamping to
``[-max, max]`` (quantizers clamp first: torch's cast of a value beyond the
maximum gives infinity for E5M2, and NaN or the maximum for E4M3 depending on the
PyTorch version). :func:`fp8_quantize` / :func:`fp8_dequantize` add a float32
scale per tensor or per row, ``s = max|x| / max_format``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .validation import check_finite, check_float_tensor, check_tensor


@dataclass(frozen=True)
class FloatFormat:
    """The layout of a small float: exponent and mantissa bits, bias, largest value."""

    name: str
    ebits: int
    mbits: int
    bias: int
    max: float
    has_inf: bool

    @property
    def bits(self) -> int:
        """Bits per code: sign, exponent, mantissa."""
        return 1 + self.ebits + self.mbits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal, ``1 - bias``; subnormals share its step."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest power of two in the format, ``floor(log2(max))``."""
        return int(torch.tensor(self.max).log2().floor())


E4M3 = FloatFormat("E4M3", ebits=4, mbits=3, bias=7, max=448.0, has_inf=False)
E5M2 = FloatFormat("E5M2", ebits=5, mbits=2, bias=15, max=57344.0, has_inf=True)
E2M1 = FloatFormat("E2M1", ebits=2, mbits=1, bias=1, max=6.0, has_inf=False)

FORMATS = {
    torch.float8_e4m3fn: E4M3,
    torch.float8_e5m2: E5M2,
    torch.float4_e2m1fn_x2: E2M1,
}
"""The element dtypes of the lesson and their layouts (FP4 codes travel two per byte)."""


def float_format(dtype: object, name: str = "dtype") -> FloatFormat:
    """The :class:`FloatFormat` of a dtype of :data:`FORMATS`; ``TypeError``/``ValueError`` else."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {dtype!r} ({type(dtype).__name__})")
    if dtype not in FORMATS:
        raise ValueError(f"{name} must be one of {list(FORMATS)}, got {dtype}")
    return FORMATS[dtype]


def pow2(e: torch.Tensor) -> torch.Tensor:
    """``2^e`` in float32 for integer ``e`` in ``[-149, 127]``, built from its bits (exact)."""
    e = e.to(torch.int32)
    normal = ((e.clamp(min=-126) + 127) << 23).view(torch.float32)
    subnormal = (torch.ones_like(e) << (e + 149).clamp(0, 22)).view(torch.float32)
    return torch.where(e >= -126, normal, subnormal)


def decode_float(codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float32 values of ``codes`` (uint8, one code each) in the format of ``dtype``.

    ``s = code >> (E + M)``, ``e = (code >> M) & (2^E - 1)``, ``m = code & (2^M - 1)``;
    value as in the module docstring. E4M3: ``e = 15, m = 7`` is NaN. E5M2:
    ``e = 31`` is infinity (``m = 0``) or NaN. Raises ``TypeError`` for codes that
    are not uint8, ``ValueError`` for codes beyond the format's bits.
    """
    fmt = float_format(dtype)
    codes = check_tensor(codes, "codes")
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be uint8, got {codes.dtype}")
    if codes.numel() and int(codes.max()) >= 1 << fmt.bits:
        top = int(codes.max())
        raise ValueError(f"codes must be below {1 << fmt.bits} for {fmt.name}, got {top}")
    c = codes.to(torch.int32)
    sign = 1.0 - 2.0 * (c >> (fmt.ebits + fmt.mbits)).float()
    e = (c >> fmt.mbits) & ((1 << fmt.ebits) - 1)
    m = (c & ((1 << fmt.mbits) - 1)).float()
    significand = torch.where(e > 0, 1 + m / 2**fmt.mbits, m / 2**fmt.mbits)
    value = sign * significand * pow2(e.clamp(min=1) - fmt.bias)
    all_ones = e == (1 << fmt.ebits) - 1
    if fmt.has_inf:
        value = torch.where(all_ones, torch.where(m == 0, sign * torch.inf, torch.nan), value)
    elif fmt.bits == 8:
        value = torch.where(all_ones & (m == (1 << fmt.mbits) - 1), torch.nan, value)
    return value


def round_to_format(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` rounded to the nearest value of the format of ``dtype``, in ``x``'s dtype.

    Clamp to ``[-max, max]`` first; then, with ``e = max(floor(log2|x|), emin)``
    and the step ``2^(e - M)`` of that binade, ``q = round(x / 2^(e - M)) * 2^(e - M)``:
    ``x / step`` is the significand as an integer plus a fraction, and
    ``torch.round`` sends a tie to the even integer, i.e. the even mantissa.
    ``2^floor(log2|x|)`` is ``|x|``'s float32 bits with the mantissa cleared. Every
    step is exact in float32 (multiplying by powers of two), so this is the
    correctly rounded result of ``x`` read in float32. The sign survives (``-0.01 -> -0.0``).
    Raises ``ValueError`` for NaN or infinity.
    """
    fmt = float_format(dtype)
    x = check_float_tensor(x)
    check_finite(x)
    a = x.float().abs().clamp(max=fmt.max)
    # 2^floor(log2 a): a's exponent bits alone (0 for 0 and float32 subnormals)
    binade = (a.view(torch.int32) & 0x7F800000).view(torch.float32)
    step = (binade * 2.0**-fmt.mbits).clamp(min=2.0 ** (fmt.emin - fmt.mbits))
    q = torch.round(a / step) * step
    return torch.copysign(q, x.float()).to(x.dtype)


def encode_float(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The uint8 codes of ``x`` in the format of ``dtype``: :func:`round_to_format`, then bits.

    For ``q = round_to_format(x)``: normal (``|q| >= 2^emin``) ``e = floor(log2|q|) + bias``,
    ``m = |q| / 2^(e - bias - M) - 2^M``; subnormal ``e = 0``, ``m = |q| / 2^(emin - M)``;
    code ``s << (E + M) | e << M | m``. For a float8 dtype, ``codes.view(dtype)`` is
    the tensor torch's cast gives for ``x`` clamped to the format's range.
    """
    fmt = float_format(dtype)
    q = round_to_format(x, dtype).float()
    a = q.abs()
    _, exponent = torch.frexp(a)
    normal = a >= 2.0**fmt.emin
    e = torch.where(normal, exponent - 1, fmt.emin)
    m = (a / pow2(e - fmt.mbits)).to(torch.int32) - torch.where(normal, 1 << fmt.mbits, 0)
    biased = torch.where(normal, e + fmt.bias, 0)
    sign = torch.signbit(q).to(torch.int32)
    return (sign << (fmt.ebits + fmt.mbits) | biased << fmt.mbits | m).to(torch.uint8)


def grid(dtype: torch.dtype) -> torch.Tensor:
    """Every finite non-negative value of the format of ``dtype``, increasing (float64)."""
    fmt = float_format(dtype)
    values = decode_float(torch.arange(1 << (fmt.bits - 1), dtype=torch.uint8), dtype).double()
    return values[torch.isfinite(values)]


def fp8_quantize(
    x: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn, *, per_row: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 with a float32 scale: ``s = max|x| / max_format``, ``codes = fp8(clamp(x / s))``.

    Per tensor (default) one scale; ``per_row=True`` one per row of the last
    dimension, shape ``x.shape[:-1] + (1,)``. An all-zero tensor or row gets
    ``s = 1``. Returns ``(scale float32, codes of dtype)``; ``x / s`` is computed in
    float32. Raises for a non-float8 ``dtype``, NaN or infinity in ``x``.
    """
    fmt = float_format(dtype)
    if fmt.bits != 8:
        raise ValueError(f"dtype must be a float8 dtype, got {dtype}")
    x = check_float_tensor(x)
    check_finite(x)
    xf = x.float()
    if per_row:
        if x.ndim == 0:
            raise ValueError("x must have a last dimension for per_row=True, got a 0-d tensor")
        amax = xf.abs().amax(dim=-1, keepdim=True)
    else:
        amax = xf.abs().amax()
    scale = torch.where(amax > 0, amax / fmt.max, 1.0)
    return scale, (xf / scale).clamp(-fmt.max, fmt.max).to(dtype)


def fp8_dequantize(
    scale: torch.Tensor, codes: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``x_hat = s * codes``, in ``dtype`` (float32 by default)."""
    check_tensor(codes, "codes")
    if codes.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
        raise TypeError(f"codes must be float8_e4m3fn or float8_e5m2, got {codes.dtype}")
    return (codes.float() * scale.float()).to(dtype)


def fake_quantize_fp8(
    x: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn, *, per_row: bool = False
) -> torch.Tensor:
    """:func:`fp8_dequantize` of :func:`fp8_quantize`, in ``x``'s dtype."""
    scale, codes = fp8_quantize(x, dtype, per_row=per_row)
    return fp8_dequantize(scale, codes, x.dtype)
