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
from .feedback import SEED, CheckResult, call, first_difference, run_check, tensor_problem

# ---------------------------------------------------------------- a per-channel observer


def check_per_channel_minmax(observer_class: type, seed: int = SEED) -> CheckResult:
    """Check a class ``observer_class(axis)`` with ``update(x)`` and ``clip_range()``.

    ``clip_range()`` must return the running ``(min_val, max_val)`` per index of
    ``axis``, each of shape ``(C,)``, over every batch seen: compared with
    :class:`~linquant_helpers.observers.MinMaxObserver` with the same ``axis``,
    on NCHW activations (``axis=1``) and on a weight (``axis=0``).
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 50)
        shift = torch.tensor([0.0, 3.0, -2.0, 0.5]).reshape(1, 4, 1, 1)
        cases = {
            1: [torch.randn(5, 4, 3, 3, generator=gen) * (i + 1) + shift for i in range(3)],
            0: [torch.randn(6, 10, generator=gen) * (i + 1) for i in (2, 0, 1)],
        }
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
                if problem := tensor_problem(value, want, name):
                    return (
                        f"{problem} (axis={axis}: one value per channel; move the axis to the "
                        "front with x.movedim(axis, 0), then flatten(1) and reduce dim 1)"
                    )
                if first_difference(value, want) is None:
                    continue
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


def clip_errors(x: torch.Tensor, bits: int, ratios: torch.Tensor) -> torch.Tensor:
    """Reference: MSE of symmetric quantization of ``x`` in ``[-r a, r a]``, ``a = max|x|``."""
    a = x.abs().max()
    errors = []
    for r in ratios.tolist():
        scale, zero_point = qparams_from_range(-r * a, r * a, bits, symmetric=True)
        errors.append(mse(x, fake_quantize(x, scale, zero_point, bits)))
    return torch.tensor(errors, dtype=torch.float64)


def check_best_clip_ratio(
    best_clip_ratio: Callable[[torch.Tensor, int, torch.Tensor], float], seed: int = SEED
) -> CheckResult:
    """Check ``best_clip_ratio(x, bits, ratios) -> r``: the ratio with the smallest MSE.

    Symmetric signed codes, range ``[-r * max|x|, r * max|x|]``. Tried on
    Laplace data at 4 bits and Gaussian data at 3 bits, where the best ratio is
    well below 1.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 51)
        u = torch.rand(20_000, generator=gen) - 0.5
        laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
        gaussian = torch.randn(20_000, generator=gen)
        ratios = torch.linspace(0.05, 1.0, 40)
        for name, x, bits in (("Laplace", laplace, 4), ("Gaussian", gaussian, 3)):
            got = call(best_clip_ratio, x.clone(), bits, ratios.clone())
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if not isinstance(got, (int, float)):
                return f"best_clip_ratio must return one ratio (a float), got {type(got).__name__}"
            errors = clip_errors(x, bits, ratios)
            best = float(ratios[int(errors.argmin())])
            if abs(got - best) < 1e-6:
                continue
            case = f"on {name} data at {bits} bits the best ratio is {best:.4g}"
            if abs(got - float(ratios[int(errors.argmax())])) < 1e-6:
                return f"{case}; you returned the ratio with the *largest* error: use argmin"
            if abs(got - 1.0) < 1e-6:
                return f"{case}; you returned 1.0, min-max: compare the error of every ratio"
            if abs(got - float(errors.min())) <= 1e-6 * abs(float(errors.min())):
                return f"{case}; you returned the smallest error, return its ratio"
            if float(got).is_integer() and 0 <= got < len(ratios):
                return f"{case}; you returned an index ({int(got)}): return ratios[index]"
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


def logit_errors(
    model: nn.Module,
    calib_batches: list[torch.Tensor],
    x_check: torch.Tensor,
    percentiles: Sequence[float],
    act_bits: int,
) -> list[float]:
    """Reference: MSE between the logits of each percentile's ptq copy and the float model's."""
    with torch.no_grad():
        reference = model(x_check)
        errors = []
        for p in percentiles:
            observer = functools.partial(PercentileObserver, percentile=p)
            quantized = ptq(model, calib_batches, observer=observer, act_bits=act_bits)
            errors.append(mse(quantized(x_check), reference))
    return errors


def check_choose_percentile(
    choose_percentile: Callable[..., float],
    model: nn.Module,
    data: DigitsData,
    seed: int = SEED,
) -> CheckResult:
    """Check ``choose_percentile(model, calib_batches, x_check, percentiles, act_bits) -> p``.

    The right ``p`` gives the ``ptq`` copy (``PercentileObserver(percentile=p)``,
    ``act_bits``-bit activations, the other settings at their defaults) whose
    logits on ``x_check`` are closest (MSE) to the float model's. Runs on
    calibration batches and check images drawn from ``data``'s training set.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 52)
        calib = data.calibration_batches(4, 32, seed=seed + 52)
        x_check = data.x_train[torch.randperm(len(data.x_train), generator=gen)[:256]]
        percentiles = [99.0, 99.9, 99.99, 100.0]
        for act_bits in (4, 3):
            got = call(
                choose_percentile, model, calib, x_check.clone(), list(percentiles), act_bits
            )
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            errors = logit_errors(model, calib, x_check, percentiles, act_bits)
            best = percentiles[min(range(len(errors)), key=errors.__getitem__)]
            if got == best:
                continue
            case = f"at {act_bits}-bit activations the closest logits come from {best}"
            if isinstance(got, (int, float)) and got in percentiles:
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
