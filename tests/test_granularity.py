"""Granularity: the shapes of per-tensor, per-channel and per-group qparams, and their math."""

from __future__ import annotations

import pytest
import torch

from linquant_helpers import choose_qparams, dequantize, quantize
from linquant_helpers.granularity import Granularity


@pytest.mark.parametrize(
    ("shape", "axis", "group_size", "qparam_shape", "reduce_dims", "text"),
    [
        ((4, 6), None, None, (), (0, 1), "per-tensor"),
        ((), None, None, (), (), "per-tensor"),
        ((4, 6), 0, None, (4,), (1,), "per-channel (axis=0)"),
        ((4, 6), -1, None, (6,), (0,), "per-channel (axis=1)"),
        ((2, 3, 5), -2, None, (3,), (0, 2), "per-channel (axis=1)"),
        ((7,), 0, None, (7,), (), "per-channel (axis=0)"),
        ((4, 6), None, 3, (4, 2), (2,), "per-group (group_size=3)"),
        ((2, 3, 8), None, 4, (2, 3, 2), (3,), "per-group (group_size=4)"),
        ((8,), None, 8, (1,), (1,), "per-group (group_size=8)"),
    ],
)
def test_granularity_shapes(shape, axis, group_size, qparam_shape, reduce_dims, text):
    g = Granularity.of(torch.Size(shape), axis, group_size)
    assert g.axis == (None if axis is None else axis % len(shape))
    assert g.qparam_shape == qparam_shape
    assert g.reduce_dims() == reduce_dims
    assert g.describe() == text


def test_grouped_view_puts_consecutive_elements_in_one_group():
    x = torch.arange(12.0).reshape(2, 6)
    g = Granularity.of(x.shape, None, 3)
    assert g.grouped(x).tolist() == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    assert Granularity.of(x.shape, 1, None).grouped(x) is x


def test_broadcastable_reshapes_for_each_granularity():
    shape = torch.Size((2, 3, 4))
    assert Granularity.of(shape, 1, None).broadcastable(torch.ones(3), "s").shape == (1, 3, 1)
    assert Granularity.of(shape, -1, None).broadcastable(torch.ones(4), "s").shape == (1, 1, 4)
    grouped = Granularity.of(shape, None, 2).broadcastable(torch.ones(2, 3, 2), "s")
    assert grouped.shape == (2, 3, 2, 1)
    # one value fits every granularity (e.g. a zero point shared by all channels)
    assert Granularity.of(shape, 0, None).broadcastable(torch.ones(1), "s").shape == ()


def _loop_reference_qparams(x, group_size, **kwargs):
    """Per-group qparams the slow, obvious way: one choose_qparams call per group."""
    groups = x.reshape(-1, group_size)
    pairs = [choose_qparams(gr, **kwargs) for gr in groups]
    shape = x.shape[:-1] + (x.shape[-1] // group_size,)
    scale = torch.stack([p[0] for p in pairs]).reshape(shape)
    zp = torch.stack([p[1] for p in pairs]).reshape(shape)
    return scale, zp


@pytest.mark.parametrize("shape", [(16,), (3, 16), (2, 3, 16)])
@pytest.mark.parametrize("group_size", [2, 4, 16])
@pytest.mark.parametrize("symmetric", [False, True])
def test_per_group_equals_choose_qparams_group_by_group(shape, group_size, symmetric):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)) + 0.2
    scale, zp = choose_qparams(x, 4, symmetric=symmetric, group_size=group_size)
    ref_scale, ref_zp = _loop_reference_qparams(x, group_size, bits=4, symmetric=symmetric)
    assert torch.equal(scale, ref_scale) and torch.equal(zp, ref_zp)

    q = quantize(x, scale, zp, 4, group_size=group_size)
    x_hat = dequantize(q, scale, zp, group_size=group_size)
    flat = zip(
        x.reshape(-1, group_size),
        q.reshape(-1, group_size),
        x_hat.reshape(-1, group_size),
        ref_scale.flatten(),
        ref_zp.flatten(),
        strict=True,
    )
    for x_group, q_group, x_hat_group, s, z in flat:
        assert torch.equal(q_group, quantize(x_group, s, z, 4))
        assert torch.equal(x_hat_group, dequantize(q_group, s, z))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_per_channel_equals_per_tensor_slice_by_slice(axis):
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(4)) * 2 - 0.3
    scale, zp = choose_qparams(x, axis=axis)
    q = quantize(x, scale, zp, axis=axis)
    x_hat = dequantize(q, scale, zp, axis=axis)
    for c in range(x.shape[axis]):
        xc = x.select(axis, c)
        sc, zc = choose_qparams(xc)
        assert float(scale[c]) == float(sc) and int(zp[c]) == int(zc)
        assert torch.equal(q.select(axis, c), quantize(xc, sc, zc))
        assert torch.equal(x_hat.select(axis, c), dequantize(quantize(xc, sc, zc), sc, zc))


def test_negative_axis_is_the_same_as_positive():
    x = torch.randn(3, 4, 5)
    for neg, pos in ((-1, 2), (-2, 1), (-3, 0)):
        s_n, z_n = choose_qparams(x, axis=neg)
        s_p, z_p = choose_qparams(x, axis=pos)
        assert torch.equal(s_n, s_p) and torch.equal(z_n, z_p)
        assert torch.equal(quantize(x, s_n, z_n, axis=neg), quantize(x, s_p, z_p, axis=pos))
