"""Properties of quantize/dequantize/pack that hold for every input (hypothesis).

Tensors are small (at most 4 x 5 x 6) so that the suite stays fast; values stay
within +-1e6 so that ``max - min`` cannot overflow float32.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from linquant_helpers import (
    choose_qparams,
    code_dtype,
    dequantize,
    pack,
    qrange,
    quantize,
    unpack,
)

F32_EPS = float(torch.finfo(torch.float32).eps)

finite_floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)
bits_st = st.integers(2, 16)


@st.composite
def tensors(draw, shape=shapes, elements=finite_floats):
    """A float32 tensor of a drawn shape, from a numpy array hypothesis builds."""
    return torch.from_numpy(draw(hnp.arrays(np.float32, draw(shape), elements=elements)))


@st.composite
def schemes(draw):
    """(bits, signed, narrow, symmetric): every combination quantize accepts."""
    bits = draw(bits_st)
    signed = draw(st.booleans())
    narrow = signed and draw(st.booleans())
    return bits, signed, narrow, draw(st.booleans())


@st.composite
def granularities(draw, x):
    """axis / group_size keywords that fit ``x``'s shape (the per-group size divides)."""
    kind = draw(st.sampled_from(["tensor", "channel", "group"]))
    if kind == "channel":
        return {"axis": draw(st.integers(-x.ndim, x.ndim - 1))}
    if kind == "group":
        n = x.shape[-1]
        return {"group_size": draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))}
    return {}


def _broadcast(p, x, axis=None, group_size=None):
    """A qparam expanded to one value per element of ``x`` (for the checks below)."""
    if axis is not None:
        shape = [-1 if d == axis % x.ndim else 1 for d in range(x.ndim)]
        return p.reshape(shape).expand(x.shape)
    if group_size is not None:
        return p.repeat_interleave(group_size, dim=-1)
    return p.expand(x.shape)


# --- round trip, clamping, zero -----------------------------------------------------


@given(data=st.data(), x=tensors(), scheme=schemes())
def test_round_trip_error_at_most_half_a_step(data, x, scheme):
    bits, signed, narrow, symmetric = scheme
    where = data.draw(granularities(x))
    scale, zp = choose_qparams(x, bits, symmetric=symmetric, signed=signed, narrow=narrow, **where)
    q = quantize(x, scale, zp, bits, signed=signed, narrow=narrow, **where)
    x_hat = dequantize(q, scale, zp, **where)

    s = _broadcast(scale, x, **where).double()
    z = _broadcast(zp, x, **where).double()
    qmin, qmax = qrange(bits, signed, narrow)
    # choose_qparams puts every x inside [s * (qmin - z), s * (qmax - z)] up to
    # float32 rounding (symmetric ranges reach half a step beyond, to qmax + 1/2).
    err = (x.double() - x_hat.double()).abs()
    # Slack for float32: fl(1/s), the multiply-add, s * (q - z) and the rounding of
    # scale itself are each off by at most ~1 ulp of |x|, |q - z| * s or |z| * s.
    slack = 4 * F32_EPS * (x.double().abs() + s * ((q.double() - z).abs() + z.abs() + 1))
    assert bool((err <= s / 2 + slack).all()), float((err - s / 2 - slack).max())
    assert int(q.min()) >= qmin and int(q.max()) <= qmax


@given(
    x=tensors(elements=st.floats(-1e4, 1e4, width=32)),
    scale=st.floats(1e-3, 10.0),
    scheme=schemes(),
    data=st.data(),
)
def test_in_range_values_round_trip_and_out_of_range_values_clamp(x, scale, scheme, data):
    bits, signed, narrow, _ = scheme
    qmin, qmax = qrange(bits, signed, narrow)
    zp = data.draw(st.integers(qmin, qmax))
    s = float(torch.tensor(scale, dtype=torch.float32))  # the scale quantize really uses
    q = quantize(x, scale, zp, bits, signed=signed, narrow=narrow)
    x_hat = dequantize(q, scale, zp)
    t = x.double() / s + zp  # exact position on the code axis

    # Clearly beyond the last code (by a whole step): clamped.
    assert bool((q[t >= qmax + 1].long() == qmax).all())
    assert bool((q[t <= qmin - 1].long() == qmin).all())
    # Inside the codes: error at most half a step, plus float32 slack.
    inside = (t >= qmin) & (t <= qmax)
    err = (x.double() - x_hat.double()).abs()[inside]
    slack = 4 * F32_EPS * (x.double().abs()[inside] + s * (abs(qmin) + abs(qmax) + abs(zp)))
    assert bool((err <= s / 2 + slack).all())


@given(shape=shapes, scheme=schemes(), scale=st.floats(1e-6, 1e3), data=st.data())
def test_zero_maps_exactly_to_the_zero_point_and_back(shape, scheme, scale, data):
    bits, signed, narrow, _ = scheme
    qmin, qmax = qrange(bits, signed, narrow)
    zp = data.draw(st.integers(qmin, qmax))
    zeros = torch.zeros(shape)
    q = quantize(zeros, scale, zp, bits, signed=signed, narrow=narrow)
    assert bool((q.long() == zp).all())
    assert bool((dequantize(q, scale, zp) == 0.0).all())


@given(data=st.data(), x=tensors(), scheme=schemes())
def test_zero_survives_choose_qparams(data, x, scheme):
    bits, signed, narrow, symmetric = scheme
    where = data.draw(granularities(x))
    x = x.clone()
    x.view(-1)[0] = 0.0
    scale, zp = choose_qparams(x, bits, symmetric=symmetric, signed=signed, narrow=narrow, **where)
    x_hat = dequantize(
        quantize(x, scale, zp, bits, signed=signed, narrow=narrow, **where), scale, zp, **where
    )
    assert float(x_hat.view(-1)[0]) == 0.0


@given(data=st.data(), x=tensors(), bits=bits_st, narrow=st.booleans())
def test_symmetric_signed_gives_zero_point_zero(data, x, bits, narrow):
    where = data.draw(granularities(x))
    _, zp = choose_qparams(x, bits, symmetric=True, narrow=narrow, **where)
    assert bool((zp == 0).all())
    _, zp = choose_qparams(x, bits, symmetric=True, signed=False, **where)
    assert bool((zp == 2 ** (bits - 1)).all())


# --- granularities agree with each other -------------------------------------------


@given(data=st.data(), x=tensors(), scheme=schemes())
def test_per_channel_equals_per_tensor_channel_by_channel(data, x, scheme):
    bits, signed, narrow, symmetric = scheme
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    settings = dict(signed=signed, narrow=narrow)
    scale, zp = choose_qparams(x, bits, symmetric=symmetric, axis=axis, **settings)
    q = quantize(x, scale, zp, bits, axis=axis, **settings)
    x_hat = dequantize(q, scale, zp, axis=axis)
    for c in range(x.shape[axis]):  # the test may loop; the package does not
        xc = x.select(axis, c)
        sc, zc = choose_qparams(xc, bits, symmetric=symmetric, **settings)
        assert float(sc) == float(scale[c]) and int(zc) == int(zp[c])
        qc = quantize(xc, sc, zc, bits, **settings)
        assert torch.equal(q.select(axis, c), qc)
        assert torch.equal(x_hat.select(axis, c), dequantize(qc, sc, zc))


@given(
    data=st.data(),
    x=tensors(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=8)),
    scheme=schemes(),
)
def test_per_group_equals_per_tensor_group_by_group(data, x, scheme):
    bits, signed, narrow, symmetric = scheme
    n = x.shape[-1]
    g = data.draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    settings = dict(signed=signed, narrow=narrow)
    scale, zp = choose_qparams(x, bits, symmetric=symmetric, group_size=g, **settings)
    assert scale.shape == x.shape[:-1] + (n // g,)
    q = quantize(x, scale, zp, bits, group_size=g, **settings)
    groups = zip(x.reshape(-1, g), q.reshape(-1, g), scale.flatten(), zp.flatten(), strict=True)
    for xg, qg, sg, zg in groups:
        s_ref, z_ref = choose_qparams(xg, bits, symmetric=symmetric, **settings)
        assert float(s_ref) == float(sg) and int(z_ref) == int(zg)
        assert torch.equal(qg, quantize(xg, sg, zg, bits, **settings))


@given(x=tensors(shape=hnp.array_shapes(min_dims=2, max_dims=2, max_side=6)), scheme=schemes())
def test_one_group_per_row_equals_per_channel_along_axis_0(x, scheme):
    bits, signed, narrow, symmetric = scheme
    settings = dict(signed=signed, narrow=narrow)
    s_g, z_g = choose_qparams(x, bits, symmetric=symmetric, group_size=x.shape[-1], **settings)
    s_c, z_c = choose_qparams(x, bits, symmetric=symmetric, axis=0, **settings)
    assert s_g.shape == (x.shape[0], 1) and s_c.shape == (x.shape[0],)
    assert torch.equal(s_g.squeeze(-1), s_c) and torch.equal(z_g.squeeze(-1), z_c)
    q_g = quantize(x, s_g, z_g, bits, group_size=x.shape[-1], **settings)
    q_c = quantize(x, s_c, z_c, bits, axis=0, **settings)
    assert torch.equal(q_g, q_c)
    assert torch.equal(
        dequantize(q_g, s_g, z_g, group_size=x.shape[-1]), dequantize(q_c, s_c, z_c, axis=0)
    )


# --- codes: dtype, ties, idempotence ----------------------------------------------


@given(data=st.data(), x=tensors(), scheme=schemes())
def test_codes_have_code_dtype_and_lie_in_qrange(data, x, scheme):
    bits, signed, narrow, symmetric = scheme
    where = data.draw(granularities(x))
    scale, zp = choose_qparams(x, bits, symmetric=symmetric, signed=signed, narrow=narrow, **where)
    q = quantize(x, scale, zp, bits, signed=signed, narrow=narrow, **where)
    assert q.dtype == code_dtype(bits, signed)
    assert q.shape == x.shape
    qmin, qmax = qrange(bits, signed, narrow)
    assert qmin <= int(q.min()) and int(q.max()) <= qmax


@given(
    k=st.lists(st.integers(-200, 200), min_size=1, max_size=20),
    log2_scale=st.integers(-8, 4),
    zp=st.integers(-50, 50),
)
def test_exact_ties_round_half_to_even(k, log2_scale, zp):
    # x = (k + 1/2) * s with s a power of two is exact in float32, and so is x / s + z.
    s = 2.0**log2_scale
    x = (torch.tensor(k, dtype=torch.float64) + 0.5) * s
    q = quantize(x.float(), s, zp, 16)
    lower = [kk + zp for kk in k]  # the tie lies between lower and lower + 1
    expected = [n if n % 2 == 0 else n + 1 for n in lower]
    assert q.tolist() == expected


@given(data=st.data(), x=tensors(), scheme=schemes())
def test_quantize_of_dequantize_is_idempotent(data, x, scheme):
    bits, signed, narrow, symmetric = scheme
    where = data.draw(granularities(x))
    settings = dict(signed=signed, narrow=narrow, **where)
    scale, zp = choose_qparams(x, bits, symmetric=symmetric, signed=signed, narrow=narrow, **where)
    q = quantize(x, scale, zp, bits, **settings)
    q_again = quantize(dequantize(q, scale, zp, **where), scale, zp, bits, **settings)
    assert torch.equal(q_again, q)


# --- half precision inputs ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@given(data=st.data(), x=tensors(elements=st.floats(-6e4, 6e4, width=32)), scheme=schemes())
def test_half_precision_input_is_quantized_in_float32(dtype, data, x, scheme):
    bits, signed, narrow, symmetric = scheme
    where = data.draw(granularities(x))
    xh = x.to(dtype)
    settings = dict(signed=signed, narrow=narrow, **where)
    scale, zp = choose_qparams(xh, bits, symmetric=symmetric, signed=signed, narrow=narrow, **where)
    s32, z32 = choose_qparams(
        xh.float(), bits, symmetric=symmetric, signed=signed, narrow=narrow, **where
    )
    assert torch.equal(scale, s32) and torch.equal(zp, z32)
    assert torch.equal(
        quantize(xh, scale, zp, bits, **settings), quantize(xh.float(), scale, zp, bits, **settings)
    )


# --- packing ----------------------------------------------------------------------


@given(
    bits=st.sampled_from([1, 2, 4, 8]),
    signed=st.booleans(),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
    data=st.data(),
)
def test_pack_unpack_identity(bits, signed, shape, data):
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    n = math.prod(shape)
    values = data.draw(st.lists(st.integers(low, high), min_size=n, max_size=n))
    dtype = torch.uint8 if (bits == 8 and not signed) else torch.int8
    q = torch.tensor(values, dtype=torch.int64).reshape(shape).to(dtype)
    packed = pack(q, bits, signed=signed)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(n * bits / 8)
    out = unpack(packed, bits, shape, signed=signed)
    assert out.shape == q.shape
    assert torch.equal(out.long(), q.long())


@given(x=tensors(), bits=st.sampled_from([2, 4, 8]), signed=st.booleans())
def test_pack_quantized_codes(x, bits, signed):
    scale, zp = choose_qparams(x, bits, signed=signed)
    q = quantize(x, scale, zp, bits, signed=signed)
    out = unpack(pack(q, bits, signed=signed), bits, q.shape, signed=signed)
    assert torch.equal(out.long(), q.long())
