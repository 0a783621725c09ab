"""Naive dequantize-then-matmul against PyTorch's fused weight-only kernels, in one run.

    python benchmarks/bench_kernels.py                 # 1024 x 1024, batches 1, 8, 64
    python benchmarks/bench_kernels.py --clock cpu     # a busy machine

For each batch size, one interleaved timing (``benchmarks/timing.py``) of a
linear layer as fp32 ``nn.Linear``, ``W8A16Linear`` and ``Int4WeightLinear`` on
their default path (write a float weight, then ``F.linear``) and on their
fused path (``layer.fused = True``: :mod:`linquant_helpers.kernels`), with
float32 and with bfloat16 activations (PyTorch 2.13's x86 kernels are fast for
bfloat16 only), and torchao's weight-only equivalents when torchao is installed
(in bfloat16 too where they take it). The table gives
each time as a multiple of fp32, the fused path over the naive one, and ours
over torchao's. :func:`main` returns the times, so that a notebook can say
which path wins on the machine that measured them.
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
from timing import CLOCKS, format_table, interleaved_times  # noqa: E402

from linquant_helpers import hardware  # noqa: E402
from linquant_helpers.layers import Int4WeightLinear, W8A16Linear  # noqa: E402

ROWS = {
    "fp32 nn.Linear": None,
    "W8A16Linear, naive": "W8A16Linear, fused",
    "W8A16Linear, fused": "torchao Int8WeightOnlyConfig",
    "torchao Int8WeightOnlyConfig": None,
    "Int4WeightLinear, naive": "Int4WeightLinear, fused",
    "Int4WeightLinear, fused": "torchao IntxWeightOnlyConfig int4",
    "torchao IntxWeightOnlyConfig int4": None,
}
"""Each row, and the row its "vs" column divides by (the fused row, or torchao's)."""


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
        "fp32 nn.Linear": linear,
        "W8A16Linear, naive": W8A16Linear.from_float(linear),
        "W8A16Linear, fused": w8_fused,
        "torchao Int8WeightOnlyConfig": ao.get("int8"),
        "Int4WeightLinear, naive": Int4WeightLinear.from_float(linear, group_size),
        "Int4WeightLinear, fused": int4_fused,
        "torchao IntxWeightOnlyConfig int4": ao.get("int4"),
    }
    return {name: layer for name, layer in found.items() if layer is not None}


BF16 = " (bfloat16 x)"
"""Suffix of the rows that feed the layers bfloat16 activations (fp32 stays the baseline)."""


def time_batches(
    modules: dict[str, nn.Module], features: int, batches: list[int], rounds: int, clock: str
) -> dict[int, dict[str, float]]:
    """Median ms of every module at every batch size, with float32 activations and, for the
    quantized layers, bfloat16 ones too; each batch size is one interleaved timing."""
    result = {}
    with torch.inference_mode():
        for batch in batches:
            x = torch.randn(batch, features, generator=torch.Generator().manual_seed(batch))
            x16 = x.bfloat16()
            fns = {name: (lambda m=m, x=x: m(x)) for name, m in modules.items()}
            fns |= {
                name + BF16: (lambda m=m, x16=x16: m(x16))
                for name, m in modules.items()
                if name != "fp32 nn.Linear" and _takes_bfloat16(m, x16)
            }
            for fn in fns.values():
                fn()  # the int4 kernel's weight is packed on its first call, not timed
            result[batch] = interleaved_times(fns, rounds, clock=clock)
    return result


def _takes_bfloat16(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` runs on bfloat16 activations (torchao's int4 layer does not)."""
    try:
        module(x)
    except RuntimeError:
        return False
    return True


def rows(ms: dict[str, float]) -> list[tuple[str, ...]]:
    fp32 = ms["fp32 nn.Linear"]
    out = []
    for name, t in ms.items():
        base, bf16 = name.removesuffix(BF16), name.endswith(BF16)
        other = ROWS.get(base) or ""
        other = ms.get(other + BF16 if bf16 else other)
        out.append(
            (name, f"{t:.3f}", f"{t / fp32:.2f}x", "" if other is None else f"{t / other:.2f}")
        )
    return out


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    """Print one table per batch size; return ``{batch: {row: median ms}}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1024, help="the layer is N x N (1024)")
    parser.add_argument("--group-size", type=int, default=32, help="Int4WeightLinear's (32)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (15)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall", help="cpu: busy machines")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.clock} clock, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}; {hardware.describe_cpu()}"
    )
    modules = layers(args.features, args.group_size)
    ms = time_batches(modules, args.features, args.batches, args.rounds, args.clock)
    header = ("layer", "ms", "x fp32", "vs")
    for batch, times in ms.items():
        title = (
            f"\n{args.features} x {args.features} at batch {batch} (median ms; 'vs': naive / "
            "fused, and fused / torchao)"
        )
        print(format_table(title, header, rows(times)))
    return ms


if __name__ == "__main__":
    main()
