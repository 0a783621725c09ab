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

from linquant_helpers.exercises import lesson03 as ex
from linquant_helpers.exercises.feedback import PASS

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
    assert torch_quantize(x, 0.5, 1, torch.quint8).item() == 2  # round(0.5 + 1) = 2
    assert torch_fake_quantize(x, 0.5, 1, 0, 255).item() == 0.0  # (round(0.5) + 1 - 1) * 0.5


def test_signed_codes() -> None:
    assert ex.signed_codes(torch.qint8) and not ex.signed_codes(torch.quint8)
    with pytest.raises(ValueError, match="torch.quint8 or torch.qint8"):
        ex.signed_codes(torch.int8)


def test_quantize_like_torch_follows_a_pytorch_that_rounds_first(monkeypatch) -> None:
    """On a build whose quantize_per_tensor rounds before adding the zero point (reported
    on some ARM builds), the right answer is the other order, and the check says so."""
    from linquant_helpers import hardware
    from solutions import lesson03 as sol

    monkeypatch.setattr(hardware, "zero_point_rounding_order", lambda: "round, then add")
    monkeypatch.setattr(sol, "zero_point_rounding_order", lambda: "round, then add")
    assert ex.check_quantize_like_torch(sol.quantize_like_torch).status == "PASS"

    def add_first(x, scale, zero_point, dtype):
        qmin, qmax = (-128, 127) if dtype == torch.qint8 else (0, 255)
        return torch.round(x / scale + zero_point).clamp(qmin, qmax).to(torch.int32)

    result = ex.check_quantize_like_torch(add_first)
    assert result.status == "FAIL" and "rounds x / scale first" in result.message
