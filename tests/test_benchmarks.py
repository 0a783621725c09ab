"""The benchmark scripts run, and their tables say what they measured.

No timing is asserted here (times belong to the scripts, compared within one
run): these runs are small and only check that ``bench_quantize.py``,
``bench_observers.py`` and ``bench_kernels.py`` still work, that every row carries
a ratio, that the floor counts the right bytes, and that a device the timer cannot
time is refused by name. (``bench_inference.py`` runs in notebook 07, and
``bench_kernels.py`` in notebooks 07 and 10 too.)
"""

from __future__ import annotations

import os
import platform
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from timing import device_sync, interleaved_times  # noqa: E402


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell, header and rule rows left out."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("operation", "observer", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_bench_quantize_prints_a_ratio_and_a_verdict_per_row():
    run = _run("bench_quantize.py", "--size", "128", "--rounds", "1", "--no-compile", "--no-memory")
    assert run.returncode == 0, run.stderr
    assert re.search(r"on the CPU \(\w+\), torch .*copy bandwidth [\d.]+ GB/s", run.stdout)
    assert "pages as the C library decides" in run.stdout.splitlines()[0]
    rows = _table_rows(run.stdout)
    for label in ("per-tensor", "per-channel", "per-group g=64"):
        ms, ratio, _, _, goal, result = rows[f"quantize {label}, eager"]
        assert float(ms) >= 0 and float(ratio) > 0
        assert goal == "<= 2x floor" and result in ("PASS", "MISS")
    assert "torch.quantize_per_tensor" in rows and "torch .dequantize()" in rows
    assert float(rows["copy x into a ready buffer (bandwidth)"][1]) == 1.0
    assert all(float(cells[1]) > 0 for cells in rows.values())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's tunables")
def test_bench_quantize_reuse_memory_restarts_itself_with_glibc_tunables():
    run = _run(
        "bench_quantize.py", "--size", "128", "--rounds", "1", "--no-compile", "--no-memory",
        "--reuse-memory",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "allocations reuse freed pages (--reuse-memory)" in run.stdout.splitlines()[0]
    assert "quantize per-tensor, eager" in _table_rows(run.stdout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="here CUDA is a device it can time")
def test_bench_quantize_refuses_a_device_it_cannot_time():
    run = _run("bench_quantize.py", "--device", "cuda", "--size", "64")
    assert run.returncode == 2
    assert "device must be the CPU or a CUDA device present here, got 'cuda'" in run.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="here it would run the GPU check")
def test_gpu_check_runs_the_cuda_tests_then_refuses_a_missing_gpu(tmp_path):
    run = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)},
    )
    assert run.returncode == 2  # the benchmark's refusal, through pipefail
    assert "available: False" in run.stdout
    assert re.search(r"\d+ skipped", (tmp_path / "gpu_tests.log").read_text())
    assert "got 'cuda'" in (tmp_path / "gpu_bench_quantize.md").read_text()


def test_bench_observers_measures_each_row_in_a_subprocess():
    run = _run("bench_observers.py", "--size", "64", "--only", "MinMax")
    assert run.returncode == 0, run.stderr
    rows = _table_rows(run.stdout)
    assert "MinMaxObserver()" in rows and "MinMaxObserver(axis=0)" in rows
    for cells in rows.values():
        assert float(cells[0]) >= 0 and cells[3] in ("PASS", "MISS")


def test_the_timer_names_what_it_cannot_do():
    assert device_sync("cpu") is None
    with pytest.raises(ValueError, match="got 'meta'"):
        device_sync("meta")
    with pytest.raises(ValueError, match="statistic must be one of"):
        interleaved_times({"noop": lambda: None}, 1, statistic="mean")


def test_the_timer_returns_milliseconds_per_call_of_each_function():
    ms = interleaved_times({"a": lambda: None, "b": lambda: sum(range(1000))}, 3, block_s=0.001)
    assert set(ms) == {"a", "b"} and all(t >= 0 for t in ms.values())
    assert ms["b"] > ms["a"]  # a thousand additions take longer than nothing


def _plain_rows(text: str, title: str) -> dict[str, list[str]]:
    """The rows of the plain-text table under the line starting with ``title``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = line.split("  ")
        rows[cells[0].strip()] = [c.strip() for c in cells[1:] if c.strip()]
    return rows


def test_bench_kernels_gives_every_size_and_batch_with_ratios_to_fp32_and_the_floor():
    run = _run(
        "bench_kernels.py", "--features", "64", "128", "--batches", "1", "2", "--rounds", "1"
    )
    assert run.returncode == 0, run.stderr
    assert "min of 1 interleaved rounds" in run.stdout.splitlines()[0]
    for size in (64, 128):
        for batch in (1, 2):
            rows = _plain_rows(run.stdout, f"{size} x {size} at batch {batch}")
            assert rows["fp32 nn.Linear"][1] == "1.00x"
            for name in ("W8A16Linear, naive", "Int4WeightLinear, naive"):
                ms, x_fp32, x_floor, over_fused, *over_torchao = rows[name]
                assert float(ms) > 0 and x_fp32.endswith("x") and float(x_floor[:-1]) > 0
                assert float(over_fused) > 0  # the default path over the fused kernel
                assert len(over_torchao) == (1 if "torchao Int8WeightOnlyConfig" in rows else 0)


def test_bench_kernels_sweeps_the_block_size_and_memory_bound_counts_bytes():
    run = _run("bench_kernels.py", "--features", "64", "--batches", "1", "--rounds", "1", "--sweep")
    assert run.returncode == 0, run.stderr
    rows = _plain_rows(run.stdout, "block sweep, 64 x 64 at batch 1")
    assert {f"W8A16Linear, block {1 << p}" for p in range(16, 23)} <= set(rows)
    assert {f"Int4WeightLinear, block {1 << p}" for p in range(16, 23)} <= set(rows)
    bench = runpy.run_path(str(BENCHMARKS / "bench_kernels.py"))
    bound = bench["memory_bound"](64, batch=1, rounds=1)
    # bytes read: fp32 weight and bias; int8 codes, scales and bias; int4 codes, group scales, bias
    assert bound["bytes"] == {
        "fp32 nn.Linear": 64 * 64 * 4 + 64 * 4,
        "W8A16Linear": 64 * 64 + 64 * 4 + 64 * 4,
        "Int4WeightLinear": 64 * 32 + 64 * 2 * 4 + 64 * 4,
        "W8A16Linear, fused (bfloat16 x)": 64 * 64 + 64 * 4 + 64 * 4,
    }
    floors = bound["floor_ms"]
    assert floors["fp32 nn.Linear"] / floors["W8A16Linear"] == pytest.approx(16640 / 4608)
    assert set(bound["ms"]) == set(bound["bytes"]) and all(t > 0 for t in bound["ms"].values())
