#!/usr/bin/env bash
# The GPU checks of issue 15, in one command, for a session that is lent a GPU:
#
#     bash benchmarks/gpu_check.sh            # from the repository's root
#
# 1. tests/test_cuda.py: the core on CUDA gives the CPU's codes, bit for bit.
# 2. bench_quantize.py --device cuda on a 16384 x 16384 float32 tensor (1 GiB):
#    compiled quantize against the goal of at least 80% of the floor's bandwidth
#    (at most 1.25x the floor), eager quantize and PyTorch's kernels beside it.
#
# It needs a Python whose torch has CUDA (and Triton, for torch.compile), plus
# pytest, hypothesis, numpy, matplotlib, scikit-learn and tqdm; it installs
# nothing and runs the package from this checkout. Where $OUT is set (the device
# tool), the logs are written there as well. Without CUDA the tests skip and the
# benchmark refuses the device by name.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
logs="${OUT:-${TMPDIR:-/tmp}}"
python="${PYTHON:-python3}"

"$python" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF
"$python" -m pytest tests/test_cuda.py -o addopts="" -p no:cacheprovider -q 2>&1 |
    tee "$logs/gpu_tests.log"
"$python" benchmarks/bench_quantize.py --device cuda --size "${SIZE:-16384}" --no-memory \
    --statistic min --rounds "${ROUNDS:-15}" 2>&1 | tee "$logs/gpu_bench_quantize.md"
