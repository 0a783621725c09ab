"""The checks of notebook 06: the bias check's ties.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import torch

from linquant_helpers import quantize_bias


def test_bias_ties_are_exact() -> None:
    halves = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    s_w = 2.0 ** -torch.tensor([7.0, 8.0, 9.0, 7.0, 10.0, 8.0])
    bias = halves * 2**-5 * s_w
    assert (bias.double() / (2**-5 * s_w.double())).tolist() == halves.tolist()
    assert quantize_bias(bias, 2**-5, s_w).tolist() == [0, 2, 2, 0, -2, -2]
