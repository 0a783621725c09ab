"""The participant progress summary, on synthetic executed notebooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linquant_helpers.course import cli, progress


def _notebook(path: Path, lines_per_cell: list[list[str]]) -> Path:
    """A minimal executed notebook: one code cell per entry, printing those lines to stdout."""
    cells = []
    for lines in lines_per_cell:
        outputs = (
            [{"output_type": "stream", "name": "stdout", "text": [f"{x}\n" for x in lines]}]
            if lines
            else []
        )
        cells.append(
            {"cell_type": "code", "source": "check()", "metadata": {}, "outputs": outputs,
             "execution_count": 1 if lines else None}
        )  # fmt: skip
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture
def course(tmp_path):
    """A course folder whose lesson 01 checks three exercises (all TODO, as stored)."""
    d = tmp_path / "course"
    _notebook(
        d / "01_formulas.ipynb",
        [
            ["[TODO] quantize: not answered yet: replace the placeholder with your code."],
            ["[TODO] dequantize: not answered yet: replace the placeholder with your code."],
            ["[TODO] bound: not answered yet: replace the placeholder with your code."],
        ],
    )
    return d


@pytest.fixture
def room(tmp_path):
    root = tmp_path / "room"
    _notebook(
        root / "alice" / "01_formulas.ipynb",
        [["[PASS] quantize: right."], ["[FAIL] dequantize: you added z; subtract it."], []],
    )
    _notebook(
        root / "bob" / "01_formulas.ipynb",
        [
            ["[FAIL] quantize: first try", "[PASS] quantize: right."],  # the last line wins
            ["[FAIL] dequantize: you added z; subtract it."],
            ["[TODO] bound: not answered yet"],
        ],
    )
    checkpoint = root / "bob" / ".ipynb_checkpoints" / "01_formulas-checkpoint.ipynb"
    _notebook(checkpoint, [["[PASS] x: y"]])
    (root / "bob" / "notes.ipynb").write_text(json.dumps({"cells": []}))  # not a lesson
    return root


def test_reads_each_participant_and_each_exercise(room, course):
    found = progress.collect([room])
    assert sorted((p.participant, p.lesson) for p in found) == [("alice", "01"), ("bob", "01")]
    table = progress.as_json(found, course)
    assert table["exercises"] == {"01": ["quantize", "dequantize", "bound"]}
    assert table["participants"] == {
        "alice": {"01": {"quantize": "PASS", "dequantize": "FAIL", "bound": progress.NOT_RUN}},
        "bob": {"01": {"quantize": "PASS", "dequantize": "FAIL", "bound": "TODO"}},
    }


def test_report_names_where_the_room_is_stuck(room, course):
    text = progress.report(progress.collect([room]), course)
    assert "  alice        PASS  FAIL  ----" in text
    assert "  bob          PASS  FAIL  TODO" in text
    assert "ex2 dequantize: 2 FAIL" in text
    assert "2x FAIL: you added z; subtract it." in text
    assert "ex3 bound: 1 TODO, 1 not run" in text
    assert text.rstrip().endswith("most failed: dequantize (2 FAIL)")


def test_files_given_directly_are_named_by_their_stem(room, course):
    found = progress.collect([room / "alice" / "01_formulas.ipynb"])
    assert [p.participant for p in found] == ["01_formulas"]


def test_course_notebooks_as_stored_are_all_todo():
    """The stored lessons run as a learner would: every exercise they check is TODO."""
    stored = progress.collect([progress.NOTEBOOK_DIR])
    assert stored, "no lesson notebooks found"
    for item in stored:
        assert item.results, f"{item.path.name}: no exercise feedback in the stored outputs"
        assert {s for s, _ in item.results.values()} == {"TODO"}, item.path.name


def test_command_line(room, capsys):
    assert cli.main(["progress", str(room), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["participants"]["alice"]["01"]
    assert cli.main(["progress", str(room / "nobody")]) == 2
    err = capsys.readouterr().err
    assert err == f"linquant progress: error: no such file or folder: {room / 'nobody'}\n"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'["a", "list"]', "no list of cells"),
        (b'{"cells": "none"}', "no list of cells"),
        (b'{"cells": [1, 2]}', "malformed cells"),
        (b'{"cells": [{"cell_type": "code", "outputs": [7]}]}', "malformed cells"),
    ],
    ids=["not-json", "not-utf8", "a-list", "cells-not-a-list", "cells-not-objects",
         "outputs-not-objects"],
)
def test_an_unreadable_notebook_is_named_and_the_rest_reported(room, content, why, capsys):
    broken = room / "carol" / "01_formulas.ipynb"
    broken.parent.mkdir()
    broken.write_bytes(content)
    with pytest.raises(progress.UnreadableNotebook, match=why):
        progress.collect([room])
    assert cli.main(["progress", str(room), "--json"]) == 1
    captured = capsys.readouterr()
    assert sorted(json.loads(captured.out)["participants"]) == ["alice", "bob"]
    assert captured.err.count("\n") == 1 and str(broken) in captured.err and why in captured.err
    assert cli.main(["progress", str(room)]) == 1
    assert "alice" in capsys.readouterr().out
