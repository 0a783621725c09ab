"""Checks for notebook 09: one OBQ update step, GPTQ's column loop, and decoding FP4 E2M1.

The checks use fresh, seeded inputs and compare with the package's reference
(:func:`~linquant_helpers.gptq.obq_update`, :func:`~linquant_helpers.gptq.gptq_quantize`,
:func:`~linquant_helpers.formats.fp4_e2m1_grid`); they recognize the typical mistakes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..affine import choose_qparams, fake_quantize
from ..formats import fp4_e2m1_grid
from ..gptq import gptq_quantize, hessian, obq_update
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


def _obq_inputs(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float64 ``(out, n)`` weight, its column 0 rounded to a 0.25 grid, and a damped ``H^-1``
    whose diagonal is far from 1 and whose rows differ from its columns' order (``out != n``)."""
    out = int(torch.randint(3, 7, (), generator=gen))
    n = out + int(torch.randint(2, 5, (), generator=gen))
    w = randn(out, n, generator=gen).double()
    q = torch.round(w[:, 0] * 4) / 4
    x = randn(4 * n, n, generator=gen).double() * (0.5 + torch.arange(n, dtype=torch.float64))
    h = hessian(x)
    h_inv = torch.linalg.inv(h + 0.01 * h.diagonal().mean() * torch.eye(n, dtype=torch.float64))
    return w, q, h_inv


def check_obq_update(
    obq_update_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    seed: int = SEED,
) -> CheckResult:
    """Check ``obq_update(w, q, h_inv) -> w_rest``: column 0 of ``w`` rounded to ``q``,
    the other columns moved by ``-(w_0 - q) / [H^-1]_00 * [H^-1]_{0, 1:}``; compared with
    :func:`~linquant_helpers.gptq.obq_update` on three fresh layers."""

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 90)
        for _ in range(3):
            w, q, h_inv = _obq_inputs(gen)
            got = call(obq_update_fn, w.clone(), q.clone(), h_inv.clone())
            expected = obq_update(w, q, h_inv)
            out, n = w.shape
            if isinstance(got, torch.Tensor) and got.shape == (out, n):
                return (
                    f"return the {n - 1} columns that are still free, shape ({out}, {n - 1}); "
                    f"got all {n}: drop column 0, it is rounded and stays q"
                )
            if problem := tensor_problem(got, expected, "obq_update", per="free weight"):
                return problem
            if first_difference(got, expected, rtol=1e-6, atol=1e-9) is None:
                continue
            e, d, row = w[:, :1] - q[:, None], h_inv[0, 0], h_inv[0, 1:]
            rest = w[:, 1:]
            mistakes = {
                "the update has the wrong sign: the error is e = w_0 - q, and the free columns "
                "move by -e / [H^-1]_00 times row 0 of H^-1": rest + e / d * row,
                "the error is not divided by [H^-1]_00 = h_inv[0, 0]": rest - e * row,
                "each column is divided by its own diagonal entry; divide by [H^-1]_00 only, "
                "the entry of the column you rounded": rest - e * row / h_inv.diagonal()[1:],
                "the columns were not moved: the error of column 0 must be spread over them, "
                "w_rest - (w_0 - q) / h_inv[0, 0] * h_inv[0, 1:]": rest,
                "the update uses row 0 of H^-1 including its diagonal entry, shifted by one "
                "column; take h_inv[0, 1:]": rest - e / d * h_inv[0, :-1],
            }
            if message := known_mistake(got, mistakes, rtol=1e-6, atol=1e-9):
                return message
            i = first_difference(got, expected, rtol=1e-6, atol=1e-9)
            return (
                f"at flat index {i} expected {expected.flatten()[i].item():.6g}, got "
                f"{got.flatten()[i].item():.6g}: w_rest - (w_0 - q) / h_inv[0, 0] * h_inv[0, 1:]"
            )
        return None

    return run_check(
        "obq_update",
        test,
        "the free columns absorb column 0's error, -(w_0 - q) / [H^-1]_00 * [H^-1]_{0,1:}.",
    )


def check_decode_e2m1(
    decode_e2m1_fn: Callable[[torch.Tensor], torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``decode_e2m1(codes) -> values`` for an int64 tensor of 4-bit codes ``0b seem``:
    sign, 2 exponent bits (bias 1), 1 mantissa bit, with subnormals at ``e = 0``.
    Compared with :func:`~linquant_helpers.formats.fp4_e2m1_grid` on a shuffled 2-D tensor."""

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 91)
        codes = torch.cat([torch.randperm(16, generator=gen), torch.randperm(16, generator=gen)])
        codes = codes.reshape(4, 8)
        got = call(decode_e2m1_fn, codes.clone())
        expected = fp4_e2m1_grid()[codes]
        if problem := tensor_problem(got, expected, "decode_e2m1", per="code"):
            return problem
        if not got.is_floating_point():
            return f"return floating-point values (0.5, 1.5, ..), got dtype {got.dtype}"
        if first_difference(got, expected) is None:
            return None
        sign = 1.0 - 2.0 * (codes >> 3).double()
        e, m = ((codes >> 1) & 3).double(), (codes & 1).double()
        mistakes = {
            "codes with exponent bits 00 are subnormal: their value is m / 2 (0 or 0.5), "
            "not 2^(0 - 1) * (1 + m / 2)": sign * 2 ** (e - 1) * (1 + m / 2),
            "the exponent bias is 1: 2^(e - 1), so that code 0b0010 is 1.0": sign
            * torch.where(e > 0, 2**e * (1 + m / 2), m),
            "the sign bit (0b1000) makes the value negative; codes 8-15 are -0 .. -6": torch.where(
                e > 0, 2 ** (e - 1) * (1 + m / 2), m / 2
            ),
            "the mantissa bit is worth 1/2: 1 + m / 2, so that 0b0011 is 1.5": sign
            * torch.where(e > 0, 2 ** (e - 1) * (1 + m), m),
            "the exponent is bits 1-2 and the mantissa bit 0 (0b s ee m): they are swapped": sign
            * torch.where((codes & 3) > 0, 2.0 ** ((codes & 3).double() - 1), 0.0)
            * torch.where((codes & 3) > 0, 1 + ((codes >> 2) & 1).double() / 2, 1.0),
        }
        if message := known_mistake(got, mistakes):
            return message
        i = first_difference(got, expected)
        code = int(codes.flatten()[i])
        return (
            f"code {code} = 0b{code:04b}: expected {expected.flatten()[i].item():g}, got "
            f"{got.flatten()[i].item():g}; v = (-1)^s 2^(e-1) (1 + m/2), or (-1)^s m/2 when e = 0"
        )

    return run_check(
        "decode_e2m1",
        test,
        "all 16 FP4 E2M1 codes, subnormals and signs included, on a shuffled tensor.",
    )


def _loop_inputs(
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, Callable, torch.Tensor]:
    """A float64 weight, the upper Cholesky factor U of its damped H^-1 (diagonal far from 1),
    a per-row 4-bit rounding function, and the damped H (for the package's reference)."""
    out = int(torch.randint(8, 12, (), generator=gen))
    n = out + int(torch.randint(4, 8, (), generator=gen))
    w = randn(out, n, generator=gen).double()
    x = randn(3 * n, n, generator=gen).double()  # correlated inputs, below
    x = (x + 1.5 * x[:, :1]) * (0.2 + 0.2 * torch.arange(n, dtype=torch.float64))
    h = hessian(x)
    h = h + 0.01 * h.diagonal().mean() * torch.eye(n, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    scale, _ = choose_qparams(w, 4, symmetric=True, narrow=True, axis=0)

    def rtn(column: torch.Tensor) -> torch.Tensor:
        return fake_quantize(column, scale, 0, 4, narrow=True, axis=0).double()

    return w, u, rtn, h


def _loop(w, u, rtn, *, sign=-1.0, power=1, stop=None) -> torch.Tensor:
    """GPTQ's loop and its typical mistakes, for the check's diagnosis."""
    moved, w_hat = w.clone(), torch.empty_like(w)
    for j in range(w.shape[1]):
        w_hat[:, j] = rtn(moved[:, j])
        err = (moved[:, j] - w_hat[:, j]) / u[j, j] ** power
        end = w.shape[1] if stop is None else min(j + stop, w.shape[1])
        moved[:, j:end] += sign * torch.outer(err, u[j, j:end])
    return w_hat


def check_gptq_columns(
    gptq_columns_fn: Callable[[torch.Tensor, torch.Tensor, Callable], torch.Tensor],
    seed: int = SEED,
) -> CheckResult:
    """Check ``gptq_columns(w, u, rtn) -> w_hat``: round column ``j`` of the *updated* weight
    with ``rtn``, then move the later columns by ``-(w_j - w_hat_j) / U_jj * U_{j, j+1:}``;
    compared with :func:`~linquant_helpers.gptq.gptq_quantize` (block size 1) on three
    fresh layers."""

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 92)
        for _ in range(3):
            w, u, rtn, h = _loop_inputs(gen)
            got = call(gptq_columns_fn, w.clone(), u.clone(), rtn)
            reference = gptq_quantize(w, h, 4, damp=0.0, block_size=1).weight.double()
            if problem := tensor_problem(got, reference, "gptq_columns", per="weight"):
                return problem
            if first_difference(got, reference, rtol=0, atol=1e-6) is None:
                continue
            mistakes = {
                "every column was rounded as it was given (or from the original weight): "
                "after rounding column j, the later columns must absorb its error "
                "(w_k -= e_j U_jk) before they are rounded": rtn(w),
                "the update has the wrong sign: the later columns move by -e_j U_jk, with "
                "e_j = (w_j - w_hat_j) / U_jj": _loop(w, u, rtn, sign=1.0),
                "the error is not divided by U_jj: e_j = (w_j - w_hat_j) / U_jj": _loop(
                    w, u, rtn, power=0
                ),
                "the error is divided by U_jj twice; U's rows are H^-1's rows over "
                "sqrt([H^-1]_jj), so divide once": _loop(w, u, rtn, power=2),
                "only the next column absorbs the error: every later column k > j moves "
                "by -e_j U_jk": _loop(w, u, rtn, stop=2),
            }
            if message := known_mistake(got, mistakes, rtol=0, atol=1e-6):
                return message
            i = first_difference(got, reference, rtol=0, atol=1e-6)
            col = i % w.shape[1]
            return (
                f"column {col} differs first (flat index {i}: expected "
                f"{reference.flatten()[i].item():.6g}, got {got.flatten()[i].item():.6g}); "
                "for each j: w_hat_j = rtn(w_j), e_j = (w_j - w_hat_j) / U_jj, "
                "w_{j+1:} -= e_j U_{j,j+1:}"
            )
        return None

    return run_check(
        "gptq_columns",
        test,
        "each column rounded after the earlier ones' error feedback, as GPTQ does.",
    )
