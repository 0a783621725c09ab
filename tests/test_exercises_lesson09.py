"""The checks of notebook 09 reject typical mistakes and name them.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import torch

from linquant_helpers.exercises import lesson09 as ex
from linquant_helpers.exercises.feedback import PASS
from linquant_helpers.formats import fp4_e2m1_grid
from linquant_helpers.gptq import obq_update
from solutions import lesson09 as sol


def test_decode_e2m1_solution_by_hand() -> None:
    assert sol.decode_e2m1(torch.tensor([1, 3, 5, 7, 9, 15])).tolist() == [0.5, 1.5, 3, 6, -0.5, -6]
    assert torch.equal(sol.decode_e2m1(torch.arange(16)).double(), fp4_e2m1_grid())


def test_obq_update_by_hand() -> None:
    # H^-1 = [[2, 1], [1, 4]]: column 0 errs by 0.5, so column 1 moves by -0.5 / 2 * 1.
    w, q = torch.tensor([[1.5, 1.0]]), torch.tensor([1.0])
    h_inv = torch.tensor([[2.0, 1.0], [1.0, 4.0]])
    assert obq_update(w, q, h_inv).tolist() == [[0.75]]
    assert sol.obq_update(w, q, h_inv).tolist() == [[0.75]]


def test_obq_check_does_not_trust_inputs_the_answer_may_change() -> None:
    def in_place(w, q, h_inv):
        out = sol.obq_update(w, q, h_inv)
        w.mul_(2.0)
        h_inv.mul_(3.0)
        return out

    assert ex.check_obq_update(in_place).status == PASS


def test_gptq_columns_solution_by_hand() -> None:
    # U = [[2, 1], [0, 1]]: column 0 rounds 1.4 -> 1, e = 0.4 / 2, column 1 moves by -0.2.
    w, u = torch.tensor([[1.4, 0.6]], dtype=torch.float64), torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    got = sol.gptq_columns(w, u.double(), torch.round)
    assert got.tolist() == [[1.0, 0.0]]  # 0.6 - 0.2 = 0.4 rounds to 0; alone, 0.6 rounds to 1
    assert w.tolist() == [[1.4, 0.6]]  # the input is not modified


def test_gptq_columns_check_passes_the_solution_and_names_no_feedback() -> None:
    assert ex.check_gptq_columns(sol.gptq_columns).status == PASS
    result = ex.check_gptq_columns(lambda w, u, rtn: rtn(w))
    assert result.status != PASS and "absorb its error" in result.message
