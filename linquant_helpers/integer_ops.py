"""Integer-only arithmetic of a quantized linear layer (Jacob et al., 2018; gemmlowp).

With ``x = s_x (q_x - z_x)`` (one scale for the input) and ``w = s_w (q_w - z_w)``
(one scale per output channel ``j``), output ``j`` of a linear layer is::

    y_j = b_j + s_x s_w[j] * acc_j,    acc_j = sum_k (q_x[k] - z_x) (q_w[j, k] - z_w[j])

Expanding the product splits ``acc`` into one int8 x int8 matrix multiply plus
correction terms, three of which depend on the weights only and are computed once::

    acc_j = sum_k q_x[k] q_w[j,k]           int8 matmul, int32 accumulator
            - z_w[j] * sum_k q_x[k]         one sum per input row (0 for symmetric weights)
            - z_x * sum_k q_w[j,k]          precomputed
            + K z_x z_w[j]                  precomputed

The bias is stored as int32 codes with scale ``s_x s_w[j]`` and zero point 0, so it
adds straight into ``acc``. Finally the output is quantized with ``(s_y, z_y)``::

    q_y = z_y + round(M * acc),    M = s_x s_w / s_y

``M`` is a real number, but integer hardware only multiplies integers: write
``M = M0 * 2^-n`` with ``M0`` in ``[0.5, 1)`` held as the int32 ``m0 = round(M0 * 2^31)``
(a Q31 fixed-point number), and compute ``round(M * acc)`` as a 64-bit product and
a rounding right shift. No floating-point operation is left in the layer.
"""

from __future__ import annotations

import torch

from .affine import code_dtype, qrange
from .hardware import FLOAT32, INT_MM, int8_matmul_path
from .validation import (
    INT32_MAX,
    as_scale,
    as_zero_point,
    check_finite,
    check_float_tensor,
    check_int_tensor,
    check_real,
    check_tensor,
)

Q31 = 31
"""``m0`` holds ``M0`` with 31 fractional bits: ``M0 = m0 / 2^31``."""

MAX_K = (2**31 - 1) // 2**14
"""131071: the most inputs an int32 accumulator takes without any risk of overflow. Each
int8 x int8 product is at most ``2^14`` in magnitude ((-128) * (-128)), so a sum of ``K``
of them fits an int32 only for ``K * 2^14 < 2^31``; a longer one could wrap around silently."""

MIN_SHIFT, MAX_SHIFT = -30, 31
"""Allowed ``n``: the total right shift ``31 + n`` stays in ``[1, 62]`` bits, so the
int64 product ``acc * m0`` (below ``2^62``) plus the rounding term never overflows."""


def quantize_multiplier(multiplier: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Write a real multiplier as ``M = M0 * 2^-n`` with ``M0`` in ``[0.5, 1)`` held in Q31.

    ``n = -e`` where ``M = M0 * 2^e`` (``torch.frexp``), and ``m0 = round(M0 * 2^31)``,
    so ``M ~= m0 * 2^-(31 + n)`` with a relative error of at most ``2^-31``. When ``M0``
    rounds up to exactly 1 (``m0 = 2^31`` does not fit an int32), ``m0 = 2^30`` and
    ``n - 1`` are used instead. ``M < 1`` gives ``n >= 0`` (a right shift, the usual
    case in a layer); ``M >= 1`` gives a negative ``n`` and is handled the same way.

    ``multiplier`` is a float or a float tensor of any shape (one per output channel);
    it is computed in float64. Returns ``(m0, n)``, two int32 tensors of its shape.

    Raises ``ValueError`` if a multiplier is not positive and finite, or if its
    ``n`` falls outside ``[-30, 31]`` (:data:`MIN_SHIFT`), roughly ``M`` outside
    ``[2^-32, 2^30)``: below ``2^-32`` every int32 accumulator (``|acc| < 2^31``)
    would give ``|M * acc| < 0.5``, so all outputs would be 0 anyway.
    """
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float, torch.Tensor)):
        raise TypeError(f"multiplier must be a float or a tensor, got {type(multiplier).__name__}")
    if isinstance(multiplier, torch.Tensor):
        check_tensor(multiplier, "multiplier")
        if multiplier.is_complex() or multiplier.dtype == torch.bool:
            raise TypeError(f"multiplier must be a real tensor, got dtype {multiplier.dtype}")
    elif isinstance(multiplier, int):  # a huge int would overflow inside torch.as_tensor
        multiplier = check_real(multiplier, "multiplier")
    m = torch.as_tensor(multiplier, dtype=torch.float64)
    if bool((~torch.isfinite(m) | (m <= 0)).any()):
        raise ValueError(f"multiplier must be positive and finite, got {m.flatten().tolist()[:4]}")
    mantissa, exponent = torch.frexp(m)  # m = mantissa * 2^exponent, mantissa in [0.5, 1)
    m0 = torch.round(mantissa * 2.0**Q31).to(torch.int64)
    n = -exponent.to(torch.int64)
    carry = m0 == 2**Q31  # M0 rounded up to 1.0: use 0.5 * 2^1 instead
    m0 = torch.where(carry, m0 // 2, m0)
    n = torch.where(carry, n - 1, n)
    bad = (n < MIN_SHIFT) | (n > MAX_SHIFT)
    if bool(bad.any()):
        raise ValueError(
            f"multiplier must be in [2^-32, 2^30), got {m[bad].flatten()[0].item():g}; "
            "a smaller one rounds every int32 accumulator to 0, a larger one overflows the shift"
        )
    return m0.to(torch.int32), n.to(torch.int32)


def requantize(
    acc: torch.Tensor,
    m0: torch.Tensor,
    n: torch.Tensor,
    zero_point: torch.Tensor | int = 0,
    bits: int = 8,
    *,
    signed: bool = True,
) -> torch.Tensor:
    """Integer-only ``q = clamp(z + round(acc * M), qmin, qmax)`` with ``M = m0 * 2^-(31 + n)``.

    The rounding is a right shift after adding half of the divisor::

        q = z + ((acc * m0 + 2^(30 + n)) >> (31 + n))      (int64 product, arithmetic shift)

    which rounds ties upward (towards +infinity), like TFLite's single-rounding
    ``MultiplyByQuantizedMultiplier``; gemmlowp rounds twice (a doubling high
    multiply, then ``RoundingDivideByPOT``), which can differ by one code at ties.
    The result saturates to ``[qmin, qmax]`` of :func:`~linquant_helpers.affine.qrange`.

    ``acc`` is an int32 tensor ``(..., N)``; ``m0``, ``n`` (from
    :func:`quantize_multiplier`) and ``zero_point`` are scalars or have shape ``(N,)``
    (per output channel). Returns codes in :func:`~linquant_helpers.affine.code_dtype`
    (int8 by default) on ``acc``'s device.

    Raises ``TypeError`` for a non-integer ``acc``/``m0``/``n`` and ``ValueError`` for
    an ``m0`` outside ``[2^30, 2^31)``, an ``n`` outside ``[-30, 31]`` or a zero
    point outside ``[qmin, qmax]``.
    """
    acc, m0, n = (check_int_tensor(t, name) for t, name in ((acc, "acc"), (m0, "m0"), (n, "n")))
    qmin, qmax = qrange(bits, signed=signed)
    m0, n = m0.to(device=acc.device, dtype=torch.int64), n.to(device=acc.device, dtype=torch.int64)
    bad_m0 = m0[(m0 < 2**30) | (m0 >= 2**31)]  # in int64: 2^31 itself does not fit an int32
    if bad_m0.numel():
        raise ValueError(
            f"m0 must be in [2^30, 2^31) (M0 in [0.5, 1) in Q31), got {int(bad_m0[0])}"
        )
    bad_n = n[(n < MIN_SHIFT) | (n > MAX_SHIFT)]
    if bad_n.numel():
        raise ValueError(f"n must be in [{MIN_SHIFT}, {MAX_SHIFT}], got {int(bad_n[0])}")
    total_shift = Q31 + n
    half = torch.ones_like(total_shift) << (total_shift - 1)  # 2^(30 + n): rounds to nearest
    product = acc.to(torch.int64) * m0
    z = as_zero_point(zero_point, acc.device, qmin, qmax)
    q = ((product + half) >> total_shift) + z
    return q.clamp_(qmin, qmax).to(code_dtype(bits, signed))


def quantize_bias(
    bias: torch.Tensor, input_scale: torch.Tensor | float, weight_scale: torch.Tensor | float
) -> torch.Tensor:
    """Bias as int32 codes with scale ``s_x * s_w`` and zero point 0: ``round(b / (s_x s_w))``.

    With this scale the bias codes add directly into the int32 accumulator.
    Computed in float64 (the package's :func:`~linquant_helpers.affine.quantize`
    stops at 16 bits). ``bias`` has shape ``(N,)``; ``weight_scale`` is a scalar or
    ``(N,)``. Returns an int32 tensor ``(N,)``.

    Raises ``ValueError`` for scales that are not positive and finite, a bias
    holding NaN or infinity (the cast would turn NaN into the int32 minimum), and
    a bias too large for int32 at this scale.
    """
    bias = check_float_tensor(bias, "bias")
    check_finite(bias, "bias")
    s_x = as_scale(input_scale, bias.device, "input_scale").double()
    s = s_x * as_scale(weight_scale, bias.device, "weight_scale").double()
    codes = torch.round(bias.double() / s)
    limit = 2**31 - 1
    if codes.numel() and float(codes.abs().max()) > limit:
        raise ValueError(
            f"bias too large for int32 at scale s_x * s_w: a code of {float(codes.abs().max()):g} "
            f"exceeds {limit}"
        )
    return codes.to(torch.int32)


EXACT_FLOAT32_K = 1024
"""Longest sum of int8 products that float32 holds exactly: ``1024 * 128^2 = 2^24``."""


def _int_mm_supported(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``torch._int_mm`` takes these int8 matrices.

    On the CPU any shape works; on CUDA it needs more than 16 rows and
    ``K``, ``N`` multiples of 8.
    """
    if a.device.type == "cpu":
        return True
    m, k = a.shape
    return a.device.type == "cuda" and m > 16 and k % 8 == 0 and b.shape[1] % 8 == 0


def _float32_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int8 ``a @ b`` with float32 matrix multiplies, :data:`EXACT_FLOAT32_K` terms at a time.

    Every int8 product is at most ``2^14`` in magnitude, so a sum of 1024 of them,
    and every partial sum on the way, is an integer below ``2^24``: float32
    represents each exactly, whatever order the kernel adds in. Longer rows are
    cut into chunks of 1024, and the exact chunk results are added in int32.
    """
    acc = None
    for k0 in range(0, a.shape[1], EXACT_FLOAT32_K):
        chunk = a[:, k0 : k0 + EXACT_FLOAT32_K].float() @ b[k0 : k0 + EXACT_FLOAT32_K].float()
        acc = chunk.to(torch.int32) if acc is None else acc + chunk.to(torch.int32)
    return acc


def int8_matmul(a: torch.Tensor, b: torch.Tensor, *, path: str | None = None) -> torch.Tensor:
    """Exact ``a @ b`` of int8 matrices ``(M, K) @ (K, N)`` into an int32 ``(M, N)`` accumulator.

    Two paths give the same integers (``path=None`` picks
    :func:`~linquant_helpers.hardware.int8_matmul_path` for the device):

    * ``"int_mm"``: ``torch._int_mm``, an int8 GEMM kernel, fast on CPUs with VNNI
      or AMX and on CUDA, taken only where it is exact (x86 CPUs without VNNI add
      products in saturating 16-bit pairs, and there it is also slow);
    * ``"float32"``: a float32 matmul on the codes, exact because every partial
      sum is an integer below ``2^24`` (rows longer than 1024 are cut in chunks),
      and as fast as a float32 layer.

    Raises ``TypeError`` unless both are int8, ``ValueError`` for shapes that do
    not multiply or an unknown ``path``.
    """
    for t, name in ((a, "a"), (b, "b")):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int8:
            raise TypeError(f"{name} must be an int8 tensor, got {getattr(t, 'dtype', type(t))}")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(
            f"a (M, K) and b (K, N) must be matrices that multiply, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    path = int8_matmul_path(a.device) if path is None else path
    if path not in (INT_MM, FLOAT32):
        raise ValueError(f"path must be None, {INT_MM!r} or {FLOAT32!r}, got {path!r}")
    if path == INT_MM and _int_mm_supported(a, b):
        return torch._int_mm(a, b)
    return _float32_matmul(a, b)


def weight_offset(
    q_w: torch.Tensor,
    weight_zero_point: torch.Tensor | int,
    input_zero_point: torch.Tensor | int,
    bias_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """The weight-only part of the accumulator, computed once: ``b_q - z_x sum_k q_w + K z_x z_w``.

    ``q_w`` is the ``(N, K)`` weight codes (an ``nn.Linear`` weight's layout),
    ``weight_zero_point`` a scalar or ``(N,)``, ``input_zero_point`` a scalar and
    ``bias_q`` the int32 bias codes of :func:`quantize_bias` (or ``None``).
    Returns an int32 tensor ``(N,)``.

    Raises ``ValueError`` for ``K`` above :data:`MAX_K` (the accumulator could
    overflow int32) and for an offset that does not fit an int32.
    """
    q_w = check_int_tensor(q_w, "q_w")
    if q_w.ndim != 2:
        raise ValueError(f"q_w must be an (N, K) matrix, got shape {tuple(q_w.shape)}")
    k = check_accumulator_length(q_w.shape[1], "q_w")
    z_x = as_zero_point(input_zero_point, q_w.device).to(torch.int64)
    z_w = as_zero_point(weight_zero_point, q_w.device).to(torch.int64)
    # in int64, then checked: a large bias plus the zero-point terms may not fit an int32
    offset = k * z_x * z_w - z_x * q_w.sum(dim=1, dtype=torch.int64)
    if bias_q is not None:
        offset = offset + check_int_tensor(bias_q, "bias_q").to(torch.int64)
    if offset.numel() and int(offset.abs().max()) > INT32_MAX:
        raise ValueError(
            f"the accumulator offset b_q - z_x sum_k q_w + K z_x z_w does not fit an int32: "
            f"got {int(offset.abs().max())}; the bias is too large for its scale s_x * s_w"
        )
    return offset.to(torch.int32)


def check_accumulator_length(k: int, name: str) -> int:
    """``k``, the length ``K`` of the dot products, if ``K <= MAX_K``; else ``ValueError``."""
    if k > MAX_K:
        raise ValueError(
            f"{name} has K = {k} inputs, more than the {MAX_K} an int32 accumulator holds "
            f"without overflow (each int8 product reaches 2^14); split the layer's inputs"
        )
    return k


def integer_linear(
    q_x: torch.Tensor,
    q_w: torch.Tensor,
    offset: torch.Tensor,
    weight_zero_point: torch.Tensor | int = 0,
) -> torch.Tensor:
    """The int32 accumulator ``acc = q_x q_w^T - z_w * sum_k q_x + offset`` of a linear layer.

    ``q_x`` is int8 ``(M, K)``, ``q_w`` int8 ``(N, K)``, ``offset`` the int32 ``(N,)``
    from :func:`weight_offset` (which holds the bias and the input zero point's
    terms). With symmetric weights (``z_w = 0``) the per-row sum is skipped.
    Returns int32 ``(M, N)``; equal to ``sum_k (q_x - z_x)(q_w - z_w) + b_q`` exactly.

    Raises ``ValueError`` for ``K`` above :data:`MAX_K`, and for an accumulator
    that does not fit an int32 (instead of letting it wrap around silently).
    """
    q_x, q_w = check_int_tensor(q_x, "q_x"), check_int_tensor(q_w, "q_w")
    offset = check_int_tensor(offset, "offset")
    k = check_accumulator_length(q_w.shape[1] if q_w.ndim == 2 else 0, "q_w")
    z_w = as_zero_point(weight_zero_point, q_x.device)
    # |q_x q_w^T| <= K 2^14 and |z_w sum_k q_x| <= |z_w| K 2^7: a bound from shapes and the
    # few offsets, so the usual case costs nothing; past it, exact int64 sums are checked.
    worst = k * 2**14 + int(z_w.abs().max()) * k * 2**7
    worst += int(offset.abs().max()) if offset.numel() else 0
    if worst <= INT32_MAX:
        acc = int8_matmul(q_x, q_w.t()) + offset
        if bool((z_w != 0).any()):
            acc = acc - z_w * q_x.sum(dim=1, keepdim=True, dtype=torch.int32)
        return acc
    acc = int8_matmul(q_x, q_w.t()).to(torch.int64) + offset.to(torch.int64)
    acc = acc - z_w.to(torch.int64) * q_x.sum(dim=1, keepdim=True, dtype=torch.int64)
    if acc.numel() and int(acc.abs().max()) > INT32_MAX:
        raise ValueError(
            f"the accumulator does not fit an int32: got {int(acc.abs().max())} > {INT32_MAX}; "
            "the offset (bias) is too large for its scale s_x * s_w"
        )
    return acc.to(torch.int32)
