"""Run nbval (and the torch-oracle tests) as if on other CPUs: are the stored outputs portable?

The stored notebooks were executed on one machine; a learner's laptop may have
another instruction set (AVX-512 with VNNI, AVX2 only, ARM), and float sums,
oneDNN's int8 kernels and MKL's GEMMs then differ in their last bits. This
script re-runs the checks under settings that make this machine compute the way
another one would:

  ATEN_CPU_CAPABILITY=default|avx2  PyTorch's own vectorized kernels (avx2: only on AVX-512 CPUs)
  ONEDNN_MAX_CPU_ISA=SSE41|AVX2     oneDNN (convolutions, int8 GEMM) without AVX-512 or VNNI
  MKL_CBWR=COMPATIBLE               MKL's conditional bitwise reproducibility: a generic code path
  OMP_NUM_THREADS=1|4               thread counts (the lessons pin their own where it matters)

Usage:
  python .ci/portability.py                      # every configuration, every notebook
  python .ci/portability.py --config other-cpu   # one (or several) of them
  python .ci/portability.py --list               # what each configuration sets
  python .ci/portability.py -- notebooks/04_per_channel_and_per_group.ipynb   # other pytest args

It prints a table of configurations with their results and exits non-zero if
any failed. Each configuration takes about as long as nbval on all notebooks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFIGS: dict[str, dict[str, str]] = {
    "native": {},
    # the whole set at once: the CPU least like a modern x86 server that this machine can play
    "other-cpu": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_CBWR": "COMPATIBLE",
        "OMP_NUM_THREADS": "1",
    },
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
    "threads-1": {"OMP_NUM_THREADS": "1"},
    "threads-4": {"OMP_NUM_THREADS": "4"},
}

DEFAULT_TESTS = ["notebooks", "tests/test_against_pytorch.py", "tests/test_layers.py",
                 "tests/test_layers_forward.py", "tests/test_hardware.py",
                 "tests/test_integer_ops.py", "tests/test_kernels.py",
                 "tests/test_quantize_fast_path.py", "tests/test_runtimes.py",
                 "tests/test_kquants.py", "tests/test_gguf_matmul.py", "tests/test_float8.py",
                 "tests/test_block_scaled.py"]
"""nbval on every notebook, the tests whose oracles are CPU kernels (PyTorch's, its packed
weight-only matmuls', torchao's and ONNX Runtime's), and those of the code that depends on
the CPU's kernels itself: quantize's fast path (taken only where multiply-add rounds once)
and compiled form, the float16/bfloat16 forward of the weight-only layers, and the formats
that must equal a reference bit for bit (llama.cpp's K-quants, FP8, MX and NVFP4), whose
float32 arithmetic runs in PyTorch's vectorized kernels."""


def run(name: str, pytest_args: list[str]) -> tuple[str, float, str]:
    """Run pytest under configuration ``name``; return (status, seconds, summary line)."""
    # each configuration compiles its own kernels: Inductor's cache is keyed on the CPU,
    # not on ATEN_CPU_CAPABILITY, and code compiled for AVX-512 gives wrong codes under avx2
    cache = Path(tempfile.gettempdir()) / f"linquant-inductor-{name}"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), **CONFIGS[name]}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else proc.stderr.strip()[-200:]
    if proc.returncode != 0:
        failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
        print("\n".join(failed[:40]), file=sys.stderr)
    return ("ok" if proc.returncode == 0 else "FAILED"), seconds, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", choices=list(CONFIGS),
                        help="a configuration to run (repeatable); default: all")
    parser.add_argument("--list", action="store_true", help="print the configurations and exit")
    parser.add_argument("pytest_args", nargs="*", help="after --: what pytest runs")
    args = parser.parse_args(argv)
    if args.list:
        for name, env in CONFIGS.items():
            print(f"{name:15} {' '.join(f'{k}={v}' for k, v in env.items()) or '(as is)'}")
        return 0
    names = args.config or list(CONFIGS)
    pytest_args = args.pytest_args or DEFAULT_TESTS
    results = []
    for name in names:
        print(f"[portability] {name}: {' '.join(f'{k}={v}' for k, v in CONFIGS[name].items())}",
              flush=True)
        results.append((name, *run(name, pytest_args)))
    print(f"\n{'configuration':15} {'result':7} {'time':>7}  pytest")
    for name, status, seconds, summary in results:
        print(f"{name:15} {status:7} {seconds:6.0f}s  {summary}")
    return 0 if all(status == "ok" for _, status, _, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
