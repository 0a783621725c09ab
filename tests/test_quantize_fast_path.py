"""quantize's fast eager path gives the codes of its formula, bit for bit, and compiles.

:func:`linquant_helpers.quantize` reads as the formula
``clamp(round(x / scale + zero_point))``; on large CPU tensors it hands the
work to the private, blocked ``_quantize_fast``. Here the two are run on the
same inputs, with blocks made small so that every tensor spans many of them,
and must agree on every code. A second part checks that ``torch.compile``
traces ``quantize`` in one graph and computes the same codes.
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from linquant_helpers import affine, choose_qparams, quantize
from linquant_helpers.hardware import (
    ADD_THEN_ROUND,
    quantize_round_then_add,
    zero_point_rounding_order,
)

# Values up to +-1e6, plus the ones that need care: infinities (they clamp),
# exact ties of x / scale and signed zeros.
special = st.sampled_from([float("inf"), float("-inf"), 0.5, -0.5, 1.5, -2.5, -0.0, 0.0])
values = st.one_of(st.floats(-1e6, 1e6, allow_nan=False, width=32), special)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12)
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@contextmanager
def path(fast: bool, block: int = 1 << 18):
    """quantize on its fast path with blocks of ``block`` elements, or on the formula."""
    threshold = 0 if fast else float("inf")
    with (
        mock.patch.object(affine, "_FAST_MIN_ELEMENTS", threshold),
        mock.patch.object(affine, "_BLOCK_ELEMENTS", block),
    ):
        yield


@st.composite
def cases(draw):
    """x, its qparams and quantize's keywords: every granularity, bit width and dtype."""
    shape = draw(shapes)
    array = draw(hnp.arrays(np.float32, shape, elements=values))
    x = torch.from_numpy(array).to(draw(st.sampled_from(DTYPES)))
    bits = draw(st.integers(2, 16))
    signed = draw(st.booleans())
    narrow = signed and draw(st.booleans())
    kind = draw(st.sampled_from(["tensor", "channel", "group"]))
    granularity = {}
    if kind == "channel":
        granularity = {"axis": draw(st.integers(-x.ndim, x.ndim - 1))}
    elif kind == "group":
        n = x.shape[-1]
        granularity = {
            "group_size": draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
        }
    # qparams from a finite copy of x (its infinities replaced), symmetric or not
    finite = torch.nan_to_num(x.float(), posinf=1e6, neginf=-1e6)
    symmetric = draw(st.booleans())
    scale, zero_point = choose_qparams(
        finite, bits, symmetric=symmetric, signed=signed, narrow=narrow, **granularity
    )
    if draw(st.booleans()):  # one zero point shared by every channel or group
        zero_point = int(zero_point.flatten()[0])
    kwargs = dict(bits=bits, signed=signed, narrow=narrow, **granularity)
    return x, scale, zero_point, kwargs


@given(case=cases(), block=st.sampled_from([1, 5, 64, 1000]))
def test_fast_path_is_bit_identical_to_the_formula(case, block):
    x, scale, zero_point, kwargs = case
    with path(fast=False):
        expected = quantize(x, scale, zero_point, **kwargs)
    with path(fast=True, block=block):
        got = quantize(x, scale, zero_point, **kwargs)
    assert got.dtype == expected.dtype and got.shape == expected.shape == x.shape
    assert torch.equal(got, expected)


@pytest.mark.parametrize("granularity", [{}, {"axis": 0}, {"axis": 1}, {"group_size": 64}])
def test_fast_path_on_a_large_tensor(granularity):
    # The default block size, on a tensor of many blocks: what the benchmark times.
    x = torch.randn(1024, 512, generator=torch.Generator().manual_seed(0)) * 3
    scale, zero_point = choose_qparams(x, **granularity)
    with path(fast=False):
        expected = quantize(x, scale, zero_point, **granularity)
    assert x.numel() >= affine._FAST_MIN_ELEMENTS  # quantize takes the fast path here
    assert torch.equal(quantize(x, scale, zero_point, **granularity), expected)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fast_path_is_bit_identical_to_torch_quantize_per_tensor():
    # Data near ties of x / scale, where one rounding and two roundings differ.
    g = torch.Generator().manual_seed(1)
    x = (torch.randint(-300, 300, (512, 512), generator=g) + 0.5) * 0.37
    x += torch.randn(x.shape, generator=g) * 1e-5
    scale, zero_point = 0.37, 3
    theirs = torch.quantize_per_tensor(x, scale, zero_point, torch.qint8).int_repr()
    with path(fast=True, block=4096):
        ours = quantize(x, scale, zero_point)
    if zero_point_rounding_order() == ADD_THEN_ROUND:  # this PyTorch adds first, as quantize
        assert torch.equal(ours, theirs)
    else:  # it rounds first, as quantize_round_then_add; quantize differs at near ties only
        assert torch.equal(quantize_round_then_add(x, scale, zero_point), theirs)
        differ = ours != theirs
        assert int((ours.int() - theirs.int()).abs().max()) <= 1
        if differ.any():
            exact = x[differ].double() / scale
            assert float((exact - exact.floor() - 0.5).abs().max()) < 1e-4


@pytest.mark.parametrize("fast", [True, False])
def test_nan_in_a_late_block_is_rejected(fast):
    x = torch.randn(300, 40)
    x[-1, -1] = float("nan")
    with path(fast=fast, block=128), pytest.raises(ValueError, match="NaN"):
        quantize(x, 0.1, 0, axis=None)


# --- torch.compile --------------------------------------------------------------------


@pytest.mark.parametrize("granularity", [{}, {"axis": 0}, {"group_size": 32}])
def test_quantize_traces_without_a_graph_break(granularity):
    torch._dynamo.reset()
    x = torch.randn(64, 128)
    scale, zero_point = choose_qparams(x, **granularity)
    explanation = torch._dynamo.explain(quantize)(x, scale, zero_point, **granularity)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_quantize_gives_the_same_codes_and_rejects_nan():
    torch._dynamo.reset()
    compiled = torch.compile(quantize)
    g = torch.Generator().manual_seed(2)
    x = (torch.randint(-200, 200, (256, 256), generator=g) + 0.5) * 0.05
    x += torch.randn(x.shape, generator=g) * 1e-6  # near ties
    for granularity in ({}, {"group_size": 64}):
        scale, zero_point = choose_qparams(x, **granularity)
        expected = quantize(x, scale, zero_point, **granularity)
        assert torch.equal(compiled(x, scale, zero_point, **granularity), expected)
    bad = x.clone()
    bad[7, 9] = float("nan")
    for granularity in ({}, {"axis": 0}, {"group_size": 64}):
        scale, zero_point = choose_qparams(x, **granularity)
        with pytest.raises(RuntimeError, match="NaN"):
            compiled(bad, scale, zero_point, **granularity)
    # infinities are not NaN: they clamp to the end codes, compiled as eagerly
    edge = x.clone()
    edge[0, :2] = torch.tensor([float("inf"), -float("inf")])
    scale, zero_point = choose_qparams(x)
    assert torch.equal(compiled(edge, scale, zero_point), quantize(edge, scale, zero_point))
    with pytest.raises(RuntimeError, match="scale must be positive"):
        compiled(x, -scale, zero_point)


def test_the_formula_rounds_once_on_every_cpu() -> None:
    """quantize's formula path computes the multiply-add in float64 and rounds once, the same
    value as a fused multiply-add; where this CPU's kernels fuse, they agree everywhere."""
    from linquant_helpers.affine import _addcmul_is_fused, _fma

    a = torch.full((3,), 1 + 2**-12)
    c = torch.full((3,), -(1 + 2**-11))
    assert torch.equal(_fma(a, a, c), torch.full((3,), 2.0**-24))  # two roundings give 0
    if not _addcmul_is_fused():
        pytest.skip("this CPU's addcmul rounds twice; quantize avoids it (fast path off)")
    gen = torch.Generator().manual_seed(0)
    x, inv = torch.randn(100_000, generator=gen), torch.tensor(1 / 0.0137)
    z = torch.tensor(77.0)
    assert torch.equal(_fma(x, inv, z), torch.addcmul(z, x, inv))


# --- the quick qparam checks of large per-group qparams ------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        (float("nan"), "scale must be positive and finite"),
        (0.0, "scale must be positive and finite"),
        (float("inf"), "scale must be positive and finite"),
        (1e-45, "so that 1 / scale is finite"),
    ],
)
def test_a_bad_value_among_many_scales_is_named(bad, message):
    x = torch.randn(64, 2048)
    scale, zero_point = choose_qparams(x, group_size=32)
    assert scale.numel() >= 1024  # many scales: one aminmax, then the search that names it
    scale[40, 7] = bad
    with pytest.raises(ValueError, match=message):
        quantize(x, scale, zero_point, group_size=32)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8])
def test_a_zero_point_out_of_range_among_many_is_named(dtype):
    x = torch.randn(64, 2048)
    scale, zero_point = choose_qparams(x, group_size=32, signed=False, bits=4)
    zero_point = zero_point.to(dtype)
    zero_point[3, 5] = 16
    with pytest.raises(ValueError, match=r"zero_point must be an integer in \[0, 15\], got 16"):
        quantize(x, scale, zero_point, bits=4, signed=False, group_size=32)
