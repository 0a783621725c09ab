"""The checks of notebook 02: the scheme rule's data straddles its threshold, messages quote values.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import pytest
import torch

from linquant_helpers import choose_qparams, fake_quantize, sqnr_db
from linquant_helpers.exercises import lesson02 as ex


def test_unrounded_zero_point_message_quotes_the_value() -> None:
    def unrounded(x_min, x_max, bits):
        scale = (max(x_max, 0.0) - min(x_min, 0.0)) / (2**bits - 1)
        return scale, -min(x_min, 0.0) / scale

    message = ex.check_asymmetric_qparams(unrounded).message
    assert message.startswith("zero_point must be an integer in [0, ") and "; got " in message


@pytest.mark.parametrize("seed", [ex.SEED, 0, 1, 3, 5, 7])
def test_scheme_cases_are_far_from_or_just_beside_the_threshold(seed) -> None:
    # Every case is clear of float noise (0.05 dB is far beyond what float32 vs float64 changes);
    # the near ones sit on both sides, within the margin: only a measurement decides them.
    cases = ex._scheme_cases(torch.Generator().manual_seed(seed + 12))
    gains = [ex.scheme_gain_db(x, bits) for _, x, bits in cases]
    far, near = gains[:10], gains[10:]
    assert all(abs(g - ex.MIN_GAIN_DB) > 0.05 for g in far)
    assert len(near) >= 6
    assert all(0.1 < abs(g - ex.MIN_GAIN_DB) < 0.45 for g in near), near
    assert any(g > ex.MIN_GAIN_DB for g in near) and any(g < ex.MIN_GAIN_DB for g in near)


def test_row_gains_equal_the_per_tensor_gain() -> None:
    rows = torch.randn(3, 500, generator=torch.Generator().manual_seed(0)) + torch.tensor(
        [[0.0], [0.7], [2.0]]
    )
    expected = [ex.scheme_gain_db(r, 4) for r in rows]
    assert ex._row_gains_db(rows, 4).tolist() == pytest.approx(expected, abs=1e-4)


def test_scheme_gain_measures_both_schemes() -> None:
    x = torch.relu(torch.randn(1000, generator=torch.Generator().manual_seed(0)))
    s, z = choose_qparams(x, 8, symmetric=True)
    sym = sqnr_db(x, fake_quantize(x, s, z, 8))
    s, z = choose_qparams(x, 8, signed=False)
    asym = sqnr_db(x, fake_quantize(x, s, z, 8, signed=False))
    assert ex.scheme_gain_db(x, 8) == pytest.approx(asym - sym)
    assert 5.0 < asym - sym < 7.0  # about one bit: symmetric leaves half its codes unused
