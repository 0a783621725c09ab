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


def test_estimated_minutes_counts_words_and_exercises(tmp_path) -> None:
    prose = " ".join(["word"] * 290)  # 300 words in all with the cells below: 2 minutes
    code = {
        "cell_type": "code",
        "metadata": {},
        "source": "a b c d e",
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "1 2 3 4 5"}],
    }
    exercise = {"cell_type": "markdown", "metadata": {}, "source": "### Exercise 1: x"}
    path = _notebook(tmp_path, prose, [code, exercise])
    assert lessons.reading_words(path) == 290 + 5 + 5 + 4
    assert lessons.exercise_count(path) == 1
    assert lessons.estimated_minutes(path) == 15  # 2 + 12 minutes, rounded up to 5


def test_missing_requirements_names_the_extra(tmp_path) -> None:
    meta = {"linquant": {"requires": ["json", "no_such_module_xyz"], "extra": "capstone"}}
    reason = lessons.missing_requirements(_notebook(tmp_path, "x", metadata=meta))
    assert "no_such_module_xyz" in reason and '".[capstone]"' in reason and "json," not in reason
    assert lessons.missing_requirements(_notebook(tmp_path, "x")) is None
