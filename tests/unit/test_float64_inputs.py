"""float64 inputs (issue 18, item 4): a compressor keeps float64 values where its wire format allows,
each counted at 64 bits, or it casts as its docstring says and its bits say what is sent."""

import pytest
import torch

from commlab.compress import (
    QSGD,
    Identity,
    LogByte,
    LowPrecision,
    Natural,
    OneBitSGD,
    PowerSGD,
    RandK,
    SampledTopK,
    ScaledSign,
    Sign,
    TernGrad,
    Threshold,
    TopK,
    Uniform,
)

W, D = 3, 400


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def x64():
    # float64 values that float32 cannot hold exactly (about 29 more mantissa bits each)
    return torch.randn(W, D, generator=gen(0), dtype=torch.float64) * (1 + 1e-12)


# sparsifiers send the kept values themselves: float64 values, 64 bits each, exact
SPARSIFIERS = [TopK(0.1), TopK(k=7), RandK(0.1), RandK(0.1, shared=True), SampledTopK(0.1, sample_ratio=0.5),
               Threshold(1.0)]
# quantisers send codes plus scales computed and sent in float64 (64 bits each) for float64 input
SCALES = {ScaledSign("l1"): ["scale"], ScaledSign("l2"): ["scale"], OneBitSGD(): ["means"], TernGrad(): ["scale"],
          QSGD(4): ["norm"], Uniform(8): ["range"], Uniform(16): ["range"]}
# formats that cast: the same bits as float32 input; the receiver's tensor is float64 again
CASTS = [Natural(), LowPrecision("fp16"), LowPrecision("bf16"), LowPrecision("fp8_e4m3"), LowPrecision("e3m0"),
         PowerSGD(2), LogByte(), Sign()]


@pytest.mark.parametrize("compressor", [Identity(), *SPARSIFIERS], ids=repr)
def test_sent_values_round_trip_at_float64_precision_and_cost_64_bits(compressor):
    x = x64()
    payload = compressor.compress(x, gen())
    values = payload["values"]
    assert values.data.dtype == torch.float64 and values.width == 64
    out = compressor.decompress(payload)
    assert out.dtype == torch.float64
    kept = out != 0
    scale = D / payload["indices"].counts[0] if getattr(compressor, "scaled", False) else 1.0
    assert torch.equal(out[kept], x[kept] * scale)  # bit for bit: nothing went through float32
    single = compressor.compress(x.float(), gen())
    assert payload.bits == single.bits + 32 * values.data.numel()  # 32 more bits for each value, nothing else


@pytest.mark.parametrize("compressor", list(SCALES), ids=repr)
def test_quantiser_scales_of_float64_input_stay_float64(compressor):
    x = x64()
    payload = compressor.compress(x, gen())
    single = compressor.compress(x.float(), gen())
    extra = 0
    for name in SCALES[compressor]:
        assert payload[name].data.dtype == torch.float64 and payload[name].width == 64
        assert single[name].data.dtype == torch.float32
        extra += 32 * payload[name].data.numel()
    assert payload.bits == single.bits + extra
    assert compressor.decompress(payload).dtype == torch.float64


def test_scaled_sign_of_float64_is_the_float64_mean_magnitude_exactly():
    x = x64()
    expected = torch.where(x >= 0, 1.0, -1.0).double() * (x.abs().sum(dim=1, keepdim=True) / D)
    assert torch.equal(ScaledSign("l1")(x), expected)


def test_uniform_of_float64_decodes_within_its_float64_range():
    x = x64() * 1e-3 + 1e6  # a narrow range far from zero: a float32 range would be off by up to 0.06
    out = Uniform(16)(x, gen())
    lo, hi = x.min(dim=1, keepdim=True).values, x.max(dim=1, keepdim=True).values
    assert bool(((out >= lo) & (out <= hi)).all())
    assert float((out - x).abs().max()) <= float((hi - lo).max()) / (2**16 - 1)


@pytest.mark.parametrize("compressor", CASTS, ids=repr)
def test_formats_that_cast_send_what_float32_input_sends_and_decode_to_float64(compressor):
    x = x64()
    payload = compressor.compress(x, gen())
    single = compressor.compress(x.float(), gen())
    assert payload.bits == single.bits
    assert all(p.data.dtype != torch.float64 for p in payload.parts)
    out = compressor.decompress(payload)
    assert out.dtype == torch.float64
    if not isinstance(compressor, LowPrecision):  # a direct float64 -> fp16 rounding may differ from via-float32
        torch.testing.assert_close(out.float(), compressor.decompress(single), rtol=0, atol=0)


def test_natural_rejects_float64_beyond_the_float32_range():
    with pytest.raises(ValueError, match="float32 range"):
        Natural().compress(torch.tensor([1.0, 1e39], dtype=torch.float64), gen())
