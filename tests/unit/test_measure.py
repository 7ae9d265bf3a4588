"""Monte-Carlo measurement of compressor constants."""

import pytest
import torch

from commlab.compress import QSGD, RandK, TopK
from commlab.compress.measure import measure


def test_randk_error_matches_its_omega_and_shows_no_bias():
    x = torch.randn(200, generator=torch.Generator().manual_seed(0))
    m = measure(RandK(0.1), x, 2000, torch.Generator().manual_seed(1))
    assert m.error == pytest.approx(9.0, rel=0.05)  # E||C(x) - x||^2 = (d/k - 1) ||x||^2 exactly
    assert 0.5 < m.bias_z < 1.5
    assert m.bits_per_value == pytest.approx((20 * 32 + 20 * 8) / 200)


def test_topk_is_measured_once_and_its_bias_is_its_error():
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    m = measure(TopK(0.1), x, 500, torch.Generator())
    assert m.trials == 1 and m.bias == pytest.approx(m.error)
    assert m.error <= 0.9


def test_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        measure(QSGD(2), torch.ones(2, 3), 10, torch.Generator())
    with pytest.raises(ValueError, match="zero vector"):
        measure(QSGD(2), torch.zeros(3), 10, torch.Generator())
    with pytest.raises(ValueError, match="trials"):
        measure(QSGD(2), torch.ones(3), 0, torch.Generator())
