"""Half-precision inputs: norms, scales and ratios are computed in float32, so nothing overflows and
an fp16 / bf16 vector compresses exactly as its float32 copy does (issue 18, item 4)."""

import pytest
import torch

from commlab.compress import QSGD, ScaledSign, Uniform

COMPRESSORS = [ScaledSign("l1"), ScaledSign("l2"), QSGD(4), Uniform(8), Uniform(16)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("compressor", COMPRESSORS, ids=repr)
def test_a_half_precision_vector_compresses_as_its_float32_copy(compressor, dtype):
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0)).abs().add(1.0).to(dtype)  # ‖x‖₁ > 65504
    half = compressor.compress(x, torch.Generator().manual_seed(1))
    single = compressor.compress(x.float(), torch.Generator().manual_seed(1))
    assert half.bits == single.bits and half.to_bytes() == single.to_bytes()
    decoded = compressor.decompress(half)
    assert decoded.dtype == dtype and bool(torch.isfinite(decoded).all())
    torch.testing.assert_close(decoded, compressor.decompress(single).to(dtype), rtol=0, atol=0)


def test_scaled_sign_of_many_fp16_ones_is_ones_not_inf():
    ones = torch.ones(100_000, dtype=torch.float16)
    assert torch.equal(ScaledSign("l1")(ones), ones)
    assert torch.equal(ScaledSign("l2")(ones), ones)
