"""Bad input gets a clear error naming the argument and the value; degenerate input works."""

from __future__ import annotations

import re

import pytest
import torch

from linquant_helpers import (
    EPS,
    choose_qparams,
    code_dtype,
    dequantize,
    fake_quantize,
    max_abs_error,
    mse,
    pack,
    packed_numel,
    qparams_from_range,
    qrange,
    quantize,
    sqnr_db,
    unpack,
)
from linquant_helpers.qtensor import quantize_tensor

X = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
Q = torch.zeros(4, 6, dtype=torch.int8)
NAN, INF = float("nan"), float("inf")


def _raises(exc, pattern, fn, *args, **kwargs):
    """Assert ``fn(*args, **kwargs)`` raises ``exc`` with ``pattern`` (a literal) in the message."""
    with pytest.raises(exc, match=re.escape(pattern)):
        fn(*args, **kwargs)


# --- bits ---------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0, 1, 17, 32, -8])
@pytest.mark.parametrize(
    "call",
    [
        lambda b: qrange(b),
        lambda b: code_dtype(b, True),
        lambda b: choose_qparams(X, b),
        lambda b: quantize(X, 0.1, 0, b),
        lambda b: fake_quantize(X, 0.1, 0, b),
        lambda b: quantize_tensor(X, b),
    ],
    ids=["qrange", "code_dtype", "choose_qparams", "quantize", "fake_quantize", "quantize_tensor"],
)
def test_bits_outside_2_to_16(bits, call):
    _raises(ValueError, f"bits must be in [2, 16], got {bits}", call, bits)


@pytest.mark.parametrize(("bits", "shown"), [(8.0, "8.0"), (True, "True"), ("8", "'8'")])
def test_bits_not_an_int(bits, shown):
    _raises(TypeError, f"bits must be an int, got {shown}", qrange, bits)
    _raises(TypeError, f"bits must be an int, got {shown}", quantize, X, 0.1, 0, bits)


@pytest.mark.parametrize("bits", [0, 3, 5, 16, 2.0])
def test_pack_bits_outside_1_2_4_8(bits):
    msg = f"bits must be one of (1, 2, 4, 8) for packing, got {bits!r}"
    _raises(ValueError, msg, pack, Q, bits)
    _raises(ValueError, msg, unpack, torch.zeros(3, dtype=torch.uint8), bits, (3,))
    _raises(ValueError, msg, packed_numel, 10, bits)


# --- scale ------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "shown"), [(0.0, "0"), (-1.0, "-1"), (NAN, "nan"), (INF, "inf")])
def test_scale_not_positive_and_finite(scale, shown):
    msg = f"scale must be positive and finite, got {shown}"
    _raises(ValueError, msg, quantize, X, scale)
    _raises(ValueError, msg, dequantize, Q, scale)
    _raises(ValueError, msg, fake_quantize, X, torch.tensor(scale))
    # one bad channel among good ones is found and shown
    per_channel = torch.tensor([0.1, 0.2, scale, 0.3])
    _raises(ValueError, msg, quantize, X, per_channel, axis=0)
    _raises(ValueError, msg, dequantize, Q, per_channel, axis=0)


def test_scale_of_a_wrong_type():
    _raises(TypeError, "scale must be a float or a tensor, got str", quantize, X, "0.1")
    _raises(TypeError, "scale must be a float or a tensor, got bool", dequantize, Q, True)


def test_scale_that_underflows_float32_is_rejected():
    # 1e-50 is positive as a double, but quantize computes in float32, where it is 0.
    _raises(ValueError, "scale must be positive and finite, got 0", quantize, X, 1e-50)


# --- zero point -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zp", "kwargs", "msg"),
    [
        (128, {}, "zero_point must be an integer in [-128, 127], got 128"),
        (-129, {}, "zero_point must be an integer in [-128, 127], got -129"),
        (-128, {"narrow": True}, "zero_point must be an integer in [-127, 127], got -128"),
        (256, {"signed": False}, "zero_point must be an integer in [0, 255], got 256"),
        (-1, {"signed": False}, "zero_point must be an integer in [0, 255], got -1"),
        (8, {"bits": 4}, "zero_point must be an integer in [-8, 7], got 8"),
        (127.6, {}, "zero_point must be an integer, got 127.6"),
        (0.5, {}, "zero_point must be an integer, got 0.5"),
        (NAN, {}, "zero_point must be an integer, got nan"),
        (INF, {}, "zero_point must be an integer, got inf"),
    ],
)
def test_zero_point_not_an_integer_in_qrange(zp, kwargs, msg):
    _raises(ValueError, msg, quantize, X, 0.1, zp, **kwargs)
    _raises(ValueError, msg, quantize, X, 0.1, torch.tensor(zp), **kwargs)
    _raises(ValueError, msg, quantize, X, torch.full((4,), 0.1), torch.tensor([0, zp, 0, 0]),
            axis=0, **kwargs)  # fmt: skip


def test_zero_point_of_a_wrong_type():
    msg = "zero_point must be an integer or an integer tensor, got str"
    _raises(TypeError, msg, quantize, X, 0.1, "3")
    _raises(TypeError, msg, dequantize, Q, 0.1, "3")


def test_dequantize_zero_point_must_fit_int32():
    # Without a check, the cast to int32 silently wraps 2**32 + 5 around to 5.
    _raises(ValueError, "zero_point must be an integer in [-2147483648, 2147483647]",
            dequantize, Q, 0.1, 2**32 + 5)  # fmt: skip
    _raises(ValueError, "zero_point must be an integer, got 0.5", dequantize, Q, 0.1, 0.5)


# --- x --------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "kind"), [(NAN, "NaN"), (INF, "infinity"), (-INF, "infinity")])
def test_choose_qparams_non_finite_x(bad, kind):
    x = X.clone()
    x[2, 3] = bad
    for kwargs in ({}, {"axis": 0}, {"group_size": 3}):
        _raises(ValueError, f"x must be finite, but it contains {kind}", choose_qparams, x,
                **kwargs)  # fmt: skip
    _raises(ValueError, f"x must be finite, but it contains {kind}", quantize_tensor, x)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4)])
def test_choose_qparams_empty_x(shape):
    msg = f"x is empty (shape {shape}): there is no range to quantize"
    _raises(ValueError, msg, choose_qparams, torch.empty(shape))
    _raises(ValueError, msg, quantize_tensor, torch.empty(shape))


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool])
def test_integer_x(dtype):
    x = torch.ones(4, dtype=dtype)
    msg = f"x must be a floating-point tensor, got dtype {dtype}"
    _raises(TypeError, msg, quantize, x, 0.1)
    _raises(TypeError, msg, fake_quantize, x, 0.1)
    _raises(TypeError, msg, choose_qparams, x)
    _raises(TypeError, msg, quantize_tensor, x)


def test_x_not_a_tensor():
    _raises(TypeError, "x must be a torch.Tensor, got list", quantize, [1.0], 0.1)
    _raises(TypeError, "x must be a torch.Tensor, got ndarray", choose_qparams, X.numpy())


def test_dequantize_float_codes():
    _raises(TypeError, "q must be an integer tensor, got dtype torch.float32", dequantize, X, 0.1)
    _raises(TypeError, "q must be a torch.Tensor, got list", dequantize, [1, 2], 0.1)


# --- granularity --------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [2, -3, 5])
def test_axis_out_of_range(axis):
    msg = f"axis must be in [-2, 1] for a tensor of shape (4, 6), got {axis}"
    _raises(ValueError, msg, choose_qparams, X, axis=axis)
    _raises(ValueError, msg, quantize, X, 0.1, axis=axis)
    _raises(ValueError, msg, dequantize, Q, 0.1, axis=axis)
    _raises(ValueError, msg, quantize_tensor, X, axis=axis)


def test_axis_of_a_0d_tensor_and_of_a_wrong_type():
    _raises(ValueError, "axis must be in [0, -1] for a tensor of shape (), got 0",
            choose_qparams, torch.tensor(1.0), axis=0)  # fmt: skip
    _raises(TypeError, "axis must be an int or None, got 1.0", choose_qparams, X, axis=1.0)


@pytest.mark.parametrize("group_size", [4, 5, 7, 12, 0, -3])
def test_group_size_that_does_not_divide_the_last_dimension(group_size):
    msg = f"group_size must be a positive divisor of the last dimension (6), got {group_size}"
    _raises(ValueError, msg, choose_qparams, X, group_size=group_size)
    _raises(ValueError, msg, quantize, X, 0.1, group_size=group_size)
    _raises(ValueError, msg, dequantize, Q, 0.1, group_size=group_size)


def test_group_size_of_a_wrong_type_or_a_0d_tensor():
    _raises(TypeError, "group_size must be an int or None, got 2.0", choose_qparams, X,
            group_size=2.0)  # fmt: skip
    _raises(ValueError, "group_size=1 needs a tensor with at least one dimension",
            choose_qparams, torch.tensor(1.0), group_size=1)  # fmt: skip


def test_axis_and_group_size_together():
    _raises(ValueError, "give either axis (per-channel) or group_size (per-group), not both; "
            "got axis=0, group_size=2", quantize, X, 0.1, axis=0, group_size=2)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kwargs", "msg"),
    [
        ("scale", {"scale": torch.ones(3)}, "scale has shape (3,), but per-tensor of a tensor "
         "of shape (4, 6) needs shape ()"),
        ("scale", {"scale": torch.ones(6), "axis": 0}, "scale has shape (6,), but per-channel "
         "(axis=0) of a tensor of shape (4, 6) needs shape (4,)"),
        ("scale", {"scale": torch.ones(4, 1), "axis": 0}, "scale has shape (4, 1), but "
         "per-channel (axis=0)"),
        ("zero_point", {"scale": torch.ones(4), "zero_point": torch.zeros(6, dtype=torch.int32),
                        "axis": 0}, "zero_point has shape (6,), but per-channel (axis=0)"),
        ("scale", {"scale": torch.ones(4, 2), "group_size": 2}, "scale has shape (4, 2), but "
         "per-group (group_size=2) of a tensor of shape (4, 6) needs shape (4, 3)"),
        ("scale", {"scale": torch.ones(12), "group_size": 2}, "needs shape (4, 3)"),
    ],
)  # fmt: skip
def test_qparams_whose_shape_does_not_fit_the_granularity(name, kwargs, msg):
    kwargs = dict(kwargs)
    scale, zp = kwargs.pop("scale"), kwargs.pop("zero_point", 0)
    _raises(ValueError, msg, quantize, X, scale, zp, **kwargs)
    _raises(ValueError, msg, dequantize, Q, scale, zp, **kwargs)


def test_narrow_needs_signed():
    msg = "narrow=True drops the most negative code, so it needs signed=True, got signed=False"
    _raises(ValueError, msg, qrange, 8, signed=False, narrow=True)
    _raises(ValueError, msg, choose_qparams, X, signed=False, narrow=True)
    _raises(ValueError, msg, quantize, X, 0.1, 0, signed=False, narrow=True)
    _raises(ValueError, msg, quantize_tensor, X, signed=False, narrow=True)


@pytest.mark.parametrize("eps", [0.0, -1e-3, NAN])
def test_eps_must_be_positive(eps):
    _raises(ValueError, f"eps must be positive, got {eps}", choose_qparams, X, eps=eps)
    _raises(ValueError, f"eps must be positive, got {eps}", qparams_from_range,
            torch.tensor(-1.0), torch.tensor(1.0), eps=eps)  # fmt: skip


# --- packing and metrics ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "bits", "signed", "msg"),
    [
        ([0, 4], 2, False, "q must hold codes in [0, 3] to pack into 2 bits (signed=False), "
         "got values in [0, 4]"),
        ([-1, 1], 2, False, "got values in [-1, 1]"),
        ([2], 2, True, "q must hold codes in [-2, 1] to pack into 2 bits (signed=True)"),
        ([-9, 0], 4, True, "codes in [-8, 7]"),
        ([2], 1, False, "codes in [0, 1]"),
    ],
)  # fmt: skip
def test_pack_codes_out_of_range(codes, bits, signed, msg):
    _raises(ValueError, msg, pack, torch.tensor(codes, dtype=torch.int8), bits, signed=signed)


def test_pack_and_unpack_wrong_tensors():
    _raises(TypeError, "q must be an integer tensor, got dtype torch.float32", pack, X, 4)
    _raises(TypeError, "packed must be a uint8 tensor, got dtype torch.int8",
            unpack, torch.zeros(3, dtype=torch.int8), 4, (6,))  # fmt: skip
    _raises(ValueError, "packed holds 2 bytes, but 5 codes of 4 bits (shape (5,)) need 3",
            unpack, torch.zeros(2, dtype=torch.uint8), 4, (5,))  # fmt: skip


@pytest.mark.parametrize("metric", [mse, max_abs_error, sqnr_db])
def test_metrics_bad_input(metric):
    _raises(ValueError, "must have the same shape, got (3,) and (4,)", metric,
            torch.ones(3), torch.ones(4))  # fmt: skip
    _raises(ValueError, "is empty: there is no error to measure", metric,
            torch.ones(0), torch.ones(0))  # fmt: skip
    _raises(TypeError, "must be a torch.Tensor, got list", metric, [1.0], torch.ones(1))
    _raises(TypeError, "must be a torch.Tensor, got float", metric, torch.ones(1), 1.0)


# --- degenerate but valid input -----------------------------------------------------------


@pytest.mark.parametrize("value", [3.5, -2.0, 1e-30])
@pytest.mark.parametrize("symmetric", [False, True])
def test_constant_tensor(value, symmetric):
    x = torch.full((5, 4), value)
    scale, zp = choose_qparams(x, symmetric=symmetric)
    assert torch.isfinite(scale) and float(scale) > 0
    x_hat = fake_quantize(x, scale, zp)
    # At most half a step (a symmetric range puts the constant on a tie at 127.5),
    # plus the float32 rounding of scale and of scale * (q - z): a few ulps of |x|.
    assert float((x_hat - x).abs().max()) <= float(scale) / 2 + 4 * EPS * abs(value)


@pytest.mark.parametrize(
    ("kwargs", "zero_point"),
    [({}, -128), ({"signed": False}, 0), ({"symmetric": True}, 0),
     ({"symmetric": True, "signed": False}, 128), ({"narrow": True}, -127)],
)  # fmt: skip
def test_all_zero_tensor_gets_scale_eps(kwargs, zero_point):
    # PyTorch's observers do the same: scale = eps, never 0 (which would give NaN).
    x = torch.zeros(3, 4)
    scale, zp = choose_qparams(x, **kwargs)
    assert float(scale) == EPS
    assert int(zp) == zero_point
    qkw = {k: v for k, v in kwargs.items() if k != "symmetric"}
    q = quantize(x, scale, zp, **qkw)
    assert bool((q.long() == zero_point).all())
    assert torch.equal(dequantize(q, scale, zp), x)


@pytest.mark.parametrize("kwargs", [{"axis": 0}, {"axis": 1}, {"group_size": 2}])
def test_an_all_zero_channel_or_group(kwargs):
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    x[1] = 0.0
    x[:, 2:4] = 0.0
    scale, zp = choose_qparams(x, **kwargs)
    assert bool(torch.isfinite(scale).all()) and bool((scale >= EPS).all())
    assert bool((scale == EPS).any())
    x_hat = fake_quantize(x, scale, zp, **kwargs)
    assert bool(torch.isfinite(x_hat).all())
    assert bool((x_hat[x == 0] == 0).all())


def test_single_element_and_0d_tensors():
    for x in (torch.tensor([0.7]), torch.tensor(0.7), torch.tensor([[-0.7]])):
        qt = quantize_tensor(x)
        assert qt.q.shape == x.shape
        assert float((qt.dequantize() - x).abs().max()) <= float(qt.scale) / 2
        assert fake_quantize(x, qt.scale, qt.zero_point).shape == x.shape
    q = quantize(torch.tensor(0.7), 0.1, 1)
    assert q.shape == () and int(q) == 8
    assert dequantize(q, 0.1, 1).shape == ()
    packed = pack(q, 4)
    assert packed.tolist() == [8] and int(unpack(packed, 4, ())) == 8
    s, z = choose_qparams(torch.tensor([0.7]), axis=0)
    assert s.shape == (1,) and z.shape == (1,)


def test_empty_tensors_quantize_to_empty_codes():
    # quantize has no range to choose, so an empty x is fine there (unlike choose_qparams).
    for shape in ((0,), (3, 0), (0, 4)):
        q = quantize(torch.empty(shape), 0.1, 2)
        assert q.shape == shape and q.dtype == torch.int8
        assert dequantize(q, 0.1, 2).shape == shape
        assert pack(q, 4).numel() == 0


@pytest.mark.parametrize("axis", [None, 0])
def test_quantize_rejects_nan_instead_of_inventing_a_code(axis: int | None) -> None:
    x = torch.tensor([[0.5, NAN], [1.0, -1.0]])
    with pytest.raises(ValueError, match="NaN"):
        quantize(x, 0.1 if axis is None else torch.tensor([0.1, 0.1]), axis=axis)


def test_quantize_clamps_infinities() -> None:
    q = quantize(torch.tensor([INF, -INF]), 0.1)
    assert q.tolist() == [127, -128]


# --- silent wrong values become clear errors or correct results ------------------


def test_qparams_from_range_nan_is_an_error_not_zero_point_int32_min():
    _raises(ValueError, "min_val must be finite, but it contains NaN",
            qparams_from_range, torch.tensor(NAN), torch.tensor(1.0))  # fmt: skip
    _raises(ValueError, "max_val must be finite, but it contains infinity",
            qparams_from_range, torch.tensor(-1.0), torch.tensor(INF))  # fmt: skip


def test_qparams_from_range_takes_python_floats():
    ours = qparams_from_range(-1.5, 2.0, 8)
    ref = qparams_from_range(torch.tensor(-1.5), torch.tensor(2.0), 8)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))
    _raises(TypeError, "min_val must be a real number, got '1'", qparams_from_range, "1", 2.0)


def test_a_range_too_wide_for_float32_is_an_error_not_scale_inf():
    _raises(ValueError, "too wide for a float32 scale", qparams_from_range, -3e38, 3e38)
    wide = torch.tensor([-3e38, 3e38])  # finite float32 data, but max - min overflows
    _raises(ValueError, "too wide for a float32 scale", choose_qparams, wide)
    beyond = torch.tensor([-1e300, 1e300], dtype=torch.float64)
    _raises(ValueError, "x holds values beyond the float32 range", choose_qparams, beyond)


def test_fake_quantize_fp16_spanning_its_whole_range_stays_finite():
    x = torch.tensor([-65504.0, -1.0, 0.0, 65504.0], dtype=torch.float16)
    scale, zero_point = choose_qparams(x)
    out = fake_quantize(x, scale, zero_point)
    assert torch.isfinite(out).all()
    # the float32 result, clamped to fp16's range, then cast: nothing else changes
    ref = dequantize(quantize(x, scale, zero_point), scale, zero_point)
    assert torch.equal(out, ref.clamp(-65504, 65504).half())


def test_a_subnormal_scale_blames_the_scale_not_x():
    msg = "scale must be at least 2.94e-39 so that 1 / scale is finite in float32"
    _raises(ValueError, msg, quantize, torch.zeros(3), 1e-40)
    _raises(ValueError, msg, quantize, X, torch.full((4,), 2e-39), axis=0)
    assert quantize(torch.zeros(3), 3e-39).tolist() == [0, 0, 0]  # just above: fine


def test_packed_numel_of_a_negative_count():
    _raises(ValueError, "numel must be in [0, inf], got -5", packed_numel, -5, 4)
    _raises(TypeError, "numel must be an int, got 5.0", packed_numel, 5.0, 4)
    assert packed_numel(2**60 + 1, 4) == 2**59 + 1  # exact, past float precision


# --- errors from deep inside torch become clear errors naming the argument -------


def test_dequantize_a_torch_quantized_tensor():
    qt = torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8)
    _raises(TypeError, "q is a PyTorch quantized tensor (dtype torch.qint8)", dequantize, qt, 0.1)


def test_zero_point_of_2_to_the_70():
    msg = f"zero_point must be an integer in [-128, 127], got {2**70}"
    _raises(ValueError, msg, quantize, X, 0.1, 2**70)
    _raises(ValueError, "zero_point must be an integer in", dequantize, Q, 0.1, -(2**70))


def test_pack_a_uint16_tensor():
    msg = "q must be an int8, uint8, int16, int32 or int64 tensor, got dtype torch.uint16"
    _raises(TypeError, msg, pack, torch.ones(3, dtype=torch.uint16), 4)


def test_fake_quantize_module_takes_numbers_and_checks_them():
    from linquant_helpers import FakeQuantize

    fq = FakeQuantize(0.1, 0)
    assert torch.equal(fq(torch.tensor([0.26])), torch.tensor([0.3]))
    _raises(
        ValueError, "zero_point must be an integer in [0, 255], got 300", FakeQuantize, 0.1, 300
    )
    _raises(ValueError, "scale must be positive and finite, got -1", FakeQuantize, -1.0, 0)


# --- the sweep. Every public function, each tensor argument, each kind of tensor
# torch cannot compute with here: a TypeError/ValueError that names the argument, never a
# RuntimeError/AttributeError/NotImplementedError/OverflowError from inside torch.


def _bad_tensors(dtype: torch.dtype) -> dict[str, object]:
    """Kinds of input, for an argument that expects a tensor of ``dtype``."""
    kinds = {
        "meta": torch.ones(4, 8, dtype=dtype, device="meta"),
        "complex": torch.ones(4, 8, dtype=torch.complex64),
        "bool": torch.ones(4, 8, dtype=torch.bool),
        "sparse": torch.ones(4, 8, dtype=dtype).to_sparse(),
        "list": [[1.0] * 8] * 4,
        "quantized": torch.quantize_per_tensor(torch.ones(4, 8), 0.1, 0, torch.qint8),
    }
    if dtype.is_floating_point:
        kinds["int"] = torch.ones(4, 8, dtype=torch.int8)
    else:
        kinds["float"] = torch.ones(4, 8)
        kinds["uint16"] = torch.ones(4, 8, dtype=torch.uint16)
    return kinds


def _sweep_calls():
    """(label, argument name, expected dtype, call taking the bad value)."""
    from torch import nn

    from linquant_helpers import (
        EntropyObserver,
        FakeQuantize,
        Int4WeightLinear,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        MSEObserver,
        PercentileObserver,
        W8A8Linear,
        W8A16Linear,
        fake_quantize_ste,
        fake_quantize_weight,
        integer_linear,
        quantize_bias,
        quantize_multiplier,
        requantize,
        weight_offset,
    )
    from linquant_helpers.weights import quantize_weight, weight_qparams

    f, i8, i32 = torch.float32, torch.int8, torch.int32
    lin = nn.Linear(8, 4)
    acc = torch.zeros(4, 8, dtype=i32)
    calls = [
        ("choose_qparams", "x", f, lambda v: choose_qparams(v)),
        ("quantize", "x", f, lambda v: quantize(v, 0.1)),
        ("quantize scale", "scale", f, lambda v: quantize(X, v)),
        ("quantize zero_point", "zero_point", i32, lambda v: quantize(X, 0.1, v)),
        ("fake_quantize", "x", f, lambda v: fake_quantize(v, 0.1)),
        ("dequantize", "q", i8, lambda v: dequantize(v, 0.1)),
        ("dequantize scale", "scale", f, lambda v: dequantize(Q, v)),
        ("qparams_from_range min", "min_val", f, lambda v: qparams_from_range(v, 1.0)),
        ("qparams_from_range max", "max_val", f, lambda v: qparams_from_range(-1.0, v)),
        ("quantize_tensor", "x", f, lambda v: quantize_tensor(v)),
        ("pack", "q", i8, lambda v: pack(v, 4)),
        ("unpack", "packed", torch.uint8, lambda v: unpack(v, 4, (8,))),
        ("mse", "x", f, lambda v: mse(v, torch.ones(4, 8))),
        ("max_abs_error", "y", f, lambda v: max_abs_error(torch.ones(4, 8), v)),
        ("sqnr_db", "x_hat", f, lambda v: sqnr_db(torch.ones(4, 8), v)),
        ("fake_quantize_weight", "w", f, lambda v: fake_quantize_weight(v)),
        ("weight_qparams", "w", f, lambda v: weight_qparams(v)),
        ("fake_quantize_ste", "w", f, lambda v: fake_quantize_ste(v)),
        ("FakeQuantize scale", "scale", f, lambda v: FakeQuantize(v, 0)),
        ("FakeQuantize forward", "x", f, lambda v: FakeQuantize(0.1, 0)(v)),
        ("quantize_weight", "weight", f, lambda v: quantize_weight(v, 8)),
        ("quantize_bias", "bias", f, lambda v: quantize_bias(v, 0.1, 0.1)),
        ("quantize_bias scale", "input_scale", f, lambda v: quantize_bias(torch.ones(4), v, 0.1)),
        ("quantize_multiplier", "multiplier", f, lambda v: quantize_multiplier(v)),
        ("requantize", "acc", i32, lambda v: requantize(v, torch.tensor(2**30), torch.tensor(0))),
        ("weight_offset", "q_w", i8, lambda v: weight_offset(v, 0, 0)),
        ("integer_linear", "q_w", i8, lambda v: integer_linear(Q, v, acc[0])),
        ("integer_linear offset", "offset", i32, lambda v: integer_linear(Q, Q, v)),
        ("W8A16Linear", "x", f, lambda v: W8A16Linear.from_float(lin)(v)),
        ("Int4WeightLinear", "x", f, lambda v: Int4WeightLinear.from_float(lin, 4)(v)),
        ("W8A8Linear", "x", f, lambda v: W8A8Linear.from_float(lin, (0.1, 0), (0.1, 0))(v)),
    ]
    for cls in (
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        PercentileObserver,
        MSEObserver,
        EntropyObserver,
    ):
        calls.append((cls.__name__, "x", f, lambda v, cls=cls: cls().update(v)))
    return calls


SWEEP = [
    pytest.param(call, name, kind, id=f"{label}-{kind}")
    for label, name, dtype, call in _sweep_calls()
    for kind in _bad_tensors(dtype)
]


# Integer (and, for the metrics, bool) tensors are valid input to these: their values are real.
ACCEPTS_INTEGERS = {
    "qparams_from_range min", "qparams_from_range max", "mse", "max_abs_error", "sqnr_db",
    "FakeQuantize scale", "quantize_bias scale", "quantize_multiplier",
}  # fmt: skip
SWEEP = [
    p
    for p in SWEEP
    if not (p.id.rsplit("-", 1)[0] in ACCEPTS_INTEGERS and p.id.endswith(("-int", "-bool")))
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("call", "name", "kind"), SWEEP)
def test_sweep_bad_tensors_get_a_clear_error_naming_the_argument(call, name, kind):
    dtype = torch.int8 if name in ("q", "q_w", "packed", "acc", "offset") else torch.float32
    if name == "packed":
        dtype = torch.uint8
    elif name in ("acc", "offset", "zero_point"):
        dtype = torch.int32
    bad = _bad_tensors(dtype)[kind]
    with pytest.raises((TypeError, ValueError)) as info:
        call(bad)
    assert name in str(info.value), f"the message does not name {name!r}: {info.value}"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: quantize(X, 10**400), "scale is too large"),
        (lambda: dequantize(Q, 0.1, 2**70), "zero_point must be an integer in"),
        (lambda: quantize(X, 0.1, 0, 2**70), "bits must be in [2, 16]"),
        (lambda: quantize(X, 0.1, axis=2**70), "axis must be in"),
        (lambda: quantize(X, 0.1, group_size=2**70), "group_size must be a positive divisor"),
        (lambda: qparams_from_range(-(2**2000), 1.0), "min_val is too large"),
        (lambda: choose_qparams(X, eps=10**400), "eps is too large"),
        (lambda: unpack(torch.zeros(1, dtype=torch.uint8), 4, (2**70,)), "shape must hold sizes"),
    ],
    ids=["scale", "zero_point", "bits", "axis", "group_size", "min_val", "eps", "shape"],
)
def test_sweep_huge_ints(call, message):
    _raises(ValueError, message, call)
