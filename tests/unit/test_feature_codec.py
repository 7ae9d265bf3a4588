"""Feature coding (semcom.feature_codec) and the BPFP metric (semcom.metrics.bpfp): exact round trips on the
lossless paths, the quantisation error bound, rates counted from the real bytes, and clear errors for bad input."""

import math
import zlib

import numpy as np
import pytest
import torch

from commlab.semcom import feature_codec as fc
from commlab.semcom.digital import jpeg_scan_bits
from commlab.semcom.metrics import bpfp


def _features(shape=(6, 5, 7), seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


# ------------------------------------------------------------------------------------------------ bpfp

def test_bpfp_is_eight_bits_per_byte_over_elements():
    assert bpfp(b"\x00" * 10, 16) == 5.0
    assert bpfp([b"abc", b"de", bytearray(b"f")], 3) == 16.0
    assert bpfp([], 4) == 0.0


@pytest.mark.parametrize("streams, elements, error", [
    ("text", 4, TypeError), ([b"a", "b"], 4, TypeError), (3, 4, TypeError),
    (b"a", 0, ValueError), (b"a", 2.0, ValueError), (b"a", True, ValueError)])
def test_bpfp_rejects_bad_input(streams, elements, error):
    with pytest.raises(error):
        bpfp(streams, elements)


def test_ten_bit_raw_packing_gives_ten_bits_per_feature_point_before_entropy_coding():
    x = _features((4, 8, 8))  # 256 elements
    stream = fc.encode(x, lo=-5.0, hi=5.0, bits=10, codec="raw")
    assert len(stream) == fc.HEADER_BYTES + 256 * 10 // 8
    assert bpfp(stream[fc.HEADER_BYTES:], x.numel()) == 10.0
    assert bpfp(stream, x.numel()) == pytest.approx(10.0 + 8 * fc.HEADER_BYTES / 256)


@pytest.mark.parametrize("bits", [1, 3, 7, 13])
def test_raw_packing_is_ceil_bits_times_elements(bits):
    x = _features((3, 5, 7))  # 105 elements
    assert len(fc.encode(x, lo=-1.0, hi=1.0, bits=bits, codec="raw")) == fc.HEADER_BYTES + math.ceil(105 * bits / 8)


def test_zlib_body_is_zlib_of_the_codes():
    x = _features()
    stream = fc.encode(x, lo=-3.0, hi=3.0, bits=6, codec="zlib")
    codes = fc.quantise(x, -3.0, 3.0, 6)
    assert stream[fc.HEADER_BYTES:] == zlib.compress(codes.numpy().astype(np.uint8).tobytes(), 9)


# ---------------------------------------------------------------------------------------- quantisation

@pytest.mark.parametrize("bits", [1, 2, 4, 8, 10, 16])
def test_quantisation_error_is_at_most_half_a_step_inside_the_range(bits):
    x = _features((2000,), scale=1.0)
    lo, hi = -1.5, 2.0
    codes = fc.quantise(x, lo, hi, bits)
    assert codes.dtype == torch.int64 and int(codes.min()) >= 0 and int(codes.max()) <= 2**bits - 1
    err = (fc.dequantise(codes, lo, hi, bits).double() - x.double().clamp(lo, hi)).abs()
    step = (hi - lo) / (2**bits - 1)
    assert float(err.max()) <= step / 2 + 1e-6
    assert float(err.max()) > step / 4  # the bound is tight for random input


def test_truncation_clips_to_the_range_ends():
    x = torch.tensor([-10.0, -1.0, 0.0, 1.0, 10.0])
    out = fc.dequantise(fc.quantise(x, -1.0, 1.0, 8), -1.0, 1.0, 8)
    assert out[0] == -1.0 and out[-1] == 1.0 and out[1] == -1.0 and out[3] == 1.0


def test_dequantise_rejects_codes_out_of_range_and_float_codes():
    with pytest.raises(ValueError, match="codes"):
        fc.dequantise(torch.tensor([0, 8]), 0.0, 1.0, 3)
    with pytest.raises(TypeError, match="integer"):
        fc.dequantise(torch.tensor([0.0]), 0.0, 1.0, 3)


@pytest.mark.parametrize("kwargs, error", [
    (dict(lo=1.0, hi=1.0, bits=4), ValueError), (dict(lo=2.0, hi=1.0, bits=4), ValueError),
    (dict(lo=0.0, hi=1.0, bits=0), ValueError), (dict(lo=0.0, hi=1.0, bits=17), ValueError),
    (dict(lo=0.0, hi=1.0, bits=4.0), TypeError), (dict(lo=float("nan"), hi=1.0, bits=4), ValueError)])
def test_quantise_rejects_bad_ranges_and_bit_depths(kwargs, error):
    with pytest.raises(error):
        fc.quantise(torch.zeros(3), **kwargs)


def test_quantise_rejects_non_finite_or_integer_features():
    with pytest.raises(ValueError, match="finite"):
        fc.quantise(torch.tensor([0.0, float("inf")]), 0.0, 1.0, 4)
    with pytest.raises(ValueError, match="floating"):
        fc.quantise(torch.tensor([0, 1]), 0.0, 1.0, 4)


# ------------------------------------------------------------------------------------------- truncation

def test_truncation_rules():
    x = torch.cat([torch.linspace(-1, 1, 999), torch.tensor([50.0])])
    assert fc.truncation_range(x, "minmax") == (-1.0, 50.0)
    mu, sigma = float(x.double().mean()), float(x.double().std(correction=0))
    lo, hi = fc.truncation_range(x, "sigma", k=3.0)
    assert lo == -1.0 and hi == pytest.approx(mu + 3 * sigma)  # the low end is cut to the observed minimum
    assert hi == float(np.float32(hi))  # float32 values, as the bitstream carries them
    lo, hi = fc.truncation_range(x, "percentile", percentile=99.0)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(x.numpy(), [1.0, 99.0])))
    assert hi < 1.0  # the outlier is cut


def test_sigma_rule_on_non_negative_features_starts_at_zero():
    relu = torch.relu(_features((10_000,), scale=1.0))
    lo, hi = fc.truncation_range(relu, "sigma", k=3.0)
    assert lo == 0.0 and hi < float(relu.max())


@pytest.mark.parametrize("rule, kwargs", [("median", {}), ("sigma", {"k": 0.0}), ("percentile", {"percentile": 40.0})])
def test_truncation_rejects_bad_rules(rule, kwargs):
    with pytest.raises(ValueError):
        fc.truncation_range(_features(), rule, **kwargs)


def test_truncation_rejects_constant_features():
    with pytest.raises(ValueError, match="empty range"):
        fc.truncation_range(torch.ones(10), "minmax")


def test_feature_statistics_of_a_known_sample():
    x = torch.tensor([0.0, 0.0, 1.0, -1.0] * 250 + [100.0])
    stats = fc.feature_statistics(x)
    z = (x.double() - x.double().mean()) / x.double().std(correction=0)
    assert stats["max"] == 100.0 and stats["min"] == -1.0
    assert stats["excess_kurtosis"] == pytest.approx(float(z.pow(4).mean()) - 3.0)
    assert stats["excess_kurtosis"] > 500  # one huge outlier
    assert stats["beyond_5sigma"] == pytest.approx(1 / 1001)
    assert stats["zero"] == pytest.approx(500 / 1001)
    gauss = fc.feature_statistics(_features((200_000,)))
    assert abs(gauss["excess_kurtosis"]) < 0.05 and gauss["beyond_5sigma"] < 1e-4


# ---------------------------------------------------------------------------------------------- packing

@pytest.mark.parametrize("channels, grid", [(1, (1, 1)), (16, (4, 4)), (32, (4, 8)), (8, (2, 4)),
                                            (7, (3, 3)), (13, (4, 4))])
def test_frame_grid(channels, grid):
    assert fc.frame_grid(channels) == grid


@pytest.mark.parametrize("channels", [1, 5, 16, 32])
def test_pack_unpack_round_trip(channels):
    x = _features((channels, 3, 4))
    frame = fc.pack_frame(x)
    rows, cols = fc.frame_grid(channels)
    assert frame.shape == (rows * 3, cols * 4)
    assert torch.equal(frame[:3, 4:8], x[1]) if channels > 1 else torch.equal(frame, x[0])
    assert torch.equal(fc.unpack_frame(frame, channels), x)


def test_unpack_rejects_a_frame_that_does_not_fit_the_grid():
    with pytest.raises(ValueError, match="grid"):
        fc.unpack_frame(torch.zeros(9, 10), 16)


# ---------------------------------------------------------------------------------------------- codecs

@pytest.mark.parametrize("codec, bits", [("raw", 3), ("raw", 10), ("zlib", 2), ("zlib", 8), ("zlib", 12),
                                         ("png", 1), ("png", 6), ("png", 8), ("png", 10), ("png", 16)])
def test_lossless_codecs_round_trip_exactly(codec, bits):
    x = _features((7, 6, 5))
    lo, hi = -2.5, 3.0
    stream = fc.encode(x, lo=lo, hi=hi, bits=bits, codec=codec)
    codes, lo_read, hi_read, bits_read = fc.decode_codes(stream)
    assert (lo_read, hi_read, bits_read) == (lo, hi, bits)
    assert torch.equal(codes, fc.quantise(x, lo, hi, bits))
    assert torch.equal(fc.decode(stream), fc.dequantise(fc.quantise(x, lo, hi, bits), lo, hi, bits))


def test_encode_writes_lo_and_hi_in_float32_and_quantises_with_them():
    x = _features()
    lo, hi = -1.0 / 3.0, 2.0 / 3.0  # not representable in float32
    codes, lo32, hi32, _ = fc.decode_codes(fc.encode(x, lo=lo, hi=hi, bits=16, codec="zlib"))
    assert lo32 == float(np.float32(lo)) and hi32 == float(np.float32(hi))
    assert torch.equal(codes, fc.quantise(x, lo32, hi32, 16))


def test_jpeg_is_lossy_its_error_falls_with_quality_and_its_bits_match_jpeg_scan_bits():
    g = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.avg_pool2d(torch.rand((16, 1, 24, 24), generator=g), 5, 1, 2)[:, 0]
    errors = []
    for quality in (20, 50, 95):
        stream = fc.encode(smooth, lo=0.0, hi=1.0, bits=8, codec="jpeg", quality=quality)
        out = fc.decode(stream)
        assert out.shape == smooth.shape
        errors.append(float((out - fc.dequantise(fc.quantise(smooth, 0.0, 1.0, 8), 0.0, 1.0, 8)).abs().mean()))
        # the body is the entropy-coded scan, which is what semcom.digital.jpeg_scan_bits counts (+ 7 quality bits)
        frame = fc.dequantise(fc.pack_frame(fc.quantise(smooth, 0.0, 1.0, 8)), 0.0, 1.0, 8)[None]
        scan_bits, _ = jpeg_scan_bits(frame, quality)
        assert 8 * (len(stream) - fc.HEADER_BYTES) + 7 == scan_bits
    assert errors[0] > errors[1] > errors[2] > 0


def test_batch_helpers_code_each_sample_on_its_own():
    x = _features((3, 4, 5, 6))
    streams = fc.encode_batch(x, lo=-4.0, hi=4.0, bits=8, codec="png")
    assert len(streams) == 3 and streams[1] == fc.encode(x[1], lo=-4.0, hi=4.0, bits=8, codec="png")
    assert torch.equal(fc.decode_batch(streams), torch.stack([fc.decode(s) for s in streams]))
    with pytest.raises(ValueError, match="sequence"):
        fc.decode_batch(streams[0])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(codec="lzw", bits=8), ValueError, "codec"),
    (dict(codec="jpeg", bits=6, quality=50), ValueError, "bits must be 8"),
    (dict(codec="jpeg", bits=8), TypeError, "quality"),
    (dict(codec="jpeg", bits=8, quality=100), ValueError, "quality"),
    (dict(codec="zlib", bits=8, quality=50), ValueError, "jpeg codec only")])
def test_encode_rejects_bad_codec_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fc.encode(_features(), lo=-1.0, hi=1.0, **kwargs)


def test_encode_rejects_bad_feature_shapes():
    with pytest.raises(ValueError, match="3 dimensions"):
        fc.encode(torch.zeros(4, 4), lo=0.0, hi=1.0, bits=8, codec="zlib")
    with pytest.raises(TypeError, match="tensor"):
        fc.encode(np.zeros((1, 2, 2)), lo=0.0, hi=1.0, bits=8, codec="zlib")


@pytest.mark.parametrize("codec, bits", [("raw", 5), ("zlib", 8), ("png", 8), ("jpeg", 8)])
def test_decode_rejects_malformed_streams(codec, bits):
    kwargs = {"quality": 75} if codec == "jpeg" else {}
    stream = fc.encode(_features(), lo=-1.0, hi=1.0, bits=bits, codec=codec, **kwargs)
    with pytest.raises(ValueError):
        fc.decode(stream[:fc.HEADER_BYTES - 1])
    with pytest.raises(ValueError):
        fc.decode(stream[:-3] if codec in ("raw", "zlib") else stream[:fc.HEADER_BYTES + 20])  # cut short
    with pytest.raises(ValueError, match="header"):
        fc.decode(bytes([9]) + stream[1:])
    with pytest.raises(TypeError):
        fc.decode("not bytes")
