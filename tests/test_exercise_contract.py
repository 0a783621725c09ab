"""Every exercise check of every lesson keeps the contract of ``feedback.run_check``.

Each ``check_X`` in ``linquant_helpers/exercises/lessonNN.py`` is paired with
the reference solution ``X`` in ``notebooks/solutions/lessonNN.py`` (found by
name, so a new check is covered as soon as it exists). For every pair:

* the reference solution passes, with the default seed and with others;
* a placeholder (the notebooks' ``...`` body, ``return ...``,
  ``raise NotImplementedError``, or no function at all) gives ``[TODO]``;
* code that raises gives ``[FAIL]`` with the exception's text, never a traceback;
* each call prints exactly one feedback line.

The lesson-specific tests (typical wrong answers rejected with the right
message) stay in ``tests/test_exercises_lessonNN.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch

from linquant_helpers import exercises
from linquant_helpers.exercises.feedback import (
    FAIL,
    PASS,
    TODO,
    CheckResult,
    as_number,
    as_pair,
    first_difference,
    known_mistake,
    random_scale,
    tensor_problem,
    zero_point_problem,
)

SEEDS = (None, 0, 1, 3, 5, 7)
"""``None`` calls the check with its default seed, as the notebooks do."""

# Exceptions to the defaults, by check name.
SOLUTION_NAMES = {"check_per_channel_minmax": "PerChannelMinMax"}  # the answer is a class
NEEDS_MODEL = {"check_choose_percentile"}  # also takes (model, data) of notebook 05
FEWER_SEEDS = {"check_choose_percentile": (None, 0, 1)}  # quantizes the model 8 times a run


def _returns_none(*args): ...  # the notebooks' placeholder: a body of `...`


def _returns_ellipsis(*args):
    return ...


def _not_implemented(*args):
    raise NotImplementedError


def _raises(*args):
    raise RuntimeError("boom")


class _PlaceholderObserver:
    """Notebook 05's placeholder for the class ``PerChannelMinMax``."""

    def __init__(self, axis):
        self.axis = axis
        self.min_val = None
        self.max_val = None

    def update(self, x): ...

    def clip_range(self): ...


PLACEHOLDERS = {
    "function": (_returns_none, _returns_ellipsis, _not_implemented, None),
    "class": (_PlaceholderObserver, None),
}


@dataclass(frozen=True)
class Exercise:
    """One check of one lesson and its reference solution."""

    lesson: str
    name: str
    check: Callable[..., CheckResult]
    solution: object

    def __str__(self) -> str:
        return f"{self.lesson}.{self.name}"

    def run(self, answer: object, request: pytest.FixtureRequest, **kwargs) -> CheckResult:
        extra = request.getfixturevalue("trained_digits") if self.name in NEEDS_MODEL else ()
        return self.check(answer, *extra, **kwargs)


def _exercises() -> Iterator[Exercise]:
    lessons = sorted(m.name for m in pkgutil.iter_modules(exercises.__path__))
    for lesson in (name for name in lessons if name.startswith("lesson")):
        checks = importlib.import_module(f"linquant_helpers.exercises.{lesson}")
        solutions = importlib.import_module(f"solutions.{lesson}")
        for name, check in vars(checks).items():
            if name.startswith("check_") and check.__module__ == checks.__name__:
                answer = SOLUTION_NAMES.get(name, name.removeprefix("check_"))
                yield Exercise(lesson, name, check, getattr(solutions, answer))


EXERCISES = list(_exercises())


def _one_line(capsys: pytest.CaptureFixture[str], result: CheckResult) -> None:
    assert capsys.readouterr().out == f"{result}\n"


def test_every_lesson_has_checks() -> None:
    lessons = {e.lesson for e in EXERCISES}
    assert lessons == {f"lesson{n:02d}" for n in range(1, 8)}
    assert all(2 <= sum(e.lesson == lesson for e in EXERCISES) <= 4 for lesson in lessons)


@pytest.mark.parametrize(
    "exercise, seed",
    [(e, seed) for e in EXERCISES for seed in FEWER_SEEDS.get(e.name, SEEDS)],
    ids=str,
)
def test_reference_solution_passes(exercise: Exercise, seed, request, capsys) -> None:
    result = exercise.run(exercise.solution, request, **({} if seed is None else {"seed": seed}))
    assert result.status == PASS, result.message
    _one_line(capsys, result)
    assert str(result).startswith("[PASS] ")


@pytest.mark.parametrize(
    "exercise, placeholder",
    [
        (e, p)
        for e in EXERCISES
        for p in PLACEHOLDERS["class" if isinstance(e.solution, type) else "function"]
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_placeholder_is_todo(exercise: Exercise, placeholder, request, capsys) -> None:
    result = exercise.run(placeholder, request)
    assert result.status == TODO, result.message
    _one_line(capsys, result)
    assert str(result).startswith("[TODO] ")


@pytest.mark.parametrize("exercise", EXERCISES, ids=str)
def test_raising_code_is_a_fail_with_its_message(exercise: Exercise, request, capsys) -> None:
    result = exercise.run(_raises, request)  # must not raise
    assert result.status == FAIL
    assert "RuntimeError: boom" in result.message, result.message
    _one_line(capsys, result)
    assert str(result).startswith("[FAIL] ")


# ---------------------------------------------------------------- the shared helpers


def test_first_difference_and_known_mistake() -> None:
    a = torch.tensor([1.0, 2.0, 3.0])
    assert first_difference(a, a) is None
    assert first_difference(a, torch.tensor([1.0, 2.5, 3.5])) == 1
    assert first_difference(torch.tensor([float("nan")]), torch.tensor([0.0])) == 0
    assert first_difference(a + 1e-3, a, atol=1e-2) is None
    assert first_difference(a * 1.01, a, rtol=1e-3) == 0
    assert known_mistake(a, {"x": a + 1, "y": a}) == "y"
    assert known_mistake(a, {"x": a + 1}) is None


def test_random_scale_is_float32_exact_and_in_range() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        s = random_scale(gen, 0.01, 0.2)
        assert 0.01 <= s < 0.2
        assert torch.tensor(s, dtype=torch.float64).float().double().item() == s


def test_reading_an_answer() -> None:
    x = torch.zeros(2, 3)
    assert tensor_problem(torch.ones(2, 3), x, "f") is None
    assert "must return a torch.Tensor, got list" in tensor_problem([0.0], x, "f")
    assert "shape (2, 3); got shape (6,)" in tensor_problem(torch.ones(6), x, "f")
    assert as_number(torch.tensor([0.5]), "scale") == 0.5
    assert as_number(3, "scale") == 3.0
    assert "scale must be a number" in as_number(True, "scale")
    assert as_pair((torch.tensor(0.1), 128)) == pytest.approx((0.1, 128.0))
    assert "return a pair (scale, zero_point), got float" in as_pair(0.1)
    assert "zero_point must be a number" in as_pair((0.1, "128"))
    assert zero_point_problem(128.0, 0, 255) is None
    assert "round it" in zero_point_problem(127.6, 0, 255)
    assert "clamp it to [0, 255]" in zero_point_problem(300.0, 0, 255)
