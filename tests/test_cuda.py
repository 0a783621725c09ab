"""On a CUDA device: outputs stay on the device and equal the CPU results.

Marked ``cuda``: tests/conftest.py skips them where no CUDA device is present.
"""

from __future__ import annotations

import pytest
import torch

from linquant_helpers import (
    choose_qparams,
    dequantize,
    fake_quantize,
    pack,
    qrange,
    quantize,
    unpack,
)
from linquant_helpers.qtensor import quantize_tensor

pytestmark = pytest.mark.cuda

GRANULARITIES = [{}, {"axis": 0}, {"axis": -1}, {"group_size": 64}]
IDS = ["tensor", "axis0", "axis-1", "group64"]


def _x(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(256, 512, generator=g) * 2 + 0.3).to(dtype)


@pytest.mark.parametrize("where", GRANULARITIES, ids=IDS)
@pytest.mark.parametrize(("signed", "symmetric"), [(True, False), (True, True), (False, False)])
def test_choose_qparams_on_cuda_equals_cpu(where, signed, symmetric):
    x = _x()
    s_cpu, z_cpu = choose_qparams(x, symmetric=symmetric, signed=signed, **where)
    s_gpu, z_gpu = choose_qparams(x.cuda(), symmetric=symmetric, signed=signed, **where)
    assert s_gpu.is_cuda and z_gpu.is_cuda
    assert torch.equal(s_gpu.cpu(), s_cpu) and torch.equal(z_gpu.cpu(), z_cpu)


@pytest.mark.parametrize("where", GRANULARITIES, ids=IDS)
@pytest.mark.parametrize("bits", [4, 8, 16])
@pytest.mark.parametrize("signed", [True, False])
def test_quantize_and_dequantize_on_cuda_equal_cpu(where, bits, signed):
    x = _x()
    scale, zp = choose_qparams(x, bits, signed=signed, **where)
    q_cpu = quantize(x, scale, zp, bits, signed=signed, **where)
    q_gpu = quantize(x.cuda(), scale.cuda(), zp.cuda(), bits, signed=signed, **where)
    assert q_gpu.is_cuda and q_gpu.dtype == q_cpu.dtype
    differ = q_gpu.cpu() != q_cpu
    if differ.any():
        # Both compute fma(x, 1/s, z) in float32; should a GPU compiler split the
        # multiply-add, codes could differ by one at near-ties only, never elsewhere.
        assert int(differ.sum()) <= 1e-5 * x.numel()
        assert int((q_gpu.cpu().long() - q_cpu.long()).abs().max()) == 1
    x_hat_cpu = dequantize(q_cpu, scale, zp, **where)
    x_hat_gpu = dequantize(q_cpu.cuda(), scale.cuda(), zp.cuda(), **where)
    assert x_hat_gpu.is_cuda and torch.equal(x_hat_gpu.cpu(), x_hat_cpu)


def test_python_number_qparams_follow_the_data_to_cuda():
    x = _x().cuda()
    q = quantize(x, 0.05, 3)
    assert q.is_cuda
    assert dequantize(q, 0.05, 3).is_cuda
    assert torch.equal(q.cpu(), quantize(x.cpu(), 0.05, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda(dtype):
    x = _x(dtype).cuda()
    scale, zp = choose_qparams(x, axis=0)
    fq = fake_quantize(x, scale, zp, axis=0)
    assert fq.is_cuda and fq.dtype == dtype
    q = quantize(x, scale, zp, axis=0)
    assert torch.equal(q, quantize(x.float(), scale, zp, axis=0))


def test_quantize_tensor_on_cuda():
    qt = quantize_tensor(_x().cuda(), 4, symmetric=True, group_size=32)
    assert qt.q.is_cuda and qt.scale.is_cuda and qt.zero_point.is_cuda
    assert qt.dequantize().is_cuda


@pytest.mark.parametrize(("bits", "signed"), [(1, False), (2, True), (4, True), (4, False)])
def test_pack_on_cuda_equals_cpu(bits, signed):
    low, high = qrange(max(bits, 2), signed) if bits > 1 else (0, 1)
    q = torch.randint(low, high + 1, (33, 7), generator=torch.Generator().manual_seed(1))
    q = q.to(torch.int8)
    packed_cpu = pack(q, bits, signed=signed)
    packed_gpu = pack(q.cuda(), bits, signed=signed)
    assert packed_gpu.is_cuda and torch.equal(packed_gpu.cpu(), packed_cpu)
    out = unpack(packed_gpu, bits, q.shape, signed=signed)
    assert out.is_cuda and torch.equal(out.cpu(), q)
