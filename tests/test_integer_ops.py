"""Integer-only arithmetic: fixed-point multipliers, requantization, the integer matmul.

References are independent of the code under test: Python's exact integers and
fractions, ``math.frexp``, float64 math, and int64 matmuls of the raw codes.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from linquant_helpers import choose_qparams, dequantize, quantize
from linquant_helpers import integer_ops as io
from linquant_helpers.integer_ops import (
    int8_matmul,
    integer_linear,
    quantize_bias,
    quantize_multiplier,
    requantize,
    weight_offset,
)

multipliers = st.floats(min_value=2.0**-32, max_value=2.0**29)


def exact_multiplier(m0: int, n: int) -> Fraction:
    """``m0 * 2^-(31 + n)`` as an exact fraction."""
    return Fraction(m0, 2 ** (31 + n))


# --- quantize_multiplier --------------------------------------------------------------


def test_multiplier_hand_computed() -> None:
    # 0.75 = 0.75 * 2^0: M0 = 0.75 -> m0 = 0.75 * 2^31 = 1610612736, n = 0.
    m0, n = quantize_multiplier(0.75)
    assert (int(m0), int(n)) == (1_610_612_736, 0)
    # 0.3 = 0.6 * 2^-1: m0 = round(0.6 * 2^31) = round(1288490188.8) = 1288490189, n = 1.
    m0, n = quantize_multiplier(0.3)
    assert (int(m0), int(n)) == (1_288_490_189, 1)
    assert m0.dtype == n.dtype == torch.int32


@given(multipliers)
def test_multiplier_matches_frexp_in_float64(m: float) -> None:
    mantissa, exponent = math.frexp(m)
    expected_m0, expected_n = round(mantissa * 2**31), -exponent
    if expected_m0 == 2**31:  # M0 rounded up to 1: the carry case
        expected_m0, expected_n = 2**30, expected_n - 1
    m0, n = quantize_multiplier(m)
    assert (int(m0), int(n)) == (expected_m0, expected_n)
    assert 2**30 <= int(m0) < 2**31
    # M0 in Q31 is off by at most half a unit in the last place: 2^-32 relative to M0 >= 0.5.
    error = abs(exact_multiplier(int(m0), int(n)) - Fraction(m))
    assert error <= Fraction(m) * Fraction(1, 2**31)


@given(st.integers(2**30, 2**31 - 1), st.integers(-30, 31))
def test_multiplier_exact_for_representable_values(m0: int, n: int) -> None:
    m = exact_multiplier(m0, n)  # exactly representable with a 31-bit M0
    got_m0, got_n = quantize_multiplier(float(m))
    assert (int(got_m0), int(got_n)) == (m0, n)


def test_multiplier_carry_when_m0_rounds_to_one() -> None:
    m0, n = quantize_multiplier(1 - 2.0**-40)  # M0 = 0.99999... rounds to 2^31 / 2^31
    assert (int(m0), int(n)) == (2**30, -1)
    assert exact_multiplier(int(m0), int(n)) == 1


def test_multiplier_per_channel_shape() -> None:
    m = torch.tensor([[0.5, 0.25], [3.0, 1e-6]], dtype=torch.float64)
    m0, n = quantize_multiplier(m)
    assert m0.shape == n.shape == m.shape
    assert torch.allclose(m0.double() * 2.0 ** (-31 - n.double()), m, rtol=2**-31)


@pytest.mark.parametrize(
    "bad", [0.0, -0.5, 2.0**-33, 2.0**30, 2.0**30 - 2.0**-3, math.inf, math.nan]
)
def test_multiplier_out_of_range_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="multiplier"):
        quantize_multiplier(bad)


def test_multiplier_type_error() -> None:
    with pytest.raises(TypeError, match="multiplier"):
        quantize_multiplier("0.5")


# --- requantize ---------------------------------------------------------------------


def reference_requantize(acc: int, m0: int, n: int, z: int, qmin: int, qmax: int) -> int:
    """floor(acc * M + 1/2) + z, saturated, with exact Python fractions."""
    return min(max(math.floor(acc * exact_multiplier(m0, n) + Fraction(1, 2)) + z, qmin), qmax)


@given(
    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=20),
    multipliers,
    st.integers(-128, 127),
)
def test_requantize_matches_exact_rounding(accs: list[int], m: float, z: int) -> None:
    m0, n = quantize_multiplier(m)
    got = requantize(torch.tensor(accs, dtype=torch.int32), m0, n, z)
    expected = [reference_requantize(a, int(m0), int(n), z, -128, 127) for a in accs]
    assert got.dtype == torch.int8
    assert got.tolist() == expected


@given(st.integers(-(2**20), 2**20), st.floats(1e-6, 0.999))
def test_requantize_within_half_a_code_of_float64(acc: int, m: float) -> None:
    m0, n = quantize_multiplier(m)
    q = requantize(torch.tensor([acc], dtype=torch.int32), m0, n, 0, bits=16)
    exact = acc * m  # float64; within [-2^15, 2^15) for these ranges
    if -(2**15) <= exact < 2**15 - 1:
        # half a code from rounding, plus M's Q31 error (relative 2^-31) times |acc|
        assert abs(int(q) - exact) <= 0.5 + abs(exact) * 2.0**-31 + 1e-9


def test_requantize_ties_round_up() -> None:
    m0, n = quantize_multiplier(0.5)
    acc = torch.tensor([1, -1, 3, -3, 2], dtype=torch.int32)  # 0.5, -0.5, 1.5, -1.5, 1
    assert requantize(acc, m0, n).tolist() == [1, 0, 2, -1, 1]


def test_requantize_saturates_and_handles_large_multipliers() -> None:
    acc = torch.tensor([10, -10, 100, -100], dtype=torch.int32)
    m0, n = quantize_multiplier(3.7)  # M >= 1: a left shift, n < 0
    assert int(n) < 0
    assert requantize(acc, m0, n).tolist() == [37, -37, 127, -128]
    assert requantize(acc, m0, n, bits=8, signed=False).tolist() == [37, 0, 255, 0]


def test_requantize_per_channel_equals_column_by_column() -> None:
    gen = torch.Generator().manual_seed(0)
    acc = torch.randint(-50_000, 50_000, (6, 4), generator=gen, dtype=torch.int32)
    m = torch.tensor([1e-3, 2e-4, 5e-3, 7e-4], dtype=torch.float64)
    m0, n = quantize_multiplier(m)
    z = torch.tensor([0, -3, 5, 1], dtype=torch.int32)
    got = requantize(acc, m0, n, z)
    for j in range(4):
        assert torch.equal(got[:, j], requantize(acc[:, j], m0[j], n[j], int(z[j])))


def test_requantize_bad_input() -> None:
    m0, n = quantize_multiplier(0.5)
    with pytest.raises(TypeError, match="acc"):
        requantize(torch.ones(3), m0, n)
    with pytest.raises(ValueError, match="m0"):
        requantize(torch.ones(3, dtype=torch.int32), torch.tensor(5), n)
    with pytest.raises(ValueError, match="n must be"):
        requantize(torch.ones(3, dtype=torch.int32), m0, torch.tensor(40))
    with pytest.raises(ValueError, match="zero_point"):
        requantize(torch.ones(3, dtype=torch.int32), m0, n, 200)


# --- bias and matmul ----------------------------------------------------------------


def test_quantize_bias_hand_computed() -> None:
    bias = torch.tensor([0.5, -0.25, 0.0013])
    got = quantize_bias(bias, 0.1, torch.tensor([0.01, 0.05, 0.001]))
    # 0.5 / 0.001 = 500, -0.25 / 0.005 = -50, 0.0013 / 0.0001 = 13
    assert got.tolist() == [500, -50, 13]
    assert got.dtype == torch.int32


def test_quantize_bias_errors() -> None:
    with pytest.raises(ValueError, match="int32"):
        quantize_bias(torch.tensor([1e6]), 1e-4, 1e-4)
    with pytest.raises(ValueError, match="scale"):
        quantize_bias(torch.tensor([1.0]), 0.0, 0.1)


@pytest.mark.parametrize("shape", [(64, 1024, 256), (3, 5, 7), (1, 8, 1), (17, 24, 40)])
@pytest.mark.parametrize("use_int_mm", [True, False], ids=["int_mm", "fallback"])
def test_int8_matmul_is_exact(
    shape: tuple[int, int, int], use_int_mm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not use_int_mm:
        monkeypatch.setattr(io, "_int_mm_supported", lambda a, b: False)
    m, k, n = shape
    gen = torch.Generator().manual_seed(sum(shape))
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (n, k), generator=gen, dtype=torch.int8).t()  # a weight's .t()
    got = int8_matmul(a, b)
    assert got.dtype == torch.int32
    assert torch.equal(got.long(), a.long() @ b.long())


def test_int8_matmul_extremes_do_not_overflow() -> None:
    a = torch.full((4, 4096), -128, dtype=torch.int8)
    b = torch.full((4096, 4), -128, dtype=torch.int8)
    assert int8_matmul(a, b).unique().tolist() == [4096 * 128 * 128]


def test_int8_matmul_bad_input() -> None:
    a = torch.zeros(2, 3, dtype=torch.int8)
    with pytest.raises(TypeError, match="int8"):
        int8_matmul(a.int(), a.t())
    with pytest.raises(ValueError, match="multiply"):
        int8_matmul(a, a)


@pytest.mark.parametrize("weight_zero_point", ["zero", "per-channel"])
def test_integer_linear_equals_the_zero_point_product(weight_zero_point: str) -> None:
    gen = torch.Generator().manual_seed(1)
    q_x = torch.randint(-128, 128, (5, 32), generator=gen, dtype=torch.int8)
    q_w = torch.randint(-127, 128, (7, 32), generator=gen, dtype=torch.int8)
    z_x = -13
    z_w = torch.zeros(7, dtype=torch.int32)
    if weight_zero_point == "per-channel":
        z_w = torch.randint(-20, 20, (7,), generator=gen, dtype=torch.int32)
    bias_q = torch.randint(-1000, 1000, (7,), generator=gen, dtype=torch.int32)
    acc = integer_linear(q_x, q_w, weight_offset(q_w, z_w, z_x, bias_q), z_w)
    # The unexpanded product, element by element in int64.
    centered = (q_x.long()[:, None, :] - z_x) * (q_w.long()[None, :, :] - z_w.long()[None, :, None])
    assert torch.equal(acc.long(), centered.sum(-1) + bias_q.long())
    assert acc.dtype == torch.int32


def test_integer_path_within_one_output_step_of_float() -> None:
    """x, w and b quantized, then int8 -> int32 -> int8 with integer operations only."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 128, generator=gen) * 2 + 0.5
    w = torch.randn(48, 128, generator=gen) / 10
    b = torch.randn(48, generator=gen)
    s_x, z_x = choose_qparams(x)
    s_w, _ = choose_qparams(w, symmetric=True, narrow=True, axis=0)
    q_x, q_w = quantize(x, s_x, z_x), quantize(w, s_w, 0, narrow=True, axis=0)
    # Float reference: the same quantized inputs, float64 math.
    x_hat, w_hat = dequantize(q_x, s_x, z_x).double(), dequantize(q_w, s_w, 0, axis=0).double()
    y_ref = F.linear(x_hat, w_hat, b.double())
    s_y, z_y = choose_qparams(y_ref.float())

    bias_q = quantize_bias(b, s_x, s_w)
    m0, n = quantize_multiplier(s_x.double() * s_w.double() / s_y.double())
    acc = integer_linear(q_x, q_w, weight_offset(q_w, 0, z_x, bias_q))
    q_y = requantize(acc, m0, n, z_y)

    y_int = (q_y.double() - int(z_y)) * float(s_y)
    assert (y_int - y_ref).abs().max() <= float(s_y)
    # and never more than one code from quantizing the float result directly
    assert (q_y.int() - quantize(y_ref.float(), s_y, z_y).int()).abs().max() <= 1


# --- the int32 accumulator never wraps around silently --------------------------


def test_accumulator_overflow_is_an_error_not_a_wrapped_value():
    from linquant_helpers.integer_ops import MAX_K

    k = 4
    q_x = torch.full((1, k), 127, dtype=torch.int8)
    q_w = torch.full((1, k), 127, dtype=torch.int8)
    near_max = torch.tensor([2**31 - 1 - 1000], dtype=torch.int32)
    with pytest.raises(ValueError, match="accumulator does not fit an int32"):
        integer_linear(q_x, q_w, near_max)  # 4 * 127 * 127 more would wrap to negative
    fits = torch.tensor([2**31 - 1 - 4 * 127 * 127], dtype=torch.int32)
    assert int(integer_linear(q_x, q_w, fits)) == 2**31 - 1  # exactly at the edge: exact
    with pytest.raises(ValueError, match=f"more than the {MAX_K}"):
        wide = torch.zeros(1, MAX_K + 1, dtype=torch.int8)
        integer_linear(wide, wide, torch.zeros(1, dtype=torch.int32))
    with pytest.raises(ValueError, match=f"more than the {MAX_K}"):
        weight_offset(torch.zeros(1, MAX_K + 1, dtype=torch.int8), 0, 0)
    with pytest.raises(ValueError, match="offset .* does not fit an int32"):
        weight_offset(torch.full((1, 4), -127, dtype=torch.int8), 0, 127,
                      torch.tensor([2**31 - 1], dtype=torch.int32))  # fmt: skip
