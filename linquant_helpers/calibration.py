"""Post-training quantization of a whole model: weights, then calibrated activations.

* :func:`fake_quantize_weight` / :func:`quantize_weights` - weights only, at any
  granularity: ``"tensor"``, ``"channel"`` (one scale per output channel) or an
  int group size (groups along each output channel's flattened weights); absmax
  scales, or those an observer picks (:func:`weight_qparams`), e.g. MSE clipping.
* :func:`calibrate` - attach an observer to the input of every ``Conv2d`` and
  ``Linear`` with forward pre-hooks, run calibration batches, detach them
  (:func:`run_with_hooks`, which lesson 06 uses to observe outputs too).
* :func:`ptq` - both: a *simulated* quantized copy of the model (W8A8 by
  default) in which every ``Conv2d``/``Linear`` computes with fake-quantized
  weights on fake-quantized inputs. The original model is never modified.

"Simulated" (or "fake") quantization computes in float32 on values that are
exactly representable by the integer codes, so its accuracy is the accuracy a
real integer kernel would give, up to float rounding of the accumulation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .affine import choose_qparams, fake_quantize, qrange
from .granularity import Granularity
from .models import single_threaded
from .observers import MinMaxObserver, Observer
from .validation import as_scale, as_zero_point, check_float_tensor

QUANTIZABLE = (nn.Conv2d, nn.Linear)
"""The layers whose weights and inputs are quantized."""


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``Conv2d`` and ``Linear`` of ``model``, by qualified name, in forward order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)}


def weight_granularity(granularity: str | int) -> dict[str, int]:
    """The ``axis``/``group_size`` keywords of a weight granularity, for ``(out, rest)`` rows.

    ``"tensor"`` -> ``{}``, ``"channel"`` -> ``{"axis": 0}``, an int ``g > 0`` ->
    ``{"group_size": g}``. Raises ``ValueError`` for anything else.
    """
    if granularity == "tensor":
        return {}
    if granularity == "channel":
        return {"axis": 0}
    if isinstance(granularity, int) and not isinstance(granularity, bool) and granularity > 0:
        return {"group_size": granularity}
    raise ValueError(
        f"granularity must be 'tensor', 'channel' or a positive group size, got {granularity!r}"
    )


def _weight_view(w: torch.Tensor, granularity: str | int) -> tuple[torch.Tensor, dict]:
    """``w`` as ``(out, rest)`` rows and the ``axis``/``group_size`` that quantize it."""
    rows, where = w.reshape(w.shape[0], -1), weight_granularity(granularity)
    if rows.shape[1] % where.get("group_size", 1):  # a row cannot be cut into groups: one per row
        return rows, {"axis": 0}
    return rows, where


def weight_qparams(
    w: torch.Tensor,
    bits: int = 8,
    granularity: str | int = "channel",
    *,
    symmetric: bool = True,
    narrow: bool = True,
    observer: Callable[..., Observer] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` of a weight viewed as ``(out, rest)`` rows (see
    :func:`fake_quantize_weight` for the granularities).

    ``observer=None``: from each block's own range, with :func:`choose_qparams`
    (``scale = max|w| / (2^(b-1) - 1)`` when symmetric: absmax). Otherwise
    ``observer(bits, symmetric=..., narrow=..., axis=...)`` sees the weight and
    chooses the range, e.g. ``functools.partial(MSEObserver, grid=20)`` for the
    clipping that minimizes the weight's MSE. An observer keeps one range per
    index of ``axis=0``, so per group it sees ``rows.reshape(-1, g)``: one row
    per group, in the order of ``choose_qparams``' grouped view. (Distribution
    observers keep a sample; pass ``max_samples=1 << 24`` to let them see all of a
    large weight.) Returns a float32 scale and an int32 zero point of shape ``()``,
    ``(out,)`` or ``(out, rest // g)``. Raises as :func:`fake_quantize_weight`.
    """
    w = check_float_tensor(w, "w")
    rows, where = _weight_view(w.detach(), granularity)
    if observer is None:
        return choose_qparams(rows, bits, symmetric=symmetric, narrow=narrow, **where)
    blocks = rows.reshape(-1, where["group_size"]) if "group_size" in where else rows
    obs = observer(bits, symmetric=symmetric, narrow=narrow, axis=0 if where else None)
    obs.update(blocks)
    shape = Granularity.of(rows.shape, where.get("axis"), where.get("group_size")).qparam_shape
    scale, zero_point = obs.qparams()
    return scale.reshape(shape), zero_point.reshape(shape)


def fake_quantize_weight(
    w: torch.Tensor,
    bits: int = 8,
    granularity: str | int = "channel",
    *,
    symmetric: bool = True,
    narrow: bool = True,
    observer: Callable[..., Observer] | None = None,
) -> torch.Tensor:
    """Fake-quantize a weight with scales chosen from its own range (absmax when symmetric).

    The weight is viewed as ``(out_channels, rest)``: a conv weight
    ``(out, in, kh, kw)`` becomes ``(out, in * kh * kw)``. Then

    * ``"tensor"``: one scale for the whole weight;
    * ``"channel"``: one scale per output channel (``axis=0``);
    * an int ``g``: one scale per ``g`` consecutive weights of a row. A row
      whose length is not a multiple of ``g`` (e.g. the 9 weights of a 3x3
      depthwise filter with ``g = 8``) is one group: per-channel.

    Defaults: symmetric, signed and narrow (codes ``-127..127`` at 8 bits,
    ``scale = max|w| / 127``), the usual choice for weights (Wu et al. 2020).
    ``observer`` chooses clipped ranges instead (see :func:`weight_qparams`).
    Returns a tensor of ``w``'s shape, dtype and device. Raises ``ValueError``
    for a bad ``granularity`` and as :func:`choose_qparams` does.
    """
    w = check_float_tensor(w, "w")
    rows, where = _weight_view(w.detach(), granularity)
    scale, zero_point = weight_qparams(
        w, bits, granularity, symmetric=symmetric, narrow=narrow, observer=observer
    )
    return fake_quantize(rows, scale, zero_point, bits, narrow=narrow, **where).reshape(w.shape)


def quantize_weights(
    model: nn.Module, bits: int = 8, granularity: str | int = "channel", **settings
) -> nn.Module:
    """A copy of ``model`` whose ``Conv2d``/``Linear`` weights are fake-quantized
    (see :func:`fake_quantize_weight`; ``settings`` go to it, e.g.
    ``observer=functools.partial(MSEObserver, grid=20)`` for MSE clipping). Biases
    stay in float, as integer kernels keep them in int32 at a much finer scale.
    The original model is untouched."""
    quantized = copy.deepcopy(model)
    for layer in quantizable_layers(quantized).values():
        with torch.no_grad():
            layer.weight.copy_(fake_quantize_weight(layer.weight, bits, granularity, **settings))
    return quantized


class FakeQuantize(nn.Module):
    """Fake-quantize its input with fixed qparams: ``scale * (quantize(x) - zero_point)``.

    Placed in front of a layer, it makes the layer compute on quantized
    activations. ``scale``/``zero_point`` are buffers (saved with the model):
    tensors, or Python numbers for one pair. Raises ``TypeError``/``ValueError``
    at construction, as :func:`~linquant_helpers.affine.quantize` would, for bad
    ``bits``/``signed``/``narrow``, a scale that is not positive and finite or a
    zero point outside ``[qmin, qmax]``.
    """

    def __init__(
        self,
        scale: torch.Tensor | float,
        zero_point: torch.Tensor | int,
        bits: int = 8,
        *,
        signed: bool = False,
        narrow: bool = False,
        axis: int | None = None,
    ) -> None:
        super().__init__()
        qmin, qmax = qrange(bits, signed=signed, narrow=narrow)
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise TypeError(f"axis must be an int or None, got {axis!r}")
        device = scale.device if isinstance(scale, torch.Tensor) else torch.device("cpu")
        as_scale(scale, device)  # checks only: the buffers keep the dtype they were given
        as_zero_point(zero_point, device, qmin, qmax)
        self.register_buffer("scale", torch.as_tensor(scale).detach().clone())
        self.register_buffer("zero_point", torch.as_tensor(zero_point).detach().clone())
        self.bits, self.signed, self.narrow, self.axis = bits, signed, narrow, axis

    @classmethod
    def from_observer(cls, obs: Observer) -> FakeQuantize:
        """A fake quantizer with the calibrated qparams and settings of ``obs``."""
        scale, zero_point = obs.qparams()
        return cls(scale, zero_point, obs.bits, signed=obs.signed, narrow=obs.narrow, axis=obs.axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(
            x,
            self.scale,
            self.zero_point,
            self.bits,
            signed=self.signed,
            narrow=self.narrow,
            axis=self.axis,
        )

    def extra_repr(self) -> str:
        s = f"bits={self.bits}, signed={self.signed}"
        if self.scale.numel() == 1:
            s += f", scale={float(self.scale):.4g}, zero_point={int(self.zero_point)}"
        return s


def run_with_hooks(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    pre_hooks: dict[str, Callable[..., None]] | None = None,
    hooks: dict[str, Callable[..., None]] | None = None,
) -> None:
    """Run ``batches`` through ``model`` with hooks on named submodules: a calibration pass.

    ``pre_hooks`` maps submodule names to forward *pre*-hooks ``hook(module, args)``,
    called with a layer's inputs before it runs; ``hooks`` maps names to forward
    hooks ``hook(module, args, output)``, called after it ran. Hooks must return
    ``None`` (a returned value would replace the input or output). The model runs in
    eval mode (BatchNorm keeps its running statistics), without gradients, on one
    thread (:func:`~linquant_helpers.models.single_threaded`); the hooks are removed
    and its mode restored afterwards, even on error. Raises ``ValueError`` if
    ``batches`` is empty, and as ``model.get_submodule`` for an unknown name.
    """
    handles, was_training, n_batches = [], model.training, 0
    try:
        for name, hook in (pre_hooks or {}).items():
            handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
        for name, hook in (hooks or {}).items():
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        model.eval()
        with torch.no_grad(), single_threaded():
            for x in batches:
                model(x)
                n_batches += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("calibration is empty: batches holds no inputs, give at least one")


def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    observer: Callable[..., Observer] = MinMaxObserver,
    bits: int = 8,
    *,
    symmetric: bool = False,
    signed: bool = False,
) -> dict[str, Observer]:
    """Observe the input of every ``Conv2d``/``Linear`` of ``model`` on ``batches``.

    ``observer(bits, symmetric=..., signed=...)`` makes one observer per layer
    (pass ``functools.partial(PercentileObserver, percentile=99.9)`` to set
    more). A forward *pre*-hook hands each layer's input to its observer
    before the layer runs (:func:`run_with_hooks`: eval mode, no gradients, one
    thread; hooks removed and mode restored afterwards, even on error).
    Defaults are unsigned asymmetric codes (``0..255``), which suit the
    non-negative outputs of ReLU. Returns ``{layer name: observer}``.
    Raises ``ValueError`` if ``batches`` is empty.
    """
    observers = {
        name: observer(bits, symmetric=symmetric, signed=signed)
        for name in quantizable_layers(model)
    }
    pre_hooks = {
        name: lambda _layer, args, obs=obs: obs.update(args[0]) for name, obs in observers.items()
    }
    run_with_hooks(model, batches, pre_hooks=pre_hooks)
    return observers


def replace_modules(
    model: nn.Module, names: Iterable[str], convert: Callable[[str, nn.Module], nn.Module]
) -> nn.Module:
    """Replace, in place, each submodule named in ``names`` by ``convert(name, module)``.

    Returns ``model``, or the converted module when ``names`` holds ``""`` (the model itself).
    """
    for name in names:
        if name == "":
            return convert(name, model)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, convert(name, model.get_submodule(name)))
    return model


def with_input_quantizers(model: nn.Module, observers: dict[str, Observer]) -> nn.Module:
    """A copy of ``model`` in which each layer named in ``observers`` becomes
    ``nn.Sequential(FakeQuantize.from_observer(obs), layer)``."""

    def quantize_input(name: str, layer: nn.Module) -> nn.Module:
        return nn.Sequential(FakeQuantize.from_observer(observers[name]), layer)

    return replace_modules(copy.deepcopy(model), observers, quantize_input)


def ptq(
    model: nn.Module,
    calib_batches: Iterable[torch.Tensor],
    *,
    observer: Callable[..., Observer] = MinMaxObserver,
    act_bits: int = 8,
    weight_bits: int = 8,
    weight_granularity: str | int = "channel",
) -> nn.Module:
    """Post-training quantization, simulated: a fake-quantized copy of ``model``.

    1. :func:`calibrate` the float model: one ``observer`` per ``Conv2d``/``Linear``
       input, unsigned asymmetric ``act_bits``-bit codes;
    2. :func:`quantize_weights` of a copy at ``weight_bits`` with ``weight_granularity``
       (``"tensor"``, ``"channel"`` or a group size), symmetric;
    3. put a :class:`FakeQuantize` with the calibrated qparams in front of each layer.

    The copy is in eval mode; the original model is untouched. The network's
    output (the logits) stays in float.
    """
    observers = calibrate(model, calib_batches, observer, act_bits)
    weights_quantized = quantize_weights(model, weight_bits, weight_granularity)
    return with_input_quantizers(weights_quantized, observers).eval()
