"""Tests of linquant_helpers.outliers: LLM.int8()'s decomposition against a float64 reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from linquant_helpers.outliers import (
    LLMInt8Linear,
    llm_int8_matmul,
    outlier_columns,
    simulate_llm_int8,
)


def reference(x: torch.Tensor, w: torch.Tensor, t: float, wb: int = 8, ab: int = 8):
    """LLM.int8() written out independently: float64 float part, int64 integer sums."""
    rows, w = x.reshape(-1, x.shape[-1]).double(), w.double()
    out = (rows.abs() >= t).any(dim=0)
    qa, qw = 2 ** (ab - 1) - 1, 2 ** (wb - 1) - 1
    rest = torch.where(out, 0.0, rows)
    # the package's scales are float32 and x / s is x * (1 / s), as PyTorch's kernels do
    sx = (rest.abs().amax(dim=1).float() / qa).clamp(min=torch.finfo(torch.float32).eps)
    sw = (w.abs().amax(dim=1).float() / qw).clamp(min=torch.finfo(torch.float32).eps)
    cx = torch.round(rest * (1 / sx).double()[:, None]).clamp(-qa, qa).long()
    cw = torch.round(w * (1 / sw).double()[:, None]).clamp(-qw, qw).long()
    acc = cx @ cw.T  # exact integer sums
    y = rows[:, out] @ w[:, out].T + acc.double() * sx.double()[:, None] * sw.double()[None, :]
    return y.reshape(*x.shape[:-1], w.shape[0])


def test_outlier_columns_by_hand() -> None:
    x = torch.tensor([[[0.5, -6.0, 5.9], [1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [7.0, 0.0, 0.0]]])
    assert outlier_columns(x, 6.0).tolist() == [True, True, False]
    assert outlier_columns(x, 5.9).tolist() == [True, True, True]


@pytest.mark.parametrize(("wb", "ab"), [(8, 8), (4, 8), (4, 4)])
def test_matches_float64_reference_with_exact_integer_sums(wb, ab) -> None:
    gen = torch.Generator().manual_seed(wb * 10 + ab)
    x = torch.randn(3, 20, 96, dtype=torch.float64, generator=gen)
    x[0, 4, 7], x[2, 11, 50] = 25.0, -9.0  # two outlier columns
    w = torch.randn(40, 96, dtype=torch.float64, generator=gen)
    got = llm_int8_matmul(x, w, 6.0, weight_bits=wb, act_bits=ab)
    torch.testing.assert_close(got, reference(x, w, 6.0, wb, ab), rtol=1e-12, atol=1e-12)


def test_outlier_columns_are_exact_and_the_rest_is_close() -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(50, 64, dtype=torch.float64, generator=gen)
    x[:, 3] *= 40.0
    w = torch.randn(16, 64, dtype=torch.float64, generator=gen)
    y = llm_int8_matmul(x, w, 6.0)
    # with all columns outliers (threshold below every value) the product is float
    torch.testing.assert_close(llm_int8_matmul(x, w, 1e-9), x @ w.T, rtol=1e-12, atol=1e-12)
    # the decomposition beats int8 of everything: column 3 no longer sets the step
    err = (y - x @ w.T).norm() / (x @ w.T).norm()
    everything = reference(x, w, 1e9)
    assert err < 0.01 < 1.0 and err < (everything - x @ w.T).norm() / (x @ w.T).norm()


@settings(max_examples=25, deadline=None)
@given(
    tokens=st.integers(1, 12),
    n=st.integers(1, 40),
    out=st.integers(1, 9),
    scale=st.floats(0.1, 20.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_reference(tokens, n, out, scale, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, n, dtype=torch.float64, generator=gen) * scale
    w = torch.randn(out, n, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(
        llm_int8_matmul(x, w, 6.0), reference(x, w, 6.0), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_shape_and_module(dtype) -> None:
    layer = nn.Linear(32, 5).to(dtype)
    x = torch.randn(2, 3, 32).to(dtype)
    x[1, 2, 4] = 10.0
    module = LLMInt8Linear(layer, 6.0)
    y = module(x)
    assert y.dtype == dtype and y.shape == (2, 3, 5)
    expected = llm_int8_matmul(x, layer.weight.detach(), 6.0) + layer.bias.detach()
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    assert module.seen.nonzero().flatten().tolist() == [4]


def test_simulate_llm_int8_copies() -> None:
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    sim = simulate_llm_int8(model, 6.0)
    assert isinstance(model[0], nn.Linear) and isinstance(sim[0], LLMInt8Linear)
    x = torch.randn(5, 16)
    assert (sim(x) - model(x)).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_preserved() -> None:
    x, w = torch.randn(8, 64, device="cuda"), torch.randn(4, 64, device="cuda")
    x[0, 3] = 9.0
    y = llm_int8_matmul(x, w)
    assert y.device == x.device
    torch.testing.assert_close(y.cpu(), llm_int8_matmul(x.cpu(), w.cpu()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: llm_int8_matmul(torch.randn(3, 8), torch.randn(4, 9)), ValueError, "same in"),
        (lambda: llm_int8_matmul(torch.randn(3, 8), torch.randn(8)), ValueError, "weight"),
        (lambda: llm_int8_matmul(torch.randn(3, 8), torch.ones(4, 8).int()), TypeError, "weight"),
        (lambda: llm_int8_matmul([1.0], torch.randn(4, 1)), TypeError, "x must be"),
        (
            lambda: llm_int8_matmul(torch.tensor([[float("nan")]]), torch.ones(1, 1)),
            ValueError,
            "x must be finite",
        ),
        (
            lambda: llm_int8_matmul(torch.ones(1, 1), torch.tensor([[float("inf")]])),
            ValueError,
            "weight must be finite",
        ),
        (lambda: llm_int8_matmul(torch.ones(1, 2), torch.ones(1, 2), 0.0), ValueError, "threshold"),
        (lambda: outlier_columns(torch.ones(2), float("nan")), ValueError, "threshold"),
        (lambda: outlier_columns(torch.ones(2), "6"), TypeError, "threshold"),
        (
            lambda: llm_int8_matmul(torch.ones(1, 2), torch.ones(1, 2), act_bits=1),
            ValueError,
            "bits",
        ),
    ],
)
def test_bad_input_names_the_argument(call, error, words) -> None:
    with pytest.raises(error, match=words):
        call()
