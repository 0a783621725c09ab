"""Fused weight-only matmuls: PyTorch's packed-weight CPU kernels behind three small functions.

The layers of :mod:`~linquant_helpers.layers` write a float weight on every call
and run an ordinary matmul (``naive``: ``Int4WeightLinear`` dequantizes, then
``F.linear``; ``W8A16Linear`` converts the codes, then ``F.linear`` and a multiply
of the outputs by the scales). A fused kernel reads the integer codes and scales
inside the matmul instead:

* int8, one scale per output channel (``torch._weight_int8pack_mm``)::

      y[m, n] = s[n] * sum_k x[m, k] q[n, k]

* int4, one scale per group of ``g`` inputs (``torch._weight_int4pack_mm_for_cpu``)::

      y[m, n] = sum_k x[m, k] (s[n, k // g] q[n, k])

  with the codes repacked once by :func:`pack_int4_weight` into the kernel's layout.

Both are the layer's formula, but not its rounding: they add the products in
float32 in their own order (vectorized lanes, blocks of ``k``), and the int8
kernel, like ``W8A16Linear``'s naive path, multiplies by the scale after the sum,
where the readable path (``F.linear`` with ``dequantized_weight()``) multiplies
the weight. So their results differ from the naive path's in the last bits;
``tests/test_kernels.py`` bounds the difference, and checks bit identity where
nothing rounds. The kernels
run on the CPU, for float32, bfloat16 and float16 activations, and take their
scales in the activations' dtype: in bfloat16 the scales are rounded to 8
significant bits, a change of up to 0.4% per scale. Which activation dtypes
they are fast for depends on the PyTorch build and the CPU:
``benchmarks/bench_kernels.py`` measures it.
"""

from __future__ import annotations

import torch

from .validation import check_float_tensor, check_int, check_int_tensor, check_tensor

INT4_GROUP_SIZES = (32, 64, 128, 256)
"""The group sizes ``torch._weight_int4pack_mm_for_cpu`` accepts."""

INT4_N_MULTIPLE = 16
"""The int4 kernel's packing needs the number of output features to be a multiple of this."""

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""Activation dtypes the kernels take (not float64)."""


def int4_kernel_available() -> bool:
    """Whether this PyTorch has the CPU int4 kernel (added in PyTorch 2.5)."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")


def _check_matrix(t: torch.Tensor, name: str, dtypes: tuple[torch.dtype, ...]) -> torch.Tensor:
    """``t`` if it is a 2-D CPU tensor of one of ``dtypes``; else an error naming it."""
    check_tensor(t, name)
    if t.dtype not in dtypes:
        kinds = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} must have dtype {kinds}, got {t.dtype}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU (the kernels are CPU kernels), got {t.device}")
    return t


def _check_activation(x: torch.Tensor) -> torch.Tensor:
    check_float_tensor(x, "x")
    return _check_matrix(x, "x", KERNEL_DTYPES)


def int4_kernel_supports(out_features: int, group_size: int) -> str | None:
    """Why the int4 kernel cannot run a layer of this shape, or None if it can.

    Raises ``TypeError``/``ValueError`` for an ``out_features`` or ``group_size`` that
    is not a positive int.
    """
    check_int(out_features, "out_features", low=1)
    check_int(group_size, "group_size", low=1)
    if not int4_kernel_available():
        return f"this PyTorch ({torch.__version__}) has no _weight_int4pack_mm_for_cpu"
    if group_size not in INT4_GROUP_SIZES:
        return f"the int4 kernel takes group_size in {INT4_GROUP_SIZES}, got {group_size}"
    if out_features % INT4_N_MULTIPLE:
        return (
            f"the int4 kernel needs out_features to be a multiple of {INT4_N_MULTIPLE}, "
            f"got {out_features}"
        )
    return None


def int8_weight_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``y = (x q^T) * s``: ``x`` ``(M, K)`` float, ``q`` int8 ``(N, K)``, ``s`` ``(N,)``.

    Returns ``(M, N)`` in ``x``'s dtype; the scale is cast to it, as the kernel requires.
    Raises ``TypeError`` for other dtypes (``x`` in :data:`KERNEL_DTYPES`, ``q`` int8,
    ``scale`` floating point) and ``ValueError`` for shapes that do not fit or a tensor
    off the CPU.
    """
    _check_activation(x)
    _check_matrix(q, "q", (torch.int8,))
    check_float_tensor(scale, "scale")
    if x.shape[1] != q.shape[1] or tuple(scale.shape) != (q.shape[0],):
        raise ValueError(
            f"x (M, K), q (N, K) and scale (N,) must fit, got {tuple(x.shape)}, "
            f"{tuple(q.shape)} and {tuple(scale.shape)}"
        )
    return torch._weight_int8pack_mm(x, q, scale.to(x.dtype))


def pack_int4_weight(codes: torch.Tensor) -> torch.Tensor:
    """Repack signed 4-bit codes ``(N, K)`` in ``[-8, 7]`` into the int4 kernel's layout.

    The kernel stores unsigned nibbles and subtracts 8 from each: ``u = q + 8``.
    Returns uint8 ``(N, K / 2)``; done once, when a layer is converted.
    Raises ``TypeError`` for codes that are not integers (a float code such as 0.7
    is not a code) and ``ValueError`` for codes outside ``[-8, 7]`` (they would wrap
    into another nibble), ``N`` not a multiple of :data:`INT4_N_MULTIPLE` or ``K`` odd.
    """
    check_int_tensor(codes, "codes")
    _check_matrix(codes, "codes", (codes.dtype,))
    n, k = codes.shape
    if n % INT4_N_MULTIPLE or k % 2:
        raise ValueError(
            f"codes must be (N, K) with N a multiple of {INT4_N_MULTIPLE} and K even, "
            f"got shape {tuple(codes.shape)}"
        )
    if codes.numel():
        low, high = (int(v) for v in codes.aminmax())
        if low < -8 or high > 7:
            raise ValueError(f"codes must lie in [-8, 7] (signed 4-bit), got [{low}, {high}]")
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32) + 8, 1)


def int4_scales_and_zeros(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The kernel's ``(K / g, N, 2)`` table of per-group scales and offsets, in ``dtype``.

    The kernel computes ``w = (u - 8) * scale + offset``; symmetric codes have offset 0.
    ``scale`` is ``(N, K / g)``. Raises ``TypeError`` for a ``dtype`` outside
    :data:`KERNEL_DTYPES` or a scale that is not floating point, ``ValueError`` for
    a scale that is not 2-D, or not positive and finite.
    """
    check_float_tensor(scale, "scale")
    if dtype not in KERNEL_DTYPES:
        raise TypeError(f"dtype must be one of {KERNEL_DTYPES}, got {dtype!r}")
    if scale.ndim != 2:
        raise ValueError(f"scale must be (N, K / group_size), got shape {tuple(scale.shape)}")
    if scale.numel() and not bool((torch.isfinite(scale) & (scale > 0)).all()):
        raise ValueError("scale must be positive and finite, got a value that is not")
    scale_t = scale.t().to(dtype)
    return torch.stack((scale_t, torch.zeros_like(scale_t)), dim=-1).contiguous()


def int4_weight_matmul(
    x: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int
) -> torch.Tensor:
    """``y[m, n] = sum_k x[m, k] s[n, k // g] q[n, k]`` with the weight from
    :func:`pack_int4_weight` and the table from :func:`int4_scales_and_zeros` (in ``x``'s dtype).

    ``x`` is ``(M, K)``; returns ``(M, N)`` in ``x``'s dtype. Raises ``TypeError``
    for other dtypes and ``ValueError`` for a ``group_size`` outside
    :data:`INT4_GROUP_SIZES` or shapes that do not fit.
    """
    _check_activation(x)
    _check_matrix(packed, "packed", (torch.uint8,))
    check_tensor(scales_and_zeros, "scales_and_zeros")
    check_int(group_size, "group_size")
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    n, k = packed.shape[0], x.shape[1]
    expected = (k // group_size, n, 2)
    if packed.shape[1] * 2 != k or k % group_size or tuple(scales_and_zeros.shape) != expected:
        raise ValueError(
            f"x (M, K), packed (N, K / 2) and scales_and_zeros (K / group_size, N, 2) must fit "
            f"with group_size {group_size}, got {tuple(x.shape)}, {tuple(packed.shape)} and "
            f"{tuple(scales_and_zeros.shape)}"
        )
    if scales_and_zeros.dtype != x.dtype:
        raise TypeError(
            f"scales_and_zeros must have x's dtype {x.dtype}, got {scales_and_zeros.dtype}"
        )
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)
