"""Bridges from the package's words to the runtimes of lesson 10: torchao and ONNX Runtime.

torchao says the same things as :mod:`~linquant_helpers.affine` with other words
(:data:`TORCHAO_WORDS`); :func:`torchao_block_size` and :func:`torchao_qparams_args`
translate one call into the other, and :func:`torchao_weight_codes` reads the codes
out of a layer that ``torchao.quantization.quantize_`` converted.

ONNX Runtime quantizes an ONNX graph, not a module: :func:`export_onnx` writes
the model to ONNX bytes (in memory), :func:`ort_quantize_static` calibrates and
inserts QuantizeLinear/DequantizeLinear pairs (the QDQ format) in a temporary
folder that it removes, and :func:`ort_qdq_qparams` reads back, per conv or linear
layer, the scale and zero point of its input and weight.

The libraries are imported inside the functions (:func:`~linquant_helpers.optional.require`):
without the ``runtimes`` extra, ``import linquant_helpers`` still works.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .affine import EPS, qrange
from .granularity import Granularity
from .optional import quiet_loggers, require
from .validation import check_finite, check_float_tensor

TORCHAO_WORDS = (
    (
        "granularity",
        "axis=None / axis=k / group_size=g",
        "block_size = x.shape / 1 at k, full elsewhere / (1, .., 1, g)",
    ),
    ("symmetric=True", "z = 0, s = max|x| / ((qmax - qmin) / 2)", "MappingType.SYMMETRIC"),
    ("symmetric=False", "s = (max - min) / (qmax - qmin), integer z", "MappingType.ASYMMETRIC"),
    ("bits, signed, narrow", "qrange(...) -> (qmin, qmax)", "target_dtype, quant_min, quant_max"),
    ("zero point", "an integer code: x_hat = s * (q - z)", "zero-point domain INT"),
    ("eps", "EPS = float32 eps, 1.19e-7", "eps=None: finfo.smallest_normal, 1.18e-38"),
    ("rounding", "round(x * (1/s) + z)", "round(x * (1/s)) + z"),
)
"""``(concept, linquant_helpers, torchao 0.18)`` rows: the same quantization in two vocabularies."""


# ---------------------------------------------------------------- torchao


def torchao_block_size(
    shape: torch.Size | tuple[int, ...], axis: int | None = None, group_size: int | None = None
) -> tuple[int, ...]:
    """torchao's ``block_size``: the shape of the block of ``x`` that shares one scale.

    * per-tensor (``axis=None, group_size=None``): ``shape`` itself;
    * per-channel (``axis=k``): 1 along ``k`` (each index its own scale), the full
      size elsewhere, e.g. ``(1, K)`` for ``axis=0`` of a ``(C, K)`` weight;
    * per-group (``group_size=g``): ``g`` along the last dimension, 1 elsewhere.

    Raises what :meth:`Granularity.of` raises for a bad ``axis`` or ``group_size``.
    """
    shape = torch.Size(shape)
    g = Granularity.of(shape, axis, group_size)
    if g.axis is not None:
        return tuple(1 if d == g.axis else n for d, n in enumerate(shape))
    if g.group_size is not None:
        return (1,) * (len(shape) - 1) + (g.group_size,)
    return tuple(shape)


def torchao_qparams_args(
    shape: torch.Size | tuple[int, ...],
    bits: int = 8,
    *,
    symmetric: bool = False,
    signed: bool = True,
    narrow: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    eps: float = EPS,
) -> dict[str, Any]:
    """The arguments of torchao's ``choose_qparams_affine`` for ``choose_qparams``'s keywords.

    ``mapping_type`` from ``symmetric``, ``block_size`` from :func:`torchao_block_size`,
    ``quant_min, quant_max = qrange(bits, signed, narrow)``, ``target_dtype``
    int8/uint8 up to 8 bits (torchao keeps 4-bit codes in int8 with a narrower
    range), and ``eps`` (torchao's own default is far smaller: see
    :data:`TORCHAO_WORDS`). Use: ``choose_qparams_affine(x, **torchao_qparams_args(x.shape, ...))``.
    Raises ``ValueError`` for ``bits`` above 8.
    """
    if bits > 8:
        raise ValueError(f"bits must be at most 8 for torchao's int8/uint8 codes, got {bits}")
    mapping = require("torchao.quantization.quant_primitives").MappingType
    qmin, qmax = qrange(bits, signed=signed, narrow=narrow)
    return {
        "mapping_type": mapping.SYMMETRIC if symmetric else mapping.ASYMMETRIC,
        "block_size": torchao_block_size(shape, axis, group_size),
        "target_dtype": torch.int8 if signed else torch.uint8,
        "quant_min": qmin,
        "quant_max": qmax,
        "eps": eps,
    }


def torchao_weight_codes(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes, scale, zero_point)`` of a linear layer converted by torchao's ``quantize_``.

    Reads the weight's tensor subclass (``Int8Tensor``, ``IntxUnpackedToInt8Tensor``):
    codes ``qdata`` of the weight's shape, and the scale and zero point with one
    value per block, shaped as ``choose_qparams`` returns them (``(C,)`` per
    channel, ``(C, K / g)`` per group); a missing zero point reads as zeros.
    Raises ``TypeError`` if the weight holds no ``qdata``.
    """
    w = getattr(layer, "weight", None)
    if w is None or not hasattr(w, "qdata"):
        raise TypeError(
            f"layer's weight must be a torchao quantized tensor (with qdata), got "
            f"{type(w).__name__}: call torchao.quantization.quantize_ on the layer first"
        )
    out = w.qdata.shape[0]
    scale = w.scale.reshape(out, -1).squeeze(-1)
    zero = getattr(w, "zero_point", None)
    zero = torch.zeros_like(scale, dtype=torch.int32) if zero is None else zero.reshape(scale.shape)
    return w.qdata, scale, zero.to(torch.int32)


NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "root", "torch.onnx")
"""Loggers that print while torchao is imported (kernels for GPUs it cannot load) or
while ONNX Runtime quantizes (advice to pre-process): nothing about the numbers."""


@contextmanager
def quiet() -> Iterator[None]:
    """Silence :data:`NOISY_LOGGERS` and warnings inside the block (deterministic output)."""
    with quiet_loggers(*NOISY_LOGGERS), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------- ONNX Runtime

INPUT_NAME = "x"
"""The name of the exported model's input."""


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """The ONNX bytes of ``model`` (opset 17, batch dimension dynamic), made in memory.

    Uses the TorchScript exporter (``dynamo=False``): for a small CNN it is
    quick and needs no temporary files. Needs ``onnx`` (the ``runtimes`` extra).
    """
    require("onnx")
    buffer = io.BytesIO()
    with quiet(), torch.no_grad():
        torch.onnx.export(
            model.eval(),
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=["logits"],
            dynamic_axes={INPUT_NAME: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def ort_quantize_static(
    onnx_model: bytes, batches: Iterable[torch.Tensor], *, per_channel: bool = True
) -> bytes:
    """ONNX Runtime's static quantization, QDQ format, min-max calibrated on ``batches``.

    Activations uint8 asymmetric, per tensor (``QuantType.QUInt8``); weights int8
    symmetric, per output channel if ``per_channel``. The calibration reader hands
    ONNX Runtime the same batches the learner calibrated with. Works in a
    temporary folder that is removed; returns the quantized model's bytes.
    Raises ``TypeError`` for ``onnx_model`` that is not bytes or a batch that is
    not a float tensor, ``ValueError`` for no batch at all or a batch with NaN or
    infinity (ONNX Runtime would fail deep inside with ``AssertionError: scale issue``).
    """
    if not isinstance(onnx_model, (bytes, bytearray)):
        raise TypeError(
            f"onnx_model must be the bytes of an ONNX model (export_onnx), "
            f"got {type(onnx_model).__name__}"
        )
    feeds = []
    for index, x in enumerate(batches):
        check_float_tensor(x, f"batches[{index}]")
        check_finite(x, f"batches[{index}]")
        feeds.append({INPUT_NAME: x.detach().float().cpu().numpy()})
    if not feeds:
        raise ValueError("batches must hold at least one calibration batch, got none")
    quantization = require("onnxruntime.quantization")
    onnx = require("onnx")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as folder, quiet():
        out = Path(folder) / "quantized.onnx"
        quantization.quantize_static(
            onnx.load_from_string(onnx_model),
            out,
            Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
        return out.read_bytes()


def ort_qdq_qparams(onnx_model: bytes) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """``{layer: {"input": (scale, zp), "weight": (scale, zp)}}`` read from a QDQ model.

    For every Conv and Gemm node, the DequantizeLinear feeding its input 0 and
    its input 1 (the weight) holds a scale and a zero point. The layer name is
    the module's name that the exporter keeps in the node's name
    (``/features/features.1/.../features.1.0.0/Conv`` -> ``features.1.0.0``).
    """
    onnx = require("onnx")
    graph = onnx.load_from_string(onnx_model).graph
    to_array = onnx.numpy_helper.to_array
    values = {i.name: torch.from_numpy(to_array(i).copy()) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    found = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        qparams = {}
        for what, tensor in (("input", node.input[0]), ("weight", node.input[1])):
            dq = producer.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                raise ValueError(f"{node.name}'s {what} is not dequantized: is the model QDQ?")
            qparams[what] = (values[dq.input[1]].float(), values[dq.input[2]].to(torch.int32))
        found[node.name.rsplit("/", 2)[-2]] = qparams
    return found


def ort_session(onnx_model: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session for ``onnx_model``, with ``threads`` intra-op threads,
    all graph optimizations, and warnings off (they print timestamps)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def ort_run(session: Any, x: torch.Tensor) -> torch.Tensor:
    """Run ``session`` on ``x`` (float32) and return its first output as a tensor."""
    (out, *_) = session.run(None, {INPUT_NAME: x.detach().cpu().float().numpy()})
    return torch.from_numpy(out)
