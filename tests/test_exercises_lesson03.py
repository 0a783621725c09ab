"""The checks of notebook 03 agree with PyTorch and reject typical mistakes.

PyTorch's deprecated quantized ops serve here only as oracles: a function that
simply calls them must pass each check, which proves the checks' references
(built from the package) are PyTorch's numbers. The typical wrong answers and
right variants are in ``tests/wrong_answers.py``, run by test_exercise_contract.py.
"""

from __future__ import annotations

import pytest
import torch
from torch.ao.quantization import MinMaxObserver

from linquant_helpers import hardware
from linquant_helpers.exercises import lesson03 as ex
from linquant_helpers.exercises.feedback import PASS
from linquant_helpers.hardware import ADD_THEN_ROUND, ROUND_THEN_ADD

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*quantized tensor creation functions.*:UserWarning"
)


def torch_quantize(x, scale, zero_point, dtype):
    return torch.quantize_per_tensor(x, scale, zero_point, dtype).int_repr()


def torch_fake_quantize(x, scale, zero_point, quant_min, quant_max):
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)


def torch_observer(x, dtype, symmetric):
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    observer = MinMaxObserver(dtype=dtype, qscheme=qscheme)
    observer(x)
    scale, zero_point = observer.calculate_qparams()
    return scale, zero_point


ORACLES = [
    (ex.check_quantize_like_torch, torch_quantize),
    (ex.check_fake_quantize_like_torch, torch_fake_quantize),
    (ex.check_minmax_observer_qparams, torch_observer),
]


@pytest.mark.parametrize("check, oracle", ORACLES)
@pytest.mark.parametrize("seed", [ex.SEED, 0, 5])
def test_pytorch_itself_passes(check, oracle, seed) -> None:
    result = check(oracle, seed=seed)
    assert result.status == PASS, result.message


def test_the_tie_of_the_notebook() -> None:
    # x = 0.25, scale = 0.5, zero_point = 1: 0.25 / 0.5 = 0.5 is an exact tie.
    x = torch.tensor([0.25])
    # round(0.5 + 1) = 2 where this PyTorch adds first, round(0.5) + 1 = 1 where it rounds first
    expected = {ADD_THEN_ROUND: 2, ROUND_THEN_ADD: 1}[hardware.zero_point_rounding_order()]
    assert torch_quantize(x, 0.5, 1, torch.quint8).item() == expected
    assert torch_fake_quantize(x, 0.5, 1, 0, 255).item() == 0.0  # (round(0.5) + 1 - 1) * 0.5


def test_signed_codes() -> None:
    assert ex.signed_codes(torch.qint8) and not ex.signed_codes(torch.quint8)
    with pytest.raises(ValueError, match="torch.quint8 or torch.qint8"):
        ex.signed_codes(torch.int8)


def _add_first(x, scale, zero_point, dtype):
    qmin, qmax = (-128, 127) if dtype == torch.qint8 else (0, 255)
    return torch.round(x / scale + zero_point).clamp(qmin, qmax).to(torch.int32)


def _round_first(x, scale, zero_point, dtype):
    qmin, qmax = (-128, 127) if dtype == torch.qint8 else (0, 255)
    return (torch.round(x / scale) + zero_point).clamp(qmin, qmax).to(torch.int32)


def test_quantize_like_torch_wants_this_pytorchs_order() -> None:
    """The right answer is the order this PyTorch uses (x86: added first up to 2.13, rounded
    first from 2.14); the other order fails with a diagnosis naming the right one."""
    from solutions import lesson03 as sol

    order = hardware.zero_point_rounding_order()
    adds_first = order == ADD_THEN_ROUND
    right, wrong = (_add_first, _round_first) if adds_first else (_round_first, _add_first)
    assert ex.check_quantize_like_torch(right).status == PASS
    assert ex.check_quantize_like_torch(sol.quantize_like_torch).status == PASS
    result = ex.check_quantize_like_torch(wrong)
    assert result.status == "FAIL"
    expect = {
        ADD_THEN_ROUND: "add the zero point before rounding",
        ROUND_THEN_ADD: "it rounds x / scale first",
    }[order]
    assert expect in result.message and "zero_point_rounding_order()" in result.message


@pytest.mark.parametrize("order", [ADD_THEN_ROUND, ROUND_THEN_ADD])
def test_quantize_like_torch_follows_either_order(order) -> None:
    """On a PyTorch of either order (assumed), the solution passes, the other order fails,
    and every typical mistake of the catalogue, made in that order, gets its diagnosis."""
    from wrong_answers import L3Q_ANY_ORDER

    from solutions import lesson03 as sol

    with hardware.assume_zero_point_rounding_order(order):
        assert ex.check_quantize_like_torch(sol.quantize_like_torch).status == PASS
        right = _add_first if order == ADD_THEN_ROUND else _round_first
        wrong = _round_first if order == ADD_THEN_ROUND else _add_first
        assert ex.check_quantize_like_torch(right).status == PASS
        assert ex.check_quantize_like_torch(wrong).status == "FAIL"
        for answer, mistake, expect in L3Q_ANY_ORDER:
            result = ex.check_quantize_like_torch(answer)
            assert result.status == "FAIL" and expect in result.message, (mistake, result)
