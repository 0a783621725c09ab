"""``linquant run``: execute every notebook of the series headlessly, for instructors and CI.

    linquant run                     # all, as a learner would
    linquant run --solutions         # with the reference solutions
    linquant run 01 04               # names containing 01 or 04
    linquant run --inplace           # maintainers: store fresh outputs
    linquant run --notebook-dir DIR  # another folder

Executed copies go to ``--output-dir`` (default ``notebooks/_executed``), so the
stored notebooks are left untouched unless ``--inplace`` is given. Prints a
table of per-notebook wall times at the end; exits 1 if any notebook failed,
2 on bad arguments (a missing folder, no notebook matched, a timeout below 1 s).

Safety: every notebook is written atomically (a temporary file in the same
folder, then a rename), and only after its run succeeded: a failed or
interrupted run leaves the stored notebook, and any earlier executed copy,
exactly as they were, and no partial file behind. Ctrl-C (SIGINT) stops the
whole run at once, with exit status 130.

Stable output: re-running unchanged code leaves no diff. Timing metadata
(nbclient's ``execution`` timestamps, papermill's durations, start/end times
and exception flags) is dropped; the notebook's metadata is stored the way
JupyterLab writes it on save (``kernelspec`` with ``name``, ``display_name`` and
``language`` from the installed kernel spec, ``language_info`` as the kernel
reports it); widget model ids, random on each run, are renumbered
deterministically.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import NOTEBOOK_DIR, UsageError, find_notebooks, temporary_path, write_atomic

__all__ = ["NOTEBOOK_DIR", "execute", "find_notebooks", "normalize", "write_atomic"]

KERNEL_NAME = "python3"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_WIDGET_NAMESPACE = uuid.UUID("6f1d3c9e-6b52-4c5e-9a59-1f0e1b1d2a11")


@dataclass
class Outcome:
    name: str
    seconds: float
    error: str | None = None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C arrived while a notebook ran: stop everything, write nothing."""


_interrupted = False  # set by the SIGINT handler: whatever a run raises after it is an interrupt


def _kernelspec(kernel_name: str) -> dict[str, str] | None:
    """The ``kernelspec`` metadata JupyterLab writes for ``kernel_name``, or None if unknown."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except Exception:  # noqa: BLE001 - no such kernel here: keep what the notebook has
        return None
    return {"display_name": spec.display_name, "language": spec.language, "name": kernel_name}


def _coalesced(outputs: list[Any]) -> list[Any]:
    """``outputs`` with each run of stream outputs of one name (stdout, stderr) joined into one.

    How a cell's prints are cut into messages depends on when the kernel flushes,
    which varies from run to run; the text does not.
    """
    joined: list[Any] = []
    for out in outputs:
        previous = joined[-1] if joined else None
        if (
            previous is not None
            and out.get("output_type") == previous.get("output_type") == "stream"
            and out.get("name") == previous.get("name")
        ):
            previous["text"] = previous["text"] + out["text"]
        else:
            joined.append(out)
    return joined


def normalize(nb: Any, *, kernel_name: str = KERNEL_NAME) -> str:
    """The executed notebook ``nb`` as the text to store, free of run-to-run noise.

    Drops the per-cell ``execution`` timestamps and all ``papermill`` metadata
    (durations, start and end times, exception flags), joins consecutive stream
    outputs (:func:`_coalesced`), stores ``kernelspec`` as
    JupyterLab does, and renames widget model ids (random UUIDs) to ids derived
    from their order of appearance. Serialized by ``nbformat.writes``, which
    JupyterLab's server also uses.
    """
    import nbformat

    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if "outputs" in cell:
            cell.outputs = _coalesced(cell.outputs)
    spec = _kernelspec(kernel_name)
    if spec is not None:
        nb.metadata["kernelspec"] = spec
    widgets = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {})
    order = _widget_order(nb.cells, widgets.get("state", {}))
    rename = {old: uuid.uuid5(_WIDGET_NAMESPACE, str(n)).hex for n, old in enumerate(order)}
    if order:  # new keys now: nbformat writes the state sorted by key
        widgets["state"] = {rename[old]: _js_numbers(widgets["state"][old]) for old in order}
    text = nbformat.writes(nb)
    for old, new in rename.items():
        text = text.replace(old, new)
    return text if text.endswith("\n") else text + "\n"


_MODEL_ID = re.compile(r"[0-9a-f]{32}")


def _js_numbers(value: Any) -> Any:
    """``value`` with whole floats as ints: JupyterLab saves widget state from JavaScript,
    which writes ``8.0`` as ``8``, so storing ``8.0`` would change the file on every save."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def _widget_order(cells: list[Any], state: dict[str, Any]) -> list[str]:
    """The widget models of ``state`` in an order that does not depend on the run.

    The kernel creates models in an order of its own, with random ids. Here a
    model's place comes from the outputs that show it (in cell order), then from
    the models that refer to it (depth first); models nothing reaches come last,
    sorted by their content without ids.
    """
    order: list[str] = []

    def visit(model_id: str) -> None:
        if model_id in state and model_id not in order:
            order.append(model_id)
            for child in _MODEL_ID.findall(json.dumps(state[model_id], sort_keys=True)):
                visit(child)

    for cell in cells:
        for out in cell.get("outputs", []):
            for model_id in _MODEL_ID.findall(json.dumps(out, sort_keys=True)):
                visit(model_id)

    def content(model_id: str) -> str:
        return _MODEL_ID.sub("", json.dumps(state[model_id], sort_keys=True))

    for model_id in sorted((m for m in state if m not in order), key=content):
        visit(model_id)
    return order


def execute(path: Path, output: Path, *, solutions: bool, inplace: bool, timeout: int) -> Outcome:
    """Run one notebook in a fresh kernel with its folder as working directory.

    With ``inplace``, the result replaces ``path``; otherwise it goes to ``output``
    (papermill, with ``USE_SOLUTIONS`` set). Either way the target is written
    only after a successful run, atomically; a failure returns an
    :class:`Outcome` with its error and leaves the target untouched.
    Raises :class:`Interrupted` (a ``KeyboardInterrupt``) on Ctrl-C.
    """
    import nbformat

    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        # nbclient and papermill read None or -1 as "no limit": never by accident
        raise ValueError(f"timeout must be a whole number of seconds >= 1, got {timeout!r}")
    start = time.perf_counter()
    target = path if inplace else output
    scratch = None
    try:
        if inplace:
            from nbclient import NotebookClient

            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(
                nb,
                timeout=timeout,
                kernel_name=KERNEL_NAME,
                record_timing=False,
                resources={"metadata": {"path": str(path.parent)}},
            )
            _in_worker_thread(client.execute)
        else:
            import papermill

            scratch = temporary_path(target)  # papermill saves after every cell: not the target
            _in_worker_thread(
                lambda: papermill.execute_notebook(
                    str(path),
                    str(scratch),
                    parameters={"USE_SOLUTIONS": solutions},
                    cwd=str(path.parent),
                    kernel_name=KERNEL_NAME,
                    progress_bar=False,
                    execution_timeout=timeout,
                )
            )
            nb = nbformat.read(scratch, as_version=4)
        if _interrupted:
            raise Interrupted
        write_atomic(normalize(nb), target)
    except KeyboardInterrupt as err:
        _stop_kernels()
        raise Interrupted from err
    except Exception as err:  # report every failure in the table, then exit non-zero
        if _interrupted:  # the kernel or the client failed because of the Ctrl-C
            raise Interrupted from err
        return Outcome(path.name, time.perf_counter() - start, f"{type(err).__name__}: {err}")
    finally:
        if scratch is not None:
            scratch.unlink(missing_ok=True)
    return Outcome(path.name, time.perf_counter() - start)


def _in_worker_thread(run: Callable[[], object]) -> None:
    """Call ``run()`` in a daemon thread while this (main) thread waits, ready for Ctrl-C.

    nbclient, in the main thread, takes SIGINT over with its own handler, which
    shuts the kernel down and lets the run fail with an empty ``AssertionError``:
    the runner then took the Ctrl-C for a failed notebook and went on to the
    next. Outside the main thread it cannot install that handler, so SIGINT
    reaches ours. Exceptions of ``run`` are raised here.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as err:  # noqa: BLE001 - handed over to the main thread
            errors.append(err)

    worker = threading.Thread(target=target, name="notebook", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)  # short waits: the main thread handles signals between them
    if errors:
        raise errors[0]


def _stop_kernels() -> None:
    """Terminate the kernels this process started (its child processes), on Ctrl-C.

    Each kernel leads its own session (jupyter_client starts it so), hence its own
    process group. Linux only (``/proc``); elsewhere a kernel exits by itself
    once it notices that its parent is gone.
    """
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:  # field 4 of /proc/PID/stat, the parent's pid
                os.killpg(int(stat.parent.name), signal.SIGTERM)
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours
            continue


@contextmanager
def stop_on_ctrl_c() -> Iterator[None]:
    """Make SIGINT set the interrupted flag before raising ``KeyboardInterrupt`` as usual."""
    global _interrupted

    def handler(signum: int, frame: object) -> None:
        global _interrupted
        _interrupted = True
        raise Interrupted

    _interrupted = False
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def seconds(text: str) -> int:
    """``--timeout``'s value: a whole number of seconds, at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds >= 1, got {text!r}")
    return value


HELP = "execute the notebooks headless (maintainers: --inplace)"


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``linquant run``."""
    parser.add_argument("patterns", nargs="*", help="run only notebooks whose names contain these")
    parser.add_argument("--solutions", action="store_true", help="fill in the reference solutions")
    parser.add_argument(
        "--inplace", action="store_true", help="store fresh outputs in the notebooks"
    )
    parser.add_argument(
        "--notebook-dir",
        type=Path,
        default=NOTEBOOK_DIR,
        help="the folder of the numbered notebooks (default: the series' notebooks/)",
    )
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--timeout", type=seconds, default=600, help="seconds per cell (>= 1)")


def handle(args: argparse.Namespace) -> int:
    """Run ``linquant run``: 0 if every notebook ran, 1 if one failed, 130 on Ctrl-C.

    Raises :class:`~linquant_helpers.course.files.UsageError` for bad arguments.
    """
    if args.inplace and args.solutions:
        raise UsageError(
            "--inplace stores what a learner sees; it cannot be combined with --solutions"
        )
    if not args.notebook_dir.is_dir():
        raise UsageError(f"--notebook-dir {args.notebook_dir} is not a folder")
    notebooks = find_notebooks(args.notebook_dir, args.patterns)
    if not notebooks:
        raise UsageError(f"no notebooks NN_*.ipynb matched in {args.notebook_dir}")
    out_dir = args.output_dir or args.notebook_dir / "_executed"
    if not args.inplace:
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--output-dir {out_dir} is a file, not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    outcomes: list[Outcome] = []
    with stop_on_ctrl_c():
        try:
            for path in (bar := tqdm(notebooks, unit="notebook")):
                bar.set_description(path.stem)
                outcomes.append(
                    execute(
                        path,
                        out_dir / path.name,
                        solutions=args.solutions,
                        inplace=args.inplace,
                        timeout=args.timeout,
                    )
                )
        except KeyboardInterrupt:
            current = notebooks[len(outcomes)].name if len(outcomes) < len(notebooks) else "?"
            print(
                f"\ninterrupted during {current}: stopped; it and the notebooks after it "
                "were left as they were",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED

    width = max(len(o.name) for o in outcomes)
    print(f"\n{'notebook':<{width}}  {'seconds':>8}  result")
    for o in outcomes:
        print(f"{o.name:<{width}}  {o.seconds:8.1f}  {'ok' if o.error is None else 'FAILED'}")
    print(f"{'total':<{width}}  {sum(o.seconds for o in outcomes):8.1f}")
    for o in outcomes:
        if o.error:
            print(f"\n{o.name} failed:\n{o.error}", file=sys.stderr)
    return 0 if all(o.error is None for o in outcomes) else 1
