"""Reference solutions for notebook 13: a Q4_K super-block's 6-bit scales and mins, and the
importance matrix."""

import torch


def unpack_scale_min(packed):
    b = packed.to(torch.int64)  # (n, 12) bytes
    low_s, low_m, mixed = b[:, 0:4], b[:, 4:8], b[:, 8:12]
    scales = torch.cat([low_s & 63, (mixed & 0xF) | ((low_s >> 6) << 4)], dim=1)
    mins = torch.cat([low_m & 63, (mixed >> 4) | ((low_m >> 6) << 4)], dim=1)
    return scales, mins


def importance_matrix(x):
    tokens = x.reshape(-1, x.shape[-1])  # every token of every sequence
    return (tokens * tokens).mean(dim=0)
