"""Error metrics against hand-computed values and numpy in float64; rank metrics against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats  # scikit-learn, a dependency, requires scipy

from linquant_helpers import choose_qparams, fake_quantize, max_abs_error, mse, sqnr_db
from linquant_helpers.metrics import (
    average_ranks,
    mean_cosine,
    spearman,
    spearman_rows,
    top1_accuracy,
)


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


# ---------------------------------------------------------------- embeddings (lesson 08)


def test_average_ranks_by_hand() -> None:
    ranks = average_ranks(torch.tensor([10.0, 20.0, 20.0, 30.0, 5.0]))
    assert ranks.tolist() == [2.0, 3.5, 3.5, 5.0, 1.0]


@given(
    st.lists(st.integers(-3, 3), min_size=2, max_size=40).flatmap(
        lambda xs: st.tuples(
            st.just(xs), st.lists(st.integers(-5, 5), min_size=len(xs), max_size=len(xs))
        )
    )
)
def test_spearman_matches_scipy_with_ties(xy) -> None:
    x, y = (torch.tensor(v, dtype=torch.float64) for v in xy)
    assert torch.equal(average_ranks(x), torch.tensor(scipy_stats.rankdata(x.numpy())))
    if len(set(xy[0])) < 2 or len(set(xy[1])) < 2:
        with pytest.raises(ValueError, match="constant"):
            spearman(x, y)
        return
    expected = scipy_stats.spearmanr(x.numpy(), y.numpy()).statistic
    assert math.isclose(spearman(x, y), expected, rel_tol=1e-12, abs_tol=1e-12)


def test_spearman_float32_and_bad_input() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    expected = scipy_stats.spearmanr(x.numpy(), y.numpy()).statistic
    assert math.isclose(spearman(x, y), expected, rel_tol=1e-9)
    assert spearman(x, 3 * x + 1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1-D of one length"):
        spearman(x, y[:-1])


def test_top1_accuracy_and_mean_cosine_by_hand() -> None:
    corpus = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = torch.tensor([[2.0, 0.1], [0.1, 3.0], [-1.0, -0.2]])  # nearest: 0, 1, 2
    assert top1_accuracy(queries, corpus, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    assert mean_cosine(a, b) == pytest.approx((1 / math.sqrt(2) - 1) / 2)


def test_spearman_rows_is_spearman_of_each_row() -> None:
    gen = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 6, (54,), generator=gen).double()  # graded, many ties
    sims = torch.rand(54, generator=gen)
    picks = torch.randint(0, 54, (200, 54), generator=gen)  # bootstrap resamples: ties in both
    got = spearman_rows(sims[picks], labels[picks])
    assert got.dtype == torch.float64 and got.shape == (200,)
    for b in (0, 1, 57, 199):
        expected = scipy_stats.spearmanr(sims[picks[b]].numpy(), labels[picks[b]].numpy()).statistic
        assert math.isclose(
            got[b].item(), spearman(sims[picks[b]], labels[picks[b]]), rel_tol=1e-12
        )
        assert math.isclose(got[b].item(), expected, rel_tol=1e-12, abs_tol=1e-12)
    with pytest.raises(ValueError, match="row 1 of x or y is constant"):
        spearman_rows(
            torch.tensor([[1.0, 2.0], [3.0, 3.0]]), torch.tensor([[1.0, 2.0], [1.0, 2.0]])
        )
    with pytest.raises(ValueError, match="must be \\(B, n\\)"):
        spearman_rows(torch.rand(5), torch.rand(5))
