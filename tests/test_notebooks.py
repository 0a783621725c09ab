"""Every notebook: its structure, its stored outputs, and papermill runs.

nbval (configured in pyproject.toml) re-executes each notebook as a learner
would, exercises unanswered, and compares the outputs with the stored ones.
These tests add what nbval does not check: the lesson structure a learner
relies on, small figures, that the stored (hence every fresh) learner run
reports unanswered exercises as [TODO] and never [FAIL], and one papermill run
with the reference solutions filled in, where every exercise check must pass.
When tests/test_browser.py runs a notebook with the solutions in JupyterLab in
the same session, that run checks the same and the papermill run is skipped
(the root conftest.py), so no notebook is executed twice with the solutions.
A notebook whose optional extra is missing is skipped (linquant_helpers.lessons).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nbformat
import pytest

from linquant_helpers.course.run import NOTEBOOK_DIR, execute, find_notebooks
from linquant_helpers.lessons import estimated_minutes, missing_requirements, stated_minutes

NOTEBOOKS = find_notebooks(NOTEBOOK_DIR, [])
TAG = re.compile(r"^\[(PASS|FAIL|TODO)\] ", re.MULTILINE)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _text_outputs(nb: nbformat.NotebookNode) -> str:
    """All text a notebook printed: streams and plain-text results."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out["text"])
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, f"no numbered notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_structure(path: Path) -> None:
    nb = _read(path)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    first, last = markdown[0].lower(), markdown[-1].lower()
    assert "learning objectives" in first, "the first cell must state the learning objectives"
    assert "estimated time" in first, "the first cell must give an estimated time"
    assert "recap" in last, "the last markdown cell must be a recap"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell must be tagged 'parameters' for papermill"
    assert "USE_SOLUTIONS = False" in params[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_executed_in_order_and_small(path: Path) -> None:
    assert path.stat().st_size < 1_000_000, "a notebook file must stay under 1 MB"
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        "store the notebook executed top to bottom in a fresh kernel "
        "(linquant run --inplace)"
    )
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"stored error output in:\n{cell.source}"
            png = out.get("data", {}).get("image/png")
            if png:
                assert len(base64.b64decode(png)) <= 100_000, "figures: small PNGs (<= 100 KB)"
    tags = TAG.findall(_text_outputs(nb))
    assert len(tags) >= 2, "at least 2 checked exercises"
    # nbval proves a fresh learner run prints exactly these lines
    assert "FAIL" not in tags, "an unanswered exercise must report TODO, not FAIL"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_run_with_solutions(path: Path, tmp_path: Path) -> None:
    # the code path of the instructors' command: linquant run --solutions
    if reason := missing_requirements(path):
        pytest.skip(reason)
    out = tmp_path / path.name
    outcome = execute(path, out, solutions=True, inplace=False, timeout=600)
    assert outcome.error is None, outcome.error
    tags = TAG.findall(_text_outputs(_read(out)))
    assert len(tags) >= 2
    assert set(tags) == {"PASS"}, f"with the reference solutions every check must pass: {tags}"


IGNORED = "# NBVAL_IGNORE_OUTPUT"


def test_every_ignored_cell_says_why_and_is_listed_in_contributing() -> None:
    """No blanket ignoring: each cell whose output nbval skips says why on its second
    line, ``# (reason)``, and CONTRIBUTING.md lists that reason under the notebook."""
    contributing = (NOTEBOOK_DIR.parent / "CONTRIBUTING.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        for cell in _read(path).cells:
            if cell.cell_type != "code" or not cell.source.startswith(IGNORED):
                continue
            lines = cell.source.splitlines()
            assert len(lines) > 1 and re.fullmatch(r"# \(.+\)", lines[1]), (
                f"{path.name}: an ignored cell must give its reason on line 2 as '# (...)'"
            )
            row = f"| {path.name[:2]} | {lines[1][3:-1]} |"
            assert row in contributing, f"CONTRIBUTING.md must list: {row}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stated_time_is_the_measured_estimate(path: Path) -> None:
    """Words read at 150 per minute plus 12 minutes per exercise (linquant_helpers.lessons):
    after editing a notebook, store the new figure in its first cell and in the README."""
    assert stated_minutes(path) == estimated_minutes(path), (
        f"{path.name}: state 'Estimated time**: {estimated_minutes(path)} minutes'"
    )
    readme = (NOTEBOOK_DIR.parent / "README.md").read_text(encoding="utf-8")
    assert f"]({NOTEBOOK_DIR.name}/{path.name}) | {estimated_minutes(path)} min |" in readme
