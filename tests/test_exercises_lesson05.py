"""The checks of notebook 05 reject typical mistakes and name them.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import time

import torch

from linquant_helpers.exercises import lesson05 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS
from solutions import lesson05 as sol


def test_clip_ratio_reference_is_below_one() -> None:
    # the check's premise: on these distributions clipping helps
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    ratios = torch.linspace(0.05, 1.0, 40)
    assert float(ratios[int(ex.clip_errors(x, 3, ratios).argmin())]) < 0.8


# ---------------------------------------------------------------- choose a percentile


def test_percentile_check_is_fast_and_separates_the_bit_widths(trained_digits) -> None:
    # 8-bit activations prefer no clipping, 4-bit ones some: a fixed guess fails one of them
    model, data = trained_digits
    start = time.perf_counter()
    result = ex.check_choose_percentile(sol.choose_percentile, model, data)
    assert result.status == PASS, result.message
    assert time.perf_counter() - start < 10  # was about 30 s; about 1-2 s on a busy 2-core CPU
    answers = {
        ex.check_choose_percentile(lambda *a, p=p: p, model, data).status for p in (99.9, 100.0)
    }
    assert answers == {FAIL}
