"""The model and data that lessons 04, 05 and 07 measure: a small CNN on scikit-learn's digits.

* :func:`load_digits_data` - the 1797 bundled 8x8 digit images (no download),
  split once, reproducibly, into a training and a test set.
* :class:`DigitsCNN` - a MobileNet in miniature: depthwise-separable conv blocks
  with BatchNorm and ReLU, global average pooling, then two ``nn.Linear`` layers.
* :func:`train` / :func:`accuracy` / :func:`evaluate` - a seeded training loop
  with a tqdm progress bar, and the test accuracy.
* :func:`fold_batchnorm` - fold each BatchNorm into the convolution before it,
  as every deployment toolchain does before quantizing.
* :func:`shipped_digits_cnn` - the trained weights that ship with the package.
* :func:`digits_cnn` / :func:`trained_digits_model` - the model of the lessons in
  one call, with its data: the shipped weights (or a fresh training), in eval
  mode; the second with its BatchNorms folded.

Why ship weights: float sums in training round differently on different CPU
instruction sets (AVX-512, AVX2, ARM), so the same seeded training gives a
slightly different model on every kind of machine, and every number measured
on it moves. Loading one file gives every learner the same model. Regenerate
it with ``python -m linquant_helpers.models --retrain``.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .surgery import single_threaded

EPOCHS = 20
"""Training epochs of :func:`trained_digits_model`: about 98 % test accuracy in a few seconds."""

SHIPPED_SEED = 0
"""The seed (data split and training) of the shipped weights."""

WEIGHTS_FILE = "digits_cnn.pt"
"""The shipped ``state_dict`` of a trained, unfolded :class:`DigitsCNN` (in ``data/``)."""

WEIGHTS_INFO_FILE = "digits_cnn.json"
"""How the shipped weights were made: seed, epochs, test accuracy, torch version, CPU."""


@dataclass(frozen=True)
class DigitsData:
    """The digits split into train and test tensors.

    ``x_*`` are float32 images of shape ``(N, 1, 8, 8)`` scaled to ``[0, 1]``;
    ``y_*`` are int64 labels in ``0..9`` of shape ``(N,)``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def batches(
        self, batch_size: int = 64, *, shuffle: bool = True, seed: int = 0
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The training set as a list of ``(x, y)`` mini-batches (the last may be smaller).

        ``shuffle`` uses a generator seeded with ``seed``, so the same call
        always gives the same batches. Raises ``ValueError`` for ``batch_size < 1``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        n = len(self.y_train)
        order = torch.arange(n)
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return [(self.x_train[idx], self.y_train[idx]) for idx in torch.split(order, batch_size)]

    def calibration_batches(
        self, n_batches: int, batch_size: int = 32, *, seed: int = 0
    ) -> list[torch.Tensor]:
        """``n_batches`` batches of training images (no labels): calibration data.

        Calibration needs representative inputs, never test data. Raises
        ``ValueError`` if ``n_batches`` is not positive or the training set is too small.
        """
        available = len(self.y_train) // batch_size
        if not 1 <= n_batches <= available:
            raise ValueError(
                f"n_batches must be in [1, {available}] with batch_size={batch_size}, "
                f"got {n_batches}"
            )
        return [x for x, _ in self.batches(batch_size, seed=seed)[:n_batches]]


def load_digits_data(seed: int = 0, test_fraction: float = 0.2) -> DigitsData:
    """Load scikit-learn's bundled digits and split them, stratified, with ``seed``.

    Pixel values ``0..16`` are divided by 16. With the default 20 % test
    fraction: 1437 training and 360 test images. Raises ``ValueError`` for a
    ``test_fraction`` outside ``(0, 1)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    i_train, i_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_fraction, random_state=seed, stratify=y
    )
    i_train, i_test = torch.as_tensor(i_train), torch.as_tensor(i_test)
    return DigitsData(x[i_train], y[i_train], x[i_test], y[i_test])


def conv_bn_relu(c_in: int, c_out: int, *, kernel: int, stride: int = 1, groups: int = 1):
    """``Conv2d -> BatchNorm2d -> ReLU`` as one ``nn.Sequential`` (the conv has no bias:
    BatchNorm's shift replaces it)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


def separable_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """A depthwise-separable block (MobileNet): a 3x3 depthwise conv (one filter per
    channel, ``groups=c_in``), then a 1x1 pointwise conv that mixes channels."""
    return nn.Sequential(
        conv_bn_relu(c_in, c_in, kernel=3, stride=stride, groups=c_in),
        conv_bn_relu(c_in, c_out, kernel=1),
    )


class DigitsCNN(nn.Module):
    """A MobileNet-like CNN for ``(N, 1, 8, 8)`` digits; returns ``(N, 10)`` logits.

    ``features``: a 3x3 stem conv to 16 channels, then two depthwise-separable
    blocks (16 -> 32 channels at 8x8, 32 -> 64 channels at 4x4), every conv
    followed by BatchNorm and ReLU. ``classifier``: global average pooling,
    ``Linear(64, 64)`` + ReLU, ``Linear(64, 10)``. About 8 k parameters.
    """

    def __init__(self, width: int = 16, hidden: int = 64, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(1, width, kernel=3),
            separable_block(width, 2 * width),
            separable_block(2 * width, 4 * width, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@single_threaded()
def train(
    model: nn.Module,
    data: DigitsData,
    *,
    epochs: int = EPOCHS,
    lr: float = 1e-2,
    weight_decay: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place with AdamW and cross-entropy; return the mean loss per epoch.

    Seeded: the batch order of epoch ``e`` comes from ``seed + e``, and
    ``torch.manual_seed(seed)`` fixes everything else. The learning rate
    decays along a cosine to 0; ``weight_decay`` is AdamW's decoupled decay
    (0.01, PyTorch's default). Shows a tqdm bar, one step per epoch
    (``progress=False`` hides it). Runs on one thread
    (:func:`~linquant_helpers.surgery.single_threaded`): the model is so small that
    threads cost more than they save, and the trained weights would depend on the
    number of cores. Leaves the model in eval mode.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}")
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    losses = []
    # mininterval=inf: the bar is drawn only when it starts and when it ends,
    # so its printed text does not depend on how fast this machine is.
    bar = tqdm(
        range(epochs),
        desc="training",
        disable=not progress,
        mininterval=float("inf"),
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix}",  # no times or rates
    )
    model.train()
    for epoch in bar:
        total = 0.0
        batches = data.batches(batch_size, seed=seed + epoch)
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        schedule.step()
        losses.append(total / len(data.y_train))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    model.eval()
    return losses


@torch.no_grad()
@single_threaded()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` whose predicted class (argmax of the logits) equals ``y``.

    Runs in eval mode (BatchNorm uses its running statistics), on one thread
    (:func:`~linquant_helpers.surgery.single_threaded`), and restores the model's
    previous mode afterwards.
    """
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"x and y must be non-empty and equally long, got {len(x)} and {len(y)}")
    was_training = model.training
    model.eval()
    correct = (model(x).argmax(dim=1) == y).sum().item()
    model.train(was_training)
    return correct / len(y)


def evaluate(model: nn.Module, data: DigitsData) -> float:
    """Test-set accuracy of ``model`` on ``data``: ``accuracy(model, x_test, y_test)``."""
    return accuracy(model, data.x_test, data.y_test)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv that computes ``bn(conv(x))`` in eval mode, for every ``x``.

    BatchNorm in eval mode is a per-channel affine map
    ``y = gamma * (z - mean) / sqrt(var + eps) + beta``. With
    ``k = gamma / sqrt(var + eps)`` (one factor per output channel):

    * ``W' = W * k``  (output channel ``c`` of the weight scaled by ``k[c]``)
    * ``b' = (b - mean) * k + beta``

    This is why folding spreads channel ranges: each channel of ``W'`` is
    multiplied by its own ``k[c]``, and ``k`` varies a lot from channel to channel.
    """
    k = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    folded = copy.deepcopy(conv)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded.weight = nn.Parameter(conv.weight.detach() * k.reshape(-1, 1, 1, 1))
    folded.bias = nn.Parameter((bias - bn.running_mean) * k + bn.bias.detach())
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode, every ``Conv2d`` directly followed by a
    ``BatchNorm2d`` (inside an ``nn.Sequential``) folded into one conv (see
    :func:`fold_conv_bn`); the BatchNorm becomes ``nn.Identity``. The original is
    untouched. In eval mode the copy computes the same outputs (up to float rounding).
    """
    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq[i], seq[i + 1] = fold_conv_bn(conv, bn), nn.Identity()
    return folded


def _data_dir() -> Path:
    return Path(str(resources.files("linquant_helpers") / "data"))


def shipped_weights_info() -> dict:
    """How the shipped weights were made (``digits_cnn.json``): ``seed``, ``epochs``,
    ``test_accuracy``, ``torch`` and ``cpu_capability`` of the machine that trained them."""
    return json.loads((_data_dir() / WEIGHTS_INFO_FILE).read_text())


def shipped_digits_cnn() -> DigitsCNN:
    """The trained :class:`DigitsCNN` that ships with the package, unfolded, in eval mode.

    Trained once by ``python -m linquant_helpers.models --retrain`` (seed
    :data:`SHIPPED_SEED`, :data:`EPOCHS` epochs) and loaded with
    ``torch.load(..., weights_only=True)``, which reads tensors only and never
    runs code from the file. The same on every machine, unlike a fresh training.
    """
    state = torch.load(_data_dir() / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model = DigitsCNN()
    model.load_state_dict(state)
    return model.eval()


def digits_cnn(
    seed: int = SHIPPED_SEED,
    *,
    retrain: bool = False,
    epochs: int = EPOCHS,
    progress: bool = True,
) -> tuple[DigitsCNN, DigitsData]:
    """The trained digits CNN of lessons 04, 05 and 07 (BatchNorms not folded) and its data.

    With the defaults (``seed=0``, ``epochs=20``) it loads the shipped weights
    (:func:`shipped_digits_cnn`): the same model on every machine. Any other
    ``seed`` or ``epochs``, or ``retrain=True``, trains a fresh
    :class:`DigitsCNN` instead (a few seconds; ``progress`` shows the bar),
    whose weights depend on this machine's CPU in their last bits. Returns
    ``(model, data)``: the model in eval mode and the :class:`DigitsData` split
    with ``seed`` that it was trained on.
    """
    data = load_digits_data(seed)
    if retrain or seed != SHIPPED_SEED or epochs != EPOCHS:
        torch.manual_seed(seed)
        model = DigitsCNN()
        train(model, data, epochs=epochs, seed=seed, progress=progress)
    else:
        model = shipped_digits_cnn()
    return model, data


def trained_digits_model(
    seed: int = SHIPPED_SEED,
    *,
    retrain: bool = False,
    epochs: int = EPOCHS,
    progress: bool = True,
) -> tuple[nn.Module, DigitsData]:
    """:func:`digits_cnn` with its BatchNorms folded (:func:`fold_batchnorm`): ready to quantize.

    Returns ``(model, data)``; the shipped weights unless ``retrain``, another
    ``seed`` or other ``epochs`` ask for a fresh training (see :func:`digits_cnn`).
    """
    model, data = digits_cnn(seed, retrain=retrain, epochs=epochs, progress=progress)
    return fold_batchnorm(model), data


def retrain_shipped_weights(folder: Path | None = None) -> dict:
    """Train the shipped model again and write ``digits_cnn.pt`` and ``digits_cnn.json``.

    Maintainers only: run it when :class:`DigitsCNN`, :func:`train` or the data
    change, then re-execute the notebooks. Returns the written info dict.
    """
    folder = _data_dir() if folder is None else Path(folder)
    data = load_digits_data(SHIPPED_SEED)
    torch.manual_seed(SHIPPED_SEED)
    model = DigitsCNN()
    train(model, data, epochs=EPOCHS, seed=SHIPPED_SEED, progress=False)
    info = {
        "seed": SHIPPED_SEED,
        "epochs": EPOCHS,
        "test_accuracy": evaluate(model, data),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    (folder / WEIGHTS_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m linquant_helpers.models [--retrain]``: show or regenerate the shipped weights."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--retrain", action="store_true", help="train again and overwrite them")
    args = parser.parse_args(argv)
    info = retrain_shipped_weights() if args.retrain else shipped_weights_info()
    model, data = trained_digits_model()
    print(json.dumps(info, indent=2))
    print(f"shipped weights: test accuracy {evaluate(model, data):.2%} here")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
