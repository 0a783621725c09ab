"""Checks for notebook 07: per-channel dequantize, and the straight-through estimator of QAT.

References are the package's :mod:`~linquant_helpers.integer_ops` and
:func:`~linquant_helpers.affine.dequantize`; inputs are drawn fresh from a
seeded generator, and each check names the typical mistake it recognizes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..affine import dequantize
from .feedback import (
    SEED,
    CheckResult,
    call,
    first_difference,
    known_mistake,
    run_check,
    tensor_problem,
)

# ---------------------------------------------------------------- per-channel dequantize


def _dequantize_problem(
    fn: Callable[..., torch.Tensor], q: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor
) -> str | None:
    got = call(fn, q.clone(), scale.clone(), zp.clone())
    if problem := tensor_problem(got, q, "dequantize_per_channel"):
        return problem
    if not got.is_floating_point():
        return f"dequantized values are real numbers; got dtype {got.dtype}: return a float tensor"
    expected = dequantize(q, scale, zp, axis=0)
    atol = 1e-5 * float(scale.max())
    if first_difference(got, expected, atol, 1e-5) is None:
        return None
    qd, s, z = q.double(), scale.double()[:, None], zp.double()[:, None]
    mistakes = {
        "still the bug: scale * q + zero_point. Subtract the zero point from the code first: "
        "scale * (q - zero_point)": s * qd + z,
        "subtracts the zero point after scaling; subtract it from the code: "
        "scale * (q - zero_point)": s * qd - z,
        "adds the zero point; dequantize subtracts it: scale * (q - zero_point)": s * (qd + z),
        "ignores the zero point: scale * (q - zero_point)": s * qd,
        "the scales run along the last dimension (one per input column); there is one per "
        "output row: use scale[:, None] and zero_point[:, None]": scale.double()
        * (qd - zp.double()),
        "q - zero_point wrapped around in int8 (an int8 difference cannot hold 127 - (-30)); "
        "convert the codes first, q.float() - zero_point[:, None]": s
        * ((qd - z + 128).remainder(256) - 128),
    }
    if message := known_mistake(got, mistakes, atol, 1e-5):
        return message
    i = first_difference(got, expected, atol, 1e-5)
    row = i // q.shape[1]
    return (
        f"row {row} (scale {scale[row].item():.4g}, zero_point {int(zp[row])}): code "
        f"{int(q.flatten()[i])} should give {expected.flatten()[i].item():.6g}, got "
        f"{got.flatten()[i].item():.6g}: scale[:, None] * (q - zero_point[:, None])"
    )


def check_dequantize_per_channel(
    dequantize_per_channel: Callable[..., torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``dequantize_per_channel(q, scale, zero_point)`` on int8 codes ``(out, in)`` with
    one scale and zero point per row, against ``dequantize(..., axis=0)``: first a
    square matrix (where a scale broadcast along the wrong axis gives wrong
    values instead of an error), then a wide one."""

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 62)
        for shape in ((6, 6), (4, 10)):
            q = torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8)
            scale = torch.rand(shape[0], generator=gen) * 0.1 + 0.01
            zp = torch.randint(-30, 31, (shape[0],), generator=gen, dtype=torch.int32)
            if problem := _dequantize_problem(dequantize_per_channel, q, scale, zp):
                return problem
        return None

    return run_check(
        "dequantize_per_channel",
        test,
        "matches dequantize(q, scale, zero_point, axis=0): scale * (q - zero_point), per row.",
    )


# ---------------------------------------------------------------- straight-through estimator


class _Round(torch.autograd.Function):
    """``torch.round`` whose backward is its true derivative, 0, like a real quantizer's."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor) -> torch.Tensor:
        return torch.round(v)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad)


class _Quantizer:
    """A fake quantizer ``fq(w) = clamp(round(w / s), -q, q) * s`` that notes its graph nodes."""

    def __init__(self, scale: float, qmax: int):
        self.scale, self.qmax, self.nodes = scale, qmax, set()

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        out = _Round.apply(w / self.scale).clamp(-self.qmax, self.qmax) * self.scale
        if out.grad_fn is not None:
            self.nodes.add(out.grad_fn)
        return out


def _reaches_without(out: torch.Tensor, w: torch.Tensor, avoid: set) -> bool:
    """True if the autograd graph of ``out`` reaches ``w`` by a path that avoids ``avoid``."""
    stack, seen = [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in avoid:
            continue
        seen.add(node)
        if getattr(node, "variable", None) is w:
            return True
        stack.extend(next_node for next_node, _ in node.next_functions)
    return False


def _straight_through_problem(
    fn: Callable[..., torch.Tensor], w0: torch.Tensor, fq: _Quantizer, upstream: torch.Tensor
) -> str | None:
    w = torch.nn.Parameter(w0.clone())
    out = call(fn, w, fq)
    if problem := tensor_problem(out, w0, "straight_through"):
        return problem
    if not torch.equal(w.detach(), w0):
        return (
            "your function changed w in place (w.data = ... or an in-place op): the float "
            "weights are what the optimizer trains; return a new tensor and leave w alone"
        )
    expected = fq(w0)
    if first_difference(out, w0, atol=1e-7) is None:
        return (
            "the forward value is w itself, not fq(w): the straight-through estimator changes "
            "only the backward pass; the forward pass must use the quantized weight"
        )
    if first_difference(out, expected, atol=1e-6 * fq.scale) is not None:
        if first_difference(out, 2 * w0 - expected, atol=1e-6 * fq.scale) is None:
            return "the value is 2w - fq(w): the correction has the wrong sign, w + (fq(w) - w)"
        return "the forward value must be fq(w), the fake-quantized weight (call fq)"
    if not out.requires_grad or out.grad_fn is None:
        return (
            "no gradient reaches w: your result is cut from the graph (.detach() or "
            "torch.no_grad() around all of it); detach only the correction: "
            "w + (fq(w) - w).detach()"
        )
    (grad,) = torch.autograd.grad(out, w, upstream, allow_unused=True)
    if grad is None:
        return (
            "no gradient reaches w (your result does not depend on w in the graph); "
            "w + (fq(w) - w).detach() keeps w in it"
        )
    if first_difference(grad, upstream, atol=1e-6) is None:
        return None
    saturated = w0.abs() > fq.qmax * fq.scale
    clipped = torch.where(saturated, torch.zeros_like(upstream), upstream)
    if saturated.any() and first_difference(grad, clipped, atol=1e-6) is None:
        return (
            f"the gradient is 0 on the {int(saturated.sum())} elements where fq saturates "
            f"(|w| > {fq.qmax} s) and the identity elsewhere: that is the clipped "
            "straight-through estimator, a real variant (clamp passes its own gradient), "
            "but this exercise asks for the plain one, the identity everywhere: "
            "w + (fq(w) - w).detach()"
        )
    if first_difference(grad, torch.zeros_like(grad)) is None:
        if _reaches_without(out, w, fq.nodes):
            return (
                "the gradient is 0: without .detach(), the gradient of w + (fq(w) - w) is "
                "1 + fq'(w) - 1 = fq'(w), and rounding's is 0. Detach the correction: "
                "w + (fq(w) - w).detach()"
            )
        return (
            "the gradient is 0: you return fq(w) itself, and rounding has no gradient, so no "
            "weight would ever train. Use the straight-through estimator: "
            "w + (fq(w) - w).detach()"
        )
    i = first_difference(grad, upstream, atol=1e-6)
    return (
        f"the gradient should pass straight through, dL/dw = dL/dw_q; at element {i} it is "
        f"{grad.flatten()[i].item():.4g} instead of {upstream.flatten()[i].item():.4g}"
    )


def check_straight_through(
    straight_through: Callable[[torch.Tensor, Callable], torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``straight_through(w, fq) -> w_q``: the value of ``fq(w)``, the gradient of ``w``.

    ``fq`` is a fake quantizer the check supplies (symmetric, one fixed scale,
    rounding with its true gradient 0). The result must equal ``fq(w)`` and,
    differentiated with a random upstream gradient ``g``, give ``dL/dw = g``
    exactly, without changing ``w``. Tried on a vector inside ``fq``'s range and
    on a weight matrix a third of which saturates, with two quantizers, so that
    hard-coding a quantizer fails, and a clipped STE (gradient 0 where ``fq``
    saturates) is told that the exercise asks for the identity. The classic
    mistakes are named: the result cut from the graph, ``fq(w)`` alone (zero
    gradient), a missing ``.detach()`` (found in the autograd graph: a path to
    ``w`` that avoids ``fq``), ``w`` in the forward pass.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 63)
        # the vector inside fq's range; the matrix reaches 1.5 times it, so a third saturates
        for shape, scale, qmax, reach in (((16,), 0.125, 7, 1.0), ((6, 10), 0.0625, 3, 1.5)):
            w0 = (torch.rand(shape, generator=gen) * 2 - 1) * scale * qmax * reach
            upstream = torch.randn(shape, generator=gen)
            if problem := _straight_through_problem(
                straight_through, w0, _Quantizer(scale, qmax), upstream
            ):
                return problem
        return None

    return run_check(
        "straight_through",
        test,
        "the forward pass sees fq(w), the backward pass the identity: dL/dw = dL/dw_q.",
    )
