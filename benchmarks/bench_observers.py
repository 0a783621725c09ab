"""Peak memory and time of every observer on one large weight, side by side, in one run.

    python benchmarks/bench_observers.py               # a 4096 x 4096 float32 weight
    python benchmarks/bench_observers.py --size 1024   # a quick run
    python benchmarks/bench_observers.py --shape 4096x1024   # a weight of 4096 rows of 1024
    python benchmarks/bench_observers.py --only MSE    # rows whose name contains MSE

Each row runs in a fresh subprocess: the weight is made first, a warm-up call
on an eighth of its rows runs the same code paths once (so that the pages of
PyTorch's kernels it loads are not counted as the observer's memory), free
memory is handed back to the OS (glibc's ``malloc_trim``) and the peak-RSS mark
is reset (``echo 5 > /proc/self/clear_refs``);
then ``obs.update(w)`` and ``obs.qparams()`` run once. The peak extra memory is
``VmHWM`` after the calls minus ``VmRSS`` before them (from ``/proc/self/status``):
the operating system's count of resident pages, so it sees every allocation,
PyTorch's C++ buffers included (``tracemalloc`` sees only Python objects). It
includes what the observer keeps (its sample). The goal is at most
2x the weight's size. A row whose call raises shows the error instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import release_free_memory, status_kib  # noqa: E402

from linquant_helpers import observers as obs_module  # noqa: E402

GOAL_PEAK = 2.0  # peak extra memory at most 2x the weight
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=65536"

ROWS: dict[str, tuple[str, dict]] = {
    "MinMaxObserver()": ("MinMaxObserver", {}),
    "MinMaxObserver(axis=0)": ("MinMaxObserver", {"axis": 0}),
    "MovingAverageMinMaxObserver()": ("MovingAverageMinMaxObserver", {}),
    "PercentileObserver()": ("PercentileObserver", {}),
    "PercentileObserver(axis=0)": ("PercentileObserver", {"axis": 0}),
    "MSEObserver()": ("MSEObserver", {}),
    "MSEObserver(axis=0)": ("MSEObserver", {"axis": 0}),
    "EntropyObserver()": ("EntropyObserver", {}),
    "EntropyObserver(16, bins=200000)": ("EntropyObserver", {"bits": 16, "bins": 200_000}),
}


def _shape(text: str) -> tuple[int, int]:
    """``--shape``: ``ROWSxCOLS``, two positive ints."""
    try:
        rows, cols = (int(n) for n in text.lower().split("x"))
    except ValueError:
        rows = cols = 0
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"must be ROWSxCOLS of positive ints, got {text!r}")
    return rows, cols


def make_observer(row: str):
    name, settings = ROWS[row]
    settings = dict(settings)
    bits = settings.pop("bits", 8)
    return getattr(obs_module, name)(bits, **settings)


def child(row: str, shape: tuple[int, int]) -> None:
    """Measure one row and print it as JSON (see the module docstring)."""
    w = torch.empty(*shape).normal_(generator=torch.Generator().manual_seed(0))
    try:
        warm = make_observer(row)  # the same code paths, on an eighth of the rows
        warm.update(w[: max(1, w.shape[0] // 8)].clone())
        warm.qparams()
        del warm
    except Exception:  # noqa: BLE001 - the measured call shows the error
        pass
    gc.collect()
    release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    start = time.perf_counter()
    error = None
    try:
        obs = make_observer(row)
        obs.update(w)
        obs.qparams()
    except Exception as err:  # noqa: BLE001 - reported in the table
        error = f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM")
    result = {"extra_bytes": (peak - before) * 1024, "input_bytes": w.numel() * 4}
    print(json.dumps({**result, "seconds": seconds, "error": error}))


def table(shape: tuple[int, int], only: str | None, threads: int) -> str:
    rows, cols = shape
    lines = [
        f"Peak extra resident memory of update(w) + qparams() on a {rows} x {cols} float32 "
        f"weight ({rows * cols * 4 / 2**20:.0f} MiB), one fresh process per row, "
        f"{threads} thread(s).",
        "",
        "| observer | peak extra MiB | x weight | seconds | goal <= 2x | note |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in ROWS:
        if only and only not in row:
            continue
        out = subprocess.run(
            [sys.executable, __file__, "--shape", f"{rows}x{cols}", "--threads", str(threads)]
            + ["--child", row],
            capture_output=True,
            text=True,
            env={**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES},
        )
        if out.returncode != 0:
            lines.append(f"| {row} | | | | | crashed: {out.stderr.strip().splitlines()[-1]} |")
            continue
        m = json.loads(out.stdout.strip().splitlines()[-1])
        multiple = m["extra_bytes"] / m["input_bytes"]
        result = "PASS" if multiple <= GOAL_PEAK else "MISS"
        lines.append(
            f"| {row} | {m['extra_bytes'] / 2**20:.1f} | {multiple:.2f} | {m['seconds']:.1f} "
            f"| {result} | {m['error'] or ''} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)  # progress: rows can take a while
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="the weight is size x size")
    parser.add_argument(
        "--shape", type=_shape, default=None, help="ROWSxCOLS, e.g. 4096x1024 (default: --size)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    parser.add_argument("--only", help="run only rows whose name contains this")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = args.shape or (args.size, args.size)
    if args.child:
        child(args.child, shape)
        return
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("needs Linux's /proc/self/clear_refs to reset the peak-RSS mark")
    print(table(shape, args.only, args.threads))


if __name__ == "__main__":
    main()
