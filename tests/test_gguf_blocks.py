"""GGUF Q8_0/Q4_0 blocks: bytes identical to the ``gguf`` package's, and where the rounding
differs from :func:`~linquant_helpers.affine.quantize` (measured, then bounded)."""

from __future__ import annotations

import pytest
import torch

from linquant_helpers import choose_qparams, quantize
from linquant_helpers import gguf_blocks as gb
from linquant_helpers.sampling import randn


def _weights(rows: int = 256, cols: int = 1024, seed: int = 0) -> torch.Tensor:
    return randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def test_round_half_away_is_c_roundf() -> None:
    y = torch.tensor([2.5, -2.5, 0.5, -0.5, 1.49999988, 0.49999997, 3.0, -0.0])
    assert gb.round_half_away(y).tolist() == [3.0, -3.0, 1.0, -1.0, 1.0, 0.0, 3.0, 0.0]


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0"])
def test_encode_decode_round_trip(fmt: str) -> None:
    x = _weights(8, 96)
    scale, codes = (gb.quantize_q8_0 if fmt == "Q8_0" else gb.quantize_q4_0)(x)
    raw = gb.encode_blocks(scale, codes, fmt)
    assert raw.shape == (8, 3 * gb.BLOCK_BYTES[fmt]) and raw.dtype == torch.uint8
    back = gb.decode_blocks(raw, fmt)
    assert torch.equal(back[0], scale) and torch.equal(back[1], codes)


def test_q4_0_nibble_layout_by_hand() -> None:
    codes = torch.arange(-8, 8, dtype=torch.int8).repeat(2).reshape(1, 32)
    raw = gb.encode_blocks(torch.tensor([[1.0]]), codes, "Q4_0")
    # byte j: low nibble q[j] + 8, high nibble q[j + 16] + 8 -> j | j << 4 here
    assert raw[0, :2].tolist() == [0x00, 0x3C] and raw[0, 2:].tolist() == [
        j * 17 for j in range(16)
    ]


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        gb.quantize_q8_0(torch.zeros(3, 40))
    with pytest.raises(ValueError, match="fmt must be one of"):
        gb.encode_blocks(torch.ones(1), torch.zeros(1, 32, dtype=torch.int8), "Q5_0")
    with pytest.raises(ValueError, match=r"Q4_0 codes must lie in \[-8, 7\]"):
        gb.encode_blocks(torch.ones(1), torch.full((1, 32), 9, dtype=torch.int8), "Q4_0")
    with pytest.raises(ValueError, match="scale must hold one value per block"):
        gb.dequantize_blocks(torch.ones(2), torch.zeros(1, 32, dtype=torch.int8))
    with pytest.raises(ValueError, match="multiple of 18"):
        gb.decode_blocks(torch.zeros(1, 20, dtype=torch.uint8), "Q4_0")


def test_all_zero_block_gets_scale_zero_and_codes_zero() -> None:
    for quantize_fn in (gb.quantize_q8_0, gb.quantize_q4_0):
        scale, codes = quantize_fn(torch.zeros(2, 32))
        assert not scale.any() and not codes.any()


# ---------------------------------------------------------------- against the gguf package


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0"])
def test_bytes_identical_to_gguf_quants(fmt: str) -> None:
    pytest.importorskip("gguf")
    x = _weights()
    x[3] = 0.0  # an all-zero row: d = 0 in both
    x[5, :32] = 0.25  # a constant block
    scale, codes = (gb.quantize_q8_0 if fmt == "Q8_0" else gb.quantize_q4_0)(x)
    reference = gb.gguf_quantize(x, fmt)
    assert torch.equal(gb.encode_blocks(scale, codes, fmt), reference)
    decoded = gb.dequantize_blocks(*gb.decode_blocks(reference, fmt))
    assert torch.equal(decoded, gb.gguf_dequantize(reference, fmt))


def test_exact_ties_both_ways() -> None:
    pytest.importorskip("gguf")
    # max |x| = 127 -> d = 1, so x * (1/d) = x: 2.5 is an exact tie.
    x = torch.zeros(1, 32)
    x[0, :4] = torch.tensor([127.0, 2.5, -2.5, 3.5])
    raw = gb.gguf_quantize(x, "Q8_0")
    codes = gb.decode_blocks(raw, "Q8_0")[1][0, :4].tolist()
    assert codes == [127, 3, -3, 4]  # half away from zero
    assert quantize(x, 1.0, 0, narrow=True)[0, :4].tolist() == [127, 2, -2, 4]  # half to even


# ---------------------------------------------------------------- against linquant's rounding


def test_q8_0_equals_linquant_group_32_except_at_exact_ties() -> None:
    x = _weights(1024, 4096)
    scale, codes = gb.quantize_q8_0(x)
    s, _ = choose_qparams(x, 8, symmetric=True, narrow=True, group_size=32)
    assert torch.equal(s.half(), scale)  # the same max|x| / 127, stored in float16
    ours = quantize(x, s, 0, 8, narrow=True, group_size=32)  # float32 scale, as llama.cpp
    differ = ours != codes
    y = x.reshape(1024, -1, 32) * (1 / s).unsqueeze(-1)
    ties = (y - y.floor() == 0.5).reshape(x.shape)
    assert bool(ties[differ].all()), "every difference is an exact tie"
    assert int(differ.sum()) == 7  # measured: 7 of 4194304, one code each
    assert int((ours.int() - codes.int()).abs().max()) == 1
    # rounding the scale to float16 *before* computing the codes moves many more
    ours16 = quantize(x, s.half().float(), 0, 8, narrow=True, group_size=32)
    assert int((ours16 != codes).sum()) > 10_000


def test_q4_0_equals_linquant_with_its_signed_scale_except_at_ties() -> None:
    x = _weights(1024, 4096)
    blocks = x.reshape(1024, -1, 32)
    d = blocks.gather(-1, blocks.abs().argmax(-1, keepdim=True)).squeeze(-1) / -8
    sign = torch.sign(d).repeat_interleave(32, dim=-1)
    # x / d = (sign * x) / |d|: linquant's quantize with a positive scale
    ours = quantize(x * sign, d.abs(), 0, 4, group_size=32)
    codes = gb.quantize_q4_0(x)[1]
    assert torch.equal(gb.quantize_q4_0(x)[0], d.half())
    y = blocks * (1 / d).unsqueeze(-1)
    near = ((y - y.floor() - 0.5).abs() < 2**-19).reshape(x.shape)
    differ = ours != codes
    assert bool(near[differ].all()), "every difference is within float error of a tie"
    assert int(differ.sum()) == 2  # measured
    assert int((ours.int() - codes.int()).abs().max()) == 1


# ---------------------------------------------------------------- scales float16 cannot hold


@pytest.mark.parametrize(("fmt", "limit"), [("Q8_0", 127 * 65504.0), ("Q4_0", 8 * 65504.0)])
def test_a_scale_that_overflows_float16_is_refused(fmt: str, limit: float) -> None:
    quantize_fn = gb.quantize_q8_0 if fmt == "Q8_0" else gb.quantize_q4_0
    x = torch.zeros(2, 64)
    x[1, 40] = limit  # d = 65504 exactly: stored as is
    scale, _ = quantize_fn(x)
    assert float(scale.abs().max()) == 65504.0
    x[1, 40] = 1e7  # llama.cpp (gguf.quants) stores d = inf here, and decodes inf or NaN
    with pytest.raises(ValueError, match=rf"{fmt}'s float16 scale .* overflows above 65504"):
        quantize_fn(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_are_refused(bad: float) -> None:
    x = torch.ones(1, 32)
    x[0, 7] = bad
    for quantize_fn in (gb.quantize_q8_0, gb.quantize_q4_0):
        with pytest.raises(ValueError, match="x must be finite"):
            quantize_fn(x)


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0"])
def test_tiny_blocks_match_gguf_quants(fmt: str) -> None:
    """Below 2^-25 the float16 d rounds to 0 and the block decodes to zeros, in llama.cpp too;
    just above, d is a float16 subnormal. Both byte-identical to the reference."""
    pytest.importorskip("gguf")
    quantize_fn = gb.quantize_q8_0 if fmt == "Q8_0" else gb.quantize_q4_0
    divisor = 127 if fmt == "Q8_0" else 8
    x = torch.linspace(-1, 1, 32).repeat(4, 1)
    x[0] *= 1e-6 * divisor / 127  # d below 2^-25: stored as 0
    x[1] *= 2.0**-24 * divisor * 1.5  # d a float16 subnormal
    x[2] *= 1e-3
    x[3] *= 1e-12
    scale, codes = quantize_fn(x)
    assert torch.equal(gb.encode_blocks(scale, codes, fmt), gb.gguf_quantize(x, fmt))
    decoded = gb.dequantize_blocks(scale, codes)
    assert not decoded[0].any() and not decoded[3].any()  # the documented zeros
    assert codes[0].abs().max() == (127 if fmt == "Q8_0" else 8)
    assert float(scale[1].abs()) < 2.0**-14 and decoded[1].any()
    assert float((decoded[0] - x[0]).abs().max()) <= float(x[0].abs().max())
