"""PT2E quantization (torchao's prepare_pt2e / convert_pt2e with X86InductorQuantizer):
the codes and qparams read from the converted graph equal the package's, and the
guard for a PyTorch without ``torch.ao.quantization`` says why instead of crashing.

Checked against torchao 0.18 on torch 2.13. Every activation zero point here is 0
(ReLU outputs and non-negative inputs), so no test depends on the order in which a
kernel rounds and adds the zero point.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys

import pytest
import torch
from torch import nn

from linquant_helpers import MinMaxObserver, choose_qparams, pt2e, quantize
from linquant_helpers.calibration import calibrate
from linquant_helpers.optional import TORCH_AO_GONE, torch_ao_missing
from linquant_helpers.runtimes import quiet


def test_guard_is_silent_where_torch_ao_exists() -> None:
    if importlib.util.find_spec("torch.ao.quantization") is None:
        pytest.skip("this PyTorch has no torch.ao.quantization")
    assert torch_ao_missing() is None


def test_guard_names_the_reason_where_torch_ao_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    # a PyTorch that deleted torch.ao.quantization, simulated: its import fails
    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)
    reason = torch_ao_missing()
    assert reason is not None and reason.startswith(TORCH_AO_GONE)
    assert "torch.ao.quantization" in reason


def _pt2e():
    """torchao's PT2E entry points, or a skip that says why they cannot run here."""
    if reason := torch_ao_missing():
        pytest.skip(reason)  # torchao 0.18's convert_pt2e imports torch.ao.quantization
    pytest.importorskip("torchao", reason="needs the runtimes extra")
    with quiet():
        from torchao.quantization.pt2e.observer import MinMaxObserver as AoMinMax
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    return (
        prepare_pt2e,
        convert_pt2e,
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
        AoMinMax,
    )


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


def _data() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    return _Net().eval(), [torch.rand(4, 1, 6, 6, generator=g) for _ in range(3)]


def _convert(model: nn.Module, batches: list[torch.Tensor], min_max: bool) -> torch.fx.GraphModule:
    prepare_pt2e, convert_pt2e, quantizer_cls, default_config, ao_min_max = _pt2e()
    config = default_config()
    if min_max:
        spec = dataclasses.replace(
            config.input_activation, observer_or_fake_quant_ctr=ao_min_max.with_args(eps=2**-12)
        )
        config = dataclasses.replace(config, input_activation=spec, output_activation=spec)
    batch = torch.export.Dim("batch")
    exported = torch.export.export(model, (batches[0],), dynamic_shapes=({0: batch},))
    prepared = prepare_pt2e(exported.module(), quantizer_cls().set_global(config))
    for x in batches:
        prepared(x)
    with quiet():
        return convert_pt2e(prepared)


def test_weight_codes_and_scales_equal_the_package() -> None:
    model, batches = _data()
    layers = pt2e.pt2e_layers(_convert(model, batches, min_max=False))
    assert list(layers) == ["conv", "fc"]
    for name, qp in layers.items():
        codes, scale, zero_point, axis = qp["weight"]
        w = getattr(model, name).weight.detach()
        s, z = choose_qparams(w, 8, symmetric=True, axis=0)  # max|w| / 127.5 per channel
        assert axis == 0 and codes.dtype == torch.int8
        assert torch.equal(scale, s) and not zero_point.any()
        assert torch.equal(codes, quantize(w, s, z, 8, axis=0))


def test_min_max_activation_scales_and_codes_equal_the_package() -> None:
    model, batches = _data()
    converted = _convert(model, batches, min_max=True)
    layers = pt2e.pt2e_layers(converted)
    observers = calibrate(model, batches, MinMaxObserver, 8)  # unsigned, asymmetric
    for name, obs in observers.items():
        s, z = obs.qparams()
        scale, zero_point, qmin, qmax = layers[name]["input"]
        assert (qmin, qmax) == (0, 255)
        assert torch.tensor(scale, dtype=torch.float32) == s and zero_point == int(z) == 0
    for name, (x, codes) in pt2e.pt2e_activation_codes(converted, batches[0]).items():
        scale, zero_point, _, _ = layers[name]["input"]
        ours = quantize(x, torch.tensor(scale), torch.tensor(zero_point), 8, signed=False)
        assert codes.dtype == torch.uint8 and torch.equal(ours, codes)


def test_default_histogram_scales_clip_below_min_max() -> None:
    model, batches = _data()
    histogram = pt2e.pt2e_layers(_convert(model, batches, min_max=False))
    min_max = pt2e.pt2e_layers(_convert(model, batches, min_max=True))
    for name in histogram:
        assert 0 < histogram[name]["input"][0] <= min_max[name]["input"][0]


def test_readers_reject_what_is_not_a_converted_graph() -> None:
    with pytest.raises(TypeError, match="graph must be a torch.fx.GraphModule"):
        pt2e.pt2e_layers(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="graph must be a torch.fx.GraphModule"):
        pt2e.pt2e_activation_codes(nn.Linear(2, 2), torch.zeros(1, 2))
    model, batches = _data()
    exported = torch.export.export(model, (batches[0],)).module()  # no Q/DQ nodes
    with pytest.raises(ValueError, match="not a dequantize_per_tensor node"):
        pt2e.pt2e_layers(exported)


def test_replacement_table_names_what_the_course_uses_and_what_exists() -> None:
    eager = " ".join(row[0] for row in pt2e.TORCH_AO_REPLACEMENTS)
    for api in (
        "quantize_per_tensor",
        "quantize_per_channel",
        "fake_quantize_per_tensor_affine",
        "MinMaxObserver",
        "MovingAverageMinMaxObserver",
        "quantize_dynamic",
    ):
        assert api in eager
    pytest.importorskip("torchao", reason="needs the runtimes extra")
    if reason := torch_ao_missing():
        pytest.skip(reason)
    with quiet():
        for module, names in {
            "torchao.quantization": ["quantize_", "Int8DynamicActivationInt8WeightConfig"],
            "torchao.quantization.quant_primitives": ["quantize_affine", "dequantize_affine"],
            "torchao.quantization.qat": ["QATConfig", "IntxFakeQuantizeConfig"],
            "torchao.quantization.pt2e.observer": ["MinMaxObserver", "MovingAverageMinMaxObserver"],
            "torchao.quantization.pt2e.quantize_pt2e": [
                "prepare_pt2e",
                "convert_pt2e",
                "prepare_qat_pt2e",
            ],
            "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer": ["X86InductorQuantizer"],
        }.items():
            found = importlib.import_module(module)
            for name in names:
                assert hasattr(found, name), f"{module}.{name}"
                assert name in " ".join(row[1] for row in pt2e.TORCH_AO_REPLACEMENTS)
