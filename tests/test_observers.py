"""Tests of linquant_helpers.observers.

MinMax and MovingAverage observers are checked bit for bit against
``torch.ao.quantization`` (deprecated: an oracle only, never used by the package).
The others against float64 references, hand-built distributions and a plain
Python implementation of TensorRT's KL-divergence search.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from linquant_helpers import (
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    choose_qparams,
    fake_quantize,
    mse,
    observers,
    qparams_from_range,
    qrange,
)
from linquant_helpers.observers import (
    histogram_rows,
    kl_divergence_per_threshold,
    lowest_positions,
    tail_quantile,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ao = pytest.importorskip("torch.ao.quantization")

ALL = [
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PercentileObserver,
    MSEObserver,
    EntropyObserver,
]
# (bits, signed, symmetric, narrow) that PyTorch's observers can express the same way.
TORCH_SCHEMES = [
    (8, True, False, False),
    (8, True, True, False),
    (8, True, True, True),
    (8, False, False, False),
    (8, False, True, False),
    (4, True, False, False),
    (4, True, True, False),
    (4, False, False, False),
]


def _batches(seed: int, shape=(6, 5, 4, 3), n: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # each batch shifted and scaled differently, so the running statistics move
    return [
        torch.randn(shape, generator=g) * (1 + i) + 0.5 * i - 1
        for i in torch.rand(n, generator=g).mul(3).tolist()
    ]


def _torch_observer(cls, bits, signed, symmetric, narrow, axis=None, **kw):
    """The torch.ao observer with the same settings."""
    qmin, qmax = qrange(bits, signed=signed, narrow=narrow)
    kw["dtype"] = torch.qint8 if signed else torch.quint8
    if bits != 8 or narrow:
        kw.update(quant_min=qmin, quant_max=qmax)
    if axis is None:
        kw["qscheme"] = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    else:
        kw["qscheme"] = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        kw["ch_axis"] = axis
    return cls(**kw)


@pytest.mark.parametrize("scheme", TORCH_SCHEMES)
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_minmax_is_bit_identical_to_pytorch(scheme, axis) -> None:
    bits, signed, symmetric, narrow = scheme
    ours = MinMaxObserver(bits, symmetric=symmetric, signed=signed, narrow=narrow, axis=axis)
    cls = ao.MinMaxObserver if axis is None else ao.PerChannelMinMaxObserver
    ref = _torch_observer(cls, bits, signed, symmetric, narrow, axis)
    for x in _batches(seed=bits + 10 * (axis or 0)):
        assert ours(x) is x
        ref(x)
    scale, zero_point = ours.qparams()
    ref_scale, ref_zp = ref.calculate_qparams()
    assert scale.dtype == torch.float32 and zero_point.dtype == torch.int32
    assert torch.equal(scale.reshape(-1), ref_scale)
    assert torch.equal(zero_point.reshape(-1), ref_zp.to(torch.int32))
    assert torch.equal(ours.clip_range()[0].reshape(-1), ref.min_val.reshape(-1))


@pytest.mark.parametrize("scheme", TORCH_SCHEMES)
@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("c", [0.01, 0.3])
def test_moving_average_is_bit_identical_to_pytorch(scheme, axis, c) -> None:
    bits, signed, symmetric, narrow = scheme
    ours = MovingAverageMinMaxObserver(
        bits, averaging_constant=c, symmetric=symmetric, signed=signed, narrow=narrow, axis=axis
    )
    cls = (
        ao.MovingAverageMinMaxObserver if axis is None else ao.MovingAveragePerChannelMinMaxObserver
    )
    ref = _torch_observer(cls, bits, signed, symmetric, narrow, axis, averaging_constant=c)
    for x in _batches(seed=3, n=7):
        ours(x)
        ref(x)
    lo, hi = ours.clip_range()
    assert torch.equal(lo.reshape(-1), ref.min_val.reshape(-1))
    assert torch.equal(hi.reshape(-1), ref.max_val.reshape(-1))
    scale, zero_point = ours.qparams()
    ref_scale, ref_zp = ref.calculate_qparams()
    assert torch.equal(scale.reshape(-1), ref_scale)
    assert torch.equal(zero_point.reshape(-1), ref_zp.to(torch.int32))


def test_moving_average_starts_from_the_first_batch() -> None:
    obs = MovingAverageMinMaxObserver(averaging_constant=0.25)
    obs(torch.tensor([-4.0, 8.0]))
    assert obs.clip_range() == (-4.0, 8.0)
    obs(torch.tensor([0.0, 4.0]))  # min: -4 + 0.25 * (0 - -4) = -3; max: 8 + 0.25 * -4 = 7
    assert obs.clip_range() == (-3.0, 7.0)


@given(
    seed=st.integers(0, 10_000),
    n_batches=st.integers(1, 4),
    bits=st.integers(2, 8),
    symmetric=st.booleans(),
    axis=st.sampled_from([None, 0, 1]),
)
def test_minmax_equals_choose_qparams_on_all_data(seed, n_batches, bits, symmetric, axis) -> None:
    batches = _batches(seed, shape=(3, 4, 5), n=n_batches)
    obs = MinMaxObserver(bits, symmetric=symmetric, axis=axis)
    for x in batches:
        obs.update(x)
    # one range per channel across batches: concatenate along a dimension other than axis
    along = 2 if axis is not None else 0
    expected = choose_qparams(torch.cat(batches, along), bits, symmetric=symmetric, axis=axis)
    for got, want in zip(obs.qparams(), expected, strict=True):
        assert torch.equal(got, want)


def test_percentile_matches_float64_quantiles() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40_000, generator=g) * 2 + 1
    obs = PercentileObserver(percentile=99.0)
    obs(x[:15_000])
    obs(x[15_000:])
    lo, hi = obs.clip_range()
    ref = torch.quantile(x.double(), torch.tensor([0.01, 0.99], dtype=torch.float64))
    assert math.isclose(float(lo), float(ref[0]), rel_tol=1e-5)
    assert math.isclose(float(hi), float(ref[1]), rel_tol=1e-5)
    sym = PercentileObserver(percentile=99.0, symmetric=True)
    sym(x)
    a = float(torch.quantile(x.double().abs(), 0.99))
    assert math.isclose(float(sym.clip_range()[1]), a, rel_tol=1e-5)
    assert math.isclose(float(sym.clip_range()[0]), -a, rel_tol=1e-5)


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 3000),
    q=st.sampled_from([0.0, 1e-4, 0.01, 0.3, 0.5, 0.77, 0.99, 0.9999, 1.0]),
)
def test_tail_quantile_equals_torch_quantile(seed, n, q) -> None:
    rows = torch.randn(3, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows[:, : n // 3] = rows[:, : n // 3].round()  # ties
    torch.testing.assert_close(tail_quantile(rows, q), torch.quantile(rows, q, dim=1))


def test_percentile_clips_rare_outliers_and_100_is_min_max() -> None:
    x = torch.linspace(-1, 1, 100_001)
    x[7] = 50.0  # one outlier in 100k values
    pct = PercentileObserver(percentile=99.99)
    mm = MinMaxObserver()
    full = PercentileObserver(percentile=100.0)
    for obs in (pct, mm, full):
        obs(x)
    assert float(mm.clip_range()[1]) == 50.0 and float(full.clip_range()[1]) == 50.0
    assert float(pct.clip_range()[1]) < 1.0
    assert float(pct.qparams()[0]) < float(mm.qparams()[0]) / 20


def test_percentile_per_channel() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 3, generator=g) * torch.tensor([1.0, 5.0, 0.1])
    obs = PercentileObserver(percentile=95.0, axis=1)
    obs(x)
    lo, hi = obs.clip_range()
    assert lo.shape == hi.shape == (3,)
    for c in range(3):
        assert math.isclose(
            float(hi[c]), float(torch.quantile(x[:, c].double(), 0.95)), rel_tol=1e-5
        )


def test_kept_sample_is_bounded_deterministic_and_uniform() -> None:
    def run(seed=0):
        obs = PercentileObserver(max_samples=4000, seed=seed)
        obs(torch.arange(10_000.0))  # a quarter of all values seen
        obs(torch.arange(10_000.0, 40_000.0))  # three quarters
        return obs

    a, b = run(), run()
    assert a.samples.shape == (1, 4000)
    assert torch.equal(a.samples, b.samples)
    assert a.samples.unique().numel() == 4000  # drawn without replacement
    first = float((a.samples < 10_000).float().mean())
    assert abs(first - 0.25) < 0.03  # each batch kept in proportion to its size (sd 0.0065)
    assert not torch.equal(run(seed=1).samples, a.samples)  # another seed, another sample
    per_channel = PercentileObserver(max_samples=300, axis=0)
    per_channel(torch.randn(3, 500))
    assert per_channel.samples.shape == (3, 100)  # max_samples shared by the channels
    # the exact extremes are kept even when the sample misses them
    assert float(per_channel.min_val.min()) <= float(per_channel.samples.min())


def _mse_of(obs_cls, x, **kw) -> float:
    obs = obs_cls(4, **kw)
    obs(x)
    scale, zero_point = obs.qparams()
    return mse(x, fake_quantize(x, scale, zero_point, 4, signed=kw.get("signed", True)))


@pytest.mark.parametrize("dist", ["gaussian", "laplace"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_observer_beats_minmax_and_percentile_at_4_bits(dist, symmetric) -> None:
    g = torch.Generator().manual_seed(0)
    if dist == "gaussian":
        x = torch.randn(100_000, generator=g)
    else:  # Laplace by inverse CDF of a uniform sample
        u = torch.rand(100_000, generator=g) - 0.5
        x = -torch.sign(u) * torch.log1p(-2 * u.abs())
    best = _mse_of(MSEObserver, x, symmetric=symmetric)
    for other, kw in [
        (MinMaxObserver, {}),
        (PercentileObserver, {"percentile": 99.99}),
        (PercentileObserver, {"percentile": 99.9}),
        (PercentileObserver, {"percentile": 99.0}),
    ]:
        assert best <= _mse_of(other, x, symmetric=symmetric, **kw), other


def test_mse_observer_picks_each_channels_best_candidate() -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(6, 1000, generator=g) * torch.linspace(0.1, 3, 6).unsqueeze(1)
    w[2, 5] = 20.0  # an outlier in one channel only
    obs = MSEObserver(3, symmetric=True, axis=0, grid=20)
    obs(w)
    lo, hi = obs.clip_range()
    scale, _ = obs.qparams()
    for c in range(6):  # brute force, one channel and one candidate at a time
        errors = []
        for r in obs.ratios():
            s, z = choose_qparams(torch.stack([r * w[c].min(), r * w[c].max()]), 3, symmetric=True)
            errors.append(mse(w[c], fake_quantize(w[c], s, z, 3)))
        chosen = mse(w[c], fake_quantize(w[c], scale[c], 0, 3))
        assert chosen <= min(errors) + 1e-12
    assert float(hi[2]) < 10.0  # the outlier is clipped


def _group_errors(w: torch.Tensor, scale: torch.Tensor, g: int) -> torch.Tensor:
    """Squared error of each group of ``g`` weights at its scale, float64."""
    fq = fake_quantize(w, scale.reshape(w.shape[0], -1), 0, 4, narrow=True, group_size=g)
    return ((fq.double() - w.double()) ** 2).reshape(-1, g).sum(dim=1)


def test_mse_per_group_on_a_weight_with_many_groups_is_never_worse_than_absmax() -> None:
    # Weight-like: heavy-tailed rows, 384 x 1536 in groups of 16 (36 864 groups, more
    # values than MAX_SAMPLES). An observer that kept only MAX_SAMPLES // 36 864 = 7 values
    # of each group would pick its clipping on those 7 and lose to absmax on the others.
    g = torch.Generator().manual_seed(0)
    u = torch.rand(384, 1536, generator=g) - 0.5
    w = -0.02 * torch.sign(u) * torch.log1p(-2 * u.abs())  # Laplace
    w[:, 99] *= 20  # an outlier column, as in the FC2 layers of notebook 08
    groups = w.reshape(-1, 16)
    obs = MSEObserver(4, symmetric=True, narrow=True, axis=0, grid=20)
    obs.update(groups)
    assert obs.samples.shape == groups.shape  # every value of every group is kept
    mse_scale, _ = obs.qparams()
    absmax, _ = choose_qparams(groups, 4, symmetric=True, narrow=True, axis=0)
    ours, worst_case = _group_errors(w, mse_scale, 16), _group_errors(w, absmax, 16)
    assert (ours <= worst_case * (1 + 1e-6)).all()
    assert ours.sum() < 0.97 * worst_case.sum()  # and clipping pays overall
    # an explicit max_samples is still a hard bound, shared by the groups
    capped = MSEObserver(4, symmetric=True, narrow=True, axis=0, max_samples=1 << 18)
    capped.update(groups)
    assert capped.samples.shape == (groups.shape[0], (1 << 18) // groups.shape[0])


def test_histogram_rows_counts_each_row_over_its_range() -> None:
    rows = torch.tensor([[0.0, 0.1, 0.9, 1.0], [-2.0, 2.0, 2.0, 0.5]])
    counts, centers = histogram_rows(rows, torch.tensor([0.0, -2.0]), torch.tensor([1.0, 2.0]), 4)
    assert counts.tolist() == [[2, 0, 0, 2], [1, 0, 1, 2]]
    torch.testing.assert_close(centers[1], torch.tensor([-1.5, -0.5, 0.5, 1.5]))
    for ref_row, row, lo, hi in [(counts[0], rows[0], 0.0, 1.0), (counts[1], rows[1], -2.0, 2.0)]:
        assert torch.equal(ref_row, torch.histc(row, 4, lo, hi))


def _kl_reference(hist: list[float], levels: int) -> list[float]:
    """TensorRT's search, one threshold and one bin at a time, in plain Python."""
    out = []
    for i in range(levels, len(hist) + 1):
        p = hist[:i]
        p[-1] += sum(hist[i:])
        level = [j * levels // i for j in range(i)]
        total, nonempty = [0.0] * levels, [0] * levels
        for j in range(i):
            if hist[j] > 0:
                total[level[j]] += hist[j]
                nonempty[level[j]] += 1
        q = [total[level[j]] / nonempty[level[j]] if hist[j] > 0 else 0.0 for j in range(i)]
        sp, sq = sum(p), sum(q)
        kl = 0.0
        for a, b in zip(p, q, strict=True):
            if a > 0:
                kl += math.inf if b == 0 else a / sp * math.log((a / sp) / (b / sq))
        out.append(kl)
    return out


@pytest.mark.parametrize("levels", [4, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_kl_divergence_matches_a_loop_reference(levels, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(0, 6, (80,), generator=g).double()
    hist[10:14] = 0
    hist[-5:-2] = 0  # empty bins make some thresholds infinitely bad
    ours = kl_divergence_per_threshold(hist, levels)
    ref = torch.tensor(_kl_reference(hist.tolist(), levels), dtype=torch.float64)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref)) and bool(torch.isinf(ref).any())
    finite = torch.isfinite(ref)
    torch.testing.assert_close(ours[finite], ref[finite], rtol=1e-10, atol=1e-12)


def test_entropy_observer_clips_outliers_and_more_so_with_fewer_bits() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, generator=g)
    x[:20] = 40 + torch.rand(20, generator=g)  # 0.01 % far outliers
    obs = EntropyObserver(8, symmetric=True)
    obs(x)
    lo, hi = obs.clip_range()
    assert float(lo) == -float(hi)
    assert 3.0 < float(hi) < 10.0  # clips the outliers, keeps the bulk
    u = torch.rand(200_000, generator=g) - 0.5
    laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
    thresholds = []
    for bits in (8, 4):
        obs = EntropyObserver(bits, symmetric=True)
        obs(laplace)
        thresholds.append(float(obs.clip_range()[1]))
    assert thresholds[1] < thresholds[0] <= float(laplace.abs().max())
    uniform = EntropyObserver(8)
    uniform(torch.rand(100_000, generator=g))  # nothing to clip
    assert float(uniform.clip_range()[0]) == 0.0  # non-negative data: range [0, T]
    assert float(uniform.clip_range()[1]) > 0.95


def test_entropy_blind_spot_on_few_distinct_values() -> None:
    # 17 distinct values, like the digits' pixels. At 4 bits the search may stop
    # just past the first non-zero value (bin 128 of 2048): the clipped P is one
    # spike, Q matches it, KL = 0. The loop reference scores it 0 too.
    x = torch.randint(0, 17, (5000,), generator=torch.Generator().manual_seed(0)) / 16.0
    obs = EntropyObserver(4, signed=False)
    obs(x)
    assert torch.equal(obs.clip_range()[1], torch.tensor(129 / 2048))
    hist, _ = histogram_rows(obs.samples, torch.zeros(1), torch.ones(1), obs.bins)
    hist = hist[0].double()
    hist[0] = hist[1]
    coarse = hist[:136].tolist()  # thresholds 16 .. 136 only, to keep the loop short
    coarse[-1] += float(hist[136:].sum())
    ref = _kl_reference(coarse, 16)
    assert ref[129 - 16] == 0.0 and min(ref) == 0.0
    wide = EntropyObserver(8, signed=False)  # 256 levels: the search starts past bin 128
    wide(x)
    assert float(wide.clip_range()[1]) > 0.9


def test_entropy_levels_follow_the_scheme() -> None:
    assert EntropyObserver(8, symmetric=True).levels(nonnegative=True) == 128
    assert EntropyObserver(8, signed=False).levels(nonnegative=True) == 256
    assert EntropyObserver(8, signed=False).levels(nonnegative=False) == 128
    assert EntropyObserver(4).levels(nonnegative=False) == 8


@pytest.mark.parametrize("cls", ALL)
def test_bad_input_gets_a_clear_error(cls) -> None:
    obs = cls()
    with pytest.raises(ValueError, match="not seen any data"):
        obs.qparams()
    with pytest.raises(ValueError, match="empty"):
        obs.update(torch.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        obs.update(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="infinity"):
        obs.update(torch.tensor([1.0, float("inf")]))
    with pytest.raises(TypeError, match="floating-point"):
        obs.update(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="bits"):
        cls(1)
    with pytest.raises(ValueError, match="narrow"):
        cls(narrow=True, signed=False)


@pytest.mark.parametrize("cls", [c for c in ALL if c is not EntropyObserver])
def test_per_channel_errors(cls) -> None:
    obs = cls(axis=1)
    obs(torch.randn(4, 3))
    with pytest.raises(ValueError, match="3"):
        obs(torch.randn(4, 5))
    with pytest.raises(ValueError, match="axis"):
        cls(axis=2).update(torch.randn(4, 3))
    with pytest.raises(TypeError, match="axis"):
        cls(axis=1.0)


def test_settings_errors() -> None:
    with pytest.raises(ValueError, match="averaging_constant"):
        MovingAverageMinMaxObserver(averaging_constant=0.0)
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(percentile=101)
    with pytest.raises(ValueError, match="max_samples"):
        MSEObserver(max_samples=0)
    with pytest.raises(ValueError, match="grid"):
        MSEObserver(grid=0)
    with pytest.raises(ValueError, match="axis=None"):
        EntropyObserver(axis=0)
    with pytest.raises(ValueError, match="bins"):
        EntropyObserver(8, signed=False, bins=256)


@pytest.mark.parametrize("cls", ALL)
def test_all_zero_input_and_low_precision_dtypes(cls) -> None:
    obs = cls()
    obs(torch.zeros(10, dtype=torch.bfloat16))
    scale, zero_point = obs.qparams()
    assert scale.dtype == torch.float32 and float(scale) > 0  # EPS, never 0
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    half, single = cls(), cls()
    half(x.half())
    single(x.half().float())
    for a, b in zip(half.qparams(), single.qparams(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", ALL)
def test_works_as_a_forward_hook(cls) -> None:
    layer = torch.nn.Linear(4, 3)
    obs = cls(signed=False)
    handle = layer.register_forward_hook(lambda _m, _args, out: obs(out))
    x = torch.randn(8, 4)
    out = layer(x)
    handle.remove()
    assert torch.equal(out, layer(x))  # the hook returned the output unchanged
    lo, hi = obs.clip_range()
    amax = float(out.detach().abs().max())
    assert -amax <= float(lo) < float(hi) <= amax


@pytest.mark.cuda
@pytest.mark.parametrize("cls", ALL)
def test_cuda_observers_match_cpu(cls) -> None:
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    cpu, gpu = cls(), cls()
    cpu(x)
    gpu(x.cuda())
    s, z = gpu.qparams()
    assert s.device.type == "cuda"
    torch.testing.assert_close(s.cpu(), cpu.qparams()[0])


def test_the_kept_sample_does_not_follow_later_in_place_changes() -> None:
    x = torch.arange(10.0)
    obs = PercentileObserver(percentile=100.0)
    obs(x)
    x.mul_(100)  # e.g. an in-place op later in the model
    assert float(obs.clip_range()[1]) == 9.0


@pytest.mark.parametrize("cls", ALL)
def test_clip_range_is_kept_until_the_next_update(cls) -> None:
    obs = cls()
    obs(torch.linspace(0, 1, 1000))
    first = obs.clip_range()
    assert obs.clip_range() is first  # not searched again
    obs(torch.linspace(0, 5, 1000))
    assert float(obs.clip_range()[1]) > float(first[1])


# --- bounded memory: the chunked searches give the unchunked results, bit for bit ---------
# The references below are unchunked: one concatenation and one stable sort for the
# sample, one (grid * C, n) matrix for the MSE search, one (thresholds, levels) matrix
# for the KL search.


def _reference_sample(batches, cap: int, seed: int, axis) -> torch.Tensor:
    """Append each batch; past 2 * cap, keep the cap lowest (ticket, arrival) pairs in arrival
    order (one concatenation, one stable sort); cut once more at the end."""
    gen = torch.Generator().manual_seed(seed)
    values, tickets = [], []

    def cut():
        v, t = torch.cat(values, dim=1), torch.cat(tickets)
        if len(t) > cap:
            keep = t.sort(stable=True).indices[:cap].sort().values
            v, t = v[:, keep], t[keep]
        values[:], tickets[:] = [v], [t]

    for x in batches:
        rows = x.reshape(1, -1) if axis is None else x.movedim(axis, 0).reshape(x.shape[axis], -1)
        values.append(rows.float().clone())
        tickets.append(torch.rand(rows.shape[1], generator=gen))
        if sum(len(t) for t in tickets) > 2 * cap:
            cut()
    cut()
    return values[0]


@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4),
    levels=st.integers(1, 30),
    data=st.data(),
)
def test_lowest_positions_is_a_stable_sort(sizes, levels, data) -> None:
    # Few distinct values, so ties at the threshold are the rule, not the exception.
    blocks = [
        torch.tensor(data.draw(st.lists(st.integers(0, levels), min_size=s, max_size=s))).float()
        for s in sizes
    ]
    n = data.draw(st.integers(1, sum(sizes)))
    expected = torch.cat(blocks).sort(stable=True).indices[:n].sort().values
    starts = [0, *torch.tensor(sizes).cumsum(0).tolist()[:-1]]
    got = torch.cat([k + s for k, s in zip(lowest_positions(blocks, n), starts, strict=True)])
    assert torch.equal(got, expected)


def test_lowest_positions_across_chunks(monkeypatch) -> None:
    monkeypatch.setattr(observers, "CHUNK_ELEMENTS", 7)
    g = torch.Generator().manual_seed(1)
    blocks = [torch.randint(0, 9, (n,), generator=g).float() for n in (50, 3, 23)]
    expected = torch.cat(blocks).sort(stable=True).indices[:31].sort().values
    keep = lowest_positions(blocks, 31)
    assert torch.equal(torch.cat([keep[0], keep[1] + 50, keep[2] + 53]), expected)


def _reference_mse_errors(obs: MSEObserver) -> torch.Tensor:
    points, weights = obs.samples, torch.ones_like(obs.samples)
    if points.shape[1] > obs.bins:
        weights, points = histogram_rows(points, obs.min_val, obs.max_val, obs.bins)
    r = obs.ratios().unsqueeze(1)
    settings = dict(symmetric=obs.symmetric, signed=obs.signed, narrow=obs.narrow)
    scale, zero_point = qparams_from_range(r * obs.min_val, r * obs.max_val, obs.bits, **settings)
    g, (c, n) = obs.grid, points.shape
    fq = fake_quantize(
        points.expand(g, c, n).reshape(g * c, n),
        scale.flatten(),
        zero_point.flatten(),
        obs.bits,
        signed=obs.signed,
        narrow=obs.narrow,
        axis=0,
    ).reshape(g, c, n)
    return ((fq - points) ** 2 * weights).sum(dim=2) / weights.sum(dim=1)


def _reference_kl(hist: torch.Tensor, levels: int) -> torch.Tensor:
    def prefix(v):
        return torch.cat([v.new_zeros(1), torch.cumsum(v, 0)])

    hist = hist.double()
    n, bins = hist.sum(), hist.shape[0]
    count, nonzero = prefix(hist), prefix((hist > 0).double())
    h_log_h = prefix(torch.where(hist > 0, hist * torch.log(hist), hist.new_zeros(())))
    i = torch.arange(levels, bins + 1)
    clipped = n - count[i]
    last = hist[i - 1] + clipped
    p_log_p = h_log_h[i - 1] + torch.where(last > 0, last * torch.log(last), last.new_zeros(()))
    level = torch.arange(levels + 1)
    edge = (level * i.unsqueeze(1) + levels - 1) // levels
    q = count[edge[:, 1:]] - count[edge[:, :-1]]
    nnz = nonzero[edge[:, 1:]] - nonzero[edge[:, :-1]]
    p_level = q.clone()
    p_level[:, -1] += clipped
    q_of_p = q / (nnz.clamp(min=1) * count[i].unsqueeze(1))
    cross = torch.where(p_level > 0, p_level * torch.log(q_of_p), p_level.new_zeros(()))
    kl = (p_log_p - cross.sum(dim=1)) / n - torch.log(n)
    return torch.where((hist[i - 1] == 0) & (clipped > 0), torch.inf, kl)


@pytest.fixture(params=[1 << 20, 997, 64], ids=["chunk=default", "chunk=997", "chunk=64"])
def chunk(request, monkeypatch):
    """Small chunks make every search cross chunk boundaries on small shapes."""
    monkeypatch.setattr(observers, "CHUNK_ELEMENTS", request.param)
    return request.param


SHAPES = [((3, 700), 0, None), ((5, 40), 0, None), ((2000,), None, None), ((9, 31, 4), 1, 200)]


@pytest.mark.parametrize(("shape", "axis", "max_samples"), SHAPES)
def test_sample_is_the_unchunked_sample(chunk, shape, axis, max_samples):
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(shape, generator=g) * (i + 1) for i in range(4)]
    obs = PercentileObserver(axis=axis, max_samples=max_samples or 600, seed=5)
    for x in batches:
        obs.update(x)
    cap = obs._cap()
    assert torch.equal(obs.samples, _reference_sample(batches, cap, 5, axis))


@pytest.mark.parametrize(("shape", "axis", "max_samples"), SHAPES)
@pytest.mark.parametrize("bins", [16, 2048])
@pytest.mark.parametrize(("bits", "symmetric"), [(8, False), (4, True)])
def test_chunked_mse_search_is_bit_identical(
    chunk, shape, axis, max_samples, bins, bits, symmetric
):
    g = torch.Generator().manual_seed(7)
    obs = MSEObserver(bits, symmetric=symmetric, axis=axis, grid=30, bins=bins)
    obs.update(torch.randn(shape, generator=g) ** 3)
    assert torch.equal(obs.candidate_errors(), _reference_mse_errors(obs))


@pytest.mark.parametrize("symmetric", [False, True])
def test_chunked_percentile_is_bit_identical(chunk, symmetric):
    x = torch.randn(37, 300, generator=torch.Generator().manual_seed(1)) ** 3
    obs = PercentileObserver(percentile=99.0, symmetric=symmetric, axis=0)
    obs.update(x)
    lo, hi = obs.clip_range()
    s = obs.samples
    if symmetric:
        ref_hi = tail_quantile(s.abs(), 0.99)
        ref_lo = -ref_hi
    else:
        ref_lo, ref_hi = tail_quantile(s, 0.01), tail_quantile(s, 0.99)
    assert torch.equal(lo, ref_lo) and torch.equal(hi, ref_hi)


@pytest.mark.parametrize(("bins", "levels"), [(2048, 128), (700, 256), (300, 8)])
def test_chunked_kl_is_bit_identical(chunk, bins, levels):
    g = torch.Generator().manual_seed(bins)
    hist = torch.randint(0, 50, (bins,), generator=g).double() * (
        torch.rand(bins, generator=g) > 0.2
    )
    ours, ref = kl_divergence_per_threshold(hist, levels), _reference_kl(hist, levels)
    assert torch.equal(ours, ref)


def test_entropy_bins_are_validated_before_any_allocation():
    # the search this asks for needed a 43.8 GB matrix
    with pytest.raises(ValueError, match="bins must be in"):
        EntropyObserver(16, bins=200_000)
    with pytest.raises(ValueError, match="KL search over"):
        EntropyObserver(15, bins=100_000)
    with pytest.raises(TypeError, match="bins must be an int, got 2048.0"):
        EntropyObserver(8, bins=2048.0)
    with pytest.raises(ValueError, match="bins must be in"):
        MSEObserver(8, bins=10**9)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MinMaxObserver(8.0), "bits must be an int, got 8.0"),
        (lambda: MSEObserver(grid=20.0), "grid must be an int, got 20.0"),
        (lambda: MSEObserver(bins=100.0), "bins must be an int, got 100.0"),
        (lambda: PercentileObserver(max_samples=1e5), "max_samples must be an int, got 100000.0"),
        (lambda: PercentileObserver(seed=1.5), "seed must be an int, got 1.5"),
        (lambda: PercentileObserver(percentile="99"), "percentile must be a real number"),
        (lambda: MovingAverageMinMaxObserver(averaging_constant="0.1"), "averaging_constant"),
        (lambda: MinMaxObserver(symmetric=1), "symmetric must be True or False, got 1"),
        (lambda: MinMaxObserver(axis=0.0), "axis must be an int or None, got 0.0"),
    ],
)
def test_observer_parameters_of_the_wrong_type(make, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        make()


@pytest.mark.parametrize("cls", ALL)
def test_reset_starts_over(cls):
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(4, 300, generator=g) * 5, torch.randn(4, 300, generator=g)
    fresh = cls()
    fresh.update(second)
    reused = cls()
    reused.update(first)
    reused.qparams()
    reused.reset()
    with pytest.raises(ValueError, match="has not seen any data yet"):
        reused.qparams()
    reused.update(second)
    for a, b in zip(reused.qparams(), fresh.qparams(), strict=True):
        assert torch.equal(a, b)


def test_mse_search_widens_below_its_grid_when_the_optimum_is_at_the_edge() -> None:
    """Two giant weights among 590 k small ones (as in notebook 08's FC2): clipping them
    costs less than the step they impose on everyone else, and the best ratio lies below
    the grid's first candidate, 1/20. The search must go there instead of stopping at 1/20."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(384, 1536, generator=gen) * 0.05
    w[99, :2] = torch.tensor([20.0, -20.0])
    obs = MSEObserver(4, grid=20, symmetric=True)
    obs.update(w)
    assert int(obs.candidate_errors().argmin()) == 0  # the first grid's optimum is its edge
    ratio = float(obs.clip_range()[1] / w.max())
    assert ratio < 1 / 20

    def mse_at(r: float) -> float:
        scale, zero_point = qparams_from_range(r * w.min(), r * w.max(), 4, symmetric=True)
        return float(((fake_quantize(w, scale, zero_point, 4) - w) ** 2).mean())

    assert mse_at(ratio) < 0.6 * mse_at(1 / 20)  # about half the error at the first grid's edge


def test_mse_search_without_edge_is_unchanged() -> None:
    x = torch.randn(8, 512, generator=torch.Generator().manual_seed(1))
    obs = MSEObserver(8, axis=0)
    obs.update(x)
    errors = obs.candidate_errors()
    best = obs.ratios()[errors.argmin(dim=0)]
    assert (errors.argmin(dim=0) > 0).all()
    torch.testing.assert_close(obs.clip_range()[1], best * obs.max_val, rtol=0, atol=0)


@pytest.mark.parametrize("bins", [16, 2048], ids=["histogram", "values"])
def test_mse_search_frees_each_chunk_before_making_the_next(monkeypatch, bins):
    """Peak memory is one chunk of candidates, not two: the search once kept the previous
    chunk's fake-quantized copy alive while it made the next (2.4x a 4096 x 1024 weight
    instead of 1.5x, benchmarks/bench_observers.py)."""
    import weakref

    monkeypatch.setattr(observers, "CHUNK_ELEMENTS", 64 * 2)  # two rows a chunk
    made: list[weakref.ref] = []
    alive_at_call: list[int] = []
    real = observers.fake_quantize

    def counting(*args, **kwargs):
        alive_at_call.append(sum(ref() is not None for ref in made))
        out = real(*args, **kwargs)
        made.append(weakref.ref(out.untyped_storage()))  # lives as long as any view of it
        return out

    monkeypatch.setattr(observers, "fake_quantize", counting)
    obs = MSEObserver(axis=0, grid=20, bins=bins)
    obs.update(torch.randn(6, 64, generator=torch.Generator().manual_seed(0)))
    obs.candidate_errors()
    assert len(alive_at_call) > 2 and max(alive_at_call) == 0


def test_a_large_batch_is_cut_a_slice_at_a_time_with_the_same_sample(monkeypatch):
    """Per tensor, a batch far past the cap held 4 bytes of tickets per value and searched
    them all at once (2.3x a 4096 x 1024 weight); now a slice at a time, same sample."""
    x = torch.randn(50, 400, generator=torch.Generator().manual_seed(4))
    whole = PercentileObserver(max_samples=1000)
    whole.update(x)
    expected = whole.samples.clone()

    monkeypatch.setattr(observers, "CHUNK_ELEMENTS", 2000)
    searched: list[int] = []
    real = observers.lowest_positions

    def recording(blocks, n):
        searched.append(sum(len(b) for b in blocks))
        return real(blocks, n)

    monkeypatch.setattr(observers, "lowest_positions", recording)
    sliced = PercentileObserver(max_samples=1000)
    sliced.update(x)
    assert torch.equal(sliced.samples, expected)
    # 10 slices of 2000: the first is stored (2000 <= 2 cap), each later one cut
    assert len(searched) == 9 and max(searched) <= 2 * 1000 + 2000
