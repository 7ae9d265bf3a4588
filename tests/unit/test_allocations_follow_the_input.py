"""Every tensor a compressor allocates follows its input's device, never torch's default device
(issue 18, item 6), checked without a GPU: with the default device set to "meta", an allocation
that forgets ``device=`` lands on meta and mixing it with the CPU input fails, or leaves a meta
tensor in the payload or the output. tests/unit/test_cuda_compressors.py runs the same on CUDA."""

import pytest
import torch
from compressor_cases import EVERY


@pytest.mark.parametrize("shape", [(64,), (3, 64), (2, 70_000), (70_001,)], ids=str)
@pytest.mark.parametrize("compressor", EVERY, ids=repr)
def test_nothing_is_allocated_on_the_default_device(compressor, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    expected = compressor.decompress(compressor.compress(x, torch.Generator().manual_seed(1)))
    if hasattr(compressor, "reset"):
        compressor.reset()
    with torch.device("meta"):
        payload = compressor.compress(x, torch.Generator().manual_seed(1))
        out = compressor.decompress(payload)
    assert [p.name for p in payload.parts if p.data.device.type != "cpu"] == []
    assert out.device.type == "cpu"
    assert torch.equal(out, expected)
