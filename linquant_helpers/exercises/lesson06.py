"""Checks for notebook 06: the int32 bias and the fixed-point multiplier.

References are the package's :mod:`~linquant_helpers.integer_ops` and
:func:`~linquant_helpers.affine.dequantize`; inputs are drawn fresh from a
seeded generator, and each check names the typical mistake it recognizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..integer_ops import quantize_bias, quantize_multiplier
from .feedback import (
    SEED,
    CheckResult,
    as_number,
    call,
    first_difference,
    known_mistake,
    random_scale,
    run_check,
    tensor_problem,
)

CARRY_MULTIPLIER = 0.5 - 2.0**-34
"""A multiplier whose ``M0 = 1 - 2^-33`` rounds up to exactly 1.0 at 31 bits."""


# ---------------------------------------------------------------- fixed-point multiplier


def _as_int(value: object, name: str) -> int | str:
    """``value`` as a Python int (an int, a whole float or a one-element tensor), or a message."""
    number = as_number(value, name)
    if isinstance(number, str):
        return number
    if not number == round(number):
        return f"{name} must be an integer, got {number:.6g}"
    return int(number)


def _multiplier_problem(fn: Callable[[float], object], m: float) -> str | None:
    got = call(fn, m)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"return a pair (m0, n), got {type(got).__name__}"
    m0_raw = as_number(got[0], "m0")
    if isinstance(m0_raw, float) and 0.5 <= m0_raw < 1 and m0_raw != round(m0_raw):
        return (
            f"for M = {m!r} you returned M0 = {m0_raw:.6g} itself; m0 is M0 held as a Q31 "
            "integer: m0 = round(M0 * 2**31)"
        )
    m0, n = _as_int(got[0], "m0"), _as_int(got[1], "n")
    for value in (m0, n):
        if isinstance(value, str):
            return value
    expected_m0, expected_n = (int(t) for t in quantize_multiplier(m))
    if (m0, n) == (expected_m0, expected_n):
        return None
    mantissa, exponent = math.frexp(m)
    at = f"for M = {m!r} expected (m0, n) = ({expected_m0}, {expected_n}), got ({m0}, {n})"
    if m == CARRY_MULTIPLIER and m0 == 2**31:
        return (
            f"{at}: M0 = {mantissa!r} rounds up to exactly 1.0, and m0 = 2**31 does not fit "
            "an int32; use m0 = 2**30 (M0 = 0.5) and n - 1 instead"
        )
    if (m0, n) == (expected_m0, -expected_n):
        return f"{at}: n has the wrong sign; M = M0 * 2**-n, so n = -exponent from math.frexp"
    if n == 0 and m0 == round(m * 2**31):
        return f"{at}: normalize first: M = M0 * 2**-n with M0 in [0.5, 1) (math.frexp)"
    if n == expected_n and m0 == math.floor(mantissa * 2**31):
        return f"{at}: m0 was truncated; round it: m0 = round(M0 * 2**31)"
    return f"{at}: write M = M0 * 2**-n with M0 in [0.5, 1), then m0 = round(M0 * 2**31)"


def check_fixed_point_multiplier(
    fixed_point_multiplier: Callable[[float], object], seed: int = SEED
) -> CheckResult:
    """Check ``fixed_point_multiplier(M) -> (m0, n)`` against
    :func:`~linquant_helpers.integer_ops.quantize_multiplier` on random ``M`` in
    ``(2^-20, 1)`` (log-uniform), on ``M = 0.5``, and on a multiplier whose ``M0``
    rounds up to 1.0."""

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 60)
        randoms = (2.0 ** (-20 * torch.rand(6, generator=gen, dtype=torch.float64))).tolist()
        for m in [*randoms, 0.5, CARRY_MULTIPLIER]:
            if problem := _multiplier_problem(fixed_point_multiplier, m):
                return problem
        return None

    return run_check(
        "fixed_point_multiplier",
        test,
        "matches quantize_multiplier: M0 in [0.5, 1) as a Q31 integer, the shift n, the carry.",
    )


# ---------------------------------------------------------------- int32 bias


def _bias_case(gen: torch.Generator, n: int) -> tuple[torch.Tensor, float, torch.Tensor]:
    """A bias whose codes sit 0.1 away from ties, an input scale, per-channel weight scales."""
    s_x = random_scale(gen, 0.01, 0.1)
    s_w = (torch.rand(n, generator=gen) * 0.01 + 0.001).float()
    codes = torch.randint(-5000, 5000, (n,), generator=gen).double()
    offset = 0.8 * torch.rand(n, generator=gen, dtype=torch.float64) - 0.4
    bias = ((codes + offset) * s_x * s_w.double()).float()
    return bias, s_x, s_w


def check_int32_bias(
    int32_bias: Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``int32_bias(bias, input_scale, weight_scale) -> int32 codes``.

    The answer is ``round(b / (s_x s_w))``, compared with
    :func:`~linquant_helpers.integer_ops.quantize_bias` for per-channel weight
    scales: first on random biases 0.1 away from ties, then on exact ties
    (power-of-two scales), where only rounding half to even is right."""

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 61)
        # then exact ties: power-of-two scales, b / (s_x s_w) = k + 0.5 exactly
        halves = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 100.5, -7.5])
        s_w_ties = 2.0 ** -torch.tensor([7.0, 8.0, 9.0, 7.0, 10.0, 8.0, 9.0, 7.0])
        for bias, s_x, s_w in (_bias_case(gen, 12), (halves * 2**-5 * s_w_ties, 2**-5, s_w_ties)):
            if problem := _bias_problem(int32_bias, bias, s_x, s_w):
                return problem
        return None

    return run_check(
        "int32_bias", test, "matches quantize_bias: round(b / (s_x * s_w)) as int32, per channel."
    )


def _bias_problem(
    int32_bias: Callable[..., torch.Tensor], bias: torch.Tensor, s_x: float, s_w: torch.Tensor
) -> str | None:
    """Compare ``int32_bias(bias, s_x, s_w)`` with :func:`quantize_bias`, naming known mistakes."""
    got = call(int32_bias, bias.clone(), s_x, s_w.clone())
    if problem := tensor_problem(got, bias, "int32_bias"):
        return problem
    expected = quantize_bias(bias, s_x, s_w)
    i = first_difference(got, expected)
    if i is None:
        if got.dtype != torch.int32:
            return (
                f"the codes are right but their dtype is {got.dtype}: the bias is added to "
                "an int32 accumulator; return .to(torch.int32)"
            )
        return None
    b = bias.double()
    mistakes = {
        "divided by the input scale only: the accumulator's scale is s_x * s_w": torch.round(
            b / s_x
        ),
        "divided by the weight scale only: the accumulator's scale is s_x * s_w": torch.round(
            b / s_w.double()
        ),
        "truncated instead of rounded: use torch.round before converting": torch.trunc(
            b / (s_x * s_w.double())
        ),
        "multiplied by the scales; quantizing divides: round(b / (s_x * s_w))": torch.round(
            b * s_x * s_w.double()
        ),
        "ties are rounded up (floor(v + 0.5)); torch.round rounds half to even: "
        "0.5 -> 0, 1.5 -> 2, -2.5 -> -2": torch.floor(b / (s_x * s_w.double()) + 0.5),
        "ties are rounded away from zero; torch.round rounds half to even: "
        "0.5 -> 0, 1.5 -> 2, -2.5 -> -2": torch.sign(b)
        * torch.floor((b / (s_x * s_w.double())).abs() + 0.5),
    }
    if message := known_mistake(got, mistakes):
        return message
    got_i, s_w_i = got.flatten()[i].item(), s_w[i].item()
    return (
        f"bias[{i}] = {bias[i].item():.6g} with s_x = {s_x:.4g}, s_w[{i}] = {s_w_i:.4g} "
        f"should give {int(expected[i])}, got {got_i:g}: round(b / (s_x * s_w))"
    )
