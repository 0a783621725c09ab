"""Quantization-aware training: fake quantization with a straight-through estimator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linquant_helpers import choose_qparams, fake_quantize, fake_quantize_weights
from linquant_helpers.qat import QATWrapper, fake_quantize_ste, prepare_qat, strip_qat


def fq_reference(w: torch.Tensor, bits: int, **granularity) -> torch.Tensor:
    """Symmetric narrow fake quantization, from the package's primitives."""
    scale, zp = choose_qparams(w, bits, symmetric=True, narrow=True, **granularity)
    return fake_quantize(w, scale, zp, bits, narrow=True, **granularity)


def weight(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_ste_value_is_fake_quantized() -> None:
    w = weight(8, 16)
    assert torch.equal(fake_quantize_ste(w, 4, axis=0), fq_reference(w, 4, axis=0))
    assert torch.equal(fake_quantize_ste(w, 3, group_size=4), fq_reference(w, 3, group_size=4))
    assert torch.equal(fake_quantize_ste(w, 3), fq_reference(w, 3))
    assert fake_quantize_ste(w, 4, axis=0).unique().numel() <= 8 * 15  # 15 codes per channel


def test_ste_gradient_is_the_identity() -> None:
    w = weight(8, 16).requires_grad_()
    upstream = weight(8, 16, seed=1)
    (fake_quantize_ste(w, 2) * upstream).sum().backward()
    assert torch.equal(w.grad, upstream)


def test_without_ste_rounding_has_no_useful_gradient() -> None:
    """Why the STE is needed: d round(x) / dx is 0 almost everywhere."""
    w = weight(8, 16).requires_grad_()
    torch.round(w * 7).sum().backward()
    assert torch.count_nonzero(w.grad) == 0


def test_wrapper_linear_and_conv_forward() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    x = weight(5, 16, seed=2)
    expected = F.linear(x, fq_reference(linear.weight.detach(), 4, axis=0), linear.bias)
    torch.testing.assert_close(QATWrapper(linear, 4, axis=0)(x), expected)

    conv = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)  # depthwise, strided
    images = weight(2, 4, 8, 8, seed=3)
    w_q = fq_reference(conv.weight.detach(), 4, axis=0)
    expected = F.conv2d(images, w_q, conv.bias, stride=2, padding=1, groups=4)
    torch.testing.assert_close(QATWrapper(conv, 4, axis=0)(images), expected)


def test_wrapper_trains_the_float_weight() -> None:
    torch.manual_seed(0)
    wrapped = QATWrapper(nn.Linear(16, 8), 4, group_size=8)
    wrapped(weight(5, 16)).pow(2).sum().backward()
    assert wrapped.module.weight.grad is not None
    assert torch.count_nonzero(wrapped.module.weight.grad) > 0
    assert [name for name, _ in wrapped.named_parameters()] == ["module.weight", "module.bias"]
    assert "bits=4, per-group (group_size=8)" in repr(wrapped)


def test_wrapper_errors() -> None:
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d"):
        QATWrapper(nn.ReLU())
    with pytest.raises(ValueError, match="group_size"):
        QATWrapper(nn.Conv2d(2, 2, 3), 4, axis=0, group_size=3)
    with pytest.raises(ValueError, match="bits"):
        QATWrapper(nn.Linear(10, 2), 1)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Sequential(nn.Linear(4 * 4 * 4, 16), nn.ReLU()),
        nn.Linear(16, 3),
    )


def test_prepare_qat_equals_post_training_quantization_before_training() -> None:
    model = small_cnn()
    qat = prepare_qat(model, 4, axis=0, skip=("4",))
    assert isinstance(qat[0], QATWrapper) and isinstance(qat[3][0], QATWrapper)
    assert type(qat[4]) is nn.Linear and type(model[0]) is nn.Conv2d  # skipped; original intact
    # post-training: the same model with its weights replaced by their fake-quantized values
    ptq = small_cnn()
    with torch.no_grad():
        for layer in (ptq[0], ptq[3][0]):
            layer.weight.copy_(fq_reference(layer.weight, 4, axis=0))
    x = weight(6, 1, 4, 4, seed=4)
    torch.testing.assert_close(qat(x), ptq(x))
    # ... which is lesson 04's post-training weight quantization
    lesson05 = fake_quantize_weights(model, 4, axis=0)
    lesson05[4].load_state_dict(model[4].state_dict())  # the skipped layer stays float
    torch.testing.assert_close(qat(x), lesson05(x))
    plain = strip_qat(qat)
    assert type(plain[0]) is nn.Conv2d and type(plain[3][0]) is nn.Linear
    torch.testing.assert_close(plain(x), model(x))


def test_qat_lowers_the_quantized_loss() -> None:
    """A small MLP at 2 bits: training through the STE lets the other weights compensate
    for each one's rounding error, which post-training rounding cannot do."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    x = weight(256, 8, seed=5)
    y = teacher(x).detach()
    qat = prepare_qat(teacher, 2, axis=0)
    loss_ptq = F.mse_loss(qat(x), y).item()
    optimizer = torch.optim.Adam(qat.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 100)
    for _ in range(100):
        optimizer.zero_grad()
        F.mse_loss(qat(x), y).backward()
        optimizer.step()
        schedule.step()
    assert F.mse_loss(qat(x), y).item() < 0.5 * loss_ptq
