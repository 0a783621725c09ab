"""The core helpers against PyTorch's own kernels and observers (CPU, float32).

PyTorch's quantized dtypes and ``torch.ao.quantization`` are deprecated; here they
serve only as oracles. Each test skips with a reason where its oracle is gone.

What experiments showed (and these tests pin down):

* ``torch.quantize_per_tensor`` (CPU) takes the reciprocal ``1/scale`` in float32.
  Whether it adds the zero point before or after rounding depends on the release
  (``hardware.zero_point_rounding_order()`` measures it; ``hardware.MEASURED_X86_ORDERS``
  lists the releases measured). On x86 up to torch 2.13 (FBGEMM's legacy
  path) it computes ``round_half_even(fma(x, 1/scale, zero_point))``: one rounding
  of the multiply-add, as ``quantize`` does, bit-identical. From torch 2.14 (FBGEMM
  without its legacy path) it computes ``round_half_even(fl(x * (1/scale))) + zero_point``,
  as ``hardware.quantize_round_then_add`` does, bit-identical. The aarch64 wheel of
  2.13 adds first, like x86 (``.ci/arm64_check.sh``).
* ``torch.quantize_per_channel`` differs by CPU and release: on x86 up to 2.13 it
  rounds twice, ``round(fl(fl(x * inv) + z))``; from 2.14 it rounds first, like
  per-tensor; on aarch64 (2.13, emulated) quint8 rounds first, ``round(fl(x * inv)) + z``,
  and qint8 is ``quantize``'s fused multiply-add. Equal to ``quantize`` when the
  zero point is 0; otherwise they differ by one code at near-ties only.
* ``torch.fake_quantize_per_tensor_affine`` rounds *before* adding the zero point,
  in every release measured.
"""

from __future__ import annotations

import platform

import pytest
import torch

from linquant_helpers import choose_qparams, dequantize, fake_quantize, hardware, qrange, quantize
from linquant_helpers.hardware import ADD_THEN_ROUND, ROUND_THEN_ADD

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions:UserWarning"),
]

needs_quantize_per_tensor = pytest.mark.skipif(
    not hasattr(torch, "quantize_per_tensor"), reason="torch.quantize_per_tensor is gone"
)
needs_quantize_per_channel = pytest.mark.skipif(
    not hasattr(torch, "quantize_per_channel"), reason="torch.quantize_per_channel is gone"
)
needs_fake_quantize = pytest.mark.skipif(
    not hasattr(torch, "fake_quantize_per_tensor_affine"),
    reason="torch.fake_quantize_per_tensor_affine is gone",
)

# Fused multiply-add is exact on x86-64; elsewhere the vectorized kernel may take
# another path, so a few codes (at most 1e-5 of them, each off by one) may differ.
X86 = platform.machine().lower() in ("x86_64", "amd64")

SEEDS = (0, 1, 2)
# (signed, symmetric, narrow): every scheme choose_qparams offers at 8 bits.
SCHEMES = [
    (True, False, False),
    (True, True, False),
    (True, False, True),
    (True, True, True),
    (False, False, False),
    (False, True, False),
]
SCHEME_IDS = [
    f"{'signed' if s else 'unsigned'}-{'sym' if y else 'affine'}{'-narrow' if n else ''}"
    for s, y, n in SCHEMES
]


def _data(seed: int, shape: tuple[int, ...] = (300, 1000)) -> torch.Tensor:
    """Random float32 data with an offset, so the asymmetric zero points are nonzero.

    300 x 1000 elements: more than one of quantize's CPU blocks, split mid-way.
    """
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 2.5 + 0.4


def _qdtype(signed: bool) -> torch.dtype:
    return torch.qint8 if signed else torch.quint8


def _torch_codes(qt: torch.Tensor, narrow: bool) -> torch.Tensor:
    # PyTorch has no narrow qint8; clamping its [-128, 127] codes to [-127, 127]
    # afterwards is the same as clamping to the narrow range directly.
    q = qt.int_repr()
    return q.clamp(-127, 127) if narrow else q


def _assert_codes_match(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == theirs.dtype
    if X86:
        assert torch.equal(ours, theirs)
        return
    diff = (ours.int() - theirs.int()).abs()
    assert int(diff.max()) <= 1
    assert int((diff != 0).sum()) <= 1e-5 * ours.numel()


def _codes_in_this_pytorchs_order(x, scale, zero_point, *, signed=True, narrow=False):
    """The package's codes in the order this PyTorch's quantize_per_tensor uses (the probe's):
    ``quantize`` where it adds the zero point first, ``quantize_round_then_add`` where it
    rounds first; narrow ranges clamp afterwards, as ``_torch_codes`` does."""
    if hardware.zero_point_rounding_order() == ADD_THEN_ROUND:
        return quantize(x, scale, zero_point, signed=signed, narrow=narrow)
    codes = hardware.quantize_round_then_add(x, scale, zero_point, 8, signed=signed)
    return codes.clamp(-127, 127) if narrow else codes



@needs_quantize_per_tensor
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("signed", "symmetric", "narrow"), SCHEMES, ids=SCHEME_IDS)
def test_quantize_per_tensor_is_bit_identical_to_torch(seed, signed, symmetric, narrow):
    x = _data(seed)
    scale, zp = choose_qparams(x, symmetric=symmetric, signed=signed, narrow=narrow)
    ours = _codes_in_this_pytorchs_order(x, scale, zp, signed=signed, narrow=narrow)
    qt = torch.quantize_per_tensor(x, float(scale), int(zp), _qdtype(signed))
    theirs = _torch_codes(qt, narrow)
    _assert_codes_match(ours, theirs)
    if hardware.zero_point_rounding_order() == ADD_THEN_ROUND:  # the README's claim for quantize
        _assert_codes_match(quantize(x, scale, zp, signed=signed, narrow=narrow), theirs)


@needs_quantize_per_tensor
@pytest.mark.parametrize("seed", SEEDS)
def test_quantize_per_tensor_matches_torch_with_awkward_scales(seed):
    # Scales that are not powers of two and whose reciprocal is inexact in float32,
    # data concentrated near many ties: exactly where divide vs reciprocal differ.
    g = torch.Generator().manual_seed(seed)
    for scale, zp in ((0.1, 3), (1 / 3, -7), (0.0137, 0), (0.7, 100)):
        codes = torch.randint(-140, 140, (50_000,), generator=g).float()
        x = ((codes + 0.5) * scale + torch.randn(50_000, generator=g) * 1e-6).float()
        ours = _codes_in_this_pytorchs_order(x, scale, zp)
        theirs = torch.quantize_per_tensor(x, scale, zp, torch.qint8).int_repr()
        _assert_codes_match(ours, theirs)


@needs_quantize_per_channel
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("narrow", [False, True])
def test_quantize_per_channel_is_bit_identical_to_torch_with_zero_point_0(seed, axis, narrow):
    # Symmetric signed per-channel qparams (how weights are quantized) have z = 0,
    # where adding the zero point before or after rounding cannot differ.
    x = _data(seed)
    scale, zp = choose_qparams(x, symmetric=True, narrow=narrow, axis=axis)
    assert int(zp.abs().max()) == 0
    ours = quantize(x, scale, zp, narrow=narrow, axis=axis)
    theirs = torch.quantize_per_channel(x, scale.double(), zp.long(), axis, torch.qint8)
    _assert_codes_match(ours, _torch_codes(theirs, narrow))


@needs_quantize_per_channel
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("signed", "symmetric"),
    [(True, False), (False, False), (False, True)],
    ids=["qint8-affine", "quint8-affine", "quint8-sym-z128"],
)
def test_quantize_per_channel_differs_from_torch_only_at_near_ties(seed, signed, symmetric):
    x = _data(seed, (512, 1024))
    scale, zp = choose_qparams(x, symmetric=symmetric, signed=signed, axis=0)
    assert int(zp.abs().max()) > 0, "the test needs nonzero zero points"
    qmin, qmax = qrange(8, signed)
    ours = quantize(x, scale, zp, signed=signed, axis=0)
    theirs = torch.quantize_per_channel(x, scale.double(), zp.long(), 0, _qdtype(signed)).int_repr()

    # PyTorch's formula, computed independently. It depends on the CPU and the release:
    # on x86, where per-tensor adds first (up to 2.13), two float32 roundings, then round;
    # where per-tensor rounds first (2.14 on), the same: round x / s, then add z; on
    # aarch64 (2.13), quint8 rounds x / s first and then adds z, and qint8 is one fused
    # multiply-add, like ``quantize``.
    inv = (1.0 / scale).reshape(-1, 1)
    z = zp.reshape(-1, 1).float()
    if platform.machine().lower() in ("arm64", "aarch64"):
        formula = ((x * inv).round() + z) if not signed else ours.float()
    elif hardware.zero_point_rounding_order() == ROUND_THEN_ADD:
        formula = (x * inv).round() + z
    else:
        formula = (x * inv) + z  # the product and the sum rounded separately
    assert torch.equal(theirs, formula.round().clamp(qmin, qmax).to(theirs.dtype))

    mismatch = ours != theirs
    assert int(mismatch.sum()) < 1e-3 * x.numel()
    assert int((ours.int() - theirs.int()).abs().max()) <= 1
    # Every mismatch sits at a near-tie: x / s + z within 1e-3 of k + 0.5 (float64).
    exact = x.double() / scale.double().reshape(-1, 1) + zp.double().reshape(-1, 1)
    distance_to_tie = (exact - exact.floor() - 0.5).abs()
    if mismatch.any():
        assert float(distance_to_tie[mismatch].max()) < 1e-3


@needs_quantize_per_tensor
@needs_fake_quantize
def test_exact_ties_follow_this_pytorchs_order_and_quantize_adds_first():
    # 0.25 / 0.5 + 1 = 1.5 exactly: rounding the sum gives 2 (half to even), the
    # package's formula; rounding first gives round(0.5) + 1 = 1.
    x = torch.tensor([0.25])
    assert quantize(x, 0.5, 1).tolist() == [2]
    assert hardware.quantize_round_then_add(x, 0.5, 1).tolist() == [1]
    expected = {ADD_THEN_ROUND: [2], ROUND_THEN_ADD: [1]}[hardware.zero_point_rounding_order()]
    assert torch.quantize_per_tensor(x, 0.5, 1, torch.qint8).int_repr().tolist() == expected
    assert hardware.quantize_as_pytorch_does(x, 0.5, 1, torch.qint8).tolist() == expected
    # PyTorch's fake_quantize kernel rounds first (0.0 after dequantizing) in every
    # release; the package's fake_quantize is dequantize(quantize(x)).
    theirs = torch.fake_quantize_per_tensor_affine(x, 0.5, 1, -128, 127)
    assert theirs.tolist() == [0.5 * (1 - 1)]
    assert fake_quantize(x, 0.5, 1).tolist() == [0.5 * (2 - 1)]
    assert torch.equal(fake_quantize(x, 0.5, 1), dequantize(quantize(x, 0.5, 1), 0.5, 1))


@needs_quantize_per_tensor
def test_the_probe_reports_the_order_measured_for_this_release():
    order = hardware.probe_zero_point_rounding_order()
    assert order in (ADD_THEN_ROUND, ROUND_THEN_ADD)
    measured = hardware.measured_zero_point_rounding_order()
    if measured is None:
        pytest.skip(f"no measurement of torch {torch.__version__} on {platform.machine()}")
    assert order == measured, torch.__version__
    assert hardware.MEASURED_X86_ORDERS[(2, 13)] == ADD_THEN_ROUND  # FBGEMM's legacy path
    assert hardware.MEASURED_X86_ORDERS[(2, 14)] == ROUND_THEN_ADD  # pytorch/FBGEMM#5624


@needs_quantize_per_tensor
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 7, 8, 37, 4099])
def test_every_path_of_the_kernel_uses_the_probes_order(n, threads):
    # FBGEMM quantizes in vector registers (8 or 16 floats) and finishes with a masked
    # or scalar tail, each thread its own slice: all of them must agree with the probe.
    k = torch.arange(n, dtype=torch.float32) % 200 - 100
    x = (k + 0.5) * 0.5  # exact ties
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        theirs = torch.quantize_per_tensor(x, 0.5, 3, torch.quint8).int_repr()
    finally:
        torch.set_num_threads(before)
    assert torch.equal(theirs, hardware.quantize_as_pytorch_does(x, 0.5, 3, torch.quint8))


def test_the_probe_refuses_a_kernel_that_mixes_the_orders(monkeypatch):
    real = torch.quantize_per_tensor

    def mixed(x, scale, zero_point, dtype):  # rounds first in its vector body, adds first after
        first = torch.round(x / scale) + zero_point
        add = torch.round(x / scale + zero_point)
        codes = torch.where(torch.arange(len(x)) < 32, first, add)
        return real((codes - zero_point) * scale, scale, zero_point, dtype)  # no ties left

    monkeypatch.setattr(torch, "quantize_per_tensor", mixed)
    with pytest.raises(RuntimeError, match="no single order"):
        hardware.probe_zero_point_rounding_order.__wrapped__()


def test_the_measured_orders_are_for_x86_only(monkeypatch):
    monkeypatch.setattr(hardware.platform, "machine", lambda: "aarch64")
    assert hardware.measured_zero_point_rounding_order() is None
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(hardware.torch, "__version__", "2.13.0+cpu")
    assert hardware.measured_zero_point_rounding_order() == ADD_THEN_ROUND
    monkeypatch.setattr(hardware.torch, "__version__", "2.14.1")
    assert hardware.measured_zero_point_rounding_order() == ROUND_THEN_ADD
    monkeypatch.setattr(hardware.torch, "__version__", "2.99.0")
    assert hardware.measured_zero_point_rounding_order() is None


def test_assume_zero_point_rounding_order_overrides_the_probe_within_its_block():
    measured = hardware.zero_point_rounding_order()
    other = ROUND_THEN_ADD if measured == ADD_THEN_ROUND else ADD_THEN_ROUND
    x = torch.tensor([0.25, 0.75, -0.25, 1.25])  # x / 0.5 = 0.5, 1.5, -0.5, 2.5
    with hardware.assume_zero_point_rounding_order(other):
        assert hardware.zero_point_rounding_order() == other
        with hardware.assume_zero_point_rounding_order(measured):
            assert hardware.zero_point_rounding_order() == measured
        codes = hardware.quantize_as_pytorch_does(x, 0.5, 3, torch.quint8).tolist()
        assert codes == {ADD_THEN_ROUND: [4, 4, 2, 6], ROUND_THEN_ADD: [3, 5, 3, 5]}[other]
    assert hardware.zero_point_rounding_order() == measured
    with pytest.raises(ValueError, match="order must be"):
        with hardware.assume_zero_point_rounding_order("round"):
            pass


@needs_quantize_per_tensor
def test_exact_ties_round_half_to_even():
    # x / 0.5 = 0.5, 1.5, 2.5, -0.5, -1.5, -2.5: each ties, half to even.
    x = torch.tensor([0.25, 0.75, 1.25, -0.25, -0.75, -1.25])
    expected = [0, 2, 2, 0, -2, -2]
    assert quantize(x, 0.5, 0).tolist() == expected
    assert torch.quantize_per_tensor(x, 0.5, 0, torch.qint8).int_repr().tolist() == expected
    assert torch.equal(fake_quantize(x, 0.5, 0), dequantize(quantize(x, 0.5, 0), 0.5, 0))
    assert fake_quantize(x, 0.5, 0).tolist() == [0.5 * q for q in expected]


@needs_quantize_per_tensor
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("signed", [True, False])
def test_dequantize_per_tensor_is_bit_identical_to_torch(seed, signed):
    x = _data(seed)
    scale, zp = choose_qparams(x, signed=signed)
    qt = torch.quantize_per_tensor(x, float(scale), int(zp), _qdtype(signed))
    ours = dequantize(qt.int_repr(), scale, zp)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, qt.dequantize())


@needs_quantize_per_channel
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("axis", [0, 1])
def test_dequantize_per_channel_is_bit_identical_to_torch(seed, signed, axis):
    x = _data(seed)
    scale, zp = choose_qparams(x, signed=signed, axis=axis)
    qt = torch.quantize_per_channel(x, scale.double(), zp.long(), axis, _qdtype(signed))
    ours = dequantize(qt.int_repr(), scale, zp, axis=axis)
    assert torch.equal(ours, qt.dequantize())


@needs_fake_quantize
@pytest.mark.parametrize("seed", SEEDS)
def test_fake_quantize_differs_from_torch_only_at_near_ties(seed):
    x = _data(seed)
    scale, zp = choose_qparams(x)
    ours = fake_quantize(x, scale, zp)
    theirs = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), -128, 127)
    differ = ours != theirs
    assert int(differ.sum()) < 1e-4 * x.numel()
    if differ.any():
        # One code apart, and only where x / s is within 1e-3 of a tie (float64).
        steps = (ours[differ] - theirs[differ]).abs() / scale
        assert torch.allclose(steps, torch.ones_like(steps))
        exact = x[differ].double() / float(scale)
        assert float((exact - exact.floor() - 0.5).abs().max()) < 1e-3


# --- choose_qparams against PyTorch's observers --------------------------------------


def _observers():
    return pytest.importorskip("torch.ao.quantization", reason="torch.ao.quantization is gone")


OBSERVER_CASES = [
    # (signed, symmetric, narrow, per_channel)
    (signed, symmetric, narrow, per_channel)
    for signed in (True, False)
    for symmetric in (False, True)
    for narrow in ((False, True) if signed else (False,))
    for per_channel in (False, True)
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("signed", "symmetric", "narrow", "per_channel"),
    OBSERVER_CASES,
    ids=[
        f"{'qint8' if s else 'quint8'}-{'sym' if y else 'affine'}"
        f"{'-narrow' if n else ''}-{'channel' if c else 'tensor'}"
        for s, y, n, c in OBSERVER_CASES
    ],
)
def test_choose_qparams_equals_minmax_observers(seed, signed, symmetric, narrow, per_channel):
    ao = _observers()
    x = _data(seed, (64, 96))
    x[5] = 0.0  # an all-zero row: scale must fall back to eps exactly like PyTorch
    kwargs = {"dtype": _qdtype(signed)}
    if narrow:
        kwargs.update(quant_min=-127, quant_max=127)
    if per_channel:
        scheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        observer = ao.PerChannelMinMaxObserver(ch_axis=0, qscheme=scheme, **kwargs)
        axis = 0
    else:
        scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
        observer = ao.MinMaxObserver(qscheme=scheme, **kwargs)
        axis = None
    observer(x)
    their_scale, their_zp = observer.calculate_qparams()

    scale, zp = choose_qparams(x, symmetric=symmetric, signed=signed, narrow=narrow, axis=axis)
    assert scale.dtype == torch.float32 and zp.dtype == torch.int32
    assert torch.equal(scale.reshape(their_scale.shape), their_scale)
    assert torch.equal(zp.reshape(their_zp.shape).long(), their_zp.long())
    if per_channel:
        assert float(scale[5]) == torch.finfo(torch.float32).eps


def test_choose_qparams_all_zero_tensor_matches_observer():
    ao = _observers()
    x = torch.zeros(4, 4)
    observer = ao.MinMaxObserver(dtype=torch.quint8)
    observer(x)
    their_scale, their_zp = observer.calculate_qparams()
    scale, zp = choose_qparams(x, signed=False)
    assert float(scale) == float(their_scale) == torch.finfo(torch.float32).eps
    assert int(zp) == int(their_zp) == 0
