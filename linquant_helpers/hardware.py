"""What this machine's CPU and PyTorch build do with integers: features, kernels, rounding.

Quantized arithmetic is the part of PyTorch that differs most between
machines, so the lessons ask the machine instead of assuming:

* :func:`cpu_features` - the instruction sets that decide int8 speed: AVX-512,
  VNNI (one instruction multiplies four int8 pairs and adds them into an int32
  lane), AMX tiles, ARM's dot-product instructions.
* :func:`int_mm_is_exact` / :func:`int8_matmul_path` - whether ``torch._int_mm``
  gives the exact int32 result here, and which path
  :func:`~linquant_helpers.integer_ops.int8_matmul` therefore takes. Without
  VNNI, x86 int8 kernels multiply unsigned 8-bit by signed 8-bit codes and add
  the products in pairs into a *saturating* int16 (``vpmaddubsw``): two products
  of 255 x 127 overflow it. That is why PyTorch's x86 quantization config
  keeps activations to 7 bits (``reduce_range=True``).
* :func:`zero_point_rounding_order` - whether ``torch.quantize_per_tensor``
  adds the zero point before rounding or after. It depends on the PyTorch
  release as well as the CPU: on x86, up to torch 2.13, FBGEMM's quantize
  computes ``round(fma(x, 1/s, z))`` (the formula it kept from Caffe2); FBGEMM
  dropped that path in April 2026 (pytorch/FBGEMM#5624), and from torch 2.14 on
  x86 computes ``round(x * (1/s)) + z`` in its vectorized and its scalar code
  alike, at any thread count. The aarch64 Linux wheel of 2.13 adds first
  (measured under emulation). :func:`quantize_as_pytorch_does` gives the
  package's codes in this PyTorch's order, and :func:`assume_zero_point_rounding_order`
  shows what the package does on a PyTorch of the other order.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from pathlib import Path

import torch

from .affine import code_dtype, qrange, quantize
from .validation import as_scale, as_zero_point, check_float_tensor

INT_MM, FLOAT32 = "int_mm", "float32"
"""The two paths of :func:`~linquant_helpers.integer_ops.int8_matmul`."""


def _cpuinfo_flags() -> set[str]:
    """The CPU flags of ``/proc/cpuinfo`` (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM
            return set(value.split())
    return set()


def _torch_cpu_probe(name: str) -> bool:
    """``torch.cpu._is_<name>_supported()`` where this PyTorch has it, else False."""
    probe = getattr(torch.cpu, f"_is_{name}_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


@functools.cache
def cpu_features() -> dict[str, str | bool]:
    """The CPU features that decide how fast (and how) int8 kernels run here.

    Keys: ``machine`` (``platform.machine()``), ``capability`` (the vector
    instruction set PyTorch's own kernels use, ``torch.backends.cpu.get_cpu_capability()``;
    ``ATEN_CPU_CAPABILITY`` lowers it), and booleans ``avx512``, ``vnni``
    (AVX-512 VNNI or AVX-VNNI: int8 dot products into int32 in one instruction),
    ``amx`` (Intel AMX tiles) and ``arm_dotprod`` (ARM ``SDOT``/``UDOT``; every
    Apple Silicon chip has it).
    """
    machine = platform.machine().lower()
    flags = _cpuinfo_flags()
    is_arm = machine in ("arm64", "aarch64")
    return {
        "machine": machine,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "avx512": _torch_cpu_probe("avx512"),
        "vnni": _torch_cpu_probe("vnni"),
        "amx": _torch_cpu_probe("amx_tile"),
        "arm_dotprod": is_arm and ("asimddp" in flags or platform.system() == "Darwin"),
    }


def describe_cpu() -> str:
    """One line for a lesson or a benchmark: the machine and its int8-relevant features."""
    f = cpu_features()
    present = [name for name in ("avx512", "vnni", "amx", "arm_dotprod") if f[name]]
    return (
        f"{f['machine']}, PyTorch kernels: {f['capability']}, "
        f"int8 features: {', '.join(present) if present else 'none'}"
    )


@functools.cache
def int_mm_is_exact(device: str = "cpu") -> bool:
    """Whether ``torch._int_mm`` returns the exact int32 product on ``device``.

    Probes it once with the worst case for a saturating kernel: int8 codes of
    -128 and 127 (as unsigned codes, 0 and 255), where every pair of products
    overflows an int16. False where ``torch._int_mm`` is missing, fails, or is
    wrong (seen with x86 kernels that lack VNNI), and for a device this PyTorch
    cannot reach (``"cuda"`` on a CPU-only build or without a GPU). Raises
    ``ValueError`` for a string that names no device type.
    """
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must name a torch device, got {device!r}") from err
    if not hasattr(torch, "_int_mm"):
        return False
    if kind != "cpu":
        backend = getattr(torch, kind, None)  # torch.cuda, torch.xpu, torch.mps ...
        is_available = getattr(backend, "is_available", None)
        if is_available is None or not is_available():
            return False
    gen = torch.Generator().manual_seed(0)
    a = torch.where(torch.rand(32, 64, generator=gen) < 0.5, 127, -128).to(torch.int8)
    b = torch.where(torch.rand(64, 32, generator=gen) < 0.5, 127, -128).to(torch.int8)
    a[0], b[:, 0] = 127, 127  # at least one row and column of the largest sums
    try:
        got = torch._int_mm(a.to(device), b.to(device)).cpu()
    except (RuntimeError, NotImplementedError):
        return False
    return torch.equal(got, (a.double() @ b.double()).to(torch.int32))


def int8_matmul_path(device: torch.device | str = "cpu") -> str:
    """The path :func:`~linquant_helpers.integer_ops.int8_matmul` takes on ``device``.

    :data:`INT_MM` (``torch._int_mm``) on CUDA and on CPUs with VNNI or AMX, where
    it is fast, and only if :func:`int_mm_is_exact` there; otherwise
    :data:`FLOAT32`, an exact float32 matrix multiply on the integer codes
    (see ``int8_matmul``), which runs at float32 speed. Both give the same integers.
    """
    kind = torch.device(device).type
    fast = kind == "cuda" or (kind == "cpu" and (cpu_features()["vnni"] or cpu_features()["amx"]))
    return INT_MM if fast and int_mm_is_exact(kind) else FLOAT32


ADD_THEN_ROUND, ROUND_THEN_ADD = "add, then round", "round, then add"
"""The two answers of :func:`zero_point_rounding_order`."""

MEASURED_X86_ORDERS: dict[tuple[int, int], str] = {
    (2, 13): ADD_THEN_ROUND,
    (2, 14): ROUND_THEN_ADD,
    (2, 15): ROUND_THEN_ADD,
}
"""The order of ``torch.quantize_per_tensor`` on x86-64 per release ``(major, minor)``, as
measured (exact ties; 1 and 2 threads; ``ATEN_CPU_CAPABILITY`` default, avx2 and avx512;
wheels 2.13.0+cpu and PyPI's 2.13.0, 2.14.0, 2.14.1 and 2.15.0). FBGEMM removed its
add-first path in April 2026 (pytorch/FBGEMM#5624); 2.14.0 is the first release without it."""

_assumed_order: list[str] = []  # set by assume_zero_point_rounding_order, innermost last


def measured_zero_point_rounding_order() -> str | None:
    """:data:`MEASURED_X86_ORDERS`' entry for this PyTorch release on this CPU, or ``None``
    where that was not measured (another release, or not x86-64)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    major, minor = (int(n) for n in torch.__version__.split(".")[:2])
    return MEASURED_X86_ORDERS.get((major, minor))


def zero_point_rounding_order() -> str:
    """How this PyTorch's ``torch.quantize_per_tensor`` combines rounding and the zero point.

    :data:`ADD_THEN_ROUND` (``"add, then round"``): ``q = round(x / s + z)``, the
    order of :func:`~linquant_helpers.affine.quantize`, and of FBGEMM on x86 up to
    torch 2.13. :data:`ROUND_THEN_ADD` (``"round, then add"``): ``q = round(x / s) + z``,
    as ``fake_quantize_per_tensor_affine`` does, and FBGEMM on x86 from torch 2.14.
    Measured once (:func:`probe_zero_point_rounding_order`), unless inside
    :func:`assume_zero_point_rounding_order`.
    """
    return _assumed_order[-1] if _assumed_order else probe_zero_point_rounding_order()


@functools.cache
def probe_zero_point_rounding_order() -> str:
    """Measure the order of ``torch.quantize_per_tensor`` on exact ties with an odd zero point.

    ``x / s = k + 0.5`` for 37 values (more than a vector register's worth, so the
    vectorized body and the scalar or masked tail of the kernel both run), with
    ``z = 1`` for ``quint8`` and ``z = -3`` for ``qint8``: adding the odd zero
    point before rounding gives the other even neighbour than adding it after.
    Raises ``RuntimeError`` if the codes follow neither order throughout (a
    kernel that mixed them could not be reproduced by the package).
    """
    import warnings

    k = torch.arange(-18, 19, dtype=torch.float32)
    x = (k + 0.5) * 0.5  # x / 0.5 = k + 0.5 exactly
    answers = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantized dtypes are deprecated; a probe only
        for dtype, z, signed in ((torch.quint8, 1, False), (torch.qint8, -3, True)):
            got = torch.quantize_per_tensor(x, 0.5, z, dtype).int_repr().int()
            qmin, qmax = qrange(8, signed=signed)
            add_first = torch.round(k + 0.5 + z).clamp(qmin, qmax).int()
            round_first = (torch.round(k + 0.5) + z).clamp(qmin, qmax).int()
            if torch.equal(got, add_first):
                answers.add(ADD_THEN_ROUND)
            elif torch.equal(got, round_first):
                answers.add(ROUND_THEN_ADD)
            else:
                answers.add(f"neither ({dtype}: {got.tolist()})")
    if len(answers) != 1 or not answers <= {ADD_THEN_ROUND, ROUND_THEN_ADD}:
        raise RuntimeError(
            "this PyTorch's quantize_per_tensor rounds exact ties in no single order "
            f"(found {sorted(answers)}); the package cannot reproduce its codes"
        )
    return answers.pop()


@contextlib.contextmanager
def assume_zero_point_rounding_order(order: str) -> Iterator[None]:
    """Within the block, :func:`zero_point_rounding_order` answers ``order``, not the measurement.

    What the package, and the exercise checks of notebook 03, do on a PyTorch of the
    other order; the instructors' guide and the tests use it to show both. ``order``
    is :data:`ADD_THEN_ROUND` or :data:`ROUND_THEN_ADD`; ``ValueError`` otherwise.
    """
    if order not in (ADD_THEN_ROUND, ROUND_THEN_ADD):
        raise ValueError(f"order must be {ADD_THEN_ROUND!r} or {ROUND_THEN_ADD!r}, got {order!r}")
    _assumed_order.append(order)
    try:
        yield
    finally:
        _assumed_order.pop()


INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1


def pairwise_saturating_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` the way an x86 CPU without VNNI computes it: in saturating int16 pairs.

    ``vpmaddubsw`` multiplies unsigned 8-bit codes ``a`` (uint8, ``(M, K)``) by
    signed 8-bit codes ``b`` (int8, ``(K, N)``) and adds each two neighbouring
    products into an int16, saturating at ``[-32768, 32767]``; ``vpmaddwd`` then adds
    the pairs into int32::

        acc[m, n] = sum_p clamp(a[m, 2p] b[2p, n] + a[m, 2p+1] b[2p+1, n], -2^15, 2^15 - 1)

    Exact while every pair fits, which 7-bit activations (``a <= 127``:
    ``2 * 127 * 128 = 32512``) guarantee: PyTorch's ``reduce_range``. Full 8-bit
    activations can reach ``2 * 255 * 127 = 64770`` and saturate. A teaching model
    of the instruction, not a fast kernel: it holds ``M * K/2 * N`` int32 pair sums.
    Raises ``TypeError`` for other dtypes and ``ValueError`` for shapes that do not multiply.
    """
    if not (isinstance(a, torch.Tensor) and a.dtype == torch.uint8):
        raise TypeError(f"a must be a uint8 tensor, got {getattr(a, 'dtype', type(a).__name__)}")
    if not (isinstance(b, torch.Tensor) and b.dtype == torch.int8):
        raise TypeError(f"b must be an int8 tensor, got {getattr(b, 'dtype', type(b).__name__)}")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(
            f"a (M, K) and b (K, N) must multiply, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    m, k = a.shape
    if k % 2:  # pad with a zero product, as a kernel pads its last pair
        a = torch.cat([a, a.new_zeros(m, 1)], dim=1)
        b = torch.cat([b, b.new_zeros(1, b.shape[1])], dim=0)
        k += 1
    a_pairs = a.to(torch.int32).reshape(m, k // 2, 2, 1)
    b_pairs = b.to(torch.int32).reshape(1, k // 2, 2, -1)
    pair_sums = (a_pairs * b_pairs).sum(dim=2).clamp(INT16_MIN, INT16_MAX)  # (M, K/2, N)
    return pair_sums.sum(dim=1, dtype=torch.int32)


def quantize_round_then_add(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int = 0,
    bits: int = 8,
    *,
    signed: bool = True,
) -> torch.Tensor:
    """``q = clamp(round(x * (1 / scale)) + zero_point, qmin, qmax)``: round first, then add.

    The other order from :func:`~linquant_helpers.affine.quantize`: the zero point
    is added *after* rounding, so at an exact tie with an odd zero point the code
    differs by one (``x = 0.25, scale = 0.5, zero_point = 1``: 1 here, 2 there).
    It is the order of ``torch.fake_quantize_per_tensor_affine``, of torchao's
    ``quantize_affine``, and of ``torch.quantize_per_tensor`` on PyTorch builds
    whose :func:`zero_point_rounding_order` says so. ``x * (1 / scale)`` is
    computed in float32. ``scale`` and ``zero_point`` are numbers or tensors that
    broadcast against ``x``. Returns codes in :func:`~linquant_helpers.affine.code_dtype`.
    Values beyond the range, infinities included, clamp to ``qmin``/``qmax``.

    Raises, as :func:`~linquant_helpers.affine.quantize` does, ``TypeError`` for an
    integer ``x`` and ``ValueError`` for NaN in ``x`` (it has no code), a scale that is
    not positive and finite (0 would turn every code into ``qmin``, ``qmax`` or NaN),
    a zero point that is not an integer in ``[qmin, qmax]``, or qparams that do not
    broadcast to ``x``'s shape.
    """
    x = check_float_tensor(x)
    qmin, qmax = qrange(bits, signed=signed)
    s = as_scale(scale, x.device)
    z = as_zero_point(zero_point, x.device, qmin, qmax)
    for name, t in (("scale", s), ("zero_point", z)):
        try:
            fits = torch.broadcast_shapes(t.shape, x.shape) == x.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} must broadcast to x's shape {tuple(x.shape)}"
            )
    if bool(torch.isnan(x).any()):
        raise ValueError("x contains NaN, which has no integer code; clean the input first")
    codes = torch.round(x.float() * (1 / s)) + z
    return codes.clamp(qmin, qmax).to(code_dtype(bits, signed))


def quantize_as_pytorch_does(
    x: torch.Tensor, scale: float, zero_point: int, dtype: torch.dtype
) -> torch.Tensor:
    """The codes of ``torch.quantize_per_tensor(x, scale, zero_point, dtype).int_repr()``,
    computed by the package in the order this PyTorch uses (:func:`zero_point_rounding_order`).

    ``dtype`` is ``torch.quint8`` or ``torch.qint8``. Raises ``ValueError`` for another dtype.
    """
    if dtype not in (torch.quint8, torch.qint8):
        raise ValueError(f"dtype must be torch.quint8 or torch.qint8, got {dtype}")
    signed = dtype == torch.qint8
    if zero_point_rounding_order() == ADD_THEN_ROUND:
        return quantize(x, scale, zero_point, 8, signed=signed)
    return quantize_round_then_add(x, scale, zero_point, 8, signed=signed)
