"""Reference solutions for notebook 05: observers and calibration choices."""

import functools

import torch

from linquant_helpers import PercentileObserver, fake_quantize, mse, ptq, qparams_from_range


class PerChannelMinMax:
    def __init__(self, axis):
        self.axis = axis
        self.min_val = None
        self.max_val = None

    def update(self, x):
        rows = x.movedim(self.axis, 0).flatten(1)  # (channels, everything else)
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        if self.min_val is not None:  # keep the running extremes over all batches
            lo, hi = torch.minimum(lo, self.min_val), torch.maximum(hi, self.max_val)
        self.min_val, self.max_val = lo, hi

    def clip_range(self):
        return self.min_val, self.max_val


def best_clip_ratio(x, bits, ratios):
    a = x.abs().max()
    # Every candidate at once: scales of shape (R, 1) broadcast against x of shape (1, N).
    scale, zero_point = qparams_from_range(-ratios * a, ratios * a, bits, symmetric=True)
    stacked = x.expand(len(ratios), -1)
    fq = fake_quantize(stacked, scale, zero_point, bits, axis=0)
    errors = ((fq - x) ** 2).mean(dim=1)
    return float(ratios[errors.argmin()])


def choose_percentile(model, calib_batches, x_check, percentiles, act_bits):
    with torch.no_grad():
        reference = model(x_check)
        errors = []
        for p in percentiles:
            observer = functools.partial(PercentileObserver, percentile=p)
            quantized = ptq(model, calib_batches, observer=observer, act_bits=act_bits)
            errors.append(mse(quantized(x_check), reference))
    return percentiles[errors.index(min(errors))]
