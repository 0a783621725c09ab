"""The weight-only layers' blocked ``forward`` against the readable path and float64.

The readable path is ``F.linear`` with :meth:`dequantized_weight`, which goes
through :func:`~linquant_helpers.packing.unpack_int4_halves` and
:func:`~linquant_helpers.dequantize` with all their checks. ``forward`` builds the
weight a block of output rows at a time (``layer.block_elements``) and multiplies
each block at once: ``Int4WeightLinear``'s blocks are the readable weight's rows bit
for bit; ``W8A16Linear`` multiplies its outputs by the scales instead of its weight,
``s * (x q^T)``. Both equal the readable path bit for bit where nothing rounds
(integer ``x``, power-of-two scales), at every block size, and are otherwise within
float rounding of the exact result, checked in float64, at every block size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from linquant_helpers import dequantize
from linquant_helpers.layers import BLOCK_ELEMENTS, Int4WeightLinear, W8A16Linear, blocked_linear
from linquant_helpers.packing import pack_int4_halves, unpack_int4_halves


@st.composite
def linears(draw):
    """A seeded ``nn.Linear`` of drawn sizes (odd ones included), with or without bias."""
    in_features = draw(st.integers(1, 40))
    out_features = draw(st.integers(1, 9))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    return nn.Linear(in_features, out_features, bias=draw(st.booleans()))


def block_sizes(in_features: int):
    """``block_elements`` of 1 row, a few rows, and the default (every row at once here)."""
    return st.sampled_from([1, in_features, 3 * in_features, BLOCK_ELEMENTS])


def reference(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    w = layer.dequantized_weight().to(x.dtype)
    return F.linear(x, w, None if layer.bias is None else layer.bias.to(x.dtype))


def exact_result(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x (s q)^T + b`` in float64, and ``|x| |s q|^T + |b|``. ``s q`` is exact in float64
    (4- or 8-bit codes times 24-bit scales), unlike :meth:`dequantized_weight`'s float32."""
    if isinstance(layer, W8A16Linear):
        w = layer.weight_q.double() * layer.weight_scale.double().unsqueeze(1)
    else:
        scale = layer.weight_scale.double().repeat_interleave(layer.group_size, dim=1)
        w = layer.weight_codes().double() * scale
    b = torch.zeros(w.shape[0], dtype=torch.float64) if layer.bias is None else layer.bias.double()
    exact = F.linear(x.double(), w, b)
    return exact, x.double().abs() @ w.abs().t() + b.abs()


def assert_within_rounding(result: torch.Tensor, layer: nn.Module, x: torch.Tensor) -> None:
    # A sum of k products rounds at most about k + 3 times, each by eps/2 of the running
    # total; the weight itself is rounded to float32 once (float64 x included).
    exact, magnitude = exact_result(layer, x)
    eps = max(torch.finfo(result.dtype).eps, torch.finfo(torch.float32).eps)
    bound = (layer.in_features + 3) * eps * magnitude + torch.finfo(result.dtype).tiny
    assert ((result.double() - exact).abs() <= bound).all()


def int4_layer(linear: nn.Linear, draw) -> Int4WeightLinear:
    n = linear.in_features
    group_size = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    return Int4WeightLinear.from_float(linear, group_size)


@given(
    linear=linears(),
    kind=st.sampled_from(["w8a16", "int4"]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
    data=st.data(),
)
def test_forward_is_the_formula_within_rounding_at_every_block_size(linear, kind, dtype, data):
    layer = W8A16Linear.from_float(linear) if kind == "w8a16" else int4_layer(linear, data.draw)
    layer.block_elements = data.draw(block_sizes(linear.in_features))
    x = torch.randn(3, linear.in_features).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    assert_within_rounding(y, layer, x)
    assert_within_rounding(reference(layer, x), layer, x)


def exact_case(layer: nn.Module, g: torch.Generator, batch: int, dtype: torch.dtype):
    """Power-of-two scales, integer bias and x: every product and sum is exact (|sum| < 2^24)."""
    layer.weight_scale.copy_(
        torch.pow(2.0, torch.randint(-6, 2, layer.weight_scale.shape, generator=g))
    )
    if layer.bias is not None:
        layer.bias.copy_(torch.randint(-50, 51, layer.bias.shape, generator=g))
    return torch.randint(-20, 21, (batch, layer.in_features), generator=g).to(dtype)


@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 5),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    rows=st.sampled_from([1, 5, 24, 1000]),
)
def test_w8a16_equals_readable_path_where_nothing_rounds(seed, batch, bias, dtype, rows):
    g = torch.Generator().manual_seed(seed)
    layer = W8A16Linear(64, 24, bias=bias)
    layer.weight_q.copy_(torch.randint(-127, 128, layer.weight_q.shape, generator=g))
    layer.block_elements = rows * 64
    x = exact_case(layer, g, batch, dtype)
    assert torch.equal(layer(x), reference(layer, x))


@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 5),
    bias=st.booleans(),
    in_features=st.sampled_from([64, 63]),
    rows=st.sampled_from([1, 5, 24, 1000]),
)
def test_int4_equals_readable_path_where_nothing_rounds(seed, batch, bias, in_features, rows):
    g = torch.Generator().manual_seed(seed)
    layer = Int4WeightLinear(in_features, 24, bias=bias, group_size={64: 16, 63: 21}[in_features])
    codes = torch.randint(-8, 8, (24, in_features), generator=g, dtype=torch.int8)
    layer.weight_packed.copy_(pack_int4_halves(codes))
    layer.block_elements = rows * in_features
    x = exact_case(layer, g, batch, torch.float32)
    assert torch.equal(layer(x), reference(layer, x))


@given(linear=linears(), data=st.data())
def test_int4_blocks_are_the_readable_weight_bit_for_bit(linear, data):
    layer = int4_layer(linear, data.draw)
    assert torch.equal(
        layer.weight_codes(), unpack_int4_halves(layer.weight_packed, linear.in_features)
    )
    # every block of rows, cut anywhere: the rows of dequantized_weight() exactly
    n = linear.out_features
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    out = torch.empty(stop - start, linear.in_features)
    scratch = torch.empty_like(layer.weight_packed[start:stop])
    block = layer._dequantize_rows(start, stop, out, scratch)
    assert torch.equal(block, layer.dequantized_weight()[start:stop])


def test_int4_forward_sees_every_code():
    # All 16 codes of [-8, 7] in both nibbles: the sign of each.
    layer = Int4WeightLinear(32, 16, bias=False, group_size=16)
    codes = torch.arange(-8, 8, dtype=torch.int8)
    codes = torch.stack([codes.roll(i) for i in range(16)])  # row i: every code, shifted
    codes = torch.cat([codes, codes.flip(1)], dim=1)  # both halves of every row
    layer.weight_packed.copy_(pack_int4_halves(codes))
    layer.weight_scale.fill_(0.5)
    layer.block_elements = 3 * 32  # blocks of 3 rows, the last one short
    assert torch.equal(layer(torch.eye(32)), codes.t().float() * 0.5)


@pytest.mark.parametrize("kind", ["w8a16", "int4"])
def test_forward_result_does_not_depend_on_the_block_size_beyond_rounding(kind):
    torch.manual_seed(0)
    linear = nn.Linear(256, 200)
    layer = (
        W8A16Linear.from_float(linear) if kind == "w8a16" else Int4WeightLinear.from_float(linear)
    )
    x = torch.randn(4, 256)
    results = []
    for rows in (1, 7, 64, 200, 10_000):
        layer.block_elements = rows * 256
        results.append(layer(x))
        assert_within_rounding(results[-1], layer, x)
    # blocks change no output by more than a few float32 steps of the largest one
    spread = torch.stack(results).amax(0) - torch.stack(results).amin(0)
    assert spread.max() <= 64 * torch.finfo(torch.float32).eps * results[-1].abs().max()


@pytest.mark.parametrize("kind", ["w8a16", "int4"])
def test_forward_keeps_the_gradient_of_x(kind):
    # blocks are multiplied into a preallocated result, which records no gradient:
    # an x that needs one gets the whole weight at once
    torch.manual_seed(0)
    linear = nn.Linear(64, 40)
    layer = (
        W8A16Linear.from_float(linear) if kind == "w8a16" else Int4WeightLinear.from_float(linear)
    )
    layer.block_elements = 64 * 8
    x = torch.randn(3, 64, requires_grad=True)
    layer(x).sum().backward()
    w = layer.dequantized_weight()
    torch.testing.assert_close(x.grad, w.sum(0).expand(3, -1), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert_within_rounding(layer(x), layer, x.detach())


def test_blocked_linear_writes_each_block_into_its_columns():
    # a weight whose row n is all n: y[m, n] = n * sum_k x[m, k], exact in float32
    seen = []

    def rows(start, stop, buffer):
        seen.append((start, stop))
        return buffer.copy_(
            torch.arange(start, stop, dtype=torch.float32)[:, None].expand_as(buffer)
        )

    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    y = blocked_linear(x, 10, rows, torch.float32, block_elements=4 * 3)
    assert seen == [(0, 4), (4, 8), (8, 10)]
    assert torch.equal(y, x.sum(1, keepdim=True) * torch.arange(10.0))


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


def test_w8a16_dequantized_weight_is_the_formula():
    layer = W8A16Linear.from_float(nn.Linear(16, 4))
    expected = dequantize(layer.weight_q, layer.weight_scale, axis=0)
    assert torch.equal(layer.dequantized_weight(), expected)


def test_w8a16_fused_kernel_with_bfloat16_activations_is_the_formula():
    # The fastest exact path where PyTorch has fast int8 code for bfloat16 activations
    # (benchmarks/bench_kernels.py): layer.fused = True, x in bfloat16. The kernel takes
    # its scales in bfloat16 (8 significant bits), so the bound allows one rounding of
    # each scale besides the sums' roundings in bfloat16.
    torch.manual_seed(0)
    layer = W8A16Linear.from_float(nn.Linear(512, 96))
    x = torch.randn(4, 512).bfloat16()
    layer.fused = True
    y = layer(x)
    assert y.dtype == torch.bfloat16
    exact, magnitude = exact_result(layer, x)
    eps = torch.finfo(torch.bfloat16).eps
    assert ((y.double() - exact).abs() <= (512 + 4) * eps * magnitude).all()


@given(linear=linears(), data=st.data())
def test_int4_in_one_block_is_nn_linear_with_the_dequantized_weight_bit_for_bit(linear, data):
    # Where one block holds every row (the default block at these sizes, and every
    # layer of MiniLM), forward is F.linear with the same float32 weight and bias:
    # the same sums in the same order as the float model that simulates it (lesson 08).
    layer = int4_layer(linear, data.draw)
    x = torch.randn(2, 3, linear.in_features)
    assert torch.equal(layer(x), reference(layer, x))
