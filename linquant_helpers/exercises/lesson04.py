"""Checks for notebook 04: BatchNorm folding, per-channel scales, per-group quantization.

Each check draws fresh weights from a seeded generator, with channels of very
different ranges (so that per-tensor and per-channel answers differ), compares
the learner's function with the package and names the typical mistakes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from ..affine import choose_qparams
from ..models import fold_conv_bn
from ..weights import fake_quantize_weight
from .feedback import (
    SEED,
    CheckResult,
    call,
    first_difference,
    known_mistake,
    run_check,
    tensor_problem,
)


def _spread_weight(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Random weights whose output channels have ranges spread over 100x."""
    scales = torch.logspace(-1, 1, shape[0])[torch.randperm(shape[0], generator=gen)]
    return torch.randn(shape, generator=gen) * scales.reshape(-1, *[1] * (len(shape) - 1))


# ---------------------------------------------------------------- folding


def check_fold_bn_into_conv(fold: Callable[..., tuple], seed: int = SEED) -> CheckResult:
    """Check ``fold(weight, bias, gamma, beta, mean, var, eps) -> (weight', bias')``.

    Compared with :func:`~linquant_helpers.models.fold_conv_bn` on a conv whose
    number of output channels equals its number of input channels, so that
    scaling the wrong dimension still runs and can be recognized.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 40)
        c = 6
        conv = nn.Conv2d(c, c, 3, bias=True)
        bn = nn.BatchNorm2d(c, eps=1e-3).eval()
        with torch.no_grad():
            conv.weight.copy_(torch.randn(c, c, 3, 3, generator=gen))
            conv.bias.copy_(torch.randn(c, generator=gen))
            bn.weight.copy_(torch.randn(c, generator=gen))
            bn.bias.copy_(torch.randn(c, generator=gen))
            bn.running_mean.copy_(torch.randn(c, generator=gen))
            bn.running_var.copy_(torch.rand(c, generator=gen) * 4 + 0.01)
        w, b = conv.weight.detach(), conv.bias.detach()
        gamma, beta = bn.weight.detach(), bn.bias.detach()
        mean, var, eps = bn.running_mean, bn.running_var, bn.eps
        got = call(fold, w.clone(), b.clone(), gamma, beta, mean, var, eps)
        if not isinstance(got, tuple) or len(got) != 2:
            return "fold must return a pair (folded_weight, folded_bias)"
        w_got, b_got = got
        ref = fold_conv_bn(conv, bn)
        w_ref, b_ref = ref.weight.detach(), ref.bias.detach()
        for name, value, like in (("folded_weight", w_got, w_ref), ("folded_bias", b_got, b_ref)):
            if problem := tensor_problem(value, like, name):
                return problem
        k = gamma / torch.sqrt(var + eps)
        col = (1, -1, 1, 1)  # k along the *input* channels
        weight_mistakes = {
            "k must scale each *output* channel (dim 0): reshape it to (-1, 1, 1, 1)": w
            * k.reshape(col),
            "the square root is missing: k = gamma / sqrt(var + eps)": w
            * (gamma / (var + eps)).reshape(-1, 1, 1, 1),
            "eps is missing: k = gamma / sqrt(var + eps)": w
            * (gamma / torch.sqrt(var)).reshape(-1, 1, 1, 1),
            "the weight is divided by k; multiply: W' = W * k": w / k.reshape(-1, 1, 1, 1),
            "eps is added after the square root: k = gamma / sqrt(var + eps)": w
            * (gamma / (torch.sqrt(var) + eps)).reshape(-1, 1, 1, 1),
        }
        if first_difference(w_got, w_ref, atol=1e-5, rtol=1e-4) is not None:
            message = known_mistake(w_got, weight_mistakes, atol=1e-5, rtol=1e-4)
            return message or (
                "folded_weight is wrong: W' = W * k with k = gamma / sqrt(var + eps), "
                "one k per output channel"
            )
        bias_mistakes = {
            "the mean is not subtracted: b' = (b - mean) * k + beta": b * k + beta,
            "the bias is not scaled by k: b' = (b - mean) * k + beta": b - mean + beta,
            "beta is missing: b' = (b - mean) * k + beta": (b - mean) * k,
            "the conv's own bias is missing: b' = (b - mean) * k + beta": -mean * k + beta,
            "the conv's bias is added unscaled; it passes through BatchNorm too: "
            "b' = (b - mean) * k + beta": b + beta - mean * k,
            "the mean is added; BatchNorm subtracts it: b' = (b - mean) * k + beta": (b + mean) * k
            + beta,
        }
        if first_difference(b_got, b_ref, atol=1e-5, rtol=1e-4) is not None:
            message = known_mistake(b_got, bias_mistakes, atol=1e-5, rtol=1e-4)
            return message or "folded_bias is wrong: b' = (b - mean) * k + beta"
        return None

    return run_check(
        "fold_bn_into_conv",
        test,
        "W' = W * k and b' = (b - mean) * k + beta, with k = gamma / sqrt(var + eps) "
        "per output channel.",
    )


# ---------------------------------------------------------------- per-channel qparams


def _asymmetric(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unsigned asymmetric qparams of ranges ``[lo, hi]`` (which include 0), float math."""
    scale = (hi - lo) / (2**bits - 1)
    return scale, -torch.round(lo / scale)


def check_per_channel_qparams(
    per_channel_qparams: Callable[[torch.Tensor, int], tuple], seed: int = SEED
) -> CheckResult:
    """Check ``per_channel_qparams(w, bits) -> (scale, zero_point)``, each of shape ``(out,)``.

    Asymmetric, unsigned codes ``0 .. 2^bits - 1``, one pair per output channel
    (dim 0) of a weight of any rank, the range widened to include 0: compared with
    ``choose_qparams(w, bits, signed=False, axis=0)``. Some channels are all
    positive, so forgetting to include 0 shows.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 41)
        for shape, bits in (((12, 12, 3, 3), 8), ((10, 24), 4)):
            w = _spread_weight(gen, shape)
            w[::3] = w[::3].abs() + 0.5  # every third channel is all positive
            ref_scale, ref_zp = choose_qparams(w, bits, signed=False, axis=0)
            got = call(per_channel_qparams, w.clone(), bits)
            if not isinstance(got, tuple) or len(got) != 2:
                return "per_channel_qparams must return a pair (scale, zero_point)"
            scale, zero_point = got
            for name, value in (("scale", scale), ("zero_point", zero_point)):
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    return (
                        f"{name} is a single number for the whole tensor (per-tensor); "
                        "reduce every dimension except dim 0"
                    )
                if problem := tensor_problem(value, ref_scale, name, per="output channel"):
                    if isinstance(value, torch.Tensor) and value.numel() != len(ref_scale):
                        problem += ": reduce all dimensions but 0, e.g. w.flatten(1).amin(dim=1)"
                    return problem
            flat = w.flatten(1)
            lo, hi = flat.amin(dim=1).clamp(max=0), flat.amax(dim=1).clamp(min=0)
            if first_difference(scale, ref_scale, rtol=1e-5) is not None:
                dims = [d for d in range(w.ndim) if d != 1]
                absmax = flat.abs().amax(dim=1)
                per_in = _asymmetric(
                    w.amin(dim=dims).clamp(max=0), w.amax(dim=dims).clamp(min=0), bits
                )[0]
                mistakes = {
                    "the range must include 0: use min(w_min, 0) and max(w_max, 0), so that "
                    "0.0 is exactly representable": (flat.amax(dim=1) - flat.amin(dim=1))
                    / (2**bits - 1),
                    f"you divided by 2^bits = {2**bits}; there are 2^bits - 1 = {2**bits - 1} "
                    "steps between the first and the last code": (hi - lo) / 2**bits,
                    "the scale is per *input* channel (dim 1); weights are quantized per "
                    "output channel, dim 0": per_in,
                    "that is the symmetric scale, max|w| / ((2^bits - 1) / 2); this exercise "
                    "asks for the asymmetric one, (max(w_max, 0) - min(w_min, 0)) / (2^bits - 1)": (
                        absmax / ((2**bits - 1) / 2)
                    ),
                    "that is the symmetric scale; this exercise asks for the asymmetric one, "
                    "(max(w_max, 0) - min(w_min, 0)) / (2^bits - 1)": absmax
                    / (2 ** (bits - 1) - 1),
                }
                same_shape = {m: r for m, r in mistakes.items() if r.shape == scale.shape}
                return known_mistake(scale, same_shape, rtol=1e-5) or (
                    f"wrong scales at {bits} bits for a weight of shape {tuple(shape)}: "
                    "scale = (max(w_max, 0) - min(w_min, 0)) / (2^bits - 1) per output channel"
                )
            # at a near-tie (float32 vs float64 arithmetic) either neighbouring code is right
            v = -lo.double() / ref_scale.double()
            near_tie = ((v - v.floor()) - 0.5).abs() < 1e-3
            zp = zero_point.detach().double()
            if bool(((zp == ref_zp) | (near_tie & ((zp == v.floor()) | (zp == v.ceil())))).all()):
                continue
            if not bool((zero_point == torch.round(zero_point)).all()):
                return "zero_point must hold integers: round it, z = -round(min(w_min, 0) / scale)"
            mistakes = {
                "the zero point has the wrong sign: z = -round(min(w_min, 0) / scale), "
                "a code >= 0 with unsigned codes": torch.round(lo / ref_scale),
                "the zero point is truncated (floor or .int()), not rounded: "
                "z = -round(min(w_min, 0) / scale)": torch.floor(v),
                "the zero point of the unwidened range: it must be the code of 0.0, "
                "z = -round(min(w_min, 0) / scale), which is 0 for an all-positive channel": (
                    -torch.round(flat.amin(dim=1) / ref_scale)
                ),
            }
            return known_mistake(zero_point, mistakes) or (
                f"wrong zero points at {bits} bits: z = -round(min(w_min, 0) / scale), "
                f"an integer in [0, {2**bits - 1}]"
            )
        return None

    return run_check(
        "per_channel_qparams",
        test,
        "flatten to (out, -1), reduce along dim 1: the asymmetric formulas, once per channel.",
    )


# ---------------------------------------------------------------- per-group


def _grouped(
    groups: torch.Tensor, scale: torch.Tensor, rounding: Callable = torch.round, *, qmax: int
) -> torch.Tensor:
    """Fake quantization of ``(rows, n_groups, g)`` groups with ``scale``, as ``(rows, cols)``."""
    return (rounding(groups / scale).clamp(-qmax, qmax) * scale).flatten(1)


def check_group_fake_quantize(
    group_fake_quantize: Callable[[torch.Tensor, int, int], torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``group_fake_quantize(w, bits, group_size)`` for a 2-D weight.

    Symmetric narrow absmax scale per ``group_size`` consecutive weights of a
    row, compared with ``fake_quantize_weight(w, bits, group_size=group_size)``.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 42)
        for rows, cols, bits, g in ((8, 32, 4, 8), (6, 48, 3, 16)):
            w = _spread_weight(gen, (rows, cols))
            w[:, :g] *= 10  # the first group of every row is wider: groups matter
            if bits == 4:  # two groups of exact ties, scale 1.75 / 7 = 0.25; the second's
                # largest magnitude is negative, so max() and abs().max() disagree
                ties = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -3.5]) * 0.25
                w[0, :g] = torch.cat([torch.tensor([1.75]), ties])
                w[1, g : 2 * g] = torch.cat([torch.tensor([-1.75]), -ties])
            ref = fake_quantize_weight(w, bits, group_size=g)
            got = call(group_fake_quantize, w.clone(), bits, g)
            if problem := tensor_problem(got, w, "group_fake_quantize"):
                return problem
            if first_difference(got, ref, atol=1e-6, rtol=1e-5) is None:
                continue
            by_columns = fake_quantize_weight(w.t().contiguous(), bits, group_size=g).t()
            groups = w.double().reshape(rows, -1, g)
            qmax = 2 ** (bits - 1) - 1
            absmax = groups.abs().amax(dim=-1, keepdim=True)

            grouped = functools.partial(_grouped, groups, qmax=qmax)
            half_up = grouped(absmax / qmax, lambda v: torch.floor(v + 0.5))
            away = grouped(absmax / qmax, lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5))
            mistakes = {
                "ties are rounded up (floor(v + 0.5)); torch.round rounds half to even: "
                "0.5 -> 0, 1.5 -> 2, -2.5 -> -2": half_up,
                "ties are rounded away from zero; torch.round rounds half to even: "
                "0.5 -> 0, 1.5 -> 2, -2.5 -> -2": away,
                "the scale uses the largest value, not the largest magnitude: a group whose "
                "extreme is negative is clipped; use .abs().amax(dim=-1, keepdim=True)": grouped(
                    groups.amax(dim=-1, keepdim=True) / qmax
                ),
                f"the scale divides by 2^(bits-1) = {qmax + 1}; the narrow codes reach "
                f"2^(bits-1) - 1 = {qmax}: scale = absmax / {qmax}": grouped(absmax / (qmax + 1)),
                f"the scale divides by {qmax + 0.5}, the full range's half width; the codes here "
                f"are narrow, [-{qmax}, {qmax}]: scale = absmax / {qmax}": grouped(
                    absmax / (qmax + 0.5)
                ),
                "these are the codes; multiply them back by the scale": grouped(absmax / qmax)
                / (absmax / qmax).expand_as(groups).reshape(w.shape),
                "one scale per row: that is per-channel; cut each row into groups of "
                "group_size with w.reshape(rows, -1, group_size)": fake_quantize_weight(
                    w, bits, axis=0
                ),
                "one scale for the whole tensor: that is per-tensor; cut each row into groups": (
                    fake_quantize_weight(w, bits)
                ),
                "your groups run down the columns; group consecutive weights of each row "
                "(the last dimension)": by_columns,
            }
            return known_mistake(got, mistakes, atol=1e-6, rtol=1e-5) or (
                f"wrong values for a ({rows}, {cols}) weight at {bits} bits, group_size={g}: "
                "reshape to (rows, cols // g, g), scale = absmax over the last dim / "
                "(2^(bits-1) - 1), round, clamp, multiply back, reshape"
            )
        return None

    return run_check(
        "group_fake_quantize",
        test,
        "reshape (rows, n_groups, group_size), one absmax scale per group, then reshape back.",
    )
