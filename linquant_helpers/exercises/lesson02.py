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
        cases = _ranges(gen, 6) + [(0.5, 4.0, 8), (-3.0, -1.0, 8)]
        for x_min, x_max, bits in cases:
            qmin, qmax = qrange(bits, signed=False)
            answer = as_pair(call(asymmetric_qparams, x_min, x_max, bits))
            if isinstance(answer, str):
                return answer
            scale, zero_point = answer
            if problem := zero_point_problem(zero_point, qmin, qmax):
                return problem
            s_ref, z_ref = qparams_from_range(
                torch.tensor(x_min), torch.tensor(x_max), bits, symmetric=False, signed=False
            )
            s_ref, z_ref = float(s_ref), int(z_ref)
            case = f"for [{x_min:.4g}, {x_max:.4g}] at {bits} bits"
            if not math.isclose(scale, s_ref, rel_tol=1e-5):
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
                return (
                    f"{case} expected zero_point {z_ref}, got {zero_point:g}: zero_point is the "
                    "code of 0.0, qmin - round(x_min / scale)"
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


def _scheme_cases(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Tensors of different shapes of distribution, each clearly on one side of the rule."""
    normal = torch.randn(4096, generator=gen)
    return {
        "zero-centred weights": 0.05 * normal,
        "post-ReLU activations": torch.relu(normal),
        "activations with a small negative tail (GELU-like)": torch.nn.functional.gelu(normal),
        "a shifted feature (mean 3, std 1)": normal + 3.0,
        "heavy-tailed weights (Laplace)": torch.distributions.Laplace(0.0, 1.0).icdf(
            torch.rand(4096, generator=gen).clamp(1e-4, 1 - 1e-4)
        ),
    }


def check_pick_scheme(
    pick_scheme: Callable[[torch.Tensor, int], str], seed: int = SEED
) -> CheckResult:
    """Check ``pick_scheme(x, bits) -> "symmetric" or "asymmetric"``.

    The rule: min-max asymmetric (unsigned codes) only if its SQNR beats
    min-max symmetric (signed codes) by more than ``MIN_GAIN_DB`` = 1 dB,
    because its zero point costs extra work in every integer matmul. Tested on
    five distributions at 8 and 4 bits.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 12)
        for name, x in _scheme_cases(gen).items():
            for bits in (8, 4):
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
                        f"expected {expected!r}, got {got!r}. Measure both with sqnr_db."
                    )
        return None

    return run_check(
        "pick_scheme",
        test,
        "picks the scheme the measured SQNR supports on five distributions, 8 and 4 bits.",
    )
