"""A CUDA tensor stays on the GPU through compress and decompress (issue 18, item 6): draws, masks,
positions and decode buffers are allocated on the input's device (skipped without a GPU).

The rule for generators (:func:`commlab.compress.base.draw`): draws are made on the generator's
device and moved to the input's, so a seeded CPU generator gives a CUDA input the same draws as its
CPU copy, and a CUDA generator draws on the GPU directly. Packing a payload to bytes is not tested here.
"""

import pytest
import torch
from compressor_cases import EVERY

from commlab.compress import (
    Identity,
    LowPrecision,
    Natural,
    PowerSGD,
    RandK,
    SampledTopK,
    Sign,
    TernGrad,
    Threshold,
    TopK,
    Uniform,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# payloads made of comparisons, elementwise IEEE arithmetic and the same draws: identical on both devices
# for the same seeded CPU generator (the others reduce in another order, or call log and QR)
EXACT = (Identity, TopK, RandK, SampledTopK, Threshold, Sign, TernGrad, Natural, Uniform, LowPrecision)


@pytest.mark.parametrize("shape", [(64,), (3, 64), (2, 70_000)], ids=str)
@pytest.mark.parametrize("generator_device", ["cpu", "cuda"])
@pytest.mark.parametrize("compressor", EVERY, ids=repr)
def test_compress_and_decompress_of_a_cuda_tensor_stay_on_cuda(compressor, generator_device, shape):
    x_cpu = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x = x_cpu.cuda()
    payload = compressor.compress(x, torch.Generator(generator_device).manual_seed(1))
    for part in payload.parts:
        assert part.data.device.type == "cuda", part.name
    out = compressor.decompress(payload)
    assert out.device.type == "cuda" and out.shape == x.shape and out.dtype == x.dtype
    if generator_device == "cpu":
        cpu = compressor.compress(x_cpu, torch.Generator().manual_seed(1))
        assert payload.bits == cpu.bits
        if isinstance(compressor, EXACT) and getattr(compressor, "format", None) != "e3m0":  # e3m0 takes a log2
            for a, b in zip(payload.parts, cpu.parts, strict=True):
                assert torch.equal(a.data.cpu(), b.data), a.name
            assert torch.equal(out.cpu(), compressor.decompress(cpu))


def test_a_warm_powersgd_restored_from_a_cpu_state_compresses_cuda_input():
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    cpu = PowerSGD(2, warm_start=True)
    cpu.compress(x, torch.Generator().manual_seed(1))
    gpu = PowerSGD(2, warm_start=True)
    gpu.load_state_dict(cpu.state_dict())
    payload = gpu.compress(x.cuda(), torch.Generator().manual_seed(2))
    assert all(part.data.device.type == "cuda" for part in payload.parts)
    again = cpu.compress(x, torch.Generator().manual_seed(2))  # the same warm Q on the CPU
    torch.testing.assert_close(gpu.decompress(payload).cpu(), cpu.decompress(again), atol=1e-4, rtol=1e-4)
