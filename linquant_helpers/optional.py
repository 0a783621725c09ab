"""Optional packages, imported only where a function needs them.

The package itself depends on torch, numpy, matplotlib and scikit-learn only.
Lesson 10's bridges to other runtimes (torchao, ONNX Runtime, the ``gguf``
package) import those libraries *inside* the functions that use them, through
:func:`require`, so that ``import linquant_helpers`` works without them and a
missing one fails with the command that installs it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

EXTRAS = {
    "torchao": "runtimes",
    "onnx": "runtimes",
    "onnxscript": "runtimes",
    "onnxruntime": "runtimes",
    "gguf": "runtimes",
}
"""Top-level import name -> the extra of ``pyproject.toml`` that installs it."""


def require(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``"gguf.quants"``), or raise ``ImportError`` naming the extra.

    The message gives the install command of the extra that holds the module's
    top-level package (:data:`EXTRAS`), e.g.
    ``python -m pip install -e ".[runtimes]"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        how = f'python -m pip install -e ".[{extra}]"' if extra else f"python -m pip install {top}"
        raise ImportError(
            f"{module} is not installed ({err}); install it from the repository root with\n"
            f"    {how}\nthen restart the kernel."
        ) from None


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the named loggers to ERROR inside the block, then restore their levels.

    Optional libraries log while they are imported (kernels for GPUs they cannot
    load, with timestamps): nothing about the numbers, and not the same twice.
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


TORCH_AO_GONE = (
    "this PyTorch has no torch.ao.quantization: PyTorch is deleting its eager and FX "
    "quantization in favour of torchao, so what uses it as an oracle is skipped"
)
"""Why a cell or test that needs ``torch.ao.quantization`` does not run."""


def torch_ao_missing() -> str | None:
    """``None`` where ``torch.ao.quantization`` imports; otherwise the reason it cannot run.

    The course uses ``torch.ao.quantization`` (``quantize_dynamic``, its observers)
    as an oracle, and torchao 0.18's PT2E ``convert_pt2e`` imports it too. A
    PyTorch that has deleted it gets :data:`TORCH_AO_GONE` and the import error,
    for a notebook to print and a test to skip with.
    """
    try:
        importlib.import_module("torch.ao.quantization")
    except ImportError as err:
        return f"{TORCH_AO_GONE} ({err})"
    return None
