"""The wrong-answer catalogue: typical mistakes per exercise, and right answers written differently.

Every :class:`WrongAnswer` is a learner's answer with one typical mistake; its
check must print ``[FAIL]`` with ``expect`` in the message (the diagnosis).
Every :class:`RightAnswer` is a correct answer written another way than the
reference solution; its check must print ``[PASS]``.
``tests/test_exercise_contract.py`` runs them all, and the instructors' guide
lists the mistakes from here, so the guide cannot drift from the checks.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from linquant_helpers import (
    PercentileObserver,
    choose_qparams,
    fake_quantize,
    hardware,
    mse,
    ptq,
    qparams_from_range,
    sqnr_db,
)


@dataclass(frozen=True)
class WrongAnswer:
    """A wrong answer to one exercise, and the diagnosis its check must give."""

    lesson: str  # "lesson01"
    check: str  # name of the check function, e.g. "check_linear_quantize"
    mistake: str  # short human description, e.g. "adds the zero point after rounding"
    answer: Callable  # the wrong answer (a function or class, as the learner would write it)
    expect: str  # a substring the [FAIL] feedback line must contain (the diagnosis)
    # what the check runs under (the contract test and the instructors' guide enter it), for
    # mistakes that depend on this PyTorch: e.g. its zero-point rounding order (lesson 03)
    context: Callable[[], AbstractContextManager] = contextlib.nullcontext


@dataclass(frozen=True)
class RightAnswer:
    """A right answer written differently from the reference solution: it must pass."""

    lesson: str
    check: str
    mistake: str  # how it differs from the reference solution (not a mistake: it must pass)
    answer: Callable


_wrong: list[WrongAnswer] = []
_right: list[RightAnswer] = []


def wrong(
    lesson: str,
    check: str,
    mistake: str,
    expect: str,
    context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> Callable:
    """Decorator: register the decorated function or class as a wrong answer."""

    def register(answer: Callable) -> Callable:
        _wrong.append(WrongAnswer(lesson, check, mistake, answer, expect, context))
        return answer

    return register


def right(lesson: str, check: str, how: str) -> Callable:
    """Decorator: register the decorated function or class as a right answer written differently."""

    def register(answer: Callable) -> Callable:
        _right.append(RightAnswer(lesson, check, how, answer))
        return answer

    return register


# ================================================================ lesson 01

L1Q = ("lesson01", "check_linear_quantize")


def _quantize(rounding=torch.round, *, zero_point="add", clamp=True, dtype=torch.int32):
    def linear_quantize(x, scale, zp, qmin, qmax):
        v = {
            "add": x / scale + zp,
            "subtract": x / scale - zp,
            "before_divide": (x + zp) / scale,
            "times_scale": x * scale + zp,
            "missing": x / scale,
        }[zero_point]
        q = rounding(v)
        if clamp:
            q = q.clamp(qmin, qmax)
        return q.to(dtype)

    return linear_quantize


for _args, _kw, _mistake, _expect in [
    ((torch.floor,), {}, "floor instead of round", "floor instead of round"),
    ((torch.trunc,), {}, "truncates toward zero", "truncation toward zero"),
    ((lambda v: v.to(torch.int64),), {}, "casts to int without rounding", "truncation toward zero"),
    ((torch.ceil,), {}, "ceil instead of round", "ceil instead of round"),
    (
        (lambda v: torch.floor(v + 0.5),),
        {},
        "rounds ties up, floor(v + 0.5)",
        "ties are rounded up",
    ),
    (
        (lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5),),
        {},
        "rounds ties away from zero",
        "rounded away from zero",
    ),
    ((), {"zero_point": "missing"}, "forgets the zero point", "zero point is missing"),
    ((), {"zero_point": "subtract"}, "subtracts the zero point", "zero point is subtracted"),
    ((), {"zero_point": "before_divide"}, "adds the zero point to x", "added to x before dividing"),
    ((), {"zero_point": "times_scale"}, "multiplies by the scale", "multiplied by the scale"),
    ((), {"clamp": False}, "does not clamp", "are not clamped"),
    ((), {"dtype": torch.float32}, "returns float codes", "dtype is torch.float32"),
    ((), {"clamp": False, "dtype": torch.uint8}, "casts to uint8 without clamping", "wrapped"),
    ((), {"dtype": torch.uint8}, "casts signed codes to uint8", "wrapped around"),
    ((), {"dtype": torch.int8}, "casts unsigned codes to int8", "wrapped around"),
]:
    wrong(*L1Q, _mistake, _expect)(_quantize(*_args, **_kw))


@wrong(*L1Q, "adds the zero point after rounding", "adds the zero point after rounding")
def _(x, scale, zero_point, qmin, qmax):
    return (torch.round(x / scale) + zero_point).clamp(qmin, qmax).to(torch.int32)


@wrong(*L1Q, "clamps to [0, 255] whatever qmin and qmax", "codes [-128, 127]")
def _(x, scale, zero_point, qmin, qmax):
    return torch.round(x / scale + zero_point).clamp(0, 255).int()


@wrong(*L1Q, "clamps to the narrow range [-qmax, qmax]", "should be -128")
def _(x, scale, zero_point, qmin, qmax):
    return torch.round(x / scale + zero_point).clamp(-qmax, qmax).int()


@wrong(*L1Q, "returns a list", "must return a torch.Tensor")
def _(x, scale, zero_point, qmin, qmax):
    return torch.round(x / scale + zero_point).clamp(qmin, qmax).int().tolist()


@wrong(*L1Q, "forgets return", "returned None: did you forget return?")
def _(x, scale, zero_point, qmin, qmax):
    q = torch.round(x / scale + zero_point).clamp(qmin, qmax).int()  # noqa: F841


@right(*L1Q, "clamps before rounding")
def _(x, scale, zero_point, qmin, qmax):
    return torch.round(torch.clamp(x / scale + zero_point, qmin, qmax)).to(torch.int32)


@right(*L1Q, "float64 arithmetic, int64 codes")
def _(x, scale, zero_point, qmin, qmax):
    return torch.round(x.double() / scale + zero_point).clamp(qmin, qmax).long()


@right(*L1Q, "NumPy's rint (also half to even), int8 or uint8 as the range needs")
def _(x, scale, zero_point, qmin, qmax):
    q = np.clip(np.rint(x.numpy() / scale + zero_point), qmin, qmax)
    return torch.from_numpy(q).to(torch.int8 if qmin < 0 else torch.uint8)


@right(*L1Q, "Python's round per element (half to even)")
def _(x, scale, zero_point, qmin, qmax):
    codes = [min(max(round(v / scale + zero_point), qmin), qmax) for v in x.flatten().tolist()]
    return torch.tensor(codes, dtype=torch.int32).reshape(x.shape)


L1D = ("lesson01", "check_linear_dequantize")
for _fn, _mistake, _expect in [
    (
        lambda q, s, z: s * q.float() + z,
        "adds the zero point after scaling",
        "scale * q + zero_point",
    ),
    (lambda q, s, z: s * q.float() - z, "subtracts the zero point after scaling", "after scaling"),
    (lambda q, s, z: s * (q.float() + z), "adds the zero point", "adds the zero point"),
    (lambda q, s, z: s * q.float(), "ignores the zero point", "ignores the zero point"),
    (lambda q, s, z: (q.float() - z) / s, "divides by the scale", "divides by the scale"),
    (
        lambda q, s, z: s * (q - z),
        "subtracts in uint8 (wraps around)",
        "wrapped around in torch.uint8",
    ),
    (lambda q, s, z: (q - z).long(), "returns integer codes", "float tensor"),
    (lambda q, s, z: s * (q.to(torch.int8).float() - z), "casts uint8 codes to int8", "expected"),
]:
    wrong(*L1D, _mistake, _expect)(_fn)


@wrong(*L1D, "forgets return", "returned None: did you forget return?")
def _(q, scale, zero_point):
    x_hat = scale * (q.float() - zero_point)  # noqa: F841


for _fn, _how in [
    (lambda q, s, z: s * q.double() - s * z, "scale * q - scale * zero_point, float64"),
    (lambda q, s, z: (q.to(torch.int32) - z) * s, "converts to int32, then scales"),
    (lambda q, s, z: torch.mul(q.float().sub(z), s), "torch.mul and Tensor.sub"),
]:
    right(*L1D, _how)(_fn)

L1B = ("lesson01", "check_round_trip_error_bound")


def _ends(s, z, qmin, qmax):
    return s * (qmin - z), s * (qmax - z)


def _beyond(x, lo, hi):
    return torch.clamp(lo - x, min=0) + torch.clamp(x - hi, min=0)


for _fn, _mistake, _expect in [
    (lambda x, s, z, a, b: torch.full_like(x, s / 2), "scale / 2 everywhere", "not a bound"),
    (
        lambda x, s, z, a, b: torch.where(
            _beyond(x, *_ends(s, z, a, b)) > 0,
            _beyond(x, *_ends(s, z, a, b)),
            torch.full_like(x, s),
        ),
        "scale inside the range",
        "twice too loose",
    ),
    (lambda x, s, z, a, b: torch.full_like(x, 1e3), "a huge constant", "expected a bound"),
    (lambda x, s, z, a, b: s / 2, "returns one number", "must return a torch.Tensor"),
    (
        lambda x, s, z, a, b: _beyond(x, *_ends(s, z, a, b)),
        "only the distance beyond",
        "not a bound",
    ),
    (
        lambda x, s, z, a, b: s / 2 + _beyond(x, *_ends(s, z, a, b)),
        "scale / 2 plus the distance beyond",
        "expected a bound",
    ),
    (
        lambda x, s, z, a, b: torch.where(
            _beyond(x, s * (a + z), s * (b + z)) > 0,
            _beyond(x, s * (a + z), s * (b + z)),
            torch.full_like(x, s / 2),
        ),
        "range ends with + zero_point",
        "dequantize subtracts the zero point",
    ),
]:
    wrong(*L1B, _mistake, _expect)(_fn)


@right(*L1B, "max(scale / 2, distance beyond)")
def _(x, scale, zero_point, qmin, qmax):
    return torch.maximum(_beyond(x, *_ends(scale, zero_point, qmin, qmax)), torch.tensor(scale / 2))


@right(*L1B, "float64, with an explicit inside mask")
def _(x, scale, zero_point, qmin, qmax):
    lo, hi = _ends(scale, zero_point, qmin, qmax)
    xd = x.double()
    inside = (xd >= lo) & (xd <= hi)
    return torch.where(inside, scale / 2, torch.maximum(lo - xd, xd - hi))


# ================================================================ lesson 02

L2A = ("lesson02", "check_asymmetric_qparams")


def _asym(*, steps=lambda b: 2**b - 1, widen=True, rounding=round, sign=1, qmin=lambda b: 0):
    def asymmetric_qparams(x_min, x_max, bits):
        if widen:
            x_min, x_max = min(x_min, 0.0), max(x_max, 0.0)
        scale = (x_max - x_min) / steps(bits)
        zero_point = qmin(bits) + rounding(-sign * x_min / scale)
        return scale, min(max(zero_point, qmin(bits)), qmin(bits) + 2**bits - 1)

    return asymmetric_qparams


for _fn, _mistake, _expect in [
    (_asym(steps=lambda b: 2**b), "divides by 2^bits", "divides by 2^bits"),
    (_asym(steps=lambda b: 255), "divides by 255 whatever the bits", "divides by 255"),
    (_asym(widen=False), "does not widen the range to include 0", "widened to include 0"),
    (_asym(rounding=lambda v: v), "does not round the zero point", "round it"),
    (_asym(rounding=math.floor), "floors the zero point", "truncated"),
    (_asym(rounding=int), "truncates the zero point with int()", "truncated"),
    (_asym(sign=-1), "zero point with the wrong sign", "the sign is wrong"),
    (_asym(qmin=lambda b: -(2 ** (b - 1))), "signed codes", "signed codes"),
    (lambda lo, hi, b: (hi - lo) / (2**b - 1), "returns only the scale", "return a pair"),
    (lambda lo, hi, b: ((hi - lo) / 255, "128"), "zero point as a string", "must be a number"),
    (lambda lo, hi, b: ((hi - lo) / (2**b - 1), 300), "zero point out of range", "clamp it"),
    (lambda lo, hi, b: _asym()(lo, hi, b)[::-1], "returns (zero_point, scale)", "pair is swapped"),
]:
    wrong(*L2A, _mistake, _expect)(_fn)


@wrong(*L2A, "widens only the lower end", "widened to include 0")
def _(x_min, x_max, bits):
    x_min = min(x_min, 0.0)
    scale = (x_max - x_min) / (2**bits - 1)
    return scale, min(max(round(-x_min / scale), 0), 2**bits - 1)


@wrong(*L2A, "forgets return", "returned None: did you forget return?")
def _(x_min, x_max, bits):
    scale = (max(x_max, 0.0) - min(x_min, 0.0)) / (2**bits - 1)  # noqa: F841


@right(*L2A, "tensors instead of Python numbers")
def _(x_min, x_max, bits):
    lo, hi = torch.tensor(min(x_min, 0.0)), torch.tensor(max(x_max, 0.0))
    scale = (hi - lo) / (2**bits - 1)
    return scale, torch.round(-lo / scale).clamp(0, 2**bits - 1)


@right(*L2A, "zero point from the top of the range, qmax - round(x_max / scale)")
def _(x_min, x_max, bits):
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    scale = (hi - lo) / (2**bits - 1)
    return scale, 2**bits - 1 - round(hi / scale)


L2S = ("lesson02", "check_symmetric_scale")
for _fn, _mistake, _expect in [
    (lambda m, b, n: m / 2 ** (b - 1), "divides by 2^(bits-1)", "divides by 2^(bits-1)"),
    (lambda m, b, n: m / (2 ** (b - 1) - 1), "always the narrow half width", "narrow range's"),
    (lambda m, b, n: m / (2 ** (b - 1) - 0.5), "always the full half width", "full range's"),
    (lambda m, b, n: m / (2**b - 1), "divides by 2^bits - 1", "2 * max_abs wide"),
    (
        lambda m, b, n: m / (2 ** (b - 1) - 0.5 - 0.5 * (not n)),
        "narrow swapped",
        "narrow range's half width",
    ),
    (lambda m, b, n: m / (127 if n else 127.5), "ignores bits", "the 8-bit value"),
    (lambda m, b, n: m / 100, "a made-up divisor", "expected scale"),
    (lambda m, b, n: "0.1", "returns a string", "scale must be a number"),
]:
    wrong(*L2S, _mistake, _expect)(_fn)

for _fn, _how in [
    (lambda m, b, n: 2 * m / (2**b - 1 - int(n)), "2 * max_abs over the number of steps"),
    (lambda m, b, n: torch.tensor(m, dtype=torch.float64) / ((2**b - 1 - int(n)) / 2), "float64"),
]:
    right(*L2S, _how)(_fn)

L2P = ("lesson02", "check_pick_scheme")


def _gain(x, bits, *, sym_narrow=False, asym_signed=False):
    s, z = choose_qparams(x, bits, symmetric=True, narrow=sym_narrow)
    sym = sqnr_db(x, fake_quantize(x, s, z, bits, narrow=sym_narrow))
    s, z = choose_qparams(x, bits, symmetric=False, signed=asym_signed)
    return sqnr_db(x, fake_quantize(x, s, z, bits, signed=asym_signed)) - sym


for _fn, _mistake, _expect in [
    (lambda x, b: "asymmetric", "always asymmetric", "expected 'symmetric'"),
    (lambda x, b: "symmetric", "always symmetric", "expected 'asymmetric'"),
    (
        lambda x, b: "asymmetric" if x.min() >= 0 else "symmetric",
        "asymmetric iff no negative value",
        "GELU-like",
    ),
    (
        lambda x, b: "asymmetric" if x.mean() > 0.5 * x.std() else "symmetric",
        "a mean / std rule of thumb",
        "dB",
    ),
    (
        lambda x, b: "asymmetric" if -x.min() < 0.5 * x.max() else "symmetric",
        "a min / max rule of thumb",
        "dB",
    ),
    (
        lambda x, b: "asymmetric" if _gain(x, b) > 0 else "symmetric",
        "threshold 0 dB",
        "less than 1 dB",
    ),
    (
        lambda x, b: "asymmetric" if _gain(x, b) > 3 else "symmetric",
        "threshold 3 dB",
        "more than 1 dB",
    ),
    (lambda x, b: "symmetric" if _gain(x, b) > 1 else "asymmetric", "labels swapped", "expected"),
    (
        lambda x, b: "asymmetric" if _gain(x, b, sym_narrow=True) > 1 else "symmetric",
        "narrow symmetric codes",
        "dB",
    ),
    (lambda x, b: "sym", "returns an abbreviation", "return 'symmetric' or 'asymmetric'"),
]:
    wrong(*L2P, _mistake, _expect)(_fn)


@right(*L2P, "compares the MSEs in dB instead of the SQNRs")
def _(x, bits):
    errors = {}
    for name, symmetric in (("symmetric", True), ("asymmetric", False)):
        s, z = choose_qparams(x, bits, symmetric=symmetric, signed=symmetric)
        errors[name] = mse(x, fake_quantize(x, s, z, bits, signed=symmetric))
    gain = 10 * math.log10(errors["symmetric"] / errors["asymmetric"])
    return "asymmetric" if gain > 1.0 else "symmetric"


@right(*L2P, "its own float64 SQNR and fake quantization")
def _(x, bits):
    xd = x.double()

    def sqnr(lo, hi, qmin, qmax, zero_point):
        scale = (hi - lo) / (qmax - qmin)
        zp = zero_point(scale)
        xq = (torch.clamp(torch.round(xd / scale + zp), qmin, qmax) - zp) * scale
        return 10 * math.log10(float((xd**2).sum() / ((xd - xq) ** 2).sum()))

    a = float(xd.abs().max())
    lo, hi = min(float(xd.min()), 0.0), max(float(xd.max()), 0.0)
    half = 2 ** (bits - 1)
    sym = sqnr(-a, a, -half, half - 1, lambda s: 0)
    asym = sqnr(lo, hi, 0, 2**bits - 1, lambda s: round(-lo / s))
    return "asymmetric" if asym - sym > 1.0 else "symmetric"


# ================================================================ lesson 03

L3Q = ("lesson03", "check_quantize_like_torch")
ADD_FIRST, ROUND_FIRST = hardware.ADD_THEN_ROUND, hardware.ROUND_THEN_ADD


def _as_on(order: str) -> Callable[[], AbstractContextManager]:
    """Run the check as on a PyTorch whose quantize_per_tensor uses ``order``: the
    instructors' guide then reads the same whichever PyTorch generates it, and the tests
    cover both orders on any PyTorch (tests/test_exercises_lesson03.py runs the rest of
    these answers under the other order too)."""
    return functools.partial(hardware.assume_zero_point_rounding_order, order)


def _codes_range(dtype):
    return (-128, 127) if dtype == torch.qint8 else (0, 255)


def _rounds_first() -> bool:
    """Whether this PyTorch (or the one assumed) rounds x / scale before adding the zero point."""
    return hardware.zero_point_rounding_order() == ROUND_FIRST


def _qlt(rounding=torch.round, *, first=None, clamp=True, dtype=torch.int32, zp=True, swap=False):
    """An answer with one mistake; ``first=None``: in this PyTorch's order, as the learner
    who read notebook 03's section 5 writes it."""

    def quantize_like_torch(x, scale, zero_point, qdtype):
        qmin, qmax = _codes_range(qdtype)
        if swap:
            qmin, qmax = (0, 255) if qmin < 0 else (-128, 127)
        z = zero_point if zp else 0
        rounds_first = _rounds_first() if first is None else first
        q = rounding(x / scale) + z if rounds_first else rounding(x / scale + z)
        return (q.clamp(qmin, qmax) if clamp else q).to(dtype)

    return quantize_like_torch


wrong(
    *L3Q,
    "rounds first, then adds the zero point (on a PyTorch that adds it first: x86 up to 2.13)",
    "add the zero point before rounding",
    _as_on(ADD_FIRST),
)(_qlt(first=True))
wrong(
    *L3Q,
    "adds the zero point before rounding (on a PyTorch that rounds first: x86 from 2.14)",
    "it rounds x / scale first",
    _as_on(ROUND_FIRST),
)(_qlt(first=False))

L3Q_ANY_ORDER = [  # mistakes made in either order: the guide shows them as on an add-first PyTorch
    (_qlt(clamp=False), "does not clamp", "outside the codes of torch.quint8"),
    (_qlt(swap=True), "swaps the ranges of quint8 and qint8", "the range of the other dtype"),
    (
        lambda x, s, z, d: (
            (torch.round(x / s) + z if _rounds_first() else torch.round(x / s + z))
            .clamp(-128, 127)
            .int()
        ),
        "always clamps to qint8",
        "outside the codes",
    ),
    (_qlt(dtype=torch.float32), "returns float codes", "dtype is torch.float32"),
    (_qlt(torch.floor), "floor instead of round", "floored, not rounded"),
    (_qlt(lambda v: v.int()), "casts to int without rounding", "truncated toward zero"),
    (_qlt(lambda v: torch.floor(v + 0.5)), "rounds ties up", "ties are rounded up"),
    (
        _qlt(lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5)),
        "rounds ties away from zero",
        "away from zero",
    ),
    (_qlt(zp=False), "forgets the zero point", "zero point is missing"),
]
for _fn, _mistake, _expect in L3Q_ANY_ORDER:
    wrong(*L3Q, _mistake, _expect, _as_on(ADD_FIRST))(_fn)


@right(*L3Q, "int_repr's own dtypes: uint8 for quint8, int8 for qint8; clamp before rounding")
def _(x, scale, zero_point, dtype):
    qmin, qmax = _codes_range(dtype)
    if _rounds_first():
        q = torch.round(torch.clamp(x / scale, qmin - zero_point, qmax - zero_point)) + zero_point
    else:
        q = torch.round(torch.clamp(x / scale + zero_point, qmin, qmax))
    return q.to(torch.int8 if dtype == torch.qint8 else torch.uint8)


@right(*L3Q, "multiplies by 1 / scale in float64")
def _(x, scale, zero_point, dtype):
    qmin, qmax = _codes_range(dtype)
    v = x.double() * (1 / scale)
    q = torch.round(v) + zero_point if _rounds_first() else torch.round(v + zero_point)
    return q.clamp(qmin, qmax).long()


L3F = ("lesson03", "check_fake_quantize_like_torch")


def _fq(rounding=torch.round, *, first=True, clamp=True, zp=True, values=True):
    def fake_quantize_like_torch(x, scale, zero_point, quant_min, quant_max):
        z = zero_point if zp else 0
        q = rounding(x / scale) + z if first else rounding(x / scale + z)
        if clamp:
            q = q.clamp(quant_min, quant_max)
        return (q - z) * scale if values else q

    return fake_quantize_like_torch


for _fn, _mistake, _expect in [
    (_fq(first=False), "adds the zero point before rounding", "it rounds x / scale first"),
    (_fq(clamp=False), "does not clamp", "are not clamped"),
    (_fq(values=False), "returns the codes", "these are codes"),
    (
        lambda x, s, z, lo, hi: (torch.round(x / s) + z).clamp(lo, hi).int(),
        "integer codes",
        "real values",
    ),
    (lambda x, s, z, lo, hi: x, "returns x unchanged", "fake_quantize_per_tensor_affine gives"),
    (_fq(lambda v: torch.floor(v + 0.5)), "rounds ties up", "ties are rounded up"),
    (
        _fq(lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5)),
        "rounds ties away from zero",
        "away from zero",
    ),
    (_fq(zp=False), "ignores the zero point", "zero point is ignored"),
    (
        lambda x, s, z, lo, hi: (torch.round(x / s) + z).clamp(lo, hi) * s - z,
        "subtracts the zero point after scaling",
        "gives",
    ),
]:
    wrong(*L3F, _mistake, _expect)(_fn)


@right(*L3F, "clamps x / scale to [quant_min - zero_point, quant_max - zero_point] first")
def _(x, scale, zero_point, quant_min, quant_max):
    return torch.round(x / scale).clamp(quant_min - zero_point, quant_max - zero_point) * scale


@right(*L3F, "float64, q * scale - zero_point * scale")
def _(x, scale, zero_point, quant_min, quant_max):
    q = torch.clamp(torch.round(x.double() / scale) + zero_point, quant_min, quant_max)
    return q * scale - zero_point * scale


L3O = ("lesson03", "check_minmax_observer_qparams")


def _obs(*, divisor=127.5, widen=True, sym_zero=None, affine_qmin=True, sym_affine_scale=False):
    def minmax_observer_qparams(x, dtype, symmetric):
        qmin, qmax = _codes_range(dtype)
        lo, hi = x.min().item(), x.max().item()
        if widen:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        if symmetric:
            scale = (hi - lo) / 255 if sym_affine_scale else max(-lo, hi) / divisor
            default = 0 if dtype == torch.qint8 else 128
            return scale, default if sym_zero is None else sym_zero
        scale = (hi - lo) / (qmax - qmin)
        zero_point = (qmin if affine_qmin else 0) - round(lo / scale)
        return scale, min(max(zero_point, qmin), qmax)

    return minmax_observer_qparams


for _fn, _mistake, _expect in [
    (_obs(divisor=127), "symmetric scale / 127", "divides by (qmax - qmin) / 2 = 127.5"),
    (_obs(divisor=128), "symmetric scale / 128", "expected scale"),
    (_obs(widen=False), "does not include 0 in the range", "widens the range to include 0"),
    (_obs(sym_zero=0), "symmetric quint8 with zero point 0", "middle code, 128"),
    (_obs(sym_zero=127), "symmetric quint8 with zero point 127", "middle code, 128"),
    (_obs(affine_qmin=False), "affine qint8 without qmin", "qmin is missing"),
    (_obs(sym_affine_scale=True), "symmetric with the affine scale", "the affine one"),
    (
        lambda x, d, s: (x.abs().max() / 127.5, 0.5),
        "zero point not an integer",
        "must be an integer",
    ),
    (
        lambda x, d, s: (x.abs().max().item() / 127.5, 0),
        "symmetric scale for both schemes",
        "the symmetric one",
    ),
]:
    wrong(*L3O, _mistake, _expect)(_fn)


@right(*L3O, "the package's choose_qparams with the observer's settings")
def _(x, dtype, symmetric):
    scale, zero_point = choose_qparams(x, 8, symmetric=symmetric, signed=dtype == torch.qint8)
    return scale, zero_point


@right(*L3O, "tensors, torch.aminmax, zero point with torch.round")
def _(x, dtype, symmetric):
    qmin, qmax = _codes_range(dtype)
    lo, hi = torch.aminmax(x)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    if symmetric:
        return torch.maximum(-lo, hi) / 127.5, torch.tensor(0 if qmin < 0 else 128)
    scale = (hi - lo) / (qmax - qmin)
    return scale, torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)


# ================================================================ lesson 04

L4F = ("lesson04", "check_fold_bn_into_conv")


def _k(gamma, var, eps):
    return gamma / torch.sqrt(var + eps)


def _fold(k=_k, *, shape=(-1, 1, 1, 1), bias=lambda b, m, k, be: (b - m) * k + be, divide=False):
    def fold_bn_into_conv(weight, b, gamma, beta, mean, var, eps):
        kk = k(gamma, var, eps)
        w = weight / kk.reshape(shape) if divide else weight * kk.reshape(shape)
        return w, bias(b, mean, kk, beta)

    return fold_bn_into_conv


for _fn, _mistake, _expect in [
    (_fold(shape=(1, -1, 1, 1)), "scales the input channels", "*output* channel"),
    (_fold(shape=(-1, 1, 1)), "reshapes k to (-1, 1, 1): input channels", "*output* channel"),
    (_fold(lambda g, v, e: g / (v + e)), "forgets the square root", "square root"),
    (_fold(lambda g, v, e: g / v.sqrt()), "forgets eps", "eps is missing"),
    (
        _fold(lambda g, v, e: g / (v.sqrt() + e)),
        "adds eps after the square root",
        "after the square root",
    ),
    (_fold(divide=True), "divides the weight by k", "divided by k"),
    (_fold(bias=lambda b, m, k, be: b * k + be), "forgets the mean", "mean is not subtracted"),
    (_fold(bias=lambda b, m, k, be: b - m + be), "does not scale the bias", "not scaled by k"),
    (_fold(bias=lambda b, m, k, be: (b - m) * k), "forgets beta", "beta is missing"),
    (_fold(bias=lambda b, m, k, be: -m * k + be), "drops the conv's bias", "own bias is missing"),
    (
        _fold(bias=lambda b, m, k, be: b + be - m * k),
        "adds the conv's bias unscaled",
        "added unscaled",
    ),
    (_fold(bias=lambda b, m, k, be: (b + m) * k + be), "adds the mean", "the mean is added"),
    (
        lambda w, b, g, be, m, v, e: w * _k(g, v, e).reshape(-1, 1, 1, 1),
        "returns only the weight",
        "pair",
    ),
]:
    wrong(*L4F, _mistake, _expect)(_fn)


@right(*L4F, "k[:, None, None, None], torch.rsqrt, float64")
def _(weight, bias, gamma, beta, mean, var, eps):
    k = gamma.double() * torch.rsqrt(var.double() + eps)
    return (weight * k[:, None, None, None]).float(), ((bias - mean) * k + beta).float()


@right(*L4F, "einsum over the output channel, bias as b * k + (beta - mean * k)")
def _(weight, bias, gamma, beta, mean, var, eps):
    k = gamma / (var + eps).sqrt()
    return torch.einsum("oikl,o->oikl", weight, k), bias * k + (beta - mean * k)


L4Q = ("lesson04", "check_per_channel_qparams")


def _qp(
    w, bits, *, include_zero=True, steps=None, dims=None, zp=lambda lo, s: -torch.round(lo / s)
):
    rows = w.flatten(1)
    lo, hi = rows.amin(dim=1), rows.amax(dim=1)
    if dims is not None:
        lo, hi = w.amin(dim=dims), w.amax(dim=dims)
    if include_zero:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = (hi - lo) / (steps or 2**bits - 1)
    return scale, zp(lo, scale)


for _fn, _mistake, _expect in [
    (lambda w, b: tuple(t.max() for t in _qp(w.reshape(1, -1), b)), "per tensor", "per-tensor"),
    (lambda w, b: _qp(w, b, include_zero=False), "does not include 0", "include 0"),
    (lambda w, b: _qp(w, b, steps=2**b), "divides by 2^bits", "2^bits ="),
    (
        lambda w, b: _qp(w, b, dims=[d for d in range(w.ndim) if d != 1]),
        "per input channel",
        "*input* channel",
    ),
    (
        lambda w, b: _qp(w, b, zp=lambda lo, s: torch.round(lo / s)),
        "zero point's sign",
        "wrong sign",
    ),
    (lambda w, b: _qp(w, b, zp=lambda lo, s: -lo / s), "unrounded zero point", "integers"),
    (
        lambda w, b: _qp(w, b, zp=lambda lo, s: torch.floor(-lo / s)),
        "floored zero point",
        "truncated",
    ),
    (lambda w, b: _qp(w, b)[0], "returns only the scale", "pair"),
    (
        lambda w, b: tuple(t.unsqueeze(1) for t in _qp(w, b)),
        "keeps a dimension: shape (out, 1)",
        "extra (or missing) dimension of size 1",
    ),
    (
        lambda w, b: (w.amin(dim=1), w.amax(dim=1)),
        "reduces dim 1 only",
        "reduce all dimensions but 0",
    ),
    (
        lambda w, b: (w.flatten(1).abs().amax(dim=1) / ((2**b - 1) / 2), torch.zeros(len(w))),
        "symmetric instead of asymmetric",
        "symmetric scale",
    ),
]:
    wrong(*L4Q, _mistake, _expect)(_fn)


@wrong(*L4Q, "zero point from the unwidened minimum", "unwidened range")
def _(w, bits):
    scale, _ = _qp(w, bits)
    return scale, -torch.round(w.flatten(1).amin(dim=1) / scale)


@right(*L4Q, "torch.aminmax on w.reshape(len(w), -1), float64, zero point clamped")
def _(w, bits):
    lo, hi = torch.aminmax(w.double().reshape(len(w), -1), dim=1)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = (hi - lo) / (2**bits - 1)
    return scale.float(), torch.clamp(torch.round(-lo / scale), 0, 2**bits - 1).to(torch.int32)


@right(*L4Q, "amin over a tuple of dims")
def _(w, bits):
    dims = tuple(range(1, w.ndim))
    lo, hi = w.amin(dim=dims).clamp(max=0), w.amax(dim=dims).clamp(min=0)
    scale = (hi - lo) / (2**bits - 1)
    return scale, 0 - torch.round(lo / scale)


L4G = ("lesson04", "check_group_fake_quantize")


def _group(
    w,
    bits,
    g,
    *,
    rounding=torch.round,
    absmax=lambda t: t.abs().amax(-1, keepdim=True),
    q=None,
    values=True,
):
    qmax = 2 ** (bits - 1) - 1 if q is None else q(bits)
    groups = w.reshape(w.shape[0], -1, g)
    s = absmax(groups) / qmax
    codes = rounding(groups / s).clamp(-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    return ((codes * s) if values else codes).reshape(w.shape)


for _fn, _mistake, _expect in [
    (lambda w, b, g: _group(w, b, w.shape[1]), "one scale per row", "per-channel"),
    (
        lambda w, b, g: _group(w.reshape(1, -1), b, w.numel()).reshape(w.shape),
        "one scale for the tensor",
        "per-tensor",
    ),
    (lambda w, b, g: _group(w.t().contiguous(), b, g).t(), "groups down the columns", "columns"),
    (
        lambda w, b, g: _group(w, b, g, rounding=torch.floor),
        "floor instead of round",
        "wrong values",
    ),
    (
        lambda w, b, g: _group(w, b, g, rounding=lambda v: torch.floor(v + 0.5)),
        "rounds ties up",
        "ties are rounded up",
    ),
    (
        lambda w, b, g: _group(
            w, b, g, rounding=lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5)
        ),
        "rounds ties away from zero",
        "away from zero",
    ),
    (
        lambda w, b, g: _group(w, b, g, absmax=lambda t: t.amax(-1, keepdim=True)),
        "max instead of max |w|",
        "largest magnitude",
    ),
    (
        lambda w, b, g: _group(w, b, g, q=lambda b: 2 ** (b - 1)),
        "divides by 2^(bits-1)",
        "divides by 2^(bits-1)",
    ),
    (
        lambda w, b, g: _group(w, b, g, q=lambda b: 2 ** (b - 1) - 0.5),
        "full-range divisor",
        "full range's half width",
    ),
    (lambda w, b, g: _group(w, b, g, values=False), "returns the codes", "these are the codes"),
    (lambda w, b, g: _group(w, b, g)[:, : w.shape[1] // 2], "returns half the columns", "shape"),
]:
    wrong(*L4G, _mistake, _expect)(_fn)


@right(*L4G, "w.reshape(-1, group_size): the same groups, row-major")
def _(w, bits, group_size):
    qmax = 2 ** (bits - 1) - 1
    groups = w.reshape(-1, group_size)
    scale = groups.abs().amax(dim=1, keepdim=True) / qmax
    return (torch.round(groups / scale).clamp(-qmax, qmax) * scale).reshape(w.shape)


@right(*L4G, "unflatten, float64, clamp before round")
def _(w, bits, group_size):
    qmax = 2 ** (bits - 1) - 1
    groups = w.double().unflatten(-1, (-1, group_size))
    scale = groups.abs().amax(dim=-1, keepdim=True) / qmax
    return (torch.round(torch.clamp(groups / scale, -qmax, qmax)) * scale).flatten(1).float()


# ================================================================ lesson 05

L5M = ("lesson05", "check_per_channel_minmax")


class _MinMax:
    """A right observer the wrong ones below change in one place."""

    def __init__(self, axis):
        self.axis = axis
        self.min_val = None
        self.max_val = None

    def reduce(self, x):
        rows = x.movedim(self.axis, 0).flatten(1)
        return rows.amin(dim=1), rows.amax(dim=1)

    def update(self, x):
        lo, hi = self.reduce(x)
        if self.min_val is not None:
            lo, hi = torch.minimum(lo, self.min_val), torch.maximum(hi, self.max_val)
        self.min_val, self.max_val = lo, hi

    def clip_range(self):
        return self.min_val, self.max_val


@wrong(*L5M, "keeps only the last batch", "only reflects the last batch")
class _(_MinMax):
    def update(self, x):
        self.min_val, self.max_val = self.reduce(x)


@wrong(*L5M, "one min and max for the whole tensor", "per-tensor")
class _(_MinMax):
    def reduce(self, x):
        return x.amin(), x.amax()


@wrong(*L5M, "reduces around dim 0 whatever the axis", "movedim")
class _(_MinMax):
    def reduce(self, x):
        rows = x.flatten(1)
        return rows.amin(dim=1), rows.amax(dim=1)


@wrong(*L5M, "reduces only the batch dimension", "one value per channel")
class _(_MinMax):
    def reduce(self, x):
        return x.amin(dim=0), x.amax(dim=0)


@wrong(*L5M, "widens the range to include 0", "includes 0")
class _(_MinMax):
    def reduce(self, x):
        lo, hi = super().reduce(x)
        return lo.clamp(max=0), hi.clamp(min=0)


@wrong(*L5M, "returns (max_val, min_val)", "swapped")
class _(_MinMax):
    def clip_range(self):
        return self.max_val, self.min_val


@wrong(*L5M, "records +-max|x|", "symmetric")
class _(_MinMax):
    def reduce(self, x):
        a = x.abs().movedim(self.axis, 0).flatten(1).amax(dim=1)
        return -a, a


@wrong(*L5M, "averages the batches' extremes", "min_val is wrong")
class _(_MinMax):
    def update(self, x):
        lo, hi = self.reduce(x)
        if self.min_val is not None:
            lo, hi = (lo + self.min_val) / 2, (hi + self.max_val) / 2
        self.min_val, self.max_val = lo, hi


@wrong(*L5M, "a negative axis taken as a dimension list", "axis=-1")
class _(_MinMax):
    def reduce(self, x):
        dims = [d for d in range(x.ndim) if d != self.axis]
        return x.amin(dim=dims), x.amax(dim=dims)


@wrong(*L5M, "returns only max_val", "pair")
class _(_MinMax):
    def clip_range(self):
        return self.max_val


@wrong(*L5M, "clip_range forgets return", "returned None: did you forget return?")
class _(_MinMax):
    def clip_range(self):
        pair = (self.min_val, self.max_val)  # noqa: F841


@right(*L5M, "keeps every batch and reduces them all in clip_range")
class _:
    def __init__(self, axis):
        self.axis = axis
        self.batches = []

    def update(self, x):
        self.batches.append(x.movedim(self.axis, 0).flatten(1))

    def clip_range(self):
        rows = torch.cat(self.batches, dim=1)
        return rows.amin(dim=1), rows.amax(dim=1)


@right(*L5M, "transpose(0, axis) and torch.aminmax, starting from +-inf")
class _:
    def __init__(self, axis):
        self.axis = axis
        self.min_val = torch.tensor(float("inf"))
        self.max_val = torch.tensor(float("-inf"))

    def update(self, x):
        lo, hi = torch.aminmax(x.transpose(0, self.axis).reshape(x.shape[self.axis], -1), dim=1)
        self.min_val, self.max_val = (
            torch.minimum(self.min_val, lo),
            torch.maximum(self.max_val, hi),
        )

    def clip_range(self):
        return self.min_val, self.max_val


L5C = ("lesson05", "check_best_clip_ratio")


def _clip(x, bits, ratios, *, a=None, clamp=True, error=lambda d: (d**2).mean(), pick=torch.argmin):
    a = x.abs().max() if a is None else a(x)
    errors = []
    for r in ratios:
        scale, zp = qparams_from_range(-r * a, r * a, bits, symmetric=True)
        x_hat = fake_quantize(x, scale, zp, bits) if clamp else torch.round(x / scale) * scale
        errors.append(error(x - x_hat))
    return float(ratios[pick(torch.stack(errors))])


for _fn, _mistake, _expect in [
    (lambda x, b, r: _clip(x, b, r, pick=torch.argmax), "keeps the largest error", "largest"),
    (lambda x, b, r: 1.0, "returns 1.0 (min-max)", "min-max"),
    (
        lambda x, b, r: float(ex_clip_min_error(x, b, r)),
        "returns the smallest error",
        "smallest error",
    ),
    (lambda x, b, r: int(torch.tensor([0.0]).argmin()) + 3, "returns an index", "index"),
    (lambda x, b, r: _clip(x, b - 1, r), "quantizes at bits - 1", "use bits"),
    (lambda x, b, r: _clip(x, b, r, a=lambda t: t.max()), "a = x.max()", "x.abs().max()"),
    (lambda x, b, r: _clip(x, b, r, clamp=False), "no clamping", "does not clamp"),
    (
        lambda x, b, r: _clip(x, b, r, error=lambda d: d.abs().mean()),
        "mean absolute error",
        "absolute error",
    ),
    (lambda x, b, r: "0.5", "returns a string", "float"),
]:
    wrong(*L5C, _mistake, _expect)(_fn)


def ex_clip_min_error(x, bits, ratios):
    a = x.abs().max()
    errors = []
    for r in ratios:
        scale, zp = qparams_from_range(-r * a, r * a, bits, symmetric=True)
        errors.append(mse(x, fake_quantize(x, scale, zp, bits)))
    return min(errors)


@right(*L5C, "a Python loop with min(..., key=...)")
def _(x, bits, ratios):
    def error(r):
        scale, zp = qparams_from_range(-r * x.abs().max(), r * x.abs().max(), bits, symmetric=True)
        return float(((fake_quantize(x, scale, zp, bits) - x) ** 2).mean())

    return min(ratios.tolist(), key=error)


@right(*L5C, "float64 errors, a 0-d tensor returned")
def _(x, bits, ratios):
    a = x.abs().max()
    errors = []
    for r in ratios:
        scale, zp = qparams_from_range(-r * a, r * a, bits, symmetric=True)
        errors.append(mse(x.double(), fake_quantize(x, scale, zp, bits).double()))
    return ratios[torch.tensor(errors).argmin()]


L5P = ("lesson05", "check_choose_percentile")


def _percentile_errors(model, calib, x_check, percentiles, act_bits, *, target=None, on=None):
    with torch.no_grad():
        reference = model(x_check) if target is None else target
        errors = []
        for p in percentiles:
            observer = functools.partial(PercentileObserver, percentile=p)
            quantized = ptq(
                model, calib if on is None else on, observer=observer, act_bits=act_bits
            )
            errors.append(mse(quantized(x_check), reference))
    return errors


def _top1_agreements(model, calib, x_check, percentiles, act_bits):
    with torch.no_grad():
        reference = model(x_check).argmax(dim=1)
        agreements = []
        for p in percentiles:
            observer = functools.partial(PercentileObserver, percentile=p)
            quantized = ptq(model, calib, observer=observer, act_bits=act_bits)
            agreements.append((quantized(x_check).argmax(dim=1) == reference).float().mean().item())
    return agreements


for _fn, _mistake, _expect in [
    (
        lambda m, c, x, ps, b: ps[np.argmax(_percentile_errors(m, c, x, ps, b))],
        "keeps the worst",
        "worst",
    ),
    (
        lambda m, c, x, ps, b: min(_percentile_errors(m, c, x, ps, b)),
        "returns the error",
        "error value",
    ),
    (
        lambda m, c, x, ps, b: int(np.argmin(_percentile_errors(m, c, x, ps, b))),
        "returns the index",
        "index",
    ),
    (
        lambda m, c, x, ps, b: ps[np.argmax(_top1_agreements(m, c, x, ps, b))],
        "ranks by top-1 agreement, not logit MSE",
        "top-1 agreement",
    ),
    (
        lambda m, c, x, ps, b: ps[len(ps) - 1 - np.argmax(_top1_agreements(m, c, x, ps, b)[::-1])],
        "ranks by top-1 agreement, the last of a tie",
        "top-1 agreement",
    ),
    (lambda m, c, x, ps, b: 100.0, "always 100 (min-max)", "closest logits come from"),
    (
        lambda m, c, x, ps, b: ps[np.argmin(_percentile_errors(m, c, x, ps, 8))],
        "ignores act_bits (8 bits)",
        "closest logits come from",
    ),
    (
        lambda m, c, x, ps, b: ps[np.argmin(_percentile_errors(m, c, x, ps, 4))],
        "always searches at 4 bits",
        "closest logits come from",
    ),
    (lambda m, c, x, ps, b: 99.9, "a fixed guess, 99.9", "closest logits come from"),
]:
    wrong(*L5P, _mistake, _expect)(_fn)


@right(*L5P, "min over (error, p) pairs")
def _(model, calib_batches, x_check, percentiles, act_bits):
    errors = _percentile_errors(model, calib_batches, x_check, percentiles, act_bits)
    return min(zip(errors, percentiles, strict=True))[1]


# ================================================================ lesson 06

L6M = ("lesson06", "check_fixed_point_multiplier")


def _multiplier(rounding=round, *, sign=-1, carry=True, scaled=True):
    def fixed_point_multiplier(m):
        mantissa, exponent = math.frexp(m)
        if not scaled:
            return mantissa, sign * exponent
        m0, n = rounding(mantissa * 2**31), sign * exponent
        if carry and m0 == 2**31:
            m0, n = 2**30, n - 1
        return m0, n

    return fixed_point_multiplier


for _fn, _mistake, _expect in [
    (_multiplier(sign=1), "n with the wrong sign", "wrong sign"),
    (_multiplier(carry=False), "no carry when M0 rounds up to 1.0", "rounds up to exactly 1.0"),
    (_multiplier(math.floor), "truncates m0", "truncated"),
    (_multiplier(int), "int() instead of round()", "truncated"),
    (_multiplier(scaled=False), "returns M0 itself", "Q31 integer"),
    (lambda m: (round(m * 2**31), 0), "does not normalize", "normalize first"),
    (lambda m: m, "returns one number", "pair (m0, n)"),
    (lambda m: (1.5, 0), "a fractional m0", "must be an integer"),
    (lambda m: (2**30, 3), "made-up numbers", "expected (m0, n)"),
]:
    wrong(*L6M, _mistake, _expect)(_fn)


@right(*L6M, "n from log2, m0 from m * 2**(31 + n), tensors")
def _(m):
    n = -math.floor(math.log2(m)) - 1
    m0 = round(m * 2 ** (31 + n))
    if m0 == 2**31:
        m0, n = 2**30, n - 1
    return torch.tensor(m0), torch.tensor(n)


L6B = ("lesson06", "check_int32_bias")
for _fn, _mistake, _expect in [
    (
        lambda b, sx, sw: torch.round(b / sx).int(),
        "divides by the input scale only",
        "input scale only",
    ),
    (
        lambda b, sx, sw: torch.round(b / sw).int(),
        "divides by the weight scale only",
        "weight scale only",
    ),
    (lambda b, sx, sw: (b.double() / (sx * sw.double())).int(), "truncates", "truncated"),
    (lambda b, sx, sw: torch.round(b * sx * sw).int(), "multiplies by the scales", "multiplied"),
    (
        lambda b, sx, sw: torch.floor(b.double() / (sx * sw.double()) + 0.5).int(),
        "rounds ties up",
        "ties are rounded up",
    ),
    (
        lambda b, sx, sw: (
            torch.sign(b) * torch.floor((b.double() / (sx * sw.double())).abs() + 0.5)
        ).int(),
        "rounds ties away from zero",
        "away from zero",
    ),
    (
        lambda b, sx, sw: torch.round(b.double() / (sx * sw.double())),
        "float codes",
        "dtype is torch.float64",
    ),
    (lambda b, sx, sw: torch.round(b / (sx * sw)).int()[:3], "too few codes", "shape"),
    (lambda b, sx, sw: torch.round(b / (sx * sw)).int() + 2, "off by two", "should give"),
]:
    wrong(*L6B, _mistake, _expect)(_fn)

for _fn, _how in [
    (lambda b, sx, sw: torch.round(b / (sx * sw)).to(torch.int32), "float32 arithmetic"),
    (
        lambda b, sx, sw: torch.from_numpy(
            np.rint(b.double().numpy() / (sx * sw.double().numpy()))
        ).int(),
        "NumPy's rint",
    ),
]:
    right(*L6B, _how)(_fn)

# ================================================================ lesson 07

L6D = ("lesson07", "check_dequantize_per_channel")
for _fn, _mistake, _expect in [
    (lambda q, s, z: s[:, None] * q + z[:, None], "keeps the bug", "still the bug"),
    (lambda q, s, z: s[:, None] * q - z[:, None], "subtracts after scaling", "after scaling"),
    (lambda q, s, z: s[:, None] * (q + z[:, None]), "adds the zero point", "adds the zero point"),
    (lambda q, s, z: s[:, None] * q, "ignores the zero point", "ignores the zero point"),
    (lambda q, s, z: s * (q - z), "scales along the columns", "along the last dimension"),
    (lambda q, s, z: q - z[:, None], "forgets the scale", "float tensor"),
    (
        lambda q, s, z: s[:, None] * (q - z.to(torch.int8)[:, None]),
        "subtracts in int8",
        "wrapped around in int8",
    ),
    (lambda q, s, z: s[:, None] * (q - z[:, None]) + 1, "off by one", "should give"),
]:
    wrong(*L6D, _mistake, _expect)(_fn)

for _fn, _how in [
    (lambda q, s, z: s[:, None] * q.double() - (s * z)[:, None], "expanded: s q - s z, float64"),
    (
        lambda q, s, z: s.unsqueeze(1) * (q.float() - z.unsqueeze(1)),
        "unsqueeze instead of [:, None]",
    ),
    (lambda q, s, z: (q.int() - z.view(-1, 1)) * s.view(-1, 1), "view(-1, 1), int32 difference"),
]:
    right(*L6D, _how)(_fn)

L6S = ("lesson07", "check_straight_through")
for _fn, _mistake, _expect in [
    (lambda w, fq: fq(w), "rounds without STE (zero gradient)", "you return fq(w) itself"),
    (lambda w, fq: w + (fq(w) - w), "forgets .detach()", "without .detach()"),
    (lambda w, fq: fq(w).detach(), "detaches everything", "cut from the graph"),
    (lambda w, fq: (w + (fq(w) - w)).detach(), "detaches the whole sum", "cut from the graph"),
    (
        lambda w, fq: w,
        "returns w (no quantization in the forward)",
        "the forward value is w itself",
    ),
    (
        lambda w, fq: fq(w) + (w - fq(w)).detach(),
        "STE the wrong way round: w forward, fq backward",
        "the forward value is w itself",
    ),
    (lambda w, fq: w + (w - fq(w)).detach(), "the correction's sign", "wrong sign"),
    (lambda w, fq: torch.round(w) + (w - w.detach()), "rounds w, not fq(w)", "must be fq(w)"),
    (
        lambda w, fq: 2 * w - w.detach() + (fq(w) - w).detach(),
        "gradient doubled",
        "should pass straight through",
    ),
    (lambda w, fq: fq(w.detach()).requires_grad_(), "a new leaf", "no gradient reaches w"),
]:
    wrong(*L6S, _mistake, _expect)(_fn)


@wrong(*L6S, "clipped STE: gradient 0 where fq saturates", "clipped straight-through")
def _(w, fq):
    limit = fq(torch.full_like(w, math.inf)).detach()  # qmax * s, where fq saturates
    inside = w.clamp(-limit, limit)  # clamp's gradient: 1 inside the range, 0 outside
    return inside + (fq(w) - inside).detach()


@wrong(*L6S, "overwrites w.data", "changed w in place")
def _(w, fq):
    w.data = fq(w).detach()
    return w


@wrong(*L6S, "forgets return", "returned None: did you forget return?")
def _(w, fq):
    w_q = w + (fq(w) - w).detach()  # noqa: F841


for _fn, _how in [
    (lambda w, fq: fq(w).detach() + w - w.detach(), "fq(w).detach() + (w - w.detach())"),
    (lambda w, fq: w - (w - fq(w)).detach(), "w - (w - fq(w)).detach()"),
    (lambda w, fq: fq(w) + w - w.detach(), "no detach on fq, whose gradient is 0 anyway"),
]:
    right(*L6S, _how)(_fn)


# ================================================================ lesson 08

L7P = ("lesson08", "check_packed_nbytes")


def _codes(o, i, b):
    return math.ceil(o * i * b / 8)


for _fn, _mistake, _expect in [
    (lambda o, i, b, g: _codes(o, i, b), "forgets the scales", "but not the scales"),
    (lambda o, i, b, g: o * i + 4 * (o * i // g), "one code per byte", "one code per byte"),
    (
        lambda o, i, b, g: _codes(o, i, b) + 4 * o,
        "one scale per row",
        "one scale per output channel",
    ),
    (lambda o, i, b, g: _codes(o, i, b) + 2 * (o * i // g), "2-byte scales", "2 bytes per scale"),
    (lambda o, i, b, g: o * i * b + 4 * (o * i // g), "counts bits", "in bits, not bytes"),
    (lambda o, i, b, g: _codes(o, i, b) + 4 * (i // g), "the scales of one row", "one row only"),
    (lambda o, i, b, g: _codes(o, i, b) + 8 * (o * i // g), "a zero point per group", "zero point"),
    (lambda o, i, b, g: _codes(o, i, b) + 4 * (o * i // g) + 1, "off by one", "expected"),
    (lambda o, i, b, g: "many", "returns a string", "return a number of bytes"),
]:
    wrong(*L7P, _mistake, _expect)(_fn)

for _fn, _how in [
    (lambda o, i, b, g: o * i // (8 // b) + 4 * o * (i // g), "codes per byte, groups per row"),
    (lambda o, i, b, g: torch.tensor(o * i * b / 8 + 4 * o * i / g), "a float tensor"),
]:
    right(*L7P, _how)(_fn)

L7S = ("lesson08", "check_smoothquant_scales")


def _smooth(*, act_power=lambda a: a, w_power=lambda a: 1 - a, dim=0, absolute=True, inv=False):
    def smoothquant_scales(act_absmax, weight, alpha):
        w = (weight.abs() if absolute else weight).amax(dim=dim)
        s = act_absmax.double() ** act_power(alpha) / w.double() ** w_power(alpha)
        return (1 / s if inv else s).float()

    return smoothquant_scales


for _fn, _mistake, _expect in [
    (
        _smooth(act_power=lambda a: 1 - a, w_power=lambda a: a),
        "exponents swapped",
        "exponents are swapped",
    ),
    (_smooth(inv=True), "inverted", "s is inverted"),
    (_smooth(act_power=lambda a: 0.5, w_power=lambda a: 0.5), "ignores alpha", "alpha is ignored"),
    (_smooth(absolute=False), "max of W, not of |W|", "not of W"),
    (_smooth(dim=1), "max over the wrong dimension", "over dimension 0"),
    (
        lambda a, w, alpha: a**alpha * w.abs().amax(dim=0) ** (1 - alpha),
        "multiplies the maxima",
        "multiplies",
    ),
    (
        lambda a, w, alpha: a**alpha / w.abs().max() ** (1 - alpha),
        "one weight max for the tensor",
        "whole tensor",
    ),
    (lambda a, w, alpha: a**alpha, "ignores the weight", "expected s"),
    (lambda a, w, alpha: (a**alpha)[:-1], "one value short", "shape"),
    (lambda a, w, alpha: 0.5, "returns a number", "must return a torch.Tensor"),
]:
    wrong(*L7S, _mistake, _expect)(_fn)

for _fn, _how in [
    (
        lambda a, w, alpha: torch.exp(alpha * a.log() - (1 - alpha) * w.abs().amax(dim=0).log()),
        "in log space",
    ),
    (
        lambda a, w, alpha: a.pow(alpha) / w.t().abs().max(dim=1).values.pow(1 - alpha),
        "max over the transposed weight",
    ),
]:
    right(*L7S, _how)(_fn)


# ================================================================ lesson 09

L9U = ("lesson09", "check_obq_update")


def _obq(*, sign=-1, divide=True, own_diag=False, skip=1, keep_first=False):
    def obq_update(w, q, h_inv):
        err = (w[:, 0] - q).unsqueeze(1)
        row = h_inv[0, skip : skip + w.shape[1] - 1]
        if divide:
            err = err / (h_inv.diagonal()[1:] if own_diag else h_inv[0, 0])
        rest = w[:, 1:] + sign * err * row
        return torch.cat([q.unsqueeze(1), rest], dim=1) if keep_first else rest

    return obq_update


for _fn, _mistake, _expect in [
    (_obq(sign=1), "adds the error instead of subtracting it", "wrong sign"),
    (_obq(divide=False), "forgets to divide by [H^-1]_00", "not divided by [H^-1]_00"),
    (_obq(own_diag=True), "divides each column by its own diagonal entry", "its own diagonal"),
    (_obq(skip=0), "takes row 0 of H^-1 from its diagonal on", "h_inv[0, 1:]"),
    (_obq(keep_first=True), "returns the rounded column too", "drop column 0"),
    (lambda w, q, h_inv: w[:, 1:], "does not move the other columns", "not moved"),
    (lambda w, q, h_inv: w[:, 1:].T, "returns the transpose", "shape"),
    (lambda w, q, h_inv: 0.0, "returns a number", "must return a torch.Tensor"),
]:
    wrong(*L9U, _mistake, _expect)(_fn)

for _fn, _how in [
    (
        lambda w, q, h_inv: w[:, 1:] - ((w[:, :1] - q[:, None]) / h_inv[0, 0]) @ h_inv[:1, 1:],
        "a matmul of a column by a row",
    ),
    (
        lambda w, q, h_inv: w[:, 1:] + torch.outer(q - w[:, 0], h_inv[1:, 0]) / h_inv[0, 0],
        "column 0 of the symmetric H^-1, error as q - w",
    ),
]:
    right(*L9U, _how)(_fn)

L9G = ("lesson09", "check_gptq_columns")


def _gptq_loop(*, sign=-1.0, power=1, stop=None, original=False, transpose=False):
    def gptq_columns(w, u, rtn):
        moved, w_hat = w.clone(), torch.empty_like(w)
        for j in range(w.shape[1]):
            w_hat[:, j] = rtn((w if original else moved)[:, j])
            err = (moved[:, j] - w_hat[:, j]) / u[j, j] ** power
            end = w.shape[1] if stop is None else min(j + stop, w.shape[1])
            row = u[j:end, j] if transpose else u[j, j:end]
            moved[:, j:end] += sign * torch.outer(err, row)
        return w_hat

    return gptq_columns


for _fn, _mistake, _expect in [
    (lambda w, u, rtn: rtn(w), "rounds every column as it is", "rounded as it was given"),
    (_gptq_loop(original=True), "rounds the original columns", "rounded as it was given"),
    (_gptq_loop(sign=1.0), "adds the error feedback", "wrong sign"),
    (_gptq_loop(power=0), "forgets to divide by U_jj", "not divided by U_jj"),
    (_gptq_loop(power=2), "divides by U_jj twice", "twice"),
    (_gptq_loop(stop=2), "updates only the next column", "only the next column"),
    (_gptq_loop(transpose=True), "takes column j of U instead of row j", "column"),
    (lambda w, u, rtn: w, "returns the weight unrounded", "column"),
]:
    wrong(*L9G, _mistake, _expect)(_fn)

for _fn, _how in [
    (_gptq_loop(), "updates columns j onwards, column j included"),
    (
        lambda w, u, rtn: _gptq_rank_one(w, u, rtn),
        "keeps the errors and applies them as one matmul per column",
    ),
]:
    right(*L9G, _how)(_fn)


def _gptq_rank_one(w, u, rtn):
    w_hat, errors = torch.empty_like(w), torch.zeros_like(w)
    for j in range(w.shape[1]):
        w_hat[:, j] = rtn(w[:, j] - errors[:, :j] @ u[:j, j])  # all earlier feedback at once
        errors[:, j] = (w[:, j] - errors[:, :j] @ u[:j, j] - w_hat[:, j]) / u[j, j]
    return w_hat


L9E = ("lesson09", "check_decode_e2m1")


def _e2m1(*, bias=1, subnormal=True, signed=True, mantissa=0.5):
    def decode_e2m1(codes):
        sign = 1 - 2 * (codes >> 3) if signed else torch.ones_like(codes)
        e, m = ((codes >> 1) & 3).double(), (codes & 1).double()
        normal = 2.0 ** (e - bias) * (1 + mantissa * m)
        low = m * 2.0 ** (1 - bias) * mantissa if subnormal else normal
        return sign * torch.where(e > 0, normal, low)

    return decode_e2m1


for _fn, _mistake, _expect in [
    (_e2m1(subnormal=False), "no subnormals", "subnormal"),
    (_e2m1(bias=0), "exponent bias 0", "bias is 1"),
    (_e2m1(signed=False), "ignores the sign bit", "sign bit"),
    (_e2m1(mantissa=1.0), "mantissa bit worth 1", "worth 1/2"),
    (
        lambda c: (
            (1 - 2 * (c >> 3))
            * torch.where((c & 3) > 0, 2.0 ** ((c & 3).double() - 1), 0.0)
            * torch.where((c & 3) > 0, 1 + ((c >> 2) & 1).double() / 2, 1.0)
        ),
        "exponent and mantissa bits swapped",
        "swapped",
    ),
    (lambda c: (c - 8).double() / 2, "a linear grid", "expected"),
    (lambda c: (c & 7).double(), "returns integers as floats", "code"),
    (lambda c: c & 7, "returns integer codes", "floating-point"),
]:
    wrong(*L9E, _mistake, _expect)(_fn)

for _fn, _how in [
    (
        lambda c: torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6])[c],
        "a lookup table",
    ),
    (
        lambda c: (
            torch.where(c >= 8, -1.0, 1.0)
            * torch.where(
                (c & 6) == 0, 0.5 * (c & 1), 2.0 ** (((c & 6) >> 1) - 1) * (1 + 0.5 * (c & 1))
            )
        ),
        "masks instead of shifts",
    ),
]:
    right(*L9E, _how)(_fn)


L10Q = ("lesson10", "check_q8_0_quantize")


def _q8_0(
    *,
    divisor=127,
    rounding="away",
    reduce="absmax",
    fp16_codes=False,
    half=True,
    guard=True,
    nan_code=99.0,
):
    def q8_0_quantize(x):
        blocks = x.reshape(x.shape[0], -1, 32)
        top = (
            blocks.abs().amax(-1, keepdim=True)
            if reduce == "absmax"
            else blocks.amax(-1, keepdim=True)
        )
        d = top / divisor
        used = d.half().float() if fp16_codes else d
        inv = torch.where(used == 0, torch.zeros_like(used), 1 / used) if guard else 1 / used
        y = blocks * inv
        if rounding == "away":
            q = torch.sign(y) * torch.floor(y.abs() + 0.5)
        elif rounding == "even":
            q = torch.round(y)
        else:
            q = torch.trunc(y)
        if nan_code is not None:  # makes the missing guard visible in the codes
            q = torch.nan_to_num(q, nan=nan_code)
        codes = q.clamp(-128, 127).to(torch.int8).reshape(x.shape)
        return (d.squeeze(-1).half() if half else d.squeeze(-1)), codes

    return q8_0_quantize


for _fn, _mistake, _expect in [
    (_q8_0(rounding="even"), "torch.round: ties to even", "half away from zero"),
    (_q8_0(fp16_codes=True), "codes from the float16 scale", "computed with the float16 scale"),
    (_q8_0(divisor=127.5), "d = max|x| / 127.5", "127.5"),
    (_q8_0(reduce="max"), "max instead of max|x|", "largest magnitude"),
    (_q8_0(rounding="trunc"), "truncates", "codes differ"),
    (_q8_0(half=False), "float32 scale", "float16"),
    (_q8_0(guard=False), "no guard for an all-zero block", "all-zero block"),
    (
        _q8_0(guard=False, nan_code=None),
        "no guard; the NaN codes cast to int8 (0 on x86, by chance)",
        "guard the division by d",
    ),
    (lambda x: (x.abs().amax(-1) / 127).half(), "returns only the scale", "pair"),
    (
        lambda x: _q8_0()(x)[::-1],
        "returns (codes, scale)",
        "scale",
    ),
    (
        lambda x: ((x.abs().amax(-1, keepdim=True) / 127).half(), _q8_0()(x)[1]),
        "one scale per row",
        "block of 32",
    ),
]:
    wrong(*L10Q, _mistake, _expect)(_fn)

for _fn, _how in [
    (_q8_0(), "floor(|y| + 0.5) with the sign"),
    (
        lambda x: (
            (x.reshape(x.shape[0], -1, 32).abs().amax(-1) / 127).half(),
            _q8_0(guard=False, nan_code=0.0)(x)[1],
        ),
        "1 / d unguarded, then torch.nan_to_num before the cast",
    ),
    (
        lambda x: (
            (x.view(-1, 32).abs().amax(1) / 127).half().view(x.shape[0], -1),
            _q8_0()(x)[1],
        ),
        "a flat view of the blocks for the scale",
    ),
]:
    right(*L10Q, _how)(_fn)

L10B = ("lesson10", "check_block_size")


def _bs(*, per_channel="block", per_group="block", per_tensor="shape", negative=True):
    def block_size(shape, axis, group_size):
        if group_size is not None:
            if per_group == "count":
                return (1,) * (len(shape) - 1) + (shape[-1] // group_size,)
            if per_group == "full rows":
                return tuple(shape[:-1]) + (group_size,)
            return (1,) * (len(shape) - 1) + (group_size,)
        if axis is not None:
            if negative:
                axis %= len(shape)
            if per_channel == "count":
                return tuple(n if d == axis else 1 for d, n in enumerate(shape))
            return tuple(1 if d == axis else n for d, n in enumerate(shape))
        return tuple(shape) if per_tensor == "shape" else (1,) * len(shape)

    return block_size


for _fn, _mistake, _expect in [
    (_bs(per_channel="count"), "per-channel: the number of blocks", "shape of one block"),
    (_bs(per_group="count"), "per-group: the number of groups", "shape of one block"),
    (_bs(per_tensor="ones"), "per-tensor: all ones", "whole tensor"),
    (_bs(per_group="full rows"), "per-group: full size along the rows", "1 along every other"),
    (_bs(negative=False), "negative axis not normalized", "negative axis"),
    (lambda shape, axis, group_size: shape[-1:], "one entry only", "one entry per dimension"),
    (lambda shape, axis, group_size: "block", "returns a string", "tuple of ints"),
]:
    wrong(*L10B, _mistake, _expect)(_fn)

for _fn, _how in [
    (
        lambda shape, axis, group_size: list(_bs()(shape, axis, group_size)),
        "a list",
    ),
    (
        lambda shape, axis, group_size: torch.Size(
            [1] * (len(shape) - 1) + [group_size]
            if group_size
            else [
                1 if axis is not None and d == axis % len(shape) else n for d, n in enumerate(shape)
            ]
        ),
        "a torch.Size built in one expression",
    ),
]:
    right(*L10B, _how)(_fn)


# ================================================================ lesson 11

L11D = ("lesson11", "check_decode_e4m3")


def _e4m3(*, bias=7, sub_exp=-6, subnormals=True, inf=False, nan=True, mbits=3, sign=True):
    def decode_e4m3(codes):
        s = (
            1.0 - 2.0 * (codes >> 7).double()
            if sign
            else torch.ones(codes.shape, dtype=torch.float64)
        )
        e = ((codes >> 3) & 15).double()
        m = (codes & 7).double()
        normal = 2.0 ** (e - bias) * (1 + m / 2**mbits)
        sub = 2.0**sub_exp * m / 2**mbits if subnormals else normal
        value = s * torch.where(e > 0, normal, sub)
        if inf:
            return torch.where(e == 15, torch.where(m == 0, s * torch.inf, torch.nan), value)
        return torch.where((e == 15) & (m == 7), torch.nan, value) if nan else value

    return decode_e4m3


for _fn, _mistake, _expect in [
    (_e4m3(subnormals=False), "no subnormals: implicit 1 at e = 0", "subnormal"),
    (_e4m3(sub_exp=-7), "subnormal exponent 0 - bias", "1 - bias = -6"),
    (_e4m3(bias=8, sub_exp=-7), "bias 8", "bias is 7"),
    (_e4m3(inf=True), "IEEE-style infinities at exponent 1111", "no infinities"),
    (_e4m3(nan=False), "no NaN: 0x7F read as 480", "not 480"),
    (_e4m3(mbits=4), "mantissa worth m / 16", "m / 8"),
    (_e4m3(sign=False), "ignores the sign bit", "sign"),
    (lambda codes: _e4m3()(codes).flatten(), "flattens the codes", "shape"),
    (lambda codes: _e4m3()(codes).round().long(), "returns integers", "floating-point"),
]:
    wrong(*L11D, _mistake, _expect)(_fn)

for _fn, _how in [
    (
        lambda codes: codes.to(torch.uint8).view(torch.float8_e4m3fn).float(),
        "torch's own float8_e4m3fn view",
    ),
    (
        lambda codes: torch.where(
            (codes & 0x7F) == 0x7F,
            torch.nan,
            (1 - 2 * (codes >> 7)).float()
            * torch.ldexp(
                torch.where((codes >> 3) & 15 > 0, 8 + (codes & 7), codes & 7).float(),
                torch.where(
                    (codes >> 3) & 15 > 0, ((codes >> 3) & 15) - 10, torch.full_like(codes, -9)
                ),
            ),
        ),
        "integer significand times 2^(e - 10) with ldexp",
    ),
]:
    right(*L11D, _how)(_fn)

L11M = ("lesson11", "check_mx_scale_exponent")


def _mx_k(*, reduce="absmax", rounding="floor", subtract=True, clamp=True, precision="frexp"):
    def mx_scale_exponent(blocks, emax):
        top = blocks.abs().amax(-1) if reduce == "absmax" else blocks.amax(-1)
        if precision == "frexp":
            _, exponent = torch.frexp(top)
            log2 = torch.where(top > 0, exponent - 1, -torch.inf).double()
            if rounding != "floor":
                log2 = top.double().log2()
        else:
            log2 = top.log2().double()  # float32 log2
        k = getattr(torch, rounding)(log2) - (emax if subtract else 0)
        return k.clamp(-127, 127) if clamp else k.nan_to_num(neginf=-(2.0**31))

    return mx_scale_exponent


for _fn, _mistake, _expect in [
    (_mx_k(reduce="max"), "max instead of max|x|", "largest magnitude"),
    (_mx_k(rounding="ceil"), "ceil", "rounds log2(amax) down (floor), not up"),
    (_mx_k(rounding="round"), "round", "not to nearest"),
    (_mx_k(subtract=False), "forgets emax", "subtract emax"),
    (_mx_k(clamp=False), "no clamp", "clamp k to [-127, 127]"),
    (_mx_k(precision="float32"), "float32 log2", "torch.frexp"),
    (
        lambda blocks, emax: _mx_k()(blocks, emax).unsqueeze(-1),
        "keeps the block dimension",
        "size 1",
    ),
    (lambda blocks, emax: _mx_k()(blocks, emax)[:-1], "drops a block", "shape"),
]:
    wrong(*L11M, _mistake, _expect)(_fn)

for _fn, _how in [
    (
        lambda blocks, emax: (blocks.abs().amax(-1).double().log2().floor() - emax).clamp(
            -127, 127
        ),
        "log2 in float64, then floor",
    ),
    (
        lambda blocks, emax: (
            ((blocks.abs().amax(-1).view(torch.int32) >> 23) & 0xFF) - 127 - emax
        ).clamp(-127, 127),
        "the float32 exponent bits, as torchao reads them",
    ),
]:
    right(*L11M, _how)(_fn)

L11N = ("lesson11", "check_nvfp4_scales")


def _nv(*, t_div=448 * 6, by_t=True, by_six=True, to_e4m3=True, reduce="absmax", group=16):
    def nvfp4_scales(x):
        t = x.abs().amax() / t_div
        b = x.reshape(x.shape[0], -1, group)
        top = b.abs().amax(-1) if reduce == "absmax" else b.amax(-1)
        s = top / (6 if by_six else 1) / (t if by_t else 1)
        s = s.clamp(2.0**-6, 448)
        return t, (s.to(torch.float8_e4m3fn) if to_e4m3 else s)

    return nvfp4_scales


for _fn, _mistake, _expect in [
    (_nv(t_div=448), "t = max|x| / 448", "divide by E2M1's 6 too"),
    (_nv(t_div=6), "t = max|x| / 6", "span E4M3's range"),
    (_nv(to_e4m3=False), "block scales left in float32", "round the block scales to E4M3"),
    (_nv(by_t=False), "one level: forgets t", "divided by t"),
    (_nv(by_six=False), "forgets / 6", "divide max|block| by 6"),
    (_nv(reduce="max"), "max instead of max|x|", "largest magnitude"),
    (_nv(group=32), "blocks of 32", "block of 16"),
    (lambda x: _nv()(x)[1], "returns only s", "pair"),
]:
    wrong(*L11N, _mistake, _expect)(_fn)

for _fn, _how in [
    (
        lambda x: (
            float(x.abs().max() / 2688),
            (x.view(x.shape[0], -1, 16).abs().amax(-1) * (2688 / x.abs().max()) / 6)
            .clamp(max=448)
            .to(torch.float8_e4m3fn)
            .float(),
        ),
        "t as a Python float, s as float32 values",
    ),
]:
    right(*L11N, _how)(_fn)
# ================================================================ lesson 12

L12H = ("lesson12", "check_hadamard_transform")


def _fwht(*, sign=1, stages=None, scale=lambda n: n**-0.5, dim=2, dtype=None):
    def hadamard_transform(x):
        n = x.shape[-1]
        y, h, k = x.reshape(-1, n), 1, 0
        while h < n and (stages is None or k < stages):
            pairs = y.reshape(-1, n // (2 * h), 2, h)
            a, b = pairs[:, :, 0], pairs[:, :, 1]
            y = torch.stack((a + b, sign * (a - b)), dim=dim)
            h, k = h * 2, k + 1
        y = y.reshape(x.shape) * scale(n)
        return y if dtype is None else y.to(dtype)

    return hadamard_transform


for _fn, _mistake, _expect in [
    (_fwht(scale=lambda n: 1.0), "not normalized", "not normalized"),
    (_fwht(scale=lambda n: 1 / n), "divides by n", "divide by sqrt(n)"),
    (_fwht(sign=-1), "b - a instead of a - b", "not b - a"),
    (_fwht(stages=1), "only the first stage", "only the first stage"),
    (_fwht(dim=3), "a + b and a - b interleaved", "wrong order"),
    (_fwht(dtype=torch.float32), "returns float32", "dtype"),
    (lambda x: _fwht()(x).reshape(-1, x.shape[-1]), "flattens the leading dimensions", "shape"),
    (lambda x: x / x.shape[-1] ** 0.5, "no butterfly at all", "expected"),
    (lambda x: 1.0, "returns a number", "must return a torch.Tensor"),
]:
    wrong(*L12H, _mistake, _expect)(_fn)

for _fn, _how in [
    (_fwht(scale=lambda n: 1.0 / 2 ** (0.5 * (n.bit_length() - 1))), "one scale 2^(-k/2)"),
    (
        lambda x: (
            x @ torch.tensor(scipy.linalg.hadamard(x.shape[-1]), dtype=x.dtype) / x.shape[-1] ** 0.5
        ),
        "SciPy's dense Hadamard matrix (O(n^2), same numbers)",
    ),
    (
        lambda x: (
            x
            if x.shape[-1] == 1
            else torch.cat(
                [
                    _fwht()(x[..., : x.shape[-1] // 2] + x[..., x.shape[-1] // 2 :]),
                    _fwht()(x[..., : x.shape[-1] // 2] - x[..., x.shape[-1] // 2 :]),
                ],
                dim=-1,
            )
            / 2**0.5
        ),
        "recursive halves: H_2m = [[H_m, H_m], [H_m, -H_m]]",
    ),
]:
    right(*L12H, _how)(_fn)

L12O = ("lesson12", "check_outlier_columns")

for _fn, _mistake, _expect in [
    (lambda x, t: (x >= t).reshape(-1, x.shape[-1]).any(0), "no absolute value", "|x|, not x"),
    (lambda x, t: (x.abs() > t).reshape(-1, x.shape[-1]).any(0), "> instead of >=", "use >="),
    (
        lambda x, t: (x.abs() >= 6.0).reshape(-1, x.shape[-1]).any(0),
        "fixed 6.0",
        "threshold argument",
    ),
    (lambda x, t: (x.abs() >= t).any(0), "reduces over the first dimension only", "every token"),
    (lambda x, t: (x.abs() >= t).any(-1), "one entry per token", "one entry per feature column"),
    (
        lambda x, t: (x.abs() >= t).reshape(-1, x.shape[-1]).any(0).nonzero().flatten(),
        "returns the indices",
        "not the indices",
    ),
    (
        lambda x, t: (x.abs() >= t).reshape(-1, x.shape[-1]).float().amax(0),
        "a float mask",
        "bool mask",
    ),
    (
        lambda x, t: x.abs().reshape(-1, x.shape[-1]).mean(0) >= t,
        "the mean over tokens",
        "outlier columns are",
    ),
    (lambda x, t: [2, 5], "returns a list", "must return a torch.Tensor"),
]:
    wrong(*L12O, _mistake, _expect)(_fn)

for _fn, _how in [
    (lambda x, t: x.abs().reshape(-1, x.shape[-1]).amax(0) >= t, "the column maximum of |x|"),
    (
        lambda x, t: torch.logical_or(
            (x >= t).flatten(0, -2).any(0), (x <= -t).flatten(0, -2).any(0)
        ),
        "both tails, flatten instead of reshape",
    ),
]:
    right(*L12O, _how)(_fn)
# ---------------------------------------------------------------- lesson 13

L13U = ("lesson13", "check_unpack_scale_min")


def _unpack(*, high="ok", mask_low=True, swap_nibbles=False, swap_sources=False, order="sm"):
    def unpack_scale_min(packed):
        b = packed.to(torch.int64)
        low_s, low_m, mixed = b[:, 0:4], b[:, 4:8], b[:, 8:12]
        top_s, top_m = (low_m, low_s) if swap_sources else (low_s, low_m)
        lo_nib_s, lo_nib_m = (mixed & 0xF, mixed >> 4)
        if swap_nibbles:
            lo_nib_s, lo_nib_m = lo_nib_m, lo_nib_s
        if high == "ok":
            hi_s, hi_m = lo_nib_s | ((top_s >> 6) << 4), lo_nib_m | ((top_m >> 6) << 4)
        elif high == "none":
            hi_s, hi_m = lo_nib_s, lo_nib_m
        else:  # "unshifted": the two bits land at bits 0-1
            hi_s, hi_m = lo_nib_s | (top_s >> 6), lo_nib_m | (top_m >> 6)
        first_s, first_m = (low_s & 63, low_m & 63) if mask_low else (low_s, low_m)
        scales = torch.cat([first_s, hi_s], dim=1)
        mins = torch.cat([first_m, hi_m], dim=1)
        return (scales, mins) if order == "sm" else (mins, scales)

    return unpack_scale_min


for _fn, _mistake, _expect in [
    (_unpack(high="none"), "top 2 bits of sub-blocks 4-7 dropped", "lost their top 2 bits"),
    (_unpack(mask_low=False), "bytes 0-7 not masked with & 63", "mask"),
    (_unpack(swap_nibbles=True), "nibbles of bytes 8-11 swapped", "nibbles"),
    (_unpack(swap_sources=True), "top bits read from the other 4 bytes", "wrong bytes"),
    (_unpack(high="unshifted"), "top bits not shifted by 4", "wrong place"),
    (_unpack(order="ms"), "returns (mins, scales)", "swapped"),
    (lambda packed: packed[:, :8], "returns the raw bytes", "pair"),
]:
    wrong(*L13U, _mistake, _expect)(_fn)


def _unpack_by_loop(packed):
    rows = []
    for block in packed.tolist():
        sc, mn = [], []
        for j in range(8):
            if j < 4:
                sc.append(block[j] & 63)
                mn.append(block[j + 4] & 63)
            else:
                sc.append((block[j + 4] & 0xF) | ((block[j - 4] >> 6) << 4))
                mn.append((block[j + 4] >> 4) | ((block[j] >> 6) << 4))
        rows.append((sc, mn))
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


right(*L13U, "llama.cpp's get_scale_min_k4, in Python loops")(_unpack_by_loop)
right(*L13U, "uint8 results")(lambda packed: tuple(t.to(torch.uint8) for t in _unpack()(packed)))

L13I = ("lesson13", "check_importance_matrix")

for _fn, _mistake, _expect in [
    (lambda x: x.abs().reshape(-1, x.shape[-1]).mean(0), "mean of |x|", "mean of |x|"),
    (lambda x: x.reshape(-1, x.shape[-1]).pow(2).mean(0).sqrt(), "root mean square", "square root"),
    (lambda x: x.reshape(-1, x.shape[-1]).pow(2).sum(0), "sum, not mean", "divide by the number"),
    (lambda x: x.reshape(-1, x.shape[-1]).var(0, unbiased=False), "variance", "variance"),
    (lambda x: x.pow(2).mean(0), "mean over the batch only", "all tokens"),
    (lambda x: x.pow(2).mean(-1), "mean over the columns", "one value per input column"),
]:
    wrong(*L13I, _mistake, _expect)(_fn)

right(*L13I, "einsum over the flattened tokens")(
    lambda x: torch.einsum("tc,tc->c", x.reshape(-1, x.shape[-1]), x.reshape(-1, x.shape[-1]))
    / x[..., 0].numel()
)
right(*L13I, "mean over (0, 1) in float64")(lambda x: x.double().pow(2).mean(dim=(0, 1)))


CATALOGUE: tuple[WrongAnswer, ...] = tuple(_wrong)
RIGHT_VARIANTS: tuple[RightAnswer, ...] = tuple(_right)
