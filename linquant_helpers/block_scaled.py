"""Block-scaled float codes: MXFP8, MXFP4 (OCP Microscaling) and NVFP4 (lesson 11).

Per-group quantization (lesson 04) with a float grid instead of integers:

* **MX** (OCP Microscaling v1.0): a block of 32 elements shares one scale
  ``X = 2^k``, stored as E8M0 (an 8-bit exponent, bias 127, ``0xFF`` = NaN).
  ``k = floor(log2(max|block|)) - emax(element)``, with ``emax`` the exponent
  of the element format's largest power of two (8 for E4M3, 15 for E5M2, 2 for
  E2M1); elements ``round_to_format(x / X)``, clamped to the format's maximum
  (the floor can leave ``max|x| / X`` up to twice the largest power of two, above
  the maximum: those values saturate). MXFP8: 8 + 8/32 = 8.25 bits per weight;
  MXFP4: 4 + 8/32 = 4.25.
* **NVFP4**: a block of 16 E2M1 elements shares an E4M3 scale
  ``s = max|block| / 6`` (rounded to E4M3), and the tensor one float32 scale
  ``t``; the stored block scale is ``s / t``. 4 + 8/16 = 4.5 bits per weight.

:func:`mx_quantize` / :func:`nvfp4_quantize` give the very bytes of torchao
0.18's ``to_mx`` (its default ``ScaleCalculationMode.FLOOR``) and ``nvfp4_quantize``,
including their float32 arithmetic and FP4 packing (element ``2i`` in the low
nibble of byte ``i``, ``2i + 1`` in the high one); the tests prove it.
:func:`gguf_mxfp4_to_mx` reads llama.cpp's MXFP4 blocks into the same layout.
"""

from __future__ import annotations

import torch

from .float8 import E2M1, E4M3, decode_float, encode_float, float_format, pow2, round_to_format
from .optional import require
from .validation import check_finite, check_float_tensor, check_int, check_tensor

E8M0_BIAS = 127
"""``X = 2^(code - 127)``; code 255 is NaN, code 0 is ``2^-127``."""

MX_ELEMENT_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2)
"""MXFP8 (E4M3 or E5M2) and MXFP4 elements."""


def _blocks(x: object, block_size: object, name: str = "x") -> torch.Tensor:
    """``x`` (..., K) as float32 blocks (..., K / block_size, block_size), checked."""
    x = check_float_tensor(x, name)
    check_int(block_size, "block_size", low=1)
    if x.ndim == 0 or x.shape[-1] % block_size:
        raise ValueError(
            f"{name}'s last dimension must be a multiple of block_size={block_size}, "
            f"got shape {tuple(x.shape)}"
        )
    check_finite(x, name)
    return x.float().reshape(*x.shape[:-1], -1, block_size)


def _mx_format(elem_dtype: object):
    fmt = float_format(elem_dtype, "elem_dtype")
    if elem_dtype not in MX_ELEMENT_DTYPES:  # pragma: no cover - FORMATS holds only these
        raise ValueError(f"elem_dtype must be one of {MX_ELEMENT_DTYPES}, got {elem_dtype}")
    return fmt


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte: ``byte_i = codes[2i] | codes[2i + 1] << 4`` (last dim halves)."""
    codes = check_tensor(codes, "codes")
    if codes.dtype != torch.uint8 or codes.ndim == 0 or codes.shape[-1] % 2:
        raise ValueError(
            "codes must be uint8 with an even last dimension, "
            f"got {codes.dtype} of shape {tuple(codes.shape)}"
        )
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_fp4`: low nibble first; the last dimension doubles."""
    packed = check_tensor(packed, "packed")
    if packed.dtype != torch.uint8 or packed.ndim == 0:
        raise TypeError(f"packed must be a uint8 tensor with a last dimension, got {packed.dtype}")
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(*packed.shape[:-1], -1)


def e8m0_exponent(amax: torch.Tensor, elem_dtype: torch.dtype) -> torch.Tensor:
    """The OCP scale exponent ``k = floor(log2(amax)) - emax(element)``, clamped to ``[-127, 127]``.

    ``floor(log2(amax))`` is read from ``amax``'s float32 exponent bits, as torchao
    does: exact for normal floats, ``-127`` for 0 and float32 subnormals. Returns int32.
    """
    fmt = _mx_format(elem_dtype)
    bits = amax.float().view(torch.int32)
    floor_log2 = ((bits >> 23) & 0xFF) - 127
    return (floor_log2 - fmt.emax).clamp(-E8M0_BIAS, E8M0_BIAS)


def mx_quantize(
    x: torch.Tensor, elem_dtype: torch.dtype, block_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """MX quantization of ``x`` (..., K) in blocks of ``block_size`` along the last dimension.

    ``k = floor(log2(max|block|)) - emax`` (:func:`e8m0_exponent`), stored as
    ``k + 127`` in ``float8_e8m0fnu``; elements ``round_to_format(x / 2^k)`` in
    float32, clamped to the element format's maximum (a block with ``k = -127``
    is divided by ``2^-126``, torchao's float32-normal floor). Returns
    ``(scales, elements)``: scales ``(..., K / block_size)``; elements of
    ``elem_dtype`` and ``x``'s shape for FP8, or uint8 ``(..., K / 2)`` for FP4
    (two E2M1 codes per byte, :func:`pack_fp4`). ``x`` is read in float32.
    Raises ``ValueError`` for a ``K`` that is not a multiple of ``block_size``,
    NaN or infinity, and ``TypeError``/``ValueError`` for another ``elem_dtype``.
    """
    fmt = _mx_format(elem_dtype)
    blocks = _blocks(x, block_size)
    k = e8m0_exponent(blocks.abs().amax(dim=-1, keepdim=True), elem_dtype)
    y = blocks / pow2(k.clamp(min=-126))
    codes = encode_float(y, elem_dtype).reshape(x.shape)
    scales = (k + E8M0_BIAS).to(torch.uint8).squeeze(-1).view(torch.float8_e8m0fnu)
    if fmt is E2M1:
        return scales, pack_fp4(codes)
    return scales, codes.view(elem_dtype)


def _element_values(elements: torch.Tensor, elem_dtype: torch.dtype) -> torch.Tensor:
    """Float32 values of FP8 elements, or of packed FP4 codes (last dim doubles)."""
    elements = check_tensor(elements, "elements")
    if elem_dtype == torch.float4_e2m1fn_x2:
        if elements.dtype != torch.uint8:
            raise TypeError(f"FP4 elements must be packed uint8, got {elements.dtype}")
        return decode_float(unpack_fp4(elements), elem_dtype)
    if elements.dtype != elem_dtype:
        raise TypeError(f"elements must be {elem_dtype}, got {elements.dtype}")
    return decode_float(elements.view(torch.uint8), elem_dtype)


def _scaled(values: torch.Tensor, scale: torch.Tensor, block_size: int, name: str) -> torch.Tensor:
    """``values`` (..., K) times ``scale`` (..., K / block_size), block by block."""
    check_int(block_size, "block_size", low=1)
    expected = (*values.shape[:-1], values.shape[-1] // block_size)
    if values.shape[-1] % block_size or tuple(scale.shape) != expected:
        raise ValueError(
            f"{name} must hold one scale per block of {block_size}: elements of "
            f"{values.shape[-1]} values per row need {name} of shape {expected}, "
            f"got {tuple(scale.shape)}"
        )
    blocks = values.reshape(*expected, block_size)
    return (blocks * scale.unsqueeze(-1)).reshape(values.shape)


def mx_dequantize(
    scales: torch.Tensor,
    elements: torch.Tensor,
    elem_dtype: torch.dtype,
    block_size: int = 32,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``x_hat = element * 2^(scale - 127)`` per block, computed in float32, returned in ``dtype``.

    The inverse of :func:`mx_quantize` (E8M0 code 255, NaN, gives NaN, as in torchao).
    """
    _mx_format(elem_dtype)
    scales = check_tensor(scales, "scales")
    if scales.dtype != torch.float8_e8m0fnu:
        raise TypeError(f"scales must be float8_e8m0fnu, got {scales.dtype}")
    code = scales.view(torch.uint8).to(torch.int32)
    scale = torch.where(code == 255, torch.nan, pow2(code - E8M0_BIAS))
    return _scaled(_element_values(elements, elem_dtype), scale, block_size, "scales").to(dtype)


def nvfp4_tensor_scale(x: torch.Tensor) -> torch.Tensor:
    """NVFP4's float32 tensor scale ``t = max|x| / (448 * 6)``: the largest block scale
    ``max|x| / 6``, divided by ``t``, lands on E4M3's maximum 448."""
    x = check_float_tensor(x)
    check_finite(x)
    return x.float().abs().amax() / (E4M3.max * E2M1.max)


def _check_tensor_scale(per_tensor_scale: object) -> torch.Tensor | None:
    if per_tensor_scale is None:
        return None
    if not isinstance(per_tensor_scale, torch.Tensor) or per_tensor_scale.numel() != 1:
        raise TypeError(
            f"per_tensor_scale must be None or a one-element tensor, got {per_tensor_scale!r}"
        )
    t = per_tensor_scale.float().reshape(())
    if not bool(torch.isfinite(t)) or not bool(t > 0):
        raise ValueError(f"per_tensor_scale must be positive and finite, got {t.item()}")
    return t


def _nvfp4_blocks(
    x: torch.Tensor, block_size: int, per_tensor_scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """NVFP4's block scales and scaled blocks: ``(s, clamp(x * r, -6, 6), t)`` (see below)."""
    blocks = _blocks(x, block_size)
    if block_size % 2:
        raise ValueError(f"block_size must be even (two FP4 codes per byte), got {block_size}")
    t = _check_tensor_scale(per_tensor_scale)
    block_scale = blocks.abs().amax(dim=-1) / E2M1.max
    if t is not None:
        block_scale = block_scale / t
    tiny = 2.0**E4M3.emin
    s = round_to_format(block_scale.clamp(min=tiny, max=E4M3.max), torch.float8_e4m3fn)
    reciprocal = 1.0 / s if t is None else (1.0 / t) / s
    return s, (blocks * reciprocal.unsqueeze(-1)).clamp(-E2M1.max, E2M1.max), t


def nvfp4_quantize(
    x: torch.Tensor, block_size: int = 16, per_tensor_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4: E2M1 elements, an E4M3 scale per block of 16, an optional float32 tensor scale ``t``.

    ``s = E4M3(clamp(max|block| / 6 / t, 2^-6, 448))`` (``t = 1`` when ``None``; the
    floor ``2^-6`` is E4M3's smallest normal, as in torchao);
    elements ``E2M1(clamp(x * r, -6, 6))`` with ``r = 1 / s`` (one level) or
    ``r = (1 / t) / s`` (two levels), in float32. Returns ``(scales float8_e4m3fn
    (..., K / 16), packed uint8 (..., K / 2))``. Errors as :func:`mx_quantize`;
    ``block_size`` must be even.
    """
    s, y, _ = _nvfp4_blocks(x, block_size, per_tensor_scale)
    codes = encode_float(y, torch.float4_e2m1fn_x2).reshape(x.shape)
    return encode_float(s, torch.float8_e4m3fn).view(torch.float8_e4m3fn), pack_fp4(codes)


def nvfp4_dequantize(
    scales: torch.Tensor,
    packed: torch.Tensor,
    block_size: int = 16,
    per_tensor_scale: torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``x_hat = element * (t * s)`` per block, in float32, returned in ``dtype``."""
    scales = check_tensor(scales, "scales")
    if scales.dtype != torch.float8_e4m3fn:
        raise TypeError(f"scales must be float8_e4m3fn, got {scales.dtype}")
    t = _check_tensor_scale(per_tensor_scale)
    s = decode_float(scales.view(torch.uint8), torch.float8_e4m3fn)
    if t is not None:
        s = t * s
    values = _element_values(packed, torch.float4_e2m1fn_x2)
    return _scaled(values, s, block_size, "scales").to(dtype)


def fake_quantize_mx(
    x: torch.Tensor, elem_dtype: torch.dtype, block_size: int = 32
) -> torch.Tensor:
    """``2^k * round_to_format(x / 2^k)`` per block: :func:`mx_dequantize` of
    :func:`mx_quantize` without the codes (the tests prove them equal), in ``x``'s dtype."""
    _mx_format(elem_dtype)
    blocks = _blocks(x, block_size)
    k = e8m0_exponent(blocks.abs().amax(dim=-1, keepdim=True), elem_dtype)
    q = round_to_format(blocks / pow2(k.clamp(min=-126)), elem_dtype)
    return (q * pow2(k)).reshape(x.shape).to(x.dtype)


def fake_quantize_nvfp4(x: torch.Tensor, *, two_level: bool = True) -> torch.Tensor:
    """:func:`nvfp4_dequantize` of :func:`nvfp4_quantize` without the codes, in ``x``'s dtype;
    ``two_level`` uses :func:`nvfp4_tensor_scale` of ``x`` (an all-zero ``x``: one level)."""
    t = nvfp4_tensor_scale(x) if two_level else None
    t = t if t is not None and bool(t > 0) else None
    s, y, t = _nvfp4_blocks(x, 16, t)
    scale = s if t is None else t * s
    q = round_to_format(y, torch.float4_e2m1fn_x2) * scale.unsqueeze(-1)
    return q.reshape(x.shape).to(x.dtype)


def bits_per_weight(element_bits: int, block_size: int, scale_bits: int = 8) -> float:
    """``element_bits + scale_bits / block_size``: the scale's share counted (MXFP4: 4.25)."""
    return element_bits + scale_bits / block_size


# ---------------------------------------------------------------- GGUF's MXFP4

GGUF_MXFP4_BLOCK_BYTES = 17
"""llama.cpp's ``block_mxfp4``: one E8M0 byte, then 16 bytes of 32 E2M1 codes."""


def gguf_mxfp4_to_mx(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's MXFP4 bytes as ``(scales, packed)`` in :func:`mx_quantize`'s layout.

    A GGUF block is ``e, qs[0..15]``: byte ``j`` of ``qs`` holds element ``j`` in its
    low nibble and element ``j + 16`` in its high one (the layout of Q4_0), where
    torchao pairs neighbours ``2i, 2i + 1``. ``raw`` is uint8 ``(..., n_blocks * 17)``
    (a numpy array from ``gguf.quants.quantize`` is accepted).
    """
    raw = torch.as_tensor(raw)
    if raw.dtype != torch.uint8 or raw.ndim == 0 or raw.shape[-1] % GGUF_MXFP4_BLOCK_BYTES:
        raise ValueError(
            f"raw must be uint8 with a last dimension a multiple of {GGUF_MXFP4_BLOCK_BYTES}, "
            f"got {raw.dtype} {tuple(raw.shape)}"
        )
    blocks = raw.reshape(*raw.shape[:-1], -1, GGUF_MXFP4_BLOCK_BYTES)
    qs = blocks[..., 1:]
    codes = torch.cat([qs & 0x0F, qs >> 4], dim=-1)  # elements 0..15, then 16..31
    scales = blocks[..., 0].contiguous().view(torch.float8_e8m0fnu)
    return scales, pack_fp4(codes.reshape(*raw.shape[:-1], -1))


def gguf_mxfp4_quantize(x: torch.Tensor) -> torch.Tensor:
    """The ``gguf`` package's MXFP4 quantizer on ``x`` (float32, last dim a multiple of 32),
    as uint8 bytes. Needs ``gguf`` (the ``runtimes`` extra)."""
    quants = require("gguf.quants")
    gguf = require("gguf")
    x = _blocks(x, 32).reshape(x.shape).detach().cpu()
    qtype = gguf.GGMLQuantizationType.MXFP4
    return torch.from_numpy(quants.quantize(x.numpy(), qtype).copy())
