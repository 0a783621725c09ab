"""llama.cpp's Q4_K and Q6_K: bytes identical to llama.cpp's C quantizers, layout identical to
the ``gguf`` package's decoder, and clear errors.

``tests/data/kquants_llama_cpp.npz`` holds inputs (seeded NumPy draws: normal, Student-t,
all-positive, all-negative, super-blocks of zeros and constants, outliers, coarse grid values,
and importance matrices) with the bytes that llama.cpp's reference C code gave for them:
``quantize_q4_K`` and ``quantize_q6_K`` of ggml at commit d99724f2 (2026-08-21), without and
with ``quant_weights``, each float operation rounded once as written (no fused multiply-add).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from linquant_helpers import kquants as kq
from linquant_helpers.sampling import randn

GOLDEN = np.load(Path(__file__).parent / "data" / "kquants_llama_cpp.npz")
CASES = sorted({key.split("/")[0] for key in GOLDEN.files})
FORMATS = {
    "Q4_K": (kq.quantize_q4_k, kq.dequantize_q4_k, "q4_k"),
    "Q6_K": (kq.quantize_q6_k, kq.dequantize_q6_k, "q6_k"),
}


def _case(name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.from_numpy(GOLDEN[f"{name}/x"])
    key = f"{name}/imatrix"
    return x, torch.from_numpy(GOLDEN[key]) if key in GOLDEN.files else None


def test_the_golden_data_covers_both_paths() -> None:
    with_imatrix = [name for name in CASES if _case(name)[1] is not None]
    assert len(CASES) >= 8 and 2 <= len(with_imatrix) < len(CASES)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("case", CASES)
def test_bytes_equal_llama_cpp(case: str, fmt: str) -> None:
    quantize, _, key = FORMATS[fmt]
    x, imatrix = _case(case)
    raw = quantize(x, imatrix)
    expected = torch.from_numpy(GOLDEN[f"{case}/{key}"])
    assert raw.dtype == torch.uint8 and raw.shape == expected.shape
    assert torch.equal(raw, expected), f"{int((raw != expected).sum())} bytes differ"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("case", CASES)
def test_layout_equals_the_gguf_decoder(case: str, fmt: str) -> None:
    gguf = pytest.importorskip("gguf", reason='the runtimes extra: pip install -e ".[runtimes]"')
    quantize, dequantize, _ = FORMATS[fmt]
    raw = quantize(*_case(case))
    theirs = gguf.quants.dequantize(raw.numpy(), getattr(gguf.GGMLQuantizationType, fmt))
    assert np.array_equal(dequantize(raw).numpy(), theirs)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_sizes_and_bits_per_weight(fmt: str) -> None:
    quantize, dequantize, _ = FORMATS[fmt]
    x = randn(3, 768, generator=torch.Generator().manual_seed(0)) * 0.02
    raw = quantize(x)
    assert raw.shape == (3, 3 * kq.BLOCK_BYTES[fmt]) and dequantize(raw).shape == x.shape
    assert kq.BITS_PER_WEIGHT == {"Q4_K": 4.5, "Q6_K": 6.5625}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_rows_are_independent_of_the_batch(fmt: str) -> None:
    quantize, _, _ = FORMATS[fmt]
    x = randn(5, 512, generator=torch.Generator().manual_seed(1)) * 0.05
    whole = quantize(x)
    assert all(torch.equal(quantize(x[i : i + 1])[0], whole[i]) for i in range(5))


def test_error_is_small_against_float64() -> None:
    x = randn(16, 1024, generator=torch.Generator().manual_seed(2)).double() * 0.02
    errors = {}
    for fmt, (quantize, dequantize, _) in FORMATS.items():
        w_hat = dequantize(quantize(x.float())).double()
        errors[fmt] = float((w_hat - x).norm() / x.norm())
    # 4-bit codes on a searched scale and min: about 7% of the weights' norm; 6-bit: 4x smaller
    assert errors["Q4_K"] < 0.12 and errors["Q6_K"] < errors["Q4_K"] / 3, errors


def test_imatrix_lowers_the_weighted_error() -> None:
    g = torch.Generator().manual_seed(3)
    x = randn(32, 512, generator=g) * 0.02
    importance = torch.rand(512, generator=g) ** 4 * 100  # a few columns matter much more
    for quantize, dequantize, _ in FORMATS.values():
        plain = dequantize(quantize(x)) - x
        weighted = dequantize(quantize(x, importance)) - x
        assert (weighted**2 * importance).sum() < (plain**2 * importance).sum()


@given(st.lists(st.integers(0, 63), min_size=16, max_size=16))
def test_scale_min_packing_is_invertible(codes: list[int]) -> None:
    ls, lm = torch.tensor(codes[:8]), torch.tensor(codes[8:])
    back = kq.unpack_scale_min(kq._pack_scale_min(ls, lm))
    assert back[0].tolist() == codes[:8] and back[1].tolist() == codes[8:]


def test_scale_min_packing_by_hand() -> None:
    packed = kq._pack_scale_min(
        torch.tensor([1, 2, 3, 4, 0x35, 0x26, 0x17, 0x3F]),
        torch.tensor([5, 6, 7, 8, 0x2A, 0x1B, 0x0C, 0x30]),
    )
    # bytes 0-3: ls[0:4] | (ls[4:8] >> 4) << 6; 4-7: lm[0:4] | (lm[4:8] >> 4) << 6;
    # 8-11: ls[4:8] & 15 | (lm[4:8] & 15) << 4
    assert packed.tolist() == [
        0xC1,
        0x82,
        0x43,
        0xC4,
        0x85,
        0x46,
        0x07,
        0xC8,
        0xA5,
        0xB6,
        0xC7,
        0x0F,
    ]


def test_importance_matrix_is_the_mean_square_per_column() -> None:
    inputs = randn(3, 7, 16, generator=torch.Generator().manual_seed(4))
    flat = inputs.reshape(-1, 16).double()
    expected = torch.stack([(flat[:, j] ** 2).sum() / flat.shape[0] for j in range(16)])
    assert torch.allclose(kq.importance_matrix(inputs).double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_bad_input_is_named(fmt: str) -> None:
    quantize, dequantize, _ = FORMATS[fmt]
    ok = torch.zeros(2, 256)
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize(torch.zeros(2, 384))
    with pytest.raises(ValueError, match="2-D"):
        quantize(torch.zeros(256))
    with pytest.raises(TypeError, match="floating-point"):
        quantize(torch.zeros(2, 256, dtype=torch.int32))
    for bad in (float("nan"), float("inf")):
        x = ok.clone()
        x[1, 7] = bad
        with pytest.raises(ValueError, match="x must be finite"):
            quantize(x)
    with pytest.raises(ValueError, match="overflows float16"):
        quantize(torch.full((1, 256), 1e9) * torch.linspace(-1, 1, 256))
    with pytest.raises(ValueError, match="underflows float16"):
        quantize(torch.full((1, 256), 1e-9) * torch.linspace(-1, 1, 256))
    with pytest.raises(ValueError, match=r"imatrix must have shape \(256,\)"):
        quantize(ok, torch.ones(128))
    with pytest.raises(ValueError, match="imatrix must be non-negative"):
        quantize(ok, -torch.ones(256))
    with pytest.raises(ValueError, match="imatrix must be finite"):
        quantize(ok, torch.full((256,), float("nan")))
    with pytest.raises(TypeError, match="uint8"):
        dequantize(torch.zeros(1, kq.BLOCK_BYTES[fmt], dtype=torch.int8))
    with pytest.raises(ValueError, match=f"multiple of {kq.BLOCK_BYTES[fmt]} bytes"):
        dequantize(torch.zeros(1, kq.BLOCK_BYTES[fmt] + 1, dtype=torch.uint8))


def test_all_zero_rows_give_zero_bytes_and_zero_weights() -> None:
    for quantize, dequantize, _ in FORMATS.values():
        raw = quantize(torch.zeros(2, 512))
        assert dequantize(raw).abs().max() == 0
    assert kq.quantize_q6_k(torch.zeros(1, 256)).count_nonzero() == 0


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 1e30])
def test_sqrt_and_division_round_once_as_ieee(scale: float) -> None:
    # torch.sqrt and `63 / t` (a reciprocal, then a product) can be a bit off; C's are not
    rng = np.random.default_rng(5)
    values = (rng.random(200_000) * scale).astype(np.float32)
    assert np.array_equal(kq._sqrt(torch.from_numpy(values)).numpy(), np.sqrt(values))
    quotient = kq._div(63, torch.from_numpy(values + np.float32(scale))).numpy()
    assert np.array_equal(quotient, np.float32(63) / (values + np.float32(scale)))
