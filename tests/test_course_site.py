"""The course site: built offline from the stored notebooks, every page checked in Chromium.

The build runs with sockets blocked (it must not touch the network), then
every page is served from 127.0.0.1 and opened in headless Chromium: any
request to another host fails the test, as do console errors, images that did not
load, math MathJax left raw or reported as an error, and a broken link to the
source notebook. The solutions must not be on the site.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
from browser_support import ARTIFACTS, SKIP_REASON, chromium

from linquant_helpers.course import cli, site
from linquant_helpers.lessons import stated_minutes

LESSONS = site.find_lessons()


@contextlib.contextmanager
def serve(folder: Path):
    """The site over HTTP on 127.0.0.1, as a web server or ``python -m http.server`` serves it."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _no_network(*args, **kwargs):
    raise OSError("the site build must not use the network")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "_site"
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _no_network)
    mp.setattr(socket, "create_connection", _no_network)
    try:
        pages = site.build(out)
    finally:
        mp.undo()
    return out, pages


def test_course_map_reads_each_notebook_first_cell():
    for path in LESSONS:
        lesson = site.read_lesson(path)
        assert lesson.title.startswith(path.name[:2]), lesson.title
        assert lesson.objectives, f"{path.name}: no learning objectives found"
        assert lesson.minutes and 5 <= lesson.minutes <= 240, f"{path.name}: {lesson.minutes}"
        assert lesson.minutes == stated_minutes(path)  # one reader of the stated time


def test_freeze_widgets_shows_the_stored_figure():
    png = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR"}}
    state = {
        "box": {"state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_out"]}},
        "slider": {"state": {"value": 4}},
        "out": {"state": {"outputs": [png]}},
    }
    view = {"model_id": "box", "version_major": 2, "version_minor": 0}
    nb = {
        "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}},
        "cells": [
            {
                "cell_type": "code",
                "outputs": [
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {
                            "application/vnd.jupyter.widget-view+json": view,
                            "text/plain": "interactive(children=(IntSlider(value=4)",
                        },
                    }
                ],
            }
        ],
    }
    frozen = site.freeze_widgets(nb)
    outputs = frozen["cells"][0]["outputs"]
    assert [o["data"].keys() for o in outputs][1] == {"image/png"}
    assert "widgets" not in frozen["metadata"]
    assert "widgets" in nb["metadata"], "the input notebook must not be modified"


def test_build_writes_every_lesson_and_no_solution(built):
    out, pages = built
    names = sorted(p.name for p in pages)
    assert names == sorted(["index.html", *(p.stem + ".html" for p in LESSONS)])
    everything = [p.relative_to(out).as_posix() for p in out.rglob("*")]
    assert not [p for p in everything if "solution" in p.lower()]
    for page in pages:
        text = page.read_text()
        assert 'href="notebooks/solutions' not in text and 'src="https:' not in text


# Text of rendered markdown that MathJax did not typeset.
RAW_TEX = r"\$\$|\$[^$\n]*\\[a-zA-Z]+|\\(frac|sum|mathrm|lfloor|cdot|left|begin)\b"
RAW_MATH = """(pattern) => {
  const bad = [];
  for (const md of document.querySelectorAll('.jp-RenderedMarkdown, td')) {
    const copy = md.cloneNode(true);
    copy.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_Preview, .MJX_Assistive_MathML,'
      + ' script, code, pre, a').forEach(e => e.remove());
    const text = copy.textContent;
    const m = text.match(new RegExp(pattern));
    if (m) bad.push(text.slice(Math.max(0, m.index - 40), m.index + 60));
  }
  return {bad, typeset: document.querySelectorAll('.MathJax').length,
          errors: document.querySelectorAll('.MathJax_Error, [data-mjx-error], .noError').length};
}"""
# MathJax 2's font probes, harmless: it tests web-font support with an about:blank font,
# and asks for a TeX .otf that the trimmed jupyter-server-mathjax copy does not ship,
# then uses the STIX-Web fonts it does ship. Math is checked separately (raw TeX, errors).
MATHJAX_PROBES = ("Access to font at 'about:blank'", "MathJax_AMS-Regular.otf")
BROKEN_IMAGES = """() => [...document.images]
  .filter(i => !i.complete || i.naturalWidth === 0)
  .map(i => (i.getAttribute('src') || '').slice(0, 80))"""


@pytest.mark.browser
@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
def test_every_page_renders_offline_in_chromium(built):
    out, pages = built
    shots = ARTIFACTS / "site"
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with serve(out) as base, chromium() as browser:
        for page_path in pages:
            tab = browser.new_page()
            console: list[str] = []
            remote: list[str] = []
            tab.on("console", lambda m, c=console: c.append(m) if m.type == "error" else None)
            failed: list[str] = []
            tab.on("requestfailed", lambda r, f=failed: f.append(r.url))
            tab.on("pageerror", lambda e, c=console: c.append(str(e)))
            tab.on(
                "request",
                lambda r, x=remote: None
                if r.url.startswith((base, "data:", "about:", "blob:"))
                else x.append(r.url),
            )
            tab.goto(base + page_path.name, wait_until="load")
            # MathJax 2 signals the end of typesetting through its queue.
            tab.evaluate("() => new Promise(r => MathJax.Hub.Queue(() => r(true)))")
            math = tab.evaluate(RAW_MATH, RAW_TEX)
            name = page_path.name
            for m in console:
                text = m if isinstance(m, str) else m.text
                where = "" if isinstance(m, str) else (m.location or {}).get("url", "")
                if not any(p in text or p in where for p in MATHJAX_PROBES) and not (
                    "Failed to load resource" in text
                    and failed
                    and all(
                        u == "about:blank" or any(p in u for p in MATHJAX_PROBES) for u in failed
                    )
                ):
                    problems.append(f"{name}: console error: {text} {where}".rstrip())
            problems += [f"{name}: network request: {u}" for u in remote]
            problems += [f"{name}: unrendered math ...{t}..." for t in math["bad"]]
            problems += [f"{name}: broken image {s}" for s in tab.evaluate(BROKEN_IMAGES)]
            if math["errors"]:
                problems.append(f"{name}: {math['errors']} MathJax errors")
            if "$" in page_path.read_text() and not math["typeset"]:
                problems.append(f"{name}: has math but MathJax typeset nothing")
            for href in tab.evaluate(
                "() => [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
            ):
                if "://" not in href and not href.startswith(("#", "mailto:")):
                    target = out / href.split("#")[0]
                    if href.split("#")[0] and not target.exists():
                        problems.append(f"{name}: broken link {href}")
            if name == "index.html" or name.startswith("02"):
                tab.screenshot(path=str(shots / f"{Path(name).stem}.png"), full_page=True)
            tab.close()
    (shots / "pages.json").write_text(json.dumps([p.name for p in pages], indent=1) + "\n")
    assert not problems, "\n".join(problems)


# --- where the site may be written, and a rebuild that fails (no browser needed) ---


def _lesson(folder: Path, name: str, title: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            f"# {title}\n\n**Learning objectives**\n\n- one\n\n**Estimated time**: 10 minutes\n"
        ),
        nbformat.v4.new_code_cell("1 + 1"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


@pytest.fixture
def course(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    _lesson(folder, "01_first.ipynb", "01 First")
    _lesson(folder, "02_second.ipynb", "02 Second")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


def test_build_refuses_a_folder_that_is_not_a_site(course: Path, tmp_path: Path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.txt").write_text("three years of work")
    with pytest.raises(site.SiteError, match=r"not a site built by this command"):
        site.build(out, course)
    assert cli.main(["site", "--out", str(out), "--notebooks", str(course)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(out) in err
    assert (out / "thesis.txt").read_text() == "three years of work"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_build_refuses_the_notebooks_folder_and_what_holds_it(course: Path, tmp_path: Path):
    before = _files(tmp_path)
    for out in (course, tmp_path, course / ".." / "notebooks"):
        with pytest.raises(site.SiteError, match="holds the notebooks folder"):
            site.build(out, course)
    (course / site.MARKER).write_text("")  # not even a marker makes the notebooks a site
    with pytest.raises(site.SiteError, match="holds the notebooks folder"):
        site.build(course, course)
    (course / site.MARKER).unlink()
    assert _files(tmp_path) == before


def test_build_refuses_a_file(course: Path, tmp_path: Path):
    out = tmp_path / "site.html"
    out.write_text("mine")
    with pytest.raises(site.SiteError, match="is a file"):
        site.build(out, course)
    assert out.read_text() == "mine"


def test_rebuild_replaces_a_previous_site_and_a_failed_one_keeps_it(
    course: Path, tmp_path: Path, monkeypatch
):
    out = tmp_path / "_site"
    out.mkdir()  # an empty folder is fine
    pages = site.build(out, course)
    assert (out / site.MARKER).is_file() and [p.name for p in pages][0] == "index.html"
    (out / "stale.html").write_text("from an older build")
    site.build(out, course)  # a previous site is replaced whole
    assert not (out / "stale.html").exists()
    before = _files(out)

    real = site.render_lesson

    def fails_on_the_second(lessons, index, mathjax_url):
        if index == 1:
            raise RuntimeError("cannot render this output")
        return real(lessons, index, mathjax_url)

    monkeypatch.setattr(site, "render_lesson", fails_on_the_second)
    with pytest.raises(site.SiteError, match="02_second.ipynb: cannot render"):
        site.build(out, course)
    assert _files(out) == before  # the old site, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_site", "notebooks"]  # no leftovers


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"\xff\xfe\x00garbage", b'{"cells": [], "metadata": {}, '
     b'"nbformat": 4, "nbformat_minor": 5}', b'{"a": 1}'],
    ids=["empty", "not-json", "not-utf8", "no-cells", "not-a-notebook"],
)
def test_a_bad_notebook_is_named_in_one_line(course: Path, tmp_path: Path, content: bytes, capsys):
    (course / "03_bad.ipynb").write_bytes(content)
    out = tmp_path / "_site"
    assert cli.main(["site", "--out", str(out), "--notebooks", str(course)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "03_bad.ipynb" in err, err
    assert not out.exists()


def test_build_names_an_out_it_cannot_write(course: Path, tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")  # a file where --out's parent folder would be
    with pytest.raises(site.SiteError, match=r"_site: cannot write beside it"):
        site.build(tmp_path / "notes.txt" / "_site", course)
    assert (tmp_path / "notes.txt").read_text() == "mine"
