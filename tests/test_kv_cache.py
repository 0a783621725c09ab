"""Tests of linquant_helpers.kv_cache: keys and values per token or per channel, cache bytes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linquant_helpers.kv_cache import kv_cache_bytes, quantize_kv, quantized_kv


def test_per_token_matches_torch_per_channel_affine() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=gen)
    got = quantize_kv(x, 4, "token", head_dim=4)
    rows = x.reshape(-1, 4)  # one row per token and head
    lo, hi = rows.amin(dim=1).clamp(max=0), rows.amax(dim=1).clamp(min=0)
    scale = (hi - lo) / 15
    zero = (-8 - torch.round(lo / scale)).clamp(-8, 7).int()
    oracle = torch.fake_quantize_per_channel_affine(rows, scale, zero, 0, -8, 7)
    torch.testing.assert_close(got.reshape(-1, 4), oracle, rtol=0, atol=1e-6)


def test_per_channel_uses_one_range_per_sequence_and_channel() -> None:
    x = torch.zeros(2, 4, 3, dtype=torch.float64)
    x[0, :, 1] = torch.tensor([0.0, 1.0, 2.0, 3.0])  # 2 bits: 4 levels over [0, 3] are exact
    x[1, :, 1] = torch.tensor([0.0, 100.0, 0.0, 0.0])  # another sequence: its own range
    got = quantize_kv(x, 2, "channel")
    assert torch.equal(got[0, :, 1], x[0, :, 1])
    assert got.dtype == torch.float64 and got.shape == x.shape


def test_padding_does_not_widen_a_channel_and_comes_back_unchanged() -> None:
    x = torch.tensor([[[0.0], [1.0], [2.0], [3.0], [500.0]]])  # the last token is padding
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    got = quantize_kv(x, 2, "channel", mask=mask)
    assert got.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 500.0]
    assert quantize_kv(x, 2, "channel")[0, 1, 0] != 1.0  # without the mask, 500 sets the step


def test_error_shrinks_with_bits() -> None:
    x = torch.randn(3, 20, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for per in ("token", "channel"):
        errs = [(quantize_kv(x, b, per, head_dim=16) - x).norm() for b in (2, 4, 8)]
        assert errs[0] > errs[1] > errs[2]


def test_per_channel_wins_on_an_outlier_channel() -> None:
    x = torch.randn(1, 64, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x[..., 5] += 30.0  # a key channel that is large at every token
    tok = (quantize_kv(x, 4, "token") - x).norm()
    ch = (quantize_kv(x, 4, "channel") - x).norm()
    assert ch < tok / 3


def test_hooks_quantize_and_are_removed() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.key, self.value = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.key(x) + self.value(x)

    model = nn.Sequential(Attn())
    x = torch.randn(1, 3, 4)
    plain = model(x)
    with quantized_kv(model, keys=(2, "token"), key_suffix="key", value_suffix="value") as n:
        assert n == 1
        quantized = model(x)
    assert not torch.equal(quantized, plain)
    assert torch.equal(model(x), plain)
    with pytest.raises(ValueError, match="no module"), quantized_kv(model, values=(4, "token")):
        pass


def test_cache_bytes_llama3_8b() -> None:
    llama = dict(layers=32, kv_heads=8, head_dim=128)
    assert kv_cache_bytes(1, bits=16, **llama) == 131072  # 128 KiB per token
    assert kv_cache_bytes(131072, bits=16, **llama) == 16 * 2**30
    assert kv_cache_bytes(8192, bits=4, batch=2, **llama) == 2 * 8192 * 2 * 32 * 8 * 128 // 2


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: quantize_kv(torch.randn(2, 3), 4, "token"), ValueError, "x must be"),
        (lambda: quantize_kv(torch.randn(1, 2, 3), 4, "row"), ValueError, "per must be"),
        (lambda: quantize_kv(torch.randn(1, 2, 6), 4, "token", head_dim=4), ValueError, "head_dim"),
        (lambda: quantize_kv(torch.randn(1, 2, 3), 1, "token"), ValueError, "bits"),
        (lambda: quantize_kv(torch.ones(1, 2, 3).int(), 4, "token"), TypeError, "x must"),
        (
            lambda: quantize_kv(torch.full((1, 2, 3), float("nan")), 4, "token"),
            ValueError,
            "x must be finite",
        ),
        (
            lambda: quantize_kv(torch.randn(1, 2, 3), 4, "channel", mask=torch.ones(2, 2)),
            ValueError,
            "mask must be",
        ),
        (lambda: kv_cache_bytes(0, layers=1, kv_heads=1, head_dim=1, bits=8), ValueError, "tokens"),
        (lambda: kv_cache_bytes(1, layers=1, kv_heads=1, head_dim=1.5, bits=8), TypeError, "head"),
    ],
)
def test_bad_input_names_the_argument(call, error, words) -> None:
    with pytest.raises(error, match=words):
        call()
