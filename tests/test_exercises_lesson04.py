"""The checks of notebook 04 reject typical mistakes and name them.

That every check passes its reference solution, reports a placeholder as TODO
and code that raises as FAIL is tested for every lesson in test_exercise_contract.py.
"""

from __future__ import annotations

import pytest
import torch

from linquant_helpers.exercises import lesson04 as ex
from linquant_helpers.exercises.feedback import FAIL


def _k(gamma, var, eps):
    return gamma / torch.sqrt(var + eps)


FOLD_MISTAKES = [
    (
        lambda w, b, g, be, m, v, e: (
            w * _k(g, v, e).reshape(1, -1, 1, 1),
            (b - m) * _k(g, v, e) + be,
        ),
        "*output* channel",
    ),
    (
        lambda w, b, g, be, m, v, e: (
            w * (g / (v + e)).reshape(-1, 1, 1, 1),
            (b - m) * g / (v + e) + be,
        ),
        "square root",
    ),
    (
        lambda w, b, g, be, m, v, e: (
            w * (g / v.sqrt()).reshape(-1, 1, 1, 1),
            (b - m) * g / v.sqrt() + be,
        ),
        "eps is missing",
    ),
    (
        lambda w, b, g, be, m, v, e: (w * _k(g, v, e).reshape(-1, 1, 1, 1), b * _k(g, v, e) + be),
        "mean is not subtracted",
    ),
    (
        lambda w, b, g, be, m, v, e: (w * _k(g, v, e).reshape(-1, 1, 1, 1), b - m + be),
        "not scaled by k",
    ),
    (
        lambda w, b, g, be, m, v, e: (w * _k(g, v, e).reshape(-1, 1, 1, 1), (b - m) * _k(g, v, e)),
        "beta is missing",
    ),
    (lambda w, b, g, be, m, v, e: w * _k(g, v, e).reshape(-1, 1, 1, 1), "pair"),
]


@pytest.mark.parametrize("wrong, hint", FOLD_MISTAKES)
def test_fold_mistakes_are_named(wrong, hint) -> None:
    result = ex.check_fold_bn_into_conv(wrong)
    assert result.status == FAIL and hint in result.message, result.message


def _qp(w, bits, include_zero=True, steps=None, dims=None):
    rows = w.flatten(1)
    lo, hi = rows.amin(dim=1), rows.amax(dim=1)
    if dims is not None:
        lo, hi = w.amin(dim=dims), w.amax(dim=dims)
    if include_zero:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = (hi - lo) / (steps or 2**bits - 1)
    return scale, -torch.round(lo / scale)


QPARAM_MISTAKES = [
    (lambda w, b: tuple(t.max() for t in _qp(w.reshape(1, -1), b)), "per-tensor"),
    (lambda w, b: _qp(w, b, include_zero=False), "include 0"),
    (lambda w, b: _qp(w, b, steps=2**b), "2^bits ="),
    (lambda w, b: _qp(w, b, dims=[d for d in range(w.ndim) if d != 1]), "*input* channel"),
    (lambda w, b: (_qp(w, b)[0], -_qp(w, b)[1]), "wrong sign"),
    (lambda w, b: (_qp(w, b)[0], -_qp(w, b)[1] + 0.3), "integers"),
    (lambda w, b: _qp(w, b)[0], "pair"),
    (lambda w, b: tuple(t.unsqueeze(1) for t in _qp(w, b)), "shape"),
]


@pytest.mark.parametrize("wrong, hint", QPARAM_MISTAKES)
def test_qparams_mistakes_are_named(wrong, hint) -> None:
    result = ex.check_per_channel_qparams(wrong)
    assert result.status == FAIL and hint in result.message, result.message


def _group(w, bits, g, rounding=torch.round):
    q = 2 ** (bits - 1) - 1
    groups = w.reshape(w.shape[0], -1, g)
    s = groups.abs().amax(dim=-1, keepdim=True) / q
    return (rounding(groups / s).clamp(-q, q) * s).reshape(w.shape)


GROUP_MISTAKES = [
    (lambda w, b, g: _group(w, b, w.shape[1]), "per-channel"),
    (lambda w, b, g: _group(w.reshape(1, -1), b, w.numel()).reshape(w.shape), "per-tensor"),
    (lambda w, b, g: _group(w.t().contiguous(), b, g).t(), "columns"),
    (lambda w, b, g: _group(w, b, g, torch.floor), "wrong values"),
    (lambda w, b, g: _group(w, b, g)[:, : w.shape[1] // 2], "shape"),
]


@pytest.mark.parametrize("wrong, hint", GROUP_MISTAKES)
def test_group_mistakes_are_named(wrong, hint) -> None:
    result = ex.check_group_fake_quantize(wrong)
    assert result.status == FAIL and hint in result.message, result.message
