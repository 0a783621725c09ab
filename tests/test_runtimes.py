"""Bridges to torchao and ONNX Runtime: the codes and qparams of the real libraries,
compared with the package's (skipped when the ``runtimes`` extra is missing)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import linquant_helpers as lq
from linquant_helpers import runtimes
from linquant_helpers.optional import require
from linquant_helpers.sampling import randn


def _weight(rows: int = 1536, cols: int = 384, seed: int = 0) -> torch.Tensor:
    return 0.05 * randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def test_block_size_words() -> None:
    assert runtimes.torchao_block_size((64, 384)) == (64, 384)
    assert runtimes.torchao_block_size((64, 384), axis=0) == (1, 384)
    assert runtimes.torchao_block_size((64, 384), axis=-1) == (64, 1)
    assert runtimes.torchao_block_size((2, 64, 384), group_size=32) == (1, 1, 32)
    with pytest.raises(ValueError, match="either axis"):
        runtimes.torchao_block_size((4, 64), axis=0, group_size=32)


def test_require_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r'pip install -e "\.\[runtimes\]"'):
        require("gguf.no_such_module_here")


def test_package_import_does_not_import_the_runtimes() -> None:
    import subprocess
    import sys

    code = (
        "import sys, linquant_helpers, linquant_helpers.runtimes, linquant_helpers.gguf_blocks\n"
        "print(sorted(m for m in ('torchao', 'onnx', 'onnxruntime', 'gguf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- torchao


def _torchao():
    pytest.importorskip("torchao")
    with runtimes.quiet():
        from torchao.quantization import (
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
            PerAxis,
            PerGroup,
            quantize_,
        )
        from torchao.quantization.quant_primitives import MappingType
    return quantize_, Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerAxis, PerGroup, MappingType


def _converted(w: torch.Tensor, config) -> nn.Linear:
    quantize_ = _torchao()[0]
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
    layer.weight.data = w.clone()
    with runtimes.quiet():
        quantize_(layer, config)
    return layer


def test_int8_weight_only_codes_bit_identical() -> None:
    _, int8_wo, *_ = _torchao()
    w = _weight()
    codes, scale, zero = runtimes.torchao_weight_codes(_converted(w, int8_wo()))
    s, z = lq.choose_qparams(w, 8, symmetric=True, axis=0)  # max|w| / 127.5, codes [-128, 127]
    assert torch.equal(scale, s) and torch.equal(zero, z)
    assert torch.equal(codes, lq.quantize(w, s, z, axis=0))


def test_int4_symmetric_group_codes_bit_identical() -> None:
    _, _, intx, _, per_group, mapping = _torchao()
    w = _weight()
    config = intx(
        weight_dtype=torch.int4, granularity=per_group(32), mapping_type=mapping.SYMMETRIC
    )
    codes, scale, zero = runtimes.torchao_weight_codes(_converted(w, config))
    s, z = lq.choose_qparams(w, 4, symmetric=True, group_size=32)
    assert torch.equal(scale, s) and torch.equal(zero, z)
    assert torch.equal(codes, lq.quantize(w, s, z, 4, group_size=32))


def test_asymmetric_codes_differ_by_one_at_near_ties_only() -> None:
    pytest.importorskip("torchao")
    from torchao.quantization.quant_primitives import choose_qparams_affine, quantize_affine

    w = _weight(4096, 1024)
    args = runtimes.torchao_qparams_args(w.shape, 8, symmetric=False, axis=0)
    s_ao, z_ao = choose_qparams_affine(w, **args)
    s, z = lq.choose_qparams(w, 8, axis=0)
    assert torch.equal(s_ao.flatten(), s) and torch.equal(z_ao.flatten(), z)
    q_ao = quantize_affine(w, args["block_size"], s_ao, z_ao, torch.int8, -128, 127)
    q = lq.quantize(w, s, z, axis=0)
    differ = q_ao != q
    # torchao rounds x * (1/s), then adds z; the package rounds x * (1/s) + z in one step
    y = w * (1 / s).unsqueeze(1)
    near_tie = (y - y.floor() - 0.5).abs() < 1e-4
    assert bool(near_tie[differ].all())
    assert int((q_ao.int() - q.int()).abs().max()) <= 1
    assert 0 < int(differ.sum()) <= 20  # measured 5 of 4194304 (1.2 per million)


def test_eps_on_all_zero_and_tiny_rows() -> None:
    pytest.importorskip("torchao")
    from torchao.quantization.quant_primitives import choose_qparams_affine

    w = _weight(4, 64)
    w[1] = 0.0
    w[2] = 1e-9 * w[2].sign()
    args = runtimes.torchao_qparams_args(w.shape, 4, symmetric=True, group_size=32)
    s_pkg, _ = lq.choose_qparams(w, 4, symmetric=True, group_size=32)
    s_same, _ = choose_qparams_affine(w, **args)  # eps passed: the package's
    assert torch.equal(s_same, s_pkg)
    del args["eps"]
    s_default, _ = choose_qparams_affine(w, **args)  # torchao's default: smallest_normal
    assert s_default[1].tolist() == [torch.finfo(torch.float32).smallest_normal] * 2
    assert s_pkg[1].tolist() == [lq.EPS] * 2
    # all-zero row: both give codes 0; a row of 1e-9: the package's eps flattens it to 0
    q_pkg = lq.quantize(w, s_pkg, 0, 4, group_size=32)
    q_default = lq.quantize(w, s_default, 0, 4, group_size=32)
    assert not q_pkg[1].any() and not q_default[1].any()
    assert not q_pkg[2].any() and q_default[2].abs().min() == 7
    assert torch.equal(q_pkg[[0, 3]], q_default[[0, 3]])


# ---------------------------------------------------------------- ONNX Runtime


def test_ort_qdq_scales_match_minmax_observers() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, data = lq.trained_digits_model(0)
    calib = data.calibration_batches(8, 32, seed=0)
    quantized = runtimes.ort_quantize_static(runtimes.export_onnx(model, calib[0]), calib)
    ort = runtimes.ort_qdq_qparams(quantized)
    observers = lq.calibrate(model, calib, lq.MinMaxObserver, 8)
    assert list(ort) == list(observers)
    for name, obs in observers.items():
        s, z = obs.qparams()
        s_ort, z_ort = ort[name]["input"]
        # the same float32 min and max, but ONNX Runtime computes (max - min) / 255 in
        # numpy with its own order of operations: measured equal for 5 of the 7 layers,
        # one float32 ulp apart for 2; the zero points are equal
        assert torch.allclose(s_ort, s, rtol=2**-23, atol=0), name
        assert int(z_ort) == int(z), name
        w = dict(model.named_modules())[name].weight.detach()
        sw, zw = lq.choose_qparams(w, 8, symmetric=True, narrow=True, axis=0)
        assert torch.allclose(ort[name]["weight"][0], sw, rtol=2**-23, atol=0), name
        assert not ort[name]["weight"][1].any()
    session = runtimes.ort_session(quantized)
    logits = runtimes.ort_run(session, data.x_test)
    acc = (logits.argmax(1) == data.y_test).float().mean().item()
    assert abs(acc - lq.evaluate(model, data)) < 0.01


def test_ort_quantize_static_refuses_batches_it_cannot_calibrate_on() -> None:
    """A NaN batch failed deep inside ONNX Runtime with ``AssertionError: scale issue``."""
    good = torch.zeros(2, 1, 8, 8)
    bad = good.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"batches\[1\] must be finite, but it contains NaN"):
        runtimes.ort_quantize_static(b"onnx", [good, bad])
    with pytest.raises(ValueError, match=r"batches\[0\] must be finite, but it contains inf"):
        runtimes.ort_quantize_static(b"onnx", [good + float("inf")])
    with pytest.raises(ValueError, match="at least one calibration batch"):
        runtimes.ort_quantize_static(b"onnx", [])
    with pytest.raises(TypeError, match=r"batches\[0\] must be a floating-point tensor"):
        runtimes.ort_quantize_static(b"onnx", [good.int()])
    with pytest.raises(TypeError, match="onnx_model must be the bytes of an ONNX model"):
        runtimes.ort_quantize_static("model.onnx", [good])
