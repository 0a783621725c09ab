"""The checks of notebook 12 reject typical mistakes and name them.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import scipy.linalg
import torch

from linquant_helpers.exercises import lesson12 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS
from solutions import lesson12 as sol


def test_hadamard_solution_against_scipy() -> None:
    x = torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = torch.tensor(scipy.linalg.hadamard(32), dtype=torch.float64)
    torch.testing.assert_close(sol.hadamard_transform(x), x @ h / 32**0.5, rtol=1e-12, atol=1e-12)


def test_outlier_columns_solution_by_hand() -> None:
    x = torch.tensor([[[0.5, -6.0, 5.9], [1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [7.0, 0.0, 0.0]]])
    assert sol.outlier_columns(x, 6.0).tolist() == [True, True, False]


def test_checks_do_not_trust_inputs_the_answer_may_change() -> None:
    def in_place(x):
        out = sol.hadamard_transform(x.clone())
        x.mul_(3.0)
        return out

    assert ex.check_hadamard_transform(in_place).status == PASS

    def zeroes_input(x, t):
        out = sol.outlier_columns(x, t)
        x.zero_()
        return out

    assert ex.check_outlier_columns(zeroes_input).status == PASS


def test_a_butterfly_over_the_first_dimension_fails() -> None:
    def first_dim(x):
        return sol.hadamard_transform(x.transpose(0, -1)).transpose(0, -1)

    assert ex.check_hadamard_transform(first_dim).status == FAIL
