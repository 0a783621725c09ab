"""The core of linear (affine) quantization: ranges, qparams, quantize, dequantize.

A real number ``x`` is stored as an integer code ``q`` with two parameters, a
``scale`` s > 0 and an integer ``zero_point`` z::

    q = clamp(round(x / s + z), qmin, qmax)        (quantize)
    x_hat = s * (q - z)                              (dequantize)

Every function accepts the three granularities of :mod:`linquant_helpers.granularity`
through the same ``axis`` / ``group_size`` keywords.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable

import torch

from .granularity import Granularity
from .validation import (
    as_scale,
    as_zero_point,
    check_bits,
    check_finite,
    check_float_tensor,
    check_int_tensor,
    check_real,
    check_tensor,
)

EPS = torch.finfo(torch.float32).eps
"""Smallest scale ever returned (PyTorch's observers use the same): an all-zero
tensor gets ``scale = EPS`` instead of 0, so that ``x / scale`` is never NaN."""

_BLOCK_ELEMENTS = 1 << 19
"""On the CPU, :func:`quantize` works through big tensors in blocks of about this
many elements (2 MiB of float32), so its temporaries stay small and in cache."""

_FAST_MIN_ELEMENTS = 1 << 16
"""Below this many elements :func:`quantize` computes the formula in one go:
blocks only pay off when ``x`` outgrows the caches."""


def qrange(bits: int = 8, signed: bool = True, narrow: bool = False) -> tuple[int, int]:
    """The integer codes ``[qmin, qmax]`` available with ``bits`` bits.

    * signed:   ``[-2^(b-1), 2^(b-1) - 1]``, e.g. ``[-128, 127]`` at 8 bits;
    * narrow:   signed without the most negative code, ``[-2^(b-1) + 1, 2^(b-1) - 1]``,
      e.g. ``[-127, 127]``, so that the range is symmetric around 0;
    * unsigned: ``[0, 2^b - 1]``, e.g. ``[0, 255]``.

    Raises ``ValueError`` for bits outside 2..16 and for ``narrow=True`` with
    ``signed=False``.
    """
    check_bits(bits)
    if narrow and not signed:
        raise ValueError(
            "narrow=True drops the most negative code, so it needs signed=True, got signed=False"
        )
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def code_dtype(bits: int, signed: bool) -> torch.dtype:
    """The smallest integer dtype that holds every code of :func:`qrange`.

    int8/uint8 up to 8 bits; int16 for signed codes and unsigned ones up to 15
    bits; int32 for 16-bit unsigned codes.
    """
    check_bits(bits)
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    if signed or bits < 16:
        return torch.int16
    return torch.int32


def qparams_from_range(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    bits: int = 8,
    *,
    symmetric: bool = False,
    signed: bool = True,
    narrow: bool = False,
    eps: float = EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map ``[min_val, max_val]`` onto ``[qmin, qmax]``.

    The range is first widened to include 0, so that 0.0 (padding, ReLU zeros)
    is represented exactly: ``min_neg = min(min_val, 0)``, ``max_pos = max(max_val, 0)``.

    * symmetric: ``scale = max(-min_neg, max_pos) / ((qmax - qmin) / 2)``, that is
      ``max|x| / 127.5`` at 8 bits and ``max|x| / 127`` with ``narrow=True``;
      ``zero_point = 0`` (signed) or ``2^(b-1)`` (unsigned, 128 at 8 bits).
    * asymmetric: ``scale = (max_pos - min_neg) / (qmax - qmin)`` and
      ``zero_point = clamp(qmin - round(min_neg / scale), qmin, qmax)``.

    The scale is never below ``eps``. These are the formulas, in float32, of
    PyTorch's ``MinMaxObserver.calculate_qparams``. ``min_val``/``max_val`` are
    real tensors or Python numbers. Returns float32 ``scale`` and int32
    ``zero_point`` of the shape of ``min_val``.

    Raises ``TypeError`` for non-real ``min_val``/``max_val``/``eps``, and
    ``ValueError`` for NaN or infinite ends (they have no scale) and for a range
    too wide for a finite float32 scale.
    """
    qmin, qmax = qrange(bits, signed=signed, narrow=narrow)
    if not check_real(eps, "eps") > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    min_val, max_val = _range_end(min_val, "min_val"), _range_end(max_val, "max_val")
    min_neg = torch.clamp(min_val.float(), max=0.0)
    max_pos = torch.clamp(max_val.float(), min=0.0)
    if symmetric:
        scale = torch.maximum(-min_neg, max_pos) / ((qmax - qmin) / 2)
        scale = torch.clamp(scale, min=eps)
        zero_point = torch.full_like(scale, 0 if signed else 2 ** (bits - 1), dtype=torch.int32)
    else:
        scale = torch.clamp((max_pos - min_neg) / (qmax - qmin), min=eps)
        zero_point = torch.clamp(qmin - torch.round(min_neg / scale), qmin, qmax).to(torch.int32)
    if not bool(torch.isfinite(scale).all()):  # e.g. [-3e38, 3e38]: max - min overflows float32
        raise ValueError(
            f"the range [min_val, max_val] is too wide for a float32 scale: got "
            f"[{float(min_neg.min()):g}, {float(max_pos.max()):g}] with {bits} bits"
        )
    return scale, zero_point


def _check_float32_range(x_min: torch.Tensor, x_max: torch.Tensor) -> None:
    """Raise if float64 data reach beyond float32 (their min/max would become infinite)."""
    big = torch.finfo(torch.float32).max
    largest = max(-float(x_min.min()), float(x_max.max()))
    if largest > big:
        raise ValueError(
            f"x holds values beyond the float32 range of the qparams: max |x| = {largest:g} "
            f"> {big:g}; rescale x first"
        )


def _range_end(v: object, name: str) -> torch.Tensor:
    """``min_val``/``max_val`` as a real tensor (Python numbers accepted), checked finite."""
    if not isinstance(v, torch.Tensor):
        v = torch.tensor(check_real(v, name))
    v = check_tensor(v, name)
    if v.is_complex() or v.dtype == torch.bool:
        raise TypeError(f"{name} must be a real tensor or number, got dtype {v.dtype}")
    check_finite(v, name)
    return v


def choose_qparams(
    x: torch.Tensor,
    bits: int = 8,
    *,
    symmetric: bool = False,
    signed: bool = True,
    narrow: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    eps: float = EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ``(scale, zero_point)`` from the min and max of ``x`` (min-max calibration).

    One pair per tensor, per channel (``axis``) or per group (``group_size``);
    the formulas are those of :func:`qparams_from_range`. Returns a float32
    scale and an int32 zero point on ``x``'s device, of shape ``()``,
    ``(x.shape[axis],)`` or ``x.shape[:-1] + (x.shape[-1] // group_size,)``.

    Raises ``ValueError`` for an empty ``x`` or one holding NaN or infinity,
    values beyond the float32 range (float64 input: the qparams are float32),
    a range too wide for a finite float32 scale, and for a bad ``bits``,
    ``axis`` or ``group_size``.
    """
    x = check_float_tensor(x)
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}): there is no range to quantize")
    g = Granularity.of(x.shape, axis, group_size)
    xg, dims = g.grouped(x), g.reduce_dims()
    # dims is () for per-channel on a 1-D tensor (each element its own channel);
    # amin(dim=()) would reduce over *every* dimension, so nothing to reduce there.
    x_min, x_max = (xg.amin(dim=dims), xg.amax(dim=dims)) if dims else (xg, xg)
    # amin/amax propagate NaN and keep infinities, so checking them checks all of x,
    # without torch.isfinite(x)'s extra passes and temporaries of x's size.
    check_finite(x_min, "x")
    check_finite(x_max, "x")
    if x.dtype == torch.float64:  # the only dtype that can reach beyond float32
        _check_float32_range(x_min, x_max)
    return qparams_from_range(
        x_min,
        x_max,
        bits,
        symmetric=symmetric,
        signed=signed,
        narrow=narrow,
        eps=eps,
    )


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int = 0,
    bits: int = 8,
    *,
    signed: bool = True,
    narrow: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
) -> torch.Tensor:
    """Quantize: ``q = clamp(round(x / scale + zero_point), qmin, qmax)``.

    ``round`` is round-half-to-even, like ``torch.round``. ``x / scale`` is
    computed as ``x * (1 / scale)`` and the zero point is added before rounding,
    in one fused multiply-add (one rounding), as PyTorch's x86 CPU kernel for 8-bit
    ``torch.quantize_per_tensor`` does up to torch 2.13: its codes are bit-identical
    there. Kernels that round twice, such as ``torch.qint32``'s on x86 (16-bit codes),
    or first, such as x86's from torch 2.14 (``round(x * (1 / scale)) + zero_point``),
    can differ by one code at ties and near-ties (notebook 03;
    :func:`~linquant_helpers.hardware.zero_point_rounding_order` probes the running build,
    and :func:`~linquant_helpers.hardware.quantize_as_pytorch_does` follows it).

    ``x`` is any floating-point tensor (bf16/fp16 are computed in float32, float64
    in float64, with no float32 step that could move a value across a tie);
    the codes come back on its device, in :func:`code_dtype` (int8 or uint8 up
    to 8 bits). ``scale`` and ``zero_point`` have the shape that
    ``choose_qparams`` returns for the same ``axis``/``group_size``; a single
    zero point may be shared by all channels or groups. Values beyond the
    range, infinities included, clamp to ``qmin``/``qmax``.

    Raises ``TypeError`` for an integer ``x``; ``ValueError`` for NaN in ``x``
    (it has no code), a scale that is not positive and finite, a zero point
    that is not an integer in ``[qmin, qmax]``, or qparams whose shape does
    not fit the granularity. Under ``torch.compile`` the checks on values
    (NaN, scale, zero point) run inside the compiled graph and raise
    ``RuntimeError`` with the same rule in the message.
    """
    x = check_float_tensor(x)
    qmin, qmax = qrange(bits, signed=signed, narrow=narrow)
    g = Granularity.of(x.shape, axis, group_size)
    scale, zero_point = _checked_qparams(g, scale, zero_point, x.device, qmin, qmax)
    dtype = code_dtype(bits, signed)
    if _fast_path_applies(x):
        return _quantize_fast(g.grouped(x), scale, zero_point, qmin, qmax, dtype).reshape(x.shape)

    # The formula on the grouped view, where the qparams broadcast element-wise.
    xg = g.grouped(x)
    xg = xg.double() if x.dtype == torch.float64 else xg.float()
    q = torch.round(_fma(xg, 1 / scale, zero_point))  # x / s + z, one rounding
    q = torch.clamp(q, qmin, qmax).reshape(x.shape)
    return _codes_without_nan(q, q.to(dtype))


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int = 0,
    *,
    axis: int | None = None,
    group_size: int | None = None,
) -> torch.Tensor:
    """Dequantize: ``x_hat = scale * (q - zero_point)``, in float32.

    Subtract the zero point *first*: ``scale * q + zero_point`` is a common
    bug that shifts every value. Bit-identical to PyTorch's ``.dequantize()``
    given the same float32 scales. Raises ``TypeError`` for a floating-point
    ``q`` and ``ValueError`` for bad qparams, as :func:`quantize` does.
    """
    q = check_int_tensor(q)
    g = Granularity.of(q.shape, axis, group_size)
    s = g.broadcastable(as_scale(scale, q.device), "scale")
    z = g.broadcastable(as_zero_point(zero_point, q.device), "zero_point")
    # (q - z) * s, computed in place on the one float32 copy of q: a temporary per
    # step would double the peak memory and, on large tensors, the time.
    return g.grouped(q).float().sub_(z).mul_(s).reshape(q.shape)


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int = 0,
    bits: int = 8,
    *,
    signed: bool = True,
    narrow: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
) -> torch.Tensor:
    """Quantize then dequantize: ``scale * (quantize(x) - zero_point)``, in ``x``'s dtype.

    The float values a quantized model really computes with ("simulated
    quantization"); equal to ``dequantize(quantize(x, ...), ...)`` for float32
    input. Arguments and errors as :func:`quantize`.

    For fp16/bf16 ``x`` the float32 result is clamped to the dtype's finite range
    before the cast: a range that spans fp16's +-65504 has end codes that
    dequantize slightly beyond it (-65761 for 8 bits), which the cast would turn
    into -inf; they become -65504 instead, the nearest value the dtype holds.
    """
    q = quantize(
        x, scale, zero_point, bits, signed=signed, narrow=narrow, axis=axis, group_size=group_size
    )
    x_hat = dequantize(q, scale, zero_point, axis=axis, group_size=group_size)
    if x.dtype != x_hat.dtype and torch.finfo(x.dtype).max < torch.finfo(x_hat.dtype).max:
        info = torch.finfo(x.dtype)
        x_hat = x_hat.clamp_(info.min, info.max)
    return x_hat.to(x.dtype)


# --- private: compile-friendly checks, and the fast eager path of quantize -----------

_NAN_MESSAGE = "x contains NaN, which has no integer code; clean the input first"


def _require(ok: torch.Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless the boolean tensor ``ok`` is true.

    Under ``torch.compile`` an ``if`` on a tensor's value would break the graph,
    so the test goes into the graph instead (``torch._assert_async``), where it
    raises ``RuntimeError(message)`` when the compiled code runs.
    """
    if torch.compiler.is_compiling():
        torch._assert_async(ok, message)
    elif not bool(ok):
        raise ValueError(message)


def _codes_without_nan(q: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``codes`` (``q`` cast to integers), checked: ``q`` must hold no NaN, which clamp
    keeps and a cast turns into some code. Raises ``ValueError`` (``RuntimeError`` when compiled).

    Under ``torch.compile`` the test reads the codes back: ``q`` equals its code
    where it is a number (integer-valued, within the codes' range) and differs
    from it only where it is NaN, so ``any(q != codes)`` is true exactly on NaN.
    Reading ``codes`` lets Inductor compute the test in the loop that writes
    them, so ``x`` is read once (a test on ``q`` alone got a loop of its own).
    The assertion runs after that loop: one raised inside Inductor's parallel
    loops would abort the process.
    """
    if torch.compiler.is_compiling():
        _require(~(q != codes).any(), _NAN_MESSAGE)
    else:
        _require(~torch.isnan(q).any(), _NAN_MESSAGE)
    return codes


def _checked_qparams(
    g: Granularity,
    scale: object,
    zero_point: object,
    device: torch.device,
    qmin: int,
    qmax: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale`` and ``zero_point`` as float32 tensors that broadcast against ``g.grouped(x)``.

    Eagerly, :func:`~linquant_helpers.validation.as_scale` and ``as_zero_point``
    check them and name the bad value. Under ``torch.compile`` the same rules
    are asserted inside the graph (no graph break), without the value.
    """
    if not torch.compiler.is_compiling():
        s = as_scale(scale, device)
        z = as_zero_point(zero_point, device, qmin, qmax)
    else:
        s = torch.as_tensor(scale, dtype=torch.float32, device=device)
        z = torch.as_tensor(zero_point, device=device)
        rule = "scale must be positive and finite, with a finite 1 / scale"
        _require((torch.isfinite(s) & (s > 0) & torch.isfinite(1 / s)).all(), rule)
        ok = (z >= qmin) & (z <= qmax)
        if z.is_floating_point():
            ok &= z == torch.round(z)
        _require(ok.all(), f"zero_point must be an integer in [{qmin}, {qmax}]")
    return g.broadcastable(s, "scale"), g.broadcastable(z, "zero_point").float()


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once to ``a``'s dtype (float32 or float64), with broadcasting.

    Eagerly it is computed in float64, where the product of two float32 numbers
    is exact, and then rounded to float32: the same result as a fused
    multiply-add on any CPU, with or without FMA instructions (it could differ
    only if the float64 sum fell exactly halfway between two float32 numbers
    while the exact sum did not, about once in 2^29 random values). Under
    ``torch.compile`` the FMA is asked for explicitly, since Inductor lowers
    ``addcmul`` on the CPU to a multiply and an add (two roundings).

    Compiled, ``b`` and ``c`` are small (the qparams) and ``a`` is big: Inductor
    would put the arithmetic that makes ``b`` and ``c`` (``1 / scale``, the zero
    point as a float) inside its loop over ``a``, a division per vector. Stacked,
    they are computed once, into a buffer that the loop only reads.
    """
    if torch.compiler.is_compiling():
        shape = torch.broadcast_shapes(a.shape, b.shape, c.shape)
        b, c = torch.stack(torch.broadcast_tensors(b, c))
        return torch.ops.prims.fma(a.expand(shape), b.expand(shape), c.expand(shape))
    return (a.double() * b.double() + c.double()).to(a.dtype)


@functools.cache
def _addcmul_is_fused() -> bool:
    """Whether this CPU's ATen kernels for ``add(z, x, alpha=s)`` and ``addcmul_`` round once.

    They do wherever they use FMA instructions (x86 with AVX2 or AVX-512, ARM);
    ATen's generic code for older x86 CPUs multiplies and adds separately. Probed
    on ``(1 + 2^-12)^2 - (1 + 2^-11) = 2^-24``, which two roundings turn into 0.
    """
    a = torch.full((67,), 1 + 2**-12)  # a vectorized body and a scalar tail
    c = torch.full((67,), -(1 + 2**-11))
    exact = torch.full((67,), 2.0**-24)
    fused_add = torch.add(c, a, alpha=1 + 2**-12)
    fused_addcmul = c.clone().addcmul_(a, torch.full((67,), 1 + 2**-12))
    return bool(torch.equal(fused_add, exact) and torch.equal(fused_addcmul, exact))


def _fast_path_applies(x: torch.Tensor) -> bool:
    """Whether :func:`quantize` takes :func:`_quantize_fast`: eager, CPU, big enough to pay,
    and a CPU whose multiply-add kernels round once, as :func:`_fma` does."""
    return (
        not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.numel() >= _FAST_MIN_ELEMENTS
        and not x.requires_grad
        and _addcmul_is_fused()
        and x.dtype != torch.float64
    )


def _quantize_fast(
    xg: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """:func:`quantize`'s formula, computed block by block; the same codes, bit for bit.

    Memory, not arithmetic, bounds quantize: the formula as one expression
    writes and reads a float32 temporary of ``x``'s size per operation. Here
    each block of about ``_BLOCK_ELEMENTS`` elements goes through one reusable
    float32 buffer that stays in cache, so ``x`` is read once and the codes
    written once. The multiply-add is written so that ATen's kernel runs
    vectorized (it falls back to scalar code when two of its inputs are
    broadcast along the innermost dimension): ``torch.add(z, x, alpha=1/s)``
    for one scale, and ``buf = z; buf.addcmul_(x, 1/s)`` for many. Both are
    the same fused multiply-add as ``addcmul(z, x, 1/s)``.
    """
    xg = xg.detach()  # the codes are integers: no gradient flows through them anyway
    q = torch.empty(xg.shape, dtype=dtype, device=xg.device)
    if xg.numel() == 0:
        return q
    inv_scale = 1 / scale
    one_scale = inv_scale.ndim == 0
    rows = _rows_per_block(xg)
    # One call each to cut x, q and the qparams into blocks: Python's cost per
    # block, not the arithmetic, is what small blocks would pay for.
    blocks = zip(
        xg.split(rows),
        q.split(rows),
        _split(zero_point, rows),
        _split(inv_scale, rows),
        strict=False,
    )
    inv = float(inv_scale) if one_scale else None
    buffer = torch.empty(min(xg.numel(), rows * xg[0].numel()), device=xg.device)
    maxima = []
    for xb, qb, zb, ib in blocks:
        v = buffer[: xb.numel()].view(xb.shape)
        if one_scale:
            torch.add(zb, xb.float(), alpha=inv, out=v)
        else:
            v.copy_(zb.expand(xb.shape))
            v.addcmul_(xb.float(), ib)
        v.round_().clamp_(qmin, qmax)
        maxima.append(v.amax())  # clamp keeps NaN: the max of a block with NaN is NaN
        qb.copy_(v)
    if bool(torch.stack(maxima).isnan().any()):
        raise ValueError(_NAN_MESSAGE)
    return q


def _rows_per_block(t: torch.Tensor) -> int:
    """How many rows (slices along the first dimension) of ``t`` make about
    ``_BLOCK_ELEMENTS`` elements; at least one."""
    return max(1, _BLOCK_ELEMENTS // max(1, t[0].numel()))


def _split(p: torch.Tensor, rows: int) -> Iterable[torch.Tensor]:
    """A broadcastable qparam cut like the data: by ``rows``, or the same for every block."""
    if p.ndim == 0 or p.shape[0] == 1:
        return itertools.repeat(p)
    return p.split(rows)
