"""llama.cpp's K-quants Q4_K and Q6_K: super-blocks of 256 weights, in GGUF's bytes.

The legacy types of :mod:`~linquant_helpers.gguf_blocks` give every 32 weights
a float16 scale. The K-quants quantize the scales too: a **super-block** of 256
weights holds small sub-blocks whose scales are themselves codes, under one
float16 scale for the whole super-block.

* **Q4_K** (144 bytes, 4.5 bits per weight): 8 sub-blocks of 32 weights, each
  with a 6-bit scale code ``sc`` and a 6-bit min code ``m``, and the super-block's
  float16 ``d`` and ``dmin``: ``w_hat = (d * sc) * q - (dmin * m)``, ``q`` in
  ``[0, 15]``. Layout: ``d``, ``dmin``, 12 bytes holding the 16 six-bit codes,
  128 bytes of nibbles.
* **Q6_K** (210 bytes, 6.5625 bits per weight): 16 sub-blocks of 16 weights, each
  with an int8 scale code ``sc``, and one float16 ``d``: ``w_hat = (d * sc) * q``,
  ``q`` in ``[-32, 31]``. Layout: 128 bytes of low nibbles, 64 bytes of high
  2-bit pairs, 16 int8 scales, ``d``.

Each sub-block's scale (and min) is not absmax: it is searched. Q4_K tries
``nstep + 1`` grids around ``(max - min) / 15`` and fits scale and min by weighted
least squares on each (``make_qkx2_quants``); Q6_K tries 19 scales around
``max / 32`` and keeps the one with the best weighted fit (``make_qx_quants``).
With an importance matrix (:func:`importance_matrix`) the weights of those fits
are the mean squared activation of each input column, so the error that matters
to the layer's output is the one minimized.

These functions give the very bytes of llama.cpp's reference quantizers
(``quantize_row_q4_K_ref`` / ``quantize_row_q6_K_ref``, and ``quantize_q4_K`` /
``quantize_q6_K`` with ``quant_weights``), because they do the same float32
operations in the same order: every sum runs over its elements one after the
other (a loop over the 16 or 32 positions of a sub-block, vectorized across all
sub-blocks), and ``nearest_int`` is round half to even. The tests check that
against bytes made by llama.cpp's C code, and the layout against the ``gguf``
package's decoder.
"""

from __future__ import annotations

import torch

from .validation import check_finite, check_float_tensor

SUPER_BLOCK = 256
"""Weights per super-block (``QK_K``)."""

BLOCK_BYTES = {"Q4_K": 144, "Q6_K": 210}
"""Bytes per super-block: Q4_K ``2 + 2 + 12 + 128``, Q6_K ``128 + 64 + 16 + 2``."""

BITS_PER_WEIGHT = {name: 8 * size / SUPER_BLOCK for name, size in BLOCK_BYTES.items()}
"""4.5 for Q4_K, 6.5625 for Q6_K: codes, sub-block scales and super-block scales counted."""

_EPS = 1e-15
"""``GROUP_MAX_EPS``: a sub-block whose largest magnitude is below this is all zero."""


def _f32(value: float) -> torch.Tensor:
    """A float32 scalar, so that constants round as C's ``float`` literals do."""
    return torch.tensor(value, dtype=torch.float32)


def _div(numerator: float, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` rounded once, as C's float division.

    ``63 / t`` in PyTorch computes ``t.reciprocal() * 63``: two roundings, which
    moves a quarter of the results by one bit, and one bit moves a code.
    """
    return torch.full_like(denominator, numerator) / denominator


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """float32 ``sqrtf(x)``, rounded once, for ``x >= 0``.

    ``torch.sqrt`` is not correctly rounded on a CPU (about 18% of float32 results
    and 1.4% of float64 results differ in the last bit from IEEE ``sqrt``). Take the
    float64 root rounded to float32, ``r``, then move it one step where the exact
    midpoints ``r -/+ ulp/2`` show it is on the wrong side: their squares fit in
    float64 exactly (25-bit numbers), and a float32 ``x`` never equals one (no ties).
    """
    r = torch.sqrt(x.double()).float()
    half_ulp = (torch.nextafter(r, torch.full_like(r, float("inf"))) - r).double() / 2
    rd, xd = r.double(), x.double()
    low, high = (rd - half_ulp) ** 2, (rd + half_ulp) ** 2
    r = torch.where(xd < low, torch.nextafter(r, torch.zeros_like(r)), r)
    return torch.where(xd > high, torch.nextafter(r, torch.full_like(r, float("inf"))), r)


def _seq_sum(terms: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``terms`` added along ``dim`` in float32, left to right, as C's loop adds.

    ``terms.sum(dim)`` adds in another order (pairwise, vectorized), which can differ
    in the last bit, and one bit decides which scale a search keeps. The loop runs
    over the 16 or 32 positions of a sub-block, each step one add across all
    sub-blocks (fastest with ``dim=0``, where each step reads a contiguous slice).
    """
    by_position = terms.movedim(dim, 0)
    total = by_position[0]
    for term in by_position[1:]:
        total = total + term
    return total


def _rows(x: object, name: str = "x") -> torch.Tensor:
    """``x`` as float32 of shape ``(rows, cols)``, ``cols`` a multiple of 256, finite."""
    x = check_float_tensor(x, name)
    if x.ndim != 2 or x.shape[-1] % SUPER_BLOCK:
        raise ValueError(
            f"{name} must be 2-D with rows of a multiple of {SUPER_BLOCK} weights (one "
            f"super-block per 256), got shape {tuple(x.shape)}"
        )
    check_finite(x, name)
    return x.float()


def _imatrix(imatrix: object, cols: int, device: torch.device) -> torch.Tensor:
    """The importance matrix as float32 ``(cols,)``: finite and non-negative."""
    w = check_float_tensor(imatrix, "imatrix")
    if w.shape != (cols,):
        raise ValueError(
            f"imatrix must have shape ({cols},), one value per column, got {tuple(w.shape)}"
        )
    check_finite(w, "imatrix")
    if bool((w < 0).any()):
        raise ValueError("imatrix must be non-negative (a mean of squares)")
    return w.float().to(device)


def _positive_part(value: torch.Tensor) -> torch.Tensor:
    """``value`` where it is positive, else +0.0 (``clamp`` would keep a -0.0, whose float16
    has another sign byte)."""
    return torch.where(value > 0, value, torch.zeros_like(value))


def _to_half(value: torch.Tensor, name: str) -> torch.Tensor:
    """``value`` rounded to float16, as GGML_FP32_TO_FP16; overflow and underflow are errors."""
    half = value.half()
    if not bool(torch.isfinite(half).all()):
        raise ValueError(f"{name} overflows float16 (above 65504): the weights are too large")
    if bool(((half == 0) & (value != 0)).any()):
        raise ValueError(f"{name} underflows float16 to 0: the weights are too small (below ~1e-5)")
    return half


def _half_bytes(half: torch.Tensor) -> torch.Tensor:
    """float16 ``(...,)`` as its two little-endian bytes ``(..., 2)``."""
    bits = half.view(torch.int16).to(torch.int32) & 0xFFFF
    return torch.stack([bits & 0xFF, bits >> 8], dim=-1).to(torch.uint8)


def _from_half_bytes(pair: torch.Tensor) -> torch.Tensor:
    """Two little-endian bytes ``(..., 2)`` as float32 values of the float16 they hold."""
    bits = pair[..., 0].to(torch.int32) | (pair[..., 1].to(torch.int32) << 8)
    return bits.to(torch.int16).view(torch.float16).float()


# --- Q4_K: scale and min per sub-block of 32 --------------------------------------------


def _fit_scale_min(
    x: torch.Tensor, w: torch.Tensor, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """llama.cpp's ``make_qkx2_quants``: ``x ~ scale * L - the_min``, ``L`` in ``[0, nmax]``.

    Start from ``min = min(x, 0)`` and ``scale = (max - min) / nmax``. Then, for
    ``is = 0..nstep``, round on the grid ``iscale = (nmax + rmin + rdelta * is) / (max - min)``
    and solve the weighted least squares for ``(scale, min)`` given those codes
    (``D = sum_w * sum_l2 - sum_l^2``); keep the fit if its weighted squared error
    is smaller. ``min`` moves with each kept fit, and the next grid uses it.

    With an importance matrix llama.cpp calls ``make_qkx3_quants`` instead: the same
    search with a finer, wider sweep (``rmin=-0.9, rdelta=0.05, nstep=36``).

    ``x, w``: ``(..., n)``. Returns ``(scale, the_min, L)`` with ``the_min = -min >= 0``.
    """
    # positions first: every sum below is then n adds of contiguous slices
    x, w = x.movedim(-1, 0).contiguous(), w.movedim(-1, 0).contiguous()
    mn = x.amin(0).clamp(max=0.0)  # `if (min > 0) min = 0`
    mx = x.amax(0)
    flat = mx == mn  # all equal: codes 0, scale 0
    sum_w = _seq_sum(w, 0)
    sum_x = _seq_sum(w * x, 0)

    iscale = _div(nmax, torch.where(flat, torch.ones_like(mx), mx - mn))
    scale = _div(1, iscale)
    codes = torch.round(iscale * (x - mn)).clamp(0, nmax)
    diff = scale * codes + mn - x
    best = _seq_sum(w * (diff * diff), 0)

    for step in range(nstep + 1):
        grid = (_f32(rmin) + _f32(rdelta) * step) + nmax
        iscale = grid / torch.where(flat, torch.ones_like(mx), mx - mn)
        v = iscale * (x - mn)
        trial = torch.where(v > 0, torch.round(v.clamp(max=nmax)), 0.0)  # NaN gives 0, as in C
        wl = w * trial
        sum_l, sum_l2, sum_xl = _seq_sum(wl, 0), _seq_sum(wl * trial, 0), _seq_sum(wl * x, 0)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe = torch.where(ok, det, torch.ones_like(det))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe
        positive = this_min > 0  # the min is clamped to 0: refit the scale alone
        this_scale = torch.where(positive, sum_xl / torch.where(positive, sum_l2, 1.0), this_scale)
        this_min = torch.where(positive, torch.zeros_like(this_min), this_min)
        diff = this_scale * trial + this_min - x
        error = _seq_sum(w * (diff * diff), 0)
        better = ok & (error < best) & ~flat
        codes = torch.where(better, trial, codes)
        best = torch.where(better, error, best)
        scale = torch.where(better, this_scale, scale)
        mn = torch.where(better, this_min, mn)

    scale = torch.where(flat, torch.zeros_like(scale), scale)
    codes = torch.where(flat, torch.zeros_like(codes), codes)
    return scale, -mn, codes.movedim(0, -1)


def _pack_scale_min(ls: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """Eight 6-bit scale codes and eight 6-bit min codes ``(..., 8)`` into 12 bytes.

    Bytes 0-3: ``ls[0:4]`` with the top 2 bits of ``ls[4:8]`` in bits 6-7; bytes
    4-7: ``lm[0:4]`` with the top 2 bits of ``lm[4:8]``; bytes 8-11: the low 4 bits of
    ``ls[4:8]`` and, above them, of ``lm[4:8]``.
    """
    ls, lm = ls.to(torch.int32), lm.to(torch.int32)
    first = ls[..., :4] | ((ls[..., 4:] >> 4) << 6)
    second = lm[..., :4] | ((lm[..., 4:] >> 4) << 6)
    third = (ls[..., 4:] & 0xF) | ((lm[..., 4:] & 0xF) << 4)
    return torch.cat([first, second, third], dim=-1).to(torch.uint8)


def unpack_scale_min(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 packed bytes ``(..., 12)`` of a Q4_K super-block as ``(ls, lm)``, each ``(..., 8)``.

    The inverse of the packing above (llama.cpp's ``get_scale_min_k4``): for
    ``j < 4``, ``ls = b[j] & 63`` and ``lm = b[j + 4] & 63``; for ``j >= 4``,
    ``ls = (b[j + 4] & 15) | (b[j - 4] >> 6) << 4`` and ``lm = (b[j + 4] >> 4) | (b[j] >> 6) << 4``.
    """
    b = packed.to(torch.int32)
    low_ls, low_lm, mixed = b[..., 0:4], b[..., 4:8], b[..., 8:12]
    ls = torch.cat([low_ls & 63, (mixed & 0xF) | ((low_ls >> 6) << 4)], dim=-1)
    lm = torch.cat([low_lm & 63, (mixed >> 4) | ((low_lm >> 6) << 4)], dim=-1)
    return ls, lm


def _fit_positive_codes(
    values: torch.Tensor, weights: torch.Tensor, nmax: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's ``make_qp_quants``: ``values >= 0`` ``(..., n)`` as ``scale * L``, ``L <= nmax``.

    Try ``iscale = (nmax + 0.1 * is) / max`` for ``is = -4..4``, keep the best weighted
    squared error, then improve the codes one at a time (five passes): code ``i``
    moves to ``round(x_i * sl2 / slx)`` computed without it, if that raises
    ``sumlx^2 / suml2``. Returns ``(scale, L)``.
    """
    mx = values.amax(-1).clamp(min=0.0)
    zero = mx < _EPS
    mx_safe = torch.where(zero, torch.ones_like(mx), mx)
    iscale = _div(nmax, mx_safe)
    codes = torch.round(iscale[..., None] * values)
    diff = values - _div(1, iscale)[..., None] * codes
    best = _seq_sum(weights * diff * diff)
    for step in (-4, -3, -2, -1, 1, 2, 3, 4):
        trial_iscale = (_f32(0.1) * step + nmax) / mx_safe
        trial = torch.round(trial_iscale[..., None] * values).clamp(max=nmax)
        diff = values - _div(1, trial_iscale)[..., None] * trial
        error = _seq_sum(weights * diff * diff)
        better = error < best
        best = torch.where(better, error, best)
        iscale = torch.where(better, trial_iscale, iscale)

    codes = torch.round(iscale[..., None] * values).clamp(max=nmax)
    wx = weights * values
    sumlx, suml2 = _seq_sum(wx * codes), _seq_sum(weights * codes * codes)
    for _ in range(5):  # a pass that changes nothing leaves the next one nothing to change
        for i in range(values.shape[-1]):
            w_i, x_i, wx_i, l_i = weights[..., i], values[..., i], wx[..., i], codes[..., i]
            slx = sumlx - wx_i * l_i
            sl2 = suml2 - w_i * l_i * l_i
            valid = (slx > 0) & (sl2 > 0)
            new = torch.round(x_i * sl2 / torch.where(valid, slx, 1.0)).clamp(max=nmax)
            new_slx = slx + wx_i * new
            new_sl2 = sl2 + w_i * new * new
            take = valid & (new != l_i) & (new_slx * new_slx * suml2 > sumlx * sumlx * new_sl2)
            codes[..., i] = torch.where(take, new, l_i)
            sumlx = torch.where(take, new_slx, sumlx)
            suml2 = torch.where(take, new_sl2, suml2)
    scale = torch.where(suml2 > 0, sumlx / torch.where(suml2 > 0, suml2, 1.0), 0.0)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    codes = torch.where(zero[..., None], torch.zeros_like(codes), codes)
    return scale, codes


def quantize_q4_k(x: torch.Tensor, imatrix: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of weights as GGUF Q4_K bytes: ``uint8`` of shape ``(rows, cols / 256 * 144)``.

    Per sub-block ``b`` of 32: ``(scale_b, min_b, L)`` from the least-squares search
    (weights ``sqrt(mean x^2) + |x|``, or with an ``imatrix`` of shape ``(cols,)``,
    ``imatrix * sqrt(2 mean x^2 + x^2)``). Per super-block: without an imatrix
    ``d = max_b scale_b / 63`` and ``sc_b = round(scale_b / d)`` (likewise ``dmin``
    and ``m_b``); with one, ``(d, sc)`` and ``(dmin, m)`` come from another weighted
    search. Last, with ``d`` and ``dmin`` rounded to float16, every weight is coded
    again: ``q = clamp(round((x + dmin * m_b) / (d * sc_b)), 0, 15)``.

    Raises ``ValueError`` for a row length that is not a multiple of 256, NaN or
    infinity, and weights whose ``d`` or ``dmin`` would overflow or underflow float16.
    """
    x = _rows(x)
    rows, cols = x.shape
    weights_in = None if imatrix is None else _imatrix(imatrix, cols, x.device)
    blocks = x.reshape(rows, cols // SUPER_BLOCK, 8, 32)

    if weights_in is None:
        sum_x2 = _seq_sum(blocks * blocks)
        av_x = _sqrt(sum_x2 / 32)
        weights = av_x[..., None] + blocks.abs()
        scales, mins, codes = _fit_scale_min(blocks, weights, 15, -1.0, 0.1, 20)
        # C starts both at +0.0 and takes a value only if it is larger: never -0.0
        max_scale = _positive_part(scales.amax(-1))
        max_min = _positive_part(mins.amax(-1))
        inv_scale = torch.where(max_scale > 0, _div(63, max_scale), 0.0)
        inv_min = torch.where(max_min > 0, _div(63, max_min), 0.0)
        # C stores nearest_int(...) in a uint8_t (mod 256), then takes MIN(63, .)
        ls = torch.remainder(torch.round(inv_scale[..., None] * scales), 256).clamp(max=63)
        lm = torch.remainder(torch.round(inv_min[..., None] * mins), 256).clamp(max=63)
        d = _to_half(max_scale / 63, "d")
        dmin = _to_half(max_min / 63, "dmin")
    else:
        flat = blocks.reshape(rows, cols // SUPER_BLOCK, SUPER_BLOCK)
        sigma2 = 2 * _seq_sum(flat * flat) / SUPER_BLOCK
        qw = weights_in.reshape(cols // SUPER_BLOCK, 8, 32)
        weights = qw * _sqrt(sigma2[..., None, None] + blocks * blocks)
        sw = _seq_sum(weights)
        scales, mins, codes = _fit_scale_min(blocks, weights, 15, -0.9, 0.05, 36)
        d_block, ls = _fit_positive_codes(scales, sw, 63)
        m_block, lm = _fit_positive_codes(mins, sw, 63)
        d = _to_half(d_block, "d")
        dmin = _to_half(m_block, "dmin")

    packed_scales = _pack_scale_min(ls, lm)
    sc, m = unpack_scale_min(packed_scales)
    step = d.float()[..., None] * sc
    offset = dmin.float()[..., None] * m
    nonzero = step != 0  # `if (!d) continue`: such a sub-block keeps the search's codes
    again = torch.round((blocks + offset[..., None]) / torch.where(nonzero, step, 1.0)[..., None])
    codes = torch.where(nonzero[..., None], again.clamp(0, 15), codes).to(torch.uint8)

    # nibbles: each 64 weights (two sub-blocks) share 32 bytes, low nibble first sub-block
    pairs = codes.reshape(rows, cols // SUPER_BLOCK, 4, 2, 32)
    nibbles = (pairs[..., 0, :] | (pairs[..., 1, :] << 4)).reshape(rows, -1, 128)
    block = torch.cat([_half_bytes(d), _half_bytes(dmin), packed_scales, nibbles], dim=-1)
    return block.reshape(rows, -1)


def _super_blocks(raw: object, fmt: str) -> torch.Tensor:
    """``raw`` bytes ``(rows, nbytes)`` viewed as ``(rows, super-blocks, bytes per block)``."""
    if not isinstance(raw, torch.Tensor) or raw.dtype != torch.uint8:
        raise TypeError(
            f"raw must be a uint8 tensor of {fmt} bytes, got {type(raw).__name__}"
            + (f" of dtype {raw.dtype}" if isinstance(raw, torch.Tensor) else "")
        )
    size = BLOCK_BYTES[fmt]
    if raw.ndim != 2 or raw.shape[-1] % size:
        raise ValueError(
            f"raw must be 2-D with rows of a multiple of {size} bytes ({fmt}), "
            f"got shape {tuple(raw.shape)}"
        )
    return raw.reshape(raw.shape[0], -1, size)


def decode_q4_k(raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """GGUF Q4_K bytes ``(rows, n * 144)`` as their fields ``(d, dmin, sc, m, q)``:
    float32 ``d`` and ``dmin`` ``(rows, n)``, int32 ``sc`` and ``m`` ``(rows, n, 8)`` in
    ``[0, 63]``, uint8 codes ``q`` ``(rows, n, 8, 32)`` in ``[0, 15]``."""
    blocks = _super_blocks(raw, "Q4_K")
    rows, n = blocks.shape[:2]
    d, dmin = _from_half_bytes(blocks[..., 0:2]), _from_half_bytes(blocks[..., 2:4])
    sc, m = unpack_scale_min(blocks[..., 4:16])
    qs = blocks[..., 16:].reshape(rows, n, 4, 32)
    q = torch.stack([qs & 0xF, qs >> 4], dim=-2).reshape(rows, n, 8, 32)
    return d, dmin, sc, m, q


def dequantize_q4_k(raw: torch.Tensor) -> torch.Tensor:
    """GGUF Q4_K bytes ``(rows, n * 144)`` back to float32 weights ``(rows, n * 256)``:
    ``w_hat = (d * sc_b) * q - (dmin * m_b)``."""
    d, dmin, sc, m, q = decode_q4_k(raw)
    step = (d[..., None] * sc)[..., None]
    offset = (dmin[..., None] * m)[..., None]
    return (step * q - offset).reshape(q.shape[0], -1)


# --- Q6_K: one signed scale per sub-block of 16 ------------------------------------------


def _fit_symmetric(
    x: torch.Tensor, w: torch.Tensor, nmax: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's ``make_qx_quants`` (rmse_type 1): ``x ~ scale * (L - nmax)``, ``L - nmax``
    in ``[-nmax, nmax - 1]``.

    ``max`` is the value of largest magnitude, with its sign, so that it lands on the
    code ``-nmax``. Try ``iscale = -(nmax + 0.1 * is) / max`` for ``is = -9..9``; for
    each, the least-squares scale ``sumlx / suml2`` and the score ``sumlx^2 / suml2``;
    keep the best. ``w`` weighs the fit (``x^2``, or the importance matrix).
    Returns ``(scale, L)``, ``L`` in ``[0, 2 nmax - 1]``.
    """
    where = x.abs().argmax(-1, keepdim=True)  # the first of equal magnitudes, as C's `>`
    mx = x.gather(-1, where).squeeze(-1)
    zero = mx.abs() < _EPS
    mx_safe = torch.where(zero, torch.ones_like(mx), mx)
    x, w = x.movedim(-1, 0).contiguous(), w.movedim(-1, 0).contiguous()  # positions first
    wx = w * x

    def codes_for(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = torch.round(iscale * x).clamp(-nmax, nmax - 1)
        return q, _seq_sum(wx * q, 0), _seq_sum(w * q * q, 0)

    codes, sumlx, suml2 = codes_for(_div(-nmax, mx_safe))
    scale = torch.where(suml2 != 0, sumlx / torch.where(suml2 != 0, suml2, 1.0), 0.0)
    best = scale * sumlx
    for step in (-9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9):
        trial, slx, sl2 = codes_for(-(nmax + _f32(0.1) * step) / mx_safe)
        better = (sl2 > 0) & (slx * slx > best * sl2)
        codes = torch.where(better, trial, codes)
        scale = torch.where(better, slx / torch.where(better, sl2, 1.0), scale)
        best = torch.where(better, scale * slx, best)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    codes = torch.where(zero, torch.full_like(codes, -nmax), codes)
    return scale, codes.movedim(0, -1) + nmax


def quantize_q6_k(x: torch.Tensor, imatrix: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of weights as GGUF Q6_K bytes: ``uint8`` of shape ``(rows, cols / 256 * 210)``.

    Per sub-block ``b`` of 16: ``scale_b`` from the search of :func:`_fit_symmetric`
    (weights ``x^2``, or the ``imatrix`` of shape ``(cols,)``). Per super-block:
    ``d = -max_b / 128`` (``max_b`` the scale of largest magnitude, with its sign),
    ``sc_b = min(127, round(scale_b / d))`` as int8; then, with ``d`` in float16,
    ``q = clamp(round(x / (d * sc_b)), -32, 31)``. Raises like :func:`quantize_q4_k`.
    """
    x = _rows(x)
    rows, cols = x.shape
    blocks = x.reshape(rows, cols // SUPER_BLOCK, 16, 16)
    if imatrix is None:
        weights = blocks * blocks
    else:
        weights = _imatrix(imatrix, cols, x.device).reshape(cols // SUPER_BLOCK, 16, 16)
        weights = weights.expand_as(blocks)
    scales, codes = _fit_symmetric(blocks, weights, 32)

    where = scales.abs().argmax(-1, keepdim=True)
    max_scale = scales.gather(-1, where).squeeze(-1)
    empty = max_scale.abs() < _EPS  # the whole super-block is written as zero bytes
    iscale = _div(-128, torch.where(empty, torch.ones_like(max_scale), max_scale))
    d = _to_half(torch.where(empty, torch.zeros_like(iscale), _div(1, iscale)), "d")
    sc = torch.round(iscale[..., None] * scales).clamp(max=127)
    step = d.float()[..., None] * sc
    nonzero = step != 0
    again = torch.round(blocks / torch.where(nonzero, step, 1.0)[..., None]).clamp(-32, 31) + 32
    codes = torch.where(nonzero[..., None], again, codes).to(torch.int32)
    codes = torch.where(empty[..., None, None], torch.zeros_like(codes), codes)
    sc = torch.where(empty[..., None], torch.zeros_like(sc), sc)

    # 128 weights at a time: ql[l] = L[l] | L[l + 64] << 4, ql[l + 32] = L[l + 32] | L[l + 96] << 4,
    # qh[l] = the top 2 bits of L[l], L[l + 32], L[l + 64], L[l + 96] in bits 0-1, 2-3, 4-5, 6-7
    quarters = codes.reshape(rows, cols // SUPER_BLOCK, 2, 4, 32)
    low, high = quarters & 0xF, quarters >> 4
    ql = torch.cat(
        [low[..., 0, :] | (low[..., 2, :] << 4), low[..., 1, :] | (low[..., 3, :] << 4)], -1
    )
    qh = high[..., 0, :] | (high[..., 1, :] << 2) | (high[..., 2, :] << 4) | (high[..., 3, :] << 6)
    n = cols // SUPER_BLOCK
    sc_bytes = sc.to(torch.int32) & 0xFF
    block = torch.cat(
        [
            ql.reshape(rows, n, 128),
            qh.reshape(rows, n, 64),
            sc_bytes,
            _half_bytes(d).to(torch.int32),
        ],
        dim=-1,
    )
    return block.to(torch.uint8).reshape(rows, -1)


def decode_q6_k(raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """GGUF Q6_K bytes ``(rows, n * 210)`` as their fields ``(d, sc, q)``: float32 ``d``
    ``(rows, n)``, int32 ``sc`` ``(rows, n, 16)``, int32 codes ``q`` ``(rows, n, 16, 16)`` in
    ``[-32, 31]``, one row of 16 per sub-block, in the order of the weights."""
    blocks = _super_blocks(raw, "Q6_K")
    rows, n = blocks.shape[:2]
    ql = blocks[..., 0:128].to(torch.int32).reshape(rows, n, 2, 2, 32)
    qh = blocks[..., 128:192].to(torch.int32).reshape(rows, n, 2, 1, 32)
    sc = blocks[..., 192:208].view(torch.int8).to(torch.int32)
    d = _from_half_bytes(blocks[..., 208:210])
    low = torch.cat([ql & 0xF, ql >> 4], dim=-2)  # quarters 0, 1 (low nibbles), 2, 3 (high)
    high = torch.cat([(qh >> shift) & 3 for shift in (0, 2, 4, 6)], dim=-2)
    q = (low | (high << 4)) - 32  # (rows, n, 2 halves of 128, 4 quarters of 32, 32)
    return d, sc, q.reshape(rows, n, 16, 16)


def dequantize_q6_k(raw: torch.Tensor) -> torch.Tensor:
    """GGUF Q6_K bytes ``(rows, n * 210)`` back to float32 weights ``(rows, n * 256)``:
    ``w_hat = (d * sc_b) * q``, ``q`` in ``[-32, 31]``."""
    d, sc, q = decode_q6_k(raw)
    step = (d[..., None] * sc.float())[..., None]
    return (step * q).reshape(q.shape[0], -1)


def importance_matrix(inputs: torch.Tensor) -> torch.Tensor:
    """llama.cpp's importance matrix of one linear layer: ``mean over tokens of x_j^2``
    for each input column ``j``; ``inputs`` of shape ``(..., cols)``.

    It weighs the quantization error of column ``j`` by how large that column's
    activations are: ``E[(x . (w - w_hat))^2] ~ sum_j E[x_j^2] (w_j - w_hat_j)^2``
    when the columns are uncorrelated, the diagonal of GPTQ's ``H = 2 X^T X / n``
    (halved).
    """
    inputs = check_float_tensor(inputs, "inputs")
    if inputs.ndim == 0 or inputs.numel() == 0:
        raise ValueError(f"inputs must hold at least one token, got shape {tuple(inputs.shape)}")
    check_finite(inputs, "inputs")
    flat = inputs.reshape(-1, inputs.shape[-1]).double()
    return (flat * flat).mean(0).to(inputs.dtype)


__all__ = [
    "BITS_PER_WEIGHT",
    "BLOCK_BYTES",
    "SUPER_BLOCK",
    "decode_q4_k",
    "decode_q6_k",
    "dequantize_q4_k",
    "dequantize_q6_k",
    "importance_matrix",
    "quantize_q4_k",
    "quantize_q6_k",
    "unpack_scale_min",
]
