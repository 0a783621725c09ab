"""Checks for notebook 01: quantize, dequantize, and the error of the round trip.

Each check draws fresh inputs from a seeded generator (so its feedback is the
same on every run, and its inputs are not the notebook's examples), compares
the learner's function with the package's reference, and recognizes the
typical mistakes (floor instead of round, no clamping, the zero point on the
wrong side) so that its message says what to fix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..affine import dequantize, fake_quantize, quantize
from .feedback import (
    SEED,
    CheckResult,
    call,
    first_difference,
    known_mistake,
    random_scale,
    run_check,
    tensor_problem,
)

# ---------------------------------------------------------------- quantize


def _quantize_problem(
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    scale: float,
    zero_point: int,
    qmin: int,
    qmax: int,
) -> str | None:
    """Compare ``fn(x, scale, zero_point, qmin, qmax)`` with :func:`quantize` on 8-bit codes."""
    got = call(fn, x.clone(), scale, zero_point, qmin, qmax)
    if problem := tensor_problem(got, x, "linear_quantize"):
        return problem
    expected = quantize(x, scale, zero_point, 8, signed=qmin < 0)
    i = first_difference(got, expected)
    if i is None:
        if got.is_floating_point() or got.dtype == torch.bool:
            return (
                f"the codes are right but their dtype is {got.dtype}: codes are integers; "
                "convert them with .to(torch.int32) (or torch.int8 / torch.uint8)"
            )
        return None

    x_i, got_i, exp_i = x.flatten()[i].item(), got.flatten()[i].item(), expected.flatten()[i].item()
    v = x.double() / scale + zero_point  # where x lands on the code axis, before rounding
    v_i = v.flatten()[i].item()
    at = f"x / scale + zero_point = {v_i:.4g} gave {got_i:g}, round gives {exp_i:g}"
    r = torch.round(v)
    mistakes = {
        f"looks like floor instead of round: {at}; use torch.round": torch.floor(v),
        f"looks like truncation toward zero (.int() without rounding): {at}; "
        "round first with torch.round": torch.trunc(v),
        f"looks like ceil instead of round: {at}; use torch.round": torch.ceil(v),
        f"ties are rounded up (floor(v + 0.5)): {at}. torch.round rounds half to even: "
        "0.5 -> 0, 1.5 -> 2, 2.5 -> 2": torch.floor(v + 0.5),
        f"ties are rounded away from zero: {at}. torch.round rounds half to even: "
        "0.5 -> 0, 1.5 -> 2, -2.5 -> -2": torch.sign(v) * torch.floor(v.abs() + 0.5),
        "the zero point is missing: q = round(x / scale + zero_point)": torch.round(
            x.double() / scale
        ),
        f"adds the zero point after rounding, round(x / scale) + zero_point: {at}. At a tie "
        "(x / scale = k + 0.5) with an odd zero point the two orders differ; add it before "
        "rounding, q = round(x / scale + zero_point) (notebook 03 shows which order your "
        "PyTorch's quantize_per_tensor uses)": torch.round(x.double() / scale) + zero_point,
        "the zero point is subtracted; quantize adds it: q = round(x / scale + zero_point) "
        "(dequantize is the one that subtracts it)": torch.round(x.double() / scale - zero_point),
        "the zero point is added to x before dividing; add it to x / scale: "
        "q = round(x / scale + zero_point)": torch.round((x.double() + zero_point) / scale),
        "x is multiplied by the scale; quantize divides by it: "
        "q = round(x / scale + zero_point)": torch.round(x.double() * scale + zero_point),
    }
    clamped = {m: t.clamp(qmin, qmax) for m, t in mistakes.items()}
    if message := known_mistake(got, clamped):
        return message
    if first_difference(got, r) is None:
        side, end = ("above qmax", qmax) if exp_i == qmax else ("below qmin", qmin)
        return (
            f"values {side} are not clamped: x = {x_i:.4g} gives code {got_i:g}, but codes "
            f"stop at {end}; finish with .clamp(qmin, qmax)"
        )
    # A cast to an 8-bit dtype keeps the low 8 bits: 278 -> 22 in uint8, -1 -> 255.
    wrapped = [r.remainder(256), (r + 128).remainder(256) - 128, expected.long().remainder(256)]
    if any(first_difference(got, w) is None for w in wrapped):
        return (
            f"codes wrapped around: x = {x_i:.4g} should give code {exp_i:g}, but a cast to an "
            f"8-bit dtype turned it into {got_i:g}; clamp to [qmin, qmax] first and keep a dtype "
            "that holds them (torch.int32 always does)"
        )
    if message := known_mistake(got, mistakes):
        return message
    return (
        f"at x = {x_i:.4g} (scale {scale:.4g}, zero_point {zero_point}, codes [{qmin}, {qmax}]) "
        f"the code should be {exp_i:g}, got {got_i:g}: q = clamp(round(x / scale + zero_point), "
        "qmin, qmax)"
    )


def check_linear_quantize(
    linear_quantize: Callable[..., torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``linear_quantize(x, scale, zero_point, qmin, qmax) -> integer codes``.

    Compared with :func:`~linquant_helpers.affine.quantize` on (1) values whose
    ``x / scale`` is exact, ties included, to test the rounding; (2) the same
    ties with odd zero points, signed and unsigned, where adding the zero point
    after rounding gives another code; (3) random values and unsigned codes
    with a zero point; (4) signed codes with values far beyond both ends, to
    test clamping. Random values stay 0.1 away from ties, so ``x / scale`` and
    the package's ``x * (1 / scale)`` agree.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed)
        ties = torch.tensor([0.3, 0.7, -0.3, -0.7, 1.2, -1.8, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
        for zero_point, qmin, qmax in ((0, -128, 127), (7, 0, 255), (-3, -128, 127)):
            x = ties * 0.5
            if problem := _quantize_problem(linear_quantize, x, 0.5, zero_point, qmin, qmax):
                return problem

        scale = random_scale(gen, 0.02, 0.2)
        zero_point = int(torch.randint(60, 196, (), generator=gen))
        codes = torch.randint(5, 251, (4, 6), generator=gen)
        offset = 0.8 * torch.rand(codes.shape, generator=gen) - 0.4  # stay clear of ties
        x = ((codes - zero_point + offset) * scale).float()
        if problem := _quantize_problem(linear_quantize, x, scale, zero_point, 0, 255):
            return problem

        scale = random_scale(gen, 0.01, 0.1)
        zero_point = int(torch.randint(-20, 20, (), generator=gen))
        beyond = torch.tensor([0.7, 3.2, 22.6, 160.1])
        steps = torch.cat([127 - zero_point + beyond, -128 - zero_point - beyond, offset[0]])
        return _quantize_problem(
            linear_quantize, (steps * scale).float(), scale, zero_point, -128, 127
        )

    return run_check(
        "linear_quantize",
        test,
        "matches quantize() on fresh inputs: round half to even, zero point, clamping.",
    )


# ---------------------------------------------------------------- dequantize


def _dequantize_problem(
    fn: Callable[..., torch.Tensor], q: torch.Tensor, scale: float, zero_point: int
) -> str | None:
    """Compare ``fn(q, scale, zero_point)`` with :func:`dequantize`."""
    got = call(fn, q.clone(), scale, zero_point)
    if problem := tensor_problem(got, q, "linear_dequantize"):
        return problem
    if not got.is_floating_point():
        return (
            f"dequantized values are real numbers, but the result has dtype {got.dtype}: "
            "return a float tensor, scale * (q - zero_point)"
        )
    expected = dequantize(q, scale, zero_point)
    atol, rtol = 1e-5 * scale, 1e-5  # scale * q - scale * zero_point is right too
    i = first_difference(got, expected, atol, rtol)
    if i is None:
        return None
    q_i, got_i, exp_i = q.flatten()[i].item(), got.flatten()[i].item(), expected.flatten()[i].item()
    qd = q.double()
    mistakes = {
        "computes scale * q + zero_point; subtract the zero point from the code first: "
        "scale * (q - zero_point)": scale * qd + zero_point,
        "subtracts the zero point after scaling; subtract it from the code first: "
        "scale * (q - zero_point)": scale * qd - zero_point,
        "adds the zero point; dequantize subtracts it: scale * (q - zero_point)": scale
        * (qd + zero_point),
        "ignores the zero point: x_hat = scale * (q - zero_point)": scale * qd,
        "divides by the scale; dequantize multiplies by it: scale * (q - zero_point)": (
            qd - zero_point
        )
        / scale,
        # uint8 - int stays uint8 in PyTorch, so 100 - 128 wraps around to 228.
        f"q - zero_point wrapped around in {q.dtype}: q = {q_i} with zero_point {zero_point} "
        f"gave {(q_i - zero_point) % 256} instead of {q_i - zero_point}; convert first: "
        "q.float() - zero_point (or q.to(torch.int32))": scale * (qd - zero_point).remainder(256),
    }
    if message := known_mistake(got, mistakes, atol, rtol):
        return message
    return (
        f"at q = {q_i} (scale {scale:.4g}, zero_point {zero_point}) expected {exp_i:.6g}, "
        f"got {got_i:.6g}: x_hat = scale * (q - zero_point)"
    )


def check_linear_dequantize(
    linear_dequantize: Callable[..., torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``linear_dequantize(q, scale, zero_point) -> float tensor``.

    Compared with :func:`~linquant_helpers.affine.dequantize` on random int32
    codes with a zero point, then on uint8 codes with ``zero_point = 128``,
    where subtracting in uint8 wraps around.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 1)
        q = torch.randint(-128, 128, (3, 5), generator=gen, dtype=torch.int32)
        scale = random_scale(gen, 0.01, 0.5)
        zero_point = int(torch.randint(-20, 21, (), generator=gen))
        if problem := _dequantize_problem(linear_dequantize, q, scale, zero_point):
            return problem
        q = torch.randint(0, 256, (16,), generator=gen).to(torch.uint8)
        return _dequantize_problem(linear_dequantize, q, random_scale(gen, 0.01, 0.5), 128)

    return run_check("linear_dequantize", test, "matches dequantize() on int32 and uint8 codes.")


# ---------------------------------------------------------------- error bound


def check_round_trip_error_bound(
    round_trip_error_bound: Callable[..., torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``round_trip_error_bound(x, scale, zero_point, qmin, qmax) -> tensor``.

    The answer is one bound per element of ``x`` on ``|x - dequantize(quantize(x))|``:
    ``scale / 2`` for ``x`` between the smallest and largest representable
    values ``lo = scale * (qmin - zero_point)`` and ``hi = scale * (qmax - zero_point)``,
    and the distance to ``[lo, hi]`` beyond them. Within half a step beyond
    ``lo`` or ``hi`` either ``scale / 2`` or the distance is accepted. The
    bound must hold for the error measured with the package, and be that tight.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 2)
        qmin, qmax = 0, 255
        scale = random_scale(gen, 0.01, 0.2)
        zero_point = int(torch.randint(20, 236, (), generator=gen))
        lo, hi = dequantize(torch.tensor([qmin, qmax]), scale, zero_point).tolist()
        span = torch.rand(200, generator=gen) * (hi - lo + 60 * scale) + lo - 30 * scale
        x = torch.cat([span, torch.tensor([lo, hi, 0.0])]).float()

        got = call(round_trip_error_bound, x.clone(), scale, zero_point, qmin, qmax)
        if problem := tensor_problem(got, x, "round_trip_error_bound"):
            return problem
        xd = x.double()
        error = (xd - fake_quantize(x, scale, zero_point, 8, signed=False).double()).abs()
        distance = torch.clamp(lo - xd, min=0) + torch.clamp(xd - hi, min=0)
        inside = distance == 0
        tol = 1e-4 * scale + 1e-6 * xd.abs()
        got_d = got.detach().double()

        lo_z, hi_z = scale * (qmin + zero_point), scale * (qmax + zero_point)
        shifted = torch.clamp(lo_z - xd, min=0) + torch.clamp(xd - hi_z, min=0)
        shifted_bound = torch.where(shifted > 0, shifted, scale / 2)
        if first_difference(got_d, shifted_bound, 1e-4 * scale, 1e-5) is None:
            return (
                f"your representable range is [{lo_z:.4g}, {hi_z:.4g}], scale * (q + zero_point); "
                "dequantize subtracts the zero point: the range is "
                f"[scale * (qmin - zero_point), scale * (qmax - zero_point)] = [{lo:.4g}, {hi:.4g}]"
            )
        too_small = (got_d < error - tol).flatten().nonzero()
        if len(too_small):
            i = int(too_small[0])
            where = (
                f"x = {x[i]:.4g} lies inside [{lo:.4g}, {hi:.4g}]"
                if inside[i]
                else f"x = {x[i]:.4g} lies beyond the representable range [{lo:.4g}, {hi:.4g}]: "
                "it is clamped to the nearest end"
            )
            return (
                f"not a bound: {where}, so its error is {error[i]:.4g}, more than your bound "
                f"{got_d[i]:.4g}. Inside the range the error is at most scale / 2; outside, "
                "it is the distance to the nearest end of the range."
            )
        tight = torch.where(inside, scale / 2, distance)
        # Within half a step of an end, where "inside" depends on float rounding, any bound
        # up to max(scale / 2, distance) is tight enough (it already holds, tested above).
        near_end = torch.minimum((xd - lo).abs(), (xd - hi).abs()) <= scale / 2
        loose_in_band = torch.maximum(distance, torch.full_like(distance, scale / 2))
        ok = ((got_d - tight).abs() <= tol) | (near_end & (got_d <= loose_in_band + tol))
        wrong = (~ok).flatten().nonzero()
        if not len(wrong):
            return None
        i = int(wrong[0])
        if inside[i] and abs(got_d[i] - scale) <= tol[i]:
            return (
                f"inside the range your bound is scale = {scale:.4g}, twice too loose: rounding "
                "moves a value by at most half a step, scale / 2"
            )
        return (
            f"at x = {x[i]:.4g} (representable range [{lo:.4g}, {hi:.4g}]) expected a bound of "
            f"{tight[i]:.4g}, got {got_d[i]:.4g}: scale / 2 inside the range, the distance "
            "to the nearest end outside"
        )

    return run_check(
        "round_trip_error_bound",
        test,
        "a tight bound: scale / 2 inside the representable range, the distance to it outside.",
    )
