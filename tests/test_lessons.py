"""linquant_helpers.lessons: the stated time, the measured estimate, the extras."""

from __future__ import annotations

import json

import pytest

from linquant_helpers import lessons


def _notebook(tmp_path, first: str, cells: list[dict] | None = None, metadata=None):
    path = tmp_path / "01_x.ipynb"
    md = {"cell_type": "markdown", "metadata": {}, "source": first}
    path.write_text(json.dumps({"cells": [md, *(cells or [])], "metadata": metadata or {}}))
    return path


@pytest.mark.parametrize(
    ("first", "minutes"),
    [
        ("**Estimated time**: 35 minutes.", 35),
        ("**Estimated time**: about an hour", None),
        ("no estimate here", None),
    ],
)
def test_stated_minutes(tmp_path, first, minutes) -> None:
    assert lessons.stated_minutes(_notebook(tmp_path, first)) == minutes


def test_math_symbols_counts_what_a_reader_checks() -> None:
    # s, =, \frac, \max, |, W, |, 2, b, -, 1, -, 1: braces, _ and ^ and \left/\text do not count
    assert lessons.math_symbols(r"$s = \frac{\max |W_{ij}|}{2^{b-1} - 1}$") == 14
    assert lessons.math_symbols(r"$\left(x_{\text{max}}\right)$") == 4  # ( x max )
    assert lessons.math_symbols(r"$0.5 \cdot x$") == 3  # a decimal number is one symbol
    assert lessons.math_symbols("$$\\quad\\,$$") == 0


def test_reading_counts_split_prose_code_math_and_output(tmp_path) -> None:
    md = "Prose with `inline code` and $a + b$.\n\n```python\nx = f(a, b)\n```\n$$y = 2x$$"
    code = {
        "cell_type": "code",
        "metadata": {},
        "source": "# a comment line\ny = x + 1  # trailing comment counts as code",
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "1 2 3 4 5"}],
    }
    path = _notebook(tmp_path, md, [code])
    counts = lessons.reading_counts(path)
    assert counts == lessons.ReadingCounts(
        prose_words=6 + 4,  # "Prose with `inline code` and ." (the "." too), "# a comment line"
        code_words=6 + 11,  # the fenced block's 6 tokens (fences too), the code line's 11
        math_symbols=3 + 4,  # a + b; y = 2 x
        output_words=5,
    )
    assert lessons.reading_words(path) == len(md.split()) + len(code["source"].split()) + 5


def test_estimated_minutes_weighs_each_kind_and_the_exercises(tmp_path) -> None:
    prose = " ".join(["word"] * 150)  # 1 minute
    code = {"cell_type": "code", "metadata": {}, "source": " ".join(["t"] * 120), "outputs": []}
    math = {"cell_type": "markdown", "metadata": {}, "source": "$" + " + ".join("x" * 46) + "$"}
    exercise = {"cell_type": "markdown", "metadata": {}, "source": "### Exercise 1: x"}
    path = _notebook(tmp_path, prose, [code, math, exercise])
    # 150 prose + 4 words of the heading; 120 code tokens; 46 x and 45 + = 91 symbols
    assert lessons.reading_counts(path) == (154, 120, 91, 0)
    minutes = 154 / 150 + 120 / 60 + 91 / 30
    assert lessons.reading_minutes(path) == pytest.approx(minutes)  # about 6.05
    assert lessons.exercise_count(path) == 1
    assert lessons.estimated_minutes(path) == 20  # 6.05 + 12 minutes, rounded up to 5
    assert lessons.WORDS_PER_MINUTE > lessons.CODE_WORDS_PER_MINUTE  # code is read slower


def _timed_notebook(folder, name: str, minutes: int, words: int):
    path = folder / name
    stated = f"**Estimated time**: {minutes} minutes."
    first = {"cell_type": "markdown", "metadata": {}, "source": stated}
    body = {"cell_type": "markdown", "metadata": {}, "source": " ".join(["w"] * words)}
    path.write_text(json.dumps({"cells": [first, body], "metadata": {}}, indent=1) + "\n")
    return path


def test_restate_times_rewrites_only_the_number_and_the_readme(tmp_path) -> None:
    core = _timed_notebook(tmp_path, "08_core.ipynb", 60, 150 * 14)  # 14 + 1 words: 15 min
    advanced = _timed_notebook(tmp_path, "09_adv.ipynb", 5, 150 * 4)  # 4 + 1 words: 5 min
    readme = tmp_path / "README.md"
    readme.write_text(
        "| 08 | [x](notebooks/08_core.ipynb) | 60 min | a |\n"
        "| 09 | [y](notebooks/09_adv.ipynb) | 5 min | b |\n"
        "in all: 1 h 05 min for the core track (01-08) and 0 h 05 min for the advanced one.\n"
    )
    before = core.read_text()
    assert lessons.restate_times([core, advanced], readme=readme) == [
        "08: 60 -> 15 min",
        "README.md: time column and totals",
    ]
    assert core.read_text() == before.replace("**: 60 minutes", "**: 15 minutes")
    assert lessons.stated_minutes(core) == lessons.estimated_minutes(core) == 15
    text = readme.read_text()
    assert "08_core.ipynb) | 15 min |" in text and "09_adv.ipynb) | 5 min |" in text
    assert "0 h 15 min for the core track (01-08) and 0 h 05 min for the advanced" in text
    assert lessons.restate_times([core, advanced], readme=readme) == []  # nothing left to do
    with pytest.raises(ValueError, match="states no"):
        lessons.restate_times([_notebook(tmp_path, "no time here")], readme=None)


def test_tracks_split_at_the_capstone() -> None:
    assert lessons.LAST_CORE_LESSON == 8
    assert [lessons.track(f"{n:02d}_x.ipynb") for n in (1, 7, 8, 9, 12)] == [
        "core", "core", "core", "advanced", "advanced"
    ]
    assert lessons.hours(555) == "9 h 15 min" and lessons.hours(65) == "1 h 05 min"


def test_readme_states_the_totals_of_the_stated_times() -> None:
    # each notebook's stated time is held to its estimate in test_notebooks.py
    notebooks = sorted((lessons.README.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    totals = lessons.track_totals(notebooks)
    text = lessons.README.read_text(encoding="utf-8")
    assert f"{lessons.hours(totals['core'])} for the core track (01-08)" in text
    assert f"{lessons.hours(totals['advanced'])} for the advanced" in text


def test_missing_requirements_names_the_extra(tmp_path) -> None:
    meta = {"linquant": {"requires": ["json", "no_such_module_xyz"], "extra": "capstone"}}
    reason = lessons.missing_requirements(_notebook(tmp_path, "x", metadata=meta))
    assert "no_such_module_xyz" in reason and '".[capstone]"' in reason and "json," not in reason
    assert lessons.missing_requirements(_notebook(tmp_path, "x")) is None
