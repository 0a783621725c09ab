"""Quantized linear layers and quantize_model.

Oracles: PyTorch's quantized kernels (``torch.quantize_per_channel`` and the
fbgemm static int8 ``Linear``), float64 math on the dequantized tensors, and
hand-computed byte layouts.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linquant_helpers import choose_qparams, dequantize, fake_quantize, quantize
from linquant_helpers.integer_ops import MAX_K
from linquant_helpers.kernels import int4_kernel_available
from linquant_helpers.layers import (
    Int4WeightLinear,
    W8A8Linear,
    W8A16Linear,
    quantize_model,
)
from linquant_helpers.observers import MinMaxObserver
from linquant_helpers.packing import pack_int4_halves, unpack_int4_halves
from linquant_helpers.qat import prepare_qat
from linquant_helpers.surgery import module_nbytes
from linquant_helpers.weights import quantize_weight

# torch.quantize_per_channel serves as an oracle only; it warns that it is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensor creation:UserWarning")


def make_linear(in_features: int = 64, out_features: int = 24, bias: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias)


def inputs(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def w8a8(linear: nn.Linear, x: torch.Tensor) -> W8A8Linear:
    """A W8A8 layer calibrated on ``x`` with min-max qparams of its input and output."""
    with torch.no_grad():
        return W8A8Linear.from_float(linear, choose_qparams(x), choose_qparams(linear(x)))


# --- weights ------------------------------------------------------------------------


def test_int8_weight_codes_match_pytorch_per_channel() -> None:
    w = make_linear().weight.detach()
    qw = quantize_weight(w, 8, axis=0)
    expected_scale = w.abs().amax(dim=1) / 127  # symmetric, narrow: max|w| maps to 127
    torch.testing.assert_close(qw.scale, expected_scale)
    oracle = torch.quantize_per_channel(
        w, qw.scale.double(), torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8
    )
    assert torch.equal(qw.q, oracle.int_repr())
    assert qw.q.abs().max() == 127


# --- W8A16 --------------------------------------------------------------------------


def test_w8a16_equals_linear_with_dequantized_weight() -> None:
    linear = make_linear()
    layer = W8A16Linear.from_float(linear)
    x = inputs(3, 5, 64)
    w_hat = dequantize(layer.weight_q, layer.weight_scale, axis=0)
    torch.testing.assert_close(layer(x), F.linear(x, w_hat, linear.bias.detach()))
    # and the weight error is at most half a step per channel
    err = (w_hat - linear.weight.detach()).abs().amax(dim=1)
    assert bool((err <= layer.weight_scale / 2 + 1e-7).all())


def test_w8a16_keeps_input_dtype() -> None:
    layer = W8A16Linear.from_float(make_linear())
    x = inputs(4, 64)
    y = layer(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), layer(x), atol=0.05, rtol=0.02)


# --- Int4 ---------------------------------------------------------------------------


def test_int4_packs_two_codes_per_byte() -> None:
    linear = make_linear(64, 24)
    layer = Int4WeightLinear.from_float(linear, group_size=32)
    assert layer.weight_packed.dtype == torch.uint8
    assert layer.weight_packed.shape == (24, 32)  # (out, in / 2)
    qw = quantize_weight(linear.weight, 4, group_size=32)
    assert torch.equal(layer.weight_codes(), qw.q)
    assert qw.q.min() >= -7 and qw.q.max() <= 7
    # byte (0, 0) holds code (0, 0) in its low nibble and code (0, 32), the first of the
    # row's second half, in its high nibble, two's complement
    c0, c32 = int(qw.q[0, 0]), int(qw.q[0, 32])
    assert int(layer.weight_packed[0, 0]) == (c0 & 0xF) | ((c32 & 0xF) << 4)


def test_pack_int4_halves_by_hand() -> None:
    q = torch.tensor([[-3, 5, 7, -8, 0], [1, -1, 2, -2, 3]], dtype=torch.int8)
    packed = pack_int4_halves(q)  # 5 codes a row: halves of 3 and 2, the last nibble 0
    assert packed.tolist() == [[0x8D, 0x05, 0x07], [0xE1, 0x3F, 0x02]]
    assert torch.equal(unpack_int4_halves(packed, 5), q)
    with pytest.raises(ValueError, match="2-D"):
        pack_int4_halves(q.reshape(-1))
    with pytest.raises(ValueError, match=r"q must hold codes in \[-8, 7\]"):
        pack_int4_halves(q * 2)
    with pytest.raises(ValueError, match=r"packed must have shape \(N, 2\) for in_features=4"):
        unpack_int4_halves(packed, 4)


def test_int4_equals_linear_with_groupwise_dequantized_weight() -> None:
    linear = make_linear(64, 24)
    layer = Int4WeightLinear.from_float(linear, group_size=16)
    assert layer.weight_scale.shape == (24, 4)
    x = inputs(7, 64)
    w_hat = fake_quantize(
        linear.weight.detach(),
        layer.weight_scale,
        0,
        4,
        narrow=True,
        group_size=16,
    )
    torch.testing.assert_close(layer(x), F.linear(x, w_hat, linear.bias.detach()))


def test_int4_odd_number_of_codes_is_padded() -> None:
    linear = make_linear(9, 3)
    layer = Int4WeightLinear.from_float(linear, group_size=3)  # 9 codes a row -> 5 bytes
    assert layer.weight_packed.shape == (3, 5)
    assert torch.equal(layer.weight_codes(), quantize_weight(linear.weight, 4, group_size=3).q)


@pytest.mark.parametrize("group_size", [48, 0, 2.0])
def test_int4_bad_group_size(group_size: object) -> None:
    with pytest.raises(ValueError, match="group_size"):
        Int4WeightLinear.from_float(make_linear(64, 8), group_size=group_size)


# --- W8A8 ---------------------------------------------------------------------------


def test_w8a8_within_one_output_step_of_float_reference() -> None:
    linear = make_linear(128, 48)
    x = inputs(64, 128) * 2 + 0.3
    layer = w8a8(linear, x)
    s_x, z_x = layer.input_scale, layer.input_zero_point
    # float64 reference on the same quantized input and weight
    x_hat = fake_quantize(x, s_x, z_x).double()
    w_hat = dequantize(layer.weight_q, layer.weight_scale, axis=0).double()
    y_ref = F.linear(x_hat, w_hat, linear.bias.detach().double())
    y = layer(x)
    assert y.dtype == torch.float32 and y.shape == (64, 48)
    assert (y.double() - y_ref).abs().max() <= float(layer.output_scale)


def test_w8a8_matches_pytorch_static_int8_linear() -> None:
    """fbgemm's quantized Linear (uint8 activations, per-channel int8 weights) as the oracle.

    The activations use 7 bits, as PyTorch's x86 config does (``reduce_range``):
    its uint8 codes stay in ``[0, 127]``. On CPUs without VNNI, fbgemm adds
    uint8 x int8 products in pairs into a saturating int16, and
    ``2 * 127 * 128 = 32512`` fits it while ``2 * 255 * 127`` does not; with
    7-bit activations the oracle is exact on every x86 CPU.
    """
    linear = make_linear(128, 48)
    x = inputs(64, 128) * 2
    x_scale, x_zero_point = 0.03, 64 - 128  # uint8 zero point 64, as an int8 code
    layer = W8A8Linear.from_float(linear, (x_scale, x_zero_point), (0.05, 3))
    q_u7 = quantize(x, x_scale, 64, 7, signed=False)  # reduce_range: codes 0..127
    ours = layer.forward_int((q_u7.int() - 128).to(torch.int8))

    oracle = torch.ao.nn.quantized.Linear(128, 48)
    w_q = torch.quantize_per_channel(
        linear.weight.detach(),
        layer.weight_scale.double(),
        torch.zeros(48, dtype=torch.long),
        0,
        torch.qint8,
    )
    oracle.set_weight_bias(w_q, linear.bias.detach())
    oracle.scale, oracle.zero_point = 0.05, 3 + 128  # uint8 codes are int8 codes + 128
    x_u8 = torch._make_per_tensor_quantized_tensor(q_u7.to(torch.uint8), x_scale, 64)
    expected = oracle(x_u8).int_repr().int() - 128
    diff = (expected - ours.int()).abs()
    assert int(diff.max()) <= 1  # fbgemm rounds its float bias and multiplier differently
    assert float((diff == 0).float().mean()) > 0.99
    assert int(q_u7.max()) > 100 and int(q_u7.min()) < 20  # the 7-bit range is used


def test_w8a8_forward_int_is_integer_only_composition() -> None:
    from linquant_helpers.integer_ops import integer_linear, requantize

    linear = make_linear()
    layer = w8a8(linear, inputs(32, 64))
    q_x = quantize(inputs(5, 64, seed=3), layer.input_scale, layer.input_zero_point)
    acc = integer_linear(q_x, layer.weight_q, layer.offset)
    expected = requantize(acc, layer.m0, layer.shift, layer.output_zero_point)
    got = layer.forward_int(q_x)
    assert got.dtype == torch.int8
    assert torch.equal(got, expected)


def test_w8a8_accepts_observers() -> None:
    linear = make_linear()
    x = inputs(32, 64)
    obs_in, obs_out = MinMaxObserver(), MinMaxObserver()
    obs_in.update(x)
    with torch.no_grad():
        obs_out.update(linear(x))
    from_obs = W8A8Linear.from_float(linear, obs_in, obs_out)
    from_pairs = w8a8(linear, x)
    for name, buffer in from_pairs.state_dict().items():
        assert torch.equal(buffer, from_obs.state_dict()[name]), name


def test_w8a8_bad_qparams() -> None:
    linear = make_linear()
    with pytest.raises(ValueError, match="zero_point"):
        W8A8Linear.from_float(linear, (0.1, 200), (0.1, 0))  # a uint8 zero point
    with pytest.raises(ValueError, match="per-tensor"):
        W8A8Linear.from_float(linear, (torch.ones(3), torch.zeros(3)), (0.1, 0))
    with pytest.raises(TypeError, match="pair"):
        W8A8Linear.from_float(linear, 0.1, (0.1, 0))
    with pytest.raises(ValueError, match="signed int8"):
        W8A8Linear.from_float(linear, MinMaxObserver(signed=False), (0.1, 0))
    with pytest.raises(ValueError, match="bias too large"):
        W8A8Linear.from_float(linear, (1e-20, 0), (1.0, 0))  # b / (s_x s_w) ~ 1e22
    with pytest.raises(ValueError, match="multiplier"):  # M = s_x s_w / s_y ~ 1e-22
        W8A8Linear.from_float(make_linear(bias=False), (1e-20, 0), (1.0, 0))


# --- every layer: state_dict, repr, errors, devices ---------------------------------

LAYERS = {
    "W8A16": lambda lin: W8A16Linear.from_float(lin),
    "W8A8": lambda lin: w8a8(lin, inputs(16, lin.in_features)),
    "Int4": lambda lin: Int4WeightLinear.from_float(lin, group_size=16),
}
EMPTY = {
    "W8A16": lambda i, o, b: W8A16Linear(i, o, bias=b),
    "W8A8": lambda i, o, b: W8A8Linear(i, o, bias=b),
    "Int4": lambda i, o, b: Int4WeightLinear(i, o, bias=b, group_size=16),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("kind", LAYERS)
def test_state_dict_round_trip(kind: str, bias: bool) -> None:
    layer = LAYERS[kind](make_linear(64, 24, bias=bias))
    fresh = EMPTY[kind](64, 24, bias)
    x = inputs(6, 64)
    assert not torch.equal(fresh(x), layer(x))  # the empty layer computes something else
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x), layer(x))

    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    loaded = EMPTY[kind](64, 24, bias)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(loaded(x), layer(x))
    for name, tensor in layer.state_dict().items():
        assert loaded.state_dict()[name].dtype == tensor.dtype, name


@pytest.mark.parametrize("kind", LAYERS)
def test_state_dict_into_wrong_size_fails(kind: str) -> None:
    layer = LAYERS[kind](make_linear(64, 24))
    with pytest.raises(RuntimeError, match="size mismatch"):
        EMPTY[kind](64, 32, True).load_state_dict(layer.state_dict())


def test_readable_repr() -> None:
    linear = make_linear(64, 24)
    assert repr(W8A16Linear.from_float(linear)) == (
        "W8A16Linear(in_features=64, out_features=24, bias=True, "
        "weight=int8 per-channel symmetric, activations=float)"
    )
    assert "group_size=16" in repr(LAYERS["Int4"](linear))
    assert "packed 2 per byte" in repr(LAYERS["Int4"](linear))
    text = repr(W8A8Linear.from_float(linear, (0.03, -5), (0.05, 3)))
    assert "input=int8 (scale=0.03, zero_point=-5)" in text
    assert "output=int8 (scale=0.05, zero_point=3)" in text


@pytest.mark.parametrize("kind", LAYERS)
def test_bad_input(kind: str) -> None:
    layer = LAYERS[kind](make_linear(64, 24))
    with pytest.raises(ValueError, match="64 features"):
        layer(inputs(3, 32))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(3, 64, dtype=torch.int64))
    with pytest.raises(TypeError, match="nn.Linear"):
        type(layer).from_float(nn.Conv2d(1, 1, 1), *([(0.1, 0)] * 2 if kind == "W8A8" else []))


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="in_features"):
        W8A16Linear(0, 3)
    with pytest.raises(ValueError, match="out_features"):
        W8A8Linear(3, True)


@pytest.mark.parametrize("kind", LAYERS)
def test_batched_input_and_half_precision_model(kind: str) -> None:
    layer = LAYERS[kind](make_linear(64, 24))
    x = inputs(2, 3, 64)
    assert layer(x).shape == (2, 3, 24)
    torch.testing.assert_close(layer(x)[1], layer(x[1]))
    # .half() turns the float buffers (scales, bias) to float16; integer codes stay put
    half = LAYERS[kind](make_linear(64, 24)).half()
    assert {b.dtype for b in half.buffers()} - {torch.float16} <= {
        torch.int8,
        torch.uint8,
        torch.int32,
    }
    y = half(x.half())
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), layer(x), atol=0.03, rtol=0.02)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", LAYERS)
def test_layers_on_cuda(kind: str) -> None:
    linear = make_linear(64, 32)
    layer = LAYERS[kind](linear)
    x = inputs(32, 64)  # 32 rows: torch._int_mm on CUDA needs more than 16
    moved = copy.deepcopy(layer).cuda()
    assert all(b.is_cuda for b in moved.buffers())
    # W8A8 may round a near-tie input differently on the GPU: one output step at most
    atol = float(layer.output_scale) if kind == "W8A8" else 1e-4
    torch.testing.assert_close(moved(x.cuda()).cpu(), layer(x), atol=atol, rtol=1e-4)
    qparams = [(0.03, -5), (0.05, 3)] if kind == "W8A8" else []
    built_on_gpu = type(layer).from_float(copy.deepcopy(linear).cuda(), *qparams)
    assert all(b.is_cuda for b in built_on_gpu.buffers())


def test_module_nbytes() -> None:
    linear = make_linear(64, 24)
    assert module_nbytes(linear) == 4 * (64 * 24 + 24)
    assert module_nbytes(W8A16Linear.from_float(linear)) == 64 * 24 + 4 * 24 + 4 * 24
    # int4: half a byte per weight, one float32 scale per group of 16, float32 bias
    assert module_nbytes(LAYERS["Int4"](linear)) == 64 * 24 // 2 + 4 * 24 * 4 + 4 * 24


# --- quantize_model -----------------------------------------------------------------


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Sequential(nn.Linear(64, 32), nn.ReLU()),
        nn.Linear(32, 10),
    )


@pytest.mark.parametrize("method", ["w8a16", "w8a8", "int4"])
def test_quantize_model_swaps_linears_and_leaves_original(method: str) -> None:
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = inputs(32, 64)
    calibration = [x[:16], x[16:]] if method == "w8a8" else None
    quantized = quantize_model(model, method, calibration=calibration)
    expected = {"w8a16": W8A16Linear, "w8a8": W8A8Linear, "int4": Int4WeightLinear}[method]
    assert [type(m) for m in (quantized[0], quantized[2][0], quantized[3])] == [expected] * 3
    assert all(type(m) is nn.Linear for m in (model[0], model[2][0], model[3]))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        error = (quantized(x) - model(x)).abs().max()
        assert error < (0.25 if method == "int4" else 0.1) * model(x).abs().max()


def test_quantize_model_skip() -> None:
    model = mlp()
    quantized = quantize_model(model, "w8a16", skip=("3", "2"))  # a leaf and a container
    assert isinstance(quantized[0], W8A16Linear)
    assert type(quantized[2][0]) is nn.Linear and type(quantized[3]) is nn.Linear
    assert quantized[3] is not model[3]  # a copy, even where nothing was quantized
    assert torch.equal(quantized[3].weight, model[3].weight)


def test_quantize_model_w8a8_calibrates_each_layer() -> None:
    model = mlp()
    x = inputs(32, 64)
    quantized = quantize_model(model, "w8a8", calibration=[x], skip=("3",))
    with torch.no_grad():
        hidden = model[1](model[0](x))
        expected_in, expected_out = choose_qparams(hidden), choose_qparams(model[2][0](hidden))
    layer = quantized[2][0]
    assert torch.equal(layer.input_scale, expected_in[0])
    assert torch.equal(layer.input_zero_point, expected_in[1])
    assert torch.equal(layer.output_scale, expected_out[0])
    assert not model[0]._forward_hooks  # calibration hooks are removed


def test_quantize_model_errors() -> None:
    model = mlp()
    with pytest.raises(ValueError, match="not modules"):
        quantize_model(model, skip=("classifier",))
    with pytest.raises(TypeError, match="collection"):
        quantize_model(model, skip="3")
    with pytest.raises(ValueError, match="method"):
        quantize_model(model, "int3")
    with pytest.raises(ValueError, match="calibration"):
        quantize_model(model, "w8a8")
    with pytest.raises(ValueError, match="calibration is empty"):
        quantize_model(model, "w8a8", calibration=[])
    with pytest.raises(ValueError, match="layer '3'.*group_size"):
        quantize_model(model, "int4", group_size=64)  # 64 does not divide layer 3's 32 inputs
    assert isinstance(quantize_model(model, "int4", group_size=64, skip=("3",))[0], nn.Module)


@pytest.mark.parametrize("method", ["w8a16", "int4"])
def test_quantize_model_fused_is_one_argument_to_the_fused_kernels(method: str) -> None:
    if method == "int4" and not int4_kernel_available():
        pytest.skip("this PyTorch has no CPU int4 kernel")
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    fused = quantize_model(model, method, fused=True)
    default = quantize_model(model, method)
    assert [m.fused for m in fused if not isinstance(m, nn.ReLU)] == [True, True]
    assert [m.fused for m in default if not isinstance(m, nn.ReLU)] == [False, False]
    x = torch.randn(4, 64).bfloat16()
    with torch.no_grad():  # the same formula: within bfloat16 rounding of the default path
        torch.testing.assert_close(fused(x).float(), default(x).float(), atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="fused=True is for the weight-only methods"):
        quantize_model(model, "w8a8", calibration=[torch.randn(2, 64)], fused=True)
    if method == "int4":  # 24 outputs: the int4 kernel needs a multiple of 16
        with pytest.raises(ValueError, match="layer '0'.*multiple of 16"):
            quantize_model(nn.Sequential(nn.Linear(64, 24)), "int4", fused=True)


def test_quantize_model_of_a_bare_linear() -> None:
    assert isinstance(quantize_model(make_linear()), W8A16Linear)


def test_quantize_model_leaves_multihead_attention_projection_in_float() -> None:
    """nn.MultiheadAttention reads out_proj.weight directly: that layer cannot be swapped."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.MultiheadAttention(16, 2, batch_first=True))
    quantized = quantize_model(model, "w8a16")
    assert isinstance(quantized[0], W8A16Linear)
    assert type(quantized[1].out_proj) is type(model[1].out_proj)
    x = inputs(2, 5, 16)
    with torch.no_grad():
        h = quantized[0](x)
        torch.testing.assert_close(quantized[1](h, h, h)[0], model[1](h, h, h)[0])


# --- PyTorch's own transformer modules, shared and tied layers, pruned rows ------


METHOD_KW = {"w8a16": {}, "int4": {"group_size": 8}, "w8a8": {}}


def _encoder(seed: int = 0) -> nn.TransformerEncoder:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


def _standard_path(model: nn.Module, *args, **kwargs) -> torch.Tensor:
    """``model``'s output with PyTorch's fused fast path switched off globally."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return model(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def _count_calls(monkeypatch, cls) -> list[int]:
    """Count calls of ``cls.forward`` (a hook would itself switch the fast path off)."""
    calls, forward = [0], cls.forward

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", counted)
    return calls


LAYER_OF = {"w8a16": W8A16Linear, "int4": Int4WeightLinear, "w8a8": W8A8Linear}


@pytest.mark.parametrize("method", ["w8a16", "int4", "w8a8"])
def test_quantized_transformer_encoder_runs_the_quantized_layers(method, monkeypatch):
    model = _encoder()
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 3:] = True  # padding: the encoder's nested-tensor path would read .weight too
    q = quantize_model(model, method, calibration=[x], **METHOD_KW[method])
    calls = _count_calls(monkeypatch, LAYER_OF[method])
    with torch.no_grad():  # eval + no_grad: where PyTorch's fused fast path would run
        ref = model(x)
        for kwargs in ({}, {"src_key_padding_mask": mask}):
            calls[0] = 0
            out = q(x, **kwargs)
            assert calls[0] == 4, "every quantized linear layer (2 per encoder layer) must run"
            assert torch.allclose(out, _standard_path(q, x, **kwargs), atol=1e-5)
        out = q(x)
    assert (out - ref).abs().max() < (0.2 if method == "int4" else 0.05)


def test_prepare_qat_on_a_transformer_encoder_and_multihead_attention(monkeypatch):
    from linquant_helpers.qat import QATWrapper

    model = _encoder()
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))
    qat = prepare_qat(model, bits=4).eval()
    calls = _count_calls(monkeypatch, QATWrapper)
    with torch.no_grad():
        assert torch.allclose(qat(x), _standard_path(qat, x), atol=1e-5)
        assert calls[0] == 2 * 4  # both runs called the 4 wrapped linear layers
        assert not torch.equal(qat(x), model(x))  # the fake-quantized weights are used
    # attention's output projection is read, not called: it stays a float nn.Linear
    attn = qat.layers[0].self_attn
    assert type(attn.out_proj).__name__ == "NonDynamicallyQuantizableLinear"
    qat.train()
    qat(x).sum().backward()
    assert qat.layers[0].linear1.module.weight.grad is not None

    mha = nn.Sequential()
    mha.attn = nn.MultiheadAttention(8, 2, batch_first=True)
    q = prepare_qat(nn.ModuleDict({"attn": mha.attn, "head": nn.Linear(8, 3)}))
    y = torch.randn(2, 4, 8)
    out, _ = q["attn"](y, y, y)
    assert q["head"](out).shape == (2, 4, 3)


class _Shared(nn.Module):
    """One Linear used twice (a shared layer) and two Linears with one tied weight."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Linear(16, 16)
        self.again = self.block  # the same module under a second name
        self.up = nn.Linear(16, 16)
        self.down = nn.Linear(16, 16)
        self.down.weight = self.up.weight  # tied weights, separate biases

    def forward(self, x):
        return self.down(torch.relu(self.up(self.again(torch.relu(self.block(x))))))


@pytest.mark.parametrize("method", ["w8a16", "int4", "w8a8"])
def test_shared_and_tied_layers_are_quantized_once(method):
    model = _Shared().eval()
    x = torch.randn(4, 16)
    q = quantize_model(model, method, calibration=[x], **METHOD_KW[method])
    assert q.block is q.again  # one shared quantized layer
    codes = "weight_packed" if method == "int4" else "weight_q"
    assert getattr(q.up, codes) is getattr(q.down, codes)  # the tied weight, stored once
    assert q.up.bias is not q.down.bias or method == "w8a8"
    untied = quantize_model(_untied(model), method, calibration=[x], **METHOD_KW[method])
    assert module_nbytes(q) < module_nbytes(untied)
    with torch.no_grad():
        assert torch.allclose(q(x), model(x), atol=0.3)


def _untied(model: _Shared) -> _Shared:
    copy_ = copy.deepcopy(model)
    copy_.down.weight = nn.Parameter(copy_.up.weight.detach().clone())
    copy_.again = copy.deepcopy(copy_.block)
    return copy_


def test_w8a8_converts_a_pruned_row_with_a_bias():
    torch.manual_seed(0)
    linear = nn.Linear(8, 3)
    with torch.no_grad():
        linear.weight[1] = 0.0  # an all-zero (pruned) output row
        linear.bias[1] = 0.37
    layer = W8A8Linear.from_float(linear, (0.001, 0), (0.01, 0))  # was "bias too large for int32"
    x = torch.rand(5, 8) * 0.1
    out = layer(x)
    assert torch.allclose(out[:, 1], torch.full((5,), 0.37), atol=0.01 / 2 + 1e-6)
    assert torch.allclose(out, linear(x), atol=0.02)


def test_w8a8_rejects_a_nan_bias_instead_of_the_int32_minimum():
    linear = nn.Linear(4, 3)
    with torch.no_grad():
        linear.bias[0] = float("nan")
    with pytest.raises(ValueError, match="bias must be finite, but it contains NaN"):
        W8A8Linear.from_float(linear, (0.1, 0), (0.1, 0))


def test_w8a8_rejects_more_inputs_than_an_int32_accumulator_holds():
    with pytest.raises(ValueError, match=f"more than the {MAX_K}"):
        W8A8Linear.from_float(nn.Linear(MAX_K + 1, 1), (0.1, 0), (0.1, 0))
