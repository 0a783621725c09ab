"""The maintainers' runner: Ctrl-C, failures and atomic writes never lose a notebook,
and re-running unchanged code leaves no diff.

These run the real command (``python -m linquant_helpers.course run``, that is
``linquant run``) in a
subprocess, on small throwaway notebooks in a temporary folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from linquant_helpers.course import cli
from linquant_helpers.course.files import write_atomic
from linquant_helpers.course.run import EXIT_INTERRUPTED, WIDGET_STATE, normalize

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _notebook(folder: Path, name: str, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# throwaway")]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / name
    nbformat.write(nb, path)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _runner(folder: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "linquant_helpers.course", "run", "--notebook-dir", str(folder)]


def _run(folder: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        _runner(folder) + list(args), capture_output=True, text=True, timeout=timeout
    )


def _interrupt_while_running(folder: Path, *args: str) -> tuple[int, str]:
    """Start the runner, wait until the first notebook's cell runs, send SIGINT."""
    proc = subprocess.Popen(
        _runner(folder) + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (folder / "started").exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the sleeping cell never started"
            time.sleep(0.1)
        (folder / "started").unlink()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


SLEEPING = ("SEED = 0", "open('started', 'w').close()\nimport time\ntime.sleep(120)")
QUICK = ("SEED = 0", "print(SEED + 1)")


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "executed-copy"])
def test_ctrl_c_stops_everything_with_130_and_writes_nothing(tmp_path: Path, inplace: bool):
    _notebook(tmp_path, "01_sleeps.ipynb", *SLEEPING)
    _notebook(tmp_path, "02_after.ipynb", *QUICK)
    if not inplace:  # an earlier executed copy must survive too
        (tmp_path / "_executed").mkdir()
        (tmp_path / "_executed" / "01_sleeps.ipynb").write_text("earlier copy")
    before = _snapshot(tmp_path)
    start = time.monotonic()
    rc, out = _interrupt_while_running(tmp_path, *(["--inplace"] if inplace else []))
    assert rc == EXIT_INTERRUPTED, out
    assert time.monotonic() - start < 90, "the run went on after Ctrl-C"
    assert "interrupted during 01_sleeps.ipynb" in out
    assert "FAILED" not in out and "AssertionError" not in out
    # byte-identical notebooks, no temporary or partial file, 02 never ran
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "executed-copy"])
def test_a_failed_run_never_replaces_a_notebook(tmp_path: Path, inplace: bool):
    _notebook(tmp_path, "01_fails.ipynb", "SEED = 0", "raise RuntimeError('boom')")
    before = _snapshot(tmp_path)
    result = _run(tmp_path, *(["--inplace"] if inplace else []))
    assert result.returncode == 1, result.stderr
    assert "boom" in result.stderr
    after = _snapshot(tmp_path)
    assert after == before  # no _executed copy of a failed run, no temporary file


def test_rerunning_unchanged_code_leaves_no_diff(tmp_path: Path):
    path = _notebook(tmp_path, "01_quick.ipynb", *QUICK)
    assert _run(tmp_path, "--inplace").returncode == 0
    first = path.read_bytes()
    assert _run(tmp_path, "--inplace").returncode == 0
    assert path.read_bytes() == first
    nb = nbformat.reads(first.decode(), as_version=4)
    assert nb.cells[2].outputs[0]["text"] == "1\n"
    assert all("execution" not in c.metadata for c in nb.cells)
    assert set(nb.metadata.kernelspec) == {"name", "display_name", "language"}
    assert nb.metadata.language_info["name"] == "python"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_quick.ipynb"]  # nothing left over


def test_executed_copies_carry_no_papermill_timings(tmp_path: Path):
    _notebook(tmp_path, "01_quick.ipynb", *QUICK)
    assert _run(tmp_path).returncode == 0
    copy = (tmp_path / "_executed" / "01_quick.ipynb").read_text()
    for noise in ('"papermill"', '"start_time"', '"end_time"', '"duration"', '"exception"'):
        assert noise not in copy
    assert [p.name for p in (tmp_path / "_executed").iterdir()] == ["01_quick.ipynb"]


def test_normalize_renames_widget_ids_deterministically():
    def executed(model_ids: list[str]):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("w", id="cell0")
        view = {"model_id": model_ids[0], "version_major": 2, "version_minor": 0}
        cell.outputs = [
            nbformat.v4.new_output(
                "display_data", data={"application/vnd.jupyter.widget-view+json": view}
            )
        ]
        cell.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00"}
        nb.cells = [cell]
        nb.metadata["papermill"] = {"duration": 1.5}
        nb.metadata["widgets"] = {
            WIDGET_STATE: {
                "state": {
                    model_ids[0]: {"state": {"layout": f"IPY_MODEL_{model_ids[1]}"}},
                    model_ids[1]: {"state": {}},
                },
                "version_major": 2,
                "version_minor": 0,
            }
        }
        return nb

    one = normalize(executed(["a" * 32, "b" * 32]))
    two = normalize(executed(["c" * 32, "d" * 32]))
    assert one == two  # same notebook, other random ids: same text
    assert "a" * 32 not in one and '"execution":' not in one and "papermill" not in one
    nb = nbformat.reads(one, as_version=4)
    state = nb.metadata.widgets[WIDGET_STATE]["state"]
    view_id = nb.cells[0].outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]
    assert view_id["model_id"] in state  # the links between ids survive the renaming
    assert state[view_id["model_id"]]["state"]["layout"][len("IPY_MODEL_") :] in state


def test_write_atomic_replaces_in_one_step_and_leaves_nothing_behind(tmp_path: Path):
    target = tmp_path / "01_x.ipynb"
    target.write_text("old")
    os.chmod(target, 0o600)
    write_atomic("new\n", target)
    assert target.read_text() == "new\n"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["01_x.ipynb"]


def test_write_atomic_that_fails_halfway_leaves_the_old_file(tmp_path: Path):
    target = tmp_path / "guide.md"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):  # the encoder fails after the file was opened
        write_atomic("new" * 10_000 + "\udcff", target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["guide.md"]


def test_normalize_joins_stream_outputs_cut_differently_by_the_kernel() -> None:
    import nbformat

    def cell(*texts: str):
        code = nbformat.v4.new_code_cell("print('a'); print('b')", id="c1")
        code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in texts]
        return code

    one = nbformat.v4.new_notebook(cells=[cell("a\nb\n")])
    two = nbformat.v4.new_notebook(cells=[cell("a\n", "b\n")])
    assert normalize(one) == normalize(two)


def test_normalize_orders_and_names_widgets_the_same_whatever_the_run() -> None:
    """Two runs: the same widgets, created in another order, with other random ids."""
    import nbformat

    def run(ids: list[str], reverse: bool):
        slider, style, layout = ids
        models = {
            slider: {
                "model_name": "IntSliderModel",
                "state": {"layout": f"IPY_MODEL_{layout}", "style": f"IPY_MODEL_{style}"},
            },
            style: {"model_name": "SliderStyleModel", "state": {}},
            layout: {"model_name": "LayoutModel", "state": {}},
        }
        if reverse:
            models = dict(reversed(models.items()))
        code = nbformat.v4.new_code_cell("slider", id="c1")
        view = {"application/vnd.jupyter.widget-view+json": {"model_id": slider}}
        code.outputs = [nbformat.v4.new_output("display_data", data=view)]
        nb = nbformat.v4.new_notebook(cells=[code])
        nb.metadata["widgets"] = {WIDGET_STATE: {"state": models, "version_major": 2}}
        return normalize(nb)

    first = run(["a" * 32, "b" * 32, "c" * 32], reverse=False)
    second = run(["f" * 32, "e" * 32, "d" * 32], reverse=True)  # nbformat sorts keys
    assert first == second


def test_widget_state_numbers_are_stored_as_javascript_writes_them() -> None:
    from linquant_helpers.course.run import _js_numbers

    state = {"max": 8.0, "step": 0.1, "value": [-1.0, 7.5], "n": 3, "flag": True}
    assert _js_numbers(state) == {"max": 8, "step": 0.1, "value": [-1, 7.5], "n": 3, "flag": True}
    assert type(_js_numbers(state)["max"]) is int


@pytest.mark.parametrize("value", ["-5", "0", "1.5", "soon"])
def test_a_timeout_that_is_not_a_positive_whole_number_is_refused(tmp_path: Path, value: str):
    """``--timeout -5`` was accepted, and nbclient reads a negative timeout as no limit."""
    from linquant_helpers.course.run import execute

    _notebook(tmp_path, "01_quick.ipynb", *QUICK)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--notebook-dir", str(tmp_path), "--timeout", value])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="timeout must be a whole number of seconds >= 1"):
        execute(tmp_path / "01_quick.ipynb", tmp_path / "out.ipynb", solutions=False,
                inplace=False, timeout=-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_quick.ipynb"]
