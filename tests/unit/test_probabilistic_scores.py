"""Probabilistic scores in commlab.ensembles.scores: ensemble CRPS against the brute-force double
sum and the Gaussian closed form, the closed form against numerical integration, the energy score,
rank histograms, spread–skill and the Brier score, and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from commlab.ensembles import scores


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _brute_crps(x: np.ndarray, y: float, fair: bool) -> float:
    m = len(x)
    skill = sum(abs(xi - y) for xi in x) / m
    pairs = sum(abs(xi - xj) for xi in x for xj in x)
    return skill - pairs / (2 * m * (m - 1) if fair else 2 * m * m)


@pytest.mark.parametrize(("m", "fair"), [(1, False), (2, False), (3, False), (8, False), (33, False),
                                         (2, True), (3, True), (8, True), (33, True)])
def test_crps_ensemble_equals_the_brute_force_double_sum(m, fair):
    x = torch.randn(4, 3, m, generator=_gen(m), dtype=torch.float64) * 2.0 + 1.0
    y = torch.randn(4, 3, generator=_gen(100 + m), dtype=torch.float64)
    expected = np.array([[_brute_crps(x[a, b].numpy(), y[a, b].item(), fair) for b in range(3)]
                         for a in range(4)])
    for method in ("sorted", "pairwise"):
        got = scores.crps_ensemble(x, y, fair=fair, method=method)
        assert got.shape == (4, 3)
        assert np.allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    # The member axis may sit anywhere.
    moved = scores.crps_ensemble(x.movedim(-1, 0), y, member_dim=0, fair=fair)
    assert np.allclose(moved.numpy(), expected, rtol=0, atol=1e-12)


def test_crps_of_one_member_is_the_absolute_error_and_numpy_inputs_work():
    x = np.array([[1.5], [-2.0]])
    assert torch.allclose(scores.crps_ensemble(x, np.array([0.5, 1.0])),
                          torch.tensor([1.0, 3.0], dtype=torch.float64))


def test_sorted_and_pairwise_crps_have_the_same_gradient():
    x = torch.randn(5, 6, generator=_gen(1), dtype=torch.float64)
    y = torch.randn(5, generator=_gen(2), dtype=torch.float64)
    grads = []
    for method in ("sorted", "pairwise"):
        xs = x.clone().requires_grad_(True)
        scores.crps_ensemble(xs, y, fair=True, method=method).sum().backward()
        grads.append(xs.grad)
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("mu", "sigma", "y"), [(0.0, 1.0, 0.0), (1.0, 2.0, -1.5), (-3.0, 0.3, -2.0),
                                            (0.5, 5.0, 9.0)])
def test_gaussian_closed_form_equals_numerical_integration(mu, sigma, y):
    # CRPS(F, y) = ∫ (F(x) − 1{x ≥ y})² dx, integrated on each side of the jump at y.
    left, _ = integrate.quad(lambda t: stats.norm.cdf(t, mu, sigma) ** 2, -np.inf, y, epsabs=1e-13)
    right, _ = integrate.quad(lambda t: stats.norm.sf(t, mu, sigma) ** 2, y, np.inf, epsabs=1e-13)
    closed = scores.crps_gaussian(torch.tensor(mu, dtype=torch.float64), sigma, y)
    assert closed.item() == pytest.approx(left + right, rel=1e-9, abs=1e-12)


def test_gaussian_crps_known_value_and_broadcasting():
    # Known value: N(0, 1) at its mean, (√2 − 1)/√π.
    assert scores.crps_gaussian(0.0, 1.0, 0.0).item() == pytest.approx((math.sqrt(2) - 1) / math.sqrt(math.pi))
    # Broadcasting; Python numbers follow the tensors' dtype.
    out = scores.crps_gaussian(torch.zeros(3, 1), torch.ones(1, 4), torch.zeros(3, 4))
    assert out.shape == (3, 4) and out.dtype == torch.float32
    assert scores.crps_gaussian(torch.zeros(2, dtype=torch.float64), 0.3, 0.1).dtype == torch.float64


def test_large_gaussian_ensemble_approaches_the_closed_form():
    # 64 forecast cases, 10^4 members each (the FuXi-ENS brief's estimator check).
    mu = torch.randn(64, generator=_gen(3), dtype=torch.float64)
    sigma = 0.5 + torch.rand(64, generator=_gen(4), dtype=torch.float64)
    y = mu + sigma * 1.5 * torch.randn(64, generator=_gen(5), dtype=torch.float64)
    members = mu[:, None] + sigma[:, None] * torch.randn(64, 10_000, generator=_gen(6), dtype=torch.float64)
    closed = scores.crps_gaussian(mu, sigma, y)
    fair = scores.crps_ensemble(members, y, fair=True)
    assert (fair.mean() / closed.mean()).item() == pytest.approx(1.0, abs=0.01)
    assert ((fair - closed).abs() / closed).max().item() < 0.05
    # The standard estimator exceeds the fair one by E|X − X'| / (2m) = σ/(m√π) on average.
    standard = scores.crps_ensemble(members, y)
    gap = (standard - fair).mean().item()
    assert gap == pytest.approx((sigma / (10_000 * math.sqrt(math.pi))).mean().item(), rel=0.02)


def test_energy_score_in_one_dimension_is_exactly_the_crps():
    # For d = 1, ‖·‖ = |·|, so ES(members, y) = CRPS(members, y) term by term (standard and fair).
    x = torch.randn(7, 5, generator=_gen(7), dtype=torch.float64)
    y = torch.randn(7, generator=_gen(8), dtype=torch.float64)
    for fair in (False, True):
        es = scores.energy_score(x[..., None], y[..., None], fair=fair)
        assert torch.allclose(es, scores.crps_ensemble(x, y, fair=fair), rtol=0, atol=1e-14)


def test_energy_score_equals_its_double_sum_and_reduces_to_the_error_for_one_member():
    x = torch.randn(3, 4, 2, generator=_gen(9), dtype=torch.float64)
    y = torch.randn(3, 2, generator=_gen(10), dtype=torch.float64)
    for case in range(3):
        xc, yc = x[case].numpy(), y[case].numpy()
        skill = np.mean([np.linalg.norm(xi - yc) for xi in xc])
        pairs = sum(np.linalg.norm(xi - xj) for xi in xc for xj in xc)
        assert scores.energy_score(x, y)[case].item() == pytest.approx(skill - pairs / 32, abs=1e-12)
        assert scores.energy_score(x, y, fair=True)[case].item() == pytest.approx(skill - pairs / 24, abs=1e-12)
    one = scores.energy_score(x[:, :1], y)
    assert torch.allclose(one, torch.linalg.vector_norm(x[:, 0] - y, dim=-1))


def test_energy_score_prefers_the_true_distribution():
    # Propriety, seen in one draw: the sampling distribution beats a shifted and a too-narrow one.
    truth = torch.randn(2000, 3, generator=_gen(11), dtype=torch.float64)
    members = torch.randn(2000, 20, 3, generator=_gen(12), dtype=torch.float64)
    right = scores.energy_score(members, truth, fair=True).mean()
    assert right < scores.energy_score(members + 0.5, truth, fair=True).mean()
    assert right < scores.energy_score(0.5 * members, truth, fair=True).mean()


def test_calibrated_rank_histogram_is_flat_and_an_under_dispersive_one_is_not():
    n, m = 20_000, 9
    centre = 3.0 * torch.randn(n, 1, generator=_gen(13), dtype=torch.float64)
    members = centre + torch.randn(n, m, generator=_gen(14), dtype=torch.float64)
    obs = centre[:, 0] + torch.randn(n, generator=_gen(15), dtype=torch.float64)
    counts = scores.rank_histogram(members, obs)
    assert counts.shape == (m + 1,) and counts.sum().item() == n and counts.dtype == torch.int64
    critical = stats.chi2.ppf(0.999, df=m)  # 27.9
    assert scores.rank_histogram_chi2(counts).item() < critical
    narrow = scores.rank_histogram(centre + 0.5 * (members - centre), obs)
    assert scores.rank_histogram_chi2(narrow).item() > 100 * critical
    assert narrow[0] + narrow[-1] > 0.4 * n  # the U shape: the truth falls outside the members


def test_rank_histogram_pools_only_the_named_axes_and_breaks_ties_at_random():
    x = torch.randn(6, 50, 4, generator=_gen(16))
    y = torch.randn(6, 50, generator=_gen(17))
    per_lead = scores.rank_histogram(x, y, dim=1)
    assert per_lead.shape == (6, 5) and bool((per_lead.sum(-1) == 50).all())
    assert torch.equal(per_lead.sum(0), scores.rank_histogram(x, y))
    ranks = scores.ensemble_rank(x, y)
    assert torch.equal(ranks, (x < y[..., None]).sum(-1))
    tied = torch.zeros(10_000, 3)
    with pytest.raises(ValueError, match="ties"):
        scores.ensemble_rank(tied, torch.zeros(10_000))
    counts = scores.rank_histogram(tied, torch.zeros(10_000), generator=_gen(18))
    assert scores.rank_histogram_chi2(counts).item() < stats.chi2.ppf(0.999, df=3)


def test_rank_histogram_chi2_formula():
    assert scores.rank_histogram_chi2(torch.tensor([10, 10, 10])).item() == 0.0
    # Σ (n − N/B)² / (N/B) with N = 30, B = 3: (100 + 0 + 100) / 10.
    assert scores.rank_histogram_chi2(np.array([20, 10, 0])).item() == pytest.approx(20.0)
    with pytest.raises(ValueError, match="not all zero"):
        scores.rank_histogram_chi2(torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="B >= 2"):
        scores.rank_histogram_chi2(torch.tensor([5]))


def test_spread_skill_ratio_is_one_for_a_calibrated_gaussian_ensemble():
    n, m = 40_000, 5
    centre = 2.0 * torch.randn(n, 1, generator=_gen(19), dtype=torch.float64)
    members = centre + 0.7 * torch.randn(n, m, generator=_gen(20), dtype=torch.float64)
    obs = centre[:, 0] + 0.7 * torch.randn(n, generator=_gen(21), dtype=torch.float64)
    result = scores.spread_skill(members, obs)
    assert result.spread.item() == pytest.approx(0.7, rel=0.01)
    assert result.rmse.item() == pytest.approx(0.7 * math.sqrt((m + 1) / m), rel=0.01)
    assert result.ratio.item() == pytest.approx(1.0, abs=0.02)
    # Without the (m+1)/m correction the calibrated ratio would read √(m/(m+1)) ≈ 0.91.
    assert (result.spread / result.rmse).item() == pytest.approx(math.sqrt(m / (m + 1)), abs=0.02)
    # An under-dispersive ensemble reads below one; per-lead ratios keep the lead axis.
    assert scores.spread_skill(centre + 0.5 * (members - centre), obs).ratio.item() < 0.6
    per_lead = scores.spread_skill(members.reshape(8, n // 8, m), obs.reshape(8, n // 8), dim=1)
    assert per_lead.ratio.shape == (8,)


def test_brier_exceedance():
    members = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 5.0]])
    obs = torch.tensor([2.5, 0.0])
    # p = 1/4 above 2.5 in row 0 (truth above: 1); p = 1/4 above 1 in row 1 (truth below: 0).
    got = scores.brier_exceedance(members, obs, torch.tensor([2.5, 1.0]))
    assert torch.allclose(got, torch.tensor([0.0625, 0.0625]))
    # A number threshold; both truths (4) above 2.5, one member in four above it in each row.
    assert torch.allclose(scores.brier_exceedance(members, torch.tensor([4.0, 4.0]), 2.5),
                          torch.tensor([0.5625, 0.5625]))
    with pytest.raises(ValueError, match="broadcast"):
        scores.brier_exceedance(members, obs, torch.zeros(3))


def test_refusals():
    x, y = torch.randn(4, 5), torch.randn(4)
    with pytest.raises(ValueError, match="obs must have the members' shape"):
        scores.crps_ensemble(x, torch.randn(5))
    with pytest.raises(TypeError, match="floating point"):
        scores.crps_ensemble(x.long(), y)
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        scores.crps_ensemble(x.tolist(), y)
    with pytest.raises(ValueError, match="finite"):
        scores.crps_ensemble(x, torch.tensor([0.0, float("nan"), 0.0, 0.0]))
    with pytest.raises(ValueError, match="fair estimator needs m >= 2"):
        scores.crps_ensemble(x[:, :1], y, fair=True)
    with pytest.raises(ValueError, match="method"):
        scores.crps_ensemble(x, y, method="quadrature")
    with pytest.raises(ValueError, match="member_dim"):
        scores.crps_ensemble(x, y, member_dim=2)
    with pytest.raises(ValueError, match="std must be > 0"):
        scores.crps_gaussian(0.0, torch.tensor([1.0, 0.0]), 0.0)
    with pytest.raises(ValueError, match="broadcast"):
        scores.crps_gaussian(torch.zeros(3), 1.0, torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[\.\.\., m, d\]"):
        scores.energy_score(x, y)
    with pytest.raises(ValueError, match="m >= 2"):
        scores.spread_skill(x[:, :1], y)
    with pytest.raises(ValueError, match="dim"):
        scores.spread_skill(x, y, dim=1)
    with pytest.raises(ValueError, match="repeats"):
        scores.rank_histogram(torch.randn(2, 3, 4), torch.randn(2, 3), dim=(0, -2))
