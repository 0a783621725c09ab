"""The machinery every exercise check shares: run a test, never raise, print one line.

Each check prints exactly one line that starts with a status tag:

* ``[PASS]`` the answer is right (on fresh inputs, not just the notebook's example);
* ``[FAIL]`` it is wrong, followed by what went wrong and a hint;
* ``[TODO]`` it is not answered yet (the function returns ``None`` or ``...``,
  or raises ``NotImplementedError``).

The notebook tests rely on these tags: run with the reference solutions,
every check of every notebook must print ``[PASS]``.

Below :func:`run_check` are the helpers the checks of every lesson share:
fresh inputs (the seed, float32-exact scales), reading the learner's answer
(a tensor of the right shape, a number, a ``(scale, zero_point)`` pair) and
comparing it with the package's reference to name the first difference or a
known mistake. The ``lessonNN`` modules hold only their own checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

PASS, FAIL, TODO = "PASS", "FAIL", "TODO"

SEED = 2024
"""Seed of the checks' inputs: fixed, so that the notebooks' outputs are deterministic."""


class NotAnswered(Exception):
    """Raised inside a check when the learner's answer is still a placeholder."""


@dataclass(frozen=True)
class CheckResult:
    """What a check found: ``status`` is ``PASS``, ``FAIL`` or ``TODO``."""

    exercise: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == PASS

    def __str__(self) -> str:
        return f"[{self.status}] {self.exercise}: {self.message}"

    __repr__ = __str__


def answered(value: Any) -> Any:
    """Return ``value``, or raise :class:`NotAnswered` if it is a placeholder (None or ...)."""
    if value is None or value is Ellipsis:
        raise NotAnswered
    return value


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the learner's function; a placeholder result or NotImplementedError means TODO."""
    if not callable(fn):
        raise (
            NotAnswered
            if fn is None or fn is Ellipsis
            else TypeError(f"expected a function, got {type(fn).__name__}")
        )
    try:
        return answered(fn(*args, **kwargs))
    except NotImplementedError:
        raise NotAnswered from None


def run_check(exercise: str, test: Callable[[], str | None], success: str) -> CheckResult:
    """Run ``test()``, print one feedback line and return it as a :class:`CheckResult`.

    ``test`` returns ``None`` when the answer is right, or a message saying
    what is wrong. Placeholders give ``[TODO]``; any exception raised by the
    learner's code becomes ``[FAIL]`` with the exception's text, never a traceback.
    """
    try:
        problem = test()
    except NotAnswered:
        result = CheckResult(
            exercise, TODO, "not answered yet: replace the placeholder with your code."
        )
    except Exception as err:  # the learner's code may raise anything; report it, do not crash
        result = CheckResult(exercise, FAIL, f"your code raised {type(err).__name__}: {err}")
    else:
        result = CheckResult(
            exercise, PASS if problem is None else FAIL, success if problem is None else problem
        )
    print(result)
    return result


# ---------------------------------------------------------------- fresh inputs


def random_scale(gen: torch.Generator, low: float, high: float) -> float:
    """A random scale in ``[low, high)``, exactly representable in float32.

    The package stores scales in float32; a float32-exact scale means the
    learner's float64 arithmetic and the package see the very same number.
    """
    s = low + (high - low) * torch.rand((), generator=gen)
    return float(s.float())


# ---------------------------------------------------------------- reading an answer


def tensor_problem(got: object, like: torch.Tensor, name: str) -> str | None:
    """A message if ``got`` is not a tensor of ``like``'s shape, else ``None``."""
    if not isinstance(got, torch.Tensor):
        return f"{name} must return a torch.Tensor, got {type(got).__name__}"
    if got.shape != like.shape:
        return (
            f"{name} must return one value per input element, shape {tuple(like.shape)}; "
            f"got shape {tuple(got.shape)}"
        )
    return None


def as_number(value: object, name: str) -> float | str:
    """``value`` as a Python float (a number or a one-element tensor), or a message."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return f"{name} must be a number (or a one-element tensor), got {type(value).__name__}"


def as_pair(value: object) -> tuple[float, float] | str:
    """``(scale, zero_point)`` as two Python floats, or a message."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return f"return a pair (scale, zero_point), got {type(value).__name__}"
    scale, zero_point = as_number(value[0], "scale"), as_number(value[1], "zero_point")
    for v in (scale, zero_point):
        if isinstance(v, str):
            return v
    return scale, zero_point


def zero_point_problem(zero_point: float, qmin: int, qmax: int) -> str | None:
    """A message unless ``zero_point`` is a whole number in ``[qmin, qmax]``."""
    if not (math.isfinite(zero_point) and zero_point == round(zero_point)):
        return (
            f"zero_point must be an integer in [{qmin}, {qmax}]; got {zero_point:.6g}: round it "
            "(torch.round or round()) so that 0.0 maps exactly onto a code"
        )
    if not qmin <= zero_point <= qmax:
        return (
            f"zero_point must be an integer in [{qmin}, {qmax}]; got {zero_point:g}: "
            f"clamp it to [{qmin}, {qmax}]"
        )
    return None


# ---------------------------------------------------------------- comparing with the reference


def first_difference(
    got: torch.Tensor, expected: torch.Tensor, atol: float = 0.0, rtol: float = 0.0
) -> int | None:
    """Flat index of the first element where ``|got - expected| > atol + rtol * |expected|``.

    NaN in ``got`` counts as a difference. Returns None when all elements agree.
    """
    expected = expected.double().cpu()
    close = (got.detach().double().cpu() - expected).abs() <= atol + rtol * expected.abs()
    bad = (~close).flatten().nonzero()
    return int(bad[0]) if len(bad) else None


def known_mistake(
    got: torch.Tensor, mistakes: dict[str, torch.Tensor], atol: float = 0.0, rtol: float = 0.0
) -> str | None:
    """The message of the first mistake whose result ``got`` reproduces (within tolerance)."""
    for message, result in mistakes.items():
        if first_difference(got, result, atol, rtol) is None:
            return message
    return None
