"""Tests of linquant_helpers.calibration: calibration, ptq."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from linquant_helpers import (
    DigitsCNN,
    FakeQuantize,
    MinMaxObserver,
    PercentileObserver,
    calibrate,
    choose_qparams,
    ptq,
)
from linquant_helpers.surgery import QUANTIZABLE, quantizable_layers

LAYERS = [
    "features.0.0",
    "features.1.0.0",
    "features.1.1.0",
    "features.2.0.0",
    "features.2.1.0",
    "classifier.2",
    "classifier.4",
]


@pytest.fixture
def model(folded_cnn) -> nn.Module:
    return folded_cnn


def _batches(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(8, 1, 8, 8, generator=g) for _ in range(n)]


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_quantizable_layers_in_forward_order(model) -> None:
    assert list(quantizable_layers(model)) == LAYERS


def test_calibrate_records_each_layer_input(model) -> None:
    recorded: dict[str, list[torch.Tensor]] = {name: [] for name in LAYERS}
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: recorded[name].append(args[0].clone())
        )
        for name in LAYERS
    ]
    model.train()  # calibrate must switch to eval and back
    observers = calibrate(model, _batches())
    for h in hooks:
        h.remove()
    assert model.training
    assert list(observers) == LAYERS
    for name, obs in observers.items():
        expected = choose_qparams(torch.cat(recorded[name]), 8, signed=False)
        for got, want in zip(obs.qparams(), expected, strict=True):
            assert torch.equal(got, want)
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_calibrate_does_not_touch_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    net = DigitsCNN().train()
    before = _state(net)
    calibrate(net, _batches())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_calibrate_needs_batches_and_cleans_up_on_error(model) -> None:
    with pytest.raises(ValueError, match="empty"):
        calibrate(model, [])
    with pytest.raises(ValueError, match="NaN"):
        calibrate(model, [torch.full((2, 1, 8, 8), float("nan"))])
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_ptq_returns_a_fake_quantized_copy(model) -> None:
    batches = _batches()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    before, out_before = _state(model), model(x).detach()
    q = ptq(model, batches)
    # the original: same parameters, same outputs, no quantizers inside
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(model(x), out_before)
    assert not any(isinstance(m, FakeQuantize) for m in model.modules())
    # the copy: a FakeQuantize in front of every layer, with the calibrated qparams
    observers = calibrate(model, batches)
    for name in LAYERS:
        fq, layer = q.get_submodule(name)
        assert isinstance(fq, FakeQuantize) and isinstance(layer, QUANTIZABLE)
        scale, zero_point = observers[name].qparams()
        assert torch.equal(fq.scale, scale) and torch.equal(fq.zero_point, zero_point)
    out = q(x).detach()
    assert not torch.equal(out, out_before)
    assert (out - out_before).abs().max() < 0.05 * out_before.abs().max()  # 8 bits: close
    assert not q.training


def test_ptq_layers_compute_on_quantized_inputs(model) -> None:
    q = ptq(model, _batches(), act_bits=4, weight_bits=4, weight_axis=None)
    seen = {}
    for name in LAYERS:
        fq, layer = q.get_submodule(name)
        layer.register_forward_pre_hook(
            lambda _m, args, fq=fq, name=name: seen.update({name: (args[0], fq)})
        )
    q(torch.rand(4, 1, 8, 8))
    for x, fq in seen.values():
        codes = x / fq.scale + fq.zero_point
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert 0 <= float(codes.min()) and float(codes.max()) <= 15 + 1e-3  # unsigned 4-bit
    w = q.get_submodule("classifier.2")[1].weight.detach()
    assert w.unique().numel() <= 15  # one 4-bit per-tensor grid, narrow: 15 values


def test_ptq_converges_to_the_float_model_with_many_bits(model) -> None:
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    q = ptq(model, _batches(), act_bits=16, weight_bits=16)
    torch.testing.assert_close(q(x), model(x), atol=1e-3, rtol=1e-3)


def test_ptq_accepts_observer_settings(model) -> None:
    obs = functools.partial(PercentileObserver, percentile=90.0)
    clipped = ptq(model, _batches(), observer=obs)
    full = ptq(model, _batches(), observer=MinMaxObserver)
    name = "features.1.1.0"
    assert float(clipped.get_submodule(name)[0].scale) < float(full.get_submodule(name)[0].scale)
    assert "scale=" in repr(clipped.get_submodule(name)[0])
