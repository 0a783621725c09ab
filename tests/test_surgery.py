"""Tests of linquant_helpers.surgery: the one quantizable-layer rule, replacing, hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linquant_helpers import DigitsCNN, MinMaxObserver, calibrate, prepare_qat, quantize_model
from linquant_helpers.smoothquant import SimulatedW8A8Linear, simulate_w8a8
from linquant_helpers.surgery import quantizable_layers, replace_modules, run_with_hooks
from linquant_helpers.weights import fake_quantize_weights


class _Attention(nn.Module):
    """A linear layer, then PyTorch's attention (whose out_proj it reads, not calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.attn = nn.Linear(8, 8), nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.head(self.attn(h, h, h)[0])


def test_one_rule_for_every_quantization() -> None:
    torch.manual_seed(0)
    model = _Attention()
    assert list(quantizable_layers(model)) == ["proj", "head.1"]  # not attn.out_proj
    assert list(quantizable_layers(model, skip=("head",))) == ["proj"]
    x = torch.randn(2, 4, 8)
    replaced = {
        "quantize_model": quantize_model(model, "w8a16"),
        "prepare_qat": prepare_qat(model, 8),
        "simulate_w8a8": simulate_w8a8(model),
    }
    originals = dict(model.named_modules())
    for what, copy in replaced.items():
        changed = [
            n
            for n, m in copy.named_modules()
            if n in originals and type(m) is not type(originals[n])
        ]
        assert changed == ["proj", "head.1"], what
        assert copy(x).shape == (2, 4, 3)
    assert isinstance(replaced["simulate_w8a8"].proj, SimulatedW8A8Linear)
    assert list(calibrate(model, [x], MinMaxObserver)) == ["proj", "head.1"]
    weights_only = fake_quantize_weights(model, 4)
    assert torch.equal(weights_only.attn.out_proj.weight, model.attn.out_proj.weight)


def test_replace_modules_keeps_a_shared_layer_shared() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    out = replace_modules(model, ["0", "2"], lambda name, m: nn.Sequential(m))
    assert out[0] is out[2] and out[0][0] is shared


def test_run_with_hooks_sees_inputs_and_outputs_then_cleans_up() -> None:
    model = DigitsCNN()
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
