"""Every exercise check of every lesson keeps the contract of ``feedback.run_check``.

Each ``check_X`` in ``linquant_helpers/exercises/lessonNN.py`` is paired with
the reference solution ``X`` in ``notebooks/solutions/lessonNN.py`` (found by
name, so a new check is covered as soon as it exists). For every pair:

* the reference solution passes, with the default seed and with others;
* a placeholder (the notebooks' ``...`` body, ``return ...``,
  ``raise NotImplementedError``, or no function at all) gives ``[TODO]``;
* code that raises gives ``[FAIL]`` with the exception's text, never a traceback;
* a function that forgot its ``return`` gives ``[FAIL]``, not ``[TODO]``;
* each call prints exactly one feedback line;
* every wrong answer of the catalogue (``tests/wrong_answers.py``) gives
  ``[FAIL]`` with its diagnosis, and every right variant gives ``[PASS]``.

The lesson-specific tests (the checks' data and references, PyTorch oracles)
stay in ``tests/test_exercises_lessonNN.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch
from wrong_answers import CATALOGUE, RIGHT_VARIANTS

from linquant_helpers import exercises
from linquant_helpers.course.files import NOTEBOOK_DIR
from linquant_helpers.exercises import feedback
from linquant_helpers.exercises.feedback import (
    FAIL,
    PASS,
    TODO,
    CheckResult,
    as_number,
    as_pair,
    first_difference,
    is_placeholder,
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


def _docstring_and_pass(*args):
    """Write your answer here."""
    pass


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
    "function": (_returns_none, _docstring_and_pass, _returns_ellipsis, _not_implemented, None),
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
        return _run(self.check, self.name, answer, request, **kwargs)


def _run(check, name: str, answer: object, request: pytest.FixtureRequest, **kwargs) -> CheckResult:
    extra = request.getfixturevalue("trained_digits") if name in NEEDS_MODEL else ()
    return check(answer, *extra, **kwargs)


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
    notebooks = NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")
    assert lessons == {f"lesson{path.name[:2]}" for path in notebooks}  # one module per notebook
    assert all(2 <= sum(e.lesson == lesson for e in EXERCISES) <= 4 for lesson in lessons)


def _check_of(entry) -> Callable[..., CheckResult]:
    return getattr(
        importlib.import_module(f"linquant_helpers.exercises.{entry.lesson}"), entry.check
    )


def _entry_id(entry) -> str:
    return f"{entry.lesson}.{entry.check.removeprefix('check_')}: {entry.mistake}"


def test_catalogue_covers_every_exercise() -> None:
    for e in EXERCISES:
        wrong = [w for w in CATALOGUE if (w.lesson, w.check) == (e.lesson, e.name)]
        right = [r for r in RIGHT_VARIANTS if (r.lesson, r.check) == (e.lesson, e.name)]
        assert len(wrong) >= 5, f"{e}: only {len(wrong)} wrong answers in the catalogue"
        assert right, f"{e}: no right variant in the catalogue"
    known = {(e.lesson, e.name) for e in EXERCISES}
    assert {(w.lesson, w.check) for w in CATALOGUE + RIGHT_VARIANTS} <= known
    assert len({_entry_id(w) for w in CATALOGUE}) == len(CATALOGUE), "mistakes must be unique"


@pytest.mark.parametrize("entry", CATALOGUE, ids=_entry_id)
def test_wrong_answer_fails_with_its_diagnosis(entry, request, capsys) -> None:
    with entry.context():  # e.g. a PyTorch rounding order (lesson 03)
        result = _run(_check_of(entry), entry.check, entry.answer, request)
    assert result.status == FAIL, result
    assert entry.expect in result.message, result.message
    _one_line(capsys, result)


@pytest.mark.parametrize("entry", RIGHT_VARIANTS, ids=_entry_id)
def test_right_variant_passes(entry, request, capsys) -> None:
    result = _run(_check_of(entry), entry.check, entry.answer, request)
    assert result.status == PASS, result.message
    _one_line(capsys, result)


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


@pytest.mark.parametrize("exercise", EXERCISES, ids=str)
def test_forgotten_return_is_a_fail_not_a_todo(exercise: Exercise, request, capsys) -> None:
    class NoReturn:  # a class answer whose clip_range forgot its return
        def __init__(self, axis):
            self.axis = axis

        def update(self, x):
            self.seen = x

        def clip_range(self):
            pair = (self.seen, self.seen)  # noqa: F841

    def no_return(*args):
        answer = args[0]  # noqa: F841

    result = exercise.run(NoReturn if isinstance(exercise.solution, type) else no_return, request)
    assert result.status == FAIL
    assert "returned None: did you forget return?" in result.message, result.message
    _one_line(capsys, result)


# ---------------------------------------------------------------- the shared helpers


def test_placeholder_is_read_from_the_code() -> None:
    def blank(x):
        """Docstring only."""

    def assigns(x):
        y = x  # noqa: F841

    class Observer:
        def update(self, x): ...

    assert is_placeholder(_returns_none) and is_placeholder(_docstring_and_pass)
    assert is_placeholder(blank) and is_placeholder(Observer().update)
    assert not is_placeholder(assigns) and not is_placeholder(_returns_ellipsis)
    assert not is_placeholder(print) and not is_placeholder(Observer)


def test_feedback_block_is_coloured_deterministic_html(monkeypatch, capsys) -> None:
    result = CheckResult("f", FAIL, "use x < y & .clamp(qmin, qmax)")
    html = result._repr_html_()
    assert html == result._repr_html_()
    assert feedback.COLOURS[FAIL][0] in html and "word-break: normal" in html
    assert "x &lt; y &amp; .clamp(qmin, qmax)" in html
    assert feedback.COLOURS[PASS][0] in CheckResult("f", PASS, "ok")._repr_html_()
    assert feedback.COLOURS[TODO][0] in CheckResult("f", TODO, "later")._repr_html_()

    shown = []
    feedback.show(result)  # plain Python: the line only
    assert capsys.readouterr().out == f"{result}\n"
    import IPython
    import IPython.display

    monkeypatch.setitem(sys.modules, "IPython", IPython)
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda data, raw: shown.append((data, raw)))
    feedback.show(result)  # under IPython: the same line, and the block without text/plain
    assert capsys.readouterr().out == f"{result}\n"
    assert shown == [({"text/html": html}, True)]


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
    assert "dimension of size 1" in tensor_problem(torch.ones(4, 1), torch.ones(4), "f")
    assert as_number(torch.tensor([0.5]), "scale") == 0.5
    assert as_number(3, "scale") == 3.0
    assert "scale must be a number" in as_number(True, "scale")
    assert as_pair((torch.tensor(0.1), 128)) == pytest.approx((0.1, 128.0))
    assert "return a pair (scale, zero_point), got float" in as_pair(0.1)
    assert "zero_point must be a number" in as_pair((0.1, "128"))
    assert zero_point_problem(128.0, 0, 255) is None
    assert "round it" in zero_point_problem(127.6, 0, 255)
    assert "clamp it to [0, 255]" in zero_point_problem(300.0, 0, 255)
