"""llama.cpp's CPU matmul: activations quantized to Q8 blocks, integer dot products per block.

A GGUF model on a CPU is not W4A16. Before a matmul, llama.cpp quantizes each
row of activations to the weight type's ``vec_dot_type``: Q8_0 (blocks of 32,
a float16 scale) for Q4_0 and Q8_0 weights, Q8_K (blocks of 256, a float32
scale) for the K-quants. Then every block is an integer dot product, rescaled once:

* Q4_0 x Q8_0: ``y = sum_b d_w[b] * d_x[b] * sum_i q_w[b, i] * q_x[b, i]``;
* Q4_K x Q8_K: per super-block ``d_w d_x sum_j sc_j (q_w . q_x)_j - dmin_w d_x sum_j m_j s_j``,
  where ``s_j`` is the sum of the activation codes of sub-block ``j`` (Q8_K stores
  these sums, ``bsums``, so the min costs one small product per sub-block);
* Q6_K x Q8_K: ``d_w d_x sum_j sc_j (q_w . q_x)_j``, codes ``q_w`` in ``[-32, 31]``.

Here the integer sums are exact (float64 holds them: every partial sum is an
integer far below ``2**53``), each block's rescale is a float32 product as in the
C code, and the blocks are added in float64: llama.cpp's kernels add them in an
order of their own (one per instruction set), so only that last rounding differs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import gguf_blocks, kquants
from .validation import check_finite, check_float_tensor

Q8_K_BLOCK = kquants.SUPER_BLOCK
"""Activations per Q8_K block: 256, one float32 scale each."""

WEIGHT_FORMATS = ("Q4_0", "Q8_0", "Q4_K", "Q6_K")
"""Weight types :class:`GGUFLinear` holds; the first two use Q8_0 activations, the others Q8_K."""

_TOKENS_PER_CHUNK = 256
"""Tokens multiplied at a time, so that the per-block sums ``(blocks, tokens, out)`` stay small."""


def _activations(x: object, cols: int) -> torch.Tensor:
    """``x`` as float32 ``(tokens, cols)``, finite."""
    x = check_float_tensor(x, "x")
    if x.ndim == 0 or x.shape[-1] != cols:
        raise ValueError(f"x must have {cols} features in its last dimension, got {tuple(x.shape)}")
    check_finite(x, "x")
    return x.float().reshape(-1, cols)


def quantize_q8_k(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``(rows, K)`` as Q8_K blocks of 256: ``(d float32 (rows, K/256), q int8)``.

    ``max`` is the value of largest magnitude with its sign, ``iscale = -127 / max``,
    ``q = min(127, round(iscale * x))`` (so ``max`` itself gets -127), ``d = 1 / iscale``;
    an all-zero block gets ``d = 0``. llama.cpp's ``quantize_row_q8_K_ref``.
    """
    x = check_float_tensor(x, "x")
    if x.ndim != 2 or x.shape[-1] % Q8_K_BLOCK:
        raise ValueError(
            f"x must be 2-D with rows of a multiple of {Q8_K_BLOCK}, got shape {tuple(x.shape)}"
        )
    check_finite(x, "x")
    blocks = x.float().reshape(x.shape[0], -1, Q8_K_BLOCK)
    where = blocks.abs().argmax(-1, keepdim=True)
    mx = blocks.gather(-1, where)
    zero = mx == 0
    iscale = kquants._div(-127, torch.where(zero, torch.ones_like(mx), mx))
    q = torch.round(iscale * blocks).clamp(max=127)
    q = torch.where(zero, torch.zeros_like(q), q).to(torch.int8)
    d = torch.where(zero, torch.zeros_like(iscale), kquants._div(1, iscale)).squeeze(-1)
    return d, q


def _block_dots(q_x: torch.Tensor, q_w: torch.Tensor) -> torch.Tensor:
    """Exact integer dot products per block: ``q_x (T, nb, n)``, ``q_w (O, nb, n)`` ->
    ``(T, O, nb)`` float64 holding integers."""
    return torch.bmm(q_x.double().transpose(0, 1), q_w.double().permute(1, 2, 0)).permute(1, 2, 0)


def _in_chunks(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn`` applied to slices of ``_TOKENS_PER_CHUNK`` rows of ``x``, concatenated."""
    return torch.cat([fn(part) for part in x.split(_TOKENS_PER_CHUNK)], dim=0)


def matmul_q4_0_q8_0(x: torch.Tensor, weight: torch.Tensor, fmt: str = "Q4_0") -> torch.Tensor:
    """``x @ W^T`` as llama.cpp computes it on a CPU for Q4_0 (or Q8_0) weights.

    ``x`` float ``(..., K)``; ``weight`` the GGUF bytes ``(O, K/32 * bytes per block)``.
    ``x`` is quantized to Q8_0 blocks (:func:`~linquant_helpers.gguf_blocks.quantize_q8_0`),
    then ``y = sum_b (sumi_b * d_w) * d_x``, ``sumi_b`` the integer dot product of block ``b``.
    Returns float32 ``(..., O)``.
    """
    if fmt not in ("Q4_0", "Q8_0"):
        raise ValueError(f"fmt must be 'Q4_0' or 'Q8_0' (Q8_0 activations), got {fmt!r}")
    d_w, q_w = gguf_blocks.decode_blocks(weight, fmt)
    size = gguf_blocks.BLOCK_SIZE
    xs = _activations(x, q_w.shape[-1])
    q_w = q_w.reshape(q_w.shape[0], -1, size)

    def part(chunk: torch.Tensor) -> torch.Tensor:
        d_x, q_x = gguf_blocks.quantize_q8_0(chunk)
        # exact integer sums, converted to float32 as C converts them
        sumi = _block_dots(q_x.reshape(q_x.shape[0], -1, size), q_w).float()
        per_block = sumi * d_w.float()[None] * d_x.float()[:, None]
        return per_block.double().sum(-1).float()

    return _in_chunks(xs, part).reshape(*x.shape[:-1], -1)


def _k_weights(weight: torch.Tensor, fmt: str) -> tuple[torch.Tensor, ...]:
    """``(d, dmin, sc, m, q)`` of K-quant bytes, codes ``q`` ``(O, n, subs, size)``;
    ``dmin`` and ``m`` are zero for Q6_K, which has no min."""
    if fmt == "Q4_K":
        return kquants.decode_q4_k(weight)
    if fmt == "Q6_K":
        d, sc, q = kquants.decode_q6_k(weight)
        return d, torch.zeros_like(d), sc, torch.zeros_like(sc), q
    raise ValueError(f"fmt must be 'Q4_K' or 'Q6_K' (Q8_K activations), got {fmt!r}")


def matmul_k_q8_k(x: torch.Tensor, weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """``x @ W^T`` as llama.cpp computes it on a CPU for Q4_K or Q6_K weights.

    ``x`` is quantized to Q8_K (:func:`quantize_q8_k`); per super-block and
    sub-block ``j``: ``(d_w d_x) * sum_j sc_j (q_w . q_x)_j - (dmin_w d_x) * sum_j m_j s_j``,
    with ``s_j`` the sum of the activation codes of sub-block ``j``. Returns float32 ``(..., O)``.
    """
    d_w, dmin_w, sc, m, q_w = _k_weights(weight, fmt)
    rows, n, subs, size = q_w.shape
    xs = _activations(x, n * Q8_K_BLOCK)
    q_w_sub = q_w.reshape(rows, n * subs, size)

    def part(chunk: torch.Tensor) -> torch.Tensor:
        d_x, q_x = quantize_q8_k(chunk)
        t = q_x.shape[0]
        dots = _block_dots(q_x.reshape(t, -1, size), q_w_sub)  # (T, O, nb * subs)
        dots = dots.reshape(t, rows, n, subs)
        scaled = (dots * sc.double()[None]).sum(-1)  # integers: sum_j sc_j (q_w . q_x)_j
        sums = q_x.reshape(t, -1, subs, size).double().sum(-1)  # s_j, Q8_K's bsums
        mins = (sums[:, None] * m.double()[None]).sum(-1)  # (T, O, nb): sum_j m_j s_j
        d = d_w[None] * d_x[:, None]  # float32, as C's `GGML_FP16_TO_FP32(x.d) * y.d`
        dmin = dmin_w[None] * d_x[:, None]
        per_block = d * scaled.float() - dmin * mins.float()
        return per_block.double().sum(-1).float()

    return _in_chunks(xs, part).reshape(*x.shape[:-1], -1)


_QUANTIZE = {
    "Q4_0": lambda w, imatrix: gguf_blocks.encode_blocks(*gguf_blocks.quantize_q4_0(w), "Q4_0"),
    "Q8_0": lambda w, imatrix: gguf_blocks.encode_blocks(*gguf_blocks.quantize_q8_0(w), "Q8_0"),
    "Q4_K": kquants.quantize_q4_k,
    "Q6_K": kquants.quantize_q6_k,
}
_DEQUANTIZE = {
    "Q4_0": lambda raw: gguf_blocks.dequantize_blocks(*gguf_blocks.decode_blocks(raw, "Q4_0")),
    "Q8_0": lambda raw: gguf_blocks.dequantize_blocks(*gguf_blocks.decode_blocks(raw, "Q8_0")),
    "Q4_K": kquants.dequantize_q4_k,
    "Q6_K": kquants.dequantize_q6_k,
}


def q8_round_trip(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """``x`` ``(..., K)`` quantized to the Q8 blocks that ``fmt`` weights multiply with
    (Q8_0 for Q4_0/Q8_0, Q8_K for the K-quants), then dequantized: ``d * q``, in ``x``'s dtype."""
    flat = x.reshape(-1, x.shape[-1])
    if fmt in ("Q4_0", "Q8_0"):
        x_hat = gguf_blocks.dequantize_blocks(*gguf_blocks.quantize_q8_0(flat))
    else:
        d, q = quantize_q8_k(flat)
        x_hat = (d[..., None] * q.float()).reshape(flat.shape)
    return x_hat.to(x.dtype).reshape(x.shape)


class GGUFLinear(nn.Module):
    """A linear layer whose weight is stored as GGUF bytes of one of :data:`WEIGHT_FORMATS`.

    ``activations="float"`` multiplies float activations by the dequantized weight
    (W4A16, what a simulation computes); ``activations="q8"`` quantizes the
    activations to Q8 blocks first, as llama.cpp's CPU path does (W4A8). The
    forward pass multiplies the dequantized numbers in ``x``'s dtype: the same
    products and sums as :func:`matmul_q4_0_q8_0` / :func:`matmul_k_q8_k`, which
    do them as integers, up to the rounding of the float sums (the tests hold them
    to a relative 1e-6).
    """

    def __init__(self, raw: torch.Tensor, fmt: str, bias: torch.Tensor | None, activations: str):
        super().__init__()
        if fmt not in WEIGHT_FORMATS:
            raise ValueError(f"fmt must be one of {WEIGHT_FORMATS}, got {fmt!r}")
        if activations not in ("float", "q8"):
            raise ValueError(f"activations must be 'float' or 'q8', got {activations!r}")
        self.fmt, self.activations = fmt, activations
        self.register_buffer("raw", raw)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        fmt: str,
        *,
        imatrix: torch.Tensor | None = None,
        activations: str = "float",
    ) -> GGUFLinear:
        """Quantize ``linear``'s weight to ``fmt`` (K-quants with an optional ``imatrix``)."""
        if fmt not in WEIGHT_FORMATS:
            raise ValueError(f"fmt must be one of {WEIGHT_FORMATS}, got {fmt!r}")
        if imatrix is not None and fmt not in ("Q4_K", "Q6_K"):
            raise ValueError(f"imatrix is used by the K-quants only, not by {fmt}")
        raw = _QUANTIZE[fmt](linear.weight.detach().float(), imatrix)
        return cls(raw, fmt, linear.bias, activations)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight the bytes stand for."""
        return _DEQUANTIZE[self.fmt](self.raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.dequantized_weight()
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"x must have {weight.shape[1]} features in its last dimension, "
                f"got {tuple(x.shape)}"
            )
        if self.activations == "q8":
            check_finite(x, "x")
            x = q8_round_trip(x, self.fmt)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight.to(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"fmt={self.fmt}, activations={self.activations}, raw={tuple(self.raw.shape)}"
