"""Figures the notebooks share. Each function draws one idea and returns its Figure.

The figures stay legible yet small on disk (the notebooks set ``figure.dpi = 110``) and compute
nothing the package does not already compute: codes, qparams and errors come
from :mod:`linquant_helpers.affine` and :mod:`linquant_helpers.metrics`.

* :func:`plot_range_mapping`       - how a float range lands on the integer codes
* :func:`plot_roundtrip_error`     - the staircase ``x -> x_hat`` and its sawtooth error
* :func:`plot_quantization_levels` - a histogram of the data under the grid of codes
* :func:`plot_sqnr_vs_bits`        - SQNR against the number of bits, with reference lines
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import cycle

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .affine import dequantize, qparams_from_range, qrange, quantize
from .metrics import sqnr_db

USED, UNUSED, DATA = "tab:blue", "tab:red", "tab:orange"


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the single axes of a new figure of ``figsize``."""
    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


def plot_range_mapping(
    x_min: float,
    x_max: float,
    bits: int = 3,
    *,
    figsize: tuple[float, float] = (8, 3),
) -> Figure:
    """Symmetric (left) and asymmetric (right) mapping of ``[x_min, x_max]`` onto codes.

    In each panel the top line is the real axis, the bottom line the integer
    codes; a segment joins each code ``q`` to the value it stands for,
    ``scale * (q - zero_point)``. Codes that no ``x`` in ``[x_min, x_max]``
    can reach are drawn in red: those are the codes the scheme wastes.
    The schemes are min-max, as :func:`~linquant_helpers.affine.qparams_from_range`
    computes them: signed codes with ``z = 0`` for symmetric, unsigned codes
    for asymmetric. Keep ``bits`` small (2 to 4) so each code stays visible.
    """
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    for ax, symmetric in zip(axes, (True, False), strict=True):
        signed = symmetric
        scale, zero_point = qparams_from_range(
            torch.tensor(x_min), torch.tensor(x_max), bits, symmetric=symmetric, signed=signed
        )
        qmin, qmax = qrange(bits, signed=signed)
        codes = torch.arange(qmin, qmax + 1)
        values = dequantize(codes, scale, zero_point)
        # The codes the data can produce: everything between the codes of its ends.
        ends = quantize(torch.tensor([x_min, x_max]), scale, zero_point, bits, signed=signed)
        used = (codes >= ends[0]) & (codes <= ends[1])
        _draw_mapping(ax, codes, values, used, (x_min, x_max))
        kind = "symmetric" if symmetric else "asymmetric"
        ax.set_title(
            f"{kind}: scale={scale.item():.3g}, z={zero_point.item()}\n"
            f"{int((~used).sum())} of {len(codes)} codes unused",
            fontsize=10,
        )
    fig.tight_layout()
    return fig


def _draw_mapping(
    ax: Axes,
    codes: torch.Tensor,
    values: torch.Tensor,
    used: torch.Tensor,
    data_range: tuple[float, float],
) -> None:
    """One panel of :func:`plot_range_mapping`: real axis on top, codes below.

    Both axes are drawn on [0, 1] horizontally, each with its own scale, so
    that the segments show how the mapping stretches and shifts the range.
    """
    lo = min(float(values.min()), data_range[0])
    hi = max(float(values.max()), data_range[1])

    def real_pos(v: float) -> float:
        return (v - lo) / (hi - lo)

    def code_pos(q: int) -> float:
        return (q - int(codes[0])) / (int(codes[-1]) - int(codes[0]))

    ax.hlines([1, 0], 0, 1, color="black", lw=1)
    ax.hlines(1, real_pos(data_range[0]), real_pos(data_range[1]), color=DATA, lw=6, alpha=0.6)
    for q, v, u in zip(codes.tolist(), values.tolist(), used.tolist(), strict=True):
        color = USED if u else UNUSED
        ax.plot([real_pos(v), code_pos(q)], [1, 0], color=color, lw=1, alpha=0.8)
        ax.plot(real_pos(v), 1, "o", color=color, ms=4)
        ax.text(code_pos(q), -0.12, str(q), ha="center", va="top", fontsize=10, color=color)
    for v in (data_range[0], 0.0, data_range[1]):
        ax.text(real_pos(v), 1.1, f"{v:g}", ha="center", va="bottom", fontsize=10)
    ax.text(-0.02, 1, "x", ha="right", va="center")
    ax.text(-0.02, 0, "q", ha="right", va="center")
    ax.set_xlim(-0.08, 1.04)
    ax.set_ylim(-0.35, 1.35)
    ax.axis("off")


def plot_roundtrip_error(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    *,
    scale: float | None = None,
    representable: tuple[float, float] | None = None,
    figsize: tuple[float, float] = (8, 3),
) -> Figure:
    """Left: the staircase ``x -> x_hat``; right: the error ``x_hat - x``.

    ``x`` is a sorted 1-D tensor and ``x_hat`` its round trip (e.g.
    ``dequantize(quantize(x, ...))``). With ``scale`` the error panel shows the
    bound ``+-scale/2``; with ``representable = (lowest, highest)``, the
    smallest and largest values the codes stand for, the regions beyond them
    (where values are clamped) are shaded.
    """
    x, x_hat = x.detach().double().cpu(), x_hat.detach().double().cpu()
    fig, (left, right) = plt.subplots(1, 2, figsize=figsize)
    left.plot(x, x, ls="--", color="gray", lw=1, label="x (no error)")
    left.plot(x, x_hat, color=USED, lw=1.5, label="dequantize(quantize(x))")
    left.set(xlabel="x", ylabel="x_hat", title="round trip: a staircase")
    left.legend(fontsize=10, loc="upper left")
    right.plot(x, x_hat - x, color=UNUSED, lw=1)
    right.set(xlabel="x", ylabel="x_hat - x", title="error: a sawtooth")
    if scale is not None:
        right.axhline(scale / 2, ls=":", color="black", lw=1, label="±scale/2")
        right.axhline(-scale / 2, ls=":", color="black", lw=1)
        right.legend(fontsize=10, loc="lower left")
    if representable is not None:
        for ax in (left, right):
            ax.axvspan(float(x[0]), representable[0], color="gray", alpha=0.2, lw=0)
            ax.axvspan(representable[1], float(x[-1]), color="gray", alpha=0.2, lw=0)
    fig.tight_layout()
    return fig


def plot_quantization_levels(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int,
    bits: int,
    *,
    signed: bool = True,
    narrow: bool = False,
    ax: Axes | None = None,
    label: str = "",
    bins: int = 60,
    log: bool = False,
    figsize: tuple[float, float] = (8, 3),
) -> Figure:
    """A histogram of ``x`` with a tick at every value the codes can represent.

    Ticks the data never reaches are red: wasted codes. The title reports how
    many codes ``x`` really uses and the SQNR of its round trip, both measured
    with the package. Keep ``bits`` at 5 or fewer for ticks that stay
    readable. ``log=True`` gives the histogram a log scale, for data with a
    spike (post-ReLU zeros). Pass ``ax`` to draw into an existing subplot.
    """
    ax = _axes(ax, figsize)
    qmin, qmax = qrange(bits, signed=signed, narrow=narrow)
    codes = torch.arange(qmin, qmax + 1)
    levels = dequantize(codes, scale, zero_point)
    q = quantize(x, scale, zero_point, bits, signed=signed, narrow=narrow)
    reached = torch.isin(codes, q.long())
    ax.hist(x.detach().flatten().cpu().numpy(), bins=bins, color=DATA, alpha=0.6, log=log)
    bottom, top = ax.get_ylim()
    ax.vlines(levels[reached].numpy(), bottom, top, color=USED, lw=1)
    ax.vlines(levels[~reached].numpy(), bottom, top, color=UNUSED, lw=1, ls="--")
    ax.set_ylim(bottom, top)
    sqnr = sqnr_db(x, dequantize(q, scale, zero_point))
    stats = f"{int(reached.sum())}/{len(codes)} codes used, SQNR {sqnr:.1f} dB"
    ax.set_title(f"{label}\n{stats}" if label else stats, fontsize=10)
    ax.set_xlabel("x")
    ax.set_yticks([])
    ax.set_yticks([], minor=True)
    return ax.figure


def plot_sqnr_vs_bits(
    bits: Sequence[int],
    measured: Mapping[str, Sequence[float]],
    reference: Mapping[str, Sequence[float]] | None = None,
    *,
    ylabel: str = "SQNR (dB)",
    ax: Axes | None = None,
    figsize: tuple[float, float] = (6, 3.5),
) -> Figure:
    """SQNR (dB) against bits: ``measured`` curves as markers, ``reference`` as dashed lines.

    Each mapping goes from a legend label to one value per entry of ``bits``.
    Plot a difference (e.g. SQNR minus 6.02 dB per bit) by passing it with its
    ``ylabel``; pass ``ax`` to draw into an existing subplot.
    """
    ax = _axes(ax, figsize)
    for (name, values), marker in zip(measured.items(), cycle("osd^v")):
        ax.plot(bits, values, marker=marker, ms=5, lw=1, label=name)
    for name, values in (reference or {}).items():
        ax.plot(bits, values, ls="--", lw=1, label=name)
    ax.set(xlabel="bits", ylabel=ylabel, xticks=list(bits))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10)
    ax.figure.tight_layout()
    return ax.figure
