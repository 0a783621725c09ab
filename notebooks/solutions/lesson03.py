"""Reference solutions for notebook 03: PyTorch's conventions, without PyTorch's quantized ops."""

import torch

from linquant_helpers.hardware import zero_point_rounding_order


def quantize_like_torch(x, scale, zero_point, dtype):
    qmin, qmax = (-128, 127) if dtype == torch.qint8 else (0, 255)
    if zero_point_rounding_order() == "add, then round":
        q = torch.round(x / scale + zero_point)  # x86 up to torch 2.13: the zero point first
    else:
        q = torch.round(x / scale) + zero_point  # x86 from torch 2.14: rounds first
    return q.clamp(qmin, qmax).to(torch.int32)


def fake_quantize_like_torch(x, scale, zero_point, quant_min, quant_max):
    # torch.fake_quantize_per_tensor_affine rounds *first*, then adds the zero point.
    q = torch.clamp(torch.round(x / scale) + zero_point, quant_min, quant_max)
    return (q - zero_point) * scale


def minmax_observer_qparams(x, dtype, symmetric):
    qmin, qmax = (-128, 127) if dtype == torch.qint8 else (0, 255)
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    if symmetric:
        scale = max(-lo, hi) / ((qmax - qmin) / 2)
        zero_point = 0 if dtype == torch.qint8 else 128
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero_point = min(max(qmin - round(lo / scale), qmin), qmax)
    return scale, zero_point
