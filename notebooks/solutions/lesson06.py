"""Reference solutions for notebook 06: integer inference by hand."""

import math

import torch


def fixed_point_multiplier(m):
    mantissa, exponent = math.frexp(m)  # m = mantissa * 2**exponent, mantissa in [0.5, 1)
    m0, n = round(mantissa * 2**31), -exponent
    if m0 == 2**31:  # M0 rounded up to 1.0, which int32 cannot hold: 0.5 * 2**1 instead
        m0, n = 2**30, n - 1
    return m0, n


def int32_bias(bias, input_scale, weight_scale):
    # float64, so that b / (s_x * s_w) is rounded from the exact quotient
    return torch.round(bias.double() / (input_scale * weight_scale.double())).to(torch.int32)
