"""FP4 E2M1, NF4 and k-means codebooks against hand-entered values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linquant_helpers.formats import (
    dequantize_codebook,
    fake_quantize_codebook,
    fp4_e2m1_grid,
    kmeans_codebook,
    kmeans_error,
    nf4_grid,
    quantize_to_codebook,
)

# NF4 as published: Dettmers et al. 2023, "QLoRA", Appendix E, and bitsandbytes'
# functional.py (get_4bit_type("nf4")), entered by hand.
NF4_PUBLISHED = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]  # fmt: skip


def test_nf4_grid_is_the_published_table() -> None:
    # bitsandbytes computed its table from float32 probabilities (torch.linspace's default
    # dtype) and the rounded offset 0.9677083: they agree to a few float32 steps.
    published = torch.tensor(NF4_PUBLISHED, dtype=torch.float64)
    assert torch.allclose(nf4_grid(), published, rtol=0, atol=3e-7)
    assert torch.equal(nf4_grid().float(), nf4_grid().float().sort().values)


def test_fp4_e2m1_by_hand() -> None:
    # 0b0001: subnormal, m/2 = 0.5; 0b0010: e=1, 2^0 * 1 = 1; 0b0011: 1.5; 0b0100: e=2, 2;
    # 0b0101: 2 * 1.5 = 3; 0b0110: e=3, 4; 0b0111: 4 * 1.5 = 6; sign bit 0b1000 negates.
    by_hand = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    assert fp4_e2m1_grid().tolist() == by_hand


def test_codebook_quantization_by_hand() -> None:
    x = torch.tensor([[6.0, -3.1, 0.2, 1.3], [0.0, 0.0, 0.0, 0.0]])
    idx, scale = quantize_to_codebook(x, fp4_e2m1_grid(), group_size=4)
    assert scale.tolist() == [[1.0], [1.0]]  # max|x| / 6; an all-zero group gets 1
    assert idx[0].tolist() == [7, 13, 0, 3]  # 6, -3, 0 (0.2 is nearer 0 than 0.5), 1.5
    assert dequantize_codebook(idx, scale, fp4_e2m1_grid(), group_size=4)[0].tolist() == [
        6,
        -3,
        0,
        1.5,
    ]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), groups=st.integers(1, 4), rows=st.integers(1, 5))
def test_codebook_picks_the_nearest_level_and_keeps_the_absmax(seed, groups, rows) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 8 * groups, generator=gen)
    for grid in (nf4_grid(), fp4_e2m1_grid()):
        x_hat = fake_quantize_codebook(x, grid, group_size=8)
        scale = x.abs().reshape(rows, groups, 8).amax(-1, keepdim=True) / grid.abs().max()
        levels = (grid * scale.double()).float()  # every value a group can take
        dist = (x.reshape(rows, groups, 8, 1) - levels.unsqueeze(2)).abs().amin(-1)
        got = (x - x_hat).abs().reshape(rows, groups, 8)
        assert torch.allclose(got, dist, atol=1e-6)
        # The largest |x| of each group is a level: absmax scaling hits it exactly.
        assert torch.allclose(
            x_hat.abs().reshape(rows, groups, 8).amax(-1), x.abs().reshape(rows, groups, 8).amax(-1)
        )


def _brute_force_kmeans(row: torch.Tensor, k: int) -> float:
    """The least sum of squared errors over *every* labelling of the values with k labels.

    No contiguity or sorting assumed: all k^n labellings, each cluster at its mean.
    """
    n = row.numel()
    labels = torch.cartesian_prod(*[torch.arange(k)] * n)  # (k^n, n)
    onehot = torch.nn.functional.one_hot(labels, k).double()  # (k^n, n, k)
    counts = onehot.sum(1)
    sums = torch.einsum("lnk,n->lk", onehot, row)
    means = torch.where(counts > 0, sums / counts.clamp(min=1), 0.0)
    return float(((row - means.gather(1, labels)) ** 2).sum(1).min())


@pytest.mark.parametrize(("seed", "n", "k"), [(0, 7, 2), (1, 7, 3), (2, 8, 3), (3, 6, 4)])
def test_exact_kmeans_equals_brute_force(seed, n, k) -> None:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(2, n, generator=gen, dtype=torch.float64) ** 3  # skewed, uneven gaps
    c, idx = kmeans_codebook(rows, k, bins=None, iters=0)
    for r in range(2):
        assert kmeans_error(rows, c, idx)[r].item() == pytest.approx(
            _brute_force_kmeans(rows[r], k), rel=1e-12, abs=1e-15
        )


def test_kmeans_against_scikit_learn() -> None:
    """Exact <= scikit-learn's best of 20 starts; the default within 8% of exact
    (Lloyd from the quantiles, the old default, stopped at 1.34-1.89x on these rows)."""
    sklearn = pytest.importorskip("sklearn.cluster")
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(4, 256, generator=gen, dtype=torch.float64)
    exact = kmeans_error(rows, *kmeans_codebook(rows, 16, bins=None, iters=0))
    default = kmeans_error(rows, *kmeans_codebook(rows, 16))
    for r in range(4):
        km = sklearn.KMeans(16, n_init=20, random_state=0).fit(rows[r].numpy().reshape(-1, 1))
        assert exact[r] <= km.inertia_ * (1 + 1e-12)
    assert torch.all(default >= exact * (1 - 1e-12)) and torch.all(default <= exact * 1.08)


def test_kmeans_lloyd_steps_match_scikit_learn_from_the_same_start() -> None:
    sklearn = pytest.importorskip("sklearn.cluster")
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 200, generator=gen, dtype=torch.float64) * torch.tensor(
        [[1.0], [0.1], [3.0]]
    )
    start, _ = kmeans_codebook(rows, 16, iters=0, bins=24)  # a coarse programme's levels
    centroids, idx = kmeans_codebook(rows, 16, iters=100, bins=24)
    for r in range(3):
        km = sklearn.KMeans(
            16, init=start[r].numpy().reshape(-1, 1), n_init=1, max_iter=100, tol=0,
            algorithm="lloyd",
        )  # fmt: skip
        km.fit(rows[r].numpy().reshape(-1, 1))
        expected = np.sort(km.cluster_centers_.ravel())
        assert np.allclose(centroids[r].numpy(), expected, rtol=0, atol=1e-10)
        assert torch.equal(idx[r], (rows[r].unsqueeze(1) - centroids[r]).abs().argmin(1))


def test_kmeans_beats_absmax_int4_on_a_row() -> None:
    gen = torch.Generator().manual_seed(1)
    rows = torch.randn(4, 256, generator=gen, dtype=torch.float64)
    c, idx = kmeans_codebook(rows, 16)
    err_km = (rows - torch.gather(c, 1, idx)).pow(2).mean()
    s = rows.abs().amax(1, keepdim=True) / 7
    err_int = (rows - (rows / s).round().clamp(-7, 7) * s).pow(2).mean()
    assert err_km < err_int


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: quantize_to_codebook(torch.ones(2, 6), nf4_grid(), group_size=4),
            ValueError,
            "group_size",
        ),
        (
            lambda: quantize_to_codebook(torch.ones(4), [0.0, 1.0], group_size=4),
            TypeError,
            "codebook",
        ),
        (
            lambda: quantize_to_codebook(torch.ones(4), torch.zeros(4), group_size=4),
            ValueError,
            "nonzero",
        ),
        (
            lambda: quantize_to_codebook(
                torch.ones(4, dtype=torch.int32), nf4_grid(), group_size=4
            ),
            TypeError,
            "float",
        ),
        (
            lambda: dequantize_codebook(
                torch.tensor([16]), torch.ones(1), nf4_grid(), group_size=1
            ),
            ValueError,
            "indices",
        ),
        (
            lambda: dequantize_codebook(
                torch.tensor([-1]), torch.ones(1), nf4_grid(), group_size=1
            ),
            ValueError,
            "indices must be integers in \\[0, 15\\], got -1",
        ),
        (
            lambda: dequantize_codebook(
                torch.tensor([0.0]), torch.ones(1), nf4_grid(), group_size=1
            ),
            TypeError,
            "indices",
        ),
        (
            lambda: quantize_to_codebook(
                torch.tensor([1.0, float("nan")]), nf4_grid(), group_size=2
            ),
            ValueError,
            "x must be finite, but it contains NaN",
        ),
        (
            lambda: quantize_to_codebook(
                torch.tensor([1.0, -float("inf")]), nf4_grid(), group_size=2
            ),
            ValueError,
            "x must be finite, but it contains infinity",
        ),
        (
            lambda: kmeans_codebook(torch.tensor([[1.0, 2.0, float("nan"), 0.0]]), 2),
            ValueError,
            "rows must be finite",
        ),
        (lambda: kmeans_codebook(torch.ones(8), 4), ValueError, "rows must be 2-D"),
        (lambda: kmeans_codebook(torch.ones(2, 8), 9), ValueError, "k must be"),
        (lambda: kmeans_codebook(torch.ones(2, 8), 4, iters=-1), ValueError, "iters"),
        (lambda: kmeans_codebook(torch.ones(2, 8), 4, bins=3), ValueError, "bins"),
    ],
)
def test_errors_name_the_argument(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_codebook_ties_take_the_lower_level_and_equal_levels_the_first() -> None:
    # 0.25 is the midpoint of FP4's 0 and 0.5, -0.25 of -0.5 and 0: the lower level wins.
    x = torch.tensor([6.0, 0.25, -0.25, 0.0, -0.0, 1.25, -1.25, -6.0])
    idx, _ = quantize_to_codebook(x, fp4_e2m1_grid(), group_size=8)
    assert idx.tolist() == [7, 0, 9, 0, 0, 2, 11, 15]  # 0 and -0 (codes 0, 8): code 0
    # An unsorted codebook with a repeated level: indices point into it as given.
    c = torch.tensor([1.0, -1.0, 0.0, 0.5, 0.0])
    idx, _ = quantize_to_codebook(torch.tensor([0.1, 0.75, -0.6, 0.25, 1.0, -0.5]), c, group_size=6)
    assert idx.tolist() == [2, 3, 1, 2, 0, 1]


@pytest.mark.parametrize("levels", [16, 256])
def test_codebook_memory_stays_a_few_times_the_input(levels) -> None:
    """Peak RSS of a fresh process, minus its baseline: the (..., K) distance table is gone.

    A 1024 x 2048 float32 weight is 8 MiB; the old search peaked at about 70x it with
    16 levels and 1000x with 256. Allowed: 8x (a float64 copy and int32 positions are 4x).
    """
    script = f"""
import resource, torch
from linquant_helpers.formats import quantize_to_codebook
torch.set_num_threads(1)
x = torch.randn(1024, 2048, generator=torch.Generator().manual_seed(0))
c = torch.linspace(-1, 1, {levels}, dtype=torch.float64)
quantize_to_codebook(x[:64, :64], c, group_size=64)  # warm-up: libraries, small buffers
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
quantize_to_codebook(x, c, group_size=64)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024 / (x.numel() * 4))
"""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert float(done.stdout) <= 8.0


@pytest.mark.parametrize(("n", "k", "bins"), [(16, 16, 20), (17, 16, 16), (40, 5, 5)])
def test_kmeans_with_few_values_per_level_gives_k_distinct_levels(n, k, bins) -> None:
    rows = torch.randn(3, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    c, idx = kmeans_codebook(rows, k, bins=bins)
    assert torch.isfinite(c).all() and torch.all(c[:, 1:] > c[:, :-1])
    exact = kmeans_error(rows, *kmeans_codebook(rows, k, bins=None))
    assert torch.all(kmeans_error(rows, c, idx) <= exact * 1.5 + 1e-12)
