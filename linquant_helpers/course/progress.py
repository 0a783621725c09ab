"""``linquant progress``: where a room is stuck, from the exercise feedback stored in
participants' executed notebooks.

    linquant progress collected/            # one folder per participant
    linquant progress alice/02_*.ipynb bob/02_*.ipynb
    linquant progress collected/ --json     # machine-readable

Every exercise check prints one line ``[PASS]``, ``[FAIL]`` or ``[TODO]``
followed by ``exercise: message`` (see :mod:`linquant_helpers.exercises.feedback`).
This command reads those lines from the stored outputs of executed notebooks,
without running anything, and prints one row per participant and lesson, then a
room summary per exercise. An exercise whose check cell has not been run is
``----`` (not run), found by comparing with the exercises of the course's own
notebook of the same lesson.

A participant is the folder that holds the notebook (relative to the path
given), or the file's stem when notebooks are given directly.

A lesson file that cannot be read (not UTF-8, not JSON, not a notebook) is
named on stderr and left out; the report of the others is printed all the same,
and the exit status is 1. A path that does not exist exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .files import NOTEBOOK_DIR, UsageError

STATUSES = ("PASS", "FAIL", "TODO")
NOT_RUN = "----"
LINE = re.compile(r"^\[(PASS|FAIL|TODO)\] ([^:\n]+): ?(.*)$", re.MULTILINE)
LESSON = re.compile(r"(\d\d)_[^/]*\.ipynb$")


class UnreadableNotebook(UsageError):
    """A file that is not a readable notebook; the message names it and says why."""


@dataclass
class NotebookProgress:
    """The exercise statuses of one executed notebook: ``{exercise: (status, message)}``."""

    participant: str
    lesson: str
    path: Path
    results: dict[str, tuple[str, str]] = field(default_factory=dict)


def _output_text(output: dict) -> str:
    if output.get("output_type") == "stream" and output.get("name") == "stdout":
        text = output.get("text", "")
    elif output.get("output_type") in ("display_data", "execute_result"):
        text = output.get("data", {}).get("text/plain", "")
    else:
        return ""
    return "".join(text) if isinstance(text, list) else str(text)


def read_feedback(path: Path) -> dict[str, tuple[str, str]]:
    """``{exercise: (status, message)}`` from the stored outputs, in notebook order.

    The last line printed for an exercise wins (a check run twice shows its latest result).
    Raises :class:`UnreadableNotebook` (a ``ValueError``) naming ``path`` for a file
    that is not UTF-8, not JSON, or not a notebook (a JSON object with a list of cells).
    """
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UnreadableNotebook(f"{path}: not a notebook (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise UnreadableNotebook(f"{path}: not a notebook (invalid JSON: {err})") from None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        raise UnreadableNotebook(f"{path}: not a notebook (no list of cells)")
    found: dict[str, tuple[str, str]] = {}
    try:
        for cell in cells:
            if cell.get("cell_type") != "code":
                continue
            for output in cell.get("outputs", []):
                for status, exercise, message in LINE.findall(_output_text(output)):
                    found[exercise.strip()] = (status, message.strip())
    except (AttributeError, TypeError):  # a cell or an output that is not a JSON object
        raise UnreadableNotebook(f"{path}: not a notebook (malformed cells)") from None
    return found


def expected_exercises(lesson: str, notebook_dir: Path = NOTEBOOK_DIR) -> list[str]:
    """The exercises the course's own notebook of ``lesson`` checks (its stored outputs)."""
    for path in sorted(notebook_dir.glob(f"{lesson}_*.ipynb")):
        return list(read_feedback(path))
    return []


def collect(paths: list[Path], skipped: list[str] | None = None) -> list[NotebookProgress]:
    """Every lesson notebook under ``paths`` (files or folders), checkpoints skipped.

    Raises :class:`~linquant_helpers.course.files.UsageError` for a path that does not
    exist. A lesson file that
    is not a readable notebook raises :class:`UnreadableNotebook`, or, when a
    ``skipped`` list is given, is left out and its reason appended there.
    """
    found: list[NotebookProgress] = []
    for given in paths:
        if not given.exists():
            raise UsageError(f"no such file or folder: {given}")
        if given.is_file():
            files = [(given, given.stem)]
        else:
            files = [
                (p, p.parent.relative_to(given).as_posix() if p.parent != given else given.name)
                for p in sorted(given.rglob("*.ipynb"))
                if ".ipynb_checkpoints" not in p.parts
            ]
        for path, participant in files:
            match = LESSON.search(path.name)
            if match is None:
                continue
            try:
                results = read_feedback(path)
            except UnreadableNotebook as err:
                if skipped is None:
                    raise
                skipped.append(str(err))
                continue
            found.append(NotebookProgress(participant, match.group(1), path, results))
    return found


def statuses(
    progress: list[NotebookProgress], notebook_dir: Path = NOTEBOOK_DIR
) -> dict[str, list[str]]:
    """``{lesson: [exercise, ...]}``: the course's exercises, then any others seen."""
    by_lesson: dict[str, list[str]] = {}
    for item in progress:
        names = by_lesson.setdefault(item.lesson, expected_exercises(item.lesson, notebook_dir))
        names += [name for name in item.results if name not in names]
    return dict(sorted(by_lesson.items()))


def report(progress: list[NotebookProgress], notebook_dir: Path = NOTEBOOK_DIR) -> str:
    """The text table: one line per participant and lesson, then the room summary."""
    if not progress:
        return "no lesson notebooks (NN_*.ipynb) found"
    lessons = statuses(progress, notebook_dir)
    lines: list[str] = []
    for lesson, exercises in lessons.items():
        items = sorted((p for p in progress if p.lesson == lesson), key=lambda p: p.participant)
        width = max(len("participant"), *(len(p.participant) for p in items))
        lines.append(f"lesson {lesson}")
        for index, name in enumerate(exercises, 1):
            lines.append(f"  ex{index} = {name}")
        header = "  ".join(f"ex{i}".ljust(4) for i in range(1, len(exercises) + 1))
        lines.append(("  " + "participant".ljust(width) + "  " + header).rstrip())
        for item in items:
            cells = [item.results.get(name, (NOT_RUN, ""))[0] for name in exercises]
            lines.append("  " + item.participant.ljust(width) + "  " + "  ".join(cells))
        lines.append("  room:")
        for index, name in enumerate(exercises, 1):
            counts = Counter(item.results.get(name, (NOT_RUN, ""))[0] for item in items)
            summary = ", ".join(
                f"{counts[s]} {s if s != NOT_RUN else 'not run'}"
                for s in (*STATUSES, NOT_RUN)
                if counts[s]
            )
            lines.append(f"    ex{index} {name}: {summary}")
            failed = [item.results[name] for item in items if name in item.results]
            messages = Counter(message for status, message in failed if status == "FAIL")
            for message, count in messages.most_common(2):
                lines.append(f"        {count}x FAIL: {message[:110]}")
        lines.append("")
    stuck = _stuck(progress, lessons)
    if stuck:
        lines.append("most failed: " + "; ".join(f"{name} ({n} FAIL)" for name, n in stuck))
    return "\n".join(lines).rstrip() + "\n"


def _stuck(progress: list[NotebookProgress], lessons: dict[str, list[str]]) -> list[tuple]:
    fails: Counter[str] = Counter()
    for item in progress:
        for name in lessons[item.lesson]:
            if item.results.get(name, ("",))[0] == "FAIL":
                fails[name] += 1
    return fails.most_common(3)


def as_json(progress: list[NotebookProgress], notebook_dir: Path = NOTEBOOK_DIR) -> dict:
    lessons = statuses(progress, notebook_dir)
    table: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for item in progress:
        table[item.participant][item.lesson] = {
            name: item.results.get(name, (NOT_RUN, ""))[0] for name in lessons[item.lesson]
        }
    return {"exercises": lessons, "participants": dict(sorted(table.items()))}


HELP = "who passed which exercise, from executed notebooks"


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``linquant progress``."""
    parser.add_argument("paths", nargs="+", type=Path, help="executed notebooks or folders")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def handle(args: argparse.Namespace) -> int:
    """Run ``linquant progress``: 0, or 1 when an unreadable notebook was left out."""
    skipped: list[str] = []
    progress = collect(args.paths, skipped)
    text = json.dumps(as_json(progress), indent=1) + "\n" if args.json else report(progress)
    print(text, end="")
    for reason in skipped:
        print(f"{args.prog}: skipped {reason}", file=sys.stderr)
    return 1 if skipped else 0
