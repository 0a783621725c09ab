"""Size and speed of quantized inference on this machine, measured side by side in one run.

    python benchmarks/bench_inference.py            # about half a minute
    python benchmarks/bench_inference.py --quick    # fewer rounds (notebook 07 runs this)

Four tables:

1. bytes held by a 1024 x 1024 linear layer: fp32, int8 (W8A16, W8A8), packed int4;
2. the overhead of the weight-only layers at batch 1, as multiples of fp32
   ``nn.Linear``: the package's layers, their readable path (``F.linear`` with
   ``dequantized_weight()``), and torchao's weight-only equivalents when torchao
   is installed (``pip install -e ".[runtimes]"``);
3. latency of that layer at batch 64: fp32 ``nn.Linear``, the bare int8 matmul
   on both of ``int8_matmul``'s paths (``torch._int_mm``, and the exact float32
   matmul on the codes; the table says which one this CPU takes, and whether
   ``torch._int_mm`` is exact here), PyTorch's dynamic int8 ``Linear`` (a comparison only:
   ``torch.ao.quantization`` is deprecated and never used by the package), and
   the package's three layers, with the W8A8 forward split into its steps;
4. the quantize step on a 4096 x 4096 tensor: the package's eager ``quantize``,
   ``torch.compile``, ``torch.quantize_per_tensor``, against the memory-bandwidth
   floor (bytes moved / measured copy bandwidth).

Timings are medians over interleaved rounds (``benchmarks/timing.py``, shared
with ``bench_quantize.py``, as is the floor):
on a shared CPU the times move from run to run, the ratios much less.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import (  # noqa: E402
    CLOCKS,
    CopyFloor,
    Row,
    format_table,
    interleaved_times,
    optional_torchao,
)

from linquant_helpers import choose_qparams, dequantize, hardware, quantize  # noqa: E402
from linquant_helpers.integer_ops import int8_matmul, requantize  # noqa: E402
from linquant_helpers.layers import Int4WeightLinear, W8A8Linear, W8A16Linear  # noqa: E402
from linquant_helpers.surgery import module_nbytes  # noqa: E402


def make_layers(features: int, batch: int, group_size: int, seed: int = 0) -> dict[str, object]:
    """A float ``nn.Linear``, its three quantized versions and an input batch."""
    torch.manual_seed(seed)
    linear = nn.Linear(features, features)
    x = torch.randn(batch, features)
    with torch.no_grad():
        qparams_in, qparams_out = choose_qparams(x), choose_qparams(linear(x))
    return {
        "linear": linear,
        "x": x,
        "w8a16": W8A16Linear.from_float(linear),
        "w8a8": W8A8Linear.from_float(linear, qparams_in, qparams_out),
        "int4": Int4WeightLinear.from_float(linear, group_size),
    }


def size_rows(layers: dict[str, object], group_size: int) -> list[Row]:
    fp32 = module_nbytes(layers["linear"])
    sizes = {
        "fp32 nn.Linear": fp32,
        "W8A16Linear (int8 codes + scales)": module_nbytes(layers["w8a16"]),
        "W8A8Linear (int8 codes + int32 terms)": module_nbytes(layers["w8a8"]),
        f"Int4WeightLinear (packed, group_size={group_size})": module_nbytes(layers["int4"]),
    }
    return [(name, f"{n:,}", f"{fp32 / n:.2f}x") for name, n in sizes.items()]


def torchao_weight_only(linear: nn.Linear, group_size: int) -> dict[str, nn.Module]:
    """torchao's int8 and int4 weight-only versions of ``linear``; empty without torchao."""
    if optional_torchao() is None:
        return {}
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    configs = {
        "int8": Int8WeightOnlyConfig(),
        "int4": IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size)),
    }
    layers = {}
    for name, config in configs.items():
        model = nn.Sequential(copy.deepcopy(linear))
        quantize_(model, config)
        layers[name] = model
    return layers


def overhead_rows(
    layers: dict[str, object], group_size: int, rounds: int, clock: str = "wall"
) -> list[Row]:
    """Batch-1 latency of the weight-only layers as multiples of fp32, next to torchao's."""
    linear, w8a16, int4 = layers["linear"], layers["w8a16"], layers["int4"]
    x = layers["x"][:1]
    ao = torchao_weight_only(linear, group_size)

    def readable(layer: nn.Module) -> Callable[[], torch.Tensor]:
        return lambda: F.linear(x, layer.dequantized_weight(), layer.bias)

    fns = {
        "fp32 nn.Linear": lambda: linear(x),
        "W8A16Linear": lambda: w8a16(x),
        "  readable path (dequantize per call)": readable(w8a16),
    }
    if "int8" in ao:
        fns["torchao Int8WeightOnlyConfig"] = lambda: ao["int8"](x)
    fns |= {
        f"Int4WeightLinear (group_size={group_size})": lambda: int4(x),
        "  readable path (unpack, dequantize per call)": readable(int4),
    }
    if "int4" in ao:
        fns[f"torchao IntxWeightOnlyConfig (int4, group {group_size})"] = lambda: ao["int4"](x)
    ms = interleaved_times(fns, rounds, clock=clock)
    fp32 = ms["fp32 nn.Linear"]
    theirs = {"W8A16Linear": "torchao Int8WeightOnlyConfig"}
    theirs[f"Int4WeightLinear (group_size={group_size})"] = next(
        (name for name in ms if name.startswith("torchao Intx")), ""
    )
    rows = []
    for name, t in ms.items():
        other = ms.get(theirs.get(name, ""))
        rows.append(
            (name, f"{t:.3f}", f"{t / fp32:.2f}x", "" if other is None else f"{t / other:.2f}")
        )
    return rows


def dynamic_int8(linear: nn.Linear) -> nn.Module | None:
    """PyTorch's dynamic int8 Linear, for comparison only; None if this build lacks it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated
        try:
            return torch.ao.quantization.quantize_dynamic(
                nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8
            )
        except (AttributeError, RuntimeError) as err:
            print(f"(PyTorch's dynamic int8 Linear is unavailable: {err})")
            return None


INT_MM_ROW = "int8 matmul: torch._int_mm"
FLOAT32_ROW = "int8 matmul: exact float32 path"


def latency_ms(layers: dict[str, object], rounds: int, clock: str = "wall") -> dict[str, float]:
    linear, x, w8a8, int4 = layers["linear"], layers["x"], layers["w8a8"], layers["int4"]
    q_x = quantize(x, w8a8.input_scale, w8a8.input_zero_point)
    q_w_t = w8a8.weight_q.t()
    acc = int8_matmul(q_x, q_w_t) + w8a8.offset
    q_y = w8a8.forward_int(q_x)
    fns = {"fp32 nn.Linear": lambda: linear(x)}
    for path, label in ((hardware.INT_MM, INT_MM_ROW), (hardware.FLOAT32, FLOAT32_ROW)):
        fns[label] = lambda path=path: int8_matmul(q_x, q_w_t, path=path)
    dynamic = dynamic_int8(linear)
    if dynamic is not None:
        fns["PyTorch dynamic int8 Linear"] = lambda: dynamic(x)
    fns |= {
        "W8A16Linear": lambda: layers["w8a16"](x),
        "W8A8Linear (float in, float out)": lambda: w8a8(x),
        "  1. quantize x": lambda: quantize(x, w8a8.input_scale, w8a8.input_zero_point),
        "  2. int8 matmul + offset": lambda: int8_matmul(q_x, q_w_t) + w8a8.offset,
        "  3. requantize (int64 multiply, shift)": lambda: requantize(acc, w8a8.m0, w8a8.shift),
        "  4. dequantize y": lambda: dequantize(q_y, w8a8.output_scale, w8a8.output_zero_point),
        "W8A8Linear.forward_int (int8 in, int8 out)": lambda: w8a8.forward_int(q_x),
        "Int4WeightLinear": lambda: int4(x),
        "  unpack the int4 weight alone": lambda: int4.weight_codes(),
    }
    return interleaved_times(fns, rounds, clock=clock)


def latency_rows(ms: dict[str, float]) -> list[Row]:
    fp32 = ms["fp32 nn.Linear"]
    path = hardware.int8_matmul_path()
    taken = {hardware.INT_MM: INT_MM_ROW, hardware.FLOAT32: FLOAT32_ROW}[path]
    return [
        (name + (" <- W8A8's path here" if name == taken else ""), f"{t:.3f}", f"{fp32 / t:.2f}x")
        for name, t in ms.items()
    ]


def quantize_one_expression(x: torch.Tensor, inv_scale: float, zero_point: int) -> torch.Tensor:
    """The quantize formula as one expression, without checks or blocks: what we compile."""
    return torch.clamp(torch.round(x * inv_scale + zero_point), -128, 127).to(torch.int8)


def agreement(codes: torch.Tensor, reference: torch.Tensor) -> str:
    """'bit-exact', or how many codes differ from the package's and by how much."""
    diff = (codes.to(torch.int32) - reference.to(torch.int32)).abs()
    n = int((diff > 0).sum())
    return "bit-exact" if n == 0 else f"{n} of {diff.numel():,} off by {int(diff.max())}"


def compiled_quantizers(x, scale, zero_point) -> dict[str, Callable[[], torch.Tensor]]:
    """torch.compile of the one-expression formula and of the package's quantize.

    The first call compiles (Inductor writes C++ and needs a compiler); a
    failure is reported and the rows are left out rather than crash the benchmark.
    """
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)  # graph-break warnings
    s, z = float(scale), int(zero_point)
    try:
        start = time.perf_counter()
        one = torch.compile(quantize_one_expression)
        one(x, 1 / s, z)
        package = torch.compile(quantize)
        package(x, scale, zero_point)
        print(
            f"(torch.compile: the first calls, compiling, took {time.perf_counter() - start:.1f} s)"
        )
    except Exception as err:  # any backend failure: report it, keep the other rows
        print(f"(torch.compile failed, rows left out: {type(err).__name__}: {str(err)[:200]})")
        return {}
    return {
        "one expression, torch.compile": lambda: one(x, 1 / s, z),
        "quantize (package), torch.compile": lambda: package(x, scale, zero_point),
    }


def quantize_step_rows(n: int, rounds: int, compile_: bool, clock: str = "wall") -> list[Row]:
    x = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    scale, zero_point = choose_qparams(x)
    s, z = float(scale), int(zero_point)
    reference = quantize(x, scale, zero_point)
    floor = CopyFloor(x)

    def per_tensor() -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized dtypes are deprecated: comparison only
            return torch.quantize_per_tensor(x, s, z, torch.qint8).int_repr()

    fns = {
        floor.name: floor.copy,
        "quantize (package, eager)": lambda: quantize(x, scale, zero_point),
        "one expression, eager": lambda: quantize_one_expression(x, 1 / s, z),
        "torch.quantize_per_tensor": per_tensor,
    }
    if compile_:
        fns |= compiled_quantizers(x, scale, zero_point)
    ms = interleaved_times(fns, rounds, clock=clock)

    copy_ms = ms.pop(floor.name)
    floor_ms = floor.floor_ms(x.nbytes + reference.nbytes, copy_ms)  # float32 in, int8 out
    bandwidth = floor.bandwidth(copy_ms) * 1e3 / 2**30
    rows = [("memory-bandwidth floor", f"{floor_ms:.2f}", "1.0", f"copy: {bandwidth:.1f} GiB/s")]
    for name, t in ms.items():
        rows.append((name, f"{t:.2f}", f"{t / floor_ms:.1f}", agreement(fns[name](), reference)))
    return rows


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Print the four tables; return the batch-64 latencies (ms by row name), so that a
    notebook can write what they mean on the machine that measured them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds")
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--quantize-size", type=int, default=4096)
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared CPU)"
    )
    parser.add_argument(
        "--clock", choices=CLOCKS, default="wall", help="wall or cpu time (cpu: busy machines)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = 7 if args.quick else 25

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{hardware.describe_cpu()}; torch._int_mm exact here: {hardware.int_mm_is_exact()}\n")
    f, n = args.features, args.quantize_size
    layers = make_layers(f, args.batch, args.group_size)
    title = f"Bytes held by a {f} x {f} linear layer (weights, scales, bias)"
    print(
        format_table(title, ("layer", "bytes", "fp32 / this"), size_rows(layers, args.group_size))
    )
    title = f"\nOverhead of the weight-only layers, {f} x {f} at batch 1 (median ms)"
    header = ("layer", "ms", "x fp32", "/ torchao")
    print(format_table(title, header, overhead_rows(layers, args.group_size, rounds, args.clock)))
    title = f"\nLatency of a {f} x {f} linear layer at batch {args.batch} (median ms)"
    ms = latency_ms(layers, rounds, args.clock)
    print(format_table(title, ("layer", "ms", "speedup"), latency_rows(ms)))
    rows = quantize_step_rows(n, rounds, not args.no_compile, args.clock)
    title = f"\nQuantize a {n} x {n} float32 tensor to int8 (median ms)"
    print(format_table(title, ("method", "ms", "x floor", "codes vs package"), rows))
    return ms


if __name__ == "__main__":
    main()
