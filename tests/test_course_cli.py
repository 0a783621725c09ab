"""The ``linquant`` command: the console script of pyproject.toml, its subcommands, ``-m``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from linquant_helpers.course import cli

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("run", "site", "progress", "guide")


def _console_script() -> object:
    """The function ``[project.scripts] linquant`` names (what ``pip install`` would call)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["linquant"].partition(":")
    return getattr(importlib.import_module(module), name)


def test_the_console_script_is_the_command_with_every_subcommand(capsys):
    main = _console_script()
    assert main is cli.main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: linquant")
    for name in SUBCOMMANDS:
        assert f"    {name} " in out
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: linquant {name}")


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["run", "--notebook-dir", "{tmp}/nowhere"], "--notebook-dir"),
        (["run", "--notebook-dir", "{tmp}", "99"], "no notebooks NN_*.ipynb matched"),
        (["site", "--notebooks", "{tmp}/nowhere"], "--notebooks"),
        (["site", "--out", "{tmp}/file.txt", "--notebooks", "{tmp}"], "file.txt is a file"),
        (["progress", "{tmp}/nowhere"], "nowhere"),
        (["guide", "--guide", "{tmp}/nowhere.md"], "nowhere.md"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_it(tmp_path, capsys, argv, names):
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "01_x.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, '
                                         '"nbformat_minor": 5}')
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"linquant {argv[0]}: error: ") and names in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_unknown_subcommand_or_option_exits_2(capsys):
    for argv in (["build"], ["site", "build"], ["progress"], []):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        assert "linquant" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command():
    out = subprocess.run(
        [sys.executable, "-m", "linquant_helpers.course", "--help"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: linquant") and "progress" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "linquant_helpers.course", "run", "--timeout", "-5"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert bad.returncode == 2 and "--timeout" in bad.stderr.splitlines()[-1]
