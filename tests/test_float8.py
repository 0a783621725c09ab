"""linquant_helpers.float8 against torch's own float8 dtypes: every code, and rounding."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linquant_helpers.float8 import (
    E2M1,
    E4M3,
    E5M2,
    decode_float,
    encode_float,
    fake_quantize_fp8,
    float_format,
    fp8_dequantize,
    fp8_quantize,
    grid,
    pow2,
    round_to_format,
)

FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
ALL = torch.arange(256, dtype=torch.uint8)


@pytest.mark.parametrize("dtype", FP8)
def test_decode_matches_torch_for_all_256_codes(dtype: torch.dtype) -> None:
    ref, mine = ALL.view(dtype).float(), decode_float(ALL, dtype)
    assert torch.equal(torch.isnan(ref), torch.isnan(mine))
    finite = ~torch.isnan(ref)
    assert torch.equal(ref[finite], mine[finite])
    assert torch.equal(torch.signbit(ref[finite]), torch.signbit(mine[finite]))  # -0 too


@pytest.mark.parametrize("dtype", FP8)
def test_encode_inverts_decode_for_every_non_nan_code(dtype: torch.dtype) -> None:
    values = decode_float(ALL, dtype)
    ok = torch.isfinite(values)
    assert torch.equal(encode_float(values[ok], dtype), ALL[ok])


def test_format_facts() -> None:
    """NaN count, infinities, max and smallest subnormal: the spec's numbers."""
    e4 = decode_float(ALL, torch.float8_e4m3fn)
    e5 = decode_float(ALL, torch.float8_e5m2)
    assert int(torch.isnan(e4).sum()) == 2 and not torch.isinf(e4).any()
    assert int(torch.isnan(e5).sum()) == 6 and int(torch.isinf(e5).sum()) == 2
    assert grid(torch.float8_e4m3fn)[-1] == 448 and grid(torch.float8_e5m2)[-1] == 57344
    assert grid(torch.float8_e4m3fn)[1] == 2.0**-9 and grid(torch.float8_e5m2)[1] == 2.0**-16
    assert grid(torch.float4_e2m1fn_x2).tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert (E4M3.emax, E5M2.emax, E2M1.emax) == (8, 15, 2)


@pytest.mark.parametrize("dtype", FP8)
def test_every_midpoint_rounds_to_even_like_torch(dtype: torch.dtype) -> None:
    g = grid(dtype)
    mids = (g[1:] + g[:-1]) / 2  # exact in float64, and in float32
    x = torch.cat([mids, -mids]).float()
    assert torch.equal(x.double(), torch.cat([mids, -mids]))
    assert torch.equal(encode_float(x, dtype), x.to(dtype).view(torch.uint8))
    # and one float32 step either side of each midpoint
    for d in (torch.nextafter(x, x + 1), torch.nextafter(x, x - 1)):
        assert torch.equal(encode_float(d, dtype), d.to(dtype).view(torch.uint8))


@pytest.mark.parametrize("dtype", FP8)
def test_random_float32_matches_torch_cast_after_clamp(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, generator=gen)
    x = x * pow2(torch.randint(-30, 20, x.shape, generator=gen))
    m = float_format(dtype).max
    assert torch.equal(encode_float(x, dtype), x.clamp(-m, m).to(dtype).view(torch.uint8))


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32))
def test_round_to_format_is_the_nearest_value(v: float) -> None:
    """Against float64 brute force over the E2M1 and E4M3 grids (ties: even code)."""
    for dtype in (torch.float4_e2m1fn_x2, torch.float8_e4m3fn):
        g = grid(dtype)
        g = torch.cat([-g.flip(0), g])
        a = min(max(v, -float(g[-1])), float(g[-1]))
        q = round_to_format(torch.tensor([v]), dtype).double().item()
        assert abs(q - a) == (g - a).abs().min().item()


def test_round_to_format_keeps_dtype_device_and_sign() -> None:
    x = torch.tensor([-0.01, 0.3, 1e4], dtype=torch.bfloat16)
    q = round_to_format(x, torch.float8_e4m3fn)
    assert q.dtype == torch.bfloat16 and q.device == x.device
    assert torch.signbit(q[0]) and q[2] == 448


def test_fp8_quantize_per_tensor_and_per_row() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 40, generator=gen) * torch.tensor([[1e-3], [1], [10], [0], [5], [1e3]])
    s, c = fp8_quantize(x)
    assert s.shape == () and s == x.abs().max() / 448 and c.dtype == torch.float8_e4m3fn
    assert torch.equal(c.float(), (x / s).to(torch.float8_e4m3fn).float())
    s, c = fp8_quantize(x, torch.float8_e5m2, per_row=True)
    assert s.shape == (6, 1) and s[3, 0] == 1 and s[5, 0] == x[5].abs().max() / 57344
    err = (fp8_dequantize(s, c) - x).abs()
    assert bool((err <= x.abs() * 2.0**-3 + 1e-30).all())  # E5M2: relative error <= 2^-3
    assert fake_quantize_fp8(x.double()).dtype == torch.float64


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(TypeError, match="dtype"):
        round_to_format(torch.ones(2), "e4m3")
    with pytest.raises(ValueError, match="dtype"):
        round_to_format(torch.ones(2), torch.float16)
    with pytest.raises(ValueError, match="x must be finite.*NaN"):
        encode_float(torch.tensor([float("nan")]), torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="infinity"):
        fp8_quantize(torch.tensor([float("inf")]))
    with pytest.raises(TypeError, match="codes must be uint8"):
        decode_float(torch.ones(2, dtype=torch.int32), torch.float8_e5m2)
    with pytest.raises(ValueError, match="codes must be below 16"):
        decode_float(torch.tensor([16], dtype=torch.uint8), torch.float4_e2m1fn_x2)
    with pytest.raises(ValueError, match="float8"):
        fp8_quantize(torch.ones(2), torch.float4_e2m1fn_x2)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        fp8_quantize(torch.ones(2, dtype=torch.int32))
