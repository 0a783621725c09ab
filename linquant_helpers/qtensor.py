"""``QTensor``: integer codes together with the qparams needed to read them back."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .affine import choose_qparams, dequantize, quantize


@dataclass(frozen=True)
class QTensor:
    """A quantized tensor: codes ``q`` plus ``scale``/``zero_point`` and the settings.

    ``x_hat = scale * (q - zero_point)``, with the qparams broadcast along
    ``axis`` (per-channel) or over groups of ``group_size`` (per-group).
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    symmetric: bool
    signed: bool
    narrow: bool
    axis: int | None
    group_size: int | None

    @property
    def shape(self) -> torch.Size:
        return self.q.shape

    def dequantize(self) -> torch.Tensor:
        """The float32 values the codes stand for: ``scale * (q - zero_point)``."""
        return dequantize(
            self.q, self.scale, self.zero_point, axis=self.axis, group_size=self.group_size
        )

    @property
    def nbytes(self) -> int:
        """Bytes actually held: the codes in their dtype, plus every scale and zero point.

        A 4-bit code held in an int8 tensor counts as a byte here; see
        :func:`linquant_helpers.packing.pack` to store it in half a byte.
        """
        return sum(t.numel() * t.element_size() for t in (self.q, self.scale, self.zero_point))

    def __repr__(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        where = (
            f"axis={self.axis}"
            if self.axis is not None
            else f"group_size={self.group_size}"
            if self.group_size is not None
            else "per-tensor"
        )
        return (
            f"QTensor(shape={tuple(self.shape)}, bits={self.bits}, {kind}, "
            f"signed={self.signed}, narrow={self.narrow}, {where}, dtype={self.q.dtype}, "
            f"nbytes={self.nbytes})"
        )


def quantize_tensor(
    x: torch.Tensor,
    bits: int = 8,
    *,
    symmetric: bool = False,
    signed: bool = True,
    narrow: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
) -> QTensor:
    """Choose qparams from ``x``'s range and quantize it: ``choose_qparams`` + ``quantize``."""
    settings = dict(signed=signed, narrow=narrow, axis=axis, group_size=group_size)
    scale, zero_point = choose_qparams(x, bits, symmetric=symmetric, **settings)
    q = quantize(x, scale, zero_point, bits, **settings)
    return QTensor(q, scale, zero_point, bits, symmetric, **settings)
