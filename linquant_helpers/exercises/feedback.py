"""The machinery every exercise check shares: run a test, never raise, print one line.

Each check prints exactly one line that starts with a status tag:

* ``[PASS]`` the answer is right (on fresh inputs, not just the notebook's example);
* ``[FAIL]`` it is wrong, followed by what went wrong and a hint;
* ``[TODO]`` it is not answered yet (the function returns ``None`` or ``...``,
  or raises ``NotImplementedError``).

The notebook tests rely on these tags: run with the reference solutions,
every check of every notebook must print ``[PASS]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PASS, FAIL, TODO = "PASS", "FAIL", "TODO"


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
