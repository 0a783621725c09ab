"""llama.cpp's CPU matmul (W4A8): Q8 activations, exact integer block sums, one float rescale
per block; checked against float64 references and a scalar transcription of Q8_K."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from linquant_helpers import gguf_blocks, kquants
from linquant_helpers import gguf_matmul as gm
from linquant_helpers.sampling import randn


def _data(tokens: int = 37, cols: int = 512, out: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(cols, out)
    with torch.no_grad():
        linear.weight.copy_(randn(out, cols, generator=g) * 0.05)
        linear.bias.copy_(randn(out, generator=g))
    return randn(tokens, cols, generator=g), linear


def _q8_k_scalar(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_row_q8_K_ref`` transcribed element by element in float32."""
    ds, qs = [], []
    for block in x.reshape(-1, 256).astype(np.float32):
        amax, mx = np.float32(0), np.float32(0)
        for v in block:
            if abs(v) > amax:
                amax, mx = abs(v), v
        if amax == 0:
            ds.append(np.float32(0))
            qs.append(np.zeros(256, np.int8))
            continue
        iscale = np.float32(-127) / mx
        qs.append(np.array([min(127, int(np.rint(iscale * v))) for v in block], np.int8))
        ds.append(np.float32(1) / iscale)
    return np.array(ds, np.float32), np.stack(qs)


def test_q8_k_matches_the_scalar_rule() -> None:
    x, _ = _data(3, 768)
    x[1, 256:512] = 0  # an all-zero block
    d, q = gm.quantize_q8_k(x)
    d_ref, q_ref = _q8_k_scalar(x.numpy())
    assert np.array_equal(d.reshape(-1).numpy(), d_ref)
    assert np.array_equal(q.reshape(-1, 256).numpy(), q_ref)
    assert q.min() >= -127  # the extreme value gets -127: no -128


def _float64_reference(x: torch.Tensor, layer: gm.GGUFLinear) -> torch.Tensor:
    """Dequantized Q8 activations times the dequantized weight, in float64."""
    if layer.fmt in ("Q4_0", "Q8_0"):
        x_hat = gguf_blocks.dequantize_blocks(*gguf_blocks.quantize_q8_0(x))
    else:
        d, q = gm.quantize_q8_k(x)
        x_hat = (d[..., None] * q.float()).reshape(x.shape)
    w_hat = layer.dequantized_weight().double()
    return x_hat.double() @ w_hat.T + layer.bias.double()


def _integer_matmul(x: torch.Tensor, layer: gm.GGUFLinear) -> torch.Tensor:
    if layer.fmt in ("Q4_0", "Q8_0"):
        return gm.matmul_q4_0_q8_0(x, layer.raw, layer.fmt) + layer.bias
    return gm.matmul_k_q8_k(x, layer.raw, layer.fmt) + layer.bias


@pytest.mark.parametrize("fmt", gm.WEIGHT_FORMATS)
def test_integer_path_equals_float64_of_the_same_codes(fmt: str) -> None:
    x, linear = _data()
    layer = gm.GGUFLinear.from_float(linear, fmt, activations="q8")
    ref = _float64_reference(x, layer)
    # the integer sums are exact; only each block's float32 rescale rounds
    y = _integer_matmul(x, layer).double()
    assert (y - ref).abs().max() <= 1e-6 * ref.abs().max()
    # the layer multiplies the dequantized numbers: the same result, up to float sums
    with torch.no_grad():
        assert (layer(x).double() - y).abs().max() <= 1e-6 * ref.abs().max()
        assert (layer(x.double()) - ref).abs().max() <= 1e-12 * ref.abs().max()


@pytest.mark.parametrize("fmt", gm.WEIGHT_FORMATS)
def test_float_path_is_the_dequantized_weight(fmt: str) -> None:
    x, linear = _data()
    layer = gm.GGUFLinear.from_float(linear, fmt)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, layer.dequantized_weight(), linear.bias)
        assert torch.equal(layer(x), expected)
    w_hat = layer.dequantized_weight()
    assert (w_hat - linear.weight).norm() < 0.2 * linear.weight.norm()


def test_token_chunks_and_leading_shape_do_not_change_the_result() -> None:
    x, linear = _data(tokens=300)
    for fmt, matmul in (("Q4_0", gm.matmul_q4_0_q8_0), ("Q4_K", gm.matmul_k_q8_k)):
        raw = gm.GGUFLinear.from_float(linear, fmt).raw
        whole = matmul(x, raw, fmt)  # 300 tokens: two chunks
        assert torch.equal(torch.cat([matmul(x[:100], raw, fmt), matmul(x[100:], raw, fmt)]), whole)
        assert torch.equal(matmul(x.reshape(3, 100, -1), raw, fmt).reshape(300, -1), whole)


def test_q4_k_min_term_uses_the_activation_sums() -> None:
    # a weight that is all offset (every code 0) still multiplies: -dmin * m * sum(x codes)
    cols = 256
    linear = nn.Linear(cols, 1, bias=False)
    with torch.no_grad():
        linear.weight.fill_(-0.5)
    layer = gm.GGUFLinear.from_float(linear, "Q4_K", activations="q8")
    x = torch.ones(1, cols)
    assert torch.allclose(
        gm.matmul_k_q8_k(x, layer.raw, "Q4_K"), torch.tensor([[-128.0]]), rtol=1e-3
    )


def test_imatrix_reaches_the_k_quants() -> None:
    _, linear = _data()
    importance = torch.linspace(0, 4, 512) ** 2
    plain = gm.GGUFLinear.from_float(linear, "Q4_K")
    weighted = gm.GGUFLinear.from_float(linear, "Q4_K", imatrix=importance)
    assert torch.equal(weighted.raw, kquants.quantize_q4_k(linear.weight.detach(), importance))
    assert not torch.equal(plain.raw, weighted.raw)


def test_bad_arguments_are_named() -> None:
    x, linear = _data()
    with pytest.raises(ValueError, match="fmt must be one of"):
        gm.GGUFLinear.from_float(linear, "Q5_K")
    with pytest.raises(ValueError, match="activations must be"):
        gm.GGUFLinear.from_float(linear, "Q4_0", activations="int8")
    with pytest.raises(ValueError, match="imatrix is used by the K-quants only"):
        gm.GGUFLinear.from_float(linear, "Q4_0", imatrix=torch.ones(512))
    layer = gm.GGUFLinear.from_float(linear, "Q4_K", activations="q8")
    with pytest.raises(ValueError, match="x must have 512 features"):
        layer(x[:, :256])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x must be finite"):
        layer(bad)
    with pytest.raises(ValueError, match="multiple of 256"):
        gm.quantize_q8_k(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="'Q4_0' or 'Q8_0'"):
        gm.matmul_q4_0_q8_0(x, layer.raw, "Q4_K")
