"""Checks for notebook 08: the size of a packed int4 layer, and SmoothQuant's scales.

Both checks use fresh, seeded inputs (shapes and tensors the notebook never
shows) and compare with the package's references in :mod:`linquant_helpers.weights`
and :mod:`linquant_helpers.smoothquant`; they recognize the typical mistakes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..smoothquant import smoothquant_scales
from ..weights import quantized_weight_nbytes
from .feedback import (
    SEED,
    CheckResult,
    call,
    first_difference,
    known_mistake,
    run_check,
    tensor_problem,
)

SCALE_BYTES = 4
"""Bytes of one float32 scale."""


def _layer_cases(gen: torch.Generator) -> list[tuple[int, int, int, int]]:
    """``(out_features, in_features, bits, group_size)`` with ``group_size`` dividing ``in``."""
    cases = []
    for bits in (4, 2, 8, 4):
        group_size = int(torch.tensor([16, 32, 64, 128])[torch.randint(0, 4, (), generator=gen)])
        in_features = group_size * int(torch.randint(2, 25, (), generator=gen))
        out_features = int(torch.randint(3, 700, (), generator=gen))
        cases.append((out_features, in_features, bits, group_size))
    return cases


def check_packed_nbytes(
    packed_nbytes: Callable[[int, int, int, int], int], seed: int = SEED
) -> CheckResult:
    """Check ``packed_nbytes(out_features, in_features, bits, group_size) -> int``.

    Bytes of an ``(out, in)`` weight stored as ``bits``-bit codes packed
    ``8 // bits`` per byte, plus one float32 scale per group of ``group_size``
    inputs (symmetric: no zero point): ``ceil(out * in * bits / 8) + 4 * out * in / g``.
    Compared with :func:`~linquant_helpers.weights.quantized_weight_nbytes`.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 70)
        for out_f, in_f, bits, g in _layer_cases(gen):
            got = call(packed_nbytes, out_f, in_f, bits, g)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                return f"return a number of bytes (an int), got {type(got).__name__}"
            expected = quantized_weight_nbytes(
                (out_f, in_f), bits, group_size=g, scale_bytes=SCALE_BYTES
            )
            if got == expected:
                continue
            n, groups = out_f * in_f, out_f * in_f // g
            codes = expected - groups * SCALE_BYTES
            case = f"for a ({out_f}, {in_f}) weight at {bits} bits with group_size={g}"
            mistakes = {
                codes: "counts the packed codes but not the scales: add 4 bytes (one float32) "
                f"per group; there are out * in / group_size = {groups} groups",
                n + groups * SCALE_BYTES: "stores one code per byte: packing puts 8 // bits "
                f"codes in each byte, so the codes take ceil(out * in * bits / 8) = {codes} bytes",
                codes + out_f * SCALE_BYTES: "counts one scale per output channel; per-group "
                f"quantization has one per group of {g} inputs: out * in / group_size = {groups}",
                codes + groups * 2: "counts 2 bytes per scale; the scales here are float32, "
                "4 bytes each",
                n * bits + groups * SCALE_BYTES: "counts the codes in bits, not bytes: divide "
                "out * in * bits by 8",
                codes + in_f // g * SCALE_BYTES: "counts the scales of one row only: every one "
                f"of the {out_f} rows has in / group_size groups, {groups} scales in all",
                codes + 2 * groups * SCALE_BYTES: "counts a zero point per group too; these "
                "codes are symmetric, so each group stores only its float32 scale",
            }
            if got in mistakes:
                return f"{case} your answer {got:g} {mistakes[got]}"
            return (
                f"{case} expected {expected} bytes, got {got:g}: ceil(out * in * bits / 8) "
                "for the codes + 4 * (out * in / group_size) for the scales"
            )
        return None

    return run_check(
        "packed_nbytes",
        test,
        "codes packed 8 // bits per byte plus one float32 scale per group, on fresh layer shapes.",
    )


def _smoothquant_inputs(
    gen: torch.Generator, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A positive ``(in,)`` activation maximum with a few outlier channels and an ``(out, in)``
    weight, ``out != in`` so that a maximum over the wrong dimension has the wrong shape."""
    in_f = int(torch.randint(24, 64, (), generator=gen))
    out_f = in_f + int(torch.randint(5, 40, (), generator=gen))
    act = 0.2 + torch.rand(in_f, generator=gen)
    act[torch.randperm(in_f, generator=gen)[:3]] *= 30.0  # outlier channels, as in a transformer
    weight = 0.05 * torch.randn(out_f, in_f, generator=gen)
    return act, weight, alpha


def check_smoothquant_scales(
    smoothquant_scales_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
    seed: int = SEED,
) -> CheckResult:
    """Check ``smoothquant_scales(act_absmax, weight, alpha) -> s`` of shape ``(in,)``.

    ``s_j = max_t |X_tj|^alpha / max_i |W_ij|^(1 - alpha)``, with ``act_absmax``
    the ``(in,)`` maxima of the activation and ``weight`` the ``(out, in)`` weight
    of ``nn.Linear`` (so the weight's maximum is over dimension 0). Compared with
    :func:`~linquant_helpers.smoothquant.smoothquant_scales` at several ``alpha``.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 71)
        for alpha in (0.5, 0.8, 0.3):
            act, weight, alpha = _smoothquant_inputs(gen, alpha)
            wrong_dim = (
                f"SmoothQuant scales the {weight.shape[1]} input channels of the "
                f"({weight.shape[0]}, {weight.shape[1]}) weight: take max |W| over dimension 0, "
                "weight.abs().amax(dim=0)"
            )
            try:
                got = call(smoothquant_scales_fn, act.clone(), weight.clone(), alpha)
            except RuntimeError as err:
                if "must match the size" in str(err):  # a maximum over the wrong dimension
                    return f"your code raised RuntimeError: {err}. {wrong_dim}"
                raise
            expected = smoothquant_scales(act, weight, alpha)
            if isinstance(got, torch.Tensor) and got.shape == (weight.shape[0],):
                return f"s has shape {tuple(got.shape)}, one value per output channel. {wrong_dim}"
            if problem := tensor_problem(got, expected, "smoothquant_scales"):
                return problem
            if first_difference(got, expected, rtol=1e-4) is None:
                continue
            a, w = act.double(), weight.double().abs().amax(dim=0)
            mistakes = {
                "the exponents are swapped: the activation gets alpha, the weight 1 - alpha: "
                "s = act_absmax**alpha / w_absmax**(1 - alpha)": a ** (1 - alpha) / w**alpha,
                "s is inverted: divide the activation maximum by the weight maximum, "
                "s = act_absmax**alpha / w_absmax**(1 - alpha)": w ** (1 - alpha) / a**alpha,
                "the scale multiplies the two maxima; it divides: "
                "s = act_absmax**alpha / w_absmax**(1 - alpha)": a**alpha * w ** (1 - alpha),
                "the weight's maximum is over the whole tensor; take one per input channel, "
                "weight.abs().amax(dim=0)": a**alpha / weight.double().abs().max() ** (1 - alpha),
                "alpha is ignored (this is alpha = 0.5): "
                "s = act_absmax**alpha / w_absmax**(1 - alpha)": (a / w).sqrt(),
                "the weight's maximum must be of |W|, not of W: a large negative weight counts "
                "as much as a positive one; use weight.abs().amax(dim=0)": a**alpha
                / weight.double().amax(dim=0).clamp(min=1e-12) ** (1 - alpha),
            }
            if message := known_mistake(got, mistakes, rtol=1e-4):
                return f"at alpha = {alpha}, {message}"
            i = first_difference(got, expected, rtol=1e-4)
            return (
                f"at alpha = {alpha}, channel {i}: expected s = {expected[i].item():.5g}, got "
                f"{got.flatten()[i].item():.5g}; s_j = max|X_j|^alpha / max_i |W_ij|^(1 - alpha)"
            )
        return None

    return run_check(
        "smoothquant_scales",
        test,
        "s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), per input channel, at three alphas.",
    )
