"""Error metrics against hand-computed values and numpy in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from linquant_helpers import choose_qparams, fake_quantize, max_abs_error, mse, sqnr_db


def test_hand_values():
    x = torch.tensor([1.0, 2.0, 3.0])
    y = torch.tensor([1.0, 2.0, 5.0])
    assert mse(x, y) == pytest.approx(4 / 3, rel=1e-15)
    assert max_abs_error(x, y) == 2.0
    # signal 1 + 4 + 9 = 14, noise 4: 10 * log10(3.5)
    assert sqnr_db(x, y) == pytest.approx(10 * math.log10(3.5), rel=1e-15)


def test_returns_python_floats():
    x, y = torch.randn(10), torch.randn(10)
    for value in (mse(x, y), max_abs_error(x, y), sqnr_db(x, y)):
        assert type(value) is float


def test_matches_numpy_float64():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 40)).astype(np.float32)
    b = (a + rng.standard_normal((50, 40)) * 0.01).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    assert mse(x, y) == pytest.approx(np.mean((a64 - b64) ** 2), rel=1e-12)
    assert max_abs_error(x, y) == np.max(np.abs(a64 - b64))
    expected = 10 * np.log10(np.sum(a64**2) / np.sum((a64 - b64) ** 2))
    assert sqnr_db(x, y) == pytest.approx(expected, rel=1e-12)


def test_computed_in_float64():
    # Squares of 1e20 (about 1e40) overflow float32 (max 3.4e38) but not float64.
    x = torch.full((1000,), 1e20)
    y = x / 2
    half = float(x[0]) / 2
    assert mse(x, y) == half**2
    assert sqnr_db(x, y) == pytest.approx(10 * math.log10(4), rel=1e-12)
    # float16 inputs: the signal power 1000 * 2048^2 overflows float16 (max 65504).
    x16 = torch.full((1000,), 2048.0, dtype=torch.float16)
    assert sqnr_db(x16, x16 - 1) == pytest.approx(20 * math.log10(2048), rel=1e-12)


def test_mixed_dtypes():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    y = torch.tensor([1.5, 2.0], dtype=torch.bfloat16)
    assert mse(x, y) == 0.125


def test_sqnr_limits():
    x = torch.tensor([1.0, -2.0])
    assert sqnr_db(x, x.clone()) == math.inf
    assert sqnr_db(torch.zeros(2), x) == -math.inf
    assert sqnr_db(torch.zeros(2), torch.zeros(2)) == math.inf


def test_sqnr_of_uniform_data_follows_the_6_db_per_bit_rule():
    # Uniform x on [-1, 1], step s = 2 / (2^b - 1): noise power s^2 / 12, signal 1/3,
    # so SQNR = 10 log10(4 / s^2) = 20 log10(2^b - 1), about 6.02 dB per bit.
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[0], x[1] = -1.0, 1.0
    for bits in (4, 6, 8):
        scale, zp = choose_qparams(x, bits)
        measured = sqnr_db(x, fake_quantize(x, scale, zp, bits))
        assert measured == pytest.approx(20 * math.log10(2**bits - 1), abs=0.1)
