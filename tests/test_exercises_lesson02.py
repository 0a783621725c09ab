"""The checks of notebook 02 reject typical mistakes and name them.

That every check passes its reference solution, reports a placeholder as TODO
and code that raises as FAIL is tested for every lesson in test_exercise_contract.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from linquant_helpers import choose_qparams, fake_quantize, sqnr_db
from linquant_helpers.exercises import lesson02 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS
from solutions import lesson02 as sol


def _asym(*, steps=lambda b: 2**b - 1, widen=True, rounding=round, sign=1):
    def asymmetric_qparams(x_min, x_max, bits):
        if widen:
            x_min, x_max = min(x_min, 0.0), max(x_max, 0.0)
        scale = (x_max - x_min) / steps(bits)
        zero_point = rounding(-sign * x_min / scale)
        return scale, min(max(zero_point, 0), 2**bits - 1)

    return asymmetric_qparams


WRONG_ASYMMETRIC = [
    (_asym(steps=lambda b: 2**b), "divides by 2^bits"),
    (_asym(widen=False), "widened to include 0"),
    (_asym(rounding=lambda v: v), "zero_point must be an integer in [0, "),
    (_asym(rounding=math.floor), "expected zero_point"),
    (_asym(sign=-1), "expected zero_point"),
    (lambda lo, hi, b: (hi - lo) / (2**b - 1), "return a pair"),
    (lambda lo, hi, b: ((hi - lo) / 255, "128"), "zero_point must be a number"),
    (lambda lo, hi, b: ((hi - lo) / (2**b - 1), 300), "zero_point must be an integer in [0, "),
]


@pytest.mark.parametrize("wrong, message", WRONG_ASYMMETRIC)
def test_asymmetric_mistakes_are_named(wrong, message) -> None:
    result = ex.check_asymmetric_qparams(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_unrounded_zero_point_message_quotes_the_value() -> None:
    message = ex.check_asymmetric_qparams(_asym(rounding=lambda v: v)).message
    assert message.startswith("zero_point must be an integer in [0, ") and "; got " in message


def test_asymmetric_accepts_tensors() -> None:
    def with_tensors(x_min, x_max, bits):
        s, z = sol.asymmetric_qparams(x_min, x_max, bits)
        return torch.tensor(s), torch.tensor(z)

    assert ex.check_asymmetric_qparams(with_tensors).status == PASS


WRONG_SYMMETRIC = [
    (lambda m, b, n: m / 2 ** (b - 1), "divides by 2^(bits-1)"),
    (lambda m, b, n: m / (2 ** (b - 1) - 1), "the narrow range's half width"),
    (lambda m, b, n: m / (2 ** (b - 1) - 0.5), "the full range's half width"),
    (lambda m, b, n: m / (2**b - 1), "2 * max_abs wide"),
    (lambda m, b, n: m / 100, "expected scale"),
    (lambda m, b, n: "0.1", "scale must be a number"),
]


@pytest.mark.parametrize("wrong, message", WRONG_SYMMETRIC)
def test_symmetric_mistakes_are_named(wrong, message) -> None:
    result = ex.check_symmetric_scale(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_full_range_symmetric_scale_is_127_5_at_8_bits() -> None:
    # The number the notebook teaches, from an independent float64 formula.
    result = ex.check_symmetric_scale(lambda m, b, n: m / ((2**b - 1 - int(n)) / 2))
    assert result.status == PASS, result.message


WRONG_PICKS = [
    (lambda x, b: "asymmetric", "expected 'symmetric'"),
    (lambda x, b: "symmetric", "expected 'asymmetric'"),
    (lambda x, b: "asymmetric" if x.min() >= 0 else "symmetric", "GELU-like"),
    (lambda x, b: "sym", "return 'symmetric' or 'asymmetric'"),
]


@pytest.mark.parametrize("wrong, message", WRONG_PICKS)
def test_pick_scheme_mistakes_are_named(wrong, message) -> None:
    result = ex.check_pick_scheme(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_scheme_cases_are_far_from_the_threshold() -> None:
    # Each case must be clearly on one side of 1 dB, so float noise cannot flip the answer.
    gen = torch.Generator().manual_seed(ex.SEED + 12)
    for x in ex._scheme_cases(gen).values():
        for bits in (8, 4):
            assert abs(ex.scheme_gain_db(x, bits) - ex.MIN_GAIN_DB) > 0.3


def test_scheme_gain_measures_both_schemes() -> None:
    x = torch.relu(torch.randn(1000, generator=torch.Generator().manual_seed(0)))
    s, z = choose_qparams(x, 8, symmetric=True)
    sym = sqnr_db(x, fake_quantize(x, s, z, 8))
    s, z = choose_qparams(x, 8, signed=False)
    asym = sqnr_db(x, fake_quantize(x, s, z, 8, signed=False))
    assert ex.scheme_gain_db(x, 8) == pytest.approx(asym - sym)
    assert 5.0 < asym - sym < 7.0  # about one bit: symmetric leaves half its codes unused
