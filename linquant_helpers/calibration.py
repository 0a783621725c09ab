"""Post-training quantization of a whole model: calibrated activations, then both.

* :class:`FakeQuantize` - fake-quantize a layer's input with fixed qparams.
* :func:`calibrate` - attach an observer to the input of every quantizable layer
  with forward pre-hooks, run calibration batches, detach them
  (:func:`~linquant_helpers.surgery.run_with_hooks`); :func:`calibrate_linears`
  observes inputs and outputs, for the integer layers of lesson 07.
* :func:`ptq` - a *simulated* quantized copy of the model (W8A8 by default) in
  which every quantizable layer computes with fake-quantized weights
  (:func:`~linquant_helpers.weights.fake_quantize_weights`) on fake-quantized
  inputs. The original model is never modified.

"Simulated" (or "fake") quantization computes in float32 on values that are
exactly representable by the integer codes, so its accuracy is the accuracy a
real integer kernel would give, up to float rounding of the accumulation.

``observer=`` follows one contract across the package: an
:class:`~linquant_helpers.observers.Observer` class or a ``functools.partial`` of
one, called as ``observer(bits, symmetric=.., signed=.., narrow=.., axis=..)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .affine import fake_quantize, qrange
from .observers import MinMaxObserver, Observer
from .surgery import quantizable_layers, replace_modules, run_with_hooks
from .validation import as_scale, as_zero_point
from .weights import fake_quantize_weights


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


def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    observer: Callable[..., Observer] = MinMaxObserver,
    bits: int = 8,
    *,
    symmetric: bool = False,
    signed: bool = False,
    axis: int | None = None,
) -> dict[str, Observer]:
    """Observe the input of every quantizable layer of ``model`` on ``batches``.

    ``observer(bits, symmetric=.., signed=.., narrow=False, axis=..)`` makes one
    observer per layer (:func:`~linquant_helpers.surgery.quantizable_layers`; pass
    ``functools.partial(PercentileObserver, percentile=99.9)`` to set more). A
    forward *pre*-hook hands each layer's input to its observer before the layer
    runs (:func:`~linquant_helpers.surgery.run_with_hooks`: eval mode, no
    gradients, one thread; hooks removed and mode restored afterwards, even on
    error). Defaults are unsigned asymmetric per-tensor codes (``0..255``), which
    suit the non-negative outputs of ReLU. Returns ``{layer name: observer}``.
    Raises ``ValueError`` if ``batches`` is empty.
    """
    settings = dict(symmetric=symmetric, signed=signed, narrow=False, axis=axis)
    observers = {name: observer(bits, **settings) for name in quantizable_layers(model)}
    pre_hooks = {
        name: lambda _layer, args, obs=obs: obs.update(args[0]) for name, obs in observers.items()
    }
    run_with_hooks(model, batches, pre_hooks=pre_hooks)
    return observers


def calibrate_linears(
    model: nn.Module,
    names: Iterable[str],
    batches: Iterable[Any],
    observer: Callable[..., Observer] = MinMaxObserver,
    bits: int = 8,
) -> dict[str, tuple[Observer, Observer]]:
    """Run ``batches`` through ``model`` and observe the input and output of each named layer.

    Returns ``{name: (input_observer, output_observer)}``, each made by
    ``observer(bits, symmetric=False, signed=True, narrow=False, axis=None)``
    (asymmetric, signed per-tensor codes: what
    :class:`~linquant_helpers.layers.W8A8Linear` takes) and updated with every
    batch by a forward hook, in :func:`~linquant_helpers.surgery.run_with_hooks`.
    Raises ``ValueError`` if ``batches`` is empty.
    """
    settings = dict(symmetric=False, signed=True, narrow=False, axis=None)
    observers = {name: (observer(bits, **settings), observer(bits, **settings)) for name in names}

    def record(inputs: Observer, outputs: Observer) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            inputs.update(args[0])
            outputs.update(out)

        return hook

    hooks = {name: record(*pair) for name, pair in observers.items()}
    run_with_hooks(model, batches, hooks=hooks)
    return observers


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
    weight_axis: int | None = 0,
    weight_group_size: int | None = None,
) -> nn.Module:
    """Post-training quantization, simulated: a fake-quantized copy of ``model``.

    1. :func:`calibrate` the float model: one ``observer`` per quantizable layer's
       input, unsigned asymmetric ``act_bits``-bit codes;
    2. :func:`~linquant_helpers.weights.fake_quantize_weights` of a copy at
       ``weight_bits``, symmetric, per output channel by default (``weight_axis=0``;
       ``weight_axis=None`` alone is per-tensor, with ``weight_group_size=g`` per-group);
    3. put a :class:`FakeQuantize` with the calibrated qparams in front of each layer.

    The copy is in eval mode; the original model is untouched. The network's
    output (the logits) stays in float.
    """
    observers = calibrate(model, calib_batches, observer, act_bits)
    where = dict(axis=weight_axis, group_size=weight_group_size)
    weights_quantized = fake_quantize_weights(model, weight_bits, **where)
    return with_input_quantizers(weights_quantized, observers).eval()
