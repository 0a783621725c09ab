"""Granularity: which elements share one scale and zero point.

One vocabulary for every function in the package:

* per-tensor  (``axis=None, group_size=None``): one scale for all of ``x``; 0-d scale.
* per-channel (``axis=k``): one scale per index along dimension ``k``
  (negative ``k`` counts from the end); scale of shape ``(x.shape[k],)``.
* per-group   (``group_size=g``): one scale per ``g`` consecutive elements of
  the last dimension; scale of shape ``x.shape[:-1] + (x.shape[-1] // g,)``.

The trick that makes all three vectorized is broadcasting. We look at ``x``
through a *grouped view* in which the qparams broadcast element-wise:

* per-tensor:  ``x`` itself, against a 0-d scale;
* per-channel: ``x`` itself, against the scale reshaped to ``(1, .., C, .., 1)``;
* per-group:   ``x`` reshaped to ``(..., n_groups, g)``, against the scale
  with a trailing 1: ``(..., n_groups, 1)``.

No Python loop over channels or groups is ever needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Granularity:
    """A checked ``(axis, group_size)`` pair for a tensor of a given shape."""

    shape: torch.Size
    axis: int | None = None
    group_size: int | None = None

    @classmethod
    def of(cls, shape: torch.Size, axis: int | None, group_size: int | None) -> Granularity:
        """Validate ``axis``/``group_size`` against ``shape`` and normalize a negative axis."""
        ndim = len(shape)
        if axis is not None and group_size is not None:
            raise ValueError(
                f"give either axis (per-channel) or group_size (per-group), not both; "
                f"got axis={axis}, group_size={group_size}"
            )
        if axis is not None:
            if isinstance(axis, bool) or not isinstance(axis, int):
                raise TypeError(f"axis must be an int or None, got {axis!r}")
            if not -ndim <= axis < ndim:
                raise ValueError(
                    f"axis must be in [{-ndim}, {ndim - 1}] for a tensor of shape "
                    f"{tuple(shape)}, got {axis}"
                )
            axis %= ndim
        if group_size is not None:
            if isinstance(group_size, bool) or not isinstance(group_size, int):
                raise TypeError(f"group_size must be an int or None, got {group_size!r}")
            if ndim == 0:
                raise ValueError(
                    f"group_size={group_size} needs a tensor with at least one dimension, "
                    "got a 0-d tensor"
                )
            if group_size <= 0 or shape[-1] % group_size:
                raise ValueError(
                    f"group_size must be a positive divisor of the last dimension "
                    f"({shape[-1]}), got {group_size}"
                )
        return cls(torch.Size(shape), axis, group_size)

    @property
    def qparam_shape(self) -> torch.Size:
        """Shape of the scale and zero point for this granularity."""
        if self.axis is not None:
            return torch.Size([self.shape[self.axis]])
        if self.group_size is not None:
            return self.shape[:-1] + (self.shape[-1] // self.group_size,)
        return torch.Size([])

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """View ``x`` so that qparams broadcast against it (see the module docstring)."""
        if self.group_size is None:
            return x
        return x.reshape(*self.shape[:-1], self.shape[-1] // self.group_size, self.group_size)

    def reduce_dims(self) -> tuple[int, ...]:
        """Dimensions of the grouped view that one scale summarizes."""
        if self.group_size is not None:
            return (len(self.shape),)  # the trailing group dimension of the grouped view
        if self.axis is not None:
            return tuple(d for d in range(len(self.shape)) if d != self.axis)
        return tuple(range(len(self.shape)))

    def broadcastable(self, p: torch.Tensor, name: str) -> torch.Tensor:
        """Reshape a qparam ``p`` so it broadcasts against the grouped view.

        A single value is accepted for any granularity (e.g. one zero point
        shared by all channels); otherwise ``p`` must have ``qparam_shape``.
        """
        if p.numel() == 1:
            return p.reshape([])
        if p.shape != self.qparam_shape:
            raise ValueError(
                f"{name} has shape {tuple(p.shape)}, but {self.describe()} of a tensor of "
                f"shape {tuple(self.shape)} needs shape {tuple(self.qparam_shape)}"
            )
        if self.axis is not None:
            return p.reshape([-1 if d == self.axis else 1 for d in range(len(self.shape))])
        return p.unsqueeze(-1)  # per-group: one value per (..., group), shared by g elements

    def describe(self) -> str:
        """'per-tensor', 'per-channel (axis=k)' or 'per-group (group_size=g)'."""
        if self.axis is not None:
            return f"per-channel (axis={self.axis})"
        if self.group_size is not None:
            return f"per-group (group_size={self.group_size})"
        return "per-tensor"
