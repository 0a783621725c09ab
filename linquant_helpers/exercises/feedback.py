"""The machinery every exercise check shares: run a test, never raise, print one line.

Each check prints exactly one line that starts with a status tag:

* ``[PASS]`` the answer is right (on fresh inputs, not just the notebook's example);
* ``[FAIL]`` it is wrong, followed by what went wrong and a hint; a function
  that returns ``None`` although its body is more than the placeholder is a
  ``[FAIL]`` too ("did you forget return?");
* ``[TODO]`` it is not answered yet: the function's body is still the
  placeholder (only ``...``, ``pass`` or a docstring), it returns ``...``, or
  it raises ``NotImplementedError``.

The notebook tests rely on these tags: run with the reference solutions,
every check of every notebook must print ``[PASS]``. Under IPython (a
notebook) the same result is also shown as a coloured block (green, red,
amber): an HTML-only ``display_data`` output, deterministic and without a
``text/plain`` part, so the plain line above it stays the only tagged text.

Below :func:`run_check` are the helpers the checks of every lesson share:
fresh inputs (the seed, float32-exact scales), reading the learner's answer
(a tensor of the right shape, a number, a ``(scale, zero_point)`` pair) and
comparing it with the package's reference to name the first difference or a
known mistake. The ``lessonNN`` modules hold only their own checks.
"""

from __future__ import annotations

import dis
import html
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

PASS, FAIL, TODO = "PASS", "FAIL", "TODO"

SEED = 2024
"""Seed of the checks' inputs: fixed, so that the notebooks' outputs are deterministic."""

COLOURS = {PASS: ("#1e7e34", "#e6f4ea"), FAIL: ("#c5221f", "#fce8e6"), TODO: ("#b06000", "#fef7e0")}
"""Border (and tag) colour and background of each status's block in a notebook."""


class NotAnswered(Exception):
    """Raised inside a check when the learner's answer is still a placeholder."""


class ReturnedNone(Exception):
    """Raised inside a check when the learner's (non-placeholder) function returned None."""


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

    def _repr_html_(self) -> str:
        """The coloured block: the tag, the exercise's name, the message; wraps between words."""
        border, background = COLOURS[self.status]
        style = (
            f"border-left: 6px solid {border}; background-color: {background}; color: #202124; "
            "padding: 6px 10px; margin: 2px 0; line-height: 1.45; white-space: normal; "
            "word-break: normal; overflow-wrap: break-word; font-family: sans-serif"
        )
        return (
            f'<div style="{style}"><strong style="color: {border}">{self.status}</strong> '
            f"<code>{html.escape(self.exercise)}</code>: {html.escape(self.message)}</div>"
        )


_NOISE = {"RESUME", "NOP", "CACHE", "EXTENDED_ARG", "PRECALL", "COPY_FREE_VARS", "MAKE_CELL"}


def is_placeholder(fn: object) -> bool:
    """True if ``fn``'s body is only the placeholder: ``...``, ``pass`` and/or a docstring.

    Read from the compiled code: such a body compiles to nothing but
    ``return None``. A function (or method) with any other statement is not a
    placeholder, so if it returns None it forgot its ``return``.
    """
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None:
        return False
    ops = [(i.opname, i.argval) for i in dis.get_instructions(code) if i.opname not in _NOISE]
    return ops in (
        [("LOAD_CONST", None), ("RETURN_VALUE", None)],
        [("RETURN_CONST", None)],
    )


def _name(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return "your function" if not name or "<lambda>" in name else f"{name}()"


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the learner's function and return its result.

    Raises :class:`NotAnswered` (``[TODO]``) for a placeholder: no function,
    a body that is only ``...``, a result of ``...`` or ``NotImplementedError``.
    Raises :class:`ReturnedNone` (``[FAIL]``) when a function with a real body
    returns None.
    """
    if not callable(fn):
        raise (
            NotAnswered
            if fn is None or fn is Ellipsis
            else TypeError(f"expected a function, got {type(fn).__name__}")
        )
    try:
        value = fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAnswered from None
    if value is Ellipsis:
        raise NotAnswered
    if value is None:
        if is_placeholder(fn):
            raise NotAnswered(f"replace the placeholder `...` in {_name(fn)} with your code")
        raise ReturnedNone(f"{_name(fn)} returned None: did you forget return?")
    return value


def _in_ipython() -> bool:
    """True inside an IPython shell or kernel (never imports IPython itself)."""
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None


def show(result: CheckResult) -> None:
    """Print the plain line; under IPython also display the coloured HTML block."""
    print(result)
    if _in_ipython():
        from IPython.display import display

        display({"text/html": result._repr_html_()}, raw=True)


def run_check(exercise: str, test: Callable[[], str | None], success: str) -> CheckResult:
    """Run ``test()``, show one feedback line and return it as a :class:`CheckResult`.

    ``test`` returns ``None`` when the answer is right, or a message saying
    what is wrong. Placeholders give ``[TODO]``; a function that forgot its
    ``return``, and any exception raised by the learner's code, give ``[FAIL]``
    with the reason, never a traceback. The test runs on one thread (restored
    after): the checks' tensors are small, and on a busy CPU extra threads make
    them many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only add overhead, and sums stay the same
    try:
        problem = test()
    except NotAnswered as todo:
        where = str(todo) or "replace the placeholder with your code"
        result = CheckResult(exercise, TODO, f"not answered yet: {where}.")
    except ReturnedNone as err:
        result = CheckResult(exercise, FAIL, str(err))
    except Exception as err:  # the learner's code may raise anything; report it, do not crash
        result = CheckResult(exercise, FAIL, f"your code raised {type(err).__name__}: {err}")
    else:
        result = CheckResult(
            exercise, PASS if problem is None else FAIL, success if problem is None else problem
        )
    finally:
        torch.set_num_threads(threads)
    show(result)
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


def tensor_problem(
    got: object, like: torch.Tensor, name: str, per: str = "input element"
) -> str | None:
    """A message if ``got`` is not a tensor of ``like``'s shape, else ``None``.

    ``per`` says what one value stands for ("input element", "output channel").
    A shape that differs only by dimensions of size 1 is named as such.
    """
    if not isinstance(got, torch.Tensor):
        return f"{name} must return a torch.Tensor, got {type(got).__name__}"
    if got.shape != like.shape:
        want, shape = tuple(like.shape), tuple(got.shape)
        if got.numel() == like.numel() and got.squeeze().shape == like.squeeze().shape:
            return (
                f"{name} has shape {shape}, expected {want}: the right values with an extra "
                f"(or missing) dimension of size 1; one value per {per}, e.g. "
                f".reshape({', '.join(map(str, want)) or ''}{',' if len(want) == 1 else ''})"
            )
        return f"{name} must return one value per {per}, shape {want}; got shape {shape}"
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
