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

from .granularity import Granularity
from .surgery import QUANTIZABLE, check_skip, find_modules, quantizable_layers, replace_modules
from .validation import check_float_tensor
from .weights import fake_quantize_weight


def fake_quantize_ste(
    w: torch.Tensor, bits: int = 4, *, axis: int | None = None, group_size: int | None = None
) -> torch.Tensor:
    """Fake quantization of a weight with a straight-through gradient.

    ``w + (fake_quantize_weight(w) - w).detach()``: the value of
    :func:`~linquant_helpers.weights.fake_quantize_weight` (symmetric, narrow
    codes, qparams from ``w``'s current range, at the core's ``axis`` /
    ``group_size`` on ``(out, rest)`` rows), and the gradient of the identity.
    Same shape, dtype and device as ``w``. Raises as ``fake_quantize_weight`` does.
    """
    w = check_float_tensor(w, "w")
    w_q = fake_quantize_weight(w, bits, axis=axis, group_size=group_size)
    return w + (w_q - w).detach()


class QATWrapper(nn.Module):
    """Wrap an ``nn.Linear`` or ``nn.Conv2d`` so that it computes with fake-quantized weights.

    ``forward(x)`` calls the wrapped module as if its weight were
    ``fake_quantize_ste(weight, bits, axis=axis, group_size=group_size)``; the bias and
    the activations stay in float. The float weight remains a parameter of the
    wrapped module, so any optimizer trains it.

    Raises ``TypeError`` for another module type and ``ValueError`` for bad
    ``bits``, ``axis`` or ``group_size``.
    """

    def __init__(
        self,
        module: nn.Module,
        bits: int = 4,
        *,
        axis: int | None = None,
        group_size: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, QUANTIZABLE):
            raise TypeError(f"module must be nn.Linear or nn.Conv2d, got {type(module).__name__}")
        fake_quantize_weight(module.weight, bits, axis=axis, group_size=group_size)  # raises now
        self.module, self.bits, self.axis, self.group_size = module, bits, axis, group_size

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses: fake-quantized, with a straight-through gradient."""
        return fake_quantize_ste(
            self.module.weight, self.bits, axis=self.axis, group_size=self.group_size
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # functional_call runs the module's own forward with its weight swapped for w_q.
        return torch.func.functional_call(self.module, {"weight": self.quantized_weight()}, (x,))

    def extra_repr(self) -> str:
        where = Granularity(torch.Size(), self.axis, self.group_size).describe()
        return f"bits={self.bits}, {where}, straight-through"


def prepare_qat(
    model: nn.Module,
    bits: int = 4,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    skip: Iterable[str] = (),
) -> nn.Module:
    """A copy of ``model`` with every quantizable layer wrapped in :class:`QATWrapper`.

    The layers are those of :func:`~linquant_helpers.surgery.quantizable_layers`
    outside ``skip`` (names as in ``model.named_modules()``, and everything inside
    them), so training sees what deployment will run. Before any training, the
    copy computes what the post-training
    :func:`~linquant_helpers.weights.fake_quantize_weights` with the same ``bits``,
    ``axis`` and ``group_size`` gives. The wrappers go in with
    :func:`~linquant_helpers.surgery.replace_modules`. The original model is untouched.

    Raises ``ValueError`` for a name in ``skip`` that is not a module of ``model``.
    """
    skip = check_skip(model, skip)

    def wrap(name: str, module: nn.Module) -> QATWrapper:
        return QATWrapper(module, bits, axis=axis, group_size=group_size)

    qat = copy.deepcopy(model)
    return replace_modules(qat, list(quantizable_layers(qat, skip=skip)), wrap)


def strip_qat(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`QATWrapper` replaced by the float module it wraps.

    The weights are the trained float ("shadow") weights: quantize them with
    the same settings (e.g. :func:`~linquant_helpers.layers.quantize_model`) to deploy.
    """

    def unwrap(name: str, wrapper: nn.Module) -> nn.Module:
        return wrapper.module

    plain = copy.deepcopy(model)
    return replace_modules(plain, find_modules(plain, (QATWrapper,)), unwrap)
