"""Checks for notebook 02: scale and zero point from a range, and which scheme to pick."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..affine import choose_qparams, fake_quantize, qparams_from_range, qrange
from ..metrics import sqnr_db
from .feedback import (
    SEED,
    CheckResult,
    as_number,
    as_pair,
    call,
    random_scale,
    run_check,
    zero_point_problem,
)

MIN_GAIN_DB = 1.0
""":func:`check_pick_scheme`: asymmetric is worth its zero point only above this SQNR gain."""


def _ranges(gen: torch.Generator, n: int) -> list[tuple[float, float, int]]:
    """Random ``(x_min, x_max, bits)`` with ``x_min < 0 < x_max``, float32-exact.

    Ranges whose zero point ``-x_min / scale`` falls within 0.02 of a tie are
    skipped, so that computing it in float64 or float32 gives the same integer.
    """
    out: list[tuple[float, float, int]] = []
    while len(out) < n:
        x_min = -random_scale(gen, 0.05, 4.0)
        x_max = random_scale(gen, 0.05, 6.0)
        bits = int(torch.tensor([2, 3, 4, 8])[torch.randint(0, 4, (), generator=gen)])
        steps = 2**bits - 1
        frac = (-x_min * steps / (x_max - x_min)) % 1.0
        if abs(frac - 0.5) > 0.02:
            out.append((x_min, x_max, bits))
    return out


def check_asymmetric_qparams(
    asymmetric_qparams: Callable[[float, float, int], tuple], seed: int = SEED
) -> CheckResult:
    """Check ``asymmetric_qparams(x_min, x_max, bits) -> (scale, zero_point)``, unsigned codes.

    Compared with :func:`~linquant_helpers.affine.qparams_from_range` (asymmetric,
    unsigned) on random ranges at 2 to 8 bits, then on ranges that do not
    contain 0 and must be widened to include it.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 10)
        # -1.3 / (3.3 / 15) = -5.9: a zero point that truncation (int()) gets wrong
        cases = [(-1.25, 2.0, 4), *_ranges(gen, 6), (0.5, 4.0, 8), (-3.0, -1.0, 8)]
        for x_min, x_max, bits in cases:
            qmin, qmax = qrange(bits, signed=False)
            answer = as_pair(call(asymmetric_qparams, x_min, x_max, bits))
            if isinstance(answer, str):
                return answer
            scale, zero_point = answer
            s_ref, z_ref = qparams_from_range(
                torch.tensor(x_min), torch.tensor(x_max), bits, symmetric=False, signed=False
            )
            s_ref, z_ref = float(s_ref), int(z_ref)
            case = f"for [{x_min:.4g}, {x_max:.4g}] at {bits} bits"
            if math.isclose(zero_point, s_ref, rel_tol=1e-5) and scale == z_ref:
                return (
                    f"{case} you returned ({scale:g}, {zero_point:.6g}): the pair is swapped; "
                    "return (scale, zero_point), the scale first"
                )
            half = 2 ** (bits - 1)
            if zero_point == z_ref - half and math.isclose(scale, s_ref, rel_tol=1e-5):
                return (
                    f"{case} your zero point {zero_point:g} is the one of signed codes "
                    f"[{-half}, {half - 1}]; here the codes are unsigned, [0, {qmax}]: "
                    "zero_point = qmin - round(x_min / scale) with qmin = 0"
                )
            if problem := zero_point_problem(zero_point, qmin, qmax):
                return problem
            if not math.isclose(scale, s_ref, rel_tol=1e-5):
                lo, hi = min(x_min, 0.0), max(x_max, 0.0)
                if bits != 8 and math.isclose(scale, (hi - lo) / 255, rel_tol=1e-5):
                    return (
                        f"{case} your scale divides by 255, the number of steps of 8 bits; "
                        f"use bits: qmax - qmin = 2^bits - 1 = {qmax}"
                    )
                if math.isclose(scale, (x_max - x_min) / 2**bits, rel_tol=1e-5):
                    return (
                        f"{case} the scale divides by 2^bits = {2**bits}; there are "
                        f"2^bits - 1 = {qmax} steps between codes {qmin} and {qmax}: "
                        "scale = (x_max - x_min) / (qmax - qmin)"
                    )
                if math.isclose(scale, (x_max - x_min) / qmax, rel_tol=1e-5):
                    return (
                        f"{case} the range must be widened to include 0 first, so that 0.0 "
                        "is exactly representable: use min(x_min, 0) and max(x_max, 0)"
                    )
                return (
                    f"{case} expected scale {s_ref:.6g}, got {scale:.6g}: "
                    "scale = (x_max - x_min) / (qmax - qmin)"
                )
            if zero_point != z_ref:
                v = -min(x_min, 0.0) / s_ref
                how = (
                    "it looks truncated (int() or floor), not rounded; "
                    if zero_point == math.floor(v) != round(v)
                    else "the sign is wrong; "
                    if zero_point == min(max(-z_ref, qmin), qmax)
                    else ""
                )
                return (
                    f"{case} expected zero_point {z_ref}, got {zero_point:g}: {how}zero_point "
                    "is the code of 0.0, qmin - round(x_min / scale)"
                )
        return None

    return run_check(
        "asymmetric_qparams",
        test,
        "matches qparams_from_range() on fresh ranges, 2 to 8 bits, 0 always included.",
    )


def check_symmetric_scale(
    symmetric_scale: Callable[[float, int, bool], float], seed: int = SEED
) -> CheckResult:
    """Check ``symmetric_scale(max_abs, bits, narrow) -> scale``, signed codes.

    Compared with :func:`~linquant_helpers.affine.qparams_from_range` (symmetric,
    signed): ``max_abs / 127.5`` at 8 bits full range, ``max_abs / 127`` narrow.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 11)
        for bits in (8, 4, 3):
            for narrow in (False, True):
                max_abs = random_scale(gen, 0.1, 10.0)
                scale = as_number(call(symmetric_scale, max_abs, bits, narrow), "scale")
                if isinstance(scale, str):
                    return scale
                m = torch.tensor(max_abs)
                s_ref = float(qparams_from_range(-m, m, bits, symmetric=True, narrow=narrow)[0])
                if math.isclose(scale, s_ref, rel_tol=1e-5):
                    continue
                qmin, qmax = qrange(bits, narrow=narrow)
                half = (qmax - qmin) / 2
                kind = "narrow" if narrow else "full"
                case = f"for max_abs = {max_abs:.4g} at {bits} bits, {kind} range [{qmin}, {qmax}],"
                wrong = {
                    2 ** (bits - 1): f"divides by 2^(bits-1) = {2 ** (bits - 1)}",
                    2 ** (bits - 1) - 1: f"divides by {2 ** (bits - 1) - 1}, the narrow range's "
                    "half width",
                    2 ** (bits - 1) - 0.5: f"divides by {2 ** (bits - 1) - 0.5}, the full range's "
                    "half width",
                    2**bits - 1: f"divides by {2**bits - 1}, but [-max_abs, max_abs] is "
                    "2 * max_abs wide",
                }
                if bits != 8:
                    wrong[127.5 if not narrow else 127] = (
                        f"divides by {127.5 if not narrow else 127}, the 8-bit value, "
                        f"although bits = {bits}"
                    )
                for divisor, what in wrong.items():
                    if math.isclose(scale, max_abs / divisor, rel_tol=1e-5):
                        return (
                            f"{case} your scale {what}; the codes span qmax - qmin = "
                            f"{qmax - qmin} steps for 2 * max_abs, so scale = max_abs / {half:g}"
                        )
                return (
                    f"{case} expected scale {s_ref:.6g}, got {scale:.6g}: "
                    "scale = max_abs / ((qmax - qmin) / 2)"
                )
        return None

    return run_check(
        "symmetric_scale",
        test,
        "full range divides by (qmax - qmin) / 2 (127.5 at 8 bits), narrow by qmax (127).",
    )


def scheme_gain_db(x: torch.Tensor, bits: int) -> float:
    """SQNR of min-max asymmetric (unsigned) minus min-max symmetric (signed), in dB."""
    s, z = choose_qparams(x, bits, symmetric=True)
    symmetric = sqnr_db(x, fake_quantize(x, s, z, bits))
    s, z = choose_qparams(x, bits, symmetric=False, signed=False)
    asymmetric = sqnr_db(x, fake_quantize(x, s, z, bits, signed=False))
    return asymmetric - symmetric


def _row_gains_db(rows: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`scheme_gain_db` of every row of ``rows`` at once (one set of qparams per row)."""

    def sqnr(symmetric: bool) -> torch.Tensor:
        s, z = choose_qparams(rows, bits, symmetric=symmetric, signed=symmetric, axis=0)
        noise = rows - fake_quantize(rows, s, z, bits, signed=symmetric, axis=0)
        return 10 * torch.log10(rows.double().pow(2).sum(1) / noise.double().pow(2).sum(1))

    return sqnr(False) - sqnr(True)


NEAR_MARGIN_DB = 0.25
""":func:`check_pick_scheme` also tries data this far (in dB) on either side of ``MIN_GAIN_DB``."""


def _scheme_cases(gen: torch.Generator) -> list[tuple[str, torch.Tensor, int]]:
    """``(name, x, bits)``: five shapes of distribution far from the rule's threshold, then,
    per bit width, a shifted and a leaky-ReLU distribution just above and just below it.

    The near cases are picked from a grid of shifts (slopes) as the ones whose gain is
    closest to ``MIN_GAIN_DB`` +- ``NEAR_MARGIN_DB``: only a measurement tells them apart.
    """
    normal = torch.randn(4096, generator=gen)
    far = {
        "zero-centred weights": 0.05 * normal,
        "post-ReLU activations": torch.relu(normal),
        "activations with a small negative tail (GELU-like)": torch.nn.functional.gelu(normal),
        "a shifted feature (mean 3, std 1)": normal + 3.0,
        "heavy-tailed weights (Laplace)": torch.distributions.Laplace(0.0, 1.0).icdf(
            torch.rand(4096, generator=gen).clamp(1e-4, 1 - 1e-4)
        ),
    }
    cases = [(name, x, bits) for name, x in far.items() for bits in (8, 4)]
    families = {
        "a feature of mean {:.2f}, std 1": (torch.linspace(0.0, 1.2, 41), lambda m: normal + m),
        "leaky-ReLU activations, negative slope {:.3f}": (
            torch.linspace(0.45, 1.0, 45),
            lambda a: torch.where(normal > 0, normal, a * normal),
        ),
    }
    for bits in (8, 4):
        for name, (grid, make) in families.items():
            gains = _row_gains_db(torch.stack([make(float(p)) for p in grid]), bits)
            for target in (MIN_GAIN_DB + NEAR_MARGIN_DB, MIN_GAIN_DB - NEAR_MARGIN_DB):
                i = int((gains - target).abs().argmin())
                if abs(gains[i] - MIN_GAIN_DB) > NEAR_MARGIN_DB / 2:  # clear of float noise
                    cases.append((name.format(float(grid[i])), make(float(grid[i])), bits))
    return cases


def check_pick_scheme(
    pick_scheme: Callable[[torch.Tensor, int], str], seed: int = SEED
) -> CheckResult:
    """Check ``pick_scheme(x, bits) -> "symmetric" or "asymmetric"``.

    The rule: min-max asymmetric (unsigned codes) only if its SQNR beats
    min-max symmetric (signed codes) by more than ``MIN_GAIN_DB`` = 1 dB,
    because its zero point costs extra work in every integer matmul. Tested on
    five distributions far from the threshold at 8 and 4 bits, and on eight
    within ``NEAR_MARGIN_DB`` of it, where no rule of thumb can stand in for
    measuring.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 12)
        for name, x, bits in _scheme_cases(gen):
            gain = scheme_gain_db(x, bits)
            expected = "asymmetric" if gain > MIN_GAIN_DB else "symmetric"
            got = call(pick_scheme, x.clone(), bits)
            if got not in ("symmetric", "asymmetric"):
                return f"return 'symmetric' or 'asymmetric', got {got!r}"
            if got != expected:
                return (
                    f"for {name} (range [{x.min():.3g}, {x.max():.3g}]) at {bits} bits, "
                    f"asymmetric gains {gain:.2f} dB of SQNR over symmetric, "
                    f"{'more' if gain > MIN_GAIN_DB else 'less'} than {MIN_GAIN_DB:g} dB: "
                    f"expected {expected!r}, got {got!r}. Measure both with sqnr_db "
                    "(min-max qparams from choose_qparams: signed symmetric, unsigned "
                    "asymmetric) and compare the difference with 1 dB."
                )
        return None

    return run_check(
        "pick_scheme",
        test,
        "picks the scheme the measured SQNR supports, near the 1 dB threshold too, 8 and 4 bits.",
    )
