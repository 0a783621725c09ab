"""Reference solutions for notebook 09: one OBQ update step, and decoding FP4 E2M1."""

import torch


def obq_update(w, q, h_inv):
    err = (w[:, 0] - q) / h_inv[0, 0]  # column 0's error, weighted by how free it was
    return w[:, 1:] - torch.outer(err, h_inv[0, 1:])  # spread over the other columns


def decode_e2m1(codes):
    sign = 1 - 2 * (codes >> 3)  # bit 3
    e, m = (codes >> 1) & 0b11, codes & 1  # bits 2-1, bit 0
    normal = 2.0 ** (e - 1) * (1 + m / 2)
    return sign * torch.where(e > 0, normal, m / 2)  # e = 0: subnormal, m / 2
