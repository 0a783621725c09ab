"""The KV cache in a few bits: keys and values quantized per token or per channel (lesson 12).

A decoder keeps the keys and values of every past token of every attention layer;
with long contexts that cache outgrows the weights. KIVI (Liu et al. 2024)
quantizes keys per channel (their outlier channels span all tokens) and values per
token. Here, asymmetric min-max scales (a zero point, so that 2 bits give 4 levels):

* :func:`quantize_kv` - fake-quantize a ``(batch, tokens, features)`` key or value tensor;
* :func:`quantized_kv` - a context manager that quantizes the outputs of a model's key
  and value projections while it runs;
* :func:`kv_cache_bytes` - ``2 * layers * kv_heads * head_dim * bits / 8`` bytes per token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .affine import fake_quantize
from .validation import check_bits, check_finite, check_float_tensor, check_int
from .weights import rows_qparams

PER = ("token", "channel")
"""The two granularities of :func:`quantize_kv`."""


def quantize_kv(
    x: torch.Tensor,
    bits: int,
    per: str,
    *,
    head_dim: int | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fake-quantize keys or values ``x`` ``(batch, tokens, features)`` at ``bits``, asymmetric.

    * ``per="token"``: one ``(scale, zero_point)`` per token and head, over that head's
      ``head_dim`` features (all features when ``head_dim`` is ``None``);
    * ``per="channel"``: one per sequence and feature, over the sequence's tokens.

    ``scale = (max - min) / (2^b - 1)`` and ``zero_point = -round(min / scale)``, the range
    widened to include 0 (:func:`~linquant_helpers.affine.qparams_from_range`). ``mask``
    ``(batch, tokens)`` marks the tokens that hold text: padding (``mask == 0``) does not
    widen a channel's range, and comes back unchanged. Returns ``x``'s shape and dtype.
    Raises ``TypeError``/``ValueError`` naming the argument for a non-float or non-3-D
    ``x``, NaN or infinity, a bad ``bits``, ``per``, ``head_dim`` or ``mask``.
    """
    x = check_float_tensor(x, "x")
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, tokens, features), got shape {tuple(x.shape)}")
    check_finite(x, "x")
    check_bits(bits)
    if per not in PER:
        raise ValueError(f"per must be one of {PER}, got {per!r}")
    batch, tokens, features = x.shape
    if head_dim is not None:
        check_int(head_dim, "head_dim", low=1)
        if features % head_dim:
            raise ValueError(f"head_dim must divide the {features} features, got {head_dim}")
    if mask is None:
        keep = torch.ones(batch, tokens, dtype=torch.bool, device=x.device)
    elif not isinstance(mask, torch.Tensor) or mask.shape != (batch, tokens):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be (batch, tokens) = {(batch, tokens)}, got {shape}")
    else:
        keep = mask.to(device=x.device, dtype=torch.bool)
    if per == "token":
        rows = x.reshape(-1, head_dim or features)  # one row per token (and head)
        where = dict(axis=0)
    else:
        # a padded token takes the value of the sequence's first token, which is in range
        filled = torch.where(keep[..., None], x, x[:, :1])
        rows = filled.transpose(1, 2).reshape(-1, tokens)  # one row per sequence and feature
        where = dict(axis=0)
    scale, zero_point = rows_qparams(rows, bits, symmetric=False, narrow=False, **where)
    fq = fake_quantize(rows, scale, zero_point, bits, **where)
    if per == "token":
        out = fq.reshape(x.shape)
    else:
        out = fq.reshape(batch, features, tokens).transpose(1, 2)
    return torch.where(keep[..., None], out, x)


@contextmanager
def quantized_kv(
    model: nn.Module,
    *,
    keys: tuple[int, str] | None = None,
    values: tuple[int, str] | None = None,
    head_dim: int | None = None,
    mask: torch.Tensor | None = None,
    key_suffix: str = "attention.self.key",
    value_suffix: str = "attention.self.value",
) -> Iterator[int]:
    """While inside, the outputs of ``model``'s key and value projections are quantized.

    ``keys`` and ``values`` are ``(bits, per)`` for :func:`quantize_kv`, or ``None`` to
    leave them in float. The projections are the ``nn.Linear`` modules whose names end
    with ``key_suffix`` / ``value_suffix`` (BERT's names; forward hooks replace their
    outputs). Yields the number of hooked layers; the hooks are removed on exit.
    Raises ``ValueError`` when a quantized projection is not found.
    """
    handles = []

    def hook(bits: int, per: str):
        def replace(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            return quantize_kv(output, bits, per, head_dim=head_dim, mask=mask)

        return replace

    try:
        for setting, suffix in ((keys, key_suffix), (values, value_suffix)):
            if setting is None:
                continue
            found = [m for name, m in model.named_modules() if name.endswith(suffix)]
            if not found:
                raise ValueError(f"model has no module whose name ends with {suffix!r}")
            handles += [m.register_forward_hook(hook(*setting)) for m in found]
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


def kv_cache_bytes(
    tokens: int, *, layers: int, kv_heads: int, head_dim: int, bits: int, batch: int = 1
) -> int:
    """Bytes of a KV cache: ``batch * tokens * 2 * layers * kv_heads * head_dim * bits / 8``.

    The 2 counts keys and values; the scales and zero points (a few percent at group
    sizes of 32 or more) are left out. Raises ``TypeError``/``ValueError`` for
    arguments that are not positive ints (``bits`` in 2..16).
    """
    for name, value in dict(
        tokens=tokens, layers=layers, kv_heads=kv_heads, head_dim=head_dim, batch=batch
    ).items():
        check_int(value, name, low=1)
    check_bits(bits)
    return batch * tokens * 2 * layers * kv_heads * head_dim * bits // 8
