"""QTensor: codes and qparams kept together, with an honest byte count."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from linquant_helpers import choose_qparams, dequantize, quantize
from linquant_helpers.qtensor import QTensor, quantize_tensor

X = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)) + 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"symmetric": True},
        {"signed": False},
        {"narrow": True, "symmetric": True},
        {"axis": 0},
        {"axis": -1, "bits": 4},
        {"group_size": 4, "bits": 4},
        {"bits": 12},
    ],
)
def test_quantize_tensor_is_choose_qparams_then_quantize(kwargs):
    kwargs = dict(kwargs)
    bits = kwargs.pop("bits", 8)
    symmetric = kwargs.pop("symmetric", False)
    qt = quantize_tensor(X, bits, symmetric=symmetric, **kwargs)
    scale, zp = choose_qparams(X, bits, symmetric=symmetric, **kwargs)
    assert torch.equal(qt.scale, scale) and torch.equal(qt.zero_point, zp)
    assert torch.equal(qt.q, quantize(X, scale, zp, bits, **kwargs))
    where = {k: v for k, v in kwargs.items() if k in ("axis", "group_size")}
    assert torch.equal(qt.dequantize(), dequantize(qt.q, scale, zp, **where))
    assert qt.shape == X.shape
    assert (qt.bits, qt.symmetric) == (bits, symmetric)
    assert qt.axis == kwargs.get("axis") and qt.group_size == kwargs.get("group_size")


@pytest.mark.parametrize(
    ("kwargs", "nbytes"),
    [
        # 128 int8 codes + one float32 scale + one int32 zero point
        ({}, 128 + 4 + 4),
        # 8 channels of (scale, zero point)
        ({"axis": 0}, 128 + 8 * (4 + 4)),
        ({"axis": 1}, 128 + 16 * (4 + 4)),
        # 8 x 4 groups of 4
        ({"group_size": 4}, 128 + 32 * (4 + 4)),
        # 12-bit codes need int16: 2 bytes each
        ({"bits": 12}, 128 * 2 + 4 + 4),
        # 16-bit unsigned codes need int32
        ({"bits": 16, "signed": False}, 128 * 4 + 4 + 4),
        # 4-bit codes still sit in int8, one byte each (pack them to halve this)
        ({"bits": 4}, 128 + 4 + 4),
    ],
)
def test_nbytes_counts_codes_and_qparams(kwargs, nbytes):
    assert quantize_tensor(X, **kwargs).nbytes == nbytes


def test_qtensor_is_frozen_and_has_a_readable_repr():
    qt = quantize_tensor(X, 4, symmetric=True, group_size=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        qt.bits = 8
    text = repr(qt)
    for part in ("shape=(8, 16)", "bits=4", "symmetric", "group_size=8", "torch.int8", "nbytes="):
        assert part in text
    assert "per-tensor" in repr(quantize_tensor(X))
    assert "axis=1" in repr(quantize_tensor(X, axis=1))


def test_dequantize_error_at_most_half_a_step():
    qt = quantize_tensor(X, axis=0)
    err = (qt.dequantize() - X).abs()
    # half a step, plus a few float32 ulps of |x| for the roundings of s and s * (q - z)
    eps = torch.finfo(torch.float32).eps
    assert bool((err <= qt.scale.unsqueeze(1) / 2 + 4 * eps * X.abs()).all())


def test_qtensor_can_be_built_by_hand():
    q = torch.tensor([0, 4], dtype=torch.int8)
    qt = QTensor(q, torch.tensor(0.5), torch.tensor(2), 8, False, True, False, None, None)
    assert qt.dequantize().tolist() == [-1.0, 1.0]
