"""commlab.compress.theory: the EF21 theory step sizes (L_QM classical, L_AM of EF21-W)."""

import math

import pytest
import torch

from commlab.compress.theory import ef21_factor, ef21_stepsize


def test_factor_matches_the_definition_and_two_over_alpha_for_small_alpha():
    alpha = 0.3
    theta = 1 - math.sqrt(1 - alpha)
    beta = (1 - alpha) / (1 - math.sqrt(1 - alpha))
    assert ef21_factor(alpha) == pytest.approx(math.sqrt(beta / theta), rel=1e-14)
    assert ef21_factor(1 / 40) == pytest.approx(78.5, abs=0.1)  # Top-1 at d = 40 (brief)
    assert ef21_factor(1e-4) * 1e-4 == pytest.approx(2.0, rel=1e-3)
    assert ef21_factor(1.0) == 0.0


def test_stepsize_uses_the_requested_mean():
    L_i = torch.tensor([1.0, 1.0, 1.0, 97.0], dtype=torch.float64)
    L, alpha = 10.0, 0.1
    am, qm = float(L_i.mean()), float(L_i.square().mean().sqrt())
    assert ef21_stepsize(L, L_i, alpha, mean="AM") == pytest.approx(1 / (L + am * ef21_factor(alpha)))
    assert ef21_stepsize(L, L_i, alpha, mean="QM") == pytest.approx(1 / (L + qm * ef21_factor(alpha)))
    assert ef21_stepsize(L, L_i, alpha, "AM") > ef21_stepsize(L, L_i, alpha, "QM")
    assert ef21_stepsize(L, [5.0, 5.0], alpha, "AM") == ef21_stepsize(L, [5.0, 5.0], alpha, "QM")
    assert ef21_stepsize(L, L_i, 1.0) == pytest.approx(1 / L)  # no compression: gradient descent


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, True, "0.1"])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        ef21_stepsize(1.0, [1.0], alpha)


def test_bad_constants_and_mean():
    with pytest.raises(ValueError, match="L must"):
        ef21_stepsize(0.0, [1.0], 0.5)
    with pytest.raises(ValueError, match="L_i"):
        ef21_stepsize(1.0, [1.0, -1.0], 0.5)
    with pytest.raises(ValueError, match="L_i"):
        ef21_stepsize(1.0, [], 0.5)
    with pytest.raises(ValueError, match="mean"):
        ef21_stepsize(1.0, [1.0], 0.5, mean="GM")
