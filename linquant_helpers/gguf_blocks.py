"""GGUF's Q8_0 and Q4_0 blocks (llama.cpp): per-group quantization at group 32, in bytes.

A GGUF file stores a quantized row of ``K`` weights as ``K / 32`` blocks. Each
block holds one float16 scale ``d`` and 32 codes; ``w_hat = d * q``:

* **Q8_0** (34 bytes): ``d`` then 32 int8 codes.
  ``d = max|x| / 127``, ``q = roundf(x * (1 / d))``, with C's ``roundf``: half
  away from zero. Codes in ``[-127, 127]``.
* **Q4_0** (18 bytes): ``d`` then 16 bytes of 4-bit codes; byte ``j`` holds
  ``q[j] + 8`` in its low nibble and ``q[j + 16] + 8`` in its high nibble.
  ``d = m / -8``, with ``m`` the block's value of largest magnitude *with its
  sign*, so that ``m`` lands exactly on code ``-8``; then
  ``q = clamp(trunc(x * (1 / d) + 8.5), 0, 15) - 8``, the ``+ 8.5`` added in float32.
  Codes in ``[-8, 7]``: a 16-level grid, ``d`` one eighth of the largest magnitude.

In the vocabulary of the package both are symmetric per-group quantization with
``group_size=32``, zero point 0, and a scale stored in float16 but used in float32
to compute the codes. What differs from :func:`~linquant_helpers.affine.quantize`
is the rounding (``round`` is half to even there) and, for Q4_0, the scale.

:func:`quantize_q8_0` / :func:`quantize_q4_0` follow llama.cpp's rule in torch;
:func:`encode_blocks` / :func:`decode_blocks` turn ``(scale, codes)`` into the
bytes of a GGUF tensor and back; :func:`gguf_quantize` / :func:`gguf_dequantize`
call the ``gguf`` package itself (the ``runtimes`` extra), the reference.
"""

from __future__ import annotations

import torch

from .optional import require
from .validation import check_finite, check_float_tensor, check_tensor

BLOCK_SIZE = 32
"""Weights per block, for both formats (``QK8_0 = QK4_0 = 32`` in llama.cpp)."""

BLOCK_BYTES = {"Q8_0": 2 + BLOCK_SIZE, "Q4_0": 2 + BLOCK_SIZE // 2}
"""Bytes per block: a float16 scale, then the codes (one per byte, or two per byte)."""

CODE_RANGE = {"Q8_0": (-127, 127), "Q4_0": (-8, 7)}
"""``(qmin, qmax)`` of each format's codes."""

FLOAT16_MAX = float(torch.finfo(torch.float16).max)
"""65504: the largest scale a block can store; a larger one would be stored as infinity."""


def _check_format(fmt: str) -> str:
    if fmt not in BLOCK_BYTES:
        raise ValueError(f"fmt must be one of {sorted(BLOCK_BYTES)}, got {fmt!r}")
    return fmt


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """``x`` of shape ``(..., K)`` viewed as ``(..., K / 32, 32)`` float32 blocks."""
    x = check_float_tensor(x)
    if x.ndim == 0 or x.shape[-1] % BLOCK_SIZE:
        raise ValueError(
            f"x's last dimension must be a multiple of {BLOCK_SIZE} (one block per 32 weights), "
            f"got shape {tuple(x.shape)}"
        )
    check_finite(x)  # NaN or inf has no code: llama.cpp would store a NaN scale
    return x.float().reshape(*x.shape[:-1], -1, BLOCK_SIZE)


def _stored_scale(d: torch.Tensor, fmt: str, divisor: int) -> torch.Tensor:
    """``d`` (float32, one per block) as the float16 the block stores; ``ValueError`` if it
    overflows float16, which would store infinity and decode every weight as inf or NaN."""
    half = d.half()
    if bool(torch.isinf(half).any()):
        worst = float(d.abs().max()) * divisor
        raise ValueError(
            f"x holds a block of magnitude {worst:.4g}: {fmt}'s float16 scale d = max|x| / "
            f"{divisor} overflows above {FLOAT16_MAX:g}, so |x| must stay below about "
            f"{FLOAT16_MAX * divisor:.4g} (llama.cpp would store d = inf)"
        )
    return half


def round_half_away(y: torch.Tensor) -> torch.Tensor:
    """C's ``roundf``: ``sign(y) * (floor(|y|) + floor(2 (|y| - floor(|y|))))``.

    Ties go away from zero (``2.5 -> 3``, ``-2.5 -> -3``), where ``torch.round``
    goes to the even neighbour (``2.5 -> 2``). Written without ``|y| + 0.5``,
    which float32 would round up for ``|y| = 0.49999997``; every step is exact.
    """
    a = y.abs()
    floored = torch.floor(a)
    return torch.sign(y) * (floored + torch.floor(2 * (a - floored)))


def _reciprocal(d: torch.Tensor) -> torch.Tensor:
    """``1 / d``, and 0 where ``d == 0`` (an all-zero block gets codes 0, as in llama.cpp)."""
    return torch.where(d == 0, torch.zeros_like(d), 1 / d)


def quantize_q8_0(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's Q8_0: ``d = max|x| / 127`` per block, ``q = roundf(x * (1 / d))``.

    ``x`` has shape ``(..., K)``, ``K`` a multiple of 32. Returns the float16
    scales, shape ``(..., K / 32)``, and the int8 codes, shape ``(..., K)``.
    The codes are computed with the float32 ``d``; only the stored scale is
    float16. An all-zero block gets ``d = 0`` and codes 0.

    Tiny blocks behave as in llama.cpp (``gguf.quants`` gives the same bytes):
    below float16's normal range (``d < 2^-14``, ``max|x| < 127 * 2^-14``, about
    7.8e-3) the stored ``d`` is a subnormal with fewer significant bits, and when
    ``d < 2^-25`` (``max|x|`` below about 3.8e-6) it rounds to 0: such a block keeps
    its codes (127 for its largest value) but decodes to zeros, an absolute error of
    at most ``max|x|``.
    Raises ``ValueError`` for a last dimension that is not a multiple of 32, for NaN
    or infinity in ``x``, and for a block whose ``d`` overflows float16
    (``max|x| / 127 > 65504``, about 8.3e6), which llama.cpp would store as inf.
    """
    blocks = _blocks(x)
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127
    q = round_half_away(blocks * _reciprocal(d))
    return _stored_scale(d.squeeze(-1), "Q8_0", 127), q.to(torch.int8).reshape(x.shape)


def quantize_q4_0(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's Q4_0: ``d = m / -8``, ``q = clamp(trunc(x * (1 / d) + 8.5), 0, 15) - 8``.

    ``m`` is each block's value of largest magnitude, with its sign (the first
    one if several tie), so ``d`` is negative when ``m`` is positive and ``m``
    always gets code ``-8``. ``trunc(y + 8.5) - 8`` is ``floor(y + 0.5)``, half up,
    except that ``y + 8.5`` is rounded to float32 first. Shapes as
    :func:`quantize_q8_0`; codes int8 in ``[-8, 7]``. Tiny blocks as in
    :func:`quantize_q8_0`, with 8 for 127; raises ``ValueError`` for NaN or infinity,
    and for ``|m| / 8 > 65504`` (about 5.2e5), where the float16 ``d`` overflows.
    """
    blocks = _blocks(x)
    m = blocks.gather(-1, blocks.abs().argmax(dim=-1, keepdim=True))
    d = m / -8
    shifted = torch.trunc(blocks * _reciprocal(d) + 8.5).clamp(0, 15)
    return _stored_scale(d.squeeze(-1), "Q4_0", 8), (shifted - 8).to(torch.int8).reshape(x.shape)


def dequantize_blocks(scale: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``w_hat = d * q`` per block of 32, in float32: shape of ``codes``, ``(..., K)``."""
    scale, codes = check_tensor(scale, "scale"), check_tensor(codes, "codes")
    expected = tuple(codes.shape[:-1]) + (codes.shape[-1] // BLOCK_SIZE,)
    if tuple(scale.shape) != expected or codes.ndim == 0 or codes.shape[-1] % BLOCK_SIZE:
        raise ValueError(
            f"scale must hold one value per block of {BLOCK_SIZE} codes: codes of shape "
            f"{tuple(codes.shape)} need scale of shape {expected}, got {tuple(scale.shape)}"
        )
    q = codes.reshape(*codes.shape[:-1], -1, BLOCK_SIZE).float()
    return (scale.float().unsqueeze(-1) * q).reshape(codes.shape)


def encode_blocks(scale: torch.Tensor, codes: torch.Tensor, fmt: str) -> torch.Tensor:
    """The bytes of a GGUF tensor: per block, ``d`` (float16, little-endian) then the codes.

    ``scale`` of shape ``(..., K / 32)``, ``codes`` int8 of shape ``(..., K)`` in
    :data:`CODE_RANGE`; returns uint8 of shape ``(..., K / 32 * BLOCK_BYTES[fmt])``,
    the layout of ``gguf.quants.quantize``. Raises ``ValueError`` for an unknown
    ``fmt``, codes out of range, or shapes that do not fit.
    """
    qmin, qmax = CODE_RANGE[_check_format(fmt)]
    codes = check_tensor(codes, "codes")
    if codes.dtype != torch.int8:
        raise TypeError(f"codes must be int8, got {codes.dtype}")
    low, high = (int(codes.min()), int(codes.max())) if codes.numel() else (0, 0)
    if low < qmin or high > qmax:
        raise ValueError(f"{fmt} codes must lie in [{qmin}, {qmax}], got [{low}, {high}]")
    dequantize_blocks(scale, codes)  # checks the shapes
    q = codes.reshape(*codes.shape[:-1], -1, BLOCK_SIZE)
    d = scale.half().contiguous().view(torch.uint8).reshape(*q.shape[:-1], 2)  # little-endian
    if fmt == "Q8_0":
        body = q.view(torch.uint8)
    else:
        u = (q + 8).to(torch.uint8)
        body = u[..., : BLOCK_SIZE // 2] | (u[..., BLOCK_SIZE // 2 :] << 4)
    return torch.cat([d, body], dim=-1).reshape(*codes.shape[:-1], -1)


def decode_blocks(raw: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read GGUF bytes back: ``(scale, codes)``, float16 ``(..., n_blocks)`` and int8 ``(..., K)``.

    ``raw`` is uint8 of shape ``(..., n_blocks * BLOCK_BYTES[fmt])`` (a numpy
    array from ``gguf.quants.quantize`` is accepted); the inverse of
    :func:`encode_blocks`. Raises ``ValueError`` for an unknown ``fmt`` or a last
    dimension that is not a whole number of blocks.
    """
    nbytes = BLOCK_BYTES[_check_format(fmt)]
    raw = torch.as_tensor(raw)
    if raw.dtype != torch.uint8:
        raise TypeError(f"raw must be uint8 bytes, got {raw.dtype}")
    if raw.ndim == 0 or raw.shape[-1] % nbytes:
        raise ValueError(
            f"raw's last dimension must be a multiple of {nbytes} ({fmt} block bytes), "
            f"got shape {tuple(raw.shape)}"
        )
    blocks = raw.reshape(*raw.shape[:-1], -1, nbytes)
    scale = blocks[..., :2].contiguous().view(torch.float16).squeeze(-1)
    body = blocks[..., 2:].contiguous()
    if fmt == "Q8_0":
        q = body.view(torch.int8)
    else:
        q = torch.cat([body & 0x0F, body >> 4], dim=-1).to(torch.int8) - 8
    return scale, q.reshape(*raw.shape[:-1], -1)


def _qtype(fmt: str):
    return getattr(require("gguf").GGMLQuantizationType, _check_format(fmt))


def gguf_quantize(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """The reference: ``gguf.quants.quantize`` on ``x`` (float32), as a uint8 tensor.

    Needs the ``gguf`` package (the ``runtimes`` extra); raises ``ImportError``
    with the install command without it.
    """
    quants = require("gguf.quants")
    x = check_float_tensor(x).detach().float().cpu()
    return torch.from_numpy(quants.quantize(x.numpy(), _qtype(fmt)).copy())


def gguf_dequantize(raw: torch.Tensor, fmt: str) -> torch.Tensor:
    """The reference decoder: ``gguf.quants.dequantize`` of uint8 ``raw``, as float32."""
    quants = require("gguf.quants")
    raw = torch.as_tensor(raw)
    return torch.from_numpy(quants.dequantize(raw.cpu().numpy(), _qtype(fmt)).copy())
