"""AWQ-style scaling: the algebra in float64, the search, and its errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linquant_helpers import choose_qparams, fake_quantize
from linquant_helpers.awq import awq_quantize_model, awq_scales, awq_search


def _layer(seed: int, out: int = 12, n_in: int = 32, tokens: int = 64):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out, n_in, generator=gen, dtype=torch.float64)
    x = torch.randn(tokens, n_in, generator=gen, dtype=torch.float64)
    x[:, :3] *= 20.0  # a few salient input channels
    return w, x


def test_scales_by_hand() -> None:
    m = torch.tensor([1.0, 4.0, 16.0])
    s = awq_scales(m, 0.5)  # sqrt(m) = 1, 2, 4, divided by sqrt(4 * 1) = 2
    assert s.tolist() == [0.5, 1.0, 2.0]
    assert awq_scales(m, 0.0).tolist() == [1.0, 1.0, 1.0]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), alpha=st.floats(0, 1))
def test_scaling_is_exact_in_float64(seed, alpha) -> None:
    w, x = _layer(seed)
    s = awq_scales(x.abs().mean(0), alpha)
    assert torch.allclose((w * s) @ (x / s).T, w @ x.T, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000), bits=st.sampled_from([3, 4]), group_size=st.sampled_from([None, 8])
)
def test_search_never_loses_to_rtn_and_reports_its_errors(seed, bits, group_size) -> None:
    w, x = _layer(seed)
    result = awq_search(w, x, bits, group_size=group_size)
    per = {"group_size": group_size} if group_size else {"axis": 0}
    scale, _ = choose_qparams(w, bits, symmetric=True, narrow=True, **per)
    rtn = fake_quantize(w, scale, 0, bits, narrow=True, **per)
    rtn_err = float(((x @ (w - rtn).T) ** 2).mean())
    assert result.errors[0].item() == pytest.approx(rtn_err, rel=1e-12)  # alpha = 0 is RTN
    assert result.errors.min() == result.errors[int(result.errors.argmin())]
    own = float(((x @ (w - result.weight.double()).T) ** 2).mean())
    assert own == pytest.approx(result.errors.min().item(), rel=1e-5)  # weight stored as float32
    assert own <= rtn_err * (1 + 1e-5)


def test_salient_channels_win() -> None:
    w, x = _layer(0)
    result = awq_search(w, x, 3)
    assert result.alpha > 0
    assert result.errors.min() < result.errors[0]
    assert result.scale[:3].min() > result.scale[3:].max()  # the 20x channels are scaled up


def test_shared_input_layers_share_one_scale() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(16, 4))
    _, x = _layer(1, n_in=16)
    quantized, alphas = awq_quantize_model(model.double(), {("0", "1"): x}, 4)
    stacked = awq_search(torch.cat([model[0].weight, model[1].weight]), x, 4)
    assert alphas == {("0", "1"): stacked.alpha}
    assert torch.equal(quantized[1].weight.float(), stacked.weight[8:])
    assert not torch.equal(quantized[0].weight, model[0].weight)  # the original is kept


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda w, x: awq_scales(x.abs().mean(0), 1.5), "alpha"),
        (lambda w, x: awq_scales(x.abs(), 0.5), "act_mean_abs must be 1-D"),
        (lambda w, x: awq_search(w, x[:, :8]), "x \\(n, in\\)"),
        (lambda w, x: awq_search(w, x, alphas=()), "alphas"),
        (lambda w, x: awq_search(w, x, group_size=5), "group_size"),
    ],
)
def test_errors_name_the_argument(call, match) -> None:
    w, x = _layer(0)
    with pytest.raises(ValueError, match=match):
        call(w, x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_are_named(bad) -> None:
    w, x = _layer(0)
    m = x.abs().mean(0)
    m[4] = bad
    with pytest.raises(ValueError, match="act_mean_abs must be finite"):
        awq_scales(m, 0.5)
    x_bad = x.clone()
    x_bad[1, 1] = bad
    with pytest.raises(ValueError, match="x must be finite"):
        awq_search(w, x_bad)
    w_bad = w.clone()
    w_bad[1, 1] = bad
    with pytest.raises(ValueError, match="weight must be finite"):
        awq_search(w_bad, x)


def test_shared_input_layers_of_different_widths_are_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(12, 4)).double()
    _, x = _layer(1, n_in=16)
    with pytest.raises(ValueError, match="in_features \\{'0': 16, '1': 12\\}"):
        awq_quantize_model(model, {("0", "1"): x}, 4)
    with pytest.raises(ValueError, match="x of shape \\(64, 16\\)"):
        awq_quantize_model(model, {"1": x}, 4)
    with pytest.raises(ValueError, match="nn.Linear"):
        awq_quantize_model(model, {("0", "2"): x}, 4)
