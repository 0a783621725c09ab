"""The checks of notebook 10 test what they claim and name the mistakes.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import pytest
import torch

from linquant_helpers import gguf_blocks as gb
from linquant_helpers.exercises import lesson10 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS
from solutions import lesson10 as sol


def test_q8_0_inputs_hold_exact_ties_a_negative_extreme_and_a_zero_block() -> None:
    x = ex._q8_0_input(torch.Generator().manual_seed(0))
    assert x[0, :4].tolist() == [127.0, 2.5, -2.5, 6.5]  # d = 1: exact ties
    second = x[0, 32:64]
    assert second.min() < 0 and second.abs().max() == -second.min()
    assert not x[0, 64:96].any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solution_is_the_package_rule(seed: int) -> None:
    x = ex._q8_0_input(torch.Generator().manual_seed(seed))
    scale, codes = sol.q8_0_quantize(x)
    assert torch.equal(scale, gb.quantize_q8_0(x)[0]) and torch.equal(codes, gb.quantize_q8_0(x)[1])


def test_x_over_d_instead_of_x_times_inverse_passes_on_the_checks_seeds() -> None:
    # x / d and x * (1 / d) can differ in the last bit; the check's inputs must not
    # turn that into a different code, or a right answer would fail.
    def divides(x):
        blocks = x.reshape(x.shape[0], -1, 32)
        d = blocks.abs().amax(-1, keepdim=True) / 127
        y = torch.where(d == 0, torch.zeros_like(blocks), blocks / d)
        return d.squeeze(-1).half(), gb.round_half_away(y).to(torch.int8).reshape(x.shape)

    for seed in (2024, 0, 1, 3, 5, 7):
        assert ex.check_q8_0_quantize(divides, seed=seed).status == PASS


def test_block_size_check_rejects_swapped_meaning() -> None:
    def n_blocks(shape, axis, group_size):  # per channel: the count of blocks, not their shape
        if axis is None:
            return sol.block_size(shape, axis, group_size)
        axis %= len(shape)
        return tuple(n if d == axis else 1 for d, n in enumerate(shape))

    result = ex.check_block_size(n_blocks)
    assert result.status == FAIL and "shape of one block" in result.message


def _unguarded(x):
    blocks = x.reshape(x.shape[0], -1, 32)
    d = blocks.abs().amax(-1, keepdim=True) / 127
    return d.squeeze(-1).half(), gb.round_half_away(blocks * (1 / d)).to(torch.int8).reshape(
        x.shape
    )


def test_a_missing_zero_guard_fails_even_where_nan_casts_to_zero() -> None:
    # Without the guard the all-zero block's codes are NaN; cast to int8 they are
    # undefined (0 on x86, by chance), so the codes may look right: the check must
    # see the NaN reach the cast, not rely on what the cast makes of it.
    result = ex.check_q8_0_quantize(_unguarded)
    assert result.status == FAIL and "guard the division by d" in result.message


def test_the_nan_watch_sees_a_numpy_cast_too() -> None:
    def via_numpy(x):
        scale, _ = _unguarded(x)
        blocks = x.reshape(x.shape[0], -1, 32)
        y = blocks * (1 / (blocks.abs().amax(-1, keepdim=True) / 127))
        codes = torch.from_numpy(gb.round_half_away(y).numpy().astype("int8"))
        return scale, codes.reshape(x.shape)

    result = ex.check_q8_0_quantize(via_numpy)
    assert result.status == FAIL and "guard the division by d" in result.message


def test_the_nan_watch_allows_a_discarded_infinity() -> None:
    # torch.where(d == 0, 0, 1 / d) computes 1 / 0 = inf and throws it away: right.
    watch = ex._NonFiniteToInteger()
    x = ex._q8_0_input(torch.Generator().manual_seed(3))
    with watch:
        sol.q8_0_quantize(x)
    assert watch.ops == []
    with watch:
        _unguarded(x)
    assert watch.ops and "_to_copy" in watch.ops[0]
