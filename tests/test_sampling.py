"""sampling.randn: normal, reproducible, and float32."""

from __future__ import annotations

import pytest
import torch

from linquant_helpers.sampling import randn


def test_randn_is_standard_normal_and_reproducible() -> None:
    x = randn(200_000, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.shape == (200_000,)
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01
    assert abs(float((x.abs() < 1).float().mean()) - 0.6827) < 0.005  # the 68 % rule
    y = randn(200_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    assert randn(3, 4, generator=torch.Generator()).shape == (3, 4)
    with pytest.raises(ValueError, match="shape"):
        randn(-1, generator=torch.Generator())


def test_randn_names_a_bad_size_or_generator() -> None:
    gen = torch.Generator()
    with pytest.raises(TypeError, match=r"shape must hold int sizes, got 2.5 at position 1"):
        randn(3, 2.5, generator=gen)
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got int"):
        randn(3, generator=0)
