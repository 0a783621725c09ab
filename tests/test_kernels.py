"""The fused kernels of linquant_helpers.kernels against the layers' dequantize-then-matmul path.

Two kinds of check:

* bit for bit where no rounding can happen: integer activations, power-of-two
  scales and codes give products and sums that float32 holds exactly, so any
  order of addition gives the same result, and the kernel must agree with the
  reference to the last bit (this checks the formula, the packing, the scale
  layout and the bias);
* on random data, within a stated tolerance: the kernels add in float32 in
  their own order (and the int8 kernel scales after the sum), so they round
  differently. Both results lie within a few float32 roundings of the exact
  sum; we allow ``16 eps`` of ``sum_k |x_k w_nk| + |b_n|``, measured at about
  ``2 eps`` (float32, K = 1024).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from linquant_helpers import kernels
from linquant_helpers.layers import Int4WeightLinear, W8A16Linear
from linquant_helpers.packing import pack_int4_halves

needs_int4 = pytest.mark.skipif(
    not kernels.int4_kernel_available(), reason="this PyTorch has no CPU int4 kernel"
)
EPS = torch.finfo(torch.float32).eps


def reference(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The readable path: dequantize the weight, then an ordinary matmul."""
    return F.linear(x, layer.dequantized_weight(), layer.bias)


def assert_close_to_reference(y: torch.Tensor, layer: nn.Module, x: torch.Tensor) -> None:
    w = layer.dequantized_weight().double()
    exact = F.linear(x.double(), w, layer.bias.double())
    magnitude = x.double().abs() @ w.abs().t() + layer.bias.double().abs()
    for result in (y, reference(layer, x)):
        assert ((result.double() - exact).abs() <= 16 * EPS * magnitude).all()


def exact_layer(cls, out_features: int, in_features: int, seed: int, **kw) -> nn.Module:
    """A layer whose weight, scales and bias are small integers times powers of two."""
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(in_features, out_features)
    layer = cls.from_float(linear, **kw)
    if cls is W8A16Linear:
        layer.weight_q.copy_(torch.randint(-127, 128, layer.weight_q.shape, generator=g))
    else:
        codes = torch.randint(-7, 8, (out_features, in_features), generator=g, dtype=torch.int8)
        layer.weight_packed.copy_(pack_int4_halves(codes))  # the layer's layout
    powers = torch.randint(-6, 1, layer.weight_scale.shape, generator=g)
    layer.weight_scale.copy_(torch.pow(2.0, powers))
    layer.bias.copy_(torch.randint(-50, 50, (out_features,), generator=g).float())
    return layer


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_int8_kernel_is_bit_identical_where_nothing_rounds(batch):
    layer = exact_layer(W8A16Linear, 48, 256, seed=batch)
    x = torch.randint(-20, 21, (batch, 256), generator=torch.Generator().manual_seed(1)).float()
    expected = reference(layer, x)
    layer.fused = True
    assert torch.equal(layer(x), expected)


@needs_int4
@pytest.mark.parametrize("batch", [1, 8, 64])
@pytest.mark.parametrize("group_size", [32, 64, 128, 256])
def test_int4_kernel_is_bit_identical_where_nothing_rounds(batch, group_size):
    layer = exact_layer(Int4WeightLinear, 32, 512, seed=batch, group_size=group_size)
    x = torch.randint(-20, 21, (batch, 512), generator=torch.Generator().manual_seed(2)).float()
    expected = reference(layer, x)
    layer.fused = True
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_int8_kernel_rounds_within_the_tolerance(batch):
    torch.manual_seed(batch)
    layer = W8A16Linear.from_float(nn.Linear(1024, 96))
    x = torch.randn(batch, 1024)
    layer.fused = True
    assert_close_to_reference(layer(x), layer, x)


@needs_int4
@pytest.mark.parametrize("batch", [1, 8, 64])
def test_int4_kernel_rounds_within_the_tolerance(batch):
    torch.manual_seed(batch)
    layer = Int4WeightLinear.from_float(nn.Linear(1024, 96), group_size=32)
    x = torch.randn(batch, 1024)
    layer.fused = True
    assert_close_to_reference(layer(x), layer, x)


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 9),
    out_blocks=st.integers(1, 4),
    groups=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["int8", "int4"]),
)
def test_kernels_agree_with_the_reference_on_any_shape(batch, out_blocks, groups, seed, kind):
    if kind == "int4" and not kernels.int4_kernel_available():
        return
    torch.manual_seed(seed)
    out_features, in_features = 16 * out_blocks, 32 * groups
    linear = nn.Linear(in_features, out_features)
    if kind == "int8":
        layer = W8A16Linear.from_float(linear)
    else:
        layer = Int4WeightLinear.from_float(linear, group_size=32)
    x = torch.randn(2, batch, in_features)  # leading dimensions are kept
    layer.fused = True
    y = layer(x)
    assert y.shape == (2, batch, out_features)
    assert_close_to_reference(y.reshape(-1, out_features), layer, x.reshape(-1, in_features))


def test_bfloat16_input_stays_bfloat16():
    torch.manual_seed(0)
    layer = W8A16Linear.from_float(nn.Linear(64, 32))
    x = torch.randn(4, 64)
    layer.fused = True
    y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), reference(layer, x), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("cls", [W8A16Linear, Int4WeightLinear])
def test_float64_input_takes_the_dequantize_path(cls):
    torch.manual_seed(0)
    layer = cls.from_float(nn.Linear(64, 32))
    x = torch.randn(3, 64, dtype=torch.float64)
    expected = layer(x)
    layer.fused = True
    assert torch.equal(layer(x), expected)
    assert "fused kernel" in repr(layer)


@needs_int4
def test_int4_kernel_weight_follows_load_state_dict():
    torch.manual_seed(0)
    a = Int4WeightLinear.from_float(nn.Linear(64, 32))
    b = Int4WeightLinear.from_float(nn.Linear(64, 32))
    x = torch.randn(2, 64)
    a.fused = True
    a(x)  # packs a's weight for the kernel
    a.load_state_dict(b.state_dict())
    b.fused = True
    assert torch.equal(a(x), b(x))
    c = copy.deepcopy(a)
    assert torch.equal(c(x), b(x))


@needs_int4
@pytest.mark.parametrize(
    "out_features, group_size, message",
    [(24, 32, "multiple of 16"), (32, 16, "group_size in")],
)
def test_int4_kernel_refuses_shapes_it_cannot_run(out_features, group_size, message):
    layer = Int4WeightLinear(64, out_features, group_size=group_size)
    with pytest.raises(ValueError, match=message):
        layer.fused = True
    assert not layer.fused


# ---------------------------------------------------------------- bad input, named


def _raises(exc, pattern, fn, *args):
    with pytest.raises(exc, match=pattern):
        fn(*args)


@needs_int4
def test_pack_int4_weight_refuses_codes_it_would_wrap_or_truncate() -> None:
    ok = torch.zeros(16, 64, dtype=torch.int8)
    for code in (9, -9, 8):
        bad = ok.clone()
        bad[3, 5] = code
        _raises(ValueError, r"codes must lie in \[-8, 7\]", kernels.pack_int4_weight, bad)
    _raises(TypeError, "codes must be an integer tensor", kernels.pack_int4_weight,
            torch.full((16, 64), 0.7))
    _raises(ValueError, "N a multiple of 16 and K even", kernels.pack_int4_weight, ok[:8])
    _raises(ValueError, "N a multiple of 16 and K even", kernels.pack_int4_weight, ok[:, :63])
    _raises(ValueError, "must be 2-D", kernels.pack_int4_weight, ok[0])
    # codes -8 and 7 are the ends of the range: they round-trip through the kernel
    codes = torch.arange(16 * 64).reshape(16, 64).remainder(16).sub(8).to(torch.int8)
    x = torch.eye(64)
    table = kernels.int4_scales_and_zeros(torch.ones(16, 2), torch.float32)
    w = kernels.int4_weight_matmul(x, kernels.pack_int4_weight(codes), table, 32)
    assert torch.equal(w.t(), codes.float())


def test_int8_weight_matmul_checks_its_inputs() -> None:
    x, q, s = torch.randn(3, 8), torch.zeros(4, 8, dtype=torch.int8), torch.ones(4)
    assert kernels.int8_weight_matmul(x, q, s).shape == (3, 4)
    _raises(TypeError, "x must have dtype float32, bfloat16, float16, got torch.float64",
            kernels.int8_weight_matmul, x.double(), q, s)
    _raises(TypeError, "x must be a floating-point tensor", kernels.int8_weight_matmul,
            x.int(), q, s)
    _raises(TypeError, "q must have dtype int8", kernels.int8_weight_matmul, x, q.int(), s)
    _raises(ValueError, r"x \(M, K\), q \(N, K\) and scale \(N,\) must fit",
            kernels.int8_weight_matmul, x[:, :7], q, s)
    _raises(ValueError, "must fit", kernels.int8_weight_matmul, x, q, s[:3])
    _raises(ValueError, "x must be 2-D", kernels.int8_weight_matmul, x[0], q, s)
    _raises(TypeError, "scale must be a torch.Tensor", kernels.int8_weight_matmul, x, q, 1.0)


@needs_int4
def test_int4_weight_matmul_and_table_check_their_inputs() -> None:
    x = torch.randn(2, 64)
    packed = kernels.pack_int4_weight(torch.zeros(16, 64, dtype=torch.int8))
    table = kernels.int4_scales_and_zeros(torch.ones(16, 2), torch.float32)
    assert kernels.int4_weight_matmul(x, packed, table, 32).shape == (2, 16)
    _raises(ValueError, r"group_size must be one of \(32, 64, 128, 256\), got 16",
            kernels.int4_weight_matmul, x, packed, table, 16)
    _raises(ValueError, "must fit with group_size 64", kernels.int4_weight_matmul,
            x, packed, table, 64)
    _raises(ValueError, "must fit", kernels.int4_weight_matmul, x[:, :32], packed, table, 32)
    _raises(TypeError, "scales_and_zeros must have x's dtype torch.bfloat16",
            kernels.int4_weight_matmul, x.bfloat16(), packed, table, 32)
    _raises(TypeError, "packed must have dtype uint8", kernels.int4_weight_matmul,
            x, packed.to(torch.int8), table, 32)
    _raises(TypeError, "group_size must be an int", kernels.int4_weight_matmul,
            x, packed, table, 32.0)
    _raises(TypeError, "dtype must be one of", kernels.int4_scales_and_zeros,
            torch.ones(16, 2), torch.float64)
    _raises(ValueError, "scale must be positive and finite", kernels.int4_scales_and_zeros,
            torch.tensor([[1.0, float("nan")]] * 16), torch.float32)
    _raises(ValueError, r"scale must be \(N, K / group_size\)", kernels.int4_scales_and_zeros,
            torch.ones(16), torch.float32)
    _raises(ValueError, "out_features must be in", kernels.int4_kernel_supports, 0, 32)
    _raises(TypeError, "group_size must be an int", kernels.int4_kernel_supports, 16, "32")
