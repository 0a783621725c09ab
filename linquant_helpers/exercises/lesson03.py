"""Checks for notebook 03: reproduce PyTorch's quantized tensors, fake quantization and observer.

The references are the package's functions, which the tests prove bit-identical
to PyTorch's (deprecated) kernels; the checks themselves never call those.
Inputs include exact ties with an odd zero point, where the order of
"round" and "add the zero point" decides the code. That order depends on the
PyTorch release (x86: added first up to torch 2.13, rounded first from 2.14), so the
check of ``quantize_like_torch`` asks :func:`~linquant_helpers.hardware.zero_point_rounding_order`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from ..affine import choose_qparams, dequantize, qrange, quantize
from ..hardware import ADD_THEN_ROUND, quantize_as_pytorch_does, zero_point_rounding_order
from .feedback import (
    SEED,
    CheckResult,
    as_pair,
    call,
    first_difference,
    known_mistake,
    random_scale,
    run_check,
    tensor_problem,
    zero_point_problem,
)

QUANTIZED_DTYPES = {"torch.quint8": False, "torch.qint8": True}
"""The quantized dtypes the checks use, by name, and whether their codes are signed."""


def signed_codes(dtype: object) -> bool:
    """True for ``torch.qint8``, False for ``torch.quint8``; ``ValueError`` otherwise."""
    if str(dtype) not in QUANTIZED_DTYPES:
        raise ValueError(f"dtype must be torch.quint8 or torch.qint8, got {dtype}")
    return QUANTIZED_DTYPES[str(dtype)]


def _round_first(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``round(x * (1 / scale))`` as int32: quantize with a zero point of 0 and 16-bit codes.

    The first half of ``torch.fake_quantize_per_tensor_affine``, which adds
    the zero point only after rounding; 16 bits leave room for codes far
    beyond the 8-bit range, so that clamping can be tested.
    """
    return quantize(x, scale, 0, 16).to(torch.int32)


def _in_order(
    rounding: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scale: float,
    zero_point: int,
    adds_first: bool,
) -> torch.Tensor:
    """``rounding(x / scale + zero_point)`` or ``rounding(x / scale) + zero_point``, in float64."""
    r = x.double() / scale
    return rounding(r + zero_point) if adds_first else rounding(r) + zero_point


def _tie_inputs(gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """Values whose ``x / scale`` is exactly ``k + 0.5`` (scale 0.5), plus random ones."""
    k = torch.arange(-6, 6)
    return torch.cat([(k + 0.5) * 0.5, torch.randn(8, generator=gen)]), 0.5


def _random_inputs(
    gen: torch.Generator, zero_point: int, signed: bool
) -> tuple[torch.Tensor, float]:
    """Random values 0.1 away from ties, a few of them far beyond the 8-bit codes."""
    qmin, qmax = qrange(8, signed=signed)
    scale = random_scale(gen, 0.01, 0.1)
    codes = torch.randint(qmin - 40, qmax + 41, (5, 8), generator=gen)
    offset = 0.8 * torch.rand(codes.shape, generator=gen) - 0.4
    return ((codes - zero_point + offset) * scale).float(), scale


def _cases(gen: torch.Generator) -> list[tuple[torch.Tensor, float, int, object]]:
    """``(x, scale, zero_point, dtype)``: ties with odd zero points, then random values."""
    x, scale = _tie_inputs(gen)
    cases = [(x, scale, -3, torch.qint8), (x, scale, 1, torch.quint8)]
    for dtype, zero_point in ((torch.quint8, 131), (torch.qint8, -9)):
        x, scale = _random_inputs(gen, zero_point, signed_codes(dtype))
        cases.append((x, scale, zero_point, dtype))
    return cases


def check_quantize_like_torch(
    quantize_like_torch: Callable[..., torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``quantize_like_torch(x, scale, zero_point, dtype) -> integer codes``.

    The codes must equal ``torch.quantize_per_tensor(x, scale, zero_point, dtype).int_repr()``
    for ``dtype`` ``torch.quint8`` or ``torch.qint8``, as computed by
    :func:`~linquant_helpers.hardware.quantize_as_pytorch_does` in the order this
    PyTorch uses (:func:`~linquant_helpers.hardware.zero_point_rounding_order`):
    ``round(x / scale + zero_point)`` where it adds the zero point first,
    ``round(x / scale) + zero_point`` where it rounds first. The diagnoses of
    typical mistakes are written in that order too.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 20)
        for x, scale, zero_point, dtype in _cases(gen):
            signed = signed_codes(dtype)
            qmin, qmax = qrange(8, signed=signed)
            got = call(quantize_like_torch, x.clone(), scale, zero_point, dtype)
            if problem := tensor_problem(got, x, "quantize_like_torch"):
                return problem
            expected = quantize_as_pytorch_does(x, scale, zero_point, dtype)
            i = first_difference(got, expected)
            if i is None:
                if got.is_floating_point():
                    return (
                        f"the codes are right but their dtype is {got.dtype}, "
                        "while int_repr() returns integers: convert with .to(torch.int32)"
                    )
                continue
            x_i, got_i = x.flatten()[i].item(), got.flatten()[i].item()
            exp_i = expected.flatten()[i].item()
            at = f"at x = {x_i:g}, scale = {scale:g}, zero_point = {zero_point}"
            if got_i > qmax or got_i < qmin:
                return (
                    f"{at} you give {got_i:g}, outside the codes of {dtype}, [{qmin}, {qmax}]: "
                    "clamp to the dtype's range"
                )
            adds_first = zero_point_rounding_order() == ADD_THEN_ROUND
            round_first = (_round_first(x, scale) + zero_point).clamp(qmin, qmax)
            add_first = quantize(x, scale, zero_point, 8, signed=signed)
            if adds_first and first_difference(got, round_first) is None:
                return (
                    f"{at} torch.quantize_per_tensor gives {exp_i:g} but you give {got_i:g}: add "
                    "the zero point before rounding, round(x / scale + zero_point), as this "
                    "PyTorch does (hardware.zero_point_rounding_order() says so). Rounding "
                    "first, then adding it, is what fake_quantize_per_tensor_affine does."
                )
            if not adds_first and first_difference(got, add_first) is None:
                return (
                    f"{at} this PyTorch's quantize_per_tensor gives {exp_i:g} but you give "
                    f"{got_i:g}: it rounds x / scale first, then adds the zero point, "
                    "round(x / scale) + zero_point (hardware.zero_point_rounding_order() says "
                    "so); adding it before rounding is what the package's quantize does"
                )
            formula = functools.partial(
                _in_order, x=x, scale=scale, zero_point=zero_point, adds_first=adds_first
            )
            in_order = f"round(x / scale{' + zero_point)' if adds_first else ') + zero_point'}"
            other = (0, 255) if signed else (-128, 127)
            mistakes = {
                "ties are rounded up (floor(v + 0.5)); torch.round, like PyTorch's kernels, "
                "rounds half to even": formula(lambda v: torch.floor(v + 0.5)).clamp(qmin, qmax),
                "ties are rounded away from zero; torch.round, like PyTorch's kernels, rounds "
                "half to even": formula(lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5)).clamp(
                    qmin, qmax
                ),
                "the codes are floored, not rounded; use torch.round": formula(torch.floor).clamp(
                    qmin, qmax
                ),
                "the codes are truncated toward zero (.int() without rounding), not rounded; "
                "use torch.round": formula(torch.trunc).clamp(qmin, qmax),
                f"the zero point is missing: {in_order}": torch.round(x.double() / scale).clamp(
                    qmin, qmax
                ),
                f"{dtype} has codes [{qmin}, {qmax}]; you clamped to [{other[0]}, {other[1]}], "
                "the range of the other dtype": formula(torch.round).clamp(*other),
            }
            if message := known_mistake(got, mistakes):
                return f"{at}: {message}"
            return (
                f"{at} ({dtype}, codes [{qmin}, {qmax}]) torch.quantize_per_tensor gives "
                f"{exp_i:g}, you give {got_i:g}"
            )
        return None

    return run_check(
        "quantize_like_torch",
        test,
        "the codes of torch.quantize_per_tensor, ties and clamping included, quint8 and qint8.",
    )


def _values(q: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """Fake-quantized values of codes ``q`` computed without the zero point (rounded first)."""
    return ((q + zero_point).clamp(qmin, qmax) - zero_point) * scale


def check_fake_quantize_like_torch(
    fake_quantize_like_torch: Callable[..., torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``fake_quantize_like_torch(x, scale, zero_point, quant_min, quant_max) -> float``.

    The values must equal ``torch.fake_quantize_per_tensor_affine`` with the same
    arguments, ``(clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``:
    the zero point added *after* rounding. Built here from package primitives.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 21)
        for x, scale, zero_point, dtype in _cases(gen):
            qmin, qmax = qrange(8, signed=signed_codes(dtype))
            got = call(fake_quantize_like_torch, x.clone(), scale, zero_point, qmin, qmax)
            if problem := tensor_problem(got, x, "fake_quantize_like_torch"):
                return problem
            if not got.is_floating_point():
                return (
                    f"fake quantization returns real values (scale * (q - zero_point)), "
                    f"but yours have dtype {got.dtype}: it quantizes *and* dequantizes"
                )
            codes = (_round_first(x, scale) + zero_point).clamp(qmin, qmax)
            expected = dequantize(codes, scale, zero_point)
            atol = 1e-4 * scale
            i = first_difference(got, expected, atol)
            if i is None:
                continue
            x_i, got_i = x.flatten()[i].item(), got.flatten()[i].item()
            exp_i = expected.flatten()[i].item()
            at = f"at x = {x_i:g}, scale = {scale:g}, zero_point = {zero_point}"
            add_first = quantize(x, scale, zero_point, 8, signed=qmin < 0)
            unclamped = _round_first(x, scale)
            r = x.double() / scale

            mistakes = {
                f"{at}: ties are rounded up (floor(v + 0.5)); PyTorch rounds half to even, "
                "like torch.round": _values(torch.floor(r + 0.5), scale, zero_point, qmin, qmax),
                f"{at}: ties are rounded away from zero; PyTorch rounds half to even, like "
                "torch.round": _values(
                    torch.sign(r) * torch.floor(r.abs() + 0.5), scale, zero_point, qmin, qmax
                ),
                f"{at}: the zero point is ignored, so the clamping range is wrong: the codes "
                "round(x / scale) + zero_point are clamped to [quant_min, quant_max]": (
                    unclamped.clamp(qmin, qmax).double() * scale
                ),
                f"{at} fake_quantize_per_tensor_affine gives {exp_i:g} but you give {got_i:g}: "
                "it rounds x / scale first and adds the zero point after, "
                "round(x / scale) + zero_point. Adding it before rounding is what the "
                "package's quantize does.": dequantize(add_first, scale, zero_point),
                f"values beyond [quant_min, quant_max] = [{qmin}, {qmax}] are not clamped: "
                f"{at} you give {got_i:g}, expected {exp_i:g}": unclamped.double() * scale,
                f"these are codes, not values: {at} expected {exp_i:g}, got {got_i:g}; "
                "finish with scale * (q - zero_point)": codes,
            }
            if message := known_mistake(got, mistakes, atol):
                return message
            return (
                f"{at} (quant_min {qmin}, quant_max {qmax}) fake_quantize_per_tensor_affine "
                f"gives {exp_i:.6g}, you give {got_i:.6g}"
            )
        return None

    return run_check(
        "fake_quantize_like_torch",
        test,
        "the values of torch.fake_quantize_per_tensor_affine, ties and clamping included.",
    )


def _observer_inputs(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Tensors of several shapes of range; none has a zero point within 0.02 of a tie."""
    cases: dict[str, torch.Tensor] = {}
    while len(cases) < 3:
        x = torch.randn(64, generator=gen)
        candidates = {
            "a zero-centred tensor": 0.3 * x,
            "a post-ReLU tensor": torch.relu(x),
            "an all-positive tensor (range without 0)": x.abs() + 2.0,
        }
        for name, t in candidates.items():
            lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
            frac = (-lo * 255 / (hi - lo)) % 1.0
            if name not in cases and abs(frac - 0.5) > 0.02:
                cases[name] = t
    return cases


def check_minmax_observer_qparams(
    minmax_observer_qparams: Callable[..., tuple], seed: int = SEED
) -> CheckResult:
    """Check ``minmax_observer_qparams(x, dtype, symmetric) -> (scale, zero_point)``.

    Must equal what ``MinMaxObserver(dtype=dtype, qscheme=per_tensor_symmetric
    if symmetric else per_tensor_affine)`` computes after seeing ``x``, as
    :func:`~linquant_helpers.affine.choose_qparams` reproduces it, for quint8
    and qint8, symmetric and not.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 22)
        for name, x in _observer_inputs(gen).items():
            for dtype in (torch.quint8, torch.qint8):
                for symmetric in (False, True):
                    signed = signed_codes(dtype)
                    qmin, qmax = qrange(8, signed=signed)
                    answer = as_pair(call(minmax_observer_qparams, x.clone(), dtype, symmetric))
                    if isinstance(answer, str):
                        return answer
                    scale, zero_point = answer
                    s_ref, z_ref = choose_qparams(x, 8, symmetric=symmetric, signed=signed)
                    s_ref, z_ref = float(s_ref), int(z_ref)
                    kind = "per_tensor_symmetric" if symmetric else "per_tensor_affine"
                    case = f"for {name} with {dtype} and {kind}"
                    if (
                        signed
                        and not symmetric
                        and zero_point in (z_ref - qmin, min(z_ref - qmin, qmax))
                        and zero_point != z_ref
                    ):
                        return (
                            f"{case} expected zero_point {z_ref}, got {zero_point:g}: qmin is "
                            f"missing; zero_point = qmin - round(min(x.min(), 0) / scale) with "
                            f"qmin = {qmin} for qint8"
                        )
                    if problem := zero_point_problem(zero_point, qmin, qmax):
                        return problem
                    max_abs = float(x.abs().max())
                    if symmetric and math.isclose(scale, max_abs / 127, rel_tol=1e-5):
                        return (
                            f"{case} your scale is max|x| / 127; MinMaxObserver divides by "
                            "(qmax - qmin) / 2 = 127.5, the full 255 steps of the 8-bit codes"
                        )
                    if not math.isclose(scale, s_ref, rel_tol=1e-5):
                        lo, hi = float(x.min()), float(x.max())
                        wide = max(hi, 0.0) - min(lo, 0.0)
                        if symmetric and math.isclose(scale, wide / 255, rel_tol=1e-5):
                            return (
                                f"{case} your scale is (max - min) / 255, the affine one; "
                                "symmetric centres the range on 0: max(|min|, |max|) / 127.5"
                            )
                        if not symmetric and math.isclose(scale, max_abs / 127.5, rel_tol=1e-5):
                            return (
                                f"{case} your scale is max|x| / 127.5, the symmetric one; "
                                "per_tensor_affine uses (max(x.max(), 0) - min(x.min(), 0)) / 255"
                            )
                        if math.isclose(scale, (hi - lo) / 255, rel_tol=1e-5):
                            return (
                                f"{case} the observer widens the range to include 0 "
                                "(min(x.min(), 0), max(x.max(), 0)) before computing the scale"
                            )
                        return f"{case} expected scale {s_ref:.6g}, got {scale:.6g}"
                    if zero_point != z_ref:
                        hint = (
                            "symmetric quint8 puts 0.0 at the middle code, 128"
                            if symmetric and not signed
                            else "zero_point = qmin - round(min(x.min(), 0) / scale)"
                            if not symmetric
                            else "symmetric qint8 has zero_point 0"
                        )
                        return f"{case} expected zero_point {z_ref}, got {zero_point:g}: {hint}"
        return None

    return run_check(
        "minmax_observer_qparams",
        test,
        "the scale and zero point of MinMaxObserver, quint8 and qint8, affine and symmetric.",
    )
