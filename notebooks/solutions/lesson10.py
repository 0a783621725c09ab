"""Reference solutions for notebook 10: llama.cpp's Q8_0 rule, and torchao's block_size."""

import torch


def q8_0_quantize(x):
    blocks = x.reshape(x.shape[0], -1, 32)  # one row of 32 per GGUF block
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127  # float32, as llama.cpp computes it
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)  # an all-zero block: codes 0
    y = blocks * inv
    a = y.abs()
    q = torch.sign(y) * (a.floor() + (2 * (a - a.floor())).floor())  # roundf: half away from 0
    return d.squeeze(-1).half(), q.to(torch.int8).reshape(x.shape)


def block_size(shape, axis, group_size):
    if group_size is not None:
        return (1,) * (len(shape) - 1) + (group_size,)
    if axis is not None:
        axis %= len(shape)  # a negative axis counts from the end
        return tuple(1 if d == axis else n for d, n in enumerate(shape))
    return tuple(shape)
