"""Checks for notebook 10: GGUF's Q8_0 rule, and torchao's ``block_size``.

Both checks use fresh, seeded inputs and compare with the package's reference
(:func:`~linquant_helpers.gguf_blocks.quantize_q8_0`,
:func:`~linquant_helpers.runtimes.torchao_block_size`); the inputs are chosen so
that each typical mistake gives a different answer, which the check names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..gguf_blocks import BLOCK_SIZE, quantize_q8_0
from ..runtimes import torchao_block_size
from .feedback import SEED, CheckResult, call, run_check, tensor_problem


def _q8_0_input(gen: torch.Generator) -> torch.Tensor:
    """``(rows, 32 * blocks)`` float32 with, in row 0, the blocks that tell mistakes apart:

    block 0: max|x| = 127 (so d = 1) and exact ties 2.5, -2.5, 6.5 (half even vs away);
    block 1: the largest magnitude is negative (``max`` instead of ``abs().max()``);
    block 2: all zeros (``1 / d`` is infinite there); the rest random.
    """
    rows = int(torch.randint(2, 6, (), generator=gen))
    blocks = int(torch.randint(4, 9, (), generator=gen))
    x = torch.randn(rows, blocks * BLOCK_SIZE, generator=gen) * (
        0.5 + torch.rand((), generator=gen)
    )
    x[0, :BLOCK_SIZE] = torch.randint(-100, 100, (BLOCK_SIZE,), generator=gen).float()
    x[0, :4] = torch.tensor([127.0, 2.5, -2.5, 6.5])
    x[0, BLOCK_SIZE] = -3.0 * x[0, BLOCK_SIZE : 2 * BLOCK_SIZE].abs().max()
    x[0, 2 * BLOCK_SIZE : 3 * BLOCK_SIZE] = 0.0
    return x


def _q8_0_mistakes(x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{message: (scale, codes)}`` that typical wrong answers return for ``x``."""
    blocks = x.reshape(*x.shape[:-1], -1, BLOCK_SIZE)
    amax = blocks.abs().amax(dim=-1, keepdim=True)

    def codes_with(d: torch.Tensor, rounding=torch.round) -> torch.Tensor:
        inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        return rounding(blocks * inv).clamp(-128, 127).to(torch.int8).reshape(x.shape)

    d = amax / 127
    return {
        "ties go to the even neighbour (torch.round): llama.cpp's roundf rounds half away "
        "from zero, 2.5 -> 3 and -2.5 -> -3": (d, codes_with(d)),
        "the codes were computed with the float16 scale: llama.cpp computes them with the "
        "float32 d = max|x| / 127 and only stores d in float16": (
            d,
            codes_with(d.half().float(), _round_half_away),
        ),
        "d uses 127.5 (PyTorch's symmetric scale); Q8_0 uses d = max|x| / 127": (
            amax / 127.5,
            codes_with(amax / 127.5, _round_half_away),
        ),
        "d uses the largest value, not the largest magnitude: take x.abs().amax(...) per block": (
            blocks.amax(dim=-1, keepdim=True) / 127,
            codes_with(blocks.amax(dim=-1, keepdim=True) / 127, _round_half_away),
        ),
    }


class _NonFiniteToInteger(TorchDispatchMode):
    """Records each op that turns a NaN or an infinity into an integer tensor.

    Casting NaN or inf to an integer type is undefined behaviour in C (and in
    PyTorch's kernels): on x86 a NaN code happens to come out 0, which is what an
    all-zero Q8_0 block must give, so the output alone cannot tell an answer that
    guards ``1 / d`` from one that does not. The ops' inputs can: a guarded answer
    never hands a non-finite float to a cast (``torch.where`` may compute ``1 / 0``
    and then discard it; that is fine).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        to_integer = any(
            isinstance(o, torch.Tensor)
            and not o.dtype.is_floating_point
            and o.dtype != torch.bool
            and not o.dtype.is_complex
            for o in outs
        )
        if to_integer and any(
            isinstance(a, torch.Tensor)
            and a.dtype.is_floating_point
            and not torch.isfinite(a).all()
            for a in (*args, *(kwargs or {}).values())
        ):
            self.ops.append(str(func))
        return out


def _round_half_away(y: torch.Tensor) -> torch.Tensor:
    return torch.sign(y) * torch.floor(y.abs() + 0.5)


def check_q8_0_quantize(
    q8_0_quantize: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], seed: int = SEED
) -> CheckResult:
    """Check ``q8_0_quantize(x) -> (scale, codes)`` against llama.cpp's Q8_0 rule.

    ``x`` float32 of shape ``(rows, K)``, ``K`` a multiple of 32; per block of 32:
    ``d = max|x| / 127``, ``q = roundf(x / d)`` (half away from zero), ``q = 0`` where
    ``d = 0``. Returns ``scale`` float16 ``(rows, K / 32)`` and ``codes`` int8 ``(rows, K)``.
    Compared with :func:`~linquant_helpers.gguf_blocks.quantize_q8_0`.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 100)
        for _ in range(3):
            x = _q8_0_input(gen)
            watch = _NonFiniteToInteger()
            with watch, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = call(q8_0_quantize, x.clone())
            # the same cast in NumPy (.numpy().astype(np.int8)) warns instead
            watch.ops += [str(w.message) for w in caught if "invalid value" in str(w.message)]
            if not isinstance(got, tuple) or len(got) != 2:
                return "return a pair (scale, codes)"
            scale, codes = got
            expected_scale, expected_codes = quantize_q8_0(x)
            for value, like, name, per in [
                (scale, expected_scale, "scale", "block of 32"),
                (codes, expected_codes, "codes", "input element"),
            ]:
                if problem := tensor_problem(value, like, name, per):
                    return problem
            if codes.dtype != torch.int8:
                return (
                    f"codes must be int8 (one signed byte each, as in the file), got {codes.dtype}"
                )
            if scale.dtype != torch.float16:
                return f"GGUF stores the scale as float16: return scale.half(), got {scale.dtype}"
            if torch.isnan(scale).any() or codes[0, 2 * BLOCK_SIZE : 3 * BLOCK_SIZE].any():
                return "an all-zero block must give d = 0 and codes 0 (guard the division by d)"
            if watch.ops:
                return (
                    "an all-zero block must give d = 0 and codes 0 (guard the division by d): "
                    f"your code cast NaN or inf to an integer ({watch.ops[0]}), whose result "
                    "C leaves undefined; use torch.where(d == 0, 0, 1 / d) before the rounding"
                )
            if torch.equal(scale, expected_scale) and torch.equal(codes, expected_codes):
                continue
            for message, (d, q) in _q8_0_mistakes(x).items():
                if torch.equal(scale, d.squeeze(-1).half()) and torch.equal(codes, q):
                    return message
            if not torch.equal(scale, expected_scale):
                return "scale differs from d = max|x| / 127 per block of 32 (stored as float16)"
            i = int((codes != expected_codes).flatten().nonzero()[0])
            return (
                f"codes differ at flat index {i}: got {int(codes.flatten()[i])}, expected "
                f"{int(expected_codes.flatten()[i])} = roundf(x / d) with the float32 d"
            )
        return None

    return run_check(
        "q8_0_quantize",
        test,
        "llama.cpp's Q8_0 on fresh blocks: exact ties, negative extremes, an all-zero block.",
    )


def _block_cases(gen: torch.Generator) -> list[tuple[tuple[int, ...], int | None, int | None]]:
    """``(shape, axis, group_size)``: 2-D weights with rows != columns, a 3-D tensor,
    a negative axis, and groups that do not equal the number of groups."""

    def size(low: int, high: int) -> int:
        return int(torch.randint(low, high, (), generator=gen))

    c, g = size(3, 40), 8 * size(2, 5)
    k = g * size(3, 7)
    b = size(2, 5)
    return [
        ((c, k), None, None),
        ((c, k), 0, None),
        ((c, k), None, g),
        ((b, c, k), -1, None),
        ((b, c, k), 1, None),
        ((b, c, k), None, g),
    ]


def _describe(axis: int | None, group_size: int | None) -> str:
    if axis is not None:
        return f"per-channel axis={axis}"
    return "per-tensor" if group_size is None else f"per-group group_size={group_size}"


def check_block_size(
    block_size: Callable[[tuple[int, ...], int | None, int | None], tuple[int, ...]],
    seed: int = SEED,
) -> CheckResult:
    """Check ``block_size(shape, axis, group_size) -> tuple``: torchao's ``block_size``.

    The shape of the block that shares one scale: ``shape`` per tensor; per
    channel 1 along ``axis`` and the full size elsewhere; per group ``group_size``
    along the last dimension and 1 elsewhere. Compared with
    :func:`~linquant_helpers.runtimes.torchao_block_size`.
    """

    def test() -> str | None:
        gen = torch.Generator().manual_seed(seed + 101)
        for shape, axis, group_size in _block_cases(gen):
            got = call(block_size, shape, axis, group_size)
            if isinstance(got, torch.Tensor):
                got = got.tolist()
            if not isinstance(got, (tuple, list, torch.Size)):
                return f"return a tuple of ints, got {type(got).__name__}"
            got = tuple(int(n) for n in got)
            expected = torchao_block_size(shape, axis, group_size)
            if got == expected:
                continue
            case = (
                f"for shape {shape}, {_describe(axis, group_size)}: got {got}, expected {expected}"
            )
            if len(got) != len(shape):
                return f"{case}; block_size has one entry per dimension of x"
            one_block = (
                "block_size is the shape of one block (the elements that share a scale), "
                "not the number of blocks"
            )
            if axis is None and group_size is None:
                return f"{case}; per-tensor, one block covers the whole tensor: block_size = shape"
            if axis is not None and axis < 0 and got == tuple(shape):
                return f"{case}; a negative axis counts from the end: use axis % len(shape)"
            n_blocks = tuple(n // e for n, e in zip(shape, expected, strict=True))
            if got == n_blocks or (group_size and got[-1] == shape[-1] // group_size):
                return f"{case}; {one_block}"
            if group_size is not None:
                return (
                    f"{case}; per-group, a block is group_size elements of the last dimension "
                    "and 1 along every other"
                )
            return f"{case}; per-channel, a block is 1 along axis and the full size elsewhere"
        return None

    return run_check(
        "block_size",
        test,
        "torchao's block_size for per-tensor, per-channel and per-group, on fresh shapes.",
    )
