"""``linquant guide``: generate the parts of docs/instructors.md that must not drift from the code.

    linquant guide          # rewrite the generated sections (atomically)
    linquant guide --check  # exit 1 if the guide is stale

Two sections are generated, each between ``<!-- BEGIN name -->`` and
``<!-- END name -->`` markers; the rest of the guide is written by hand:

* ``course-map``: each notebook's title and estimated time, read from its first cell;
* ``mistakes``: the common mistakes per exercise. Every wrong answer of the
  catalogue in ``tests/wrong_answers.py`` (``CATALOGUE``, a tuple of
  ``WrongAnswer(lesson, check, mistake, answer, expect)``) is run through its
  check, ``linquant_helpers.exercises.<lesson>.<check>``, and the feedback line
  the learner would see is written next to the mistake. A mistake the check
  does not catch (no ``[FAIL]``) is marked as such, never hidden.

``tests/test_course_guide.py`` fails when the committed guide differs from
what this module generates.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .files import ROOT, UsageError, write_atomic

GUIDE = ROOT / "docs" / "instructors.md"
CATALOGUE_FILE = ROOT / "tests" / "wrong_answers.py"
FEEDBACK = re.compile(r"^\[(PASS|FAIL|TODO)\] .*$", re.MULTILINE)


def load_catalogue(path: Path = CATALOGUE_FILE) -> tuple[Any, ...]:
    """``CATALOGUE`` of the wrong-answer file at ``path`` (imported by path, not as a package)."""
    if not path.exists():
        raise FileNotFoundError(f"no wrong-answer catalogue at {path}")
    spec = importlib.util.spec_from_file_location("_linquant_wrong_answers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return tuple(module.CATALOGUE)


def _digits() -> tuple:
    from ..models import trained_digits_model

    return trained_digits_model(0, epochs=4, progress=False)


# Checks that need more than the answer get these, by parameter name (as in the notebooks).
EXTRA_ARGUMENTS: dict[str, Callable[[], Any]] = {
    "model": lambda: _digits()[0],
    "data": lambda: _digits()[1],
}


def _extra_arguments(check: Callable, cache: dict[str, Any]) -> list[Any]:
    params = list(inspect.signature(check).parameters.values())[1:]
    args = []
    for p in params:
        if p.default is not inspect.Parameter.empty:
            break
        if p.name not in EXTRA_ARGUMENTS:
            raise TypeError(f"{check.__name__} needs {p.name!r}: add it to EXTRA_ARGUMENTS")
        if p.name not in cache:
            cache[p.name] = EXTRA_ARGUMENTS[p.name]()
        args.append(cache[p.name])
    return args


def feedback_line(lesson: str, check: str, answer: Callable, cache: dict[str, Any]) -> str:
    """The one feedback line ``exercises.<lesson>.<check>(answer, ...)`` prints."""
    fn = getattr(importlib.import_module(f"linquant_helpers.exercises.{lesson}"), check)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(answer, *_extra_arguments(fn, cache))
    match = FEEDBACK.search(out.getvalue())
    if match is None:
        return f"(no feedback line; printed {out.getvalue()[:80]!r})"
    return match.group(0)


def _md(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").strip()


def mistakes_section(catalogue: Iterable[Any]) -> str:
    """Markdown: per lesson and check, each mistake with the feedback the learner sees."""
    cache: dict[str, Any] = {}
    by_check: dict[tuple[str, str], list[Any]] = {}
    for item in catalogue:
        by_check.setdefault((item.lesson, item.check), []).append(item)
    if not by_check:
        return "_The wrong-answer catalogue is empty._\n"
    parts = []
    lesson_seen = None
    for (lesson, check), items in by_check.items():  # catalogue order: notebook order
        if lesson != lesson_seen:
            parts.append(f"### Lesson {lesson.removeprefix('lesson')}\n")
            lesson_seen = lesson
        exercise = check.removeprefix("check_")
        parts.append(f"**`{exercise}`**\n")
        parts.append("| the learner... | the check says |\n| --- | --- |")
        for item in items:
            # an entry may name what its check runs under (WrongAnswer.context), e.g. a
            # PyTorch rounding order, so that the guide reads the same on every PyTorch
            with getattr(item, "context", contextlib.nullcontext)():
                line = feedback_line(lesson, check, item.answer, cache)
            said = f"`{_md(line)}`"
            if not line.startswith("[FAIL]"):
                said = f"**not caught**: {said}"
            parts.append(f"| {_md(item.mistake)} | {said} |")
        parts.append("")
    return "\n".join(parts)


def course_map_section(notebook_dir: Path | None = None) -> str:
    """Markdown table of the notebooks and their estimated times (from their first cells)."""
    from ..lessons import LAST_CORE_LESSON, hours, track, track_totals
    from . import site

    paths = site.find_lessons(notebook_dir or site.NOTEBOOK_DIR)
    rows = ["| # | track | notebook | estimated time |", "| --- | --- | --- | --- |"]
    for lesson in (site.read_lesson(p) for p in paths):
        minutes = f"{lesson.minutes} min" if lesson.minutes else "not stated"
        rows.append(f"| {lesson.number} | {track(lesson.path)} | {_md(lesson.title)} | {minutes} |")
    totals = track_totals(paths)
    rows.append(f"| | | **core track (01-{LAST_CORE_LESSON:02d})** | **{hours(totals['core'])}** |")
    rows.append(f"| | | **advanced track** | **{hours(totals['advanced'])}** |")
    rows.append(f"| | | **total** | **{hours(sum(totals.values()))}** |")
    return "\n".join(rows) + "\n"


def replace_section(text: str, name: str, content: str) -> str:
    """``text`` with the lines between the ``name`` markers replaced by ``content``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"the guide has no {begin} ... {end} markers")
    body = f"{begin}\n<!-- generated by linquant guide -->\n\n"
    return pattern.sub(lambda _: body + content.rstrip() + "\n\n" + end, text, count=1)


def generate(text: str, catalogue: Iterable[Any] | None = None) -> str:
    """The guide ``text`` with both generated sections brought up to date."""
    text = replace_section(text, "course-map", course_map_section())
    items = load_catalogue() if catalogue is None else catalogue
    return replace_section(text, "mistakes", mistakes_section(items))


HELP = "regenerate docs/instructors.md's generated sections (--check: is it stale?)"


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``linquant guide``."""
    parser.add_argument("--check", action="store_true", help="exit 1 if the guide is stale")
    parser.add_argument("--guide", type=Path, default=GUIDE, help="default docs/instructors.md")


def handle(args: argparse.Namespace) -> int:
    """Run ``linquant guide``; raises :class:`~linquant_helpers.course.files.UsageError` for a
    guide it cannot read or whose markers are missing."""
    try:
        old = args.guide.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UsageError(f"--guide {args.guide}: cannot read it ({reason})") from None
    try:
        new = generate(old)
    except ValueError as err:  # markers missing
        raise UsageError(f"--guide {args.guide}: {err}") from None
    if args.check:
        if new != old:
            print(f"{args.guide} is out of date: run linquant guide")
            return 1
        print(f"{args.guide} is up to date")
        return 0
    write_atomic(new, args.guide)  # an interrupted write leaves the old guide, never half of it
    print(f"wrote {args.guide}")
    return 0
