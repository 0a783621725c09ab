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

from .affine import choose_qparams, fake_quantize
from .layers import check_skip, replace_modules

QAT_TYPES = (nn.Linear, nn.Conv2d)


def fake_quantize_ste(
    w: torch.Tensor, bits: int = 4, *, axis: int | None = 0, group_size: int | None = None
) -> torch.Tensor:
    """Symmetric fake quantization of ``w`` with a straight-through gradient.

    ``w + (fake_quantize(w) - w).detach()``: the value of ``fake_quantize(w)``
    (qparams from ``w``'s current range, symmetric, narrow codes
    ``[-(2^(b-1) - 1), 2^(b-1) - 1]``, per channel along ``axis`` or per group of
    ``group_size``), and the gradient of the identity. Same shape and dtype as
    ``w``. Raises as :func:`~linquant_helpers.affine.choose_qparams` does.
    """
    settings = dict(axis=None if group_size else axis, group_size=group_size)
    scale, zero_point = choose_qparams(w.detach(), bits, symmetric=True, narrow=True, **settings)
    w_q = fake_quantize(w.detach(), scale, zero_point, bits, narrow=True, **settings)
    return w + (w_q - w).detach()


class QATWrapper(nn.Module):
    """Wrap an ``nn.Linear`` or ``nn.Conv2d`` so that it computes with fake-quantized weights.

    ``forward(x)`` calls the wrapped module as if its weight were
    ``fake_quantize_ste(weight)``; the bias and the activations stay in float.
    The float weight remains a parameter of the wrapped module, so any
    optimizer trains it. ``group_size`` applies to ``nn.Linear`` only (groups of
    the input dimension); the default is per output channel.

    Raises ``TypeError`` for another module type and ``ValueError`` for a
    ``group_size`` that does not divide the layer's input features.
    """

    def __init__(self, module: nn.Module, bits: int = 4, *, group_size: int | None = None):
        super().__init__()
        if not isinstance(module, QAT_TYPES):
            raise TypeError(f"module must be nn.Linear or nn.Conv2d, got {type(module).__name__}")
        if group_size is not None and not isinstance(module, nn.Linear):
            raise ValueError("group_size is for nn.Linear weights; convolutions use per-channel")
        if group_size is not None and module.weight.shape[1] % group_size:
            raise ValueError(
                f"group_size must divide in_features={module.weight.shape[1]}, got {group_size}"
            )
        self.module, self.bits, self.group_size = module, bits, group_size

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses: fake-quantized, with a straight-through gradient."""
        return fake_quantize_ste(self.module.weight, self.bits, group_size=self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # functional_call runs the module's own forward with the weight swapped for w_q.
        return torch.func.functional_call(self.module, {"weight": self.quantized_weight()}, (x,))

    def extra_repr(self) -> str:
        where = f"group_size={self.group_size}" if self.group_size else "per-channel"
        return f"bits={self.bits}, {where}, straight-through"


def prepare_qat(
    model: nn.Module, bits: int = 4, *, group_size: int | None = None, skip: Iterable[str] = ()
) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear``/``nn.Conv2d`` wrapped in :class:`QATWrapper`.

    Modules named in ``skip`` (names as in ``model.named_modules()``), and
    everything inside them, stay as they are. ``group_size`` is applied to the
    linear layers; convolutions are quantized per output channel. Before any
    training, the copy computes exactly what post-training weight quantization
    with the same settings gives. The original model is untouched.

    Raises ``ValueError`` for a name in ``skip`` that is not a module of ``model``.
    """
    skip = check_skip(model, skip)
    qat = copy.deepcopy(model)

    def wrap(name: str, module: nn.Module) -> QATWrapper:
        return QATWrapper(
            module, bits, group_size=group_size if isinstance(module, nn.Linear) else None
        )

    return replace_modules(qat, QAT_TYPES, wrap, skip)


def strip_qat(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`QATWrapper` replaced by the float module it wraps.

    The weights are the trained float ("shadow") weights: quantize them with
    the same settings (e.g. :func:`~linquant_helpers.layers.quantize_model`) to deploy.
    """
    plain = copy.deepcopy(model)
    return replace_modules(plain, (QATWrapper,), lambda name, wrapper: wrapper.module, ())
