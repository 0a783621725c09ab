"""The checks of notebook 04: their data holds the traps that separate the typical mistakes.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import torch

from linquant_helpers.exercises import lesson04 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS
from solutions import lesson04 as sol


def test_zero_point_near_a_tie_accepts_either_neighbour() -> None:
    # float64 arithmetic may round a near-tie zero point the other way: both codes are right
    def float64(w, bits):
        rows = w.double().flatten(1)
        lo, hi = rows.amin(dim=1).clamp(max=0), rows.amax(dim=1).clamp(min=0)
        scale = (hi - lo) / (2**bits - 1)
        return scale.float(), -torch.round(lo / scale)

    assert ex.check_per_channel_qparams(float64).status == PASS


def test_group_check_needs_round_half_to_even() -> None:
    # the solution's rounding is torch.round; the same code with floor(v + 0.5) must fail
    def half_up(w, bits, group_size):
        qmax = 2 ** (bits - 1) - 1
        groups = w.reshape(w.shape[0], -1, group_size)
        scale = groups.abs().amax(dim=-1, keepdim=True) / qmax
        return (torch.floor(groups / scale + 0.5).clamp(-qmax, qmax) * scale).reshape(w.shape)

    assert ex.check_group_fake_quantize(sol.group_fake_quantize).status == PASS
    assert ex.check_group_fake_quantize(half_up).status == FAIL
