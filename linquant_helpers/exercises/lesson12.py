"""Checks for notebook 12: the Walsh-Hadamard butterfly, and LLM.int8()'s outlier columns.

Both checks use fresh, seeded inputs and compare with the package's reference
(:func:`~linquant_helpers.rotations.hadamard_transform`,
:func:`~linquant_helpers.outliers.outlier_columns`); they recognize the typical mistakes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..outliers import outlier_columns
from ..rotations import hadamard_transform, sylvester_hadamard
from ..sampling import randn
from .feedback import (
    SEED,
    CheckResult,
    call,
    first_difference,
    known_mistake,
    run_check,
    tensor_problem,
)


def _stages(x: torch.Tensor, *, sign: int = 1, last: int | None = None) -> torch.Tensor:
    """The normalized butterfly with the second output ``sign * (a - b)``, stopping after the
    stage whose pairs are ``last`` apart: the wrong answers the check names."""
    n = x.shape[-1]
    y, h = x.reshape(-1, n), 1
    while h < n and (last is None or h <= last):
        pairs = y.reshape(-1, n // (2 * h), 2, h)
        a, b = pairs[:, :, 0], pairs[:, :, 1]
        y = torch.stack((a + b, sign * (a - b)), dim=2)
        h *= 2
    return y.reshape(x.shape) / n**0.5


def check_hadamard_transform(
    hadamard_transform_fn: Callable[[torch.Tensor], torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``hadamard_transform(x) -> x @ H_n / sqrt(n)`` along the last dimension, Sylvester
    order, on float64 tensors of several shapes (``n`` = 2 to 64, extra leading dimensions)."""

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 120)
        for shape in [(5, 16), (2, 3, 8), (4, 2), (3, 64)]:
            x = randn(*shape, generator=gen).double()
            got = call(hadamard_transform_fn, x.clone())
            expected = hadamard_transform(x)
            n = shape[-1]
            if problem := tensor_problem(got, expected, "hadamard_transform"):
                return problem
            if got.dtype != x.dtype:
                return f"keep x's dtype: x is {x.dtype}, the answer {got.dtype}"
            if first_difference(got, expected, rtol=1e-9, atol=1e-12) is None:
                continue
            h = sylvester_hadamard(n)
            mistakes = {
                f"not normalized: divide x @ H_n by sqrt(n) = sqrt({n}), so that the transform "
                "is orthogonal": x @ h,
                f"divided by n = {n}: divide by sqrt(n) (each of the log2(n) stages grows the "
                "length by sqrt(2))": x @ h / n,
                "the second output of a pair is a - b, not b - a: (a, b) -> (a + b, a - b)": (
                    _stages(x, sign=-1)
                ),
                f"only the first stage ran: a butterfly over n = {n} has log2(n) stages, pairs "
                "h = 1, 2, 4, .., n/2 apart": _stages(x, last=1) if n > 2 else x * float("nan"),
            }
            if message := known_mistake(got, mistakes, rtol=1e-9, atol=1e-12):
                return message
            same_values = torch.allclose(
                got.sort(dim=-1).values, expected.sort(dim=-1).values, rtol=1e-9, atol=1e-12
            )
            if same_values:
                return (
                    f"the right values in the wrong order (n = {n}): Sylvester order pairs the "
                    "entries h apart inside blocks of 2h, for h = 1, 2, 4, ..., and puts a + b "
                    "at the first one and a - b at the second"
                )
            i = first_difference(got, expected, rtol=1e-9, atol=1e-12)
            return (
                f"for shape {shape}, at flat index {i} expected "
                f"{expected.flatten()[i].item():.6g}, "
                f"got {got.flatten()[i].item():.6g}: (a, b) -> (a + b, a - b) in each of the "
                "log2(n) stages, then divide by sqrt(n)"
            )
        return None

    return run_check(
        "hadamard_transform",
        test,
        "x @ H_n / sqrt(n) in Sylvester order, for every width and leading shape tried.",
    )


def _outlier_inputs(gen: torch.Generator) -> list[tuple[torch.Tensor, float]]:
    """Inputs whose outliers sit where typical mistakes miss them: a negative-only column,
    a value exactly at the threshold, one just below it, and one in another batch element."""
    x = (randn(2, 6, 12, generator=gen) * 1.5).double().clamp(-3, 3)
    x[0, 1, 2] = 7.0
    x[1, 4, 5] = -9.0  # negative only
    x[0, 3, 8] = 6.0  # exactly the threshold: >= keeps it
    x[1, 0, 10] = 5.999  # just below
    x[1, 5, 0] = 6.5  # in the second sequence
    y = (randn(10, 16, generator=gen) * 1.5).double().clamp(-3, 3)
    y[3, 7], y[8, 1], y[0, 12] = 4.0, -4.5, 3.999
    return [(x, 6.0), (y, 4.0)]


def check_outlier_columns(
    outlier_columns_fn: Callable[[torch.Tensor, float], torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``outlier_columns(x, threshold) -> (features,) bool``: the feature columns with any
    ``|x| >= threshold`` over all tokens, on a 3-D and a 2-D input at two thresholds."""

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 121)
        for x, t in _outlier_inputs(gen):
            got = call(outlier_columns_fn, x.clone(), t)
            expected = outlier_columns(x, t)
            n = x.shape[-1]
            if isinstance(got, torch.Tensor) and got.shape != expected.shape:
                if got.ndim == 1 and not got.dtype == torch.bool and got.numel() < n:
                    return (
                        f"return a bool mask of shape ({n},), one entry per feature column, "
                        "not the indices of the outlier columns"
                    )
                return (
                    f"return one entry per feature column, shape ({n},); got shape "
                    f"{tuple(got.shape)}: reduce over every token (all dimensions but the last)"
                )
            if problem := tensor_problem(got, expected, "outlier_columns", per="feature column"):
                return problem
            if got.dtype != torch.bool:
                return f"return a bool mask (True for an outlier column), got dtype {got.dtype}"
            if torch.equal(got, expected):
                continue
            rows = x.reshape(-1, n)
            mistakes = {
                "a column whose outliers are negative was missed: compare |x|, not x, with "
                "the threshold": (rows >= t).any(dim=0),
                f"a value exactly at the threshold {t:g} counts as an outlier: use >=, not >": (
                    rows.abs() > t
                ).any(dim=0),
                "use the threshold argument, not a fixed 6.0": (rows.abs() >= 6.0).any(dim=0),
            }
            if message := known_mistake(got, mistakes):
                return message
            want = expected.nonzero().flatten().tolist()
            return (
                f"with threshold {t:g} the outlier columns are {want}, got "
                f"{got.nonzero().flatten().tolist()}: a column is an outlier when any token has "
                "|x| >= threshold in it"
            )
        return None

    return run_check(
        "outlier_columns",
        test,
        "the columns with any |x| >= threshold, negative outliers and exact ties included.",
    )
