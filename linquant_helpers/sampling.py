"""Random data that is the same on every CPU, for lessons whose numbers count near-ties.

``torch.randn`` fills tensors of 16 or more values with vectorized code on CPUs
with AVX2 or AVX-512 and with scalar code elsewhere (older x86 CPUs, ARM); the
two compute the same formula with different ``log`` and ``cos`` and differ in the
last bits. Most lessons do not notice. A lesson that counts how many values land
within float error of a rounding tie does, so it draws its data here:
:func:`randn` uses ``torch.rand`` (exact, the same everywhere) and the
Box-Muller transform in float64, then rounds to float32.
"""

from __future__ import annotations

import math

import torch


def randn(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """Standard normal float32 samples of ``shape``: ``sqrt(-2 ln(1 - u1)) cos(2 pi u2)``.

    ``u1, u2`` are uniform in ``[0, 1)`` from ``torch.rand`` with ``generator``;
    computed in float64 and rounded to float32, so that the last-bit differences
    of ``log`` and ``cos`` between CPUs almost never reach the float32 result.
    Raises ``TypeError`` for a size that is not an int or a ``generator`` that is not
    a ``torch.Generator``, ``ValueError`` for a negative size.
    """
    for index, n in enumerate(shape):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"shape must hold int sizes, got {n!r} at position {index}")
        if n < 0:
            raise ValueError(f"shape must hold sizes >= 0, got {shape}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    n = math.prod(shape)
    u = torch.rand(2, n, generator=generator, dtype=torch.float64)
    z = torch.sqrt(-2.0 * torch.log1p(-u[0])) * torch.cos(2.0 * math.pi * u[1])
    return z.float().reshape(shape)
