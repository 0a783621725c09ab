"""What the machine reports, and the int8 matmul paths it chooses between."""

from __future__ import annotations

import re

import pytest
import torch

from linquant_helpers import hardware
from linquant_helpers.integer_ops import EXACT_FLOAT32_K, int8_matmul


def test_cpu_features_are_typed_and_described() -> None:
    features = hardware.cpu_features()
    assert set(features) == {"machine", "capability", "avx512", "vnni", "amx", "arm_dotprod"}
    assert all(isinstance(features[k], bool) for k in ("avx512", "vnni", "amx", "arm_dotprod"))
    assert features["capability"] == torch.backends.cpu.get_cpu_capability()
    assert features["machine"] in hardware.describe_cpu()


def test_path_is_int_mm_only_where_it_is_exact() -> None:
    path = hardware.int8_matmul_path("cpu")
    assert path in (hardware.INT_MM, hardware.FLOAT32)
    if path == hardware.INT_MM:
        assert hardware.int_mm_is_exact("cpu")


@pytest.mark.parametrize("k", [1, 9, EXACT_FLOAT32_K, EXACT_FLOAT32_K + 1, 2500])
@pytest.mark.parametrize("path", [None, hardware.FLOAT32, hardware.INT_MM])
def test_both_paths_are_exact(k: int, path: str | None) -> None:
    gen = torch.Generator().manual_seed(k)
    a = torch.randint(-128, 128, (6, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, 5), generator=gen, dtype=torch.int8)
    if path == hardware.INT_MM and not hardware.int_mm_is_exact("cpu"):
        pytest.skip("torch._int_mm is not exact on this CPU (no VNNI): the float32 path is used")
    expected = (a.double() @ b.double()).to(torch.int32)  # exact: sums far below 2^53
    assert torch.equal(int8_matmul(a, b, path=path), expected)


def test_float32_path_is_exact_at_the_largest_sums() -> None:
    """-128 * -128 = 2^14 everywhere: each 1024-term chunk sums to exactly 2^24."""
    k = 3 * EXACT_FLOAT32_K
    a = torch.full((2, k), -128, dtype=torch.int8)
    b = torch.full((k, 3), -128, dtype=torch.int8)
    assert torch.equal(int8_matmul(a, b, path=hardware.FLOAT32), torch.full((2, 3), k * 2**14))
    b[::2] = 127  # alternating signs: partial sums rise and fall
    expected = (a.double() @ b.double()).to(torch.int32)
    assert torch.equal(int8_matmul(a, b, path=hardware.FLOAT32), expected)


def test_unknown_path_is_refused() -> None:
    a = torch.zeros(2, 2, dtype=torch.int8)
    with pytest.raises(ValueError, match="path"):
        int8_matmul(a, a, path="fast")


def test_zero_point_rounding_order_matches_torch_at_a_tie() -> None:
    order = hardware.zero_point_rounding_order()
    assert order in ("add, then round", "round, then add")
    code = int(torch.quantize_per_tensor(torch.tensor([0.25]), 0.5, 1, torch.quint8).int_repr())
    assert code == (2 if order == "add, then round" else 1)


def test_pairwise_saturating_matmul_is_exact_with_7_bit_activations() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 128, (7, 33), generator=gen, dtype=torch.uint8)  # reduce_range
    b = torch.randint(-128, 128, (33, 5), generator=gen, dtype=torch.int8)
    expected = (a.double() @ b.double()).to(torch.int32)
    assert torch.equal(hardware.pairwise_saturating_matmul(a, b), expected)


def test_pairwise_saturating_matmul_saturates_full_range_pairs_by_hand() -> None:
    a = torch.tensor([[255, 255, 1, 2]], dtype=torch.uint8)
    b = torch.tensor([[127], [127], [-3], [4]], dtype=torch.int8)
    # pair 1: 255*127*2 = 64770 -> 32767; pair 2: -3 + 8 = 5
    assert hardware.pairwise_saturating_matmul(a, b).tolist() == [[32767 + 5]]
    with pytest.raises(TypeError, match="uint8"):
        hardware.pairwise_saturating_matmul(a.to(torch.int8), b)


def test_round_then_add_differs_from_add_then_round_only_at_odd_ties() -> None:
    from linquant_helpers import quantize

    ties = torch.arange(-8, 8) * 0.25 + 0.125  # x / 0.25 = k + 0.5 exactly
    for z in (0, 1, 2, -3):
        first = hardware.quantize_round_then_add(ties, 0.25, z, 8)
        after = quantize(ties, 0.25, z, 8)
        odd = torch.full_like(ties, z % 2, dtype=torch.bool)
        assert torch.equal(first.int() != after.int(), odd)
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    fq = torch.fake_quantize_per_tensor_affine(x, 0.02, 3, -128, 127)  # rounds first, too
    codes = hardware.quantize_round_then_add(x, 0.02, 3, 8).float()
    torch.testing.assert_close((codes - 3) * 0.02, fq, rtol=0, atol=1e-7)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dtype", [torch.quint8, torch.qint8])
def test_quantize_as_pytorch_does_matches_this_pytorch(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(20_000, generator=gen) * 3, torch.arange(-40, 40) * 0.25])
    for zero_point in (-3, 0, 1) if dtype == torch.qint8 else (0, 1, 128):
        expected = torch.quantize_per_tensor(x, 0.5, zero_point, dtype).int_repr()
        assert torch.equal(hardware.quantize_as_pytorch_does(x, 0.5, zero_point, dtype), expected)
    with pytest.raises(ValueError, match="dtype"):
        hardware.quantize_as_pytorch_does(x, 0.5, 0, torch.qint32)


def test_int_mm_is_exact_is_false_for_a_device_this_torch_cannot_reach(monkeypatch) -> None:
    """As documented; it raised AssertionError ("Torch not compiled with CUDA") before."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    probe = hardware.int_mm_is_exact.__wrapped__  # not the cached answer of this machine
    assert probe("cuda") is False
    assert probe("mps") is False
    with pytest.raises(ValueError, match="device must name a torch device, got 'gpu0'"):
        probe("gpu0")


@pytest.mark.parametrize(
    ("scale", "zero_point", "x", "message"),
    [
        (0.0, 0, torch.ones(4), "scale must be positive and finite, got 0"),
        (float("nan"), 0, torch.ones(4), "scale must be positive and finite, got nan"),
        (-0.5, 0, torch.ones(4), "scale must be positive and finite, got -0.5"),
        (float("inf"), 0, torch.ones(4), "scale must be positive and finite, got inf"),
        (0.5, 1.5, torch.ones(4), "zero_point must be an integer, got 1.5"),
        (0.5, 200, torch.ones(4), "zero_point must be an integer in [-128, 127], got 200"),
        (0.5, 0, torch.tensor([1.0, float("nan")]), "x contains NaN"),
        (torch.ones(3), 0, torch.ones(4), "scale of shape (3,) must broadcast to x's shape (4,)"),
    ],
)
def test_round_then_add_refuses_what_has_no_code(scale, zero_point, x, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        hardware.quantize_round_then_add(x, scale, zero_point, 8)


def test_round_then_add_clamps_infinities_and_refuses_integers() -> None:
    x = torch.tensor([float("inf"), -float("inf"), 0.3])
    assert hardware.quantize_round_then_add(x, 0.1, 0, 8).tolist() == [127, -128, 3]
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        hardware.quantize_round_then_add(torch.ones(3, dtype=torch.int32), 0.1)
