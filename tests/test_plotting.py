"""The shared figures: right panels, right numbers in their titles, and a Figure returned."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from linquant_helpers import dequantize, fake_quantize, plotting, quantize, sqnr_db


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_range_mapping_counts_the_unused_codes() -> None:
    # [-1, 3] at 3 bits. Symmetric: scale 3 / 3.5, -1 -> round(-1.17) = -1, so codes
    # -4, -3, -2 are unreachable. Asymmetric: scale 4 / 7 and every code 0..7 is reachable.
    fig = plotting.plot_range_mapping(-1.0, 3.0, bits=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    symmetric, asymmetric = (ax.get_title() for ax in fig.axes)
    assert "symmetric: scale=0.857, z=0" in symmetric and "3 of 8 codes unused" in symmetric
    assert "asymmetric: scale=0.571, z=2" in asymmetric and "0 of 8 codes unused" in asymmetric


def test_roundtrip_error_draws_the_error_and_the_bound() -> None:
    x = torch.linspace(-1.5, 1.5, 301)
    x_hat = fake_quantize(x, 0.25, 0, bits=3)
    fig = plotting.plot_roundtrip_error(x, x_hat, scale=0.25, representable=(-1.0, 0.75))
    left, right = fig.axes
    staircase = left.get_lines()[1].get_ydata()
    error = right.get_lines()[0].get_ydata()
    assert torch.allclose(torch.as_tensor(staircase), x_hat.double())
    assert torch.allclose(torch.as_tensor(error), (x_hat - x).double())
    bounds = sorted(line.get_ydata()[0] for line in right.get_lines()[1:])
    assert bounds == [-0.125, 0.125]
    assert len(left.patches) == 2 and len(right.patches) == 2  # the two clamped regions


def test_quantization_levels_title_reports_codes_used_and_sqnr() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(500, generator=gen) * 2.0  # in [0, 2): symmetric 3-bit leaves codes unused
    scale, zero_point = 2.0 / 3.5, 0
    fig = plotting.plot_quantization_levels(x, scale, zero_point, 3, label="demo")
    q = quantize(x, scale, zero_point, 3)
    expected_sqnr = sqnr_db(x, dequantize(q, scale, zero_point))
    title = fig.axes[0].get_title()
    assert title.startswith("demo\n")
    assert f"{q.unique().numel()}/8 codes used" in title
    assert f"SQNR {expected_sqnr:.1f} dB" in title


def test_quantization_levels_draws_into_a_given_axes() -> None:
    fig, axes = plt.subplots(1, 2)
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])
    returned = plotting.plot_quantization_levels(x, 1.0, 0, 3, ax=axes[1], log=True)
    assert returned is fig
    assert axes[1].get_title() == "4/8 codes used, SQNR inf dB"  # every value on the grid
    assert axes[0].get_title() == ""


def test_sqnr_vs_bits_draws_every_curve() -> None:
    bits = [2, 3, 4]
    measured = {
        "a": [1.0, 2.0, 3.0],
        "b": [2.0, 3.0, 4.0],
        "c": [0, 0, 0],
        "d": [1, 1, 1],
        "e": [2, 2, 2],
        "f": [3, 3, 3],
    }  # more curves than markers
    fig = plotting.plot_sqnr_vs_bits(
        bits, measured, {"rule": [6.02 * b for b in bits]}, ylabel="dB"
    )
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == [*measured, "rule"]
    assert ax.get_ylabel() == "dB"
    assert list(ax.get_lines()[-1].get_ydata()) == pytest.approx([12.04, 18.06, 24.08])
