"""Reference solutions for notebook 01: the formulas, written with plain torch ops."""

import torch


def linear_quantize(x, scale, zero_point, qmin, qmax):
    # Add the zero point before rounding; clamp before any cast to a narrow dtype.
    return torch.round(x / scale + zero_point).clamp(qmin, qmax).to(torch.int32)


def linear_dequantize(q, scale, zero_point):
    # Convert first: in uint8, q - zero_point would wrap around.
    return scale * (q.float() - zero_point)


def round_trip_error_bound(x, scale, zero_point, qmin, qmax):
    lo, hi = scale * (qmin - zero_point), scale * (qmax - zero_point)
    beyond = torch.clamp(lo - x, min=0) + torch.clamp(x - hi, min=0)
    return torch.where(beyond > 0, beyond, torch.full_like(x, scale / 2))
