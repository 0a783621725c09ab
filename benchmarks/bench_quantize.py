"""Speed and memory of the core helpers, side by side with PyTorch's kernels, in one run.

    python benchmarks/bench_quantize.py               # 4096 x 4096 float32, CPU
    python benchmarks/bench_quantize.py --size 1024   # a quick run

Prints two Markdown tables (see benchmarks/README.md for what each column means):

* times: the median of ``--repeats`` runs after ``--warmup`` runs, ours next to
  ``torch.quantize_per_tensor`` / ``torch.quantize_per_channel`` where PyTorch has
  a kernel, and next to a memory-bandwidth floor (bytes the operation must move,
  divided by the bandwidth of a copy of ``x`` into a ready buffer, same run);
* peak memory: the extra resident memory while one call runs, as a multiple of
  the size of ``x``, measured in a fresh subprocess per operation.

PyTorch's quantized kernels are deprecated; they serve here only as a yardstick.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from linquant_helpers import choose_qparams, dequantize, quantize  # noqa: E402

warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
warnings.filterwarnings("ignore", category=DeprecationWarning)

# Goals of issue 2 (as ours / PyTorch time, PyTorch / ours time, or peak / input).
GOAL_PER_TENSOR_SLOWDOWN = 8.0  # ours at most 8x the time of torch.quantize_per_tensor
GOAL_PER_CHANNEL_SPEEDUP = 2.0  # ours at least 2x faster than torch.quantize_per_channel
GOAL_PEAK_MEMORY = 3.0  # quantize's peak extra memory at most 3x the input


def make_input(size: int) -> torch.Tensor:
    """A seeded ``size x size`` float32 tensor, filled in place (no temporary copy)."""
    return torch.empty(size, size).normal_(generator=torch.Generator().manual_seed(0))


def median_seconds(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, float]:
    """Median wall time of each ``fn()`` over ``repeats`` rounds, after ``warmup`` rounds.

    Round-robin: each round runs every operation once, so that a burst of load
    from other processes slows ours and PyTorch's alike instead of one of them.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def operations(x: torch.Tensor) -> dict[str, tuple[Callable[[], object], int]]:
    """Every measured operation: a closure over prepared inputs, and the bytes it must move.

    The bytes are the floor: read the input once, write the output once
    (float32 = 4 bytes, int8 codes = 1 byte); qparams are negligible.
    """
    n = x.numel()
    s_t, z_t = choose_qparams(x)
    s_c, z_c = choose_qparams(x, axis=0)
    s_g64, z_g64 = choose_qparams(x, group_size=64)
    s_g128, z_g128 = choose_qparams(x, group_size=128)
    q = quantize(x, s_t, z_t)
    s_c64, z_c64 = s_c.double(), z_c.long()  # the types torch.quantize_per_channel wants
    qt = torch.quantize_per_tensor(x, float(s_t), int(z_t), torch.qint8)
    out = torch.empty_like(x).fill_(0.0)  # a buffer whose pages are already mapped
    return {
        "quantize per-tensor": (lambda: quantize(x, s_t, z_t), 5 * n),
        "torch.quantize_per_tensor": (
            lambda: torch.quantize_per_tensor(x, float(s_t), int(z_t), torch.qint8),
            5 * n,
        ),
        "quantize per-channel": (lambda: quantize(x, s_c, z_c, axis=0), 5 * n),
        "torch.quantize_per_channel": (
            lambda: torch.quantize_per_channel(x, s_c64, z_c64, 0, torch.qint8),
            5 * n,
        ),
        "quantize per-group g=64": (lambda: quantize(x, s_g64, z_g64, group_size=64), 5 * n),
        "quantize per-group g=128": (lambda: quantize(x, s_g128, z_g128, group_size=128), 5 * n),
        "dequantize per-tensor": (lambda: dequantize(q, s_t, z_t), 5 * n),
        "torch .dequantize()": (lambda: qt.dequantize(), 5 * n),
        "choose_qparams per-tensor": (lambda: choose_qparams(x), 4 * n),
        "choose_qparams per-channel": (lambda: choose_qparams(x, axis=0), 4 * n),
        "choose_qparams per-group g=128": (lambda: choose_qparams(x, group_size=128), 4 * n),
        "copy of x (bandwidth)": (lambda: out.copy_(x), 8 * n),
    }


# (ours, PyTorch's, how to compare, goal) for the rows that have a goal or a yardstick.
COMPARISONS = {
    "quantize per-tensor": ("torch.quantize_per_tensor", "slowdown", GOAL_PER_TENSOR_SLOWDOWN),
    "quantize per-channel": ("torch.quantize_per_channel", "speedup", GOAL_PER_CHANNEL_SPEEDUP),
    "dequantize per-tensor": ("torch .dequantize()", "slowdown", None),
}
# glibc otherwise raises its mmap threshold after the first big free and keeps
# freed buffers resident for reuse, so RSS would follow its heuristics rather than
# the memory the operation holds. With a fixed 64 KiB threshold every big buffer
# is its own mapping, returned to the OS when freed: RSS is the live memory.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=65536"
MEMORY_ROWS = [
    "quantize per-tensor",
    "quantize per-channel",
    "quantize per-group g=128",
    "dequantize per-tensor",
    "choose_qparams per-channel",
    "torch.quantize_per_tensor",
    "torch.quantize_per_channel",
]


def time_table(size: int, repeats: int, warmup: int) -> str:
    x = make_input(size)
    ops = operations(x)
    seconds = median_seconds({name: fn for name, (fn, _) in ops.items()}, repeats, warmup)
    bandwidth = ops["copy of x (bandwidth)"][1] / seconds["copy of x (bandwidth)"]

    rows = [
        "| operation | median ms | floor ms | x floor | PyTorch ms | ratio | goal | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, (_, nbytes) in ops.items():
        if name in (
            "torch.quantize_per_tensor",
            "torch.quantize_per_channel",
            "torch .dequantize()",
        ):
            continue  # shown in the PyTorch column of our row
        t, floor = seconds[name], nbytes / bandwidth
        theirs = ratio = goal = result = ""
        if name in COMPARISONS:
            other, kind, target = COMPARISONS[name]
            theirs = f"{seconds[other] * 1e3:.2f}"
            if kind == "slowdown":
                value = t / seconds[other]
                ratio = f"{value:.2f}x the time"
                if target is not None:
                    goal, result = f"<= {target:g}x", "PASS" if value <= target else "MISS"
            else:
                value = seconds[other] / t
                ratio = f"{value:.2f}x faster"
                goal, result = f">= {target:g}x faster", "PASS" if value >= target else "MISS"
        rows.append(
            f"| {name} | {t * 1e3:.2f} | {floor * 1e3:.2f} | {t / floor:.1f} | {theirs} | "
            f"{ratio} | {goal} | {result} |"
        )
    header = (
        f"Times: {size} x {size} float32 on the CPU, torch {torch.__version__}, "
        f"threads: {torch.get_num_threads()}, median of {repeats} rounds after {warmup} warm-up; "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s.\n\n"
    )
    return header + "\n".join(rows)


# --- peak memory, one fresh subprocess per operation ---------------------------------


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _release_free_memory() -> None:
    """Hand memory that is free but still resident back to the OS (glibc's malloc_trim).

    Otherwise a call could reuse pages freed earlier without touching new ones,
    and its peak would be undercounted.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement is a lower bound
        pass


def memory_child(name: str, size: int) -> None:
    """Run one operation once and print its peak extra resident memory as JSON.

    Everything the operation needs (x, qparams) is prepared first and one call is
    made and dropped (PyTorch initializes lazily); free memory is returned to the
    OS; then writing 5 to /proc/self/clear_refs resets the peak-RSS mark (VmHWM)
    to the current RSS, so VmHWM after the call minus VmRSS before it is the
    memory the call itself touched at its peak, result included. This sees every
    allocation, PyTorch's C++ buffers too (tracemalloc sees Python objects only).
    """
    x = make_input(size)
    fn, _ = operations(x)[name]
    fn()
    gc.collect()
    _release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    print(json.dumps({"extra_bytes": (peak - before) * 1024, "input_bytes": x.numel() * 4}))


def memory_table(size: int, threads: int) -> str:
    if not Path("/proc/self/clear_refs").exists():
        return "Peak memory: skipped (needs Linux's /proc/self/clear_refs)."
    rows = [
        "| operation | peak extra MiB | x input | goal | result |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for name in MEMORY_ROWS:
        out = subprocess.run(
            [sys.executable, __file__, "--size", str(size), "--threads", str(threads)]
            + ["--memory-child", name],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES},
        ).stdout
        m = json.loads(out.strip().splitlines()[-1])
        multiple = m["extra_bytes"] / m["input_bytes"]
        goal = result = ""
        if name.startswith("quantize "):
            goal = f"<= {GOAL_PEAK_MEMORY:g}x"
            result = "PASS" if multiple <= GOAL_PEAK_MEMORY else "MISS"
        rows.append(
            f"| {name} | {m['extra_bytes'] / 2**20:.1f} | {multiple:.2f} | {goal} | {result} |"
        )
    header = (
        f"Peak extra resident memory of one call ({size} x {size} float32 input = "
        f"{size * size * 4 / 2**20:.0f} MiB), result included.\n\n"
    )
    return header + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="x is size x size (4096)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per operation")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.size)
        return
    print(time_table(args.size, args.repeats, args.warmup))
    if not args.no_memory:
        print()
        print(memory_table(args.size, torch.get_num_threads()))


if __name__ == "__main__":
    main()
