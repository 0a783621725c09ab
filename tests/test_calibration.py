"""Tests of linquant_helpers.calibration: weight quantization, calibration, ptq."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from linquant_helpers import (
    DigitsCNN,
    FakeQuantize,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    calibrate,
    choose_qparams,
    fake_quantize,
    fake_quantize_weight,
    fold_batchnorm,
    ptq,
    quantize_weights,
)
from linquant_helpers.calibration import (
    QUANTIZABLE,
    quantizable_layers,
    run_with_hooks,
    weight_qparams,
)

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
def model() -> nn.Module:
    """An untrained DigitsCNN with non-trivial BatchNorm statistics, folded."""
    torch.manual_seed(0)
    net = DigitsCNN()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.1)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
    return fold_batchnorm(net)


def _batches(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(8, 1, 8, 8, generator=g) for _ in range(n)]


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_quantizable_layers_in_forward_order(model) -> None:
    assert list(quantizable_layers(model)) == LAYERS


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_granularities_against_one_channel_at_a_time(model, bits) -> None:
    w = model.features[2][1][0].weight.detach()  # pointwise conv, (64, 32, 1, 1)
    rows = w.reshape(64, 32)

    def one(t):  # quantize t alone, per tensor, symmetric narrow
        s, z = choose_qparams(t, bits, symmetric=True, narrow=True)
        return fake_quantize(t, s, z, bits, narrow=True)

    per_channel = torch.stack([one(r) for r in rows]).reshape(w.shape)
    per_group = torch.stack([one(g) for r in rows for g in r.split(8)]).reshape(w.shape)
    assert torch.equal(fake_quantize_weight(w, bits, "tensor"), one(w))
    assert torch.equal(fake_quantize_weight(w, bits, "channel"), per_channel)
    assert torch.equal(fake_quantize_weight(w, bits, 8), per_group)
    # 3x3 depthwise filters hold 9 weights: a group of 8 cannot cut them, so per-channel
    dw = model.features[1][0][0].weight.detach()
    assert torch.equal(fake_quantize_weight(dw, bits, 8), fake_quantize_weight(dw, bits, "channel"))


@pytest.mark.parametrize("granularity", ["tensor", "channel", 8])
def test_weight_observer_min_max_is_absmax_and_mse_is_one_block_at_a_time(
    model, granularity
) -> None:
    w = model.features[2][1][0].weight.detach()  # pointwise conv, (64, 32, 1, 1)
    absmax = fake_quantize_weight(w, 4, granularity)
    assert torch.equal(fake_quantize_weight(w, 4, granularity, observer=MinMaxObserver), absmax)
    scale, zero_point = weight_qparams(w, 4, granularity, observer=MSEObserver)
    rows = w.reshape(64, 32)
    blocks = {"tensor": rows.reshape(1, -1), "channel": rows, 8: rows.reshape(-1, 8)}[granularity]

    def one(block: torch.Tensor) -> torch.Tensor:  # an observer that sees one block alone
        obs = MSEObserver(4, symmetric=True, narrow=True)
        obs.update(block)
        return obs.qparams()[0]

    assert scale.shape == {"tensor": (), "channel": (64,), 8: (64, 4)}[granularity]
    assert torch.equal(scale, torch.stack([one(b) for b in blocks]).reshape(scale.shape))
    assert not zero_point.any()
    mse_weight = fake_quantize_weight(w, 4, granularity, observer=MSEObserver)
    assert float((mse_weight - w).pow(2).sum()) <= float((absmax - w).pow(2).sum()) * (1 + 1e-6)
    # a 3x3 depthwise filter (9 weights) cannot be cut into groups of 8: per channel
    dw = model.features[1][0][0].weight.detach()
    for observer in (None, MSEObserver):
        by_group = weight_qparams(dw, 4, 8, observer=observer)
        by_channel = weight_qparams(dw, 4, "channel", observer=observer)
        assert all(torch.equal(a, b) for a, b in zip(by_group, by_channel, strict=True))


def test_finer_granularity_has_smaller_error(model) -> None:
    w = model.classifier[2].weight.detach()
    errors = [
        float((fake_quantize_weight(w, 4, g) - w).pow(2).mean()) for g in ("tensor", "channel", 16)
    ]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("bad", ["row", 0, -8, 2.5, True, None])
def test_bad_granularity(model, bad) -> None:
    with pytest.raises(ValueError, match="granularity"):
        fake_quantize_weight(model.classifier[2].weight, 8, bad)


def test_quantize_weights_puts_weights_on_the_grid_and_leaves_the_original(model) -> None:
    before = _state(model)
    q = quantize_weights(model, 4, "channel")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    for name, layer in quantizable_layers(q).items():
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        orig = model.get_submodule(name).weight.detach().reshape(w.shape)
        scale = orig.abs().amax(dim=1, keepdim=True) / 7  # narrow 4-bit: max|w| / 7
        codes = w / scale
        assert torch.allclose(codes, codes.round(), atol=1e-4)
        assert float(codes.abs().max()) <= 7 + 1e-4
        assert torch.equal(layer.bias, model.get_submodule(name).bias)  # biases stay float


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


def test_run_with_hooks_sees_inputs_and_outputs_then_cleans_up(model) -> None:
    seen: dict[str, tuple] = {}

    def pre(_m, args) -> None:
        seen["pre"] = (args[0].clone(), torch.get_num_threads(), torch.is_grad_enabled())

    def post(m, args, out) -> None:
        seen["post"] = (args[0].clone(), out.clone(), m.training)

    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    model.train()
    threads = torch.get_num_threads()
    run_with_hooks(model, [x], pre_hooks={"features.0.0": pre}, hooks={"classifier.4": post})
    assert torch.equal(seen["pre"][0], x) and seen["pre"][1:] == (1, False)  # 1 thread, no grad
    inputs, out, training = seen["post"]
    torch.testing.assert_close(out, model.classifier[4](inputs))
    assert not training and model.training  # eval during the pass, train mode restored
    assert torch.get_num_threads() == threads

    def fails(_m, args) -> None:
        MinMaxObserver().update(args[0])  # raises on NaN

    with pytest.raises(AttributeError):  # an unknown name: the hooks already placed go too
        run_with_hooks(model, [x], pre_hooks={"features.0.0": pre, "nope": pre})
    with pytest.raises(ValueError, match="NaN"):  # an error in a hook: cleaned up as well
        nan = torch.full_like(x, float("nan"))
        run_with_hooks(
            model, [nan], pre_hooks={"features.0.0": fails}, hooks={"classifier.4": post}
        )
    assert model.training
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


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
    q = ptq(model, _batches(), act_bits=4, weight_bits=4, weight_granularity="tensor")
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
