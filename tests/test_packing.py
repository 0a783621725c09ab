"""pack/unpack against hand-computed bytes and numpy's packbits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from linquant_helpers import pack, packed_numel, unpack
from linquant_helpers.qtensor import quantize_tensor


def _i8(values):
    return torch.tensor(values, dtype=torch.int8)


@pytest.mark.parametrize(
    ("codes", "bits", "signed", "expected"),
    [
        # 2 bits, first code lowest: 1 | 2 << 2 | 3 << 4 | 0 << 6 = 1 + 8 + 48 = 57
        ([1, 2, 3, 0], 2, False, [57]),
        # 4 bits: 0xA | 0x5 << 4 = 0x5A
        ([10, 5], 4, False, [0x5A]),
        # signed 4 bits, two's complement: -1 -> 0xF, 1 -> 0x1: 0x1F
        ([-1, 1], 4, True, [0x1F]),
        ([-8, 7, -2], 4, True, [0x8 | 0x7 << 4, 0xE]),  # the last byte is padded with 0
        # 1 bit: 1 + 4 + 8 + 128 = 141, then a ninth code in a byte of its own
        ([1, 0, 1, 1, 0, 0, 0, 1, 1], 1, False, [141, 1]),
        # signed 2 bits: -2 -> 0b10, 1 -> 0b01, -1 -> 0b11, 0 -> 0b00; then 1 alone
        ([-2, 1, -1, 0, 1], 2, True, [2 | 1 << 2 | 3 << 4 | 0 << 6, 1]),
        ([-128, -1, 0, 127], 8, True, [128, 255, 0, 127]),
    ],
)
def test_pack_hand_values(codes, bits, signed, expected):
    packed = pack(_i8(codes), bits, signed=signed)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == expected
    assert unpack(packed, bits, (len(codes),), signed=signed).tolist() == codes


def test_pack_1_bit_matches_numpy_packbits():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 100, 1001):
        bits = rng.integers(0, 2, n).astype(np.int8)
        ours = pack(torch.from_numpy(bits), 1).numpy()
        assert np.array_equal(ours, np.packbits(bits.astype(np.uint8), bitorder="little"))


@pytest.mark.parametrize("bits", [2, 4])
def test_pack_matches_a_float64_sum_of_shifted_codes(bits):
    # byte = sum_i c_i * 2^(bits * i) over the codes of that byte, computed independently.
    rng = np.random.default_rng(bits)
    per_byte = 8 // bits
    codes = rng.integers(0, 2**bits, 37)
    padded = np.concatenate([codes, np.zeros(-len(codes) % per_byte, dtype=codes.dtype)])
    weights = 2.0 ** (bits * np.arange(per_byte))
    expected = (padded.reshape(-1, per_byte) * weights).sum(axis=1).astype(np.uint8)
    ours = pack(torch.from_numpy(codes).to(torch.uint8), bits).numpy()
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize(
    ("numel", "bits", "nbytes"),
    [(0, 4, 0), (1, 4, 1), (2, 4, 1), (3, 4, 2), (9, 1, 2), (8, 1, 1), (5, 2, 2), (7, 8, 7)],
)
def test_packed_numel(numel, bits, nbytes):
    assert packed_numel(numel, bits) == nbytes
    assert pack(torch.zeros(numel, dtype=torch.int8), bits).numel() == nbytes


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 7), (1,), ()])
@pytest.mark.parametrize(("bits", "signed"), [(4, True), (4, False), (2, True), (1, False)])
def test_unpack_restores_shape_and_reads_row_major(shape, bits, signed):
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    q = torch.randint(low, high + 1, shape, generator=torch.Generator().manual_seed(0))
    q = q.to(torch.int8)
    packed = pack(q, bits, signed=signed)
    # packing the flattened codes gives the same bytes: the order is row-major
    assert torch.equal(packed, pack(q.flatten(), bits, signed=signed))
    out = unpack(packed, bits, shape, signed=signed)
    assert out.shape == torch.Size(shape) and out.dtype == torch.int8
    assert torch.equal(out, q)


def test_unpack_dtypes():
    assert unpack(pack(torch.tensor([200], dtype=torch.uint8), 8), 8, (1,)).dtype == torch.uint8
    assert unpack(pack(_i8([-3]), 8, signed=True), 8, (1,), signed=True).dtype == torch.int8
    assert unpack(pack(_i8([200 - 256]).to(torch.uint8), 8), 8, (1,)).tolist() == [200]


def test_pack_halves_the_bytes_of_a_4_bit_qtensor():
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    qt = quantize_tensor(x, 4, symmetric=True, axis=0)
    packed = pack(qt.q, 4, signed=True)
    assert packed.numel() == x.numel() // 2
    assert torch.equal(unpack(packed, 4, qt.q.shape, signed=True), qt.q)


def test_pack_accepts_wider_integer_dtypes_and_views():
    q = torch.tensor([[3, 1], [0, 2]], dtype=torch.int64)
    assert torch.equal(pack(q.t(), 2), pack(q.t().contiguous(), 2))
    assert pack(q.t(), 2).tolist() == [3 | 0 << 2 | 1 << 4 | 2 << 6]
