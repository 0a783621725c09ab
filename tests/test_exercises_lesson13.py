"""The checks of notebook 13 test what they claim and name the mistakes.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import pytest
import torch

from linquant_helpers import kquants
from linquant_helpers.exercises import lesson13 as ex
from solutions import lesson13 as sol


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_inputs_set_and_clear_the_top_bits(seed: int) -> None:
    packed, ls, lm = ex._packed_input(torch.Generator().manual_seed(seed))
    assert (ls[:, 4:] >= 16).any() and (ls[:, 4:] < 16).any()
    assert (lm[:, 4:] >= 32).any() and (lm[:, 4:] < 16).any()
    assert torch.equal(torch.stack(kquants.unpack_scale_min(packed)), torch.stack([ls, lm]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solutions_are_the_package_rules(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    packed, _, _ = ex._packed_input(gen)
    assert all(
        torch.equal(a, b.to(torch.int64))
        for a, b in zip(sol.unpack_scale_min(packed), kquants.unpack_scale_min(packed), strict=True)
    )
    x = ex._activations(gen)
    assert torch.allclose(sol.importance_matrix(x), kquants.importance_matrix(x), rtol=1e-6)


def test_each_unpack_mistake_gives_its_own_answer() -> None:
    packed, _, _ = ex._packed_input(torch.Generator().manual_seed(0))
    answers = list(ex._unpack_mistakes(packed).values())
    right = torch.stack(kquants.unpack_scale_min(packed)).to(torch.int64)
    assert all(not torch.equal(a, right) for a in answers)
    assert all(not torch.equal(a, b) for i, a in enumerate(answers) for b in answers[i + 1 :])
