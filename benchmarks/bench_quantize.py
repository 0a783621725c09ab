"""Speed and memory of the core helpers, side by side with PyTorch and torchao, in one run.

    python benchmarks/bench_quantize.py               # 4096 x 4096 float32, CPU
    python benchmarks/bench_quantize.py --size 1024   # a quick run
    python benchmarks/bench_quantize.py --baseline old_affine.py   # before / after
    python benchmarks/bench_quantize.py --device cuda --size 16384 --no-memory   # a GPU

Prints two Markdown tables (see benchmarks/README.md for what each column means):

* times: the median (or ``--statistic min``: the best) over interleaved rounds
  (:mod:`timing`) of quantize per tensor, per channel and per group of 64, eager
  and under ``torch.compile``, next to ``torch.quantize_per_tensor`` /
  ``torch.quantize_per_channel`` and torchao's ``quantize_affine`` (when
  installed), each as a multiple of the
  memory-bandwidth floor (bytes the operation must move at the bandwidth of a
  copy into a ready buffer, same rounds);
* peak memory: the extra resident memory while one call runs, as a multiple of
  the size of ``x``, measured in a fresh subprocess per operation.

PyTorch's quantized kernels are deprecated; they serve here only as a yardstick.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import (  # noqa: E402
    CLOCKS,
    STATISTICS,
    CopyFloor,
    interleaved_times,
    optional_torchao,
    release_free_memory,
    status_kib,
    timer,
)

from linquant_helpers import choose_qparams, dequantize, quantize  # noqa: E402

warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
warnings.filterwarnings("ignore", category=DeprecationWarning)

# Speed goals, as multiples of the memory-bandwidth floor.
GOAL_EAGER = 2.0  # eager quantize, every granularity, on the CPU
GOAL_COMPILED = 1.3  # quantize under torch.compile, on the CPU
GOAL_COMPILED_GPU = 1.25  # on a GPU: at least 80% of the floor's bandwidth (1 / 0.8)
GOAL_PEAK_MEMORY = 3.0  # quantize's peak extra memory at most 3x the input

GRANULARITIES = {"per-tensor": {}, "per-channel": {"axis": 0}, "per-group g=64": {"group_size": 64}}


class Op(NamedTuple):
    """A timed operation: a closure over prepared inputs and the bytes it must move.

    ``pytorch`` / ``torchao`` name the rows it is compared with; ``goal`` is
    its goal as a multiple of the floor (None: no goal).
    """

    fn: Callable[[], object]
    nbytes: int
    pytorch: str | None = None
    torchao: str | None = None
    goal: float | None = None


def make_input(size: int, device: str = "cpu") -> torch.Tensor:
    """A seeded ``size x size`` float32 tensor on ``device``, filled in place (no copy)."""
    generator = torch.Generator(device).manual_seed(0)
    return torch.empty(size, size, device=device).normal_(generator=generator)


def load_baseline(path: str) -> Callable[..., torch.Tensor]:
    """``quantize`` of another version of ``linquant_helpers/affine.py`` (e.g. from git)."""
    spec = importlib.util.spec_from_file_location("linquant_helpers._baseline_affine", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.quantize


def torchao_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, kw: dict):
    """torchao's ``quantize_affine`` on the same qparams, as a closure (a yardstick only).

    torchao's block_size: the whole tensor, one row, or 64 elements of a row.
    (torchao rounds before adding the zero point, so a few codes may differ.)
    """
    from torchao.quantization.quant_primitives import quantize_affine

    rows, cols = x.shape
    block = (1, cols) if "axis" in kw else (1, kw["group_size"]) if "group_size" in kw else x.shape
    s = scale.reshape(rows // block[0], cols // block[1])
    z = zero_point.reshape(s.shape)
    return lambda: quantize_affine(x, block, s, z, torch.int8, -128, 127)


def compiled(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``torch.compile(fn)``, a fresh compilation per wrapper."""
    return torch.compile(fn, dynamic=False)


def operations(
    x: torch.Tensor,
    *,
    compile_: bool = False,
    baseline: Callable[..., torch.Tensor] | None = None,
    torchao: bool = False,
) -> dict[str, Op]:
    """Every measured operation. The floor is read x once, write the result once
    (float32 = 4 bytes, int8 codes = 1 byte); qparams are negligible."""
    n = x.numel()
    floor = CopyFloor(x)
    ops = {floor.name: Op(floor.copy, 8 * n)}
    # torchao's eager quantize_affine writes several 64 MiB temporaries per call; a row timed
    # right after it ran up to 2x slower (the same compiled code: 4.1x vs 2.0x the floor,
    # three runs), so those rows go last, after the rows that are compared with them.
    last = {}
    on_cpu = x.device.type == "cpu"
    for label, kw in GRANULARITIES.items():
        s, z = choose_qparams(x, **kw)
        pytorch = {
            "per-tensor": "torch.quantize_per_tensor",
            "per-channel": "torch.quantize_per_channel",
        }.get(label)
        modes = {"eager": (quantize, GOAL_EAGER if on_cpu else None)}
        if compile_:
            modes["compiled"] = (compiled(quantize), GOAL_COMPILED if on_cpu else GOAL_COMPILED_GPU)
        for mode, (fn, goal) in modes.items():
            ao = f"torchao quantize_affine {label}, {mode}" if torchao else None
            ops[f"quantize {label}, {mode}"] = Op(
                lambda fn=fn, s=s, z=z, kw=kw: fn(x, s, z, **kw), 5 * n, pytorch, ao, goal
            )
            if baseline is not None:
                base = baseline if mode == "eager" else compiled(baseline)
                ops[f"baseline quantize {label}, {mode}"] = Op(
                    lambda fn=base, s=s, z=z, kw=kw: fn(x, s, z, **kw), 5 * n, pytorch, ao
                )
            if torchao:
                ao_fn = torchao_quantize(x, s, z, kw)
                if mode == "eager":
                    last[ao] = Op(ao_fn, 5 * n)
                else:
                    ops[ao] = Op(_compiled_closure(ao_fn), 5 * n)
    s_t, z_t = choose_qparams(x)
    s_c, z_c = choose_qparams(x, axis=0)
    s_c64, z_c64 = s_c.double(), z_c.long()  # the types torch.quantize_per_channel wants
    s_g128, z_g128 = choose_qparams(x, group_size=128)
    q = quantize(x, s_t, z_t)
    s_float, z_int = float(s_t), int(z_t)  # read once: on a GPU each read waits for it
    pytorch_rows = {
        "torch.quantize_per_tensor": lambda: torch.quantize_per_tensor(
            x, s_float, z_int, torch.qint8
        ),
        "torch.quantize_per_channel": lambda: torch.quantize_per_channel(
            x, s_c64, z_c64, 0, torch.qint8
        ),
    }
    ops |= {name: Op(fn, 5 * n) for name, fn in pytorch_rows.items() if _runs(fn)}
    if "torch.quantize_per_tensor" in ops:
        qt = pytorch_rows["torch.quantize_per_tensor"]()
        ops["torch .dequantize()"] = Op(lambda: qt.dequantize(), 5 * n)
    ops |= {
        "quantize per-group g=128, eager": Op(
            lambda: quantize(x, s_g128, z_g128, group_size=128), 5 * n
        ),
        "dequantize per-tensor": Op(lambda: dequantize(q, s_t, z_t), 5 * n, "torch .dequantize()"),
        "choose_qparams per-tensor": Op(lambda: choose_qparams(x), 4 * n),
        "choose_qparams per-channel": Op(lambda: choose_qparams(x, axis=0), 4 * n),
        "choose_qparams per-group g=128": Op(lambda: choose_qparams(x, group_size=128), 4 * n),
    }
    return ops | last


def _runs(fn: Callable[[], object]) -> bool:
    """Whether a PyTorch yardstick runs here: its quantized kernels are deprecated
    and not built for every device; a row that cannot run is left out."""
    try:
        fn()
    except (NotImplementedError, RuntimeError):
        return False
    return True


def _compiled_closure(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A no-argument closure, compiled (torchao's quantize_affine under torch.compile)."""
    return torch.compile(fn, dynamic=False)


# glibc otherwise raises its mmap threshold after the first big free and keeps
# freed buffers resident for reuse, so RSS would follow its heuristics rather than
# the memory the operation holds. With a fixed 64 KiB threshold every big buffer
# is its own mapping, returned to the OS when freed: RSS is the live memory.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=65536"

# --reuse-memory: the opposite for the times table. glibc gives each allocation above
# its mmap threshold (32 MiB at most) fresh pages, which the kernel zeroes on first
# touch, and smaller ones fresh or recycled pages depending on what was freed before.
# With no mmap and no trimming, every call gets recycled pages: the arithmetic alone.
REUSE_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"

MEMORY_ROWS = [
    "quantize per-tensor, eager",
    "quantize per-channel, eager",
    "quantize per-group g=64, eager",
    "dequantize per-tensor",
    "choose_qparams per-channel",
    "torch.quantize_per_tensor",
    "torch.quantize_per_channel",
]


def _allocations() -> str:
    """How this process's big allocations get their pages (see REUSE_TUNABLES)."""
    if os.environ.get("GLIBC_TUNABLES") == REUSE_TUNABLES:
        return "allocations reuse freed pages (--reuse-memory)"
    return "allocations get fresh or reused pages as the C library decides"


def _ratio(ours: float, theirs: float | None) -> str:
    return "" if theirs is None else f"{ours / theirs:.2f}"


def time_table(
    size: int,
    rounds: int,
    compile_: bool,
    baseline: str | None,
    clock: str,
    statistic: str = "median",
    device: str = "cpu",
) -> str:
    x = make_input(size, device)
    ao = optional_torchao() is not None
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    ops = operations(
        x, compile_=compile_, baseline=load_baseline(baseline) if baseline else None, torchao=ao
    )
    fns = {name: op.fn for name, op in ops.items()}
    ms = interleaved_times(fns, rounds, clock=clock, statistic=statistic, device=device)
    floor = CopyFloor(x)
    copy_ms = ms[floor.name]
    rows = [
        f"| operation | {statistic} ms | x floor | / PyTorch | / torchao | goal | result |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, op in ops.items():
        t = ms[name]
        ratio = t / floor.floor_ms(op.nbytes, copy_ms)
        goal = result = ""
        if op.goal is not None:
            goal, result = f"<= {op.goal:g}x floor", "PASS" if ratio <= op.goal else "MISS"
        rows.append(
            f"| {name} | {t:.2f} | {ratio:.2f} | {_ratio(t, ms.get(op.pytorch))} | "
            f"{_ratio(t, ms.get(op.torchao))} | {goal} | {result} |"
        )
    where = (
        f"the CPU ({torch.backends.cpu.get_cpu_capability()})"
        if x.device.type == "cpu"
        else f"{x.device} ({torch.cuda.get_device_name(x.device)})"
    )
    header = (
        f"Times: {size} x {size} float32 on {where}, "
        f"torch {torch.__version__}, threads: {torch.get_num_threads()}, {statistic} of {rounds} "
        f"interleaved rounds of {clock} time; "
        f"copy bandwidth {floor.bandwidth(copy_ms) / 1e6:.1f} GB/s; "
        f"{_allocations()}"
        f"{'' if ao else '; torchao not installed, its rows left out'}.\n\n"
    )
    return header + "\n".join(rows)


# --- peak memory, one fresh subprocess per operation ---------------------------------


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
    fn = operations(x)[name].fn
    fn()
    gc.collect()
    release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    result = fn()
    peak = status_kib("VmHWM")
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
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (15)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--clock", choices=CLOCKS, default="wall", help="wall or cpu time (cpu: busy machines)"
    )
    parser.add_argument(
        "--statistic",
        choices=STATISTICS,
        default="median",
        help="median or min (the best round: neighbours sharing memory bandwidth) of the rounds",
    )
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument(
        "--baseline", help="another affine.py (e.g. `git show REV:linquant_helpers/affine.py`)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (default) or cuda: time there, with the floor of a copy there",
    )
    parser.add_argument(
        "--reuse-memory",
        action="store_true",
        help="every call gets recycled pages from glibc, never fresh ones (Linux, glibc)",
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reuse_memory and platform.libc_ver()[0] != "glibc":
        parser.error("--reuse-memory sets glibc's tunables: it needs Linux with glibc")
    if args.reuse_memory and os.environ.get("GLIBC_TUNABLES") != REUSE_TUNABLES:
        # glibc reads its tunables when a process starts: start this script again with them
        env = {**os.environ, "GLIBC_TUNABLES": REUSE_TUNABLES}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.size)
        return
    try:
        timer(args.device, args.clock)  # a device or clock it cannot time, before anything runs
    except (ValueError, RuntimeError) as err:
        parser.error(str(err))
    table = time_table(
        args.size,
        args.rounds,
        not args.no_compile,
        args.baseline,
        args.clock,
        args.statistic,
        args.device,
    )
    print(table)
    if torch.device(args.device).type != "cpu":
        print("\nPeak memory: skipped (it reads the process's resident memory: CPU only).")
    elif not args.no_memory:
        print()
        print(memory_table(args.size, torch.get_num_threads()))


if __name__ == "__main__":
    main()
