"""The checks of notebook 07 reject typical mistakes and name them.

That every check passes its reference solution, reports a placeholder as TODO
and code that raises as FAIL is tested for every lesson in test_exercise_contract.py.
"""

from __future__ import annotations

import math

import pytest

from linquant_helpers.exercises import lesson07 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS
from solutions import lesson07 as sol


def test_packed_nbytes_by_hand() -> None:
    # A (384, 1536) FC2 weight at 4 bits, groups of 64: 294912 bytes of codes, 9216 scales.
    assert sol.packed_nbytes(384, 1536, 4, 64) == 384 * 1536 // 2 + 4 * 9216 == 331776


def _codes(o, i, b):
    return math.ceil(o * i * b / 8)


WRONG_PACKED = [
    (lambda o, i, b, g: _codes(o, i, b), "but not the scales"),
    (lambda o, i, b, g: o * i + 4 * (o * i // g), "one code per byte"),
    (lambda o, i, b, g: _codes(o, i, b) + 4 * o, "one scale per output channel"),
    (lambda o, i, b, g: _codes(o, i, b) + 2 * (o * i // g), "2 bytes per scale"),
    (lambda o, i, b, g: o * i * b + 4 * (o * i // g), "in bits, not bytes"),
    (lambda o, i, b, g: _codes(o, i, b) + 4 * (o * i // g) + 1, "expected"),
    (lambda o, i, b, g: "many", "return a number of bytes"),
]


@pytest.mark.parametrize("wrong, message", WRONG_PACKED)
def test_packed_nbytes_mistakes_are_named(wrong, message) -> None:
    result = ex.check_packed_nbytes(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def _smooth(*, act_power=lambda a: a, w_power=lambda a: 1 - a, dim=0, absolute=True, inv=False):
    def smoothquant_scales(act_absmax, weight, alpha):
        w = (weight.abs() if absolute else weight).amax(dim=dim)
        s = act_absmax.double() ** act_power(alpha) / w.double() ** w_power(alpha)
        return (1 / s if inv else s).float()

    return smoothquant_scales


WRONG_SMOOTH = [
    (_smooth(act_power=lambda a: 1 - a, w_power=lambda a: a), "exponents are swapped"),
    (_smooth(inv=True), "s is inverted"),
    (_smooth(act_power=lambda a: 0.5, w_power=lambda a: 0.5), "alpha is ignored"),
    (_smooth(absolute=False), "not of W"),
    (_smooth(dim=1), "take max |W| over dimension 0"),
    (lambda a, w, alpha: a**alpha / w.abs().amax(dim=1)[: len(a)] ** (1 - alpha), "expected s"),
    (lambda a, w, alpha: a**alpha, "expected s"),
    (lambda a, w, alpha: (a**alpha)[:-1], "shape"),
    (lambda a, w, alpha: 0.5, "must return a torch.Tensor"),
]


@pytest.mark.parametrize("wrong, message", WRONG_SMOOTH)
def test_smoothquant_mistakes_are_named(wrong, message) -> None:
    result = ex.check_smoothquant_scales(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_smoothquant_check_does_not_mutate_inputs_it_compares_with() -> None:
    # A solution that scales its inputs in place must not fool the check.
    def in_place(act_absmax, weight, alpha):
        s = sol.smoothquant_scales(act_absmax, weight, alpha)
        act_absmax.mul_(2.0)
        weight.mul_(3.0)
        return s

    assert ex.check_smoothquant_scales(in_place).status == PASS
