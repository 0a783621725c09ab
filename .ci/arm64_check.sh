#!/usr/bin/env bash
# Run the torch-oracle tests on aarch64 (ARM) under qemu user-mode emulation.
#
# Not part of .ci/run: a manual check of what PyTorch's quantization kernels
# compute on ARM (they differ from x86/FBGEMM for some ops), for the maintainers.
#
# What it does, from scratch:
#   1. apt-get installs qemu-user-static, binfmt-support, debootstrap (Debian host, root);
#      mounts binfmt_misc and enables qemu-aarch64 (flag F, so it works in a chroot).
#   2. debootstraps a minimal arm64 Debian bookworm (python3.11) into $ARM_ROOT
#      (two stages; the second runs emulated: ~17 minutes on 2 cores).
#   3. installs torch 2.13.0 (PyPI's aarch64 wheel, a CUDA 13.0 build: it imports
#      without a GPU but drags in ~4.5 GB of nvidia-* wheels), numpy, hypothesis,
#      pytest, scikit-learn, matplotlib, tqdm into $ARM_ROOT/opt/site with the
#      HOST's pip (`pip install --target --platform ...aarch64`), so nothing slow
#      runs emulated (~7 minutes of downloads).
#   4. copies the committed package and tests (git archive HEAD) into $ARM_ROOT/opt/repo
#      and runs the torch-oracle test files there, emulated, without nbval.
#
# Needs: root, a Debian host with network to Debian's mirror and PyPI, ~12 GB free
# disk, the host's python3 with pip. Time: ~30 minutes the first time, then ~5
# minutes a run (set ARM_REUSE=1 to keep an existing $ARM_ROOT).
# Usage:  sudo bash .ci/arm64_check.sh [pytest args...]   (default: the 4 files below)
# Output: pytest's summary for each file; exit status is pytest's.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ARM_DIR=${ARM_DIR:-/work/arm64}
ARM_ROOT=$ARM_DIR/root
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TESTS=("$@")
if [ ${#TESTS[@]} -eq 0 ]; then
    TESTS=(tests/test_against_pytorch.py tests/test_affine.py tests/test_properties.py tests/test_observers.py)
fi

mkdir -p "$ARM_DIR"

if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support debootstrap
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 || true
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || { echo "qemu-aarch64 binfmt handler missing or without flag F" >&2; exit 1; }

if [ "${ARM_REUSE:-0}" != 1 ] || [ ! -x "$ARM_ROOT/usr/bin/python3.11" ]; then
    for m in proc sys; do  # debootstrap's second stage leaves these mounted
        if mountpoint -q "$ARM_ROOT/$m"; then umount "$ARM_ROOT/$m"; fi
    done
    rm -rf --one-file-system "$ARM_ROOT"
    debootstrap --arch=arm64 --foreign --variant=minbase \
        --include=python3,python3-venv,ca-certificates bookworm "$ARM_ROOT" \
        http://deb.debian.org/debian
    cp /usr/bin/qemu-aarch64-static "$ARM_ROOT/usr/bin/"
    chroot "$ARM_ROOT" /debootstrap/debootstrap --second-stage
fi

# manylinux tags are not expanded by pip's --platform: list the ones wheels use.
PLATFORMS=(--platform manylinux2014_aarch64 --platform linux_aarch64)
for v in $(seq 17 40); do PLATFORMS+=(--platform "manylinux_2_${v}_aarch64"); done
pip_arm() {  # pip_arm TARGET PACKAGES...
    local target=$1
    shift
    python3 -m pip install -q --no-cache-dir --target "$target" "${PLATFORMS[@]}" \
        --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all: "$@"
}
if [ ! -d "$ARM_ROOT/opt/site/torch" ]; then
    pip_arm "$ARM_ROOT/opt/site" "torch==$TORCH_VERSION" numpy hypothesis pytest scikit-learn
fi
if [ ! -d "$ARM_ROOT/opt/site2/matplotlib" ]; then
    pip_arm "$ARM_ROOT/opt/site2" matplotlib tqdm
    rm -rf "$ARM_ROOT"/opt/site2/numpy "$ARM_ROOT"/opt/site2/numpy-* "$ARM_ROOT"/opt/site2/numpy.libs
fi

rm -rf "$ARM_ROOT/opt/repo"
mkdir -p "$ARM_ROOT/opt/repo"
git -C "$REPO" archive HEAD linquant_helpers tests notebooks/solutions pyproject.toml \
    | tar -x -C "$ARM_ROOT/opt/repo"

# PyTorch's cpuinfo needs /sys/devices/system/cpu/{possible,present}. Without them
# it fails to initialise: float16 casts raise "Failed to initialize cpuinfo!" and
# FBGEMM is reported unsupported (engine onednn). The host's real /sys (bind mount)
# made the import segfault under qemu (not always). A one-CPU stub works: engine
# x86, fp16 OK. /proc is mounted as in the runs that were checked.
if mountpoint -q "$ARM_ROOT/sys"; then umount -R "$ARM_ROOT/sys"; fi
mountpoint -q "$ARM_ROOT/proc" || mount -t proc proc "$ARM_ROOT/proc"
trap 'umount "$ARM_ROOT/proc" 2>/dev/null || true' EXIT
mkdir -p "$ARM_ROOT/sys/devices/system/cpu"
echo 0 > "$ARM_ROOT/sys/devices/system/cpu/possible"
echo 0 > "$ARM_ROOT/sys/devices/system/cpu/present"

cat > "$ARM_ROOT/opt/run.sh" <<'EOF'
#!/bin/sh
export PYTHONPATH=/opt/repo:/opt/site:/opt/site2 PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 HOME=/tmp MPLBACKEND=Agg
cd /opt/repo
exec /usr/bin/python3.11 "$@"
EOF
chmod +x "$ARM_ROOT/opt/run.sh"

chroot "$ARM_ROOT" /opt/run.sh -c "import platform, torch; print(platform.machine(), torch.__version__, \
torch.backends.cpu.get_cpu_capability(), torch.backends.quantized.engine, \
torch.backends.quantized.supported_engines)" 2>&1 | grep -v -e 'Error in cpuinfo' -e MIDR_EL1

status=0
for t in "${TESTS[@]}"; do
    echo "== $t (aarch64, emulated)"
    chroot "$ARM_ROOT" /opt/run.sh -m pytest -p no:nbval -p no:cacheprovider -o addopts="" \
        -q -rf --tb=line "$t" 2>&1 | grep -v -e 'Error in cpuinfo' -e MIDR_EL1 || status=1
done
exit $status
