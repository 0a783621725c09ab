"""The checks of notebook 11 test what they claim and name the mistakes.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import pytest
import torch

from linquant_helpers.block_scaled import e8m0_exponent
from linquant_helpers.exercises import lesson11 as ex
from linquant_helpers.exercises.feedback import PASS
from solutions import lesson11 as sol


def test_decode_solution_is_torchs_float8_e4m3fn() -> None:
    codes = torch.arange(256)
    ref = codes.to(torch.uint8).view(torch.float8_e4m3fn).double()
    got = sol.decode_e4m3(codes)
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    assert torch.equal(got[~torch.isnan(ref)], ref[~torch.isnan(ref)])


def test_mx_blocks_hold_the_cases_that_tell_mistakes_apart() -> None:
    x = ex._mx_blocks(torch.Generator().manual_seed(0))
    amax = x.abs().amax(-1)
    assert x[0].min() < 0 and amax[0] == -x[0].min()
    assert amax[1].item() == float(torch.nextafter(torch.tensor(8.0), torch.tensor(0.0)))
    assert amax[1].log2().floor() == 3 and amax[1].double().log2().floor() == 2  # float32 rounds up
    assert amax[2] == 4.0 and amax[3] == 0 and amax[4] < 2.0**-126


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mx_solution_is_the_package_rule(seed: int) -> None:
    x = ex._mx_blocks(torch.Generator().manual_seed(seed))
    for emax, dtype in ((2, torch.float4_e2m1fn_x2), (8, torch.float8_e4m3fn)):
        expected = e8m0_exponent(x.abs().amax(-1), dtype)
        assert torch.equal(sol.mx_scale_exponent(x, emax).to(torch.int32), expected)


def test_nvfp4_inputs_keep_every_block_scale_a_normal_e4m3() -> None:
    """So that E4M3's 2^-6 floor (torchao clamps there) never decides an answer."""
    for seed in range(5):
        x = ex._nvfp4_input(torch.Generator().manual_seed(seed))
        t, s = sol.nvfp4_scales(x)
        exact = x.reshape(x.shape[0], -1, 16).abs().amax(-1) / 6 / t
        assert exact.min() > 2.0**-6 and abs(exact.max().item() - 448) < 1e-3


def test_checks_pass_their_solutions_on_other_seeds() -> None:
    for seed in (0, 1, 7):
        assert ex.check_decode_e4m3(sol.decode_e4m3, seed=seed).status == PASS
        assert ex.check_mx_scale_exponent(sol.mx_scale_exponent, seed=seed).status == PASS
        assert ex.check_nvfp4_scales(sol.nvfp4_scales, seed=seed).status == PASS
