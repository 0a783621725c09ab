"""Observers: watch the tensors that flow through a model, then choose qparams.

Weights are known in advance; activations are not. To quantize an activation
we run calibration data through the model and let an *observer* summarize
what it sees. Every observer here has the same interface:

* ``obs.update(x)`` (or ``obs(x)``, which returns ``x`` unchanged, so an
  observer can sit in a forward hook or inside a model) records a batch;
* ``obs.clip_range()`` is the ``(min_val, max_val)`` it would represent;
* ``obs.qparams()`` is ``qparams_from_range(*obs.clip_range(), bits, ...)``:
  a float32 scale and an int32 zero point, exactly as :func:`choose_qparams`
  returns them, with the same ``bits``, ``symmetric``, ``signed``, ``narrow``
  and ``axis`` keywords (``axis=k``: one range per index along dimension ``k``).

They differ in how they pick the range from what they saw:

* :class:`MinMaxObserver`: the smallest and the largest value ever seen;
* :class:`MovingAverageMinMaxObserver`: a moving average of each batch's min and max;
* :class:`PercentileObserver`: a percentile, so that rare outliers are clipped;
* :class:`MSEObserver`: the clipping range that minimizes the quantization MSE;
* :class:`EntropyObserver`: the threshold that minimizes a KL divergence (TensorRT).

The last three need the distribution, not just its extremes: they keep a
bounded, deterministic random sample of the values seen (``max_samples``; by
default at least :data:`MIN_SAMPLES_PER_CHANNEL` per channel, so that short rows,
such as the groups of a weight, are kept whole).

Memory: each class states its peak extra memory as a formula, for ``C`` channels
(rows) and a batch of ``N`` values. The searches of the last three run in chunks
of about :data:`CHUNK_ELEMENTS` entries, so their working set does not grow with
the layer (``benchmarks/bench_observers.py`` measures it). To start over, e.g. on
a new calibration set, call :meth:`Observer.reset`.
"""

from __future__ import annotations

import torch

from .affine import fake_quantize, qparams_from_range, qrange
from .granularity import Granularity
from .validation import check_finite, check_float_tensor, check_int, check_real

MAX_SAMPLES = 1 << 18
"""Values a distribution observer keeps by default (1 MiB of float32), shared by the channels."""

CHUNK_ELEMENTS = 1 << 20
"""Entries per chunk of the MSE, percentile and entropy searches (4 MiB of float32): the
candidates are evaluated a chunk at a time, so the temporaries stay a small multiple of
this whatever the layer. Chunks split independent rows only: results are bit-identical."""

MAX_BINS = 1 << 17
"""The most histogram bins the MSE and entropy observers accept."""

MAX_KL_ENTRIES = 1 << 28
"""The most ``(thresholds, levels)`` pairs an entropy search may evaluate: it bounds the
time, since the memory is chunked (2^28 pairs take on the order of ten seconds)."""

MIN_SAMPLES_PER_CHANNEL = 4096
"""With the default ``max_samples``, each channel keeps at least this many values: a
weight row of up to 4096 inputs, or any group of a per-group weight, is kept whole."""


class Observer:
    """The shared interface; subclasses define ``_observe`` and ``clip_range``.

    ``bits``, ``symmetric``, ``signed``, ``narrow`` have the meaning they have in
    :func:`qparams_from_range`. ``axis=None`` observes the whole tensor;
    ``axis=k`` keeps one range per index of dimension ``k`` (per-channel), and
    every batch must then have the same size along ``k``.
    """

    def __init__(
        self,
        bits: int = 8,
        *,
        symmetric: bool = False,
        signed: bool = True,
        narrow: bool = False,
        axis: int | None = None,
    ) -> None:
        qrange(bits, signed=signed, narrow=narrow)  # raises early for bad settings
        for flag, name in ((symmetric, "symmetric"), (signed, "signed"), (narrow, "narrow")):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise TypeError(f"axis must be an int or None, got {axis!r}")
        self.bits, self.symmetric, self.signed, self.narrow = bits, symmetric, signed, narrow
        self.axis = axis
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None
        self._range: tuple[torch.Tensor, torch.Tensor] | None = None  # clip_range, cached

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Record ``x`` and return it unchanged."""
        self.update(x)
        return x

    def update(self, x: torch.Tensor) -> None:
        """Record one batch. Raises ``TypeError`` for a non-float tensor and
        ``ValueError`` for an empty one, NaN/infinity, a bad ``axis``, or a
        channel count that differs from the previous batches'."""
        x = check_float_tensor(x)
        if x.numel() == 0:
            raise ValueError(f"x is empty (shape {tuple(x.shape)}): there is nothing to observe")
        rows = self._rows(x.detach())
        if self.min_val is not None and self.min_val.shape[0] != rows.shape[0]:
            raise ValueError(
                f"x has {rows.shape[0]} channels along axis={self.axis}, but earlier batches "
                f"had {self.min_val.shape[0]}"
            )
        # amin/amax propagate NaN and keep infinities, so checking them checks all of x,
        # without torch.isfinite(x)'s temporaries, and before any state changes.
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        check_finite(lo, "x")
        check_finite(hi, "x")
        self._range = None
        self._observe(rows, lo, hi)

    def reset(self) -> None:
        """Forget everything seen, as if just constructed (same settings, same seed)."""
        self.min_val = self.max_val = None
        self._range = None

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as float32 rows of shape ``(C, n)``: one row per channel, or ``(1, numel)``."""
        if self.axis is None:
            return x.reshape(1, -1).float()
        axis = Granularity.of(x.shape, self.axis, None).axis  # validates the axis
        return x.movedim(axis, 0).reshape(x.shape[axis], -1).float()

    def _observe(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Record ``rows`` ``(C, n)``, whose per-row min and max are ``lo`` and ``hi``."""
        raise NotImplementedError

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(min_val, max_val)`` the qparams will represent: 0-d, or ``(C,)`` per channel.

        Computed once and kept until the next update (the searches of the
        percentile, MSE and entropy observers are not free). Raises
        ``ValueError`` before any update.
        """
        if self.min_val is None:
            raise ValueError(
                f"{type(self).__name__} has not seen any data yet: call update(x) "
                "(run calibration batches) before qparams()"
            )
        if self._range is None:
            self._range = self._compute_range()
        return self._range

    def _shaped(self, t: torch.Tensor) -> torch.Tensor:
        """Per-row results, as a 0-d tensor when observing per tensor."""
        return t.reshape(()) if self.axis is None else t

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` for :func:`clip_range`, as :func:`choose_qparams` computes
        them: float32 scale, int32 zero point. Raises ``ValueError`` before any update."""
        lo, hi = self.clip_range()
        return qparams_from_range(
            lo, hi, self.bits, symmetric=self.symmetric, signed=self.signed, narrow=self.narrow
        )

    def __repr__(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        where = "per-tensor" if self.axis is None else f"axis={self.axis}"
        return f"{type(self).__name__}(bits={self.bits}, {kind}, {where})"


class MinMaxObserver(Observer):
    """Running minimum and maximum: ``min_val = min(min_val, min(x))``, same for max.

    Nothing is clipped, so a single outlier stretches the range for every other
    value. Bit-identical to ``torch.ao.quantization.MinMaxObserver`` (and its
    ``PerChannelMinMaxObserver`` with ``axis``) of the same settings.

    Peak extra memory of an update: ``O(C)``, plus a float32 copy of ``x``
    (``4 N`` bytes) when ``x`` is not float32 or ``axis`` is not its first dimension.
    """

    def _observe(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        if self.min_val is not None:
            lo, hi = torch.minimum(lo, self.min_val), torch.maximum(hi, self.max_val)
        self.min_val, self.max_val = lo, hi

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._shaped(self.min_val), self._shaped(self.max_val)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of each batch's min and max.

    The first batch sets ``min_val = min(x)``; each later batch moves it a
    fraction ``c = averaging_constant`` of the way:
    ``min_val = min_val + c * (min(x) - min_val)`` (same for max). Used during
    quantization-aware training, where ranges drift. Bit-identical to
    ``torch.ao.quantization.MovingAverageMinMaxObserver`` (and its per-channel
    variant). Raises ``ValueError`` for ``averaging_constant`` outside ``(0, 1]``.
    Peak extra memory: as :class:`MinMaxObserver`.
    """

    def __init__(self, bits: int = 8, *, averaging_constant: float = 0.01, **settings) -> None:
        super().__init__(bits, **settings)
        if not 0.0 < check_real(averaging_constant, "averaging_constant") <= 1.0:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = averaging_constant

    def _observe(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        if self.min_val is not None:
            c = self.averaging_constant
            lo = self.min_val + c * (lo - self.min_val)
            hi = self.max_val + c * (hi - self.max_val)
        self.min_val, self.max_val = lo, hi


class _SampleObserver(MinMaxObserver):
    """Keeps the exact running min/max plus a uniform random sample of the values seen.

    Every value seen draws a random ticket in ``[0, 1)``; the sample is the
    ``n`` values per channel with the lowest tickets, the earlier on a tie (all while there
    are fewer). That is a uniform random sample, without replacement, of
    everything seen, however the batches came. With ``axis``, a ticket belongs
    to a position, so all channels keep the same positions. Batches are stored
    as they come and cut back to the sample whenever they hold twice as many
    values, so memory stays bounded. Tickets come from a generator seeded with
    ``seed``: the same batches give the same sample.

    ``n`` per channel, for ``C`` channels:

    * ``max_samples=None`` (default): ``max(MAX_SAMPLES // C, MIN_SAMPLES_PER_CHANNEL)``,
      that is 262 144 values per tensor, and never fewer than 4096 per channel. A
      weight observed per group has many short rows (a 384 x 1536 weight in groups
      of 64: 9216 of 64 values); a shared budget would leave each group a handful
      of values, and a clipping chosen on those can lose to absmax on the rest. At
      most ``max(MAX_SAMPLES, 4096 C)`` values are kept (64 MiB for 4096 channels).
    * an int: ``max(1, max_samples // C)``, a hard bound shared by the channels.
      Raises ``ValueError`` outside ``[1, 1 << 24]``.

    Memory: the sample, ``4 C n`` bytes, is kept. An update of ``N = C m`` values
    that stays under ``2 n`` stored positions holds the batch (``4 N`` bytes, a copy)
    and ``4 m`` bytes of tickets until the next cut. Otherwise the batch is cut a
    slice of ``s = max(n, CHUNK_ELEMENTS / C)`` positions at a time: each cut keeps the
    ``n`` lowest ``(ticket, arrival)`` pairs with :func:`lowest_positions`, which
    reads the slice in place: ``4 s`` bytes of tickets, one bool per stored
    position and ``O(n + CHUNK_ELEMENTS)`` for the search. Per tensor, a batch of
    any size past the cap costs about ``16 max(n, CHUNK_ELEMENTS)`` bytes beyond the
    sample: a few MiB.
    """

    def __init__(
        self, bits: int = 8, *, max_samples: int | None = None, seed: int = 0, **settings
    ) -> None:
        super().__init__(bits, **settings)
        if max_samples is not None:
            check_int(max_samples, "max_samples", low=1, high=1 << 24)
        self.max_samples = max_samples
        self.seed = check_int(seed, "seed", low=0, high=2**63 - 1)
        self._reset_sample()

    def _reset_sample(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)
        self._values: list[torch.Tensor] = []  # (C, n) float32 blocks
        self._tickets: list[torch.Tensor] = []  # (n,) one ticket per position

    def reset(self) -> None:
        """Forget everything seen, sample included; the tickets restart from ``seed``."""
        super().reset()
        self._reset_sample()

    def _observe(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        super()._observe(rows, lo, hi)  # the exact min and max
        cap = self._cap()
        parts = [rows]
        if sum(len(t) for t in self._tickets) + rows.shape[1] > 2 * cap:
            # A cut is coming: take the batch a slice of positions at a time, so that its
            # tickets (4 bytes per position) and the cut's search stay a slice's worth.
            # The tickets are the same numbers as in one draw, and the n lowest of
            # everything are the n lowest of (the n lowest so far, the next slice): the
            # sample is the same as if the batch were cut whole.
            parts = list(rows.split(max(cap, CHUNK_ELEMENTS // rows.shape[0]), dim=1))
        for part in parts:
            tickets = torch.rand(part.shape[1], generator=self._generator).to(part.device)
            if sum(len(t) for t in self._tickets) + len(tickets) > 2 * cap:
                self._shrink(part, tickets)  # cut now: the slice is read, never copied whole
            else:
                self._values.append(part.clone())  # rows may be a view of the caller's tensor
                self._tickets.append(tickets)

    def _cap(self) -> int:
        """How many values each channel keeps (see the class docstring)."""
        n_channels = self.min_val.shape[0]
        if self.max_samples is None:
            return max(MAX_SAMPLES // n_channels, MIN_SAMPLES_PER_CHANNEL)
        return max(1, self.max_samples // n_channels)

    def _shrink(
        self, rows: torch.Tensor | None = None, tickets: torch.Tensor | None = None
    ) -> None:
        """Merge the stored blocks (and ``rows`` with its ``tickets``, if given) and keep
        the ``n`` values with the lowest ``(ticket, arrival)`` pairs, in arrival order.

        Nothing the size of everything seen is built: :func:`lowest_positions`
        selects the positions block by block, and the kept values are gathered
        from each block in turn.
        """
        blocks = self._values + ([] if rows is None else [rows])
        ticket_blocks = self._tickets + ([] if tickets is None else [tickets])
        if sum(len(t) for t in ticket_blocks) > self._cap():
            keep = lowest_positions(ticket_blocks, self._cap())
            blocks = [block[:, k] for block, k in zip(blocks, keep, strict=True)]
            ticket_blocks = [t[k] for t, k in zip(ticket_blocks, keep, strict=True)]
        if len(blocks) > 1:
            blocks, ticket_blocks = [torch.cat(blocks, dim=1)], [torch.cat(ticket_blocks)]
        self._values, self._tickets = blocks, ticket_blocks

    @property
    def samples(self) -> torch.Tensor | None:
        """The kept sample, float32 of shape ``(C, n)`` (``C = 1`` per tensor); None before data."""
        if not self._values:
            return None
        self._shrink()
        return self._values[0]


def lowest_positions(blocks: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """Where the ``n`` smallest values of ``torch.cat(blocks)`` are, ties going to the earlier.

    Returns one ascending index tensor per block: the same positions as
    ``torch.cat(blocks).sort(stable=True).indices[:n]``, sorted and split by block.
    Two passes, so that the working set is about ``n`` values, one chunk of
    :data:`CHUNK_ELEMENTS` and one bool mask per block, never a copy of everything:

    1. the threshold ``t``, the ``n``-th smallest value: the ``n`` smallest of
       everything are among the ``n`` smallest of each chunk, merged as they come;
    2. every position whose value is below ``t``, then the first positions equal
       to ``t``, in order, until ``n`` are kept.
    """
    best = blocks[0].new_empty(0)
    for block in blocks:
        for part in block.split(CHUNK_ELEMENTS):
            low = part.topk(min(n, len(part)), largest=False, sorted=False).values
            best = torch.cat([best, low])
            if len(best) > n:
                best = best.topk(n, largest=False, sorted=False).values
    threshold = best.max()
    missing = n - sum(int(torch.count_nonzero(block < threshold)) for block in blocks)
    keep = []
    for block in blocks:
        mask = block < threshold
        if missing > 0:  # ties at the threshold: the earliest positions win
            ties = (block == threshold).nonzero().squeeze(1)[:missing]
            mask[ties] = True
            missing -= len(ties)
        keep.append(mask.nonzero().squeeze(1))
    return keep


def tail_quantile(rows: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(rows, q, dim=1)`` (linear interpolation), reading only one tail.

    The quantile sits at position ``pos = q * (n - 1)`` of each sorted row:
    ``sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i])`` with ``i = floor(pos)``.
    Near either end only a short tail of the sort is needed, and ``torch.topk``
    finds it without sorting the rest: for the 99.99th percentile of 262 144
    values, the 27 largest. Returns shape ``(C,)`` for ``rows`` of shape ``(C, n)``.
    """
    n = rows.shape[1]
    pos = q * (n - 1)
    i = min(int(pos), n - 1)
    j = min(i + 1, n - 1)
    if q >= 0.5:  # the n - i largest, descending: sorted[m] is top[n - 1 - m]
        top = rows.topk(n - i, dim=1).values
        below, above = top[:, n - 1 - i], top[:, n - 1 - j]
    else:  # the j + 1 smallest, ascending: sorted[m] is bottom[m]
        bottom = rows.topk(j + 1, dim=1, largest=False).values
        below, above = bottom[:, i], bottom[:, j]
    return torch.lerp(below, above, pos - i)


class PercentileObserver(_SampleObserver):
    """Clip to a percentile of the values seen, so that rare outliers do not set the range.

    Asymmetric: ``[quantile(x, 1 - p), quantile(x, p)]`` with ``p = percentile / 100``;
    symmetric: ``[-a, a]`` with ``a = quantile(|x|, p)`` (as in Wu et al. 2020).
    Quantiles are those of ``torch.quantile`` (linear interpolation), computed by
    :func:`tail_quantile` on the kept sample (see ``max_samples``), a chunk of
    channels at a time. Raises ``ValueError`` for a ``percentile`` outside ``(50, 100]``.

    Peak extra memory: the sample's (see the base class), plus for the search
    ``O(CHUNK_ELEMENTS + n)`` float32 values (a chunk of ``|sample|``) and ``torch.topk``'s
    pairs, 16 bytes per value of the rows in a chunk.
    """

    def __init__(self, bits: int = 8, *, percentile: float = 99.99, **settings) -> None:
        super().__init__(bits, **settings)
        if not 50.0 < check_real(percentile, "percentile") <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        p, samples = self.percentile / 100.0, self.samples
        lo, hi = torch.empty(samples.shape[0]), torch.empty(samples.shape[0])
        for rows in _chunks(samples.shape[0], CHUNK_ELEMENTS // samples.shape[1]):
            if self.symmetric:
                hi[rows] = tail_quantile(samples[rows].abs(), p)
                lo[rows] = -hi[rows]
            else:
                lo[rows] = tail_quantile(samples[rows], 1.0 - p)
                hi[rows] = tail_quantile(samples[rows], p)
        return self._shaped(lo.to(samples.device)), self._shaped(hi.to(samples.device))


def _chunks(n: int, per_chunk: int) -> list[slice]:
    """Slices of ``range(n)`` of ``per_chunk`` items (at least one) each."""
    per_chunk = max(1, per_chunk)
    return [slice(start, min(start + per_chunk, n)) for start in range(0, n, per_chunk)]


def histogram_rows(
    rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A histogram of each row of ``rows`` ``(C, n)`` over its own ``[lo[c], hi[c]]``.

    Returns ``(counts, centers)``, both of shape ``(C, bins)``. All rows at once:
    row ``c``'s bin ``k`` is slot ``c * bins + k`` of one ``torch.bincount``.
    Values outside ``[lo, hi]`` land in the first or last bin.
    """
    c = rows.shape[0]
    width = ((hi - lo) / bins).clamp(min=torch.finfo(torch.float32).tiny).unsqueeze(1)
    # in place: one float32 and one int64 copy of the rows, not one per step
    k = (rows - lo.unsqueeze(1)).div_(width).floor_().clamp_(0, bins - 1)
    slots = k.long().add_(bins * torch.arange(c, device=rows.device).unsqueeze(1))
    del k
    counts = torch.bincount(slots.flatten(), minlength=c * bins).reshape(c, bins)
    centers = lo.unsqueeze(1) + (torch.arange(bins, device=rows.device) + 0.5) * width
    return counts.float(), centers


MAX_WIDENINGS = 4
"""How often :class:`MSEObserver` searches again below its smallest candidate."""


class MSEObserver(_SampleObserver):
    """The clipping range that minimizes the mean squared quantization error.

    Candidates shrink the min-max range by a ratio ``r`` in ``1/grid, 2/grid, .., 1``:
    ``[r * min, r * max]``. For each candidate we fake-quantize the data with
    its qparams and measure ``E[(fake_quantize(x) - x)^2]``; the candidate with
    the smallest error wins (per channel with ``axis``). Clipping trades a big
    error on a few outliers for a finer step on everyone else. When the winner
    is the smallest candidate, the optimum may lie below the grid: the search
    runs again on ``grid`` steps up to twice that ratio, up to
    :data:`MAX_WIDENINGS` times, for the channels concerned.

    All candidates are evaluated in one broadcasted call: the ``grid``
    candidates are stacked along a new dimension and passed to
    :func:`fake_quantize` as ``grid * C`` "channels". The data are the kept
    sample, summarized by a histogram of ``bins`` bins when a row holds more
    values than that. ``r = 1`` (min-max) is a candidate, so on those points
    the result is never worse than min-max.

    On the sample: by default each channel keeps at least
    :data:`MIN_SAMPLES_PER_CHANNEL` values, so a weight observed per group
    (``w.reshape(-1, g)`` with ``axis=0``: many short rows) is seen whole, and
    for ``g <= bins`` its per-group scales are never worse than absmax. An
    explicit ``max_samples`` is shared by the channels: too small, and each
    group's clipping is chosen on a few of its values. Raises ``TypeError`` for
    a ``grid`` or ``bins`` that is not an int, ``ValueError`` for ``grid`` outside
    ``[1, 10000]`` or ``bins`` outside ``[2, MAX_BINS]``.

    Peak extra memory: the sample's (see the base class), plus for the search,
    done a chunk of ``c`` channels and ``k`` candidates at a time with
    ``k c min(n, bins) <= CHUNK_ELEMENTS`` (at least one row): the histograms of a
    chunk, ``12 c n`` bytes of bin positions (float32, then int64) and ``8 c bins`` of
    counts and centers, freed before the candidates are made; then about
    ``9 k c min(n, bins)`` bytes of candidates (the data repeated for ``k > 1``, the
    codes, and the fake-quantized copy, whose squared error is computed in place),
    the qparams of the chunk only, and :func:`quantize`'s 2 MiB buffer; one chunk's
    temporaries are freed before the next chunk's are made. So about
    ``4 C n + 12 CHUNK_ELEMENTS`` bytes in all, whatever the layer
    (``benchmarks/bench_observers.py`` measures it).
    """

    def __init__(self, bits: int = 8, *, grid: int = 100, bins: int = 2048, **settings) -> None:
        super().__init__(bits, **settings)
        check_int(grid, "grid", low=1, high=10_000)
        check_int(bins, "bins", low=2, high=MAX_BINS)
        self.grid, self.bins = grid, bins

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        top = torch.ones_like(self.min_val)  # (C,): each channel's largest candidate ratio
        best, search = top.clone(), torch.ones_like(top, dtype=torch.bool)
        for _ in range(1 + (MAX_WIDENINGS if self.grid > 2 else 0)):
            ratios = self.ratios(self.min_val.device).unsqueeze(1) * top  # (grid, C)
            pick = self.candidate_errors(ratios).argmin(dim=0)  # (C,)
            best = torch.where(search, ratios.gather(0, pick.unsqueeze(0)).squeeze(0), best)
            # The smallest candidate won: the optimum lies in (0, 2 top / grid); look there.
            search = search & (pick == 0)
            if not bool(search.any()):
                break
            top = torch.where(search, 2 * top / self.grid, top)
        return self._shaped(best * self.min_val), self._shaped(best * self.max_val)

    def ratios(self, device: torch.device | None = None) -> torch.Tensor:
        """The candidate ratios ``r``, shape ``(grid,)``."""
        return torch.arange(1, self.grid + 1, device=device) / self.grid

    def candidate_errors(self, ratios: torch.Tensor | None = None) -> torch.Tensor:
        """The MSE of every candidate on the data seen, per row: shape ``(grid, C)``.

        ``ratios`` are the candidates, :meth:`ratios` by default, or one column per
        row, ``(grid, C)``. The data are the kept sample, or its histogram (bin
        centers weighted by their counts) when a row holds more than ``bins``
        values. Computed a chunk of channels and candidates at a time (see the
        class docstring).
        """
        samples = self.samples
        r = self.ratios(samples.device).unsqueeze(1) if ratios is None else ratios  # (grid, C)
        c, n = samples.shape
        width = self.bins if n > self.bins else n  # points per row: values or bins
        errors = torch.empty(r.shape[0], c, device=samples.device)
        for rows in _chunks(c, CHUNK_ELEMENTS // max(n, width)):
            points, weights = samples[rows], None  # every value counts once
            if n > self.bins:
                weights, points = histogram_rows(
                    points, self.min_val[rows], self.max_val[rows], self.bins
                )
            total = float(n) if weights is None else weights.sum(dim=1)
            n_rows = points.shape[0]
            for cands in _chunks(r.shape[0], CHUNK_ELEMENTS // (n_rows * width)):
                k = cands.stop - cands.start
                # the qparams of this chunk only: for all (grid, C) at once, each of
                # qparams_from_range's temporaries would be as large as the chunk
                r_chunk = r[cands, rows] if r.shape[1] > 1 else r[cands]
                scale, zero_point = qparams_from_range(
                    r_chunk * self.min_val[rows],
                    r_chunk * self.max_val[rows],
                    self.bits,
                    symmetric=self.symmetric,
                    signed=self.signed,
                    narrow=self.narrow,
                )
                fq = fake_quantize(
                    points.expand(k, n_rows, width).reshape(k * n_rows, width),
                    scale.flatten(),
                    zero_point.flatten(),
                    self.bits,
                    signed=self.signed,
                    narrow=self.narrow,
                    axis=0,
                ).reshape(k, n_rows, width)
                sq = fq.sub_(points).square_()  # (fq - x)^2 in place: no temporary per step
                if weights is not None:
                    sq.mul_(weights)
                errors[cands, rows] = sq.sum(dim=2) / total
                del fq, sq  # before the next chunk's are made, not after
        return errors


class EntropyObserver(_SampleObserver):
    """TensorRT's entropy calibration: the threshold that loses the least information.

    Per tensor only. Build a histogram of ``|x|`` with ``bins`` bins over
    ``[0, max|x|]``. For each candidate threshold at bin ``i`` (from ``L`` to
    ``bins``, where ``L`` is the number of quantization levels for ``[0, T]``):

    1. ``P``: the first ``i`` bins, with all the clipped counts (bins ``>= i``)
       added to bin ``i - 1``: the distribution after clipping at ``T = i * width``;
    2. ``Q``: the same ``i`` bins merged into ``L`` levels (quantization), then
       each level's count spread evenly back over its non-empty bins;
    3. ``KL(P || Q) = sum P log(P / Q)`` of the normalized ``P`` and ``Q``.

    The threshold with the smallest KL divergence wins (the largest one on a
    tie). Before the search, bin 0 gets bin 1's count, as in NVIDIA's
    ``pytorch-quantization`` (the exact zeros after a ReLU would otherwise dominate
    both distributions). Notebook 05 shows where this criterion fails (data with
    few distinct values, at low bit widths).

    ``L = 2^bits`` when the range is asymmetric and nothing negative was seen
    (e.g. after a ReLU): the range is ``[0, T]``; otherwise ``L`` is half the
    codes and the range is ``[-T, T]``. Raises ``ValueError`` for an ``axis``,
    for ``bins`` not larger than ``L`` or above :data:`MAX_BINS`, and for a search
    of more than :data:`MAX_KL_ENTRIES` (threshold, level) pairs, e.g. at 16 bits;
    ``TypeError`` for a ``bins`` that is not an int.
    (Migacz, "8-bit Inference with TensorRT", GTC 2017.)

    Peak extra memory: the sample's (see the base class), plus ``|sample|`` and
    its bin indices (``4 n + 16 n`` bytes, ``n`` values kept), the histogram and its
    prefix sums (``O(bins)``), and the KL search, a chunk of thresholds at a time:
    about ``8 * 8 * CHUNK_ELEMENTS`` bytes.
    """

    def __init__(self, bits: int = 8, *, bins: int = 2048, **settings) -> None:
        if settings.get("axis") is not None:
            raise ValueError("EntropyObserver observes whole tensors only: leave axis=None")
        super().__init__(bits, **settings)
        self.bins = check_int(bins, "bins", low=2, high=MAX_BINS)
        if bins <= self.levels(nonnegative=True):
            raise ValueError(
                f"bins must exceed the {self.levels(nonnegative=True)} levels of "
                f"{bits}-bit codes, got {bins}"
            )
        levels = (self.levels(nonnegative=True), self.levels(nonnegative=False))
        work = max((bins - lv + 1) * (lv + 1) for lv in levels)
        if work > MAX_KL_ENTRIES:
            raise ValueError(
                f"bins={bins} with {bits}-bit codes needs a KL search over {work:,} "
                f"(threshold, level) pairs, more than {MAX_KL_ENTRIES:,}: use fewer bins or bits"
            )

    def levels(self, *, nonnegative: bool) -> int:
        """``L``: how many codes cover ``[0, T]``."""
        qmin, qmax = qrange(self.bits, signed=self.signed, narrow=self.narrow)
        n_codes = qmax - qmin + 1
        return n_codes if nonnegative and not self.symmetric else n_codes // 2

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        nonnegative = bool(self.min_val[0] >= 0)
        amax = torch.maximum(-self.min_val, self.max_val)  # (1,)
        if float(amax) == 0.0:
            return self._shaped(self.min_val), self._shaped(self.max_val)
        hist, _ = histogram_rows(self.samples.abs(), torch.zeros_like(amax), amax, self.bins)
        hist = hist[0].double()
        hist[0] = hist[1]  # the spike of exact zeros (after ReLU) would outweigh everything
        kl = kl_divergence_per_threshold(hist, self.levels(nonnegative=nonnegative))
        last_best = len(kl) - 1 - int(kl.flip(0).argmin())  # on ties, the widest range
        i = self.levels(nonnegative=nonnegative) + last_best
        t = amax * i / self.bins
        return self._shaped(torch.zeros_like(t) if nonnegative else -t), self._shaped(t)


def kl_divergence_per_threshold(hist: torch.Tensor, levels: int) -> torch.Tensor:
    """``KL(P_i || Q_i)`` for every threshold bin ``i = levels .. len(hist)`` at once.

    ``hist`` is a 1-D histogram of ``|x|`` (float64 recommended); returns
    ``len(hist) - levels + 1`` divergences, ``+inf`` where ``P`` has mass that
    ``Q`` lacks (see :class:`EntropyObserver` for ``P`` and ``Q``). As in
    NVIDIA's implementation, ``Q`` is spread over the bins that are non-empty in
    ``hist``, so clipped mass piled into an empty bin ``i - 1`` gives ``+inf``.

    Rather than build ``P_i`` and ``Q_i`` bin by bin, group the KL sum by level:
    inside level ``l``, ``Q`` is the same value ``q_l / nnz_l`` on every bin where
    ``P > 0``, so with ``N`` the total count and ``P_l`` the counts of ``P`` in level ``l``::

        KL = sum_j (p_j/N) log(p_j/N)  -  sum_l (P_l/N) log(q_l / (nnz_l * sum_l q_l))

    Every sum over a run of bins is a difference of prefix sums (``cumsum``),
    so each threshold costs ``O(levels)``, not ``O(bins)``: one ``(thresholds, levels)``
    matrix instead of ``(thresholds, bins)``. Level ``l`` of threshold ``i`` holds the
    bins ``j`` with ``floor(j * levels / i) = l``, that is
    ``ceil(l * i / levels) <= j < ceil((l + 1) * i / levels)``.
    """

    def prefix(v: torch.Tensor) -> torch.Tensor:  # prefix(v)[k] = sum of v[:k]
        return torch.cat([v.new_zeros(1), torch.cumsum(v, 0)])

    hist = hist.double()
    n, bins = hist.sum(), hist.shape[0]
    count, nonzero = prefix(hist), prefix((hist > 0).double())
    h_log_h = prefix(torch.where(hist > 0, hist * torch.log(hist), hist.new_zeros(())))

    thresholds = torch.arange(levels, bins + 1, device=hist.device)  # (T,)
    level = torch.arange(levels + 1, device=hist.device)
    kl = torch.empty(len(thresholds), dtype=torch.float64, device=hist.device)
    # The thresholds are independent rows: a chunk at a time bounds the (T, levels) matrices.
    for chunk in _chunks(len(thresholds), CHUNK_ELEMENTS // (levels + 1)):
        i = thresholds[chunk]
        clipped = n - count[i]  # counts at or above bin i, moved into bin i - 1
        last = hist[i - 1] + clipped
        p_log_p = h_log_h[i - 1] + torch.where(last > 0, last * torch.log(last), last.new_zeros(()))

        edge = (level * i.unsqueeze(1) + levels - 1) // levels  # (t, levels + 1): ceil(l i / L)
        q = count[edge[:, 1:]] - count[edge[:, :-1]]  # (t, levels): counts below i per level
        nnz = nonzero[edge[:, 1:]] - nonzero[edge[:, :-1]]
        p_level = q.clone()
        p_level[:, -1] += clipped

        q_of_p = q / (nnz.clamp(min=1) * count[i].unsqueeze(1))  # Q on each non-empty bin
        cross = torch.where(p_level > 0, p_level * torch.log(q_of_p), p_level.new_zeros(()))
        part = (p_log_p - cross.sum(dim=1)) / n - torch.log(n)
        # Q is 0 on an empty bin, so clipped mass moved into an empty bin i - 1 costs +inf.
        kl[chunk] = torch.where((hist[i - 1] == 0) & (clipped > 0), torch.inf, part)
    return kl
