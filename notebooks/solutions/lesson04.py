"""Reference solutions for notebook 04: folding, per-channel scales, per-group quantization."""

import torch


def fold_bn_into_conv(weight, bias, gamma, beta, mean, var, eps):
    # One factor per output channel, broadcast over (out, in, kh, kw).
    k = gamma / torch.sqrt(var + eps)
    return weight * k.reshape(-1, 1, 1, 1), (bias - mean) * k + beta


def per_channel_qparams(w, bits):
    rows = w.flatten(1)  # (out, everything else)
    lo = rows.amin(dim=1).clamp(max=0)  # the range must include 0
    hi = rows.amax(dim=1).clamp(min=0)
    scale = (hi - lo) / (2**bits - 1)
    zero_point = -torch.round(lo / scale)
    return scale, zero_point


def group_fake_quantize(w, bits, group_size):
    qmax = 2 ** (bits - 1) - 1
    groups = w.reshape(w.shape[0], -1, group_size)  # (rows, n_groups, group_size)
    scale = groups.abs().amax(dim=-1, keepdim=True) / qmax  # one scale per group
    q = torch.clamp(torch.round(groups / scale), -qmax, qmax)
    return (q * scale).reshape(w.shape)
