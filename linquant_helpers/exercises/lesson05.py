"""Checks for notebook 05: a per-channel observer, the MSE clipping search, choosing a percentile.

Each check runs the learner's code on fresh, seeded data and compares it with
the package (:mod:`linquant_helpers.observers`, :func:`linquant_helpers.ptq`),
recognizing the typical mistakes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..affine import fake_quantize, qparams_from_range
from ..calibration import ptq
from ..metrics import mse
from ..models import DigitsData
from ..observers import MinMaxObserver, PercentileObserver
from .feedback import (
    SEED,
    CheckResult,
    call,
    first_difference,
    known_mistake,
    run_check,
    tensor_problem,
)

# ---------------------------------------------------------------- a per-channel observer


def check_per_channel_minmax(observer_class: type, seed: int = SEED) -> CheckResult:
    """Check a class ``observer_class(axis)`` with ``update(x)`` and ``clip_range()``.

    ``clip_range()`` must return the running ``(min_val, max_val)`` per index of
    ``axis``, each of shape ``(C,)``, over every batch seen: compared with
    :class:`~linquant_helpers.observers.MinMaxObserver` with the same ``axis``,
    on NCHW activations (``axis=1``), on a weight (``axis=0``) and on
    ``(batch, tokens, features)`` activations (``axis=-1``), each with channels
    whose range excludes 0.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 50)
        # channel 1 all positive, channel 2 all negative: their ranges exclude 0
        shift = torch.tensor([0.0, 20.0, -20.0, 0.5]).reshape(1, 4, 1, 1)
        cases = {
            1: [torch.randn(5, 4, 3, 3, generator=gen) * (i + 1) + shift for i in range(3)],
            0: [torch.randn(6, 10, generator=gen) * (i + 1) for i in (2, 0, 1)],
            -1: [torch.randn(2, 7, 5, generator=gen) * (i + 1) for i in (1, 0)],
        }
        for batch in cases[0]:
            batch[0] = batch[0].abs() + 1.0  # a row of positive weights
        for batch in cases[-1]:
            batch[..., 3] = -batch[..., 3].abs() - 0.5  # a negative feature (tokens, features)
        for axis, batches in cases.items():
            obs = call(observer_class, axis)
            ref = MinMaxObserver(axis=axis)
            for x in batches:
                obs.update(x.clone())
                ref.update(x)
            got = call(obs.clip_range)
            if not isinstance(got, tuple) or len(got) != 2:
                return "clip_range() must return a pair (min_val, max_val)"
            channels = batches[0].shape[axis]
            for name, value, want in zip(
                ("min_val", "max_val"), got, ref.clip_range(), strict=True
            ):
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    return (
                        f"{name} is one number: that is per-tensor; keep dimension axis={axis} "
                        f"and reduce all the others, for {channels} values"
                    )
                if problem := tensor_problem(value, want, name, per="channel"):
                    return (
                        f"{problem} (axis={axis}: one value per channel; move the axis to the "
                        "front with x.movedim(axis, 0), then flatten(1) and reduce dim 1)"
                    )
                if first_difference(value, want) is None:
                    continue
                ref_min, ref_max = ref.clip_range()
                is_min = name == "min_val"
                mistakes = {
                    f"{name} includes 0: an observer records the data's own range (an all-"
                    "positive channel has min_val > 0); widening it to include 0 is the job of "
                    "the qparams, choose_qparams": (
                        ref_min.clamp(max=0) if is_min else ref_max.clamp(min=0)
                    ),
                    "min_val and max_val are swapped: return (min_val, max_val)": (
                        ref_max if is_min else ref_min
                    ),
                    f"{name} is symmetric, +-max|x|: record the minimum and the maximum "
                    "themselves": (
                        -torch.maximum(-ref_min, ref_max)
                        if is_min
                        else torch.maximum(-ref_min, ref_max)
                    ),
                }
                if message := known_mistake(value, mistakes):
                    return f"{message} (axis={axis})"
                last = MinMaxObserver(axis=axis)
                last.update(batches[-1])
                if first_difference(value, last.clip_range()[name == "max_val"]) is None:
                    return (
                        f"{name} only reflects the last batch: keep a running value, "
                        f"e.g. torch.minimum(self.min_val, batch_min) (axis={axis})"
                    )
                return (
                    f"{name} is wrong for axis={axis}: expected {want}, got {value.detach()}; "
                    "the min (max) over every batch and every position, per channel"
                )
        return None

    return run_check(
        "per_channel_minmax",
        test,
        "a running torch.minimum / torch.maximum of per-channel amin / amax, batch after batch.",
    )


# ---------------------------------------------------------------- the MSE search


def clip_errors(
    x: torch.Tensor,
    bits: int,
    ratios: torch.Tensor,
    *,
    a: torch.Tensor | None = None,
    clamp: bool = True,
    error: Callable[[torch.Tensor], torch.Tensor] = lambda d: d.pow(2).mean(),
) -> torch.Tensor:
    """Reference: MSE of symmetric quantization of ``x`` in ``[-r a, r a]``, ``a = max|x|``.

    The keywords compute the typical mistakes instead: another ``a`` (``x.max()``),
    no clamping to the codes, another error than the mean square.
    """
    a = x.abs().max() if a is None else a
    errors = []
    for r in ratios.tolist():
        scale, zero_point = qparams_from_range(-r * a, r * a, bits, symmetric=True)
        if clamp:
            x_hat = fake_quantize(x, scale, zero_point, bits)
        else:
            x_hat = torch.round(x.double() / float(scale)) * float(scale)
        errors.append(float(error(x.double() - x_hat.double())))
    return torch.tensor(errors, dtype=torch.float64)


def _best(errors: torch.Tensor) -> torch.Tensor:
    """Indices whose error is the smallest, up to float noise (1e-6 relative)."""
    return (errors <= errors.min() * (1 + 1e-6)).nonzero().flatten()


def check_best_clip_ratio(
    best_clip_ratio: Callable[[torch.Tensor, int, torch.Tensor], float], seed: int = SEED
) -> CheckResult:
    """Check ``best_clip_ratio(x, bits, ratios) -> r``: the ratio with the smallest MSE.

    Symmetric signed codes, range ``[-r * max|x|, r * max|x|]``. Tried on
    Laplace data at 4 bits, Gaussian data at 3 bits, where the best ratio is
    well below 1, and Laplace data whose largest magnitude is a negative
    outlier, where ``x.max()`` is not ``max|x|``. A ratio whose error ties
    the smallest within float noise is accepted too.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 51)
        u = torch.rand(20_000, generator=gen) - 0.5
        laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
        gaussian = torch.randn(20_000, generator=gen)
        skewed = laplace.clone()
        skewed[skewed.argmin()] = -3 * skewed.abs().max()  # max|x| is negative, 3x x.max()
        ratios = torch.linspace(0.05, 1.0, 40)
        cases = (
            ("Laplace", laplace, 4),
            ("Gaussian", gaussian, 3),
            ("Laplace with one large negative outlier", skewed, 4),
        )
        for name, x, bits in cases:
            got = call(best_clip_ratio, x.clone(), bits, ratios.clone())
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                return f"best_clip_ratio must return one ratio (a float), got {type(got).__name__}"
            errors = clip_errors(x, bits, ratios)
            if isinstance(got, int) and 0 <= got < len(ratios):
                return (
                    f"on {name} data at {bits} bits you returned an integer, {got}: an index? "
                    "return the ratio itself, float(ratios[index])"
                )
            best = _best(errors)
            at = (ratios - got).abs().argmin()
            if abs(float(ratios[at]) - got) < 1e-6 and at in best:
                continue
            case = f"on {name} data at {bits} bits the best ratio is {float(ratios[best[0]]):.4g}"
            if abs(float(ratios[at]) - got) < 1e-6:
                alternatives = {
                    "a = x.max() is not the largest magnitude when the extreme is negative: "
                    "use a = x.abs().max()": clip_errors(x, bits, ratios, a=x.max()),
                    "your quantizer does not clamp: values beyond +-r * a must be clipped to the "
                    "end codes, or clipping looks free; fake_quantize clamps for you": clip_errors(
                        x, bits, ratios, clamp=False
                    ),
                    "you minimized the mean absolute error; the search minimizes the mean "
                    "squared error, mse(x, x_hat)": clip_errors(
                        x, bits, ratios, error=lambda d: d.abs().mean()
                    ),
                    f"you quantized at {bits - 1} bits; use bits": clip_errors(x, bits - 1, ratios),
                }
                largest = at == int(errors.argmax())
                unclamped = at in _best(clip_errors(x, bits, ratios, clamp=False))
                if largest and unclamped:  # both pick the smallest ratio
                    return (
                        f"{case}; you returned {got:.4g}, the ratio with the *largest* error. "
                        "If you kept the smallest error (argmin), your quantizer does not clamp: "
                        "values beyond +-r * a must be clipped to the end codes, or clipping "
                        "looks free (fake_quantize clamps for you)"
                    )
                for message, alternative in alternatives.items():
                    if at in _best(alternative):
                        return f"{case}, you returned {got:.4g}: {message}"
                if largest:
                    return f"{case}; you returned the ratio with the *largest* error: use argmin"
                if abs(got - 1.0) < 1e-6:
                    return f"{case}; you returned 1.0, min-max: compare the error of every ratio"
            if abs(got - float(errors.min())) <= 1e-6 * abs(float(errors.min())):
                return f"{case}; you returned the smallest error, return its ratio"
            return (
                f"{case}, you returned {got:.4g}: for each r, quantize with "
                "scale, zp = qparams_from_range(-r * a, r * a, bits, symmetric=True), "
                "measure mse(x, fake_quantize(x, scale, zp, bits)), keep the smallest"
            )
        return None

    return run_check(
        "best_clip_ratio",
        test,
        "clipping trades a large error on a few outliers for a finer step on everyone else.",
    )


# ---------------------------------------------------------------- choosing a percentile


def _percentile_logits(
    model: nn.Module,
    calib_batches: list[torch.Tensor],
    x_check: torch.Tensor,
    percentiles: Sequence[float],
    act_bits: int,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The float model's logits on ``x_check``, and each percentile's ptq copy's."""
    with torch.no_grad():
        reference = model(x_check)
        logits = []
        for p in percentiles:
            observer = functools.partial(PercentileObserver, percentile=p)
            quantized = ptq(model, calib_batches, observer=observer, act_bits=act_bits)
            logits.append(quantized(x_check))
    return reference, logits


def logit_errors(
    model: nn.Module,
    calib_batches: list[torch.Tensor],
    x_check: torch.Tensor,
    percentiles: Sequence[float],
    act_bits: int,
) -> list[float]:
    """Reference: MSE between the logits of each percentile's ptq copy and the float model's."""
    reference, logits = _percentile_logits(model, calib_batches, x_check, percentiles, act_bits)
    return [mse(out, reference) for out in logits]


def top1_agreements(
    model: nn.Module,
    calib_batches: list[torch.Tensor],
    x_check: torch.Tensor,
    percentiles: Sequence[float],
    act_bits: int,
) -> list[float]:
    """Share of ``x_check`` on which each percentile's ptq copy predicts the float model's class."""
    reference, logits = _percentile_logits(model, calib_batches, x_check, percentiles, act_bits)
    target = reference.argmax(dim=1)
    return [(out.argmax(dim=1) == target).double().mean().item() for out in logits]


def _top1_diagnosis(
    choose_percentile: Callable[..., float], got: float, case: tuple
) -> str | None:
    """Why ``got`` is wrong if the learner ranked the candidates by top-1 agreement, else None.

    ``got`` must tie for the best agreement, and be picked by the order of the
    candidates (a tie broken by position): asked again with the candidates in
    reverse order, the answer changes. A choice by logit MSE, even the worst one,
    does not depend on the order, so it is not taken for this mistake.
    """
    model, calib, x_check, percentiles, act_bits = case
    agreements = top1_agreements(model, calib, x_check, percentiles, act_bits)
    tied = [p for p, a in zip(percentiles, agreements, strict=True) if a == max(agreements)]
    if got not in tied:
        return None
    again = call(
        choose_percentile, model, calib, x_check.clone(), list(reversed(percentiles)), act_bits
    )
    if isinstance(again, torch.Tensor) and again.numel() == 1:
        again = again.item()
    if len(tied) == 1 or again == got:
        return None
    n = len(x_check)
    return (
        f"you returned {got}, which ties for the best top-1 agreement with {tied} "
        f"({max(agreements):.1%} of {n} images keep the float model's class): top-1 moves in "
        f"steps of one image (1/{n}) and ties, so it cannot rank these candidates: your answer "
        f"depends on their order (in reverse order you return {again}). Choose by the MSE "
        "between the logits, which tells every candidate apart"
    )


PERCENTILE_TIE = 0.01
""":func:`check_choose_percentile` accepts a percentile within 1 % of the best logit MSE."""


def check_choose_percentile(
    choose_percentile: Callable[..., float],
    model: nn.Module,
    data: DigitsData,
    seed: int = SEED,
) -> CheckResult:
    """Check ``choose_percentile(model, calib_batches, x_check, percentiles, act_bits) -> p``.

    The right ``p`` gives the ``ptq`` copy (``PercentileObserver(percentile=p)``,
    ``act_bits``-bit activations, the other settings at their defaults) whose
    logits on ``x_check`` are closest (MSE) to the float model's; a candidate
    within ``PERCENTILE_TIE`` of the smallest error is accepted too. Runs on two
    calibration batches of 32 and 128 check images drawn from ``data``'s
    training set, at 8-bit activations (where min-max, 100, wins) and 4-bit
    ones (where clipping wins): a fixed guess, or a search that ignores
    ``act_bits``, fails one of them. A choice by top-1 agreement instead of
    logit MSE is named as such (see :func:`_top1_diagnosis`): on 128 images,
    several candidates tie for the best agreement. Small on purpose: with the
    reference's own search it takes about a second.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 52)
        calib = data.calibration_batches(2, 32, seed=seed + 52)
        x_check = data.x_train[torch.randperm(len(data.x_train), generator=gen)[:128]]
        percentiles = [99.0, 99.9, 99.99, 100.0]
        for act_bits in (8, 4):
            got = call(
                choose_percentile, model, calib, x_check.clone(), list(percentiles), act_bits
            )
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            errors = logit_errors(model, calib, x_check, percentiles, act_bits)
            best = percentiles[min(range(len(errors)), key=errors.__getitem__)]
            close = [
                p
                for p, e in zip(percentiles, errors, strict=True)
                if e <= min(errors) * (1 + PERCENTILE_TIE)
            ]
            if not isinstance(got, bool) and got in close:
                continue
            case = f"at {act_bits}-bit activations the closest logits come from {best}"
            if isinstance(got, (int, float)) and got in percentiles:
                if top1 := _top1_diagnosis(
                    choose_percentile, got, (model, calib, x_check, percentiles, act_bits)
                ):
                    return f"{case}; {top1}"
                worst = percentiles[max(range(len(errors)), key=errors.__getitem__)]
                if got == worst:
                    return f"{case}; you returned the *worst* percentile, {got}: use the minimum"
                return f"{case}, you returned {got}: compare every candidate's logit MSE"
            if isinstance(got, (int, float)) and got in errors:
                return f"{case}; you returned an error value, return its percentile"
            if isinstance(got, int) and 0 <= got < len(percentiles):
                return f"{case}; you returned an index ({got}): return percentiles[index]"
            return f"{case}; choose_percentile must return one of the candidates, got {got!r}"
        return None

    return run_check(
        "choose_percentile",
        test,
        "the float model is the teacher: no labels needed to choose a calibration setting.",
    )
