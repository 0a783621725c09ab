"""Quantized replacements for ``nn.Linear``, and :func:`quantize_model` to swap them in.

=========================  ========================  ============================================
layer                      weights                   activations, compute
=========================  ========================  ============================================
:class:`W8A16Linear`       int8, per output channel  float; codes to float, scales on the outputs
:class:`W8A8Linear`        int8, per output channel  int8, static (calibrated); integer-only
:class:`Int4WeightLinear`  int4, per group, packed   float; weights unpacked every call
=========================  ========================  ============================================

The two weight-only layers never hold their whole float weight: ``forward``
dequantizes a block of output rows (:data:`BLOCK_ELEMENTS` weights), multiplies
it while it is still in the CPU's cache, writes that block's outputs into the
preallocated result, and reuses the block's buffer for the next one
(:func:`blocked_linear`). That is the idea of every fused weight-only kernel,
which does the same in registers.

Weights are quantized symmetrically with narrow codes (``[-127, 127]`` at 8 bits,
``[-7, 7]`` at 4): zero point 0, so ``w = s * q`` and the integer matmul needs no
weight zero-point term. Each layer keeps its codes and qparams in registered
buffers, so ``state_dict()`` / ``load_state_dict()`` and ``.to(device)`` work as
for any module: build an empty layer with the same sizes, then load.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .affine import dequantize, quantize
from .calibration import calibrate_linears
from .integer_ops import (
    check_accumulator_length,
    integer_linear,
    quantize_bias,
    quantize_multiplier,
    requantize,
    weight_offset,
)
from .kernels import (
    KERNEL_DTYPES,
    int4_kernel_supports,
    int4_scales_and_zeros,
    int4_weight_matmul,
    int8_weight_matmul,
    pack_int4_weight,
)
from .observers import MinMaxObserver, Observer
from .packing import pack_int4_halves, unpack_int4_halves
from .surgery import check_skip, quantizable_layers, replace_modules
from .validation import as_scale, as_zero_point, check_float_tensor
from .weights import quantize_weight

METHODS = ("w8a16", "w8a8", "int4")

BLOCK_ELEMENTS = 1 << 20
"""How many weights the weight-only layers dequantize at a time (a block of
``BLOCK_ELEMENTS // in_features`` output rows, 4 MiB in float32). Chosen from the
sweep of ``python benchmarks/bench_kernels.py --sweep`` (1024 x 1024 and
4096 x 4096, batches 1 and 8); set ``layer.block_elements`` to try others. The
result does not depend on it beyond float rounding (``tests/test_layers_forward.py``)."""


def blocked_linear(
    x: torch.Tensor,
    out_features: int,
    dequantize_rows: Callable[[int, int, torch.Tensor], torch.Tensor],
    buffer_dtype: torch.dtype,
    block_elements: int = BLOCK_ELEMENTS,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y = x w^T + b`` for ``x`` ``(M, K)``, with the weight ``w`` ``(N, K)`` never held whole.

    ``dequantize_rows(start, stop, buffer)`` writes rows ``[start, stop)`` of ``w`` into
    ``buffer`` (``buffer_dtype``, ``(stop - start, K)``) and returns them in ``x``'s
    dtype. Blocks of ``max(1, block_elements // K)`` rows are dequantized into one
    reused buffer and multiplied at once, each into its columns of ``y``: every
    output is the same sum of ``K`` products whatever the block size, so the result
    changes with it only by float rounding (the matmul may add in another order for
    another shape). Where ``x`` needs a gradient the whole weight is built, since a
    matmul into a preallocated result records none; where one block holds every row,
    the result is ``F.linear(x, w, bias)``, the very sums of an ``nn.Linear`` holding
    ``w``. ``bias`` (``(N,)``, in ``x``'s dtype, or None) is added inside the matmul,
    as ``F.linear`` does. Returns ``(M, N)`` in ``x``'s dtype.
    """
    k = x.shape[1]
    rows = max(1, block_elements // max(k, 1))
    if rows >= out_features or (torch.is_grad_enabled() and x.requires_grad):
        buffer = torch.empty(out_features, k, dtype=buffer_dtype, device=x.device)
        return F.linear(x, dequantize_rows(0, out_features, buffer), bias)  # one block
    buffer = torch.empty(rows, k, dtype=buffer_dtype, device=x.device)
    y = torch.empty(x.shape[0], out_features, dtype=x.dtype, device=x.device)
    for start in range(0, out_features, rows):
        stop = min(start + rows, out_features)
        w = dequantize_rows(start, stop, buffer[: stop - start])
        if bias is None:
            torch.mm(x, w.t(), out=y[:, start:stop])
        else:
            torch.addmm(bias[start:stop], x, w.t(), out=y[:, start:stop])
    return y


def _check_linear(linear: object) -> nn.Linear:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    return linear


class _QuantizedLinear(nn.Module):
    """What the three layers share: sizes, a float bias buffer, input checks, repr."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool, device: torch.device | str | None
    ) -> None:
        super().__init__()
        for value, name in ((in_features, "in_features"), (out_features, "out_features")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        x = check_float_tensor(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have {self.in_features} features in its last dimension, "
                f"got shape {tuple(x.shape)}"
            )
        return x

    def _through_kernel(
        self, x: torch.Tensor, matmul: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``matmul(x) + b`` for ``x`` of any leading shape, through a kernel (or the
        layer's own matmul) that takes ``(M, in)`` rows and returns ``(M, out)``."""
        y = matmul(x.reshape(-1, self.in_features).contiguous())
        if self.bias is not None:
            y.add_(self.bias.to(y.dtype))  # in place: y is the kernel's fresh result
        return y.reshape(*x.shape[:-1], self.out_features)

    def _describe(self) -> str:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, {self._describe()}"
        )


class W8A16Linear(_QuantizedLinear):
    """Weight-only int8 linear layer: ``y = x (s * q_w)^T + b``, activations in float.

    Buffers: ``weight_q`` int8 ``(out, in)``, ``weight_scale`` float32 ``(out,)``,
    ``bias`` float32 ``(out,)`` (or none): a quarter of fp32's bytes, and where the
    layer is limited by reading its weight (batch 1, a weight larger than the CPU's
    caches), a quarter of the bytes to read.

    With one scale per output channel, the scale leaves the sum:
    ``y[m, n] = sum_k x[m, k] s[n] q[n, k] = s[n] * sum_k x[m, k] q[n, k]``. So
    ``forward`` converts the codes to float (exactly), a block of output rows at a
    time (:func:`blocked_linear`), multiplies each block by ``x`` while it is in cache,
    and multiplies each *output* by its scale, as torchao and PyTorch's int8
    kernels do: one multiply per output instead of one per weight. It equals
    ``F.linear(x, dequantized_weight(), bias)`` (the readable path) up to float
    rounding, and bit for bit where nothing rounds (power-of-two scales, integer
    ``x``), at every block size; ``tests/test_layers_forward.py`` checks both.

    ``layer.fused = True`` computes the same formula with PyTorch's fused int8
    kernel instead (:func:`~linquant_helpers.kernels.int8_weight_matmul`), for CPU
    inputs in float32, bfloat16 or float16 (others take the default path). The
    kernel adds in another order, so the last bits differ from the default path.
    Whether it is faster depends on the activations' dtype and the CPU: with
    PyTorch 2.13 on x86 it is fast for bfloat16 activations and slow for float32
    ones; ``benchmarks/bench_kernels.py`` measures both paths side by side.
    """

    fused: bool = False
    block_elements: int = BLOCK_ELEMENTS  # weights dequantized at a time (see BLOCK_ELEMENTS)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device)
        shape = (out_features, in_features)
        self.register_buffer("weight_q", torch.zeros(shape, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, device=device))

    @classmethod
    def from_float(cls, linear: nn.Linear) -> W8A16Linear:
        """Quantize ``linear``'s weight per output channel (int8, symmetric); copy the bias."""
        linear = _check_linear(linear)
        qw = quantize_weight(linear.weight, 8, axis=0)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        layer.weight_q.copy_(qw.q)
        layer.weight_scale.copy_(qw.scale)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer.to(linear.weight.device)

    def dequantized_weight(self) -> torch.Tensor:
        """``w = dequantize(weight_q, weight_scale, axis=0)``: the float32 weight ``(out, in)``."""
        return dequantize(self.weight_q, self.weight_scale, axis=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y = s * (x q^T) + b``, in ``x``'s dtype: the scale multiplies the outputs.

        The buffers were checked when the layer was built, so nothing is
        re-checked here. Multiplying the weight by its scales first would cost a
        pass over a float weight of ``out * in`` values on every call; the outputs
        are only ``batch * out`` values. The codes become float a block of rows at
        a time (:func:`blocked_linear`).
        """
        x = self._check_input(x)
        if self.fused and _kernel_takes(x):
            return self._through_kernel(
                x, lambda rows: int8_weight_matmul(rows, self.weight_q, self.weight_scale)
            )
        # float16 computes in float32: x q^T sums codes up to 127, which can pass
        # float16's largest value (65504) where x w^T would not
        dtype = torch.float32 if x.dtype == torch.float16 else x.dtype
        s = self.weight_scale.to(dtype)

        def codes(start: int, stop: int, buffer: torch.Tensor) -> torch.Tensor:
            return buffer.copy_(self.weight_q[start:stop])  # int8 codes are exact in float

        def matmul(rows: torch.Tensor) -> torch.Tensor:
            # x q^T block by block, then the scales, in place on the fresh result
            y = blocked_linear(rows, self.out_features, codes, dtype, self.block_elements)
            return y.mul_(s)

        return self._through_kernel(x.to(dtype), matmul).to(x.dtype)

    def _describe(self) -> str:
        kernel = ", fused kernel" if self.fused else ""
        return f"weight=int8 per-channel symmetric, activations=float{kernel}"


class Int4WeightLinear(_QuantizedLinear):
    """Weight-only 4-bit linear layer, group-wise scales, two codes packed per byte.

    Buffers: ``weight_packed`` uint8 ``(out, ceil(in / 2))`` (codes in ``[-7, 7]``,
    each row packed with itself in halves by
    :func:`~linquant_helpers.packing.pack_int4_halves`: byte ``j`` holds code ``j``
    in its low four bits and code ``j + ceil(in / 2)`` in its high four),
    ``weight_scale`` float32 ``(out, in // group_size)``, ``bias`` float32 ``(out,)``.

    ``forward`` unpacks and dequantizes the weight on every call, a block of output
    rows at a time (:func:`blocked_linear`), and multiplies each block while it is in
    cache. Caching the unpacked weight would hold a float32 copy, eight times the
    packed bytes: the memory the packing saved. Real int4 kernels unpack inside the
    matmul, in registers.

    ``layer.fused = True`` computes with PyTorch's fused int4 kernel instead
    (:func:`~linquant_helpers.kernels.int4_weight_matmul`): the codes are repacked into
    its layout on the first such call (and again if the buffers change), which holds
    another ``out * in / 2`` bytes. CPU inputs in float32, bfloat16 or float16 only
    (others take the unpack path); the last bits differ from the default path.

    Raises ``ValueError`` if ``group_size`` does not divide ``in_features``, and on
    ``fused = True`` for a shape the kernel does not take
    (:func:`~linquant_helpers.kernels.int4_kernel_supports`).
    """

    block_elements: int = BLOCK_ELEMENTS  # weights dequantized at a time (see BLOCK_ELEMENTS)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        group_size: int = 32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device)
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
        if in_features % group_size:
            raise ValueError(f"group_size must divide in_features={in_features}, got {group_size}")
        self.group_size = group_size
        packed_shape = (out_features, -(-in_features // 2))
        self.register_buffer(
            "weight_packed", torch.zeros(packed_shape, dtype=torch.uint8, device=device)
        )
        scale_shape = (out_features, in_features // group_size)
        self.register_buffer("weight_scale", torch.ones(scale_shape, device=device))
        self._fused = False
        self._kernel_weight: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    @property
    def fused(self) -> bool:
        """Whether ``forward`` uses the fused int4 kernel (see the class docstring)."""
        return self._fused

    @fused.setter
    def fused(self, enabled: bool) -> None:
        reason = int4_kernel_supports(self.out_features, self.group_size) if enabled else None
        if reason is not None:
            raise ValueError(f"fused=True is not possible here: {reason}")
        self._fused = bool(enabled)

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int = 32) -> Int4WeightLinear:
        """Quantize ``linear``'s weight to 4 bits per group of ``group_size`` inputs and pack it."""
        linear = _check_linear(linear)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size)
        qw = quantize_weight(linear.weight, 4, group_size=group_size)
        layer.weight_packed.copy_(pack_int4_halves(qw.q))
        layer.weight_scale.copy_(qw.scale)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer.to(linear.weight.device)

    def weight_codes(self) -> torch.Tensor:
        """The unpacked int8 codes ``(out, in)``, each in ``[-7, 7]``
        (:func:`~linquant_helpers.packing.unpack_int4_halves`)."""
        return unpack_int4_halves(self.weight_packed, self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        """``dequantize(weight_codes(), weight_scale, group_size)``: the float32 weight."""
        return dequantize(self.weight_codes(), self.weight_scale, group_size=self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y = x w^T + b`` with ``w = dequantized_weight()``, in ``x``'s dtype, built a
        block of output rows at a time (:func:`blocked_linear`).

        Each block holds the same float32 values as :meth:`dequantized_weight`'s rows,
        built without re-checking the buffers (checked when the layer was built) in a
        few whole-block operations (:meth:`_dequantize_rows`).
        """
        x = self._check_input(x)
        if self.fused and _kernel_takes(x):
            packed, table = self._kernel_inputs(x.dtype)
            return self._through_kernel(
                x, lambda rows: int4_weight_matmul(rows, packed, table, self.group_size)
            )
        scratch = self.weight_packed[:0]

        def rows(start: int, stop: int, buffer: torch.Tensor) -> torch.Tensor:
            nonlocal scratch
            if scratch.shape[0] < stop - start:  # one scratch block, reused by every block
                scratch = torch.empty_like(self.weight_packed[start:stop])
            return self._dequantize_rows(start, stop, buffer, scratch[: stop - start]).to(x.dtype)

        # the bias inside the matmul, as nn.Linear adds it: where one block holds every
        # row, the layer gives the sums of an nn.Linear with the dequantized weight
        bias = None if self.bias is None else self.bias.to(x.dtype)
        x2d = x.reshape(-1, self.in_features).contiguous()
        y = blocked_linear(x2d, self.out_features, rows, torch.float32, self.block_elements, bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def _dequantize_rows(
        self, start: int, stop: int, out: torch.Tensor, scratch: torch.Tensor
    ) -> torch.Tensor:
        """Rows ``[start, stop)`` of :meth:`dequantized_weight`, bit for bit, written into
        ``out`` (float32) with ``scratch`` (uint8, the block's packed shape).

        A byte holds ``lo + 16 hi`` (4-bit two's complement codes). Times 16 (mod 256)
        it holds ``16 lo``, and with its low four bits cleared ``16 hi``: read as int8,
        both are 16 times a signed code, each one operation that runs vectorized on
        every CPU, for one half of every row of the block. The 16 goes into the scale:
        ``(16 q) (s / 16) = q s`` with one rounding, the same float32 as ``q s``.
        """
        packed = self.weight_packed[start:stop]
        half = packed.shape[1]
        torch.mul(packed, 16, out=scratch)  # 16 lo: columns [0, half)
        out[:, :half].copy_(scratch.view(torch.int8))
        torch.bitwise_and(packed, 0xF0, out=scratch)  # 16 hi: columns [half, in)
        out[:, half:].copy_(scratch.view(torch.int8)[:, : self.in_features - half])
        n_groups = self.in_features // self.group_size
        scale = self.weight_scale[start:stop] / 16  # exact: a power of two
        out.view(-1, n_groups, self.group_size).mul_(scale[:, :, None])
        return out

    def _kernel_inputs(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel's packed weight and scale table, rebuilt when a buffer has changed
        (``load_state_dict``, ``.to()``: a new version or a new storage)."""
        key = tuple((t._version, t.data_ptr()) for t in (self.weight_packed, self.weight_scale)) + (
            dtype,
        )
        if self._kernel_weight is None or self._kernel_weight[0] != key:
            table = int4_scales_and_zeros(self.weight_scale, dtype)
            self._kernel_weight = (key, pack_int4_weight(self.weight_codes()), table)
        return self._kernel_weight[1], self._kernel_weight[2]

    def _describe(self) -> str:
        kernel = ", fused kernel" if self.fused else ""
        return (
            f"weight=int4 packed 2 per byte, group_size={self.group_size}, "
            f"activations=float{kernel}"
        )


def _kernel_takes(x: torch.Tensor) -> bool:
    """Whether the fused kernels of :mod:`~linquant_helpers.kernels` take ``x``."""
    return x.device.type == "cpu" and x.dtype in KERNEL_DTYPES


QParams = tuple[torch.Tensor | float, torch.Tensor | int]


def _activation_qparams(
    qparams: QParams | Observer, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` for int8 activations, from a pair or an observer's ``qparams()``."""
    if isinstance(qparams, Observer):
        if qparams.bits != 8 or not qparams.signed or qparams.axis is not None:
            raise ValueError(
                f"{name}: W8A8Linear needs a per-tensor observer of signed int8 codes "
                f"(bits=8, signed=True, axis=None), got {qparams!r} with signed={qparams.signed}"
            )
        qparams = qparams.qparams()
    if not isinstance(qparams, tuple) or len(qparams) != 2:
        raise TypeError(
            f"{name} must be a (scale, zero_point) pair or an observer with qparams(), "
            f"got {type(qparams).__name__}"
        )
    scale, zero_point = as_scale(qparams[0], torch.device("cpu")), qparams[1]
    zero_point = as_zero_point(zero_point, torch.device("cpu"), -128, 127)
    if scale.numel() != 1 or zero_point.numel() != 1:
        raise ValueError(f"{name} must be per-tensor (one scale, one zero point)")
    return scale.reshape(()), zero_point.reshape(())


class W8A8Linear(_QuantizedLinear):
    """Static int8 linear layer computed with integer arithmetic only.

    ``forward(x)``: quantize ``x`` with the calibrated ``(input_scale,
    input_zero_point)``, then :meth:`forward_int` (int8 in, int8 out), then
    dequantize with ``(output_scale, output_zero_point)``. Inside :meth:`forward_int`::

        acc = q_x q_w^T + offset            int32, offset = b_q - z_x sum_k q_w (precomputed)
        q_y = requantize(acc, m0, shift)    M = s_x s_w / s_y = m0 * 2^-(31 + shift)

    Buffers: ``weight_q`` int8 ``(out, in)``, ``weight_scale`` ``(out,)``, the
    input and output scales and zero points (0-d), ``bias_q`` int32 ``(out,)`` (or
    none), and the precomputed int32 ``offset``, ``m0`` and ``shift`` ``(out,)``.
    Activation codes are signed int8 (zero points in ``[-128, 127]``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_features, out_features, False, device)
        n, shape = out_features, (out_features, in_features)
        kw = dict(device=device)
        self.register_buffer("weight_q", torch.zeros(shape, dtype=torch.int8, **kw))
        self.register_buffer("weight_scale", torch.ones(n, **kw))
        for side in ("input", "output"):
            self.register_buffer(f"{side}_scale", torch.ones((), **kw))
            self.register_buffer(f"{side}_zero_point", torch.zeros((), dtype=torch.int32, **kw))
        self.register_buffer("bias_q", torch.zeros(n, dtype=torch.int32, **kw) if bias else None)
        self.register_buffer("offset", torch.zeros(n, dtype=torch.int32, **kw))
        self.register_buffer("m0", torch.full((n,), 2**30, dtype=torch.int32, **kw))
        self.register_buffer("shift", torch.zeros(n, dtype=torch.int32, **kw))

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        input_qparams: QParams | Observer,
        output_qparams: QParams | Observer,
    ) -> W8A8Linear:
        """Quantize ``linear`` for int8 inputs and outputs with the given activation qparams.

        ``input_qparams`` and ``output_qparams`` are ``(scale, zero_point)`` pairs for
        signed int8 codes, or calibrated observers of lesson 05
        (:mod:`~linquant_helpers.observers`, ``bits=8, signed=True``, per tensor).
        Computes every weight-only term once: the int32 bias ``round(b / (s_x s_w))``,
        ``offset`` and the fixed-point multipliers ``M = s_x s_w / s_y``.

        An all-zero (pruned) output row gets the weight scale ``s_y / s_x`` (its
        codes are 0 at any scale): its multiplier is 1 and its bias is stored as
        ``round(b / s_y)``, where the absmax scale ``EPS`` would overflow int32.

        Raises ``TypeError``/``ValueError`` for bad qparams, a NaN or infinite
        bias, ``in_features`` above :data:`~linquant_helpers.integer_ops.MAX_K`
        (the int32 accumulator could overflow), and ``ValueError`` from
        :func:`~linquant_helpers.integer_ops.quantize_multiplier` if a
        multiplier is out of its range.
        """
        linear = _check_linear(linear)
        check_accumulator_length(linear.in_features, "linear")
        s_x, z_x = _activation_qparams(input_qparams, "input_qparams")
        s_y, z_y = _activation_qparams(output_qparams, "output_qparams")
        qw = quantize_weight(linear.weight, 8, axis=0)
        # An all-zero (pruned) row has codes 0 at any scale, and its absmax scale is EPS, so
        # its bias would need codes of b / (s_x EPS), beyond int32. Give it s_w = s_y / s_x
        # instead: M = 1 and the bias is held at the output's own resolution, b / s_y.
        w_scale = qw.scale.cpu()
        w_scale = torch.where((qw.q == 0).all(dim=1).cpu(), s_y / s_x, w_scale)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        bias_q = None
        if linear.bias is not None:
            bias_q = quantize_bias(linear.bias.detach().float().cpu(), s_x, w_scale)
            layer.bias_q.copy_(bias_q)
        m0, shift = quantize_multiplier(s_x.double() * w_scale.double() / s_y.double())
        layer.weight_q.copy_(qw.q)
        layer.weight_scale.copy_(w_scale)
        layer.input_scale.copy_(s_x)
        layer.input_zero_point.copy_(z_x)
        layer.output_scale.copy_(s_y)
        layer.output_zero_point.copy_(z_y)
        layer.offset.copy_(weight_offset(qw.q.cpu(), 0, z_x, bias_q))
        layer.m0.copy_(m0)
        layer.shift.copy_(shift)
        return layer.to(linear.weight.device)

    def forward_int(self, q_x: torch.Tensor) -> torch.Tensor:
        """The integer-only layer: int8 codes ``(M, in)`` in, int8 codes ``(M, out)`` out."""
        acc = integer_linear(q_x, self.weight_q, self.offset)
        return requantize(acc, self.m0, self.shift, self.output_zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize ``x`` ``(..., in)``, run :meth:`forward_int`, dequantize; ``x``'s dtype."""
        x = self._check_input(x)
        q_x = quantize(x.reshape(-1, self.in_features), self.input_scale, self.input_zero_point)
        q_y = self.forward_int(q_x)
        y = dequantize(q_y, self.output_scale, self.output_zero_point)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias_q is not None}, weight=int8 per-channel symmetric, "
            f"input=int8 (scale={self.input_scale.item():.4g}, "
            f"zero_point={self.input_zero_point.item()}), "
            f"output=int8 (scale={self.output_scale.item():.4g}, "
            f"zero_point={self.output_zero_point.item()})"
        )


def quantize_model(
    model: nn.Module,
    method: str = "w8a16",
    *,
    skip: Iterable[str] = (),
    group_size: int = 32,
    calibration: Iterable[torch.Tensor] | None = None,
    observer: Callable[..., Observer] = MinMaxObserver,
    fused: bool = False,
) -> nn.Module:
    """A copy of ``model`` with its ``nn.Linear`` layers replaced by quantized ones.

    ``method`` picks the layer: ``"w8a16"`` (:class:`W8A16Linear`), ``"int4"``
    (:class:`Int4WeightLinear` with ``group_size``) or ``"w8a8"``
    (:class:`W8A8Linear`). The layers are those of
    :func:`~linquant_helpers.surgery.quantizable_layers` (so not the output
    projection of an ``nn.MultiheadAttention``, which is read, not called), swapped
    in with :func:`~linquant_helpers.surgery.replace_modules`: a shared layer becomes
    one shared quantized layer, a tied weight is stored once, and PyTorch's
    ``nn.TransformerEncoder`` keeps working. W8A8 needs ``calibration``, batches
    of model inputs: the float copy runs them once while ``observer`` instances
    (:func:`~linquant_helpers.calibration.calibrate_linears`: signed asymmetric
    int8) watch each layer's input and output. Modules named in ``skip`` (names
    as in ``model.named_modules()``, e.g. ``"classifier.4"``), and every layer
    inside them, stay in float. The original model is not modified.
    ``fused=True`` sets ``fused = True`` on every weight-only layer: PyTorch's fused
    kernels, the fastest exact path where this PyTorch has fast code for the
    activations' dtype (with PyTorch 2.13 on x86: the int8 kernel with bfloat16
    activations; ``benchmarks/bench_kernels.py`` measures it on yours).

    Raises ``ValueError`` for an unknown ``method`` or ``skip`` name, a missing
    ``calibration`` for W8A8, ``fused=True`` for W8A8 or for an int4 layer the
    kernel does not take, and a ``group_size`` that does not divide a layer's
    ``in_features`` (skip that layer or pick another size).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if fused and method == "w8a8":
        raise ValueError("fused=True is for the weight-only methods 'w8a16' and 'int4'")
    skip = check_skip(model, skip)
    quantized = copy.deepcopy(model)
    names = list(quantizable_layers(quantized, (nn.Linear,), skip))
    if method == "w8a16":

        def to_w8a16(name: str, linear: nn.Module) -> W8A16Linear:
            layer = W8A16Linear.from_float(linear)
            layer.fused = bool(fused)
            return layer

        return replace_modules(quantized, names, to_w8a16)
    if method == "int4":

        def to_int4(name: str, linear: nn.Module) -> Int4WeightLinear:
            try:
                layer = Int4WeightLinear.from_float(linear, group_size)
                layer.fused = bool(fused)
                return layer
            except ValueError as err:
                raise ValueError(
                    f"layer {name!r}: {err}; skip it or pick another group_size"
                ) from err

        return replace_modules(quantized, names, to_int4)
    if calibration is None:
        raise ValueError("method='w8a8' needs calibration: a few batches of typical inputs")
    observers = calibrate_linears(quantized, names, calibration, observer)
    return replace_modules(
        quantized, names, lambda name, m: W8A8Linear.from_float(m, *observers[name])
    )
