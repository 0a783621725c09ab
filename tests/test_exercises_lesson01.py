"""The checks of notebook 01: their data has the traps, and their messages show the numbers.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``, which also
tests the reference solutions, placeholders and raising code.
"""

from __future__ import annotations

import torch

from linquant_helpers.exercises import lesson01 as ex


def _quantize(rounding=torch.round, *, clamp=True, dtype=torch.int32, first=False):
    def linear_quantize(x, scale, zp, qmin, qmax):
        q = rounding(x / scale) + zp if first else rounding(x / scale + zp)
        return (q.clamp(qmin, qmax) if clamp else q).to(dtype)

    return linear_quantize


def test_wrapped_message_shows_the_wrapped_numbers() -> None:
    result = ex.check_linear_quantize(_quantize(clamp=False, dtype=torch.int8))
    assert "wrapped around" in result.message and "clamp to [qmin, qmax] first" in result.message


def test_zero_point_after_rounding_is_caught_at_a_tie_with_an_odd_zero_point() -> None:
    # The first tie case (zero point 0) cannot tell the orders apart; the second (7) does.
    message = ex.check_linear_quantize(_quantize(first=True)).message
    assert "adds the zero point after rounding" in message
    assert "x / scale + zero_point = 7.5 gave 7, round gives 8" in message


def test_uint8_wrap_message_has_the_example() -> None:
    message = ex.check_linear_dequantize(lambda q, s, z: s * (q - z)).message
    # One of the codes below 128: the message states the wrapped and the true difference.
    assert "instead of -" in message and "q.float() - zero_point" in message
