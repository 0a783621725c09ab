"""linquant_helpers.block_scaled: byte for byte against torchao 0.18's MX and NVFP4 references,
and the answer to "is GGUF's MXFP4 the same bytes?" (it is not; see the last tests).

The torchao and gguf tests are skipped where those packages are missing:
``python -m pip install -e ".[runtimes]"``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from linquant_helpers.block_scaled import (
    MX_ELEMENT_DTYPES,
    bits_per_weight,
    e8m0_exponent,
    fake_quantize_mx,
    fake_quantize_nvfp4,
    gguf_mxfp4_quantize,
    gguf_mxfp4_to_mx,
    mx_dequantize,
    mx_quantize,
    nvfp4_dequantize,
    nvfp4_quantize,
    nvfp4_tensor_scale,
    pack_fp4,
    unpack_fp4,
)

INSTALL = 'torchao is missing: python -m pip install -e ".[runtimes]"'
needs_torchao = pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason=INSTALL)
needs_gguf = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None,
    reason='gguf is missing: python -m pip install -e ".[runtimes]"',
)
FP4 = torch.float4_e2m1fn_x2


def adversarial() -> dict[str, torch.Tensor]:
    """Ordinary and adversarial (rows, 64) float32 data: 2 MX blocks, 4 NVFP4 blocks a row."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    cases = {"normal": randn(32, 64)}
    cases["wide range"] = randn(32, 64) * 2.0 ** torch.randint(-40, 40, (32, 1), generator=gen)
    cases["all zero"] = torch.zeros(4, 64)
    half_zero = randn(4, 64)
    half_zero[:, :32] = 0
    cases["one zero block"] = half_zero
    at_max = randn(8, 64)
    at_max[:, 0], at_max[:, 33], at_max[:, 47] = 448.0, -57344.0, 6.0
    cases["format maxima"] = at_max
    signs = torch.randint(0, 2, (8, 64), generator=gen) * 2 - 1
    cases["powers of two"] = signs * 2.0 ** torch.randint(-12, 12, (8, 64), generator=gen)
    edges = randn(8, 64) * 0.1
    edges[:, [0, 15, 16, 31, 32, 47, 48, 63]] = torch.tensor(
        [4.0, -8.0, 2.0, -0.5, 1.0, 16.0, -2.0, 0.25]
    )
    cases["powers of two at block edges"] = edges
    below = randn(8, 64) * 0.1
    below[:, 31] = torch.nextafter(torch.tensor(8.0), torch.tensor(0.0))  # just under 2^3
    below[:, 32] = torch.nextafter(torch.tensor(448.0), torch.tensor(1e9))
    cases["just below and above a power of two"] = below
    outlier = randn(8, 64) * 1e-3
    outlier[:, 5] = 1e4
    cases["outliers"] = outlier
    cases["float32 subnormals"] = randn(8, 64) * 1e-40
    cases["tiny normals"] = randn(8, 64) * 1e-36
    cases["huge"] = randn(8, 64) * 1e37
    cases["FP4 ties"] = torch.randint(-24, 25, (8, 64), generator=gen).float() / 4
    cases["E4M3 ties"] = (torch.randint(-1000, 1000, (8, 64), generator=gen) + 0.5) / 2.0**3
    return cases


CASES = adversarial()


@needs_torchao
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("elem_dtype", MX_ELEMENT_DTYPES, ids=str)
def test_mx_quantize_gives_torchao_bytes(name: str, elem_dtype: torch.dtype) -> None:
    """torchao 0.18.0's to_mx (default ScaleCalculationMode.FLOOR): same dtypes, same bytes."""
    from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx

    for x in (CASES[name], CASES[name].bfloat16()):
        ref_scales, ref_elements = to_mx(x, elem_dtype, 32)
        scales, elements = mx_quantize(x, elem_dtype, 32)
        assert scales.dtype == ref_scales.dtype == torch.float8_e8m0fnu
        assert elements.dtype == ref_elements.dtype and elements.shape == ref_elements.shape
        assert torch.equal(scales.view(torch.uint8), ref_scales.view(torch.uint8))
        assert torch.equal(elements.view(torch.uint8), ref_elements.view(torch.uint8))
        ref = to_dtype(ref_elements, ref_scales, elem_dtype, 32, torch.float32)
        assert torch.equal(mx_dequantize(scales, elements, elem_dtype, 32), ref)


@needs_torchao
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("two_level", [False, True])
def test_nvfp4_quantize_gives_torchao_bytes(name: str, two_level: bool) -> None:
    """torchao 0.18.0's nvfp4_quantize, one level and with per_tensor_amax_to_scale's scale."""
    from torchao.prototype.mx_formats.nvfp4_tensor import (
        nvfp4_quantize as ref_quantize,
    )
    from torchao.prototype.mx_formats.nvfp4_tensor import (
        per_tensor_amax_to_scale,
    )

    x = CASES[name]
    t = per_tensor_amax_to_scale(x.abs().amax()) if two_level else None
    if t is not None and not bool(t > 0):
        pytest.skip("an all-zero tensor has no tensor scale")
    if t is not None:
        assert t == nvfp4_tensor_scale(x)
    ref_scales, ref_packed = ref_quantize(x, 16, t)
    scales, packed = nvfp4_quantize(x, 16, t)
    assert scales.dtype == ref_scales.dtype == torch.float8_e4m3fn
    assert packed.dtype == ref_packed.dtype == torch.uint8
    assert torch.equal(scales.view(torch.uint8), ref_scales.view(torch.uint8))
    assert torch.equal(packed, ref_packed)


@pytest.mark.parametrize("name", list(CASES))
def test_fake_quantize_is_dequantize_of_quantize(name: str) -> None:
    x = CASES[name]
    for elem_dtype in MX_ELEMENT_DTYPES:
        expected = mx_dequantize(*mx_quantize(x, elem_dtype), elem_dtype)
        assert torch.equal(fake_quantize_mx(x, elem_dtype), expected)
    for two_level in (False, True):
        t = nvfp4_tensor_scale(x) if two_level and bool(x.abs().amax() > 0) else None
        expected = nvfp4_dequantize(*nvfp4_quantize(x, 16, t), 16, t)
        assert torch.equal(fake_quantize_nvfp4(x, two_level=two_level), expected)


def test_mx_error_bound_and_scale_rule() -> None:
    """Hand-checked: the OCP scale is 2^(floor(log2 amax) - emax); the floor costs clipping."""
    x = torch.tensor([[5.9, 0.3] + [0.0] * 30, [7.9, -1.0] + [0.0] * 30])
    assert e8m0_exponent(torch.tensor([5.9, 7.9, 8.0]), FP4).tolist() == [0, 0, 1]
    scales, packed = mx_quantize(x, FP4)
    assert scales.float().flatten().tolist() == [1.0, 1.0]
    assert mx_dequantize(scales, packed, FP4)[:, :2].tolist() == [[6.0, 0.5], [6.0, -1.0]]
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(64, 128, generator=gen)
    blocks = y.reshape(64, 4, 32)
    scale = 2.0 ** (blocks.abs().amax(-1, keepdim=True).log2().floor() - 2)  # X
    err = (fake_quantize_mx(y, FP4).reshape(64, 4, 32) - blocks).abs()
    # rounding: at most half the top step 2X; clipping: from below 8X down to 6X
    assert bool((err < 2 * scale).all()) and bool((err > scale).any())


def test_dtype_device_shape_and_packing() -> None:
    x = torch.randn(2, 3, 64, dtype=torch.float64)
    assert fake_quantize_mx(x, FP4).dtype == torch.float64
    assert fake_quantize_nvfp4(x.half()).dtype == torch.float16
    scales, packed = mx_quantize(x, FP4)
    assert scales.shape == (2, 3, 2) and packed.shape == (2, 3, 32) and packed.dtype == torch.uint8
    codes = torch.randint(0, 16, (5, 8), dtype=torch.uint8)
    assert torch.equal(unpack_fp4(pack_fp4(codes)), codes)
    assert pack_fp4(torch.tensor([1, 2], dtype=torch.uint8)).item() == 0x21
    assert mx_dequantize(*mx_quantize(x, FP4), FP4, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert (bits_per_weight(4, 32), bits_per_weight(8, 32), bits_per_weight(4, 16)) == (
        4.25,
        8.25,
        4.5,
    )


def test_bad_input_names_the_argument() -> None:
    x = torch.randn(4, 64)
    with pytest.raises(ValueError, match="multiple of block_size=32.*48"):
        mx_quantize(torch.randn(4, 48), torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="x must be finite.*NaN"):
        mx_quantize(torch.full((1, 32), float("nan")), FP4)
    with pytest.raises(ValueError, match="x must be finite.*infinity"):
        nvfp4_quantize(torch.full((1, 16), float("inf")))
    with pytest.raises(ValueError, match="elem_dtype"):
        mx_quantize(x, torch.int8)
    with pytest.raises(TypeError, match="elem_dtype"):
        mx_quantize(x, "fp4")
    with pytest.raises(TypeError, match="block_size"):
        mx_quantize(x, FP4, 32.0)
    with pytest.raises(ValueError, match="block_size must be even"):
        nvfp4_quantize(torch.randn(2, 45), 15)
    with pytest.raises(ValueError, match="per_tensor_scale must be positive"):
        nvfp4_quantize(x, 16, torch.tensor(0.0))
    with pytest.raises(TypeError, match="scales must be float8_e8m0fnu"):
        mx_dequantize(torch.ones(4, 2), torch.zeros(4, 32, dtype=torch.uint8), FP4)
    scales, packed = mx_quantize(x, FP4)
    with pytest.raises(ValueError, match="scales must hold one scale per block"):
        mx_dequantize(scales[:, :1], packed, FP4)


# ---------------------------------------------------------------- GGUF's MXFP4


@needs_gguf
def test_gguf_mxfp4_same_values_on_ordinary_data_but_not_the_same_bytes() -> None:
    """gguf's MXFP4 on normal weights: same scales, same values, different bytes.

    Two byte differences remain after putting its blocks in torchao's layout:
    a negative value that rounds to 0 gets code 0 (+0) from gguf and code 8 (-0)
    from OCP rounding; nothing else differs on this data.
    """
    x = torch.randn(64, 1024, generator=torch.Generator().manual_seed(5))
    raw = gguf_mxfp4_quantize(x)
    assert raw.shape == (64, 32 * 17)
    scales, packed = mx_quantize(x, FP4)
    g_scales, g_packed = gguf_mxfp4_to_mx(raw)
    assert torch.equal(g_scales.view(torch.uint8), scales.view(torch.uint8))
    assert torch.equal(mx_dequantize(g_scales, g_packed, FP4), mx_dequantize(scales, packed, FP4))
    codes, g_codes = unpack_fp4(packed), unpack_fp4(g_packed)
    differ = codes != g_codes
    assert differ.any()
    assert bool((codes[differ] == 8).all() and (g_codes[differ] == 0).all())
    assert not torch.equal(raw[:, 1:17], packed[:, :16])  # its nibble order is not torchao's


@needs_gguf
def test_gguf_mxfp4_differs_at_ties_near_powers_of_two_and_for_tiny_blocks() -> None:
    """Where the values differ: ties, float32 log2 rounding, and a wrapped exponent."""
    ties = torch.tensor([[0.75, 1.75, 2.5, 3.5, 5.0] + [0.0] * 26 + [6.0]])
    g_scales, g_packed = gguf_mxfp4_to_mx(gguf_mxfp4_quantize(ties))
    ocp = mx_dequantize(*mx_quantize(ties, FP4), FP4)[0, :5].tolist()
    gguf = mx_dequantize(g_scales, g_packed, FP4)[0, :5].tolist()
    assert ocp == [1.0, 2.0, 2.0, 4.0, 4.0]  # ties to the even mantissa
    assert gguf == [0.5, 1.5, 2.0, 3.0, 4.0]  # ties to the first (smaller) level
    just_below = torch.full((1, 32), float(torch.nextafter(torch.tensor(16.0), torch.tensor(0.0))))
    g_scales, _ = gguf_mxfp4_to_mx(gguf_mxfp4_quantize(just_below))
    scales, _ = mx_quantize(just_below, FP4)
    assert scales.float().item() == 2.0 and g_scales.float().item() == 4.0  # log2 rounded up
    tiny = torch.full((1, 32), 2.0**-126)
    g_scales, _ = gguf_mxfp4_to_mx(gguf_mxfp4_quantize(tiny))
    assert g_scales.view(torch.uint8).item() == 255  # floor(log2) - 2 + 127 = -1 wraps: NaN
    assert mx_quantize(tiny, FP4)[0].view(torch.uint8).item() == 0
