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


def test_a_choice_by_top1_agreement_is_named_not_called_the_worst(trained_digits) -> None:
    # the premise: at 8 bits every candidate keeps the class of all 128 images, so
    # top-1 cannot rank them; the first of the tie (99.0) is also the worst by MSE
    model, data = trained_digits
    calib = data.calibration_batches(2, 32, seed=ex.SEED + 52)
    gen = torch.Generator().manual_seed(ex.SEED + 52)
    x_check = data.x_train[torch.randperm(len(data.x_train), generator=gen)[:128]]
    percentiles = [99.0, 99.9, 99.99, 100.0]
    agreements = ex.top1_agreements(model, calib, x_check, percentiles, 8)
    assert len(set(agreements)) == 1
    errors = ex.logit_errors(model, calib, x_check, percentiles, 8)
    assert max(errors) == errors[0]

    def by_top1(model, calib, x, ps, bits):
        found = ex.top1_agreements(model, calib, x, ps, bits)
        return ps[found.index(max(found))]

    def worst(model, calib, x, ps, bits):
        found = ex.logit_errors(model, calib, x, ps, bits)
        return ps[found.index(max(found))]

    message = ex.check_choose_percentile(by_top1, model, data).message
    assert "top-1 agreement" in message and "worst" not in message
    message = ex.check_choose_percentile(worst, model, data).message
    assert "*worst* percentile" in message and "top-1" not in message
