"""The package's import graph, read from its source with ``ast``: layered, no cycle.

Each module may import only the modules listed before it in :data:`ORDER` (the
core first, then the lessons' modules, then the tools), so a rule always lives
below the modules that use it; and only the modules about the digits model
import :mod:`linquant_helpers.models`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "linquant_helpers"

ORDER = (
    # the core: affine maths, granularity, codes, errors
    "validation",
    "optional",
    "granularity",
    "affine",
    "sampling",
    "metrics",
    "packing",
    "qtensor",
    "plotting",
    # the lessons' machinery, in the order the lessons need it
    "surgery",
    "models",
    "observers",
    "weights",
    "calibration",
    "hardware",
    "integer_ops",
    "kernels",
    "layers",
    "qat",
    "sentence_model",
    "smoothquant",
    "gptq",
    "awq",
    "formats",
    "float8",
    "block_scaled",
    "gguf_blocks",
    "kquants",
    "gguf_matmul",
    "runtimes",
    "pt2e",
    "outliers",
    "rotations",
    "kv_cache",
    # the exercise checks, then the tools around the notebooks
    "exercises.feedback",
    *(f"exercises.lesson{n:02d}" for n in range(1, 14)),
    "exercises",
    "lessons",
    # the course's tools, behind the `linquant` command
    "course.files",
    "course.run",
    "course.site",
    "course.progress",
    "course.guide",
    "course.cli",
    "course.__main__",
    "course",
    "",  # the package itself: it re-exports, nothing imports it
)
"""The modules, lowest layer first; ``"exercises"`` is the subpackage's ``__init__``."""

DIGITS_MODEL_USERS = {"exercises.lesson04", "exercises.lesson05", "course.guide", ""}
"""The modules about the digits CNN: the only ones that may import ``models``."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` imports, anywhere in its source (lazy imports too)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if name else []
                base = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.split(".")[0] == "linquant_helpers":
                base = ".".join(node.module.split(".")[1:])
            else:
                continue
            for alias in node.names:  # `from . import site` imports a module
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "linquant_helpers":
                    found.add(".".join(alias.name.split(".")[1:]))
    return found - {name}


GRAPH = {
    name: imported_modules(name, path, set(package_modules()))
    for name, path in package_modules().items()
}


def test_every_module_has_a_layer() -> None:
    assert set(GRAPH) == set(ORDER), "add new modules to ORDER, at the layer they belong to"


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_only_go_down(name: str) -> None:
    rank = {m: i for i, m in enumerate(ORDER)}
    upward = sorted(m for m in GRAPH[name] if rank[m] >= rank[name])
    assert not upward, f"{name or 'linquant_helpers'} imports {upward}, a layer above it"


def test_the_graph_has_no_cycle() -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in GRAPH[name]:
                visit(dep, (*path, name))
            done.add(name)

    for name in GRAPH:
        visit(name, ())


def test_only_the_digits_lessons_import_the_digits_model() -> None:
    users = {name for name, deps in GRAPH.items() if "models" in deps}
    assert users <= DIGITS_MODEL_USERS, f"{sorted(users - DIGITS_MODEL_USERS)} import models"
