"""The checks of notebook 08 reject typical mistakes and name them.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

from linquant_helpers.exercises import lesson08 as ex
from linquant_helpers.exercises.feedback import PASS
from solutions import lesson08 as sol


def test_packed_nbytes_by_hand() -> None:
    # A (384, 1536) FC2 weight at 4 bits, groups of 64: 294912 bytes of codes, 9216 scales.
    assert sol.packed_nbytes(384, 1536, 4, 64) == 384 * 1536 // 2 + 4 * 9216 == 331776


def test_smoothquant_check_does_not_mutate_inputs_it_compares_with() -> None:
    # A solution that scales its inputs in place must not fool the check.
    def in_place(act_absmax, weight, alpha):
        s = sol.smoothquant_scales(act_absmax, weight, alpha)
        act_absmax.mul_(2.0)
        weight.mul_(3.0)
        return s

    assert ex.check_smoothquant_scales(in_place).status == PASS
