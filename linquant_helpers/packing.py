"""Packing low-bit codes into bytes: several 1-, 2- or 4-bit codes per uint8.

A 4-bit code needs half a byte, but PyTorch has no 4-bit dtype, so int4
weights are stored two per byte. Code ``i`` of a byte sits at bit offset
``bits * i`` (the first code in the lowest bits)::

    byte = c0 | c1 << bits | c2 << 2*bits | ...     (pack)
    c_i  = (byte >> bits*i) & (2^bits - 1)          (unpack)

:func:`pack_int4_halves` is the layout of ``Int4WeightLinear``: the same bytes,
built from a matrix whose rows are paired with themselves, column ``j`` with
column ``j + ceil(K / 2)``. Unpacking a block of rows then takes two whole-block
operations, one per nibble, each writing a contiguous half of every row.
"""

from __future__ import annotations

import torch

from .validation import check_int, check_int_tensor

PACKABLE_BITS = (1, 2, 4, 8)


def _check_pack_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in PACKABLE_BITS:
        raise ValueError(f"bits must be one of {PACKABLE_BITS} for packing, got {bits!r}")
    return bits


def packed_numel(numel: int, bits: int) -> int:
    """Bytes needed for ``numel`` codes of ``bits`` bits: ``ceil(numel * bits / 8)``.

    Raises ``TypeError`` for a ``numel`` that is not an int, ``ValueError`` for a negative one.
    """
    check_int(numel, "numel", low=0)
    return -(-numel * _check_pack_bits(bits) // 8)  # exact integer ceil, even past 2^53


def pack(q: torch.Tensor, bits: int, *, signed: bool = False) -> torch.Tensor:
    """Pack the integer codes ``q`` (any shape) into a flat uint8 tensor.

    ``q`` is read in row-major order; when its size is not a multiple of the
    ``8 // bits`` codes per byte, the last byte is padded with zero codes.
    Codes must lie in ``[0, 2^bits - 1]``, or in ``[-2^(bits-1), 2^(bits-1) - 1]``
    with ``signed=True`` (stored in two's complement).
    Returns ``ceil(q.numel() * bits / 8)`` bytes on ``q``'s device.
    """
    q = check_int_tensor(q)
    _check_pack_bits(bits)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if q.numel() and (int(q.min()) < low or int(q.max()) > high):
        raise ValueError(
            f"q must hold codes in [{low}, {high}] to pack into {bits} bits "
            f"(signed={signed}), got values in [{int(q.min())}, {int(q.max())}]"
        )
    per_byte = 8 // bits
    flat = q.reshape(-1).to(torch.int32) & (2**bits - 1)  # two's complement for negatives
    flat = torch.nn.functional.pad(flat, (0, -flat.numel() % per_byte))
    shifts = torch.arange(per_byte, device=q.device, dtype=torch.int32) * bits
    return (flat.reshape(-1, per_byte) << shifts).sum(dim=1).to(torch.uint8)


def unpack(
    packed: torch.Tensor, bits: int, shape: tuple[int, ...] | torch.Size, *, signed: bool = False
) -> torch.Tensor:
    """Inverse of :func:`pack`: the codes of ``shape`` held in ``packed``.

    Returns int8 codes (uint8 for 8-bit unsigned codes) of the given
    ``shape``; ``signed`` must match the call to :func:`pack`. Raises
    ``ValueError`` if ``packed`` has the wrong number of bytes for ``shape``.
    """
    packed = check_int_tensor(packed, "packed")
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor, got dtype {packed.dtype}")
    _check_pack_bits(bits)
    if not isinstance(shape, (tuple, list, torch.Size)) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}")
    if not all(0 <= d < 2**63 for d in shape):
        raise ValueError(f"shape must hold sizes in [0, 2^63), got {tuple(shape)}")
    shape = torch.Size(shape)
    if packed.numel() != packed_numel(shape.numel(), bits):
        raise ValueError(
            f"packed holds {packed.numel()} bytes, but {shape.numel()} codes of {bits} bits "
            f"(shape {tuple(shape)}) need {packed_numel(shape.numel(), bits)}"
        )
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, device=packed.device, dtype=torch.uint8) * bits
    codes = (packed.reshape(-1, 1) >> shifts) & (2**bits - 1)  # uint8 codes in [0, 2^bits)
    out_dtype = torch.uint8 if bits == 8 and not signed else torch.int8
    codes = codes.reshape(-1)[: shape.numel()].to(out_dtype)  # 8 bits: the cast is two's complement
    if signed and bits < 8:
        # two's complement: a code with its top bit set stands for code - 2^bits
        codes = codes - ((codes >> (bits - 1)) << bits)
    return codes.reshape(shape)


def pack_int4_halves(q: torch.Tensor) -> torch.Tensor:
    """Pack signed 4-bit codes ``q`` ``(N, K)`` two per byte, each row with itself in halves.

    With ``h = ceil(K / 2)``, byte ``j`` of row ``n`` holds code ``(n, j)`` in its low
    four bits and code ``(n, j + h)`` in its high four (0 past the end when ``K`` is
    odd)::

        packed[n, j] = (q[n, j] mod 16) + 16 (q[n, j + h] mod 16)

    That is :func:`pack` (``signed=True``) of the pairs ``(q[n, j], q[n, j + h])``.
    Returns uint8 ``(N, h)``. Raises ``ValueError`` for a ``q`` that is not 2-D or
    holds codes outside ``[-8, 7]``.
    """
    q = check_int_tensor(q)
    if q.ndim != 2:
        raise ValueError(f"q must be a 2-D (N, K) tensor of codes, got shape {tuple(q.shape)}")
    half = -(-q.shape[1] // 2)
    padded = torch.nn.functional.pad(q, (0, 2 * half - q.shape[1]))
    pairs = torch.stack((padded[:, :half], padded[:, half:]), dim=-1)  # (N, h, 2)
    return pack(pairs, 4, signed=True).reshape(q.shape[0], half)


def unpack_int4_halves(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4_halves`: int8 codes ``(N, in_features)`` from ``(N, h)`` bytes.

    Raises ``ValueError`` if ``packed`` is not 2-D with ``ceil(in_features / 2)`` columns.
    """
    check_int(in_features, "in_features", low=1)
    half = -(-in_features // 2)
    if packed.ndim != 2 or packed.shape[1] != half:
        raise ValueError(
            f"packed must have shape (N, {half}) for in_features={in_features}, "
            f"got {tuple(packed.shape)}"
        )
    pairs = unpack(packed, 4, (packed.shape[0], half, 2), signed=True)
    return pairs.transpose(1, 2).reshape(packed.shape[0], 2 * half)[:, :in_features]
