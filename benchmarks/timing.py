"""The one timer and the one memory-bandwidth floor of the benchmark scripts.

* :func:`interleaved_times` times every candidate in interleaved rounds, so
  that load from other processes slows them alike, and keeps the median (or
  the best) round.
* :class:`CopyFloor` is the floor: the time to move ``n`` bytes at the
  bandwidth of copying a tensor into a buffer allocated (and touched) once in
  advance. A copy into a fresh allocation would also pay the first-touch page
  faults of the new buffer, several times the copy itself on 64 MiB.
* :func:`optional_torchao` imports torchao when it is installed (the
  ``runtimes`` extra), for comparison rows that are otherwise left out.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

Row = tuple[str, ...]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed time. ``cpu``: the CPU time of this process (all its threads),
which leaves out the time other processes hold the cores: steadier on a busy
machine, and equal to wall time on an idle one when torch runs one thread."""


STATISTICS = {"median": statistics.median, "min": min}
"""How the rounds of one function become its time. ``median``: the typical round.
``min``: the best round, the time the code takes when nothing else gets in its
way; steadier than the median where other machines' jobs share the memory
bandwidth in bursts longer than a round (a VM's neighbours)."""


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    block_s: float = 0.02,
    clock: str = "wall",
    statistic: str = "median",
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Milliseconds per call of each function, measured in interleaved rounds.

    Each round times a short block of calls of every function in turn, so a burst
    of load from other processes slows all of them alike instead of one, and the
    median (or min) over rounds drops the disturbed blocks. The number of calls per
    block is set once per function from a warm-up call (which also compiles, for
    ``torch.compile``'d functions). ``clock`` is a key of :data:`CLOCKS`,
    ``statistic`` one of :data:`STATISTICS`.

    On a CUDA ``device`` the calls only queue kernels: the clock is read after
    ``torch.cuda.synchronize()``, so a block's time is the GPU's, and only the
    wall clock measures it.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}")
    now = timer(device, clock)
    calls = {}
    for name, fn in fns.items():
        fn()  # warm-up: first-call allocations, lazy initialization, compilation
        start = now()
        fn()
        calls[name] = max(1, round(block_s / max(now() - start, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, fn in fns.items():
                start = now()
                for _ in range(calls[name]):
                    fn()
                times[name].append((now() - start) / calls[name] * 1e3)
    return {name: STATISTICS[statistic](t) for name, t in times.items()}


def device_sync(device: torch.device | str) -> Callable[[], None] | None:
    """What waits for ``device``'s queued work: ``torch.cuda.synchronize`` on CUDA,
    None on the CPU (its calls return when they are done)."""
    device = torch.device(device)
    if device.type == "cpu":
        return None
    if device.type == "cuda" and torch.cuda.is_available():
        return lambda: torch.cuda.synchronize(device)
    raise ValueError(f"device must be the CPU or a CUDA device present here, got {str(device)!r}")


def timer(device: torch.device | str, clock: str = "wall") -> Callable[[], float]:
    """The clock :func:`interleaved_times` reads for work on ``device``: ``CLOCKS[clock]``,
    read after :func:`device_sync` on a GPU. Raises ``ValueError`` for a device it
    cannot time, and for the CPU clock on a GPU (it leaves out the GPU's time)."""
    sync = device_sync(device)
    if sync is None:
        return CLOCKS[clock]
    if clock != "wall":
        raise ValueError(f"clock must be 'wall' on {device}: the CPU time leaves out the GPU's")

    def now() -> float:
        sync()
        return CLOCKS[clock]()

    return now


class CopyFloor:
    """The memory-bandwidth floor, from a copy of ``x`` into a ready buffer.

    Time :attr:`copy` with the other candidates (same rounds), then
    :meth:`floor_ms` turns a byte count into the time it takes at that copy's
    bandwidth: ``floor = bytes / (2 * x.nbytes / copy_ms)`` (a copy reads and
    writes ``x.nbytes`` each).
    """

    name = "copy x into a ready buffer (bandwidth)"

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.out = torch.empty_like(x).fill_(0)  # allocated and touched once, not per call

    def copy(self) -> torch.Tensor:
        return self.out.copy_(self.x)

    def bandwidth(self, copy_ms: float) -> float:
        """Bytes per millisecond of the copy."""
        return 2 * self.x.nbytes / copy_ms

    def floor_ms(self, nbytes: int, copy_ms: float) -> float:
        """Milliseconds to move ``nbytes`` at the copy's bandwidth."""
        return nbytes / self.bandwidth(copy_ms)


def optional_torchao() -> ModuleType | None:
    """``torchao`` if it is installed (``pip install -e ".[runtimes]"``), else None.

    Its import reports optional CUDA extensions it cannot load on a CPU machine;
    that output is silenced.
    """
    for logger in ("torchao", "torch.utils._pytree"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            import torchao
            import torchao.quantization  # noqa: F401
    except ImportError:
        return None
    return torchao


def format_table(title: str, header: Row, rows: list[Row]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Row) -> str:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([title, line(header), *map(line, rows)])


# --- peak memory (one fresh process per measured operation) -------------------------


def status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def release_free_memory() -> None:
    """Hand memory that is free but still resident back to the OS (glibc's malloc_trim).

    Otherwise a call could reuse pages freed earlier without touching new ones,
    and its peak would be undercounted.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement is a lower bound
        pass
