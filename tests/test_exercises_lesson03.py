"""The checks of notebook 03 agree with PyTorch and reject typical mistakes.

PyTorch's deprecated quantized ops serve here only as oracles: a function that
simply calls them must pass each check, which proves the checks' references
(built from the package) are PyTorch's numbers. That every check passes its
reference solution, reports a placeholder as TODO and code that raises as FAIL
is tested for every lesson in test_exercise_contract.py.
"""

from __future__ import annotations

import pytest
import torch
from torch.ao.quantization import MinMaxObserver

from linquant_helpers.exercises import lesson03 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS
from solutions import lesson03 as sol

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


def _quantize_round_first(x, scale, zero_point, dtype):
    qmin, qmax = (-128, 127) if dtype == torch.qint8 else (0, 255)
    return (torch.round(x / scale) + zero_point).clamp(qmin, qmax).to(torch.int32)


WRONG_QUANTIZE = [
    (_quantize_round_first, "add the zero point before rounding"),
    (lambda x, s, z, d: torch.round(x / s + z).int(), "outside the codes of torch.quint8"),
    (lambda x, s, z, d: torch.round(x / s + z).clamp(-128, 127).int(), "outside the codes"),
    (lambda x, s, z, d: torch.round(x / s + z).clamp(0, 255), "dtype is torch.float32"),
    (
        lambda x, s, z, d: torch.floor(x / s + z).clamp(0, 255).int(),
        "torch.quantize_per_tensor gives",
    ),
]


@pytest.mark.parametrize("wrong, message", WRONG_QUANTIZE)
def test_quantize_mistakes_are_named(wrong, message) -> None:
    result = ex.check_quantize_like_torch(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def _fake_add_first(x, scale, zero_point, quant_min, quant_max):
    q = torch.round(x / scale + zero_point).clamp(quant_min, quant_max)
    return (q - zero_point) * scale


WRONG_FAKE = [
    (_fake_add_first, "it rounds x / scale first"),
    (lambda x, s, z, lo, hi: torch.round(x / s) * s, "are not clamped"),
    (lambda x, s, z, lo, hi: (torch.round(x / s) + z).clamp(lo, hi), "these are codes"),
    (lambda x, s, z, lo, hi: (torch.round(x / s) + z).clamp(lo, hi).int(), "real values"),
    (lambda x, s, z, lo, hi: x, "fake_quantize_per_tensor_affine gives"),
]


@pytest.mark.parametrize("wrong, message", WRONG_FAKE)
def test_fake_quantize_mistakes_are_named(wrong, message) -> None:
    result = ex.check_fake_quantize_like_torch(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def _observer(*, divisor=None, widen=True, symmetric_zero=None):
    def minmax_observer_qparams(x, dtype, symmetric):
        if not (divisor or not widen or symmetric_zero is not None):
            return sol.minmax_observer_qparams(x, dtype, symmetric)
        qmin, qmax = (-128, 127) if dtype == torch.qint8 else (0, 255)
        lo, hi = x.min().item(), x.max().item()
        if widen:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        if symmetric:
            scale = max(-lo, hi) / (divisor or 127.5)
            default = 0 if dtype == torch.qint8 else 128
            return scale, default if symmetric_zero is None else symmetric_zero
        scale = (hi - lo) / (qmax - qmin)
        return scale, min(max(qmin - round(lo / scale), qmin), qmax)

    return minmax_observer_qparams


WRONG_OBSERVER = [
    (_observer(divisor=127), "divides by (qmax - qmin) / 2 = 127.5"),
    (_observer(divisor=128), "expected scale"),
    (_observer(widen=False), "widens the range to include 0"),
    (_observer(symmetric_zero=0), "symmetric quint8 puts 0.0 at the middle code, 128"),
    (lambda x, d, s: (x.abs().max() / 127.5, 0.5), "zero_point must be an integer"),
]


@pytest.mark.parametrize("wrong, message", WRONG_OBSERVER)
def test_observer_mistakes_are_named(wrong, message) -> None:
    result = ex.check_minmax_observer_qparams(wrong)
    assert result.status == FAIL
    assert message in result.message, result.message


def test_signed_codes() -> None:
    assert ex.signed_codes(torch.qint8) and not ex.signed_codes(torch.quint8)
    with pytest.raises(ValueError, match="torch.quint8 or torch.qint8"):
        ex.signed_codes(torch.int8)
