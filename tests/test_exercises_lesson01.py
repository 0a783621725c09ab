"""The checks of notebook 01 reject typical mistakes and name them.

That every check passes its reference solution, reports a placeholder as TODO
and code that raises as FAIL is tested for every lesson in test_exercise_contract.py.
"""

from __future__ import annotations

import pytest
import torch

from linquant_helpers.exercises import lesson01 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS


def _q(rounding, *, zero_point="add", clamp=True, dtype=torch.int32):
    """A linear_quantize with one deliberate mistake."""

    def linear_quantize(x, scale, zp, qmin, qmax):
        v = {
            "add": x / scale + zp,
            "subtract": x / scale - zp,
            "before_divide": (x + zp) / scale,
            "times_scale": x * scale + zp,
            "missing": x / scale,
        }[zero_point]
        q = rounding(v)
        if clamp:
            q = q.clamp(qmin, qmax)
        return q.to(dtype)

    return linear_quantize


WRONG_QUANTIZE = [
    (_q(torch.floor), "floor instead of round"),
    (_q(torch.trunc), "truncation toward zero"),
    (_q(lambda v: v.to(torch.int64)), "truncation toward zero"),
    (_q(torch.ceil), "ceil instead of round"),
    (_q(lambda v: torch.floor(v + 0.5)), "ties are rounded up"),
    (_q(lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5)), "rounded away from zero"),
    (_q(torch.round, zero_point="missing"), "zero point is missing"),
    (_q(torch.round, zero_point="subtract"), "zero point is subtracted"),
    (_q(torch.round, zero_point="before_divide"), "added to x before dividing"),
    (_q(torch.round, zero_point="times_scale"), "multiplied by the scale"),
    (_q(torch.round, clamp=False), "are not clamped"),
    (_q(torch.round, dtype=torch.float32), "dtype is torch.float32"),
    (_q(torch.round, clamp=False, dtype=torch.uint8), "wrapped around"),
    (_q(torch.round, dtype=torch.uint8), "wrapped around"),
    (lambda x, s, z, lo, hi: torch.round(x / s + z).clamp(0, 255).int(), "codes [-128, 127]"),
    (lambda x, s, z, lo, hi: [0] * x.numel(), "must return a torch.Tensor"),
    (lambda x, s, z, lo, hi: torch.zeros(3, dtype=torch.int32), "shape"),
]


@pytest.mark.parametrize("wrong, message", WRONG_QUANTIZE)
def test_quantize_mistakes_are_named(wrong, message) -> None:
    result = ex.check_linear_quantize(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_wrapped_message_shows_the_wrapped_numbers() -> None:
    result = ex.check_linear_quantize(_q(torch.round, clamp=False, dtype=torch.int8))
    assert "wrapped around" in result.message and "clamp to [qmin, qmax] first" in result.message


WRONG_DEQUANTIZE = [
    (lambda q, s, z: s * q.float() + z, "scale * q + zero_point"),
    (lambda q, s, z: s * q.float() - z, "after scaling"),
    (lambda q, s, z: s * (q.float() + z), "adds the zero point"),
    (lambda q, s, z: s * q.float(), "ignores the zero point"),
    (lambda q, s, z: (q.float() - z) / s, "divides by the scale"),
    (lambda q, s, z: s * (q - z), "wrapped around in torch.uint8"),
    (lambda q, s, z: (q - z).long(), "float tensor"),
]


@pytest.mark.parametrize("wrong, message", WRONG_DEQUANTIZE)
def test_dequantize_mistakes_are_named(wrong, message) -> None:
    result = ex.check_linear_dequantize(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_uint8_wrap_message_has_the_example() -> None:
    message = ex.check_linear_dequantize(lambda q, s, z: s * (q - z)).message
    # One of the codes below 128: the message states the wrapped and the true difference.
    assert "instead of -" in message and "q.float() - zero_point" in message


def test_dequantize_accepts_equivalent_float_arithmetic() -> None:
    # scale * q - scale * zero_point rounds differently but is a correct answer.
    result = ex.check_linear_dequantize(lambda q, s, z: s * q.double() - s * z)
    assert result.status == PASS, result.message


WRONG_BOUND = [
    (lambda x, s, z, lo, hi: torch.full_like(x, s / 2), "not a bound"),
    (
        lambda x, s, z, lo, hi: torch.where(
            (x < s * (lo - z)) | (x > s * (hi - z)),
            torch.clamp(s * (lo - z) - x, min=0) + torch.clamp(x - s * (hi - z), min=0),
            torch.full_like(x, s),
        ),
        "twice too loose",
    ),
    (lambda x, s, z, lo, hi: torch.full_like(x, 1e3), "expected a bound"),
    (lambda x, s, z, lo, hi: s / 2, "must return a torch.Tensor"),
]


@pytest.mark.parametrize("wrong, message", WRONG_BOUND)
def test_bound_mistakes_are_named(wrong, message) -> None:
    result = ex.check_round_trip_error_bound(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_bound_accepts_scale_over_two_within_half_a_step_beyond_the_range() -> None:
    def bound(x, s, z, qmin, qmax):
        lo, hi = s * (qmin - z), s * (qmax - z)
        beyond = torch.clamp(lo - x, min=0) + torch.clamp(x - hi, min=0)
        return torch.maximum(beyond, torch.full_like(x, s / 2))

    assert ex.check_round_trip_error_bound(bound).status == PASS
