"""Shared test settings: hypothesis profiles, the CUDA marker, the reference solutions."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

from linquant_helpers import DigitsCNN, fold_batchnorm, trained_digits_model

# Tests import the reference solutions the way the notebooks do: `from solutions import lesson01`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "notebooks"))

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def trained_digits():
    """``(model, data)``: the digits CNN of notebooks 04, 05 and 07, from the shipped weights."""
    return trained_digits_model(0, progress=False)


@pytest.fixture
def folded_cnn() -> nn.Module:
    """An untrained DigitsCNN with non-trivial BatchNorm statistics, folded."""
    torch.manual_seed(0)
    net = DigitsCNN()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.1)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
    return fold_batchnorm(net)
