"""Tests of linquant_helpers.models: data, model, training, BatchNorm folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from linquant_helpers.models import (
    EPOCHS,
    SHIPPED_SEED,
    DigitsCNN,
    accuracy,
    digits_cnn,
    evaluate,
    fold_batchnorm,
    fold_conv_bn,
    load_digits_data,
    shipped_digits_cnn,
    train,
    trained_digits_model,
)


@pytest.fixture(scope="module")
def data():
    return load_digits_data(0)


def _randomize_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) * 3 + 0.05)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def test_data_shapes_split_and_scaling(data) -> None:
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert float(data.x_train.min()) == 0.0 and float(data.x_train.max()) == 1.0
    # stratified: every class is in the test set, in about the same proportion
    counts = torch.bincount(data.y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37


def test_data_is_deterministic_and_seed_dependent(data) -> None:
    again = load_digits_data(0)
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.y_train, data.y_train)
    other = load_digits_data(1)
    assert not torch.equal(other.y_test, data.y_test)


def test_batches_cover_the_training_set_once(data) -> None:
    batches = data.batches(100, seed=3)
    assert [len(y) for _, y in batches] == [100] * 14 + [37]
    ys = torch.cat([y for _, y in batches])
    assert torch.equal(torch.sort(ys).values, torch.sort(data.y_train).values)
    assert all(
        torch.equal(a[0], b[0]) for a, b in zip(batches, data.batches(100, seed=3), strict=True)
    )
    assert not torch.equal(batches[0][1], data.batches(100, seed=4)[0][1])
    unshuffled = data.batches(100, shuffle=False)
    assert torch.equal(unshuffled[0][0], data.x_train[:100])


def test_calibration_batches(data) -> None:
    calib = data.calibration_batches(3, batch_size=16)
    assert [tuple(x.shape) for x in calib] == [(16, 1, 8, 8)] * 3
    with pytest.raises(ValueError, match="n_batches"):
        data.calibration_batches(0)
    with pytest.raises(ValueError, match="n_batches"):
        data.calibration_batches(1000)
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(0)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_data(test_fraction=1.0)


def test_model_shapes_and_layers() -> None:
    model = DigitsCNN()
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(convs) == 5 and len(depthwise) == 2
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [tuple(lin.weight.shape) for lin in linears] == [(64, 64), (10, 64)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 5


def test_fold_conv_bn_matches_pytorch_fusion() -> None:
    torch.manual_seed(0)
    for groups, c_in in [(1, 3), (8, 8)]:
        seq = nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1, groups=groups), nn.BatchNorm2d(8))
        _randomize_batchnorm(seq, seed=groups)
        ours = fold_conv_bn(seq[0], seq[1])
        ref = fuse_conv_bn_eval(seq[0], seq[1])
        torch.testing.assert_close(ours.weight, ref.weight)
        torch.testing.assert_close(ours.bias, ref.bias)
        x = torch.randn(4, c_in, 6, 6)
        torch.testing.assert_close(ours(x), seq(x), atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_keeps_outputs_and_leaves_original_untouched() -> None:
    torch.manual_seed(1)
    model = _randomize_batchnorm(DigitsCNN(), seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 5
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
    # every folded conv now has a bias (BatchNorm's shift)
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, nn.Conv2d))


def test_accuracy_counts_and_restores_mode() -> None:
    class Fixed(nn.Module):
        def forward(self, x):
            return torch.eye(3)[x.long()]

    model = Fixed().train()
    assert accuracy(model, torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 0, 2])) == 0.75
    assert model.training
    with pytest.raises(ValueError, match="equally long"):
        accuracy(model, torch.tensor([0, 1]), torch.tensor([0]))


def test_training_learns_and_is_deterministic(data) -> None:
    def run():
        torch.manual_seed(0)
        model = DigitsCNN()
        losses = train(model, data, epochs=2, seed=0, progress=False)
        return model, losses

    (a, losses_a), (b, losses_b) = run(), run()
    assert losses_a == losses_b
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert losses_a[1] < losses_a[0] < 2.3  # below chance-level cross-entropy ln(10)
    assert not a.training
    assert evaluate(a, data) > 0.5
    with pytest.raises(ValueError, match="epochs"):
        train(a, data, epochs=0)


def test_trained_digits_model_is_folded_and_accurate() -> None:
    model, data = trained_digits_model(0, progress=False)
    assert not model.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert evaluate(model, data) >= 0.95


def test_training_does_not_depend_on_the_thread_setting(data) -> None:
    threads = torch.get_num_threads()
    weights = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(0)
            model = DigitsCNN()
            train(model, data, epochs=1, seed=0, progress=False)
            assert torch.get_num_threads() == n  # restored
            weights.append(model.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_shipped_weights_load_safely_and_reproduce_their_accuracy() -> None:
    from linquant_helpers.models import shipped_weights_info

    info = shipped_weights_info()
    assert (info["seed"], info["epochs"]) == (SHIPPED_SEED, EPOCHS)
    model = shipped_digits_cnn()  # torch.load(..., weights_only=True) inside
    assert isinstance(model, DigitsCNN) and not model.training
    data = load_digits_data(SHIPPED_SEED)
    # the test accuracy recorded when the weights were made, to the image, on any CPU
    assert round(evaluate(model, data) * len(data.y_test)) == round(
        info["test_accuracy"] * len(data.y_test)
    )


def test_trained_digits_model_uses_the_shipped_weights_by_default() -> None:
    model, _ = digits_cnn()
    shipped = shipped_digits_cnn()
    assert all(
        torch.equal(p, q)
        for p, q in zip(model.state_dict().values(), shipped.state_dict().values(), strict=True)
    )


RETRAIN_TOLERANCE = 0.015
"""Retraining on another CPU gave 97.8 % against the shipped 98.1 % (issue report): 1.5 points."""


def test_retraining_reproduces_the_shipped_accuracy_within_tolerance(tmp_path) -> None:
    from linquant_helpers.models import retrain_shipped_weights, shipped_weights_info

    info = retrain_shipped_weights(tmp_path)
    assert abs(info["test_accuracy"] - shipped_weights_info()["test_accuracy"]) <= RETRAIN_TOLERANCE
    state = torch.load(tmp_path / "digits_cnn.pt", weights_only=True)
    assert set(state) == set(shipped_digits_cnn().state_dict())
