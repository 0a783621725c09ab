"""GPTQ against a float64 brute-force OBQ reference, and its errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linquant_helpers import choose_qparams, dequantize, fake_quantize, quantize
from linquant_helpers.gptq import (
    _column_qparams,
    _round_column,
    gptq_quantize,
    gptq_quantize_model,
    gptq_quantize_model_sequential,
    hessian,
    hessian_factor,
    layer_inputs,
)


def _inputs(seed: int, out: int, n_in: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out, n_in, generator=gen, dtype=torch.float64)
    # Correlated inputs with uneven channel sizes, as a real layer's are.
    mix = torch.randn(n_in, n_in, generator=gen, dtype=torch.float64) / n_in**0.5
    x = torch.randn(tokens, n_in, generator=gen, dtype=torch.float64) @ (torch.eye(n_in) + mix)
    x = x * torch.linspace(0.2, 3.0, n_in, dtype=torch.float64)
    return w, x


def brute_force_obq(w, h, bits, order, group_size=None, symmetric=True):
    """Greedy OBQ by least squares, no inverse updates and no Cholesky.

    Quantize the columns one at a time in ``order``. Before each one, put the
    columns not yet quantized (F) where the output error is smallest given the
    quantized ones (Q): ``W_F* = W_F + (W_Q - Q) H_QF H_FF^-1``, solved directly.
    Per-group qparams come from the group's optimal columns when its first column is
    next (without act-order), or from the original weight (with it).
    """
    w = w.double()
    out, n = w.shape
    narrow = symmetric
    per = {"group_size": group_size} if group_size else {"axis": 0}
    scale, zp = choose_qparams(w, bits, symmetric=symmetric, narrow=narrow, **per)
    lazy = group_size is not None and list(order) == list(range(n))
    codes = torch.zeros(out, n, dtype=torch.int64)
    w_hat = torch.zeros_like(w)
    done: list[int] = []
    for step, j in enumerate(order):
        free = list(order[step:])
        v = w[:, free].clone()
        if done:
            rhs = (w[:, done] - w_hat[:, done]) @ h[done][:, free]
            v += torch.linalg.solve(h[free][:, free], rhs.T).T  # H_FF is symmetric
        if lazy and j % group_size == 0:
            s, z = choose_qparams(
                v[:, :group_size], bits, symmetric=symmetric, narrow=narrow, axis=0
            )
            scale[:, j // group_size], zp[:, j // group_size] = s, z
        g = j // group_size if group_size else None
        s, z = (scale, zp) if g is None else (scale[:, g], zp[:, g])
        q = quantize(v[:, 0], s, z, bits, narrow=narrow, axis=0)
        codes[:, j] = q.long()
        w_hat[:, j] = dequantize(q, s, z, axis=0).double()
        done.append(j)
    return codes, w_hat


def _damped(h, damp):
    return h + damp * h.diagonal().mean() * torch.eye(len(h), dtype=h.dtype)


def test_hessian_is_2_xtx_over_n() -> None:
    x = torch.arange(12.0).reshape(2, 3, 2)  # 6 rows of 2 features
    rows = x.reshape(6, 2).double()
    expected = torch.tensor(
        [
            [2 * sum(r[0] ** 2 for r in rows) / 6, 2 * sum(r[0] * r[1] for r in rows) / 6],
            [2 * sum(r[0] * r[1] for r in rows) / 6, 2 * sum(r[1] ** 2 for r in rows) / 6],
        ]
    )
    assert torch.allclose(hessian(x), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("bits", "group_size", "act_order", "symmetric", "block_size"),
    [
        (4, None, False, True, 128),
        (3, None, False, True, 3),  # blocks that do not divide the columns
        (4, 4, False, True, 5),  # block rounded up to whole groups
        (3, 4, True, True, 128),
        (4, None, True, False, 2),
        (2, 8, False, False, 8),
    ],
)
def test_gptq_equals_brute_force_obq(bits, group_size, act_order, symmetric, block_size) -> None:
    w, x = _inputs(bits + 10 * bool(group_size) + 100 * act_order, out=6, n_in=16, tokens=64)
    h, damp = hessian(x), 0.01
    order = (
        torch.argsort(h.diagonal(), descending=True, stable=True).tolist()
        if act_order
        else list(range(16))
    )
    codes, w_ref = brute_force_obq(w, _damped(h, damp), bits, order, group_size, symmetric)
    got = gptq_quantize(
        w,
        h,
        bits,
        group_size=group_size,
        symmetric=symmetric,
        damp=damp,
        act_order=act_order,
        block_size=block_size,
    )
    assert torch.equal(got.codes.long(), codes)
    assert torch.allclose(got.weight.double(), w_ref, rtol=0, atol=1e-6)
    per = {"group_size": group_size} if group_size else {"axis": 0}
    assert torch.equal(got.weight, dequantize(got.codes, got.scale, got.zero_point, **per))


def test_first_column_is_plain_rounding_and_the_rest_moves_optimally() -> None:
    # One OBQ step by hand: the first column rounds as RTN; the others absorb its error.
    w, x = _inputs(3, out=4, n_in=5, tokens=40)
    h = _damped(hessian(x), 0.0)
    got = gptq_quantize(w, h, 4, damp=0.0)
    scale, _ = choose_qparams(w, 4, symmetric=True, narrow=True, axis=0)
    rtn = quantize(w, scale, 0, 4, narrow=True, axis=0)
    assert torch.equal(got.codes[:, 0], rtn[:, 0])


def _output_error(w, w_hat, x):
    return float(((x @ (w - w_hat.double()).T) ** 2).sum())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    bits=st.sampled_from([3, 4]),
    group_size=st.sampled_from([None, 8]),
    out=st.integers(32, 64),
)
def test_gptq_output_error_not_above_rtn_on_calibration_data(seed, bits, group_size, out) -> None:
    # Not a theorem row by row (GPTQ is greedy: see the next test), but over a layer's rows,
    # with enough tokens (8 per input) for a well-conditioned H, it is what GPTQ is made for.
    # Per channel both round on the same grid. Per group, GPTQ takes each group's qparams from
    # its *updated* columns, another grid than RTN's, and can lose by a little: over 500 seeds,
    # at most 1.028x RTN's error at 3 bits (3 losses; seed 426: 1.006x), 0.990x at 4 bits.
    w, x = _inputs(seed, out=out, n_in=16, tokens=128)
    got = gptq_quantize(w, hessian(x), bits, group_size=group_size, damp=0.01)
    per = {"group_size": group_size} if group_size else {"axis": 0}
    scale, _ = choose_qparams(w, bits, symmetric=True, narrow=True, **per)
    rtn = fake_quantize(w, scale, 0, bits, narrow=True, **per)
    bound = 1 + 1e-9 if group_size is None else 1.05
    assert _output_error(w, got.weight, x) <= _output_error(w, rtn, x) * bound


def test_gptq_per_group_can_lose_a_little_to_rtn() -> None:
    # The counterexample hypothesis found to the property above when it asked for <= per group.
    w, x = _inputs(426, out=32, n_in=16, tokens=128)
    got = gptq_quantize(w, hessian(x), 3, group_size=8, damp=0.01)
    scale, _ = choose_qparams(w, 3, symmetric=True, narrow=True, group_size=8)
    rtn = fake_quantize(w, scale, 0, 3, narrow=True, group_size=8)
    ratio = _output_error(w, got.weight, x) / _output_error(w, rtn, x)
    assert 1.0 < ratio < 1.05


def test_gptq_can_lose_to_rtn_on_a_single_row() -> None:
    # Found by the property above when it allowed one row: greedy rounding, one column at a
    # time, is not optimal, and on one row it can end up worse than plain rounding.
    w, x = _inputs(1, out=1, n_in=16, tokens=128)
    got = gptq_quantize(w, hessian(x), 4, damp=0.01)
    scale, _ = choose_qparams(w, 4, symmetric=True, narrow=True, axis=0)
    rtn = fake_quantize(w, scale, 0, 4, narrow=True, axis=0)
    assert _output_error(w, got.weight, x) > _output_error(w, rtn, x)


def test_dead_inputs_get_zero_weights_and_singular_h_needs_damping() -> None:
    w, x = _inputs(5, out=3, n_in=8, tokens=32)
    x[:, 2] = 0.0
    got = gptq_quantize(w, hessian(x), 4)
    assert torch.all(got.weight[:, 2] == 0)
    few = x[:3]  # 3 tokens, 8 inputs: H has rank 3
    with pytest.raises(ValueError, match="raise damp"):
        gptq_quantize(w, hessian(few), 4, damp=0.0)
    assert torch.isfinite(gptq_quantize(w, hessian(few), 4, damp=0.01).weight).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"group_size": 3}, "group_size"),
        ({"damp": -0.1}, "damp"),
        ({"block_size": 0}, "block_size"),
        ({"bits": 1}, "bits"),
    ],
)
def test_gptq_errors_name_the_argument(kwargs, match) -> None:
    w, x = _inputs(0, out=2, n_in=8, tokens=16)
    with pytest.raises(ValueError, match=match):
        gptq_quantize(w, hessian(x), **kwargs)


def test_gptq_shape_errors() -> None:
    w, x = _inputs(0, out=2, n_in=8, tokens=16)
    with pytest.raises(ValueError, match="h must be the"):
        gptq_quantize(w, hessian(x[:, :4]))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        gptq_quantize(w[0], hessian(x))
    with pytest.raises(TypeError):
        gptq_quantize(w.long(), hessian(x))
    with pytest.raises(ValueError, match="at least one row"):
        hessian(torch.empty(0, 4))


@pytest.mark.parametrize(("bits", "symmetric"), [(4, True), (3, False), (8, True), (2, False)])
def test_round_column_is_the_cores_quantize_and_dequantize(bits, symmetric) -> None:
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    scale, zp = choose_qparams(w, bits, symmetric=symmetric, narrow=symmetric, axis=0)
    steps = torch.randint(-8, 8, (64,), generator=gen).double()
    for col in (w[:, 0], w[:, 0] * 3, (steps + 0.5) * scale.double()):  # ties, out of range
        q_core = quantize(col, scale, zp, bits, narrow=symmetric, axis=0)
        qmin, qmax = -(2 ** (bits - 1)) + symmetric, 2 ** (bits - 1) - 1
        q, w_hat = _round_column(col, _column_qparams(scale, zp), qmin, qmax)
        assert torch.equal(q, q_core)
        assert torch.equal(w_hat, dequantize(q_core, scale, zp, axis=0).double())


@pytest.mark.parametrize("bits", [9, 12, 16])
def test_codes_above_8_bits_do_not_wrap(bits) -> None:
    """Above 8 bits the codes need int16: stored as int8 they wrapped (error 70 at 12 bits)."""
    w, x = _inputs(3, out=4, n_in=16, tokens=64)
    at_8 = _output_error(w, gptq_quantize(w, hessian(x), 8).weight, x)
    got = gptq_quantize(w, hessian(x), bits)
    assert got.codes.dtype == torch.int16
    scale = got.scale.double().unsqueeze(1)
    assert got.codes.abs().max() == 2 ** (bits - 1) - 1  # the absmax weight gets the top code
    assert torch.equal(got.weight, dequantize(got.codes, got.scale, got.zero_point, axis=0))
    assert (got.weight.double() - w).abs().max() < scale.max()  # within a few steps, no wrap
    assert _output_error(w, got.weight, x) < at_8


def test_model_codes_above_8_bits_do_not_wrap() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8)).double()
    _, x = _inputs(4, out=1, n_in=16, tokens=64)
    out = gptq_quantize_model(model, {"0": x}, 12)
    assert (out[0].weight - model[0].weight).abs().max() < 1e-3


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_are_named_not_blamed_on_damping(bad) -> None:
    w, x = _inputs(0, out=2, n_in=8, tokens=16)
    x_bad = x.clone()
    x_bad[3, 2] = bad
    with pytest.raises(ValueError, match="x must be finite"):
        hessian(x_bad)
    h_bad = hessian(x).clone()
    h_bad[1, 1] = bad
    with pytest.raises(ValueError, match="h must be finite"):
        gptq_quantize(w, h_bad)
    w_bad = w.clone()
    w_bad[0, 0] = bad
    with pytest.raises(ValueError, match="weight must be finite"):
        gptq_quantize(w_bad, hessian(x))


class _Twice(torch.nn.Module):
    """A layer applied twice (shared), and one never called."""

    def __init__(self) -> None:
        super().__init__()
        self.shared, self.unused = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def forward(self, features):
        return self.shared(self.shared(features["x"]))


def test_layer_inputs_keeps_every_call_and_names_a_layer_never_called() -> None:
    torch.manual_seed(0)
    model = _Twice().double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    got = layer_inputs(model, {"x": x}, ["shared"])["shared"]
    with torch.no_grad():
        expected = torch.cat([x.reshape(-1, 4), model.shared(x).reshape(-1, 4)])
    assert torch.equal(got, expected)  # both calls, in order: 12 rows, not the last 6
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert layer_inputs(model, {"x": x}, ["shared"], mask)["shared"].shape == (6, 4)
    with pytest.raises(ValueError, match="never called \\['unused'\\]"):
        layer_inputs(model, {"x": x}, ["shared", "unused"])


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"group_size": 4, "block_size": 8},
        {"group_size": 4, "act_order": True, "damp": 0.1},
        {"act_order": True, "symmetric": False},
        {"scales": "mse", "group_size": 8},
        {"scales": "mse", "act_order": True},
    ],
)
def test_layers_of_one_shape_together_equal_one_call_each(settings) -> None:
    pairs = [_inputs(seed, out=5, n_in=16, tokens=40) for seed in (11, 12, 13)]
    w = torch.stack([p[0] for p in pairs])
    h = torch.stack([hessian(p[1]) for p in pairs])
    together = gptq_quantize(w, h, 3, **settings)
    for k in range(3):
        alone = gptq_quantize(w[k], h[k], 3, **settings)
        for got, expected in zip(together, alone, strict=True):
            assert torch.equal(got[k], expected)


def test_mse_scales_are_the_weights_and_gptq_beats_rtn_on_them() -> None:
    from linquant_helpers.weights import mse_weight_scale

    w, x = _inputs(21, out=6, n_in=32, tokens=96)
    got = gptq_quantize(w, hessian(x), 3, scales="mse")
    scale = mse_weight_scale(w, 3, axis=0)
    assert torch.equal(got.scale, scale) and torch.all(got.zero_point == 0)
    assert torch.all(scale < choose_qparams(w, 3, symmetric=True, narrow=True, axis=0)[0])
    rtn = fake_quantize(w, scale, 0, 3, narrow=True, axis=0)
    assert _output_error(w, got.weight, x) < _output_error(w, rtn, x)
    with pytest.raises(ValueError, match="scales must be one of"):
        gptq_quantize(w, hessian(x), 3, scales="percentile")
    with pytest.raises(ValueError, match="symmetric=True"):
        gptq_quantize(w, hessian(x), 3, scales="mse", symmetric=False)


def _two_layers() -> torch.nn.Module:
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = (torch.nn.Linear(8, 8) for _ in range(3))

        def forward(self, features):
            return self.c(torch.tanh(self.b(torch.tanh(self.a(features["x"])))))

    return Net().double()


def test_model_quantizes_each_layer_as_its_own_call() -> None:
    model = _two_layers()
    x = {
        "x": torch.randn(3, 20, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    }
    inputs = layer_inputs(model, x, ["a", "b", "c"])
    got = gptq_quantize_model(model, inputs, 3, act_order=True)
    for name in "abc":
        alone = gptq_quantize(getattr(model, name).weight, hessian(inputs[name]), 3, act_order=True)
        assert torch.equal(getattr(got, name).weight, alone.weight.double())


def test_hessian_factor_is_the_cholesky_factor_of_the_ordered_damped_inverse() -> None:
    _, x = _inputs(31, out=4, n_in=12, tokens=8)  # 8 tokens, 12 inputs: H is singular
    x[:, 5] = 0.0  # a dead input
    h = hessian(x)
    f = hessian_factor(h, damp=0.1, act_order=True)
    fixed = h.clone()
    fixed[5, 5] = 1.0
    assert f.dead.tolist() == [j == 5 for j in range(12)]
    assert torch.equal(f.order, torch.argsort(fixed.diagonal(), descending=True, stable=True))
    p = fixed[f.order][:, f.order]
    expected = torch.linalg.inv(_damped(p, 0.1))
    assert torch.allclose(f.u.T @ f.u, expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(f.u, f.u.triu()) and bool((f.u.diagonal() > 0).all())
    plain = hessian_factor(h, damp=0.1)
    assert torch.equal(plain.order, torch.arange(12))
    with pytest.raises(ValueError, match="damp"):
        hessian_factor(h, damp=-1.0)
    with pytest.raises(ValueError, match="positive definite"):
        hessian_factor(h, damp=0.0)
    with pytest.raises(ValueError, match="h must be"):
        hessian_factor(h[:, :5])


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"group_size": 4},
        {"group_size": 4, "act_order": True, "damp": 0.1},
        {"act_order": True, "symmetric": False},
        {"scales": "mse", "act_order": True},
    ],
)
def test_a_factor_made_once_gives_the_same_codes(settings) -> None:
    pairs = [_inputs(seed, out=5, n_in=16, tokens=40) for seed in (41, 42)]
    w, h = torch.stack([p[0] for p in pairs]), torch.stack([hessian(p[1]) for p in pairs])
    keys = {k: settings[k] for k in ("damp", "act_order") if k in settings}
    factor = hessian_factor(h, **keys)
    for bits in (3, 4):
        with_factor = gptq_quantize(w, h, bits, factor=factor, **settings)
        for got, expected in zip(with_factor, gptq_quantize(w, h, bits, **settings), strict=True):
            assert torch.equal(got, expected)
    single = hessian_factor(h[0], **keys)
    got = gptq_quantize(w[0], h[0], 3, factor=single, **settings)
    assert torch.equal(got.codes, gptq_quantize(w[0], h[0], 3, **settings).codes)


def test_a_factor_of_other_settings_or_another_hessian_is_refused() -> None:
    w, x = _inputs(43, out=4, n_in=8, tokens=30)
    h = hessian(x)
    factor = hessian_factor(h, damp=0.1, act_order=True)
    with pytest.raises(ValueError, match="damp=0.1, act_order=True"):
        gptq_quantize(w, h, 3, factor=factor)  # the call's defaults: damp 0.01, no act-order
    with pytest.raises(ValueError, match="another Hessian"):
        gptq_quantize(w, hessian(x[:20]), 3, damp=0.1, act_order=True, factor=factor)
    with pytest.raises(TypeError, match="HessianFactor"):
        gptq_quantize(w, h, 3, factor=tuple(factor))
    same = gptq_quantize(w, h.clone(), 3, damp=0.1, act_order=True, factor=factor)  # equal h
    assert torch.equal(same.codes, gptq_quantize(w, h, 3, damp=0.1, act_order=True).codes)


def test_model_factors_are_made_once_and_remade_for_other_inputs() -> None:
    model = _two_layers()
    gen = torch.Generator().manual_seed(2)
    x = {"x": torch.randn(3, 20, 8, generator=gen, dtype=torch.float64)}
    inputs = layer_inputs(model, x, ["a", "b", "c"])
    factors: dict = {}
    first = gptq_quantize_model(model, inputs, 3, factors=factors, damp=0.1, act_order=True)
    assert len(factors) == 1  # three layers of one shape: one group
    kept = next(iter(factors.values()))[1]
    second = gptq_quantize_model(model, inputs, 4, factors=factors, damp=0.1, act_order=True)
    assert next(iter(factors.values()))[1] is kept  # reused, not made again
    for bits, got in ((3, first), (4, second)):
        expected = gptq_quantize_model(model, inputs, bits, damp=0.1, act_order=True)
        assert all(torch.equal(getattr(got, n).weight, getattr(expected, n).weight) for n in "abc")
    gptq_quantize_model(model, inputs, 3, factors=factors)  # other settings: a second factor
    assert len(factors) == 2
    fewer = {name: rows[:30].clone() for name, rows in inputs.items()}  # other inputs, same key
    got = gptq_quantize_model(model, fewer, 3, factors=factors, damp=0.1, act_order=True)
    remade = next(iter(factors.values()))[1]
    assert remade is not kept  # made again from the new Hessians
    expected = gptq_quantize_model(model, fewer, 3, damp=0.1, act_order=True)
    assert all(torch.equal(getattr(got, n).weight, getattr(expected, n).weight) for n in "abc")
    fewer["b"].mul_(2.0)  # the same tensor, changed in place: its factor is stale
    got = gptq_quantize_model(model, fewer, 3, factors=factors, damp=0.1, act_order=True)
    assert next(iter(factors.values()))[1] is not remade
    expected = gptq_quantize_model(model, fewer, 3, damp=0.1, act_order=True)
    assert all(torch.equal(getattr(got, n).weight, getattr(expected, n).weight) for n in "abc")


def test_sequential_calibrates_each_stage_on_the_quantized_stages_before_it() -> None:
    model = _two_layers()
    x = {
        "x": torch.randn(3, 20, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    }
    got = gptq_quantize_model_sequential(model, x, [["a"], ["b", "c"]], 3)
    first = gptq_quantize_model(model, layer_inputs(model, x, ["a"]), 3)  # stage 1: float inputs
    assert torch.equal(got.a.weight, first.a.weight)
    inputs = layer_inputs(first, x, ["b", "c"])  # stage 2: a quantized, b not yet
    for name in "bc":
        alone = gptq_quantize(getattr(model, name).weight, hessian(inputs[name]), 3)
        assert torch.equal(getattr(got, name).weight, alone.weight.double())
    float_inputs = gptq_quantize_model(model, layer_inputs(model, x, ["a", "b", "c"]), 3)
    assert not torch.equal(got.b.weight, float_inputs.b.weight)  # the inputs did change
    with pytest.raises(ValueError, match="each layer once"):
        gptq_quantize_model_sequential(model, x, [["a"], ["a"]], 3)
