"""One rule for k from a ratio in every sparsifier (issue 18, item 4): k = ceil(ratio·d), at least 1,
at most d (:func:`commlab.compress.base.k_for`)."""

import math
from fractions import Fraction

import pytest
import torch

from commlab.compress import RandK, SampledTopK, TopK
from commlab.compress.base import k_for

RATIOS = [1e-6, 0.001, 0.01, 0.05, 0.1, 0.125, 0.2, 0.25, 1 / 3, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0]
DIMS = [1, 2, 3, 7, 10, 30, 50, 51, 99, 100, 101, 333, 1000, 1001, 4096]


def test_the_rule_is_the_ceiling_of_the_decimal_product_clamped_to_one_and_d():
    for ratio in RATIOS:
        for d in DIMS:
            exact = math.ceil(Fraction(str(ratio)) * d) if ratio != 1 / 3 else math.ceil(d / 3)
            assert k_for(ratio, d) == max(1, min(d, exact)), (ratio, d)
    assert (k_for(0.1, 50), k_for(0.1, 51), k_for(1e-6, 50), k_for(1.0, 7)) == (5, 6, 1, 7)


def kept_by(compressor, d, seed):
    # all-equal rows: every coordinate passes SampledTopK's threshold, whatever its sample, so each
    # sparsifier's count is its k alone (TopK keeps the k lowest positions among the ties)
    x = torch.full((2, d), 1.5)
    payload = compressor.compress(x, torch.Generator().manual_seed(seed + 1))
    counts = set(payload["indices"].counts)
    assert len(counts) == 1
    return counts.pop()


@pytest.mark.parametrize("make", [
    lambda r: TopK(r),
    lambda r: RandK(r),
    lambda r: RandK(r, scaled=False),
    lambda r: RandK(r, shared=True),
    lambda r: SampledTopK(r, sample_ratio=0.5),
], ids=["TopK", "RandK", "RandK-unscaled", "RandK-shared", "SampledTopK"])
def test_every_sparsifier_keeps_exactly_k_for_ratio_and_d(make):
    for ratio in RATIOS:
        compressor = make(ratio)
        for i, d in enumerate(DIMS):
            assert kept_by(compressor, d, i) == k_for(ratio, d), (ratio, d)
            if hasattr(compressor, "omega_for") and compressor.kind == "unbiased":
                assert compressor.omega_for(d) == d / k_for(ratio, d) - 1
            elif compressor.alpha_for(d) is not None:
                assert compressor.alpha_for(d) == k_for(ratio, d) / d
