"""``linquant site``: the course site, static HTML from the stored, executed notebooks.

    linquant site              # writes _site/ (git-ignored)
    linquant site --out DIR    # a new or empty folder, or a site built here before

The build executes nothing and makes no network request. It renders the
outputs stored in ``notebooks/NN_*.ipynb`` with nbconvert's ``lab`` template,
plus a small template of ours: navigation, a link to the source notebook, and
MathJax served from the site itself (copied from the ``jupyter-server-mathjax``
package), so the pages render offline. The landing page is the course map:
each notebook's title, objectives and estimated time, read from its first
cell. Interactive widgets cannot run without a kernel; their stored figure is
shown instead. The reference solutions are not published. See docs/site.md.

The site is built in a temporary folder beside ``--out`` and swapped in at the
end: a build that fails leaves the previous site as it was. Every site holds a
``.linquant-site`` marker file; ``--out`` must be new, empty, or such a site,
never a file or a folder that holds the notebooks. Bad input exits with status 2
and a one-line message naming the file or argument.
"""

from __future__ import annotations

import argparse
import copy
import html
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..lessons import stated_minutes
from .files import NOTEBOOK_DIR, ROOT, UsageError, find_notebooks

DEFAULT_OUT = ROOT / "_site"
MATHJAX_DIR = "_static/mathjax"
MARKER = ".linquant-site"
"""The file every site this module builds holds: only a folder with it may be replaced."""
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"  # the combined config that package ships

# The package ships MathJax's STIX-Web fonts only. Browsers refuse web fonts to pages
# opened from disk (file://), so serve the folder (python -m http.server -d _site).
# $...$ is inline math, as in JupyterLab.
MATHJAX_SETUP = """<link rel="icon" href="data:,">
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], processEscapes: true},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
  showProcessingMessages: false, messageStyle: "none"
});
</script>"""

TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}
{{ resources.lq_mathjax_setup }}
<style>
nav.lq-nav { font-family: var(--jp-ui-font-family, sans-serif); font-size: 14px;
  display: flex; gap: 1.5em; padding: 8px 16px; border-bottom: 1px solid #ddd; }
nav.lq-nav.bottom { border-top: 1px solid #ddd; border-bottom: none; }
.lq-note { font-style: italic; color: #555; margin: 4px 0; }
</style>
{% endblock extra_css %}
{%- block body_header -%}
{{ super() }}
{{ resources.lq_nav_top }}
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.lq_nav_bottom }}
{{ super() }}
{% endblock body_footer %}
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
{setup}
<script src="{mathjax}"></script>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
  line-height: 1.5; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: 6px 10px; vertical-align: top; text-align: left; }}
th {{ background: #f3f3f3; }}
td ul {{ margin: 0; padding-left: 1.2em; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


class SiteError(UsageError):
    """A bad ``--out`` or a notebook the site cannot show; the message names which."""


@dataclass(frozen=True)
class Lesson:
    """What the course map shows of one notebook, read from its first cell."""

    path: Path
    number: str
    title: str
    objectives: tuple[str, ...]
    minutes: int | None

    @property
    def page(self) -> str:
        return self.path.stem + ".html"


def find_lessons(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks of ``notebook_dir`` in reading order (never ``solutions/``)."""
    return find_notebooks(notebook_dir, [])


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message``: validation errors run over many lines."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def read_lesson(path: Path) -> Lesson:
    """Title (first ``#`` heading), objectives (the list under "Learning objectives") and time."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # noqa: BLE001 - not JSON, not UTF-8, not a notebook: say which
        raise SiteError(f"{path}: not a readable notebook ({_one_line(err)})") from None
    if not nb.cells:
        raise SiteError(f"{path}: the notebook has no cells (a lesson starts with its title)")
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title_match = re.search(r"^#\s+(.+)$", first, re.MULTILINE)
    title = title_match.group(1).strip() if title_match else path.stem
    objectives: list[str] = []
    block = re.search(r"Learning objectives\**\s*\n+((?:\s*[-*] .+\n?)+)", first)
    if block:
        objectives = [
            re.sub(r"^\s*[-*]\s+", "", line).strip()
            for line in block.group(1).splitlines()
            if line.strip()
        ]
    return Lesson(path, path.name[:2], title, tuple(objectives), stated_minutes(path))


def _widget_outputs(nb: dict, model_id: str) -> list[dict]:
    """The outputs stored in the widget state under ``model_id`` (an interact's Output child)."""
    state = nb.get("metadata", {}).get("widgets", {})
    models = state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    model = models.get(model_id)
    if model is None:
        return []
    found = list(model.get("state", {}).get("outputs", []))
    for child in model.get("state", {}).get("children", []):
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            found += _widget_outputs(nb, child.removeprefix("IPY_MODEL_"))
    return found


def freeze_widgets(nb: dict) -> dict:
    """A copy of ``nb`` where each widget view is replaced by the outputs it stored.

    Without a kernel a slider cannot move; the page shows the figure the widget
    showed when the notebook was executed, with a note, instead of the widget's
    text fallback (``interactive(children=...``).
    """
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if view is None:
                outputs.append(out)
                continue
            outputs.append(
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {
                        "text/html": '<p class="lq-note">An interactive widget: open the '
                        "notebook in JupyterLab to use it. Its stored figure:</p>",
                        "text/plain": "An interactive widget: open the notebook to use it.",
                    },
                }
            )
            outputs += _widget_outputs(nb, view["model_id"])
        cell["outputs"] = outputs
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def _nav(lessons: list[Lesson], index: int, *, bottom: bool) -> str:
    lesson = lessons[index]
    links = ['<a href="index.html">Course map</a>']
    if index > 0:
        prev = lessons[index - 1]
        links.append(f'<a href="{prev.page}">&larr; {html.escape(prev.title)}</a>')
    if index + 1 < len(lessons):
        nxt = lessons[index + 1]
        links.append(f'<a href="{nxt.page}">{html.escape(nxt.title)} &rarr;</a>')
    links.append(
        f'<a class="lq-source" href="notebooks/{lesson.path.name}">Source notebook '
        f"({html.escape(lesson.path.name)})</a>"
    )
    return f'<nav class="lq-nav{" bottom" if bottom else ""}">' + "".join(links) + "</nav>"


def _link_lessons(page: str) -> str:
    """Links between notebooks (``07_x.ipynb``) point at their pages (``07_x.html``)."""
    return re.sub(r'href="(\d\d_[^"/]+)\.ipynb(#[^"]*)?"', r'href="\1.html\2"', page)


def render_lesson(lessons: list[Lesson], index: int, mathjax_url: str) -> str:
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    lesson = lessons[index]
    nb = nbformat.from_dict(freeze_widgets(nbformat.read(lesson.path, as_version=4)))
    exporter = HTMLExporter(
        extra_loaders=[DictLoader({"linquant.html.j2": TEMPLATE})],
        template_file="linquant.html.j2",
        mathjax_url=mathjax_url,
    )
    resources = {
        "metadata": {"name": lesson.title},
        "lq_nav_top": _nav(lessons, index, bottom=False),
        "lq_nav_bottom": _nav(lessons, index, bottom=True),
        "lq_mathjax_setup": MATHJAX_SETUP,
    }
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return _link_lessons(body)


def render_index(lessons: list[Lesson], mathjax_url: str) -> str:
    import mistune

    rows = []
    for lesson in lessons:
        objectives = "".join(f"<li>{mistune.html(o).strip()}</li>" for o in lesson.objectives)
        minutes = f"{lesson.minutes} min" if lesson.minutes is not None else "?"
        rows.append(
            f"<tr><td>{lesson.number}</td>"
            f'<td><a href="{lesson.page}">{html.escape(lesson.title)}</a><br>'
            f'<small><a href="notebooks/{lesson.path.name}">source notebook</a></small></td>'
            f"<td><ul>{objectives}</ul></td><td>{minutes}</td></tr>"
        )
    known = [lesson.minutes for lesson in lessons if lesson.minutes is not None]
    total = sum(known)
    body = (
        "<h1>linquant: linear quantization of neural networks, in PyTorch notebooks</h1>\n"
        "<p>The course map. Each lesson is shown with the outputs, figures and math of its "
        "last stored run; to run the code and do the exercises, install the course "
        "(see the README) and open the notebooks in JupyterLab.</p>\n"
        "<table>\n<tr><th>#</th><th>lesson</th><th>you learn to</th>"
        "<th>estimated time</th></tr>\n"
        + "\n".join(rows)
        + f"\n<tr><td></td><td><b>total</b></td><td></td><td><b>{total // 60} h "
        f"{total % 60:02d} min</b></td></tr>\n</table>\n"
    )
    return PAGE.format(
        title="linquant: the course map", setup=MATHJAX_SETUP, mathjax=mathjax_url, body=body
    )


def copy_mathjax(out: Path) -> None:
    """MathJax 2.7 from the ``jupyter-server-mathjax`` package into ``out/_static/mathjax``."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise SiteError(
            "the site needs MathJax from the jupyter-server-mathjax package: "
            "python -m pip install -e '.[notebooks]'"
        ) from None
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(source, out / MATHJAX_DIR, dirs_exist_ok=True)


def check_out(out: Path, notebook_dir: Path) -> None:
    """Raise :class:`SiteError` unless ``out`` may be (re)built: a new or empty folder, or a
    site built here before (it holds :data:`MARKER`), neither a file nor a folder that holds
    the notebooks."""
    out, notebooks = out.resolve(), notebook_dir.resolve()
    if out == notebooks or out in notebooks.parents:
        raise SiteError(f"--out {out} holds the notebooks folder {notebooks}; choose another")
    if out.exists() and not out.is_dir():
        raise SiteError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SiteError(
            f"--out {out} is not empty and is not a site built by this command (no {MARKER} "
            "in it): refusing to replace it; choose a new or empty folder"
        )


def _swap_in(new: Path, out: Path) -> None:
    """Replace the folder ``out`` (if any) by ``new``, a sibling: two renames, then the old
    site is deleted. If the second rename fails, the old site is put back."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old)


def build(out: Path = DEFAULT_OUT, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """Write the site into ``out``; return the HTML pages written.

    The site is built in a temporary folder beside ``out`` and swapped in at the
    end, so a build that fails leaves the previous site as it was. ``out`` must be
    new, empty, or a site this function built (see :func:`check_out`); raises
    :class:`SiteError` otherwise, and for a notebook it cannot read.
    """
    check_out(out, notebook_dir)
    lessons = [read_lesson(p) for p in find_lessons(notebook_dir)]
    if not lessons:
        raise SiteError(f"no notebooks NN_*.ipynb in {notebook_dir}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as err:
        raise SiteError(f"--out {out}: cannot write beside it ({err.strerror or err})") from None
    try:
        (tmp / "notebooks").mkdir()
        copy_mathjax(tmp)
        mathjax_url = f"{MATHJAX_DIR}/MathJax.js?config={MATHJAX_CONFIG}"
        names = ["index.html"]
        (tmp / "index.html").write_text(render_index(lessons, mathjax_url), encoding="utf-8")
        for index, lesson in enumerate(lessons):
            try:
                page = render_lesson(lessons, index, mathjax_url)
            except Exception as err:  # noqa: BLE001 - name the notebook that failed
                raise SiteError(f"{lesson.path}: cannot render ({_one_line(err)})") from err
            (tmp / lesson.page).write_text(page, encoding="utf-8")
            shutil.copy2(lesson.path, tmp / "notebooks" / lesson.path.name)
            names.append(lesson.page)
        (tmp / MARKER).write_text(
            "Built by `linquant site`; a rebuild replaces this folder.\n",
            encoding="utf-8",
        )
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a site is for reading
        _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return [out / name for name in names]


HELP = "build the offline course site (default into _site/)"


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``linquant site``."""
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT,
        help="output folder: new, empty, or a site built here before (default _site/)",
    )
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR, help="notebook folder")


def handle(args: argparse.Namespace) -> int:
    """Run ``linquant site``; raises :class:`SiteError` for bad input."""
    if not args.notebooks.is_dir():
        raise SiteError(f"--notebooks {args.notebooks} is not a folder")
    pages = build(args.out, args.notebooks)
    print(
        f"wrote {len(pages)} pages to {args.out}; to read it: "
        f"python -m http.server -b 127.0.0.1 -d {args.out}, then open http://127.0.0.1:8000/"
    )
    return 0
