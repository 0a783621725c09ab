"""docs/instructors.md: its generated sections match the code, and the generator works."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from linquant_helpers.course import cli, guide


@dataclass(frozen=True)
class _Wrong:  # the interface of tests/wrong_answers.py's WrongAnswer
    lesson: str
    check: str
    mistake: str
    answer: object
    expect: str


def _floor(x, scale, zero_point, qmin, qmax):
    return torch.floor(x / scale + zero_point).clamp(qmin, qmax).to(torch.int32)


def _right(x, scale, zero_point, qmin, qmax):
    return torch.round(x / scale + zero_point).clamp(qmin, qmax).to(torch.int32)


TINY = (
    _Wrong("lesson01", "check_linear_quantize", "floor instead of round", _floor, "floor"),
    _Wrong("lesson01", "check_linear_quantize", "a | pipe, and right", _right, ""),
)


def test_mistakes_section_shows_the_feedback_each_check_gives():
    text = guide.mistakes_section(TINY)
    assert "### Lesson 01" in text and "**`linear_quantize`**" in text
    floor_row = next(line for line in text.splitlines() if "floor instead of round |" in line)
    assert "`[FAIL] linear_quantize:" in floor_row and "floor" in floor_row.split("|")[2]
    # an answer the check passes is listed as not caught, never as a mistake it catches
    right_row = next(line for line in text.splitlines() if "pipe" in line)
    assert "a \\| pipe, and right" in right_row
    assert "**not caught**: `[PASS] linear_quantize:" in right_row


def test_sections_are_replaced_between_markers_only():
    text = "intro\n<!-- BEGIN mistakes -->\nold\n<!-- END mistakes -->\noutro\n"
    new = guide.replace_section(text, "mistakes", "NEW")
    assert new.startswith("intro\n<!-- BEGIN mistakes -->\n") and new.endswith(
        "NEW\n\n<!-- END mistakes -->\noutro\n"
    )
    assert "old" not in new
    assert guide.replace_section(new, "mistakes", "NEW") == new
    with pytest.raises(ValueError, match="no <!-- BEGIN course-map -->"):
        guide.replace_section(text, "course-map", "x")


def test_course_map_lists_every_notebook_with_its_estimate():
    table = guide.course_map_section()
    for path in sorted((guide.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"| {path.name[:2]} |" in table
    assert "not stated" not in table


@pytest.mark.skipif(not guide.CATALOGUE_FILE.exists(), reason="tests/wrong_answers.py not there")
def test_committed_guide_is_generated_from_the_catalogue_and_notebooks():
    text = Path(guide.GUIDE).read_text(encoding="utf-8")
    assert guide.generate(text) == text, (
        "docs/instructors.md is out of date: run linquant guide"
    )


def test_main_writes_the_guide_atomically(tmp_path: Path, monkeypatch):
    """A write that fails halfway (here: text that cannot be encoded) leaves the old guide."""
    target = tmp_path / "instructors.md"
    target.write_text("the old guide\n")
    monkeypatch.setattr(guide, "generate", lambda text: "x" * 100_000 + "\udcff")
    with pytest.raises(UnicodeEncodeError):
        cli.main(["guide", "--guide", str(target)])
    assert target.read_text() == "the old guide\n"
    assert [p.name for p in tmp_path.iterdir()] == ["instructors.md"]
    monkeypatch.setattr(guide, "generate", lambda text: "new\n")
    assert cli.main(["guide", "--guide", str(target)]) == 0
    assert target.read_text() == "new\n"


def test_main_names_a_missing_guide(tmp_path: Path, capsys):
    assert cli.main(["guide", "--guide", str(tmp_path / "nowhere.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("linquant guide: error: --guide ") and "nowhere.md" in err
    assert len(err.splitlines()) == 1
    no_markers = tmp_path / "plain.md"
    no_markers.write_text("a guide without generated sections\n")
    assert cli.main(["guide", "--guide", str(no_markers)]) == 2
    assert "no <!-- BEGIN course-map -->" in capsys.readouterr().err
    assert no_markers.read_text() == "a guide without generated sections\n"
