"""The checks of notebook 05 reject typical mistakes and name them.

That every check passes its reference solution, reports a placeholder as TODO
and code that raises as FAIL is tested for every lesson in test_exercise_contract.py.
"""

from __future__ import annotations

import functools

import pytest
import torch

from linquant_helpers import PercentileObserver, fake_quantize, mse, ptq, qparams_from_range
from linquant_helpers.exercises import lesson05 as ex
from linquant_helpers.exercises.feedback import FAIL
from solutions import lesson05 as sol

# ---------------------------------------------------------------- per-channel min-max


class LastBatchOnly(sol.PerChannelMinMax):
    def update(self, x):
        self.min_val = self.max_val = None
        super().update(x)


class PerTensor(sol.PerChannelMinMax):
    def update(self, x):
        lo, hi = x.amin(), x.amax()
        if self.min_val is not None:
            lo, hi = torch.minimum(lo, self.min_val), torch.maximum(hi, self.max_val)
        self.min_val, self.max_val = lo, hi


class WrongDims(sol.PerChannelMinMax):
    def update(self, x):  # keeps dim 0 whatever the axis
        rows = x.flatten(1)
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        if self.min_val is not None:
            lo, hi = torch.minimum(lo, self.min_val), torch.maximum(hi, self.max_val)
        self.min_val, self.max_val = lo, hi


class OnlyMax(sol.PerChannelMinMax):
    def clip_range(self):
        return self.max_val


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (LastBatchOnly, "last batch"),
        (PerTensor, "per-tensor"),
        (WrongDims, "movedim"),
        (OnlyMax, "pair"),
    ],
)
def test_minmax_mistakes_are_named(wrong, hint) -> None:
    result = ex.check_per_channel_minmax(wrong)
    assert result.status == FAIL and hint in result.message, result.message


# ---------------------------------------------------------------- best clip ratio


def _errors(x, bits, ratios):
    a = x.abs().max()
    out = []
    for r in ratios:
        s, z = qparams_from_range(-r * a, r * a, bits, symmetric=True)
        out.append(mse(x, fake_quantize(x, s, z, bits)))
    return torch.tensor(out)


def test_clip_ratio_reference_is_below_one() -> None:
    # the check's premise: on these distributions clipping helps
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    ratios = torch.linspace(0.05, 1.0, 40)
    assert float(ratios[int(ex.clip_errors(x, 3, ratios).argmin())]) < 0.8


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda x, b, r: float(r[_errors(x, b, r).argmax()]), "largest"),
        (lambda x, b, r: 1.0, "min-max"),
        (lambda x, b, r: float(_errors(x, b, r).min()), "smallest error"),
        (lambda x, b, r: int(_errors(x, b, r).argmin()), "index"),
        (lambda x, b, r: float(r[_errors(x, b - 1, r).argmin()]), "for each r"),
        (lambda x, b, r: "0.5", "float"),
    ],
)
def test_clip_ratio_mistakes_are_named(wrong, hint) -> None:
    result = ex.check_best_clip_ratio(wrong)
    assert result.status == FAIL and hint in result.message, result.message


# ---------------------------------------------------------------- choose a percentile


def _logit_errors(model, calib, x, percentiles, bits):
    ref = model(x).detach()
    errs = []
    for p in percentiles:
        q = ptq(
            model,
            calib,
            observer=functools.partial(PercentileObserver, percentile=p),
            act_bits=bits,
        )
        errs.append(mse(q(x).detach(), ref))
    return errs


def test_percentile_mistakes_are_named(trained_digits) -> None:
    model, data = trained_digits

    def worst(m, c, x, ps, b):
        e = _logit_errors(m, c, x, ps, b)
        return ps[e.index(max(e))]

    def error_value(m, c, x, ps, b):
        return min(_logit_errors(m, c, x, ps, b))

    def index(m, c, x, ps, b):
        e = _logit_errors(m, c, x, ps, b)
        return e.index(min(e))

    cases = [(worst, "worst"), (error_value, "error value"), (index, "index")]
    for wrong, hint in cases:
        result = ex.check_choose_percentile(wrong, model, data)
        assert result.status == FAIL and hint in result.message, result.message
    always = ex.check_choose_percentile(lambda *a: 100.0, model, data)
    assert always.status == FAIL
