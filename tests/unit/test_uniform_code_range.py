"""Uniform(b) never sends a code outside [0, 2^b − 1] (issue 18, item 4): constant rows, the largest
finite ranges of each dtype, tiny and subnormal ranges, and every input dtype."""

import pytest
import torch

from commlab.compress import Payload, Uniform


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def edge_rows(dtype):
    info = torch.finfo(dtype)
    big, tiny = info.max, info.tiny
    rows = [
        [0.0, 0.0, 0.0, 0.0],  # constant rows: a zero range
        [3.5, 3.5, 3.5, 3.5],
        [-big, -big, -big, -big],
        [-big, big, 0.0, big / 3],  # a range of 2·max: overflows the dtype itself
        [big, big * 0.999, big * 0.5, big * 0.25],
        [-big, -big * 0.5, -tiny, 0.0],
        [0.0, tiny, tiny * 0.5, tiny * 0.25],  # subnormal range (where the dtype has subnormals)
        [1.0, 1.0 + info.eps, 1.0, 1.0 + 2 * info.eps],  # a range of a few ulps
    ]
    return torch.tensor(rows, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("bits", [1, 8, 16])
def test_codes_stay_in_range_and_decode_within_the_row_range(dtype, bits):
    x = edge_rows(dtype)
    assert bool(torch.isfinite(x).all())
    compressor = Uniform(bits)
    for seed in range(5):
        payload = compressor.compress(x, gen(seed))
        codes = payload["codes"].data
        assert int(codes.min()) >= 0 and int(codes.max()) <= 2**bits - 1
        out = compressor.decompress(Payload.from_bytes(payload.to_bytes(), payload.header))
        assert out.dtype == dtype and bool(torch.isfinite(out).all())
        lo, hi = x.min(dim=1, keepdim=True).values, x.max(dim=1, keepdim=True).values
        assert bool(((out >= lo) & (out <= hi)).all())


def test_a_constant_row_decodes_to_itself_and_sends_zeros():
    x = torch.full((2, 50), -7.25)
    payload = Uniform(16).compress(x, gen())
    assert int(payload["codes"].data.max()) == 0
    assert torch.equal(Uniform(16).decompress(payload), x)


def test_the_extreme_float32_range_is_coded_in_float64_and_stays_unbiased():
    big = torch.finfo(torch.float32).max
    x = torch.tensor([-big, big, 0.0, big / 2])
    draws = torch.stack([Uniform(16)(x, gen(seed)).double() for seed in range(2000)])
    assert torch.equal(draws[:, 0], torch.full((2000,), -big, dtype=torch.float64))
    assert torch.equal(draws[:, 1], torch.full((2000,), big, dtype=torch.float64))
    # 0 and big/2 sit between grid points Δ = 2·big/65535 apart: the mean of the draws is within 4 σ ≤ 4·(Δ/2)/√2000
    step = 2 * big / 65535
    assert torch.allclose(draws[:, 2:].mean(dim=0), x[2:].double(), rtol=0, atol=4 * (step / 2) / 2000**0.5)


def test_float64_extremes_stay_in_range_and_a_range_beyond_float64_is_refused():
    big = torch.finfo(torch.float64).max
    x = torch.tensor([[big, big / 2, 0.0, big / 4], [-big / 2, 0.0, big / 2, big / 3]], dtype=torch.float64)
    payload = Uniform(16).compress(x, gen())
    assert 0 <= int(payload["codes"].data.min()) and int(payload["codes"].data.max()) <= 2**16 - 1
    out = Uniform(16).decompress(payload)
    assert bool(torch.isfinite(out).all()) and bool((out <= big).all())
    with pytest.raises(ValueError, match="overflows float64"):
        Uniform(16).compress(torch.tensor([-big, big], dtype=torch.float64), gen())
