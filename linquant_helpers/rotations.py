"""Orthogonal rotations that spread activation outliers: Hadamard matrices (lesson 12).

For an orthogonal ``Q`` (``Q Q^T = I``) a linear layer's output does not change when
both its input and its weight rows are rotated: ``(x Q)(W Q)^T = x Q Q^T W^T = x W^T``.
A Hadamard matrix ``H_n`` (entries +-1, ``H_n H_n^T = n I``) scaled by ``1/sqrt(n)`` is
such a ``Q``, and it turns a spike into a flat vector: every output is
``(+-x_1 +- x_2 .. +- x_n) / sqrt(n)``. QuaRot, SpinQuant and QuIP# rotate this way.

* :func:`hadamard_matrix` - ``H_n`` in Sylvester order (``n = 2^k``) or ``H_12 (x) H_{2^k}``;
* :func:`hadamard_transform` - ``x @ H_n / sqrt(n)`` along the last dimension, O(n log n);
* :func:`hadamard_rotate` - the same for widths ``2^k`` and ``12 * 2^k`` (384, 1536);
* :func:`block_hadamard_transform` - a block-diagonal Hadamard rotation, for any multiple of
  a power-of-two block;
* :func:`random_orthogonal` - a random (Haar) orthogonal matrix, to compare with;
* :class:`RotatedInput`, :func:`rotated_linear`, :func:`simulate_rotated` - linear layers
  that quantize the rotated input ``x Q`` and the rotated weight ``W Q`` (simulated, online).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .sampling import randn
from .smoothquant import SimulatedW8A8Linear
from .surgery import quantizable_layers, replace_modules
from .validation import check_finite, check_float_tensor, check_int

PALEY_ORDER = 12
"""The order of the small Hadamard matrix that :func:`hadamard_matrix` builds by Paley's
construction (from the squares modulo 11); ``12 * 2^k`` covers MiniLM's 384 and 1536."""


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def sylvester_hadamard(n: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Sylvester's ``H_n``: ``H_1 = [1]``, ``H_2m = [[H_m, H_m], [H_m, -H_m]]``, ``n = 2^k``.

    Entries are +-1 and ``H_n H_n^T = n I``; ``H_n`` is symmetric. Raises ``ValueError``
    for an ``n`` that is not a power of two.
    """
    check_int(n, "n", low=1)
    if not _is_power_of_two(n):
        raise ValueError(f"n must be a power of two for Sylvester's construction, got {n}")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:  # log2(n) doublings
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)], dim=0)
    return h


def paley_hadamard_12(*, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A Hadamard matrix of order 12 by Paley's first construction, ``q = 11``.

    ``Q[i, j] = chi(j - i)`` with ``chi`` the quadratic character modulo 11 (+1 on the
    squares 1, 3, 4, 5, 9; -1 on the others; 0 at 0); then
    ``H = I + [[0, 1^T], [-1, Q]]``, and ``H H^T = 12 I``. (No Hadamard matrix of
    order 3 or 6 exists: after 1 and 2 the order is a multiple of 4.)
    """
    q = 11
    squares = {(k * k) % q for k in range(1, q)}
    diff = (torch.arange(q)[None, :] - torch.arange(q)[:, None]) % q
    chi = torch.tensor([0] + [1 if r in squares else -1 for r in range(1, q)])
    s = torch.zeros(q + 1, q + 1, dtype=torch.int64)
    s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, chi[diff]
    return (torch.eye(q + 1, dtype=torch.int64) + s).to(dtype)


def hadamard_matrix(n: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``H_n`` with entries +-1 and ``H_n H_n^T = n I``, for ``n = 2^k`` or ``n = 12 * 2^k``.

    ``n = 2^k``: :func:`sylvester_hadamard`. ``n = 12 m``: the Kronecker product
    ``H_12 (x) H_m`` of :func:`paley_hadamard_12` and Sylvester's ``H_m``; it is Hadamard
    because ``(A (x) B)(A (x) B)^T = A A^T (x) B B^T = 12 I (x) m I``.
    Raises ``ValueError`` for any other ``n``.
    """
    check_int(n, "n", low=1)
    if _is_power_of_two(n):
        return sylvester_hadamard(n, dtype=dtype)
    if n % PALEY_ORDER == 0 and _is_power_of_two(n // PALEY_ORDER):
        return torch.kron(paley_hadamard_12(dtype=dtype), sylvester_hadamard(n // 12, dtype=dtype))
    raise ValueError(f"n must be 2^k or 12 * 2^k, got {n}")


def _checked(x: object, name: str = "x") -> torch.Tensor:
    x = check_float_tensor(x, name)
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d tensor")
    if not bool(torch.isfinite(x.sum())):  # one reduction; NaN and inf reach the sum
        check_finite(x, name)
    return x


def _butterfly(x: torch.Tensor) -> torch.Tensor:
    """``x @ H_n`` (unnormalized) along the last dimension, ``n`` a power of two, unchecked."""
    n = x.shape[-1]
    y, h = x.reshape(-1, n).clone(), 1
    while h < n:  # one stage per bit: pairs (a, b) h apart inside blocks of 2h
        pairs = y.view(-1, n // (2 * h), 2, h)
        a, b = pairs[:, :, 0], pairs[:, :, 1]
        a_old = a.clone()
        a.add_(b)  # a + b
        b.neg_().add_(a_old)  # a - b
        h *= 2
    return y.view(x.shape)


def hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """The normalized fast Walsh-Hadamard transform of ``x`` along its last dimension.

    Returns ``x @ H_n / sqrt(n)`` with Sylvester's ``H_n`` (:func:`sylvester_hadamard`),
    ``n = x.shape[-1]`` a power of two, in ``x``'s shape, dtype and device. The
    butterfly: for ``h = 1, 2, 4, .., n/2``, each pair ``(a, b)`` of entries ``h`` apart
    inside a block of ``2h`` becomes ``(a + b, a - b)``; ``log2(n)`` stages of ``n``
    additions, O(n log n) instead of the matmul's O(n^2). The transform is orthogonal
    and its own inverse. Raises ``TypeError`` for a tensor that is not floating-point,
    ``ValueError`` for a 0-d tensor, a last dimension that is not a power of two
    (see :func:`hadamard_rotate` for ``12 * 2^k``), and NaN or infinity.
    """
    x = _checked(x)
    n = x.shape[-1]
    if not _is_power_of_two(n):
        raise ValueError(
            f"x's last dimension must be a power of two, got {n}; for 12 * 2^k use "
            "hadamard_rotate, for other multiples of a power of two block_hadamard_transform"
        )
    return _butterfly(x).mul_(n**-0.5)


def hadamard_rotate(x: torch.Tensor) -> torch.Tensor:
    """``x @ H_n / sqrt(n)`` along the last dimension for ``n = 2^k`` or ``n = 12 * 2^k``.

    ``H_n`` is :func:`hadamard_matrix`'s. For ``n = 12 m`` the row ``x``, read as a
    ``(12, m)`` matrix ``X`` (row-major), maps to ``A^T X B`` with ``A = H_12 / sqrt(12)``
    and ``B = H_m / sqrt(m)``: that is ``x (A (x) B)``. :func:`hadamard_transform` applies
    ``B`` in O(n log m), a ``12 x 12`` matmul applies ``A``. Errors as
    :func:`hadamard_transform`, for widths other than ``2^k`` and ``12 * 2^k``.
    """
    x = _checked(x)
    n = x.shape[-1]
    if _is_power_of_two(n):
        return _butterfly(x).mul_(n**-0.5)
    if n % PALEY_ORDER or not _is_power_of_two(n // PALEY_ORDER):
        raise ValueError(f"x's last dimension must be 2^k or 12 * 2^k, got {n}")
    a = paley_hadamard_12(dtype=x.dtype).to(x.device) * n**-0.5  # both scales at once
    xb = _butterfly(x.unflatten(-1, (PALEY_ORDER, n // PALEY_ORDER)))
    return torch.matmul(a.T, xb).flatten(-2)


def block_hadamard_transform(x: torch.Tensor, block: int) -> torch.Tensor:
    """``x`` times the block-diagonal ``diag(H_b, .., H_b) / sqrt(b)`` along the last dimension.

    Each run of ``block`` consecutive features gets its own :func:`hadamard_transform`;
    a block-diagonal matrix of orthogonal blocks is orthogonal. A spike is spread
    over its own block only. Raises ``ValueError`` unless ``block`` is a power of two
    that divides ``x.shape[-1]``, and as :func:`hadamard_transform`.
    """
    x = _checked(x)
    check_int(block, "block", low=1)
    n = x.shape[-1]
    if not _is_power_of_two(block) or n % block:
        raise ValueError(
            f"block must be a power of two that divides x's last dimension {n}, got {block}"
        )
    return _butterfly(x.unflatten(-1, (n // block, block))).flatten(-2).mul_(block**-0.5)


def random_orthogonal(
    n: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A random orthogonal ``(n, n)`` matrix, uniform (Haar) over the orthogonal group.

    ``G = QR`` of a Gaussian ``G`` (:func:`~linquant_helpers.sampling.randn`, the same on
    every CPU), with the columns of ``Q`` multiplied by the signs of ``diag(R)`` (without
    them the distribution is not uniform). Computed in float64, returned in ``dtype``.
    """
    check_int(n, "n", low=1)
    q, r = torch.linalg.qr(randn(n, n, generator=generator).double())
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


class RotatedInput(nn.Module):
    """``layer(rotate(x))``: rotate a linear layer's input online, before ``layer`` runs.

    ``layer`` must hold the rotated weight ``W Q`` (rows rotated, see
    :func:`simulate_rotated`) so that ``(x Q)(W Q)^T + b = x W^T + b``.
    """

    def __init__(self, rotate: Callable[[torch.Tensor], torch.Tensor], layer: nn.Module) -> None:
        super().__init__()
        self.rotate, self.layer = rotate, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.rotate(x))

    def extra_repr(self) -> str:
        return f"rotate={getattr(self.rotate, '__name__', self.rotate)}"


def rotated_linear(
    linear: nn.Linear,
    *,
    bits: int = 8,
    act_bits: int | None = None,
    rotate: Callable[[torch.Tensor], torch.Tensor] = hadamard_rotate,
) -> RotatedInput:
    """``linear`` with its input rotated online and both operands quantized (simulated).

    ``RotatedInput(rotate, SimulatedW8A8Linear(W Q))``: the input is rotated,
    ``x Q = rotate(x)``, then quantized per token at ``act_bits`` (default ``bits``);
    the weight ``W Q = rotate(W)`` (each row rotated) is quantized per output channel at
    ``bits``. Without quantization the output equals ``linear``'s, ``(x Q)(W Q)^T = x W^T``.
    """
    rotated = copy.deepcopy(linear)
    rotated.weight.data = rotate(linear.weight.detach())
    layer = SimulatedW8A8Linear(rotated, bits=bits, act_bits=act_bits, act_axis=0)
    return RotatedInput(rotate, layer)


def simulate_rotated(
    model: nn.Module,
    *,
    bits: int = 8,
    act_bits: int | None = None,
    rotate: Callable[[torch.Tensor], torch.Tensor] = hadamard_rotate,
) -> nn.Module:
    """A copy of ``model`` whose quantizable ``nn.Linear`` layers are :func:`rotated_linear`.

    ``model`` is not modified.
    """
    copied = copy.deepcopy(model)
    return replace_modules(
        copied,
        list(quantizable_layers(copied, (nn.Linear,))),
        lambda name, layer: rotated_linear(layer, bits=bits, act_bits=act_bits, rotate=rotate),
    )


def orthogonality_error(q: torch.Tensor) -> float:
    """``max |Q Q^T - I|``, in float64: 0 up to rounding for an orthogonal ``Q``."""
    q = check_float_tensor(q, "q")
    if q.ndim != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"q must be a square matrix, got shape {tuple(q.shape)}")
    q = q.double()
    return float(
        (q @ q.T - torch.eye(q.shape[0], dtype=torch.float64, device=q.device)).abs().max()
    )
