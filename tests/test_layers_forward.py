"""The weight-only layers' fast ``forward`` equals the readable path, bit for bit.

``W8A16Linear`` and ``Int4WeightLinear`` rebuild their float weight on every
call without re-checking their buffers, and the int4 layer unpacks with
arithmetic shifts. The reference is ``F.linear`` with :meth:`dequantized_weight`,
which goes through :func:`~linquant_helpers.unpack` and
:func:`~linquant_helpers.dequantize`.
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


@given(linear=linears(), dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]))
def test_w8a16_forward_matches_dequantize(linear, dtype):
    layer = W8A16Linear.from_float(linear)
    x = torch.randn(3, linear.in_features).to(dtype)
    assert torch.equal(
        layer.dequantized_weight(), dequantize(layer.weight_q, layer.weight_scale, axis=0)
    )
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
