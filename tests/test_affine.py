"""Unit tests of linquant_helpers.affine against hand-computed values and float64 math."""

from __future__ import annotations

import pytest
import torch

from linquant_helpers import (
    EPS,
    choose_qparams,
    code_dtype,
    dequantize,
    fake_quantize,
    qparams_from_range,
    qrange,
    quantize,
)


def _reference_quantize(x, scale, zero_point, qmin, qmax):
    """clamp(round(x / s + z)) in float64, and where float32 may round the other way.

    quantize computes ``x * fl(1/s) + z`` in float32: ``fl(1/s)`` is off by at most
    2^-24 relatively, the multiply-add by half an ulp of the result, so the float32
    value is within ``2^-22 * (|x / s| + |z| + 1)`` of the exact one; only an x / s + z
    that close to a tie (k + 0.5) may end up in the neighbouring code.
    """
    s = torch.as_tensor(scale).double()
    z = torch.as_tensor(zero_point).double()
    v = x.double() / s + z
    near_tie = (v - v.floor() - 0.5).abs() <= 2**-22 * ((x.double() / s).abs() + z.abs() + 1)
    return v.round().clamp(qmin, qmax), near_tie


# --- qrange and code_dtype -----------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "signed", "narrow", "expected"),
    [
        (8, True, False, (-128, 127)),
        (8, True, True, (-127, 127)),
        (8, False, False, (0, 255)),
        (4, True, False, (-8, 7)),
        (4, True, True, (-7, 7)),
        (4, False, False, (0, 15)),
        (2, True, False, (-2, 1)),
        (2, False, False, (0, 3)),
        (3, True, False, (-4, 3)),
        (16, True, False, (-32768, 32767)),
        (16, False, False, (0, 65535)),
    ],
)
def test_qrange_hand_values(bits, signed, narrow, expected):
    assert qrange(bits, signed=signed, narrow=narrow) == expected


@pytest.mark.parametrize("bits", range(2, 17))
@pytest.mark.parametrize(("signed", "narrow"), [(True, False), (True, True), (False, False)])
def test_qrange_counts_codes_and_code_dtype_holds_them(bits, signed, narrow):
    qmin, qmax = qrange(bits, signed=signed, narrow=narrow)
    assert qmax - qmin + 1 == 2**bits - int(narrow)
    if signed:
        assert qmax == -qmin - 1 + int(narrow)
    info = torch.iinfo(code_dtype(bits, signed))
    assert info.min <= qmin and qmax <= info.max


@pytest.mark.parametrize(
    ("bits", "signed", "dtype"),
    [
        (2, True, torch.int8),
        (8, True, torch.int8),
        (8, False, torch.uint8),
        (4, False, torch.uint8),
        (9, True, torch.int16),
        (9, False, torch.int16),
        (15, False, torch.int16),
        (16, True, torch.int16),
        (16, False, torch.int32),
    ],
)
def test_code_dtype_is_the_smallest_that_fits(bits, signed, dtype):
    assert code_dtype(bits, signed) == dtype


# --- qparams_from_range / choose_qparams: hand-computed values -------------------------


def _t(v):
    return torch.tensor(v, dtype=torch.float32)


@pytest.mark.parametrize(
    ("lo", "hi", "kwargs", "scale", "zp"),
    [
        # (3 - (-1)) / 255; zp = -128 - round(-1 / (4 / 255)) = -128 - round(-63.75) = -64
        (-1.0, 3.0, {}, 4 / 255, -64),
        # unsigned: zp = 0 - round(-63.75) = 64
        (-1.0, 3.0, {"signed": False}, 4 / 255, 64),
        # symmetric: max|x| / 127.5, zero point 0 (signed) or 128 (unsigned)
        (-1.0, 3.0, {"symmetric": True}, 3 / 127.5, 0),
        (-1.0, 3.0, {"symmetric": True, "signed": False}, 3 / 127.5, 128),
        (-1.0, 3.0, {"symmetric": True, "narrow": True}, 3 / 127, 0),
        # narrow affine: (4) / 254; zp = -127 - round(-63.5) = -127 + 64 = -63 (half to even)
        (-1.0, 3.0, {"narrow": True}, 4 / 254, -63),
        # a range above 0 is widened to [0, 5]: zp = qmin
        (2.0, 5.0, {}, 5 / 255, -128),
        # a range below 0 is widened to [-4, 0]: zp = -128 - round(-255) = 127
        (-4.0, -1.0, {}, 4 / 255, 127),
        # 4 bits: (2 - (-1)) / 15 = 0.2; zp = -8 - round(-5) = -3
        (-1.0, 2.0, {"bits": 4}, 0.2, -3),
        (-1.0, 2.0, {"bits": 4, "symmetric": True}, 2 / 7.5, 0),
        (-1.0, 2.0, {"bits": 4, "symmetric": True, "signed": False}, 2 / 7.5, 8),
    ],
)
def test_qparams_from_range_hand_values(lo, hi, kwargs, scale, zp):
    s, z = qparams_from_range(_t(lo), _t(hi), **kwargs)
    assert s.dtype == torch.float32 and z.dtype == torch.int32
    assert float(s) == pytest.approx(scale, rel=1e-6)
    assert int(z) == zp


def test_qparams_from_range_never_below_eps():
    s, z = qparams_from_range(_t(0.0), _t(0.0))
    assert float(s) == EPS == torch.finfo(torch.float32).eps
    assert int(z) == -128
    s, _ = qparams_from_range(_t(0.0), _t(0.0), eps=1e-3)
    assert float(s) == pytest.approx(1e-3)
    s, _ = qparams_from_range(_t(-1e-12), _t(1e-12), symmetric=True)
    assert float(s) == EPS


def test_choose_qparams_uses_min_and_max_of_x():
    x = torch.tensor([[0.5, -1.0], [3.0, 2.0]])
    s, z = choose_qparams(x)
    assert float(s) == pytest.approx(4 / 255, rel=1e-6) and int(z) == -64
    assert s.shape == () and z.shape == ()


def test_choose_qparams_shapes_per_granularity():
    x = torch.randn(4, 6, 8)
    assert choose_qparams(x)[0].shape == ()
    assert choose_qparams(x, axis=1)[0].shape == (6,)
    assert choose_qparams(x, axis=-1)[1].shape == (8,)
    assert choose_qparams(x, group_size=4)[0].shape == (4, 6, 2)
    assert choose_qparams(x, group_size=8)[1].shape == (4, 6, 1)


def test_choose_qparams_per_channel_uses_each_channels_range():
    x = torch.tensor([[-1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [2.0, 5.0, 4.0]])
    s, z = choose_qparams(x, axis=0)
    assert s.tolist() == pytest.approx([4 / 255, EPS, 5 / 255], rel=1e-6)
    assert z.tolist() == [-64, -128, -128]
    s, z = choose_qparams(x, axis=1)
    # columns: [-1, 0, 2], [3, 0, 5], [0, 0, 4]
    assert s.tolist() == pytest.approx([3 / 255, 5 / 255, 4 / 255], rel=1e-6)
    assert z.tolist() == [-128 - round(-1 / (3 / 255)), -128, -128]


def test_choose_qparams_per_channel_of_a_1d_tensor_is_one_pair_per_element():
    # Regression: amin(dim=()) reduces over everything, giving one scale for all.
    x = torch.tensor([1.0, -2.0, 3.0])
    s, z = choose_qparams(x, axis=0)
    assert s.shape == (3,) and z.shape == (3,)
    for i in range(3):
        si, zi = choose_qparams(x[i : i + 1])
        assert float(s[i]) == float(si) and int(z[i]) == int(zi)
    assert torch.equal(dequantize(quantize(x, s, z, axis=0), s, z, axis=0), x)


def test_choose_qparams_of_a_0d_tensor():
    s, z = choose_qparams(torch.tensor(2.0))
    assert s.shape == () and float(s) == pytest.approx(2 / 255, rel=1e-6) and int(z) == -128


# --- quantize / dequantize / fake_quantize -------------------------------------------


def test_quantize_hand_values():
    # s = 0.5, z = 3: x / s + z = [-253, 3, 4, 5.5 -> 6 (even), 9, 263]; clamp to [-128, 127]
    x = torch.tensor([-128.0, 0.0, 0.5, 1.25, 3.0, 130.0])
    assert quantize(x, 0.5, 3).tolist() == [-128, 3, 4, 6, 9, 127]
    assert quantize(x, 0.5, 3, signed=False).tolist() == [0, 3, 4, 6, 9, 255]
    assert quantize(x, 0.5, 3, narrow=True).tolist() == [-127, 3, 4, 6, 9, 127]
    assert quantize(x, 0.5, 3, bits=4).tolist() == [-8, 3, 4, 6, 7, 7]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"axis": 0}, {"axis": -1}, {"group_size": 50}, {"bits": 4}, {"bits": 12, "axis": 1}],
    ids=["tensor", "axis0", "axis-1", "group50", "4bit", "12bit-axis1"],
)
def test_quantize_matches_float64_reference(seed, kwargs):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(600, 1000, generator=g) * 3 + 0.5  # > one CPU block
    kwargs = dict(kwargs)  # the parametrized dict is shared between seeds
    bits = kwargs.pop("bits", 8)
    scale, zp = choose_qparams(x, bits, **kwargs)
    q = quantize(x, scale, zp, bits, **kwargs)
    qmin, qmax = qrange(bits)
    axis, group_size = kwargs.get("axis"), kwargs.get("group_size")
    if axis is not None:
        shape = [-1 if d == axis % 2 else 1 for d in range(2)]
        s, z, xv = scale.reshape(shape), zp.reshape(shape), x
    elif group_size is not None:
        s, z = scale.unsqueeze(-1), zp.unsqueeze(-1)
        xv = x.reshape(600, -1, group_size)
    else:
        s, z, xv = scale, zp, x
    expected, near_tie = _reference_quantize(xv, s, z, qmin, qmax)
    expected, near_tie = expected.reshape(x.shape), near_tie.reshape(x.shape)
    differ = q.double() != expected
    # float32 and float64 may only disagree a hair from a tie, by one code.
    assert int(differ.sum()) <= 1e-4 * x.numel()
    assert bool(near_tie[differ].all())
    assert float((q.double() - expected).abs().max()) <= 1


def test_quantize_returns_code_dtype_and_shape():
    x = torch.randn(3, 4)
    assert quantize(x, 0.1).dtype == torch.int8
    assert quantize(x, 0.1, 128, signed=False).dtype == torch.uint8
    assert quantize(x, 0.001, bits=12).dtype == torch.int16
    assert quantize(x, 0.001, 2**15, 16, signed=False).dtype == torch.int32
    assert quantize(x, 0.1).shape == (3, 4)
    assert quantize(torch.tensor(0.3), 0.1).shape == ()
    assert quantize(torch.tensor(0.3), 0.1).item() == 3


def test_quantize_leaves_input_untouched_and_accepts_views():
    x = torch.randn(40, 30)
    before = x.clone()
    q = quantize(x.t(), 0.02, 5)
    assert torch.equal(x, before)
    assert torch.equal(q, quantize(x.t().contiguous(), 0.02, 5))
    s, z = choose_qparams(x.t(), axis=0)
    assert torch.equal(quantize(x.t(), s, z, axis=0), quantize(x.t().contiguous(), s, z, axis=0))


def test_quantize_accepts_scalar_and_tensor_qparams_alike():
    x = torch.randn(10)
    ref = quantize(x, 0.05, 7)
    assert torch.equal(quantize(x, torch.tensor(0.05), torch.tensor(7)), ref)
    assert torch.equal(quantize(x, torch.tensor([0.05]), torch.tensor([7])), ref)
    assert torch.equal(quantize(x, 0.05, 7.0), ref)  # a whole float is an integer
    assert torch.equal(quantize(x, torch.tensor(0.05, dtype=torch.float64), 7), ref)


def test_quantize_per_channel_with_one_shared_zero_point():
    x = torch.randn(4, 5)
    s = torch.tensor([0.1, 0.2, 0.3, 0.4])
    shared = quantize(x, s, 3, axis=0)
    assert torch.equal(shared, quantize(x, s, torch.full((4,), 3), axis=0))


def test_dequantize_subtracts_the_zero_point_first():
    q = torch.tensor([-64, 0, 127], dtype=torch.int8)
    # 0.5 * (q - (-64)) = [0, 32, 95.5]; the classic bug 0.5 * q + z would give [-96, -64, -0.5]
    out = dequantize(q, 0.5, -64)
    assert out.dtype == torch.float32
    assert out.tolist() == [0.0, 32.0, 95.5]


def test_dequantize_per_channel_and_per_group_hand_values():
    q = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=torch.int8)
    out = dequantize(q, torch.tensor([0.5, 2.0]), torch.tensor([1, 0]), axis=0)
    assert out.tolist() == [[0.0, 0.5, 1.0, 1.5], [10.0, 12.0, 14.0, 16.0]]
    out = dequantize(q, torch.tensor([1.0, 1.0, 1.0, 0.25]), torch.tensor([0, 0, 0, 4]), axis=1)
    assert out.tolist() == [[1.0, 2.0, 3.0, 0.0], [5.0, 6.0, 7.0, 1.0]]
    scale = torch.tensor([[1.0, 10.0], [0.5, 2.0]])
    out = dequantize(q, scale, torch.tensor([[0, 3], [5, 0]]), group_size=2)
    assert out.tolist() == [[1.0, 2.0, 0.0, 10.0], [0.0, 0.5, 14.0, 16.0]]


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64])
def test_dequantize_accepts_any_integer_codes(dtype):
    q = torch.tensor([0, 3, 100], dtype=dtype)
    assert dequantize(q, 0.25, 2).tolist() == [-0.5, 0.25, 24.5]


def test_dequantize_16_bit_codes_exactly():
    q = torch.tensor([0, 65535], dtype=torch.int32)
    assert dequantize(q, 1.0, 32768).tolist() == [-32768.0, 32767.0]


@pytest.mark.parametrize(
    "kwargs", [{}, {"axis": 1}, {"group_size": 4}, {"signed": False}, {"bits": 4, "narrow": True}]
)
def test_fake_quantize_is_dequantize_of_quantize(kwargs):
    x = torch.randn(6, 8)
    bits, signed, narrow = kwargs.get("bits", 8), kwargs.get("signed", True), kwargs.get("narrow")
    where = {k: v for k, v in kwargs.items() if k in ("axis", "group_size")}
    s, z = choose_qparams(x, bits, signed=signed, narrow=bool(narrow), **where)
    settings = dict(signed=signed, narrow=bool(narrow), **where)
    expected = dequantize(quantize(x, s, z, bits, **settings), s, z, **where)
    assert torch.equal(fake_quantize(x, s, z, bits, **settings), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_compute_in_float32(dtype):
    x = (torch.randn(5, 16) * 4).to(dtype)
    s, z = choose_qparams(x, axis=0)
    s32, z32 = choose_qparams(x.float(), axis=0)
    assert torch.equal(s, s32) and torch.equal(z, z32)
    assert torch.equal(quantize(x, s, z, axis=0), quantize(x.float(), s, z, axis=0))
    fq = fake_quantize(x, s, z, axis=0)
    assert fq.dtype == dtype
    assert torch.equal(fq, fake_quantize(x.float(), s, z, axis=0).to(dtype))


def test_eps_constant_matches_pytorch_observers():
    assert torch.finfo(torch.float32).eps == EPS


# --- how far "bit-identical with torch.quantize_per_tensor" goes ----------------


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("zero_point", [0, 1, 3, -7, 100])
def test_quantize_per_tensor_claim_holds_at_8_bits_and_the_16_bit_order_differs(zero_point):
    from linquant_helpers.hardware import (
        ADD_THEN_ROUND,
        quantize_as_pytorch_does,
        quantize_round_then_add,
        zero_point_rounding_order,
    )

    scale = 0.5
    k = torch.arange(-40, 40, dtype=torch.float64)
    x = ((k + 0.5) * scale).float()  # every x / scale is an exact tie
    add_then_round = torch.round(x.double() / scale + zero_point)  # ours, in float64
    round_then_add = torch.round(x.double() / scale) + zero_point  # the other order
    ours8 = quantize(x, scale, zero_point, 8)
    ours16 = quantize(x, scale, zero_point, 16)
    assert torch.equal(ours16.double(), add_then_round)
    assert torch.equal(ours8.double(), add_then_round.clamp(-128, 127))
    assert torch.equal(
        quantize_round_then_add(x, scale, zero_point, 8).double(), round_then_add.clamp(-128, 127)
    )
    if zero_point % 2:  # ties with an odd zero point: the two orders differ by one code
        assert bool((add_then_round != round_then_add).all())
        assert int(quantize(torch.tensor([0.25]), 0.5, zero_point, 16)) == zero_point + 1
    else:
        assert torch.equal(add_then_round, round_then_add)
    # This PyTorch's 8-bit codes are the package's in this PyTorch's order: quantize's
    # where it adds first (the README's claim), quantize_round_then_add's where it rounds first.
    torch8 = torch.quantize_per_tensor(x, scale, zero_point, torch.qint8).int_repr()
    assert torch.equal(torch8, quantize_as_pytorch_does(x, scale, zero_point, torch.qint8))
    in_order = add_then_round if zero_point_rounding_order() == ADD_THEN_ROUND else round_then_add
    assert torch.equal(torch8.double(), in_order.clamp(-128, 127))
    # 16-bit codes at exact ties: qint32 in the same order as the 8-bit kernel (measured
    # on x86 with torch 2.13 and 2.15, and on aarch64 with 2.13)
    torch16 = torch.quantize_per_tensor(x, scale, zero_point, torch.qint32).int_repr()
    assert torch.equal(torch16.double(), in_order)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_qint32_near_ties_by_cpu_and_release() -> None:
    """Why the bit-identity claim stops at 8 bits: near ties, torch.qint32 on x86 rounds
    x * (1/s) to float32 first: up to torch 2.13 it then adds z in float32 and rounds (two
    roundings), from 2.14 it rounds and then adds z; on aarch64 (2.13) it is quantize's FMA."""
    import platform

    from linquant_helpers.hardware import ADD_THEN_ROUND, zero_point_rounding_order

    gen = torch.Generator().manual_seed(0)
    scale, zero_point = 0.1, 3
    k = torch.randint(-2000, 2000, (200_000,), generator=gen).double()
    noise = torch.randn(200_000, generator=gen, dtype=torch.float64) * 1e-7
    x = ((k + 0.5) * scale + noise).float()  # near ties
    theirs = torch.quantize_per_tensor(x, scale, zero_point, torch.qint32).int_repr()
    ours = quantize(x, scale, zero_point, 16).int()
    inv = 1 / torch.tensor(scale, dtype=torch.float32)
    two_roundings = ((x * inv) + zero_point).round().int()  # product and sum rounded apart
    round_first = (x * inv).round().int() + zero_point
    if platform.machine().lower() in ("arm64", "aarch64"):
        assert torch.equal(theirs, ours)
        return
    if zero_point_rounding_order() == ADD_THEN_ROUND:
        assert torch.equal(theirs, two_roundings)
    else:
        assert torch.equal(theirs, round_first)
    assert bool((theirs != ours).any())  # so no bit-identity claim at 16 bits
