"""Reference solutions for notebook 11: an E4M3 byte, an MX block's scale, NVFP4's two scales."""

import torch


def decode_e4m3(codes):
    sign = 1.0 - 2.0 * (codes >> 7).double()
    e = ((codes >> 3) & 0b1111).double()  # 4 exponent bits, bias 7
    m = (codes & 0b111).double()  # 3 mantissa bits
    normal = 2.0 ** (e - 7) * (1 + m / 8)
    subnormal = 2.0**-6 * (m / 8)  # e = 0: the smallest normal's exponent, no implicit 1
    value = sign * torch.where(e > 0, normal, subnormal)
    return torch.where((e == 15) & (m == 7), torch.nan, value)  # no infinities; 0x7F, 0xFF: NaN


def mx_scale_exponent(blocks, emax):
    amax = blocks.abs().amax(dim=-1)
    _, exponent = torch.frexp(amax)  # amax = f * 2^exponent, f in [0.5, 1): exact
    floor_log2 = torch.where(amax > 0, exponent - 1, -127)
    return (floor_log2 - emax).clamp(-127, 127)


def nvfp4_scales(x):
    t = x.abs().amax() / (448 * 6)  # float32: the largest block scale lands on 448
    block_max = x.reshape(x.shape[0], -1, 16).abs().amax(dim=-1)
    s = (block_max / 6 / t).clamp(2.0**-6, 448).to(torch.float8_e4m3fn)  # stored in 8 bits
    return t, s
