"""Checks for notebook 11: an E4M3 byte, an MX block's scale, NVFP4's two scales.

Each check uses fresh, seeded inputs and compares with the package's reference
(:func:`~linquant_helpers.float8.decode_float`,
:func:`~linquant_helpers.block_scaled.e8m0_exponent`,
:func:`~linquant_helpers.block_scaled.nvfp4_tensor_scale` and
:func:`~linquant_helpers.float8.round_to_format`); the inputs are chosen so that
each typical mistake gives a different answer, which the check names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..block_scaled import e8m0_exponent, nvfp4_tensor_scale
from ..float8 import E4M3, decode_float, round_to_format
from .feedback import (
    SEED,
    CheckResult,
    as_number,
    call,
    first_difference,
    known_mistake,
    run_check,
    tensor_problem,
)

# ---------------------------------------------------------------- exercise 1: an E4M3 byte


def _e4m3_mistakes(codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """What typical wrong decoders return for ``codes`` (int64), in float64."""
    sign = 1.0 - 2.0 * (codes >> 7).double()
    e, m = ((codes >> 3) & 15).double(), (codes & 7).double()
    normal = 2.0 ** (e - 7) * (1 + m / 8)
    subnormal = 2.0**-6 * m / 8
    nan = (e == 15) & (m == 7)
    right = torch.where(nan, torch.nan, sign * torch.where(e > 0, normal, subnormal))
    return {
        "codes with exponent bits 0000 are subnormal: 2^(1 - 7) * m / 8, with no implicit 1": (
            torch.where(nan, torch.nan, sign * normal)
        ),
        "a subnormal shares the smallest normal's exponent, 1 - bias = -6, not 0 - bias = -7": (
            torch.where(nan, torch.nan, sign * torch.where(e > 0, normal, 2.0**-7 * m / 8))
        ),
        "E4M3's exponent bias is 7 (2^(e - 7)): the largest value 0x7E is 448": torch.where(
            nan, torch.nan, sign * torch.where(e > 0, normal / 2, subnormal / 2)
        ),
        "E4M3fn has no infinities: exponent 1111 still holds numbers (256 .. 448); only "
        "0x7F and 0xFF are NaN": torch.where(
            e == 15, torch.where(m == 0, sign * torch.inf, torch.nan), right
        ),
        "0x7F and 0xFF (exponent 1111, mantissa 111) are NaN, not 480": torch.where(
            nan, sign * 480.0, right
        ),
        "the mantissa has 3 bits, worth m / 8": torch.where(
            nan, torch.nan, sign * torch.where(e > 0, 2.0 ** (e - 7) * (1 + m / 16), subnormal / 2)
        ),
        "bit 7 is the sign: codes 128-255 are the negatives of 0-127": torch.where(
            nan, torch.nan, torch.where(e > 0, normal, subnormal)
        ),
    }


def _nan_aware_equal(got: torch.Tensor, expected: torch.Tensor) -> bool:
    got, expected = got.detach().double().cpu(), expected.double()
    nan = torch.isnan(expected)
    return torch.equal(torch.isnan(got), nan) and torch.equal(got[~nan], expected[~nan])


def check_decode_e4m3(
    decode_e4m3: Callable[[torch.Tensor], torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``decode_e4m3(codes) -> values`` for an int64 tensor of bytes ``0b seeeemmm``.

    All 256 codes, shuffled into a 2-D tensor: bias 7, subnormals at ``e = 0``
    (``2^-6 * m / 8``), no infinities, NaN only at ``0x7F`` and ``0xFF``. Compared
    with :func:`~linquant_helpers.float8.decode_float` (itself proven against
    ``torch.float8_e4m3fn``).
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 111)
        codes = torch.randperm(256, generator=gen).reshape(16, 16)
        got = call(decode_e4m3, codes.clone())
        expected = decode_float(codes.to(torch.uint8), torch.float8_e4m3fn)
        if problem := tensor_problem(got, expected, "decode_e4m3", per="code"):
            return problem
        if not got.is_floating_point():
            return f"return floating-point values (448.0, 0.001953125, ..), got dtype {got.dtype}"
        if _nan_aware_equal(got, expected):
            return None
        for message, wrong in _e4m3_mistakes(codes).items():
            if _nan_aware_equal(got, wrong):
                return message
        bad = ~((got.double() == expected.double()) | (torch.isnan(got) & torch.isnan(expected)))
        i = int(bad.flatten().nonzero()[0])
        code = int(codes.flatten()[i])
        return (
            f"code {code} = 0b{code:08b}: expected {expected.flatten()[i].item():g}, got "
            f"{got.flatten()[i].item():g}; v = (-1)^s 2^(e-7) (1 + m/8), or (-1)^s 2^-6 m/8 "
            "when e = 0"
        )

    return run_check(
        "decode_e4m3",
        test,
        "all 256 E4M3 codes: subnormals, signs, the top binade and the two NaNs.",
    )


# ---------------------------------------------------------------- exercise 2: an MX block's scale


def _mx_blocks(gen: torch.Generator) -> torch.Tensor:
    """``(blocks, 32)`` float32: random sizes, plus the blocks that tell mistakes apart.

    Row 0: the largest magnitude negative. Row 1: amax just below 8 (float32 log2
    rounds it up to 3). Row 2: amax exactly 4 (a power of two: floor and ceil agree,
    round does not elsewhere). Row 3: all zeros. Row 4: amax 2^-130 * 3 (subnormal).
    """
    n = int(torch.randint(8, 14, (), generator=gen))
    x = torch.randn(n, 32, generator=gen) * 2.0 ** torch.randint(-20, 20, (n, 1), generator=gen)
    x[0] = x[0].abs() * 0.1
    x[0, 7] = -float(2.0 ** torch.randint(-5, 5, (), generator=gen)) * 1.75
    x[1, 3] = float(torch.nextafter(torch.tensor(8.0), torch.tensor(0.0)))
    x[1] = x[1].clamp(-7.9, 8.0)
    x[2] = torch.rand(32, generator=gen) * 3 - 1.5
    x[2, 30] = 4.0
    x[3] = 0.0
    x[4] = torch.rand(32, generator=gen) * 2.0**-130
    x[4, 0] = 2.0**-130 * 3
    return x


def check_mx_scale_exponent(
    mx_scale_exponent: Callable[[torch.Tensor, int], torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``mx_scale_exponent(blocks, emax) -> k``: the OCP MX rule per row of ``blocks``.

    ``k = floor(log2(max|block|)) - emax``, clamped to ``[-127, 127]`` (E8M0's range;
    an all-zero block gets -127); integers of shape ``(blocks,)``. Tried with
    ``emax = 2`` (E2M1) and ``8`` (E4M3); compared with
    :func:`~linquant_helpers.block_scaled.e8m0_exponent`.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 112)
        for emax, dtype in ((2, torch.float4_e2m1fn_x2), (8, torch.float8_e4m3fn)):
            x = _mx_blocks(gen)
            got = call(mx_scale_exponent, x.clone(), emax)
            amax = x.abs().amax(dim=-1)
            expected = e8m0_exponent(amax, dtype)
            if problem := tensor_problem(got, expected, "mx_scale_exponent", per="block (row)"):
                return problem
            if first_difference(got, expected) is None:
                continue
            log2 = amax.double().log2()
            mistakes = {
                "the scale uses the largest magnitude: x.abs().amax(dim=-1), not x.amax(dim=-1)": (
                    x.amax(dim=-1).double().log2().floor() - emax
                ).clamp(-127, 127),
                "the OCP rule rounds log2(amax) down (floor), not up: the largest element then "
                "lands at or above 2^emax": (log2.ceil() - emax).clamp(-127, 127),
                "the OCP rule rounds log2(amax) down (floor), not to nearest": (
                    log2.round() - emax
                ).clamp(-127, 127),
                "subtract emax, the exponent of the element format's largest power of two: "
                "k = floor(log2(amax)) - emax": log2.floor().clamp(-127, 127),
                "clamp k to [-127, 127], E8M0's range (an all-zero block has log2(0) = -inf)": (
                    log2.floor() - emax
                ).nan_to_num(neginf=-(2.0**31)),
                "torch.log2 in float32 rounds up just below a power of two (log2(7.9999995) "
                "gives 3.0): use torch.frexp, or compute log2 in float64": (
                    amax.log2().floor().double() - emax
                ).clamp(-127, 127),
            }
            if message := known_mistake(got, mistakes):
                return message
            i = first_difference(got, expected)
            return (
                f"block {i} (max|x| = {amax[i].item():.9g}, emax = {emax}): expected k = "
                f"{int(expected[i])}, got {got.flatten()[i].item():g}"
            )
        return None

    return run_check(
        "mx_scale_exponent",
        test,
        "OCP's floor(log2(amax)) - emax on blocks with negative extremes, near powers of two, "
        "zeros and subnormals.",
    )


# ---------------------------------------------------------------- exercise 3: NVFP4's two scales


def _nvfp4_input(gen: torch.Generator) -> torch.Tensor:
    """``(rows, 16 * blocks)`` float32 whose block maxima span 1 to 1000 (no block scale
    falls below E4M3's smallest normal); row 0's largest magnitude is negative."""
    rows, blocks = (
        int(torch.randint(3, 6, (), generator=gen)),
        2 * int(torch.randint(2, 5, (), generator=gen)),
    )
    spread = 10.0 ** (torch.rand(rows, blocks, 1, generator=gen) * 3)
    x = (torch.rand(rows, blocks, 16, generator=gen) * 2 - 1) * spread
    x[0, 0, 3] = -2.0 * x.abs().max()
    return x.reshape(rows, -1) * (0.01 + torch.rand((), generator=gen))


def check_nvfp4_scales(
    nvfp4_scales: Callable[[torch.Tensor], tuple[object, torch.Tensor]], seed: int = SEED
) -> CheckResult:
    """Check ``nvfp4_scales(x) -> (t, s)``: NVFP4's tensor scale and E4M3 block scales.

    ``t = max|x| / (448 * 6)`` (float32); per block of 16 along the last dimension,
    ``s = E4M3(max|block| / 6 / t)`` (the stored scale), any float dtype holding
    those values. Compared with :func:`~linquant_helpers.block_scaled.nvfp4_tensor_scale`
    and :func:`~linquant_helpers.float8.round_to_format`.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 113)
        for _ in range(3):
            x = _nvfp4_input(gen)
            got = call(nvfp4_scales, x.clone())
            if not isinstance(got, tuple) or len(got) != 2:
                return "return a pair (t, s): the tensor scale and the block scales"
            t_got, s_got = got
            t_got = as_number(t_got, "t")
            if isinstance(t_got, str):
                return t_got
            t = nvfp4_tensor_scale(x)
            amax = x.abs().amax()
            if t_got != float(t):
                if t_got == float(amax / 448):
                    return (
                        "t = max|x| / (448 * 6): divide by E2M1's 6 too, so that the block "
                        "scales (max|block| / 6) reach E4M3's 448"
                    )
                if t_got == float(amax / 6):
                    return (
                        "t = max|x| / (448 * 6): the block scales then span E4M3's range up to 448"
                    )
                return f"t = max|x| / (448 * 6) = {float(t):.6g}, got {t_got:.6g}"
            blocks = x.reshape(x.shape[0], -1, 16).abs().amax(dim=-1)
            exact = blocks / 6 / t
            expected = round_to_format(exact.clamp(2.0**E4M3.emin, E4M3.max), torch.float8_e4m3fn)
            if problem := tensor_problem(s_got, expected, "s", per="block of 16"):
                return problem
            s_got = s_got.float()
            if first_difference(s_got, expected) is None:
                continue
            mistakes = {
                "round the block scales to E4M3 (.to(torch.float8_e4m3fn)): that is what is "
                "stored, 8 bits per block": exact,
                "s is the block's scale divided by t: max|block| / 6 / t (one level would "
                "store max|block| / 6)": round_to_format(
                    (blocks / 6).clamp(2.0**E4M3.emin, E4M3.max), torch.float8_e4m3fn
                ),
                "divide max|block| by 6, E2M1's largest value": round_to_format(
                    (blocks / t).clamp(2.0**E4M3.emin, E4M3.max), torch.float8_e4m3fn
                ),
                "the scale uses the largest magnitude: .abs() before .amax": round_to_format(
                    (x.reshape(x.shape[0], -1, 16).amax(dim=-1) / 6 / t).clamp(
                        2.0**E4M3.emin, E4M3.max
                    ),
                    torch.float8_e4m3fn,
                ),
            }
            if message := known_mistake(s_got, mistakes):
                return message
            i = first_difference(s_got, expected)
            return (
                f"block scale {i} (row-major): expected {expected.flatten()[i].item():g} = "
                f"E4M3(max|block| / 6 / t), got {s_got.flatten()[i].item():g}"
            )
        return None

    return run_check(
        "nvfp4_scales",
        test,
        "t = max|x| / (448 * 6) and E4M3 block scales max|block| / 6 / t, on blocks of 16.",
    )
