"""Tests of linquant_helpers.smoothquant: dynamic activations, SmoothQuant, simulated W8A8."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linquant_helpers.smoothquant import (
    SimulatedW8A8Linear,
    activation_absmax,
    fake_quantize_activation,
    simulate_w8a8,
    smoothquant_scales,
)
from linquant_helpers.weights import fake_quantize_weight

# ---------------------------------------------------------------- activations


def test_per_token_quantization_matches_torch_per_channel() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 16, generator=gen)
    x[1, 2, 4] = 40.0  # one outlier token
    got = fake_quantize_activation(x, 8, axis=0)
    assert got.shape == x.shape and got.dtype == x.dtype
    rows = x.reshape(-1, 16)
    scale = rows.abs().amax(dim=1) / 127  # one scale per token
    zero = torch.zeros(15, dtype=torch.int32)
    oracle = torch.fake_quantize_per_channel_affine(rows, scale, zero, 0, -127, 127)
    torch.testing.assert_close(got.reshape(-1, 16), oracle, rtol=0, atol=1e-6)
    # Only the outlier token pays for the outlier: the other tokens keep a fine grid.
    err = (got - x).abs().reshape(-1, 16).amax(dim=1)
    assert (err <= scale / 2 + 1e-6).all()
    assert err[7] > 10 * err[torch.arange(15) != 7].max()


def test_per_tensor_quantization_matches_torch() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, 32, generator=gen)
    scale = float(x.abs().max() / 127)
    oracle = torch.fake_quantize_per_tensor_affine(x, scale, 0, -127, 127)
    torch.testing.assert_close(fake_quantize_activation(x, 8), oracle, rtol=0, atol=1e-6)


def test_smoothquant_leaves_the_float_product_unchanged() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(20, 48, dtype=torch.float64, generator=gen)
    x[:, 5] *= 50.0
    w = torch.randn(30, 48, dtype=torch.float64, generator=gen)
    s = smoothquant_scales(x.abs().amax(dim=0), w, alpha=0.6)
    assert s.shape == (48,) and (s > 0).all()
    # (X diag(s)^-1) (W diag(s))^T == X W^T
    torch.testing.assert_close(F.linear(x / s, w * s), F.linear(x, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.75, 1.0])
def test_smoothquant_balances_the_ranges(alpha) -> None:
    gen = torch.Generator().manual_seed(4)
    a = torch.rand(16, dtype=torch.float64, generator=gen) * 20 + 0.1
    w = torch.randn(8, 16, dtype=torch.float64, generator=gen)
    s = smoothquant_scales(a, w, alpha)
    product = a * w.abs().amax(dim=0)
    torch.testing.assert_close(a / s, product ** (1 - alpha))  # activation range after
    torch.testing.assert_close((w * s).abs().amax(dim=0), product**alpha)  # weight range after


def test_smoothquant_scales_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha"):
        smoothquant_scales(torch.ones(4), torch.ones(3, 4), 1.5)
    with pytest.raises(ValueError, match=r"\(in,\)"):
        smoothquant_scales(torch.ones(3), torch.ones(3, 4), 0.5)


def _outlier_layer_and_input() -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(5)
    layer = nn.Linear(64, 32)
    x = torch.randn(40, 64)
    x[:, 9] *= 60.0  # an outlier channel, as channel 99 of the real model
    return layer, x


def test_w8a8_error_falls_with_per_token_or_smoothing() -> None:
    layer, x = _outlier_layer_and_input()
    y = layer(x).detach()

    def error(**kwargs) -> float:
        return float((SimulatedW8A8Linear(layer, **kwargs)(x) - y).pow(2).mean())

    plain = error()
    smooth = smoothquant_scales(x.abs().amax(dim=0), layer.weight, 0.5)
    assert error(smooth=smooth) < plain / 4
    assert error(act_axis=0) < plain
    # with the float weights quantized, the smoothed layer still computes X W^T + b
    w_q = fake_quantize_weight(layer.weight.detach() * smooth, 8, axis=0)
    manual = F.linear(fake_quantize_activation(x / smooth), w_q, layer.bias)
    torch.testing.assert_close(SimulatedW8A8Linear(layer, smooth=smooth)(x), manual)


class _Toy(nn.Module):
    """Two linear layers called with a dict of features, as a sentence-transformers model."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, features: dict) -> dict:
        return {"sentence_embedding": self.b(torch.relu(self.a(features["x"])))}


def test_activation_absmax_per_input_channel() -> None:
    torch.manual_seed(6)
    toy, x = _Toy(), torch.randn(3, 5, 4)
    absmax = activation_absmax(toy, {"x": x})
    assert set(absmax) == {"a", "b"}
    torch.testing.assert_close(absmax["a"], x.abs().amax(dim=(0, 1)))
    hidden = torch.relu(toy.a(x)).detach()
    torch.testing.assert_close(absmax["b"], hidden.abs().amax(dim=(0, 1)))
    assert not toy.a._forward_pre_hooks, "the hooks are removed"


def test_simulate_w8a8_smooths_only_the_named_layers_and_copies() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    quantized = simulate_w8a8(model, act_absmax={"0": torch.rand(64) + 0.5})
    assert isinstance(model[0], nn.Linear) and isinstance(model[2], nn.Linear)
    assert isinstance(quantized[2], SimulatedW8A8Linear)
    assert quantized[0].smooth is not None and quantized[2].smooth is None


@pytest.mark.parametrize(
    ("act", "weight", "alpha", "exc", "message"),
    [
        (torch.tensor([1.0, float("nan")]), torch.ones(3, 2), 0.5, ValueError,
         "act_absmax must be finite, but it contains NaN"),
        (torch.tensor([1.0, float("inf")]), torch.ones(3, 2), 0.5, ValueError,
         "act_absmax must be finite, but it contains infinity"),
        (torch.ones(2), torch.tensor([[1.0, float("nan")]] * 3), 0.5, ValueError,
         "weight must be finite, but it contains NaN"),
        (torch.ones(2), torch.tensor([[1.0, -float("inf")]] * 3), 0.5, ValueError,
         "weight must be finite, but it contains infinity"),
        (torch.tensor([1.0, -2.0]), torch.ones(3, 2), 0.5, ValueError,
         "act_absmax must be >= 0 (a maximum of |X|), got -2"),
        (torch.ones(2), torch.ones(3, 2), float("nan"), ValueError, "alpha must be in [0, 1]"),
        (torch.ones(2), torch.ones(3, 2), "0.5", TypeError, "alpha must be a real number"),
        (torch.ones(2, dtype=torch.int32), torch.ones(3, 2), 0.5, TypeError,
         "act_absmax must be a floating-point tensor"),
    ],
)
def test_smoothquant_scales_refuses_what_would_give_nan_or_zero(act, weight, alpha, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        smoothquant_scales(act, weight, alpha)
def test_act_bits_sets_the_activation_width_only() -> None:
    gen = torch.Generator().manual_seed(9)
    layer = nn.Linear(32, 6).double()
    x = torch.randn(5, 32, dtype=torch.float64, generator=gen)
    got = SimulatedW8A8Linear(layer, bits=4, act_bits=8, act_axis=0)(x)
    w_q = fake_quantize_weight(layer.weight.detach(), 4, axis=0)
    x_q = fake_quantize_activation(x, 8, axis=0)
    torch.testing.assert_close(got, F.linear(x_q, w_q, layer.bias), rtol=0, atol=0)
    same = simulate_w8a8(nn.Sequential(layer), act_axis=0, bits=4, act_bits=8)
    torch.testing.assert_close(same(x), got, rtol=0, atol=0)
    assert "W4A8" in repr(same)
