"""Compressors: exact wire bits, serialisation, constants, determinism and bad input."""

import math

import pytest
import torch
from compressor_cases import EVERY
from hypothesis import given, settings
from hypothesis import strategies as st

from commlab.compress import (
    QSGD,
    Identity,
    LogByte,
    LowPrecision,
    Natural,
    OneBitSGD,
    Payload,
    PowerSGD,
    RandK,
    SampledTopK,
    ScaledSign,
    Sign,
    TernGrad,
    Threshold,
    TopK,
    Uniform,
    sparsify,
)
from commlab.compress.sparsify import top_indices

UNBIASED = [RandK(0.25), RandK(k=2, shared=True), QSGD(2), QSGD(8), Natural(), Uniform(3), TernGrad()]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "compressor, d, bits_per_row",
    [
        (Identity(), 50, 50 * 32),
        (TopK(k=3), 50, 3 * 32 + 3 * 6),  # values + 3 indices of ceil(log2 50) = 6 bits
        (TopK(k=20), 50, 20 * 32 + 50),  # 20 * 6 = 120 index bits > 50: a bitmap is cheaper
        (TopK(ratio=0.1), 50, 5 * 32 + 5 * 6),  # ceil(0.1 * 50) = 5 kept
        (RandK(k=4), 64, 4 * 32 + 4 * 6),
        (RandK(k=4, shared=True), 64, 4 * 32),  # indices come from the shared seed
        (Sign(), 50, 50),
        (ScaledSign(), 50, 50 + 32),
        (QSGD(4), 10, 10 * (1 + 3) + 32),  # sign + ceil(log2 5) level bits, and the norm
        (QSGD(1), 10, 10 * (1 + 1) + 32),
        (Natural(), 10, 10 * 9),
        (Uniform(4), 10, 10 * 4 + 2 * 32),
        (LowPrecision("fp16"), 10, 10 * 16),
        (LowPrecision("fp8_e4m3"), 10, 10 * 8 + 32),
        (LowPrecision("e3m0"), 10, 10 * 4 + 32),
        (LogByte(), 10, 10 * 8),  # sign + 7-bit log-magnitude code, no scale
        (PowerSGD(2), 50, (8 + 7) * 2 * 32),  # 50 values seen as an 8 x 7 matrix
        (TernGrad(), 50, 50 * 2 + 32),  # a 2-bit ternary code per value and the scale
        (OneBitSGD(), 50, 50 + 2 * 32),  # a bit per value and the two means
    ],
)
def test_exact_bits_on_hand_built_examples(compressor, d, bits_per_row):
    x = torch.randn(3, d, generator=gen())
    payload = compressor.compress(x, gen(1))
    assert payload.row_bits == (bits_per_row,) * 3
    assert payload.bits == 3 * bits_per_row


def test_float64_values_cost_64_bits():
    assert Identity().compress(torch.zeros(7, dtype=torch.float64) + 1).bits == 7 * 64


@pytest.mark.parametrize("compressor", EVERY, ids=repr)
@settings(max_examples=15, deadline=None)
@given(d=st.integers(10, 300), workers=st.integers(0, 4), seed=st.integers(0, 2**31))
def test_serialise_round_trip_and_byte_length(compressor, d, workers, seed):
    shape = (d,) if workers == 0 else (workers, d)
    x = torch.randn(shape, generator=gen(seed)) * 3
    payload = compressor.compress(x, gen(seed + 1))
    data = payload.to_bytes()
    assert len(data) == math.ceil(payload.bits / 8)
    back = Payload.from_bytes(data, payload.header)
    assert back.bits == payload.bits
    x_hat = compressor.decompress(payload)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    assert torch.equal(compressor.decompress(back), x_hat)


@pytest.mark.parametrize("compressor", EVERY, ids=repr)
def test_same_generator_same_payload(compressor):
    x = torch.randn(4, 80, generator=gen())
    a, b = compressor.compress(x, gen(5)), compressor.compress(x, gen(5))
    assert a.to_bytes() == b.to_bytes()


@settings(max_examples=60, deadline=None)
@given(d=st.integers(1, 200), frac=st.floats(0.001, 1.0), seed=st.integers(0, 2**31))
def test_topk_contraction(d, frac, seed):
    x = torch.randn(d, generator=gen(seed))
    compressor = TopK(frac)
    err = (compressor(x) - x).pow(2).sum()
    assert err <= (1 - compressor.alpha_for(d)) * x.pow(2).sum() + 1e-6
    assert compressor.alpha_for(d) >= frac


def test_topk_picks_the_largest_and_breaks_ties_by_lower_position():
    x = torch.tensor([[0.5, -2.0, 1.0, 2.0, -1.0, 1.0]])
    assert top_indices(x, 3).tolist() == [[1, 2, 3]]  # |-2| = |2|, then the first of the 1.0 ties
    assert TopK(k=3)(x).tolist() == [[0.0, -2.0, 1.0, 2.0, 0.0, 0.0]]


@pytest.mark.parametrize("k", [1, 100, 1024])
def test_long_row_path_selects_the_same_set_as_a_stable_full_sort(k):
    d = 1 << 18
    x = torch.randn(d, generator=gen(k))
    kth = x.abs().sort(descending=True).values[k - 1]
    x[1000:1010] = kth  # ties at the boundary: the lower positions must win
    x[3000:3004] = -kth
    expected = x.abs().sort(descending=True, stable=True).indices[:k].sort().values
    assert torch.equal(top_indices(x[None], k)[0], expected)
    assert torch.equal(top_indices(x[None].double(), k)[0], expected)


def test_long_row_path_falls_back_when_the_sample_overestimates_the_threshold():
    d, k = 1 << 17, 1024
    blocks = -(-sparsify._SAMPLE_HITS * d // (k * sparsify._SAMPLE_BLOCK))
    starts = torch.linspace(0, d - sparsify._SAMPLE_BLOCK, blocks).long()
    sampled = (starts[:, None] + torch.arange(sparsify._SAMPLE_BLOCK)).reshape(-1)
    x = torch.linspace(1e-3, 0, d)
    x[sampled] = torch.linspace(10, 1, sampled.numel())  # only the sampled blocks are large
    assert sparsify._top_indices_long_row(x, k) is None  # too few candidates: the fast path gives up
    expected = x.abs().sort(descending=True, stable=True).indices[:k].sort().values
    assert torch.equal(top_indices(x[None], k)[0], expected)


@pytest.mark.parametrize("compressor", UNBIASED, ids=repr)
def test_unbiased_and_variance_within_omega(compressor):
    d, trials = 40, 4000
    x = torch.randn(d, generator=gen(3), dtype=torch.float64)
    samples = torch.stack([compressor(x.float(), gen(100 + t)).double() for t in range(trials)])
    omega = compressor.omega_for(d)
    second_moment = (samples - x).pow(2).sum(dim=1)
    assert second_moment.mean() <= omega * x.pow(2).sum() * 1.05
    # the mean of `trials` independent draws has E||mean - x||^2 <= omega ||x||^2 / trials
    bias = (samples.mean(dim=0) - x).pow(2).sum()
    assert bias <= 4 * second_moment.mean() / trials + 1e-9


@pytest.mark.parametrize("compressor", [TopK(0.2), RandK(0.2), ScaledSign(), PowerSGD(1)], ids=repr)
def test_homogeneous_compressors_are_homogeneous(compressor):
    assert compressor.homogeneous
    x = torch.randn(3, 30, generator=gen())
    assert torch.allclose(compressor(2.5 * x, gen(7)), 2.5 * compressor(x, gen(7)), atol=1e-5)


@pytest.mark.parametrize("compressor", [c for c in EVERY if c.linear], ids=repr)
def test_linear_compressors_reduce_like_an_all_reduce(compressor):
    x = torch.randn(4, 30, generator=gen())
    payload = compressor.compress(x, gen(2))
    reduced = compressor.reduce(payload)
    assert reduced.bits == payload.row_bits[0]
    assert torch.allclose(compressor.decompress(reduced), compressor.decompress(payload).sum(dim=0), atol=2e-2)


def test_not_linear_compressors_refuse_to_reduce():
    with pytest.raises(TypeError, match="all-gather"):
        TopK(0.5).reduce(TopK(0.5).compress(torch.ones(2, 4)))


def test_randk_shared_keeps_the_same_coordinates_for_every_worker():
    x = torch.randn(5, 40, generator=gen())
    kept = RandK(k=4, shared=True)(x, gen(1)) != 0
    assert (kept == kept[0]).all() and kept[0].sum() == 4


def test_sampled_topk_keeps_at_most_k_of_the_largest():
    x = torch.randn(6, 1000, generator=gen())
    out = SampledTopK(0.01, sample_ratio=0.1)(x, gen(1))
    counts = (out != 0).sum(dim=1)
    assert (counts <= 10).all() and (counts >= 1).all()
    for row, full in zip(out, x, strict=True):  # whatever was kept is the largest of its row
        kept = row != 0
        assert full.abs()[kept].min() >= full.abs()[~kept].max()


def test_low_precision_formats():
    x = torch.tensor([1.0, -0.5, 0.25, 2.0**-6, 0.0, 0.7])
    e3m0 = LowPrecision("e3m0")(x)
    assert e3m0.tolist() == [1.0, -0.5, 0.25, 2.0**-6, 0.0, 0.5]  # 0.7 is nearer to 0.5 than to 1
    assert torch.allclose(LowPrecision("fp8_e4m3")(x), x, rtol=0.07)
    with pytest.raises(ValueError, match="fp16 range"):
        LowPrecision("fp16").compress(torch.tensor([1e6]))


def test_natural_sends_powers_of_two():
    out = Natural()(torch.randn(100, generator=gen()) * 10, gen(1))
    mantissa = torch.frexp(out.abs()).mantissa
    assert ((mantissa == 0.5) | (out == 0)).all()


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.tensor([1.0, float("nan")]), ValueError, "NaN or Inf"),
        (torch.tensor([1.0, float("inf")]), ValueError, "NaN or Inf"),
        (torch.zeros(0), ValueError, "empty"),
        (torch.arange(5), TypeError, "floating dtype"),
        (torch.zeros(2, 3, 4), ValueError, r"\[d\] or \[W, d\]"),
        ([1.0, 2.0], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_is_rejected(x, error, match):
    with pytest.raises(error, match=match):
        TopK(0.5).compress(x)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: TopK(0.0), "ratio"),
        (lambda: TopK(1.5), "ratio"),
        (lambda: TopK(k=0), "k must be"),
        (lambda: TopK(0.1, k=3), "exactly one"),
        (lambda: QSGD(0), "levels"),
        (lambda: Uniform(0), "bits"),
        (lambda: LowPrecision("fp4"), "format"),
        (lambda: ScaledSign("l3"), "norm"),
        (lambda: PowerSGD(0), "rank"),
        (lambda: SampledTopK(0.1, sample_ratio=2), "sample_ratio"),
    ],
)
def test_bad_settings_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_k_larger_than_d_and_missing_generator():
    with pytest.raises(ValueError, match="larger than the dimension"):
        TopK(k=10).compress(torch.ones(5))
    with pytest.raises(ValueError, match="generator"):
        RandK(0.5).compress(torch.ones(5))


def test_error_bound_is_the_stated_constant():
    assert RandK(k=10).error_bound(100) == pytest.approx(9.0)
    assert TopK(k=10).error_bound(100) == pytest.approx(0.9)
    assert Identity().error_bound(100) == 0.0
    assert Sign().error_bound(100) is None



def test_pack_rows_pads_to_a_width_and_unpack_rows_reads_each_row_by_its_header():
    small, large = TopK(k=1).compress(torch.tensor([0.0, 3.0, 1.0])), TopK(k=2).compress(torch.tensor([0.0, 3.0, 1.0]))
    with pytest.raises(ValueError, match="differ in size"):
        Payload.pack_rows([small, large])
    rows = Payload.pack_rows([small, large], width=large.header.nbytes + 1)
    assert rows.shape == (2, large.header.nbytes + 1) and small.header.nbytes < large.header.nbytes
    back = Payload.unpack_rows(rows, [small.header, large.header])
    assert [TopK(k=1).decompress(back[0]).tolist(), TopK(k=2).decompress(back[1]).tolist()] == [[0, 3, 0], [0, 3, 1]]
    with pytest.raises(ValueError, match="shorter than a payload"):
        Payload.pack_rows([small, large], width=1)


ZOO = [  # the compressor zoo notebook's configurations (its former bytes-match-bits claim, issue 16)
    Identity(), TopK(0.01), TopK(0.1), RandK(0.1), RandK(0.1, scaled=False), RandK(0.1, shared=True),
    SampledTopK(0.1, sample_ratio=0.1), Sign(), ScaledSign("l1"), ScaledSign("l2"), OneBitSGD(), TernGrad(),
    Threshold(1.0), QSGD(1), QSGD(16), Natural(),
    Uniform(2), Uniform(8), LowPrecision("fp16"), LowPrecision("bf16"), LowPrecision("fp8_e4m3"),
    LowPrecision("fp8_e5m2"), LowPrecision("e3m0"), PowerSGD(1), PowerSGD(4),
]


@pytest.mark.parametrize("compressor", ZOO, ids=repr)
@pytest.mark.parametrize("vector", ["gaussian", "heavy-tailed"])
def test_every_zoo_payload_serialises_to_ceil_bits_over_8_bytes_and_back(compressor, vector):
    g = gen(7)
    x = torch.randn(1000, generator=g)
    if vector == "heavy-tailed":  # Student t with 2 degrees of freedom, as in the notebook
        x = x / torch.sqrt(-torch.log(torch.rand(1000, generator=g)))
    payload = compressor.compress(x, gen(8))
    data = payload.to_bytes()
    assert len(data) == math.ceil(payload.bits / 8)
    assert payload.bits == sum(payload.row_bits)
    assert torch.equal(compressor.decompress(Payload.from_bytes(data, payload.header)), compressor.decompress(payload))


def test_a_fixed_threshold_keeps_exactly_the_coordinates_at_or_above_it_whatever_their_number():
    x = torch.tensor([[0.5, -2.0, 1.0, 0.0, -0.99], [0.1, 0.2, -0.3, 0.0, 0.4]])
    compressor = Threshold(1.0)
    payload = compressor.compress(x)
    assert payload["indices"].counts == (2, 0)  # the second row sends nothing
    # a 32-bit count, two values, a 5-bit bitmap (beats two 3-bit indices); the empty row its count only
    assert payload.row_bits == (32 + 2 * 32 + 5, 32)
    assert torch.equal(compressor.decompress(payload), torch.tensor([[0.0, -2.0, 1.0, 0.0, 0.0], [0.0] * 5]))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            Threshold(bad)


def test_terngrad_sends_plus_minus_its_scale_and_its_variance_is_the_closed_form():
    x = torch.tensor([3.0, -1.5, 0.0, 0.75], dtype=torch.float64)
    draws = torch.stack([TernGrad()(x.float(), gen(t)).double() for t in range(20_000)])
    assert set(draws.unique().tolist()) <= {-3.0, 0.0, 3.0}
    assert torch.equal(draws[:, 0], torch.full((20_000,), 3.0)) and bool((draws[:, 2] == 0).all())
    # E||C(x) - x||^2 = s ||x||_1 - ||x||^2 = 3 * 5.25 - 11.8125 = 3.9375, within Monte-Carlo error
    assert (draws - x).pow(2).sum(dim=1).mean() == pytest.approx(3.0 * 5.25 - 11.8125, rel=0.03)
    assert TernGrad().omega_for(100) == 9.0


@settings(max_examples=60, deadline=None)
@given(d=st.integers(1, 200), seed=st.integers(0, 2**31))
def test_one_bit_sgd_decodes_the_two_means_and_never_does_worse_than_scaled_sign(d, seed):
    x = torch.randn(d, generator=gen(seed), dtype=torch.float64).float()
    x_hat = OneBitSGD()(x)
    up = x >= 0
    for group in (up, ~up):
        if group.any():
            assert torch.allclose(x_hat[group], x[group].mean().expand(int(group.sum())), atol=1e-6)
    err = (x_hat - x).double().pow(2).sum()
    assert err <= (ScaledSign("l1")(x) - x).double().pow(2).sum() + 1e-6
    assert err <= (1 - OneBitSGD().alpha_for(d)) * x.double().pow(2).sum() + 1e-6
