"""Checks for notebook 13: the 6-bit scales and mins of a Q4_K super-block, and the
importance matrix.

Both checks use fresh, seeded inputs and compare with the package's reference
(:func:`~linquant_helpers.kquants.unpack_scale_min`,
:func:`~linquant_helpers.kquants.importance_matrix`); the inputs are chosen so
that each typical mistake gives a different answer, which the check names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..kquants import _pack_scale_min, importance_matrix, unpack_scale_min
from .feedback import SEED, CheckResult, call, known_mistake, run_check, tensor_problem


def _packed_input(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(packed (n, 12) uint8, ls (n, 8), lm (n, 8))``: random 6-bit codes where every
    sub-block 4-7 code has its top bits set in some row and clear in another."""
    n = int(torch.randint(3, 7, (), generator=gen))
    ls = torch.randint(0, 64, (n, 8), generator=gen)
    lm = torch.randint(0, 64, (n, 8), generator=gen)
    ls[0, 4:], lm[0, 4:] = torch.tensor([63, 48, 33, 17]), torch.tensor([16, 47, 62, 35])
    ls[1, 4:], lm[1, 4:] = torch.tensor([5, 9, 14, 2]), torch.tensor([1, 15, 3, 8])
    return _pack_scale_min(ls, lm), ls, lm


def _unpack_mistakes(packed: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{message: (ls, lm) stacked}`` that typical wrong answers return."""
    b = packed.to(torch.int64)
    low_s, low_m, mixed = b[:, 0:4], b[:, 4:8], b[:, 8:12]

    def pair(ls_hi: torch.Tensor, lm_hi: torch.Tensor, ls_lo=None, lm_lo=None) -> torch.Tensor:
        ls = torch.cat([low_s & 63 if ls_lo is None else ls_lo, ls_hi], dim=1)
        lm = torch.cat([low_m & 63 if lm_lo is None else lm_lo, lm_hi], dim=1)
        return torch.stack([ls, lm])

    return {
        "sub-blocks 4-7 lost their top 2 bits: they sit in bits 6-7 of bytes 0-3 (scales) "
        "and 4-7 (mins); add ((b[j - 4] >> 6) << 4) and ((b[j] >> 6) << 4)": pair(
            mixed & 0xF, mixed >> 4
        ),
        "sub-blocks 0-3 kept bits 6-7 of their bytes: those belong to sub-blocks 4-7, so mask "
        "with & 63": pair(
            (mixed & 0xF) | ((low_s >> 6) << 4), (mixed >> 4) | ((low_m >> 6) << 4), low_s, low_m
        ),
        "the nibbles of bytes 8-11 are swapped: the low nibble is the scale, the high one "
        "the min": pair((mixed >> 4) | ((low_s >> 6) << 4), (mixed & 0xF) | ((low_m >> 6) << 4)),
        "the top bits come from the wrong bytes: the scales' from bytes 0-3, the mins' from "
        "bytes 4-7": pair((mixed & 0xF) | ((low_m >> 6) << 4), (mixed >> 4) | ((low_s >> 6) << 4)),
        "the top 2 bits are shifted into the wrong place: (b >> 6) << 4 makes them bits 4-5 "
        "of a 6-bit code": pair((mixed & 0xF) | (low_s >> 6), (mixed >> 4) | (low_m >> 6)),
    }


def check_unpack_scale_min(
    unpack: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], seed: int = SEED
) -> CheckResult:
    """Check ``unpack(packed) -> (ls, lm)``: the 12 bytes ``(n, 12)`` of Q4_K super-blocks
    as eight 6-bit scale codes and eight 6-bit min codes, each ``(n, 8)``.

    Compared with :func:`~linquant_helpers.kquants.unpack_scale_min`.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 1300)
        for _ in range(3):
            packed, ls, lm = _packed_input(gen)
            got = call(unpack, packed.clone())
            if not isinstance(got, tuple) or len(got) != 2:
                return "return a pair (scales, mins)"
            for value, like, name in [(got[0], ls, "scales"), (got[1], lm, "mins")]:
                if problem := tensor_problem(value, like, name, per="sub-block of 32"):
                    return problem
            pair = torch.stack([got[0].to(torch.int64), got[1].to(torch.int64)])
            expected = torch.stack(unpack_scale_min(packed)).to(torch.int64)
            if torch.equal(pair, expected):
                continue
            if torch.equal(pair, expected.flip(0)):
                return "scales and mins are swapped: return (scales, mins)"
            if message := known_mistake(pair, _unpack_mistakes(packed)):
                return message
            where = (pair != expected).nonzero()[0].tolist()
            kind, row, j = ("scales", "mins")[where[0]], where[1], where[2]
            return (
                f"{kind}[{row}, {j}] is {int(pair[tuple(where)])}, expected "
                f"{int(expected[tuple(where)])}: sub-blocks 0-3 read b[j] & 63 (scales) and "
                "b[j + 4] & 63 (mins); 4-7 add the top bits kept in bits 6-7 of bytes 0-7"
            )
        return None

    return run_check(
        "unpack_scale_min",
        test,
        "the 16 six-bit codes of fresh super-blocks, top bits set and clear.",
    )


def _activations(gen: torch.Generator) -> torch.Tensor:
    """``(batch, seq, cols)`` activations with columns of very different sizes and signs."""
    batch, seq = (
        int(torch.randint(2, 5, (), generator=gen)),
        int(torch.randint(3, 9, (), generator=gen)),
    )
    cols = int(torch.randint(5, 12, (), generator=gen))
    sizes = torch.rand(cols, generator=gen) * 4 + 0.1
    x = torch.randn(batch, seq, cols, generator=gen) * sizes + torch.randn(cols, generator=gen)
    return x


def check_importance_matrix(
    imatrix: Callable[[torch.Tensor], torch.Tensor], seed: int = SEED
) -> CheckResult:
    """Check ``imatrix(x) -> (cols,)``: per input column, the mean over all tokens of ``x^2``,
    for activations ``x`` of shape ``(batch, seq, cols)``.

    Compared with :func:`~linquant_helpers.kquants.importance_matrix`.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 1310)
        for _ in range(3):
            x = _activations(gen)
            got = call(imatrix, x.clone())
            expected = importance_matrix(x)
            if isinstance(got, torch.Tensor) and got.shape == x.shape[1:]:
                return (
                    "one value per column and position: average over all tokens, the batch "
                    "and the sequence, e.g. x.reshape(-1, x.shape[-1])"
                )
            if problem := tensor_problem(got, expected, "imatrix", per="input column"):
                return problem
            flat = x.reshape(-1, x.shape[-1]).double()
            square = flat * flat
            mistakes = {
                "that is the mean of |x|: llama.cpp squares the activations": flat.abs().mean(0),
                "that is the root mean square: llama.cpp keeps the mean of squares, with no "
                "square root": square.mean(0).sqrt(),
                "that is the sum over tokens: divide by the number of tokens": square.sum(0),
                "that is the variance (the mean was subtracted): the importance of a column "
                "includes its mean, use E[x^2]": flat.var(0, unbiased=False),
            }
            if first := known_mistake(got, mistakes, rtol=1e-5):
                return first
            if not torch.allclose(got.double(), expected.double(), rtol=1e-5, atol=0):
                return "imatrix differs from mean(x^2) over all tokens, per column"
        return None

    return run_check(
        "importance_matrix",
        test,
        "mean of squared activations per column, over fresh batches of sequences.",
    )
