"""Tests of linquant_helpers.weights: weights at every granularity, models, MSE, sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linquant_helpers import (
    MinMaxObserver,
    MSEObserver,
    choose_qparams,
    fake_quantize,
    fake_quantize_weight,
    fake_quantize_weights,
)
from linquant_helpers.layers import Int4WeightLinear
from linquant_helpers.surgery import quantizable_layers
from linquant_helpers.weights import (
    fake_quantize_weights_mse,
    mse_weight_scale,
    quantized_weight_nbytes,
    weight_qparams,
)


@pytest.fixture
def model(folded_cnn) -> nn.Module:
    return folded_cnn


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_granularities_against_one_channel_at_a_time(model, bits) -> None:
    w = model.features[2][1][0].weight.detach()  # pointwise conv, (64, 32, 1, 1)
    rows = w.reshape(64, 32)

    def one(t):  # quantize t alone, per tensor, symmetric narrow
        s, z = choose_qparams(t, bits, symmetric=True, narrow=True)
        return fake_quantize(t, s, z, bits, narrow=True)

    per_channel = torch.stack([one(r) for r in rows]).reshape(w.shape)
    per_group = torch.stack([one(g) for r in rows for g in r.split(8)]).reshape(w.shape)
    assert torch.equal(fake_quantize_weight(w, bits), one(w))
    assert torch.equal(fake_quantize_weight(w, bits, axis=0), per_channel)
    assert torch.equal(fake_quantize_weight(w, bits, group_size=8), per_group)
    # 3x3 depthwise filters hold 9 weights: a group of 8 cannot cut them, so per-channel
    dw = model.features[1][0][0].weight.detach()
    assert torch.equal(
        fake_quantize_weight(dw, bits, group_size=8), fake_quantize_weight(dw, bits, axis=0)
    )


@pytest.mark.parametrize(
    "where", [{}, {"axis": 0}, {"group_size": 8}], ids=["tensor", "channel", "group8"]
)
def test_weight_observer_min_max_is_absmax_and_mse_is_one_block_at_a_time(model, where) -> None:
    w = model.features[2][1][0].weight.detach()  # pointwise conv, (64, 32, 1, 1)
    absmax = fake_quantize_weight(w, 4, **where)
    assert torch.equal(fake_quantize_weight(w, 4, **where, observer=MinMaxObserver), absmax)
    scale, zero_point = weight_qparams(w, 4, **where, observer=MSEObserver)
    rows = w.reshape(64, 32)
    key = next(iter(where), "tensor")
    blocks = {"tensor": rows.reshape(1, -1), "axis": rows, "group_size": rows.reshape(-1, 8)}[key]

    def one(block: torch.Tensor) -> torch.Tensor:  # an observer that sees one block alone
        obs = MSEObserver(4, symmetric=True, narrow=True)
        obs.update(block)
        return obs.qparams()[0]

    assert scale.shape == {"tensor": (), "axis": (64,), "group_size": (64, 4)}[key]
    assert torch.equal(scale, torch.stack([one(b) for b in blocks]).reshape(scale.shape))
    assert not zero_point.any()
    mse_weight = fake_quantize_weight(w, 4, **where, observer=MSEObserver)
    assert float((mse_weight - w).pow(2).sum()) <= float((absmax - w).pow(2).sum()) * (1 + 1e-6)
    # a 3x3 depthwise filter (9 weights) cannot be cut into groups of 8: per channel
    dw = model.features[1][0][0].weight.detach()
    for observer in (None, MSEObserver):
        by_group = weight_qparams(dw, 4, group_size=8, observer=observer)
        by_channel = weight_qparams(dw, 4, axis=0, observer=observer)
        assert all(torch.equal(a, b) for a, b in zip(by_group, by_channel, strict=True))


def test_finer_granularity_has_smaller_error(model) -> None:
    w = model.classifier[2].weight.detach()
    wheres = ({}, {"axis": 0}, {"group_size": 16})
    errors = [float((fake_quantize_weight(w, 4, **g) - w).pow(2).mean()) for g in wheres]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"axis": 0, "group_size": 8}, ValueError),
        ({"group_size": 0}, ValueError),
        ({"group_size": -8}, ValueError),
        ({"axis": 2}, ValueError),
        ({"group_size": 2.5}, TypeError),
        ({"axis": True}, TypeError),
    ],
)
def test_bad_granularity(model, bad, error) -> None:
    with pytest.raises(error, match="axis|group_size"):
        fake_quantize_weight(model.classifier[2].weight, 8, **bad)


def test_fake_quantize_weights_puts_weights_on_the_grid_and_leaves_the_original(model) -> None:
    before = _state(model)
    q = fake_quantize_weights(model, 4, axis=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    for name, layer in quantizable_layers(q).items():
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        orig = model.get_submodule(name).weight.detach().reshape(w.shape)
        scale = orig.abs().amax(dim=1, keepdim=True) / 7  # narrow 4-bit: max|w| / 7
        codes = w / scale
        assert torch.allclose(codes, codes.round(), atol=1e-4)
        assert float(codes.abs().max()) <= 7 + 1e-4
        assert torch.equal(layer.bias, model.get_submodule(name).bias)  # biases stay float


# ---------------------------------------------------------------- MSE clipping and sizes


def _outlier_weight(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = 0.05 * torch.randn(24, 128, generator=gen)
    w[3, 7] = 1.5  # an outlier, as in the FC2 layers of the real model
    return w


@pytest.mark.parametrize(
    "where", [{}, {"axis": 0}, {"group_size": 32}], ids=["tensor", "channel", "g32"]
)
def test_mse_scale_is_the_best_of_its_grid(where) -> None:
    """Against a brute-force search in float64 over the same candidate ratios."""
    w = _outlier_weight()
    absmax, _ = choose_qparams(w, 4, symmetric=True, narrow=True, **where)
    scale = mse_weight_scale(w, 4, **where, grid=50)
    assert scale.shape == absmax.shape

    def errors(s: torch.Tensor) -> torch.Tensor:  # squared error per scale, float64
        e = (fake_quantize(w, s, 0, 4, narrow=True, **where).double() - w.double()) ** 2
        if "group_size" in where:
            return e.reshape(24, -1, 32).sum(-1)
        return e.sum(1) if "axis" in where else e.sum()

    candidates = torch.stack([errors(absmax * (k / 50)) for k in range(1, 51)])
    best = candidates.min(dim=0).values
    assert torch.allclose(errors(scale), best, rtol=1e-5, atol=1e-12)
    assert (errors(scale) <= errors(absmax) * (1 + 1e-6)).all()
    assert (scale <= absmax * (1 + 1e-6)).all()


def test_mse_quantized_model_is_a_copy_with_few_levels() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 8))
    before = [p.clone() for p in model.parameters()]
    quantized = fake_quantize_weights_mse(model, 4, group_size=16)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    for layer, original in zip(quantized[::2], model[::2], strict=True):
        assert torch.equal(layer.bias, original.bias)
        groups = layer.weight.detach().reshape(-1, 16)
        assert max(len(torch.unique(g)) for g in groups) <= 15  # narrow 4-bit codes -7..7


def test_mse_scale_refuses_a_group_size_that_does_not_divide() -> None:
    with pytest.raises(ValueError, match="divisor"):
        mse_weight_scale(_outlier_weight(), 4, group_size=48)


def test_quantized_weight_nbytes_matches_a_real_packed_layer() -> None:
    assert quantized_weight_nbytes((384, 1536), 4, group_size=64) == 384 * 1536 // 2 + 4 * 384 * 24
    assert quantized_weight_nbytes((384, 1536), 8, axis=0) == 384 * 1536 + 4 * 384
    assert quantized_weight_nbytes((10, 3), 4) == 15 + 4
    layer = Int4WeightLinear.from_float(nn.Linear(128, 40), group_size=32)
    stored = layer.weight_packed.numel() + layer.weight_scale.numel() * 4
    assert quantized_weight_nbytes((40, 128), 4, group_size=32) == stored
