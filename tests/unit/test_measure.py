"""Monte-Carlo measurement of compressor constants."""

import math

import pytest
import torch

from commlab.compress import QSGD, RandK, TopK
from commlab.compress.measure import Measured, excess_z, measure


def test_randk_error_matches_its_omega_and_shows_no_bias():
    x = torch.randn(200, generator=torch.Generator().manual_seed(0))
    m = measure(RandK(0.1), x, 2000, torch.Generator().manual_seed(1))
    assert m.error == pytest.approx(9.0, rel=0.05)  # E||C(x) - x||^2 = (d/k - 1) ||x||^2 exactly
    assert abs(excess_z(m, 9.0)) < 4
    assert 0.8 < m.bias_z < 1.2
    assert m.bits_per_value == pytest.approx((20 * 32 + 20 * 8) / 200)


def test_a_biased_random_compressor_has_a_large_bias_z():
    x = torch.randn(200, generator=torch.Generator().manual_seed(0))
    assert measure(RandK(0.1, scaled=False), x, 300, torch.Generator().manual_seed(1)).bias_z > 100


def test_topk_is_measured_once_and_exactly():
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    m = measure(TopK(0.1), x, 500, torch.Generator())
    assert m.trials == 1 and m.error_se == 0 and math.isnan(m.bias_z)
    assert excess_z(m, 0.9) == -math.inf and excess_z(m, m.error / 2) == math.inf


def test_excess_z_uses_the_standard_error():
    assert excess_z(Measured(1.2, 0.1, 1.0, 1.0, 100), 1.0) == pytest.approx(2.0)


def test_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        measure(QSGD(2), torch.ones(2, 3), 10, torch.Generator())
    with pytest.raises(ValueError, match="zero vector"):
        measure(QSGD(2), torch.zeros(3), 10, torch.Generator())
    with pytest.raises(ValueError, match="trials"):
        measure(QSGD(2), torch.ones(3), 1, torch.Generator())
