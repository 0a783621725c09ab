"""The weight-only layers' fast ``forward`` against the readable path.

The readable path is ``F.linear`` with :meth:`dequantized_weight`, which goes
through :func:`~linquant_helpers.unpack` and :func:`~linquant_helpers.dequantize`
with all their checks. ``Int4WeightLinear`` rebuilds the same float weight
without re-checking its buffers (unpacking with arithmetic shifts): equal bit
for bit. ``W8A16Linear`` multiplies its outputs by the scales instead of its
weight, ``s * (x q^T)``: equal bit for bit where nothing rounds, and otherwise
within float rounding of the exact result, checked in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from linquant_helpers import dequantize, pack, unpack
from linquant_helpers.layers import Int4WeightLinear, W8A16Linear


@st.composite
def linears(draw):
    """A seeded ``nn.Linear`` of drawn sizes (odd ones included), with or without bias."""
    in_features = draw(st.integers(1, 40))
    out_features = draw(st.integers(1, 9))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    return nn.Linear(in_features, out_features, bias=draw(st.booleans()))


def reference(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    w = layer.dequantized_weight().to(x.dtype)
    return F.linear(x, w, None if layer.bias is None else layer.bias.to(x.dtype))


def exact_result(layer: W8A16Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x (s q)^T + b`` in float64, and ``|x| |s q|^T + |b|``. ``s q`` is exact in float64
    (8-bit codes times 24-bit scales), unlike :meth:`dequantized_weight`'s float32 values."""
    w = layer.weight_q.double() * layer.weight_scale.double().unsqueeze(1)
    b = torch.zeros(w.shape[0], dtype=torch.float64) if layer.bias is None else layer.bias.double()
    exact = F.linear(x.double(), w, b)
    return exact, x.double().abs() @ w.abs().t() + b.abs()


@given(linear=linears(), dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]))
def test_w8a16_forward_is_the_formula_within_rounding(linear, dtype):
    layer = W8A16Linear.from_float(linear)
    assert torch.equal(
        layer.dequantized_weight(), dequantize(layer.weight_q, layer.weight_scale, axis=0)
    )
    x = torch.randn(3, linear.in_features).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    # A sum of k products rounds at most about k + 3 times, each by eps/2 of the running
    # total. The readable path also rounds the weight to float32 (float64 x included).
    exact, magnitude = exact_result(layer, x)
    for result, eps in [
        (y, torch.finfo(dtype).eps),
        (reference(layer, x), max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps)),
    ]:
        bound = (linear.in_features + 3) * eps * magnitude + torch.finfo(dtype).tiny
        assert ((result.double() - exact).abs() <= bound).all()


@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 5),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_w8a16_forward_equals_readable_path_where_nothing_rounds(seed, batch, bias, dtype):
    # Power-of-two scales, integer inputs and bias: every product and sum is exact
    # (|sum| < 2^24), so multiplying the outputs or the weight by s gives the same bits.
    g = torch.Generator().manual_seed(seed)
    layer = W8A16Linear(64, 24, bias=bias)
    layer.weight_q.copy_(torch.randint(-127, 128, layer.weight_q.shape, generator=g))
    layer.weight_scale.copy_(torch.pow(2.0, torch.randint(-6, 2, (24,), generator=g)))
    if bias:
        layer.bias.copy_(torch.randint(-50, 51, (24,), generator=g))
    x = torch.randint(-20, 21, (batch, 64), generator=g).to(dtype)
    assert torch.equal(layer(x), reference(layer, x))


@given(linear=linears(), data=st.data())
def test_int4_forward_matches_unpack_and_dequantize(linear, data):
    n = linear.in_features
    group_size = data.draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    layer = Int4WeightLinear.from_float(linear, group_size)
    x = torch.randn(2, 1, n)
    codes = unpack(layer.weight_packed, 4, (linear.out_features, n), signed=True)
    assert torch.equal(layer.weight_codes(), codes)
    assert torch.equal(layer(x), reference(layer, x))


def test_int4_forward_sees_every_code():
    # All 15 codes of [-7, 7] in both nibbles: the sign extension of each.
    layer = Int4WeightLinear(16, 15, bias=False, group_size=16)
    codes = torch.arange(-7, 8, dtype=torch.int8).repeat(16, 1).t().contiguous()

    layer.weight_packed.copy_(pack(codes, 4, signed=True))
    layer.weight_scale.fill_(0.5)
    x = torch.eye(16)
    assert torch.equal(layer(x), codes.t().float() * 0.5)


def test_w8a16_float16_sums_do_not_overflow():
    # x q^T with codes near 127 reaches 127 * 1024 * 4 here, beyond float16's 65504,
    # while y = x (s q)^T stays small: the codes' sum must not be formed in float16.
    linear = nn.Linear(1024, 8, bias=False)
    layer = W8A16Linear.from_float(linear)
    layer.weight_q.fill_(127)
    layer.weight_scale.fill_(2.0**-10)
    x = torch.full((2, 1024), 4.0)
    y = layer(x.half())
    assert y.dtype == torch.float16
    assert torch.equal(y.float(), layer(x))  # 127 * 4096 / 1024 = 508, exact in both
