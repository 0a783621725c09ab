"""Reference solutions for notebook 08: the size of a packed layer, and SmoothQuant's scales."""

import math


def packed_nbytes(out_features, in_features, bits, group_size):
    codes = math.ceil(out_features * in_features * bits / 8)  # 8 // bits codes per byte
    scales = out_features * in_features // group_size  # one float32 scale per group
    return codes + 4 * scales


def smoothquant_scales(act_absmax, weight, alpha):
    w_absmax = weight.abs().amax(dim=0)  # per input channel: a column of the (out, in) weight
    return act_absmax**alpha / w_absmax ** (1 - alpha)
