"""Tests of linquant_helpers.rotations: Hadamard matrices, the fast transform, rotated layers."""

from __future__ import annotations

import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from linquant_helpers.rotations import (
    block_hadamard_transform,
    hadamard_matrix,
    hadamard_rotate,
    hadamard_transform,
    orthogonality_error,
    paley_hadamard_12,
    random_orthogonal,
    rotated_linear,
    simulate_rotated,
    sylvester_hadamard,
)
from linquant_helpers.smoothquant import fake_quantize_activation
from linquant_helpers.weights import fake_quantize_weight


@pytest.mark.parametrize("n", [1, 2, 4, 16, 128, 1024])
def test_sylvester_matrix_is_scipys(n) -> None:
    expected = torch.tensor(scipy.linalg.hadamard(n), dtype=torch.float64)
    assert torch.equal(sylvester_hadamard(n), expected)
    assert torch.equal(hadamard_matrix(n), expected)


@pytest.mark.parametrize("n", [1, 2, 8, 64, 512, 2048])
def test_fast_transform_equals_scipy_matrix(n) -> None:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(3, 2, n, dtype=torch.float64, generator=gen)
    h = torch.tensor(scipy.linalg.hadamard(n), dtype=torch.float64)
    torch.testing.assert_close(hadamard_transform(x), x @ h / n**0.5, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [12, 24, 384, 1536])
def test_paley_and_kronecker_matrices_are_hadamard_exactly(n) -> None:
    h = hadamard_matrix(n).long()
    assert set(h.unique().tolist()) == {-1, 1}
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=torch.long))


def test_paley_12_by_hand() -> None:
    h = paley_hadamard_12().long()
    assert h[0].tolist() == [1] * 12  # first row: all ones
    assert h[1:, 0].tolist() == [-1] * 11
    assert torch.equal(h @ h.T, 12 * torch.eye(12, dtype=torch.long))


@pytest.mark.parametrize("n", [32, 384, 1536])
def test_rotate_equals_its_matrix(n) -> None:
    x = torch.randn(5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        hadamard_rotate(x), x @ hadamard_matrix(n) / n**0.5, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(("n", "block"), [(384, 128), (1536, 512), (48, 16)])
def test_block_transform_equals_block_diagonal_matrix(n, block) -> None:
    x = torch.randn(4, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    h = torch.tensor(scipy.linalg.hadamard(block), dtype=torch.float64) / block**0.5
    q = torch.block_diag(*[h] * (n // block))
    assert orthogonality_error(q) < 1e-12
    torch.testing.assert_close(block_hadamard_transform(x, block), x @ q, rtol=1e-12, atol=1e-12)


def test_a_spike_becomes_flat() -> None:
    for n in (256, 384):
        spike = torch.zeros(n, dtype=torch.float64)
        spike[99] = 20.0
        flat = hadamard_rotate(spike)
        torch.testing.assert_close(flat.abs(), torch.full((n,), 20.0 / n**0.5, dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(k=st.integers(0, 8), rows=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_transform_is_orthogonal_and_its_own_inverse(k, rows, seed) -> None:
    n = 2**k
    x = torch.randn(rows, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = hadamard_transform(x)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hadamard_transform(y), x, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    width=st.sampled_from([8, 12, 24, 64, 96]),
    out=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_rotation_leaves_a_linear_layer_unchanged(width, out, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(7, width, dtype=torch.float64, generator=gen)
    w = torch.randn(out, width, dtype=torch.float64, generator=gen)
    # (x Q)(W Q)^T == x W^T for the Hadamard rotation and for a random orthogonal Q
    torch.testing.assert_close(
        F.linear(hadamard_rotate(x), hadamard_rotate(w)), F.linear(x, w), rtol=1e-10, atol=1e-10
    )
    q = random_orthogonal(width, generator=gen)
    assert orthogonality_error(q) < 1e-12
    torch.testing.assert_close(F.linear(x @ q, w @ q), F.linear(x, w), rtol=1e-10, atol=1e-10)


def test_random_orthogonal_is_seeded() -> None:
    a = random_orthogonal(16, generator=torch.Generator().manual_seed(3))
    b = random_orthogonal(16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_shape_preserved(dtype) -> None:
    x = torch.randn(2, 3, 384).to(dtype)
    for y in (
        hadamard_rotate(x),
        block_hadamard_transform(x, 128),
        hadamard_transform(x[..., :64]),
    ):
        assert y.dtype == dtype and y.shape[:-1] == x.shape[:-1]


def test_input_is_not_modified() -> None:
    x = torch.randn(3, 64)
    before = x.clone()
    hadamard_transform(x)
    hadamard_rotate(x)
    assert torch.equal(x, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_preserved() -> None:
    x = torch.randn(4, 384, device="cuda")
    assert hadamard_rotate(x).device == x.device
    torch.testing.assert_close(
        hadamard_rotate(x).cpu(), hadamard_rotate(x.cpu()), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: hadamard_transform(torch.randn(2, 384)), ValueError, "power of two, got 384"),
        (lambda: hadamard_transform(torch.randn(2, 0)), ValueError, "power of two, got 0"),
        (lambda: hadamard_transform(torch.tensor(1.0)), ValueError, "x must have"),
        (lambda: hadamard_transform(torch.ones(2, 4, dtype=torch.int32)), TypeError, "x must"),
        (lambda: hadamard_transform([1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
        (lambda: hadamard_transform(torch.tensor([1.0, float("nan")])), ValueError, "NaN"),
        (lambda: hadamard_rotate(torch.tensor([1.0, float("inf")] * 6)), ValueError, "infinity"),
        (lambda: hadamard_rotate(torch.randn(2, 40)), ValueError, "2^k or 12 * 2^k, got 40"),
        (lambda: block_hadamard_transform(torch.randn(2, 384), 96), ValueError, "block"),
        (lambda: block_hadamard_transform(torch.randn(2, 384), 256), ValueError, "block"),
        (lambda: hadamard_matrix(20), ValueError, "n must be 2^k or 12 * 2^k, got 20"),
        (lambda: sylvester_hadamard(12), ValueError, "power of two"),
        (lambda: hadamard_matrix(0), ValueError, "n must be in"),
        (lambda: orthogonality_error(torch.randn(3, 4)), ValueError, "square"),
    ],
)
def test_bad_input_names_the_argument(call, error, words) -> None:
    with pytest.raises(error, match=words.replace("*", r"\*").replace("^", r"\^")):
        call()


def test_rotated_linear_quantizes_the_rotated_operands() -> None:
    gen = torch.Generator().manual_seed(5)
    layer = nn.Linear(384, 10).double()
    x = torch.randn(6, 384, dtype=torch.float64, generator=gen)
    x[:, 99] = 30.0  # an outlier channel
    got = rotated_linear(layer, bits=8, act_bits=4)(x)
    w_q = fake_quantize_weight(hadamard_rotate(layer.weight.detach()), 8, axis=0)
    x_q = fake_quantize_activation(hadamard_rotate(x), 4, axis=0)
    torch.testing.assert_close(got, F.linear(x_q, w_q, layer.bias), rtol=0, atol=1e-12)
    # and it beats the same quantization without rotation on this input (W8A4: the
    # 4-bit activations decide, and the rotation spreads channel 99 over all 384)
    plain = F.linear(
        fake_quantize_activation(x, 4, axis=0),
        fake_quantize_weight(layer.weight.detach(), 8, axis=0),
        layer.bias,
    )
    exact = layer(x)
    assert (got - exact).norm() < (plain - exact).norm()


def test_simulate_rotated_copies_and_keeps_16_bit_outputs() -> None:
    model = nn.Sequential(nn.Linear(64, 384), nn.ReLU(), nn.Linear(384, 8)).double()
    x = torch.randn(5, 64, dtype=torch.float64)
    copy = simulate_rotated(model, bits=16)
    assert isinstance(model[0], nn.Linear)  # the original is untouched
    torch.testing.assert_close(copy(x), model(x), rtol=1e-3, atol=1e-3)
