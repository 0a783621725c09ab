"""Quantization-aware training (QAT) in brief: train through fake quantization.

``round`` has a zero gradient almost everywhere, so a network that fake-quantizes
its weights cannot learn through it. The straight-through estimator (STE,
Bengio et al., 2013) uses the quantized value in the forward pass and pretends
that quantization is the identity in the backward pass::

    forward:  w_q = fake_quantize(w)          backward:  dL/dw = dL/dw_q

In PyTorch that is one line: ``w + (fake_quantize(w) - w).detach()`` equals
``fake_quantize(w)`` in value, and its gradient with respect to ``w`` is 1.
The weights keep their float values (the "shadow" weights the optimizer
updates); only their quantized version is used to compute the loss.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from .calibration import fake_quantize_weight
from .layers import check_skip, find_modules, replace_modules, swap_modules
from .validation import check_float_tensor

QAT_TYPES = (nn.Linear, nn.Conv2d)


def fake_quantize_ste(
    w: torch.Tensor, bits: int = 4, granularity: str | int = "channel"
) -> torch.Tensor:
    """Fake quantization of a weight with a straight-through gradient.

    ``w + (fake_quantize_weight(w) - w).detach()``: the value of lesson 05's
    :func:`~linquant_helpers.calibration.fake_quantize_weight` (symmetric, narrow
    codes, qparams from ``w``'s current range; ``granularity`` is ``"tensor"``,
    ``"channel"`` or a group size), and the gradient of the identity.
    Same shape, dtype and device as ``w``. Raises as ``fake_quantize_weight`` does.
    """
    w = check_float_tensor(w, "w")
    return w + (fake_quantize_weight(w, bits, granularity) - w).detach()


class QATWrapper(nn.Module):
    """Wrap an ``nn.Linear`` or ``nn.Conv2d`` so that it computes with fake-quantized weights.

    ``forward(x)`` calls the wrapped module as if its weight were
    ``fake_quantize_ste(weight, bits, granularity)``; the bias and the
    activations stay in float. The float weight remains a parameter of the
    wrapped module, so any optimizer trains it.

    Raises ``TypeError`` for another module type and ``ValueError`` for bad
    ``bits`` or ``granularity``.
    """

    def __init__(self, module: nn.Module, bits: int = 4, granularity: str | int = "channel"):
        super().__init__()
        if not isinstance(module, QAT_TYPES):
            raise TypeError(f"module must be nn.Linear or nn.Conv2d, got {type(module).__name__}")
        fake_quantize_weight(module.weight, bits, granularity)  # raises now for bad settings
        self.module, self.bits, self.granularity = module, bits, granularity

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses: fake-quantized, with a straight-through gradient."""
        return fake_quantize_ste(self.module.weight, self.bits, self.granularity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # functional_call runs the module's own forward with its weight swapped for w_q.
        return torch.func.functional_call(self.module, {"weight": self.quantized_weight()}, (x,))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, granularity={self.granularity!r}, straight-through"


def prepare_qat(
    model: nn.Module, bits: int = 4, granularity: str | int = "channel", *, skip: Iterable[str] = ()
) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear``/``nn.Conv2d`` wrapped in :class:`QATWrapper`.

    Modules named in ``skip`` (names as in ``model.named_modules()``), and
    everything inside them, stay as they are. Before any training, the copy
    computes what lesson 05's post-training
    :func:`~linquant_helpers.calibration.quantize_weights` with the same ``bits``
    and ``granularity`` gives. The original model is untouched.

    The output projection of an ``nn.MultiheadAttention`` stays in float, as in
    :func:`~linquant_helpers.layers.quantize_model` (the attention reads its
    ``weight`` directly instead of calling it), so training sees what deployment
    will run. The wrappers go in with
    :func:`~linquant_helpers.layers.swap_modules`: a shared layer gets one shared
    wrapper, and ``nn.TransformerEncoder`` layers run their standard path, which
    calls the wrappers, instead of the fused one, which would use float weights.

    Raises ``ValueError`` for a name in ``skip`` that is not a module of ``model``.
    """
    skip = check_skip(model, skip)

    def wrap(name: str, module: nn.Module) -> QATWrapper:
        return QATWrapper(module, bits, granularity)

    qat = copy.deepcopy(model)
    names = [
        name
        for name in find_modules(qat, QAT_TYPES, skip)
        if not isinstance(qat.get_submodule(name), NonDynamicallyQuantizableLinear)
    ]
    return swap_modules(qat, names, wrap)


def strip_qat(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`QATWrapper` replaced by the float module it wraps.

    The weights are the trained float ("shadow") weights: quantize them with
    the same settings (e.g. :func:`~linquant_helpers.layers.quantize_model`) to deploy.
    """

    def unwrap(name: str, wrapper: nn.Module) -> nn.Module:
        return wrapper.module

    plain = copy.deepcopy(model)
    return replace_modules(plain, find_modules(plain, (QATWrapper,)), unwrap)
