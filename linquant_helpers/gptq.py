"""GPTQ: round a weight column by column; the columns not yet rounded absorb the error (lesson 09).

For a linear layer ``y = W x`` and calibration inputs ``X`` (``n`` rows of ``in``
features), the mean squared layer-output error of a rounded weight ``W_hat`` is,
row by row, ``|(w - w_hat) X^T|^2 / n = (w - w_hat) H (w - w_hat)^T / 2`` with the
Hessian ``H = 2 X^T X / n``. Optimal Brain Quantization (OBQ; Frantar, Singh &
Alistarh 2022, "Optimal Brain Compression") rounds one column ``j`` and moves the
other, still free, columns ``F`` to the best place for the error it made::

    delta_F = -(w_j - q_j) / [H_F^-1]_jj * [H_F^-1]_{j, F}

then removes ``j`` from ``F``. GPTQ (Frantar et al. 2022) keeps a fixed column
order, which makes the rows ``[H_F^-1]_{j, F} / sqrt([H_F^-1]_jj)`` the rows of
the upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``), all computed once,
and applies the updates of a block of columns to the rest in one matmul (lazy
batch updates). Everything runs in float64, so the codes are the same on every CPU.

* :func:`hessian`: ``H = 2 X^T X / n``; :func:`obq_update`: one OBQ step, the formula above;
* :func:`hessian_factor`: what GPTQ needs from ``H`` alone (column order, upper
  Cholesky factor of the damped ``H^-1``), computed once and shared by every grid;
* :func:`gptq_quantize`: one weight, per output channel or per group, optional
  act-order; returns codes, qparams and the dequantized weight (:class:`GPTQResult`);
* :func:`layer_inputs`, :func:`gptq_quantize_model`: every ``nn.Linear`` of a model, each
  on the float model's inputs; :func:`gptq_quantize_model_sequential`: stage by stage,
  each on the outputs of the stages already quantized, as the paper runs it.

Rounding, qparams and granularity are the core's: :func:`~linquant_helpers.affine.choose_qparams`,
:func:`~linquant_helpers.affine.quantize`, :func:`~linquant_helpers.affine.dequantize`,
with ``axis=0`` (per output channel) or ``group_size=g``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .affine import choose_qparams, code_dtype, dequantize, qrange
from .granularity import Granularity
from .validation import check_bits, check_finite, check_float_tensor
from .weights import mse_weight_scale


class GPTQResult(NamedTuple):
    """What :func:`gptq_quantize` returns.

    ``codes`` ``(out, in)`` in the weight's own column order, int8 up to 8 bits
    and int16 above (:func:`~linquant_helpers.affine.code_dtype`); ``scale``
    (float32) and ``zero_point`` (int32) of shape ``(out,)`` per channel or
    ``(out, in // g)`` per group; ``weight = dequantize(codes, scale, zero_point)``,
    float32, the weight a quantized layer computes with.
    """

    weight: torch.Tensor
    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor


def hessian(x: torch.Tensor) -> torch.Tensor:
    """``H = 2 X^T X / n`` of inputs ``x`` ``(..., in)``, all leading dims as ``n`` rows; float64.

    The Hessian of ``|W X^T - W_hat X^T|^2 / n`` with respect to each row of
    ``W_hat``. Its rank is at most ``n``: with fewer rows than features it is
    singular, which is what damping (:func:`gptq_quantize`'s ``damp``) is for.
    Raises ``ValueError`` for a 0-d or empty ``x``, or one holding NaN or infinity.
    """
    x = check_float_tensor(x)
    if x.ndim == 0 or x.numel() == 0:
        raise ValueError(f"x must be (..., in) with at least one row, got shape {tuple(x.shape)}")
    check_finite(x, "x")
    rows = x.detach().reshape(-1, x.shape[-1]).double()
    return 2.0 * rows.T @ rows / rows.shape[0]


def obq_update(w: torch.Tensor, q: torch.Tensor, h_inv: torch.Tensor) -> torch.Tensor:
    """One OBQ step: column 0 of ``w`` is rounded to ``q``; return the other columns, moved.

    ``W_rest' = W_rest - (w_0 - q) / [H^-1]_00 * [H^-1]_{0, 1:}``: the outer product of
    the error of column 0, divided by ``[H^-1]_00``, with row 0 of ``H^-1`` beyond its
    diagonal. ``w`` is ``(out, n)``, ``q`` ``(out,)``, ``h_inv`` ``(n, n)``; returns
    ``(out, n - 1)`` in float64. Raises ``ValueError`` for shapes that do not fit.
    """
    if w.ndim != 2 or q.shape != w.shape[:1] or h_inv.shape != (w.shape[1], w.shape[1]):
        raise ValueError(
            f"w must be (out, n), q (out,) and h_inv (n, n); got {tuple(w.shape)}, "
            f"{tuple(q.shape)} and {tuple(h_inv.shape)}"
        )
    w, h_inv = w.double(), h_inv.double()
    err = (w[:, 0] - q.double()) / h_inv[0, 0]
    return w[:, 1:] - err.unsqueeze(1) * h_inv[0, 1:]


def _check_damp(damp: float) -> None:
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not damp >= 0:
        raise ValueError(f"damp must be a number >= 0 (a fraction of mean(diag H)), got {damp!r}")


def _check_settings(
    weight: torch.Tensor, h: torch.Tensor, group_size: int | None, damp: float, block_size: int
) -> None:
    if weight.ndim not in (2, 3):
        raise ValueError(
            "weight must be 2-D (out, in), or 3-D (layers, out, in), got shape "
            f"{tuple(weight.shape)}"
        )
    n = weight.shape[-1]
    want = (*weight.shape[:-2], n, n)
    if not isinstance(h, torch.Tensor) or h.shape != want:
        got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(f"h must be the {want} Hessian of the weight's inputs, got {got}")
    Granularity.of(weight.shape[-2:], None, group_size)  # raises for a g that does not divide in
    _check_damp(damp)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")


DAMP = 0.01
"""GPTQ's default damping, as a fraction of ``mean(diag H)`` (the paper's 1 %)."""


class HessianFactor(NamedTuple):
    """What :func:`hessian_factor` returns: GPTQ's work on ``H`` alone.

    ``order`` (the column order; decreasing ``H_jj`` with act-order) and ``dead``
    (inputs that are always 0) have the shape of ``h`` without its last dim;
    ``u`` has ``h``'s shape: the upper Cholesky factor of the damped ``H^-1``
    with rows and columns in ``order``. ``h``, ``damp`` and ``act_order`` are
    what it was made from: :func:`gptq_quantize` refuses a factor of another
    Hessian or other settings.
    """

    order: torch.Tensor
    u: torch.Tensor
    dead: torch.Tensor
    h: torch.Tensor
    damp: float
    act_order: bool


def hessian_factor(
    h: torch.Tensor, *, damp: float = DAMP, act_order: bool = False
) -> HessianFactor:
    """Steps 1-4 of :func:`gptq_quantize` that depend on ``h`` only, not on the weight or its grid.

    1. Inputs that are always 0 (``H_jj = 0``) are ``dead``; they get ``H_jj = 1``.
    2. ``order``: with ``act_order``, columns in order of decreasing ``H_jj``; else as they are.
    3. Damping: ``H + damp * mean(diag H) * I``.
    4. ``U``, upper triangular with ``U^T U = H^-1`` (rows and columns in ``order``),
       from one Cholesky factorization, in float64.

    Quantizing one layer several ways (bits, group sizes, grids) needs this once:
    pass it to :func:`gptq_quantize` as ``factor``. ``h`` is ``(in, in)`` or
    ``(layers, in, in)``. Raises ``ValueError`` for an ``h`` that is not square,
    NaN or infinity in it, ``damp < 0``, and when the damped ``H`` is not
    positive definite (raise ``damp``).
    """
    h = check_float_tensor(h, "h")
    if h.ndim not in (2, 3) or h.shape[-1] != h.shape[-2]:
        raise ValueError(f"h must be (in, in) or (layers, in, in), got shape {tuple(h.shape)}")
    _check_damp(damp)
    check_finite(h, "h")
    source, n = h, h.shape[-1]
    h = h.detach().double().clone().reshape(-1, n, n)
    diag = h.diagonal(dim1=-2, dim2=-1)  # a view: writing it writes h
    dead = diag == 0
    diag.masked_fill_(dead, 1.0)
    if act_order:
        order = torch.argsort(diag, dim=-1, descending=True, stable=True)  # (layers, n)
    else:
        order = torch.arange(n, device=h.device).expand(h.shape[0], n)
    h = h.gather(1, order.unsqueeze(2).expand_as(h)).gather(2, order.unsqueeze(1).expand_as(h))
    diag = h.diagonal(dim1=-2, dim2=-1)
    diag.add_(damp * diag.mean(dim=-1, keepdim=True))
    # U, upper, with U^T U = H^-1, in one factorization: with J the reversal, J H J =
    # L L^T gives H^-1 = (J L^-T J)(J L^-1 J), and J L^-1 J is upper triangular.
    lower, info = torch.linalg.cholesky_ex(h.flip(-2, -1))
    if bool((info > 0).any()):
        raise ValueError("H + damp * mean(diag H) * I is not positive definite: raise damp")
    eye = torch.eye(n, dtype=h.dtype, device=h.device).expand_as(h)
    u = torch.linalg.solve_triangular(lower, eye, upper=False).flip(-2, -1)
    lead = source.shape[:-1]
    order, u, dead = order.reshape(lead), u.reshape(source.shape), dead.reshape(lead)
    return HessianFactor(order, u, dead, source, float(damp), bool(act_order))


def _check_factor(factor: HessianFactor, h: torch.Tensor, damp: float, act_order: bool) -> None:
    """Refuse a factor not made from ``h`` with these settings: it would be silently wrong."""
    if not isinstance(factor, HessianFactor):
        got = type(factor).__name__
        raise TypeError(f"factor must be a HessianFactor from hessian_factor(), got {got}")
    if (factor.damp, factor.act_order) != (float(damp), bool(act_order)):
        raise ValueError(
            f"factor was made with damp={factor.damp}, act_order={factor.act_order}; this call "
            f"has damp={damp}, act_order={act_order}"
        )
    same = factor.h is h or (factor.h.shape == h.shape and torch.equal(factor.h, h.to(factor.h)))
    if not same:
        raise ValueError("factor was made from another Hessian than h")


SCALES = ("minmax", "mse")
"""How :func:`gptq_quantize` chooses its grid: the weight's min and max, or MSE clipping."""


def _grid(
    w: torch.Tensor, bits: int, symmetric: bool, scales: str, per: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qparams of a ``(rows, in)`` weight: min-max (the core's), or MSE-clipped symmetric."""
    if scales == "mse":
        scale = mse_weight_scale(w, bits, **per)
        return scale, torch.zeros(scale.shape, dtype=torch.int32, device=scale.device)
    return choose_qparams(w, bits, symmetric=symmetric, narrow=symmetric, **per)


def gptq_quantize(
    weight: torch.Tensor,
    h: torch.Tensor,
    bits: int = 4,
    *,
    group_size: int | None = None,
    symmetric: bool = True,
    damp: float = DAMP,
    act_order: bool = False,
    block_size: int = 32,
    scales: str = "minmax",
    factor: HessianFactor | None = None,
) -> GPTQResult:
    """Quantize an ``(out, in)`` weight with GPTQ, given the Hessian ``h`` of its inputs.

    1. Columns whose input is always 0 (``H_jj = 0``) are set to 0 and get ``H_jj = 1``.
    2. With ``act_order``, columns go in order of decreasing ``H_jj``: the
       columns with the largest inputs are rounded while many others can still
       compensate.
    3. Damping: ``H + damp * mean(diag H) * I``, which makes a singular ``H``
       (fewer calibration tokens than inputs) invertible and keeps updates small.
    4. ``U = cholesky(H^-1)`` (upper). For each column ``j`` in order:
       ``q_j = quantize(w_j)``, ``e_j = (w_j - w_hat_j) / U_jj``, and the later
       columns get ``w_k -= e_j U_jk``, applied within a block of ``block_size``
       columns at once and to the columns beyond it in one matmul per block.

    Qparams come per output channel (``group_size=None``) from the whole
    weight, or per group of ``group_size`` inputs from the group's *updated*
    columns when the group comes up; with ``act_order`` the groups stay those of
    the original column order and take their qparams from the original weight
    ("static groups"), so that ``codes`` dequantize group by group like any
    other per-group weight. ``scales="minmax"``: the core's min-max qparams
    (symmetric, narrow codes, ``scale = max|w| / (2^(b-1) - 1)``; or asymmetric
    over ``[min, max]`` with a zero point). ``scales="mse"``: symmetric scales
    clipped to the ratio of ``max|w|`` that minimizes the weight's own rounding
    MSE (:func:`~linquant_helpers.weights.mse_weight_scale`), from the original
    weight, per group too (static). All arithmetic in float64.

    ``weight`` may also be ``(layers, out, in)`` with ``h`` ``(layers, in, in)``:
    layers of one shape run together, one column loop for all (the same codes as
    one call per layer, in a fraction of the time); the result then has the
    leading ``layers`` dimension too.

    Steps 1-4 depend on ``h``, ``damp`` and ``act_order`` only (:func:`hessian_factor`):
    to quantize one layer several ways, compute ``factor = hessian_factor(h, damp=..,
    act_order=..)`` once and pass it; the result is the same as without it.

    Raises ``ValueError`` for a weight that is not 2-D or 3-D, an ``h`` that does
    not match it, NaN or infinity in either, a bad ``bits``/``group_size``/
    ``scales``, ``scales="mse"`` with ``symmetric=False``, ``damp < 0``,
    ``block_size < 1``, and when ``H`` is not positive definite (raise ``damp``).
    """
    weight = check_float_tensor(weight, "weight")
    check_bits(bits)
    _check_settings(weight, h, group_size, damp, block_size)
    if scales not in SCALES:
        raise ValueError(f"scales must be one of {SCALES}, got {scales!r}")
    if scales == "mse" and not symmetric:
        raise ValueError("scales='mse' clips symmetric scales: it needs symmetric=True")
    check_finite(weight, "weight")
    if factor is None:
        factor = hessian_factor(h, damp=damp, act_order=act_order)
    else:
        _check_factor(factor, h, damp, act_order)
    single = weight.ndim == 2
    w = weight.detach().double().clone().reshape(-1, *weight.shape[-2:])
    layers, out, n = w.shape
    order = factor.order.reshape(layers, n).to(w.device)
    u = factor.u.reshape(layers, n, n).to(w.device)
    w.masked_fill_(factor.dead.reshape(layers, 1, n).to(w.device), 0.0)
    narrow = symmetric  # symmetric codes are narrow ([-7, 7] at 4 bits), as in lessons 05-08
    qmin, qmax = qrange(bits, signed=True, narrow=narrow)
    per = {"group_size": group_size} if group_size else {"axis": 0}
    static = group_size is None or act_order or scales == "mse"
    groups = n // group_size if group_size else 1
    if static:
        scale, zero_point = _grid(w.reshape(-1, n), bits, symmetric, scales, per)
        scale, zero_point = scale.reshape(layers, out, -1), zero_point.reshape(layers, out, -1)
    else:
        scale = torch.empty(layers, out, groups, dtype=torch.float32, device=w.device)
        zero_point = torch.empty(layers, out, groups, dtype=torch.int32, device=w.device)
    # columns in order, and each column contiguous: (layers, n, out), row j is column j
    w = w.gather(2, order.unsqueeze(1).expand(layers, out, n)).transpose(1, 2).contiguous()
    if group_size and not static:  # a block holds whole groups: each group is rounded in one
        block_size = group_size * max(1, block_size // group_size)
    codes = torch.empty(layers, n, out, dtype=code_dtype(bits, signed=True), device=w.device)
    group_of = order // group_size if group_size else torch.zeros_like(order)  # (layers, n)
    u_diag = u.diagonal(dim1=-2, dim2=-1)
    qparams, current = None, None
    for b0 in range(0, n, block_size):
        b1 = min(b0 + block_size, n)
        block = w[:, b0:b1].clone()
        errors = torch.empty(layers, b1 - b0, out, dtype=w.dtype, device=w.device)
        for i in range(b1 - b0):
            j = b0 + i
            if not static and j % group_size == 0:  # a new group: qparams from its updated columns
                sz = choose_qparams(
                    block[:, i : i + group_size].transpose(1, 2).reshape(-1, group_size),
                    bits, symmetric=symmetric, narrow=narrow, axis=0,
                )  # fmt: skip
                scale[:, :, j // group_size] = sz[0].reshape(layers, out)
                zero_point[:, :, j // group_size] = sz[1].reshape(layers, out)
            if act_order and group_size:  # each layer's column j is in a group of its own
                g = group_of[:, j].reshape(layers, 1, 1).expand(layers, out, 1)
                qparams = _column_qparams(
                    scale.gather(2, g)[..., 0], zero_point.gather(2, g)[..., 0]
                )
            elif qparams is None or (group_size and j // group_size != current):
                current = j // group_size if group_size else 0
                qparams = _column_qparams(scale[:, :, current], zero_point[:, :, current])
            codes[:, j], w_hat = _round_column(block[:, i], qparams, qmin, qmax, codes.dtype)
            errors[:, i] = err = (block[:, i] - w_hat) / u_diag[:, j : j + 1]
            block[:, i:].baddbmm_(
                u[:, j, j:b1].unsqueeze(2), err.unsqueeze(1), alpha=-1
            )  # w -= e_j U_j
        w[:, b1:] -= u[:, b0:b1, b1:].transpose(1, 2) @ errors  # the later blocks: one matmul
    codes = codes.transpose(1, 2)
    codes = codes.gather(2, torch.argsort(order, dim=-1).unsqueeze(1).expand(layers, out, n))
    scale = scale.reshape(layers, out, groups) if group_size else scale.reshape(layers, out)
    zero_point = zero_point.reshape(scale.shape)
    flat_qparams = (scale.reshape(layers * out, *scale.shape[2:]),) + (
        zero_point.reshape(layers * out, *scale.shape[2:]),
    )
    weight_hat = dequantize(codes.reshape(-1, n), *flat_qparams, **per).reshape(layers, out, n)
    if single:
        return GPTQResult(weight_hat[0], codes[0], scale[0], zero_point[0])
    return GPTQResult(weight_hat, codes, scale, zero_point)


def _column_qparams(scale: torch.Tensor, zero_point: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(1 / scale`` in float32 then float64, ``zero_point`` in float64, ``scale``,
    ``zero_point`` in float32): what :func:`_round_column` needs, computed once per group."""
    return (1 / scale).double(), zero_point.double(), scale, zero_point.float()


def _round_column(
    col: torch.Tensor,
    qparams: tuple[torch.Tensor, ...],
    qmin: int,
    qmax: int,
    dtype: torch.dtype = torch.int8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The core's ``quantize`` and ``dequantize`` of one float64 column, per row, without checks.

    ``q = clamp(round(col * (1 / s) + z), qmin, qmax)`` in float64 with ``1 / s``
    taken in float32, and ``w_hat = (q - z) * s`` in float32, as
    :func:`~linquant_helpers.affine.quantize` and ``dequantize`` compute them for
    float64 input (``qparams`` from :func:`_column_qparams`). GPTQ rounds one
    column at a time, thousands of them; the core's checks of every call cost ten
    times the arithmetic, and ``choose_qparams`` made these qparams valid.
    ``tests/test_gptq.py`` proves the two bit-identical. Returns the codes in
    ``dtype`` (int8, or int16 above 8 bits) and ``w_hat`` in float64.
    """
    inv_scale, zero_point, scale, zero_point_f = qparams
    q = torch.clamp(torch.round(col * inv_scale + zero_point), qmin, qmax)
    return q.to(dtype), ((q.float() - zero_point_f) * scale).double()


def layer_inputs(
    model: nn.Module,
    features: dict[str, Any],
    names: Sequence[str],
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The inputs ``X`` ``(tokens, in)`` of the named ``nn.Linear`` layers of ``model``.

    ``model(dict(features))`` runs once with forward pre-hooks; a layer's input
    ``(batch, seq, in)`` keeps the tokens where ``mask`` ``(batch, seq)`` is
    nonzero (padding carries no text), all of them when ``mask`` is ``None``;
    an input of another shape (a pooler's ``(batch, in)``) is kept whole. A
    layer called more than once in the forward pass (a shared layer) gets the
    rows of every call, in call order. Returns float64 ``(tokens, in)`` per name
    (the model's own dtype, upcast). Raises ``ValueError`` for a name that is
    not an ``nn.Linear`` of ``model``, and for a layer the forward pass never
    called (it has no input to calibrate on).
    """
    modules = dict(model.named_modules())
    names = list(dict.fromkeys(names))  # a name given twice is hooked once
    bad = [name for name in names if not isinstance(modules.get(name), nn.Linear)]
    if bad:
        raise ValueError(f"names must name nn.Linear layers of model; not: {bad[:3]}")
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def hook(name: str):
        def keep(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach()
            if mask is not None and x.shape[:-1] == mask.shape:  # (batch, seq, in): drop padding
                x = x[mask.to(torch.bool)]
            captured[name].append(x.reshape(-1, x.shape[-1]).double())

        return keep

    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in names]
    try:
        with torch.inference_mode():
            model(dict(features))
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name, calls in captured.items() if not calls]
    if missing:
        raise ValueError(
            f"names: the forward pass never called {missing[:3]}; they have no input to "
            "calibrate on (leave them out, or pass features that reach them)"
        )
    return {
        name: calls[0] if len(calls) == 1 else torch.cat(calls) for name, calls in captured.items()
    }


def _quantize_in_place(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    bits: int,
    settings: dict[str, Any],
    factors: dict[Any, tuple[list[torch.Tensor], HessianFactor]] | None = None,
) -> None:
    """Give the named layers of ``model`` their GPTQ weights; layers of one shape in one call.

    ``factors`` (optional) keeps each group's inputs and :class:`HessianFactor` under
    its names, ``damp`` and ``act_order``, and reuses the factor while the inputs are equal.
    """
    modules = dict(model.named_modules())
    bad = [name for name in inputs if not isinstance(modules.get(name), nn.Linear)]
    if bad:
        raise ValueError(f"inputs must name nn.Linear layers of model; not: {bad[:3]}")
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name in inputs:
        by_shape.setdefault(tuple(modules[name].weight.shape), []).append(name)
    for names in by_shape.values():
        weights = torch.stack([modules[name].weight.detach().double() for name in names])
        xs = [inputs[name] for name in names]
        key = (tuple(names), settings.get("damp", DAMP), settings.get("act_order", False))
        kept = None if factors is None else factors.get(key)
        if kept is not None and _same_tensors(kept[0], xs):  # a few MB to compare, not an H
            factor = kept[1]
            hessians = factor.h
        else:
            hessians = torch.stack([hessian(x) for x in xs])
            factor = None
            if factors is not None:
                factor = hessian_factor(hessians, damp=key[1], act_order=key[2])
                factors[key] = ([x.clone() for x in xs], factor)  # copies: X is small, H not
        result = gptq_quantize(weights, hessians, bits, factor=factor, **settings)
        for name, w_hat in zip(names, result.weight, strict=True):
            modules[name].weight.data = w_hat.to(modules[name].weight.dtype)


def _same_tensors(kept: list[torch.Tensor], xs: list[torch.Tensor]) -> bool:
    """Whether the inputs a factor was made from (copies) hold the values of these."""
    return len(kept) == len(xs) and all(
        a.shape == b.shape and torch.equal(a, b) for a, b in zip(kept, xs, strict=True)
    )


def gptq_quantize_model(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    bits: int = 4,
    *,
    factors: dict[Any, Any] | None = None,
    **settings: Any,
) -> nn.Module:
    """A copy of ``model`` whose layers named in ``inputs`` hold their GPTQ weights.

    ``inputs`` maps a layer name to its calibration input ``X`` (e.g. from
    :func:`layer_inputs`); ``settings`` go to :func:`gptq_quantize`
    (``group_size``, ``damp``, ``act_order``, ``scales``, ...). Each layer sees the
    inputs of the *float* model, which needs one calibration run for all layers;
    :func:`gptq_quantize_model_sequential` does as the GPTQ paper does. Layers of
    one shape are quantized together (one column loop), with the codes of one
    call per layer. The weights stay float tensors holding the dequantized values
    (simulated quantization); ``model`` itself is not modified.

    ``factors``: an empty dict to start, then the same dict for every call on the
    same ``inputs``: it keeps each layer group's inputs and :class:`HessianFactor`,
    so that quantizing one model several ways (bits, group sizes, grids) factors
    each Hessian once per ``damp`` and ``act_order``. A kept factor whose inputs
    differ from this call's (in their values) is made again, never reused.
    """
    quantized = copy.deepcopy(model)
    _quantize_in_place(quantized, inputs, bits, settings, factors)
    return quantized


def gptq_quantize_model_sequential(
    model: nn.Module,
    features: dict[str, Any],
    stages: Sequence[Sequence[str]],
    bits: int = 4,
    *,
    mask: torch.Tensor | None = None,
    **settings: Any,
) -> nn.Module:
    """GPTQ as the paper runs it: each stage calibrated on the quantized stages' outputs.

    ``stages`` lists groups of ``nn.Linear`` names in the order the forward pass
    reaches them (e.g. one transformer block per stage). For each stage, the
    copy runs ``features`` through with every earlier stage already quantized
    (:func:`layer_inputs`, with ``mask``), and the stage's layers get their GPTQ
    weights from those inputs; so the later layers learn to compensate for what
    the earlier ones lost. One forward pass per stage. ``settings`` go to
    :func:`gptq_quantize`. Run it on a float64 copy of the model for inputs that
    are the same on every CPU. Returns the copy; ``model`` is not modified.
    Raises ``ValueError`` as :func:`layer_inputs` does, and for a name in two stages.
    """
    names = [name for stage in stages for name in stage]
    if len(set(names)) != len(names):
        raise ValueError("stages must name each layer once")
    quantized = copy.deepcopy(model)
    for stage in stages:
        inputs = layer_inputs(quantized, features, list(stage), mask)
        _quantize_in_place(quantized, inputs, bits, settings)
    return quantized
