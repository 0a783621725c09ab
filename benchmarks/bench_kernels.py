"""The weight-only layers against fp32, PyTorch's fused kernels, torchao and the bandwidth floor.

    python benchmarks/bench_kernels.py                  # 1024^2 and 4096^2, batches 1 and 8
    python benchmarks/bench_kernels.py --sweep          # the block size of the default path
    python benchmarks/bench_kernels.py --clock cpu      # a busy machine

For each batch size, one interleaved timing (``benchmarks/timing.py``) of a linear
layer of every size as fp32 ``nn.Linear``, ``W8A16Linear`` and ``Int4WeightLinear``
on their default path (dequantize a block of rows, multiply, next block:
:func:`~linquant_helpers.layers.blocked_linear`) and on their fused path
(``layer.fused = True``: :mod:`linquant_helpers.kernels`), with float32 and with
bfloat16 activations (PyTorch 2.13's x86 kernels are fast for bfloat16 only), and
torchao's weight-only equivalents when torchao is installed (in bfloat16 too where
they take it), next to a copy that measures the memory bandwidth. The tables give
each time as a multiple of fp32, of the floor (the bytes the layer must read at
the copy's bandwidth), the default path over the fused one, and ours over
torchao's. :func:`main` returns the times, so that a notebook can say which path
wins on the machine that measured them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import torchao_weight_only  # noqa: E402
from timing import CLOCKS, STATISTICS, CopyFloor, format_table, interleaved_times  # noqa: E402

from linquant_helpers import hardware  # noqa: E402
from linquant_helpers.layers import BLOCK_ELEMENTS, Int4WeightLinear, W8A16Linear  # noqa: E402
from linquant_helpers.surgery import module_nbytes  # noqa: E402

FP32 = "fp32 nn.Linear"
ROWS = (
    FP32,
    "W8A16Linear, naive",
    "W8A16Linear, fused",
    "torchao Int8WeightOnlyConfig",
    "Int4WeightLinear, naive",
    "Int4WeightLinear, fused",
    "torchao IntxWeightOnlyConfig int4",
)
"""The rows of each table, each also with bfloat16 activations where it takes them.
"naive" is the layer's default path (``fused = False``), "fused" PyTorch's kernel."""

FUSED = {
    "W8A16Linear, naive": "W8A16Linear, fused",
    "Int4WeightLinear, naive": "Int4WeightLinear, fused",
}
"""The "/ fused" column: the default path over the fused kernel (below 1: ours is faster)."""

TORCHAO = {
    "W8A16Linear, naive": "torchao Int8WeightOnlyConfig",
    "W8A16Linear, fused": "torchao Int8WeightOnlyConfig",
    "Int4WeightLinear, naive": "torchao IntxWeightOnlyConfig int4",
    "Int4WeightLinear, fused": "torchao IntxWeightOnlyConfig int4",
}
"""The "/ torchao" column: the row over torchao's layer of the same format, with the same
activations (below 1: ours is faster)."""

SAME_BYTES = {
    "W8A16Linear, fused": "W8A16Linear, naive",
    "torchao Int8WeightOnlyConfig": "W8A16Linear, naive",
    "Int4WeightLinear, fused": "Int4WeightLinear, naive",
    "torchao IntxWeightOnlyConfig int4": "Int4WeightLinear, naive",
}
"""Rows whose floor counts the bytes of the package's layer of the same format (the
kernels and torchao hold the same codes and scales, in their own layouts)."""

BF16 = " (bfloat16 x)"
"""Suffix of the rows that feed the layers bfloat16 activations (fp32 stays the baseline)."""

COPY = CopyFloor.name
COPY_SHAPE = (4096, 4096)
COPY_BYTES = 4 * COPY_SHAPE[0] * COPY_SHAPE[1]
"""The bandwidth copy moves a float32 tensor of this shape, larger than the CPU's caches."""


def sized(name: str, features: int, first: int) -> str:
    """A row's key: its name at the first size, ``name @ NxN`` at the others."""
    return name if features == first else f"{name} @ {features}x{features}"


def layers(features: int, group_size: int, seed: int = 0) -> dict[str, nn.Module]:
    """fp32 ``nn.Linear``, its quantized layers on both paths, and torchao's (if installed)."""
    torch.manual_seed(seed)
    linear = nn.Linear(features, features)
    w8_fused, int4_fused = (
        W8A16Linear.from_float(linear),
        Int4WeightLinear.from_float(linear, group_size),
    )
    w8_fused.fused = int4_fused.fused = True
    ao = torchao_weight_only(linear, group_size)
    found = {
        FP32: linear,
        "W8A16Linear, naive": W8A16Linear.from_float(linear),
        "W8A16Linear, fused": w8_fused,
        "torchao Int8WeightOnlyConfig": ao.get("int8"),
        "Int4WeightLinear, naive": Int4WeightLinear.from_float(linear, group_size),
        "Int4WeightLinear, fused": int4_fused,
        "torchao IntxWeightOnlyConfig int4": ao.get("int4"),
    }
    return {name: layer for name, layer in found.items() if layer is not None}


def weight_bytes(modules: dict[str, nn.Module]) -> dict[str, int]:
    """The bytes each row must read per call: its weights, scales and bias."""
    nbytes = {name: module_nbytes(m) for name, m in modules.items() if name not in SAME_BYTES}
    return {name: nbytes[SAME_BYTES.get(name, name)] for name in modules}


def _takes_bfloat16(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` runs on bfloat16 activations (torchao's int4 layer does not)."""
    try:
        module(x)
    except RuntimeError:
        return False
    return True


def time_batches(
    sizes: dict[int, dict[str, nn.Module]],
    batches: list[int],
    rounds: int,
    clock: str,
    statistic: str = "min",
) -> dict[int, dict[str, float]]:
    """ms of every module of every size at every batch size, with float32 activations and,
    for the quantized layers, bfloat16 ones too, and of the bandwidth copy; each batch
    size is one interleaved timing of all of them."""
    first = min(sizes)
    floor = CopyFloor(torch.randn(COPY_SHAPE, generator=torch.Generator().manual_seed(0)))
    result = {}
    with torch.inference_mode():
        for batch in batches:
            fns = {COPY: floor.copy}
            for features, modules in sizes.items():
                gen = torch.Generator().manual_seed(batch)
                x = torch.randn(batch, features, generator=gen)
                x16 = x.bfloat16()
                for name, m in modules.items():
                    fns[sized(name, features, first)] = lambda m=m, x=x: m(x)
                for name, m in modules.items():
                    if name != FP32 and _takes_bfloat16(m, x16):
                        fns[sized(name + BF16, features, first)] = lambda m=m, x=x16: m(x)
            for fn in fns.values():
                fn()  # the int4 kernel's weight is packed on its first call, not timed
            result[batch] = interleaved_times(fns, rounds, clock=clock, statistic=statistic)
    return result


def rows(
    ms: dict[str, float], features: int, first: int, nbytes: dict[str, int]
) -> list[tuple[str, ...]]:
    """The table of one size at one batch: ms, x fp32, x floor, / fused, / torchao."""

    def ratio(t: float, other: str | None, suffix: str) -> str:
        other_ms = ms.get(sized(other + suffix, features, first)) if other else None
        return "" if other_ms is None else f"{t / other_ms:.2f}"

    fp32 = ms[sized(FP32, features, first)]
    out = []
    for base in ROWS:
        for suffix in ("", BF16):
            name = sized(base + suffix, features, first)
            if name not in ms:
                continue
            t = ms[name]
            out.append(
                (
                    base + suffix,
                    f"{t:.3f}",
                    f"{t / fp32:.2f}x",
                    f"{t / floor_ms(ms, nbytes[base]):.1f}x",
                    ratio(t, FUSED.get(base), suffix),
                    ratio(t, TORCHAO.get(base), suffix),
                )
            )
    return out


def floor_ms(ms: dict[str, float], nbytes: int) -> float:
    """Milliseconds to read ``nbytes`` at the bandwidth of the copy timed with the rows
    (a copy reads and writes its bytes: ``2 * COPY_BYTES`` moved in ``ms[COPY]``)."""
    return nbytes * ms[COPY] / (2 * COPY_BYTES)


def memory_bound(
    features: int = 4096, batch: int = 1, rounds: int = 5, group_size: int = 32
) -> dict[str, dict[str, float]]:
    """A layer limited by reading its weight, as lesson 07 shows it: fp32 ``nn.Linear``,
    ``W8A16Linear`` and ``Int4WeightLinear`` on their default path, and ``W8A16Linear``'s
    fused kernel with bfloat16 activations, timed in interleaved rounds (best round, CPU
    clock) with the bandwidth copy. Returns ``{"ms": ..., "bytes": ..., "floor_ms": ...}``,
    each ``{row: value}``; the floor is the row's bytes at the copy's bandwidth."""
    torch.manual_seed(0)
    linear = nn.Linear(features, features)
    w8, int4 = W8A16Linear.from_float(linear), Int4WeightLinear.from_float(linear, group_size)
    fused = W8A16Linear.from_float(linear)
    fused.fused = True
    x = torch.randn(batch, features, generator=torch.Generator().manual_seed(batch))
    x16 = x.bfloat16()
    copy = CopyFloor(torch.randn(COPY_SHAPE, generator=torch.Generator().manual_seed(0)))
    modules = {FP32: linear, "W8A16Linear": w8, "Int4WeightLinear": int4}
    fns = {name: (lambda m=m: m(x)) for name, m in modules.items()}
    fns["W8A16Linear, fused" + BF16] = lambda: fused(x16)
    fns[COPY] = copy.copy
    with torch.inference_mode():
        ms = interleaved_times(fns, rounds, clock="cpu", statistic="min")
    nbytes = {name: module_nbytes(m) for name, m in modules.items()}
    nbytes["W8A16Linear, fused" + BF16] = nbytes["W8A16Linear"]
    return {
        "ms": {name: t for name, t in ms.items() if name != COPY},
        "bytes": nbytes,
        "floor_ms": {name: floor_ms(ms, n) for name, n in nbytes.items()},
    }


def sweep(
    features_list: list[int],
    batches: list[int],
    group_size: int,
    rounds: int,
    clock: str,
    statistic: str,
    blocks: list[int],
) -> dict[tuple[int, int], dict[str, float]]:
    """Time the default path of both layers at each ``block_elements``, with fp32, per size and
    batch (one interleaved timing each); print the times as multiples of fp32."""
    result = {}
    with torch.inference_mode():
        for features in features_list:
            torch.manual_seed(0)
            linear = nn.Linear(features, features)
            w8, int4 = (
                W8A16Linear.from_float(linear),
                Int4WeightLinear.from_float(linear, group_size),
            )
            for batch in batches:
                x = torch.randn(batch, features, generator=torch.Generator().manual_seed(batch))
                fns = {FP32: lambda x=x, linear=linear: linear(x)}
                for name, layer in (("W8A16Linear", w8), ("Int4WeightLinear", int4)):
                    for block in blocks:

                        def run(layer=layer, block=block, x=x):
                            layer.block_elements = block
                            return layer(x)

                        fns[f"{name}, block {block}"] = run
                ms = interleaved_times(fns, rounds, clock=clock, statistic=statistic)
                result[features, batch] = ms
                title = (
                    f"\nblock sweep, {features} x {features} at batch {batch} ({statistic} ms over "
                    f"{rounds} rounds); block = weights dequantized at a time, rows = block / "
                    f"{features}"
                )
                table = [(name, f"{t:.3f}", f"{t / ms[FP32]:.2f}x") for name, t in ms.items()]
                print(format_table(title, ("row", "ms", "x fp32"), table))
    w8.block_elements = int4.block_elements = BLOCK_ELEMENTS
    return result


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    """Print one table per size and batch; return ``{batch: {row: ms}}`` (rows of the
    sizes after the first are named ``row @ NxN``; the bandwidth copy is a row too)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--features", type=int, nargs="+", default=[1024, 4096], help="N x N layers (1024 4096)"
    )
    parser.add_argument("--group-size", type=int, default=32, help="Int4WeightLinear's (32)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (15)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall", help="cpu: busy machines")
    parser.add_argument(
        "--statistic", choices=STATISTICS, default="min", help="of the rounds (min: the best)"
    )
    parser.add_argument(
        "--sweep", action="store_true", help="time the default path at several block sizes"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.clock} clock, "
        f"{args.statistic} of {args.rounds} interleaved rounds, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}; {hardware.describe_cpu()}"
    )
    if args.sweep:
        blocks = [1 << p for p in range(16, 23)]
        sweep(args.features, args.batches, args.group_size, args.rounds, args.clock,
              args.statistic, blocks)  # fmt: skip
        return {}
    features = sorted(set(args.features))
    sizes = {f: layers(f, args.group_size) for f in features}
    ms = time_batches(sizes, args.batches, args.rounds, args.clock, args.statistic)
    header = ("layer", "ms", "x fp32", "x floor", "/ fused", "/ torchao")
    for batch, times in ms.items():
        bandwidth = 2 * COPY_BYTES / times[COPY] / 1e6
        for f in features:
            title = (
                f"\n{f} x {f} at batch {batch} ({args.statistic} ms; floor: the layer's bytes at "
                f"the copy's {bandwidth:.1f} GB/s)"
            )
            print(format_table(title, header, rows(times, f, features[0], weight_bytes(sizes[f]))))
    return ms


if __name__ == "__main__":
    main()
