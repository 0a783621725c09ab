"""Reference solutions for notebook 09: an OBQ step, GPTQ's column loop, decoding FP4 E2M1."""

import torch


def obq_update(w, q, h_inv):
    err = (w[:, 0] - q) / h_inv[0, 0]  # column 0's error, weighted by how free it was
    return w[:, 1:] - torch.outer(err, h_inv[0, 1:])  # spread over the other columns


def gptq_columns(w, u, rtn):
    w, w_hat = w.clone(), torch.empty_like(w)  # w: the columns as they move
    for j in range(w.shape[1]):
        w_hat[:, j] = rtn(w[:, j])  # round the column as the earlier errors left it
        err = (w[:, j] - w_hat[:, j]) / u[j, j]
        w[:, j + 1 :] -= torch.outer(err, u[j, j + 1 :])  # the later columns absorb it
    return w_hat


def decode_e2m1(codes):
    sign = 1 - 2 * (codes >> 3)  # bit 3
    e, m = (codes >> 1) & 0b11, codes & 1  # bits 2-1, bit 0
    normal = 2.0 ** (e - 1) * (1 + m / 2)
    return sign * torch.where(e > 0, normal, m / 2)  # e = 0: subnormal, m / 2
