"""Model surgery: find, replace and hook the layers of a model; the calibration pass.

* :func:`quantizable_layers` - the one rule for which layers a quantization touches;
* :func:`find_modules` / :func:`check_skip` - submodules by type, outside named subtrees;
* :func:`replace_modules` - swap submodules for converted ones, keeping shared ones shared;
* :func:`run_with_hooks` - run batches with hooks on named layers: a calibration pass;
* :func:`module_nbytes` - the bytes a module holds; :func:`single_threaded` - one CPU thread.

Every quantization of the package (fake-quantized weights, calibration,
quantized layers, QAT, the W8A8 simulation) asks :func:`quantizable_layers`
which layers to change, so they all change the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

QUANTIZABLE = (nn.Conv2d, nn.Linear)
"""The layer types whose weights and inputs are quantized."""

WEIGHT_BUFFERS = ("weight_q", "weight_packed", "weight_scale")
"""The buffers that hold a quantized layer's weight: shared when the float weight was."""


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run PyTorch's CPU ops on one thread inside the block, then restore the setting.

    On one thread float sums do not depend on the number of cores, and a small
    model runs faster than split over threads on a busy machine.
    Also a decorator: ``@single_threaded()``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def module_nbytes(module: nn.Module) -> int:
    """Bytes held by ``module``'s parameters and buffers (codes, scales, biases)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def check_skip(model: nn.Module, skip: Iterable[str]) -> tuple[str, ...]:
    """Return ``skip`` as a tuple, checking every name is in ``model.named_modules()``.

    Raises ``TypeError`` for a bare string (``skip="head"`` would iterate over
    letters) and ``ValueError`` for an unknown name, listing the known ones.
    """
    if isinstance(skip, str):
        raise TypeError(f"skip must be a collection of module names, e.g. ({skip!r},)")
    skip = tuple(skip)
    names = dict(model.named_modules(remove_duplicate=False))
    unknown = [s for s in skip if s not in names or s == ""]
    if unknown:
        known = [n for n in names if n]
        raise ValueError(f"skip names {unknown} are not modules of the model; known: {known}")
    return skip


def find_modules(
    model: nn.Module, types: tuple[type[nn.Module], ...], skip: tuple[str, ...] = ()
) -> list[str]:
    """Names of ``model``'s submodules of one of ``types``, outside the modules named in ``skip``.

    A name is skipped if it is in ``skip`` or lies inside a module named there
    (``"classifier"`` skips ``"classifier.4"``). A module shared by several parents
    is listed under each of its names.
    """
    return [
        name
        for name, module in model.named_modules(remove_duplicate=False)
        if isinstance(module, types)
        and not any(name == s or name.startswith(s + ".") for s in skip)
    ]


def quantizable_layers(
    model: nn.Module,
    types: tuple[type[nn.Module], ...] = QUANTIZABLE,
    skip: tuple[str, ...] = (),
) -> dict[str, nn.Module]:
    """The layers a quantization changes, by qualified name, in ``named_modules`` order.

    The rule: every module of ``types`` (``Conv2d`` and ``Linear``) outside
    ``skip`` that its parent *calls*. That excludes the output projection of
    ``nn.MultiheadAttention`` (PyTorch marks it with its own subclass,
    ``NonDynamicallyQuantizableLinear``): the attention reads its ``weight``
    directly, so a replacement would never run and a hook would never fire.
    """
    return {
        name: model.get_submodule(name)
        for name in find_modules(model, types, skip)
        if not isinstance(model.get_submodule(name), NonDynamicallyQuantizableLinear)
    }


def replace_modules(
    model: nn.Module, names: Iterable[str], convert: Callable[[str, nn.Module], nn.Module]
) -> nn.Module:
    """Replace, in place, each submodule named in ``names`` by ``convert(name, module)``,
    keeping what was shared shared, and leaving PyTorch's transformer modules runnable.

    * A module that appears under several names (a shared layer) is converted
      once, and that one copy is put at every name.
    * Distinct layers that share (tie) one weight tensor share the converted
      layers' weight buffers (:data:`WEIGHT_BUFFERS`) when they are equal: the
      tied weight is stored once.
    * ``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder`` have a fused
      fast path (eval mode, no gradients) that reads their layers' ``.weight``
      instead of calling them, which would skip what a replacement does. In every
      such module that holds a replaced layer it is turned off, with the two
      switches PyTorch checks: ``activation_relu_or_gelu = 0`` on the layer (it
      only selects the fast path) and ``use_nested_tensor = False`` on the encoder.

    Returns ``model``, or the converted module when ``names`` holds ``""`` (the model itself).
    """
    seen: dict[int, tuple[nn.Module, nn.Module]] = {}  # id -> (original, converted)
    tied: dict[int, tuple[torch.Tensor, nn.Module]] = {}  # id(weight) -> (weight, converted)
    for name in names:
        if name == "":
            return convert(name, model)
        module = model.get_submodule(name)
        if id(module) not in seen:
            new = convert(name, module)
            seen[id(module)] = (module, new)
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor):
                first = tied.setdefault(id(weight), (weight, new))[1]
                _share_weight_buffers(first, new)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, seen[id(module)][1])
    swapped = {id(new) for _, new in seen.values()}
    for m in model.modules():
        if not any(id(sub) in swapped for sub in m.modules()):
            continue
        if isinstance(m, nn.TransformerEncoderLayer):
            m.activation_relu_or_gelu = 0
        elif isinstance(m, nn.TransformerEncoder):
            m.use_nested_tensor = False
    return model


def _share_weight_buffers(first: nn.Module, other: nn.Module) -> None:
    """Make ``other`` hold ``first``'s weight buffers where they are equal (a tied weight)."""
    if first is other:
        return
    for buffer in WEIGHT_BUFFERS:
        a, b = getattr(first, buffer, None), getattr(other, buffer, None)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b):
            other._buffers[buffer] = a


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
    thread (:func:`single_threaded`); the hooks are removed and its mode restored
    afterwards, even on error. Raises ``ValueError`` if ``batches`` is empty, and
    as ``model.get_submodule`` for an unknown name.
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
