"""Reference solutions for notebook 02: qparams from a range, and picking a scheme."""

from linquant_helpers import choose_qparams, fake_quantize, sqnr_db


def asymmetric_qparams(x_min, x_max, bits):
    qmin, qmax = 0, 2**bits - 1
    x_min, x_max = min(x_min, 0.0), max(x_max, 0.0)  # 0.0 must be representable
    scale = (x_max - x_min) / (qmax - qmin)
    zero_point = min(max(qmin - round(x_min / scale), qmin), qmax)
    return scale, zero_point


def symmetric_scale(max_abs, bits, narrow):
    qmin, qmax = -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return max_abs / ((qmax - qmin) / 2)


def pick_scheme(x, bits):
    def sqnr(symmetric):
        signed = symmetric  # symmetric on signed codes, asymmetric on unsigned ones
        s, z = choose_qparams(x, bits, symmetric=symmetric, signed=signed)
        return sqnr_db(x, fake_quantize(x, s, z, bits, signed=signed))

    return "asymmetric" if sqnr(False) - sqnr(True) > 1.0 else "symmetric"
