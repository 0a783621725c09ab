"""The checks of notebook 06 reject typical mistakes and name them.

That every check passes its reference solution, reports a placeholder as TODO
and code that raises as FAIL is tested for every lesson in test_exercise_contract.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from linquant_helpers.exercises import lesson06 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS
from solutions import lesson06 as sol


def _frexp_multiplier(rounding=round, sign=-1, carry=True, scaled=True):
    """A fixed_point_multiplier with one deliberate mistake."""

    def fixed_point_multiplier(m):
        mantissa, exponent = math.frexp(m)
        if not scaled:
            return mantissa, sign * exponent
        m0, n = rounding(mantissa * 2**31), sign * exponent
        if carry and m0 == 2**31:
            m0, n = 2**30, n - 1
        return m0, n

    return fixed_point_multiplier


WRONG_MULTIPLIER = [
    (_frexp_multiplier(sign=1), "wrong sign"),
    (_frexp_multiplier(carry=False), "rounds up to exactly 1.0"),
    (_frexp_multiplier(rounding=math.floor), "truncated"),
    (_frexp_multiplier(scaled=False), "Q31 integer"),
    (lambda m: (round(m * 2**31), 0), "normalize first"),
    (lambda m: m, "pair (m0, n)"),
    (lambda m: (1.5, 0), "must be an integer"),
    (lambda m: (2**30, 3), "expected (m0, n)"),
]


@pytest.mark.parametrize("wrong, message", WRONG_MULTIPLIER)
def test_multiplier_mistakes_are_named(wrong, message) -> None:
    result = ex.check_fixed_point_multiplier(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_multiplier_accepts_tensors() -> None:
    def as_tensors(m):
        m0, n = sol.fixed_point_multiplier(m)
        return torch.tensor(m0), torch.tensor(n)

    assert ex.check_fixed_point_multiplier(as_tensors).status == PASS


WRONG_BIAS = [
    (lambda b, sx, sw: torch.round(b / sx).int(), "input scale only"),
    (lambda b, sx, sw: torch.round(b / sw).int(), "weight scale only"),
    (lambda b, sx, sw: (b.double() / (sx * sw.double())).int(), "truncated"),
    (lambda b, sx, sw: torch.round(b * sx * sw).int(), "multiplied by the scales"),
    (lambda b, sx, sw: torch.round(b.double() / (sx * sw.double())), "dtype is torch.float64"),
    (lambda b, sx, sw: torch.round(b / (sx * sw)).int()[:3], "shape"),
    (lambda b, sx, sw: torch.round(b / (sx * sw)).int() + 2, "should give"),
]


@pytest.mark.parametrize("wrong, message", WRONG_BIAS)
def test_bias_mistakes_are_named(wrong, message) -> None:
    result = ex.check_int32_bias(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_bias_in_float32_arithmetic_passes() -> None:
    """The check's inputs stay clear of ties, so float32 arithmetic is good enough."""
    result = ex.check_int32_bias(lambda b, sx, sw: torch.round(b / (sx * sw)).to(torch.int32))
    assert result.status == PASS, result.message


WRONG_DEQUANTIZE = [
    (lambda q, s, z: s[:, None] * q + z[:, None], "still the bug"),
    (lambda q, s, z: s[:, None] * q - z[:, None], "after scaling"),
    (lambda q, s, z: s[:, None] * (q + z[:, None]), "adds the zero point"),
    (lambda q, s, z: s[:, None] * q, "ignores the zero point"),
    (lambda q, s, z: s * (q - z), "along the last dimension"),
    (lambda q, s, z: q - z[:, None], "float tensor"),
    (lambda q, s, z: s[:, None] * (q - z[:, None]) + 1, "should give"),
]


@pytest.mark.parametrize("wrong, message", WRONG_DEQUANTIZE)
def test_dequantize_mistakes_are_named(wrong, message) -> None:
    result = ex.check_dequantize_per_channel(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_dequantize_accepts_expanded_form() -> None:
    result = ex.check_dequantize_per_channel(
        lambda q, s, z: s[:, None] * q.double() - (s * z)[:, None]
    )
    assert result.status == PASS, result.message
