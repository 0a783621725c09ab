"""The checks of notebook 05 pass the reference solutions and reject typical mistakes."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

from linquant_helpers import (
    PercentileObserver,
    fake_quantize,
    mse,
    ptq,
    qparams_from_range,
    trained_digits_model,
)
from linquant_helpers.exercises import lesson05 as ex
from linquant_helpers.exercises.feedback import FAIL, PASS, TODO


def _solutions(name: str):
    path = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"solutions_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sol = _solutions("lesson05")


@pytest.fixture(scope="module")
def trained():
    # a short training is enough: the checks compare against the package on this model
    return trained_digits_model(0, epochs=4, progress=False)


def _placeholder(*args): ...


def _raises(*args):
    raise RuntimeError("boom")


class Placeholder:
    def __init__(self, axis):
        self.axis = axis

    def update(self, x): ...

    def clip_range(self): ...


# ---------------------------------------------------------------- per-channel min-max


@pytest.mark.parametrize("seed", [None, 0, 1, 7])
def test_minmax_solution_passes(seed, capsys) -> None:
    kw = {} if seed is None else {"seed": seed}
    assert ex.check_per_channel_minmax(sol.PerChannelMinMax, **kw).status == PASS
    assert capsys.readouterr().out.startswith("[PASS] ")


def test_minmax_placeholder_and_errors(capsys) -> None:
    assert ex.check_per_channel_minmax(Placeholder).status == TODO
    result = ex.check_per_channel_minmax(_raises)
    assert result.status == FAIL and "RuntimeError: boom" in result.message


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


@pytest.mark.parametrize("seed", [None, 0, 1, 7])
def test_clip_ratio_solution_passes(seed) -> None:
    kw = {} if seed is None else {"seed": seed}
    assert ex.check_best_clip_ratio(sol.best_clip_ratio, **kw).status == PASS


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


def test_clip_ratio_placeholder() -> None:
    assert ex.check_best_clip_ratio(_placeholder).status == TODO


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


def test_percentile_solution_passes_and_placeholder(trained, capsys) -> None:
    model, data = trained
    assert ex.check_choose_percentile(sol.choose_percentile, model, data).status == PASS
    assert ex.check_choose_percentile(_placeholder, model, data).status == TODO
    result = ex.check_choose_percentile(_raises, model, data)
    assert result.status == FAIL and "RuntimeError: boom" in result.message


def test_percentile_mistakes_are_named(trained) -> None:
    model, data = trained

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
