"""Where the course's files are, and how the tools write them: atomically.

Every file a tool generates (an executed notebook, ``docs/instructors.md``) is
written by :func:`write_atomic`: a reader, or a crash, sees the old file or the
new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository: the folder that holds ``notebooks/`` and ``docs/``."""

NOTEBOOK_DIR = ROOT / "notebooks"


class UsageError(ValueError):
    """Bad input to a ``linquant`` subcommand; the one-line message names the file or argument.

    The command prints it and exits with status 2.
    """


def find_notebooks(directory: Path, patterns: list[str]) -> list[Path]:
    """The numbered notebooks (``NN_*.ipynb``) of ``directory`` in reading order, filtered by
    ``patterns`` (names that contain any of them); never those of its subfolders."""
    found = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if patterns:
        found = [p for p in found if any(s in p.name for s in patterns)]
    return found


def temporary_path(target: Path) -> Path:
    """A fresh, hidden file name next to ``target`` (same folder, so a rename is atomic)."""
    fd, name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    return Path(name)


def write_atomic(text: str, target: Path) -> None:
    """Write ``text`` to ``target`` all at once: a temporary file in its folder, then a rename.

    A reader (or a crash) sees either the old file or the new one, never a mix.
    The file keeps the permissions of the one it replaces.
    """
    tmp = temporary_path(target)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
