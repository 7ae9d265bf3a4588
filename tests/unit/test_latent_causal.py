"""CDEV's statistics in commlab.semcom.latent_causal: the bootstrap CI covers at its level, interventions
use common random numbers, effects are exact for a known decoder, and the assignment scores count right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from commlab.semcom import latent_causal as lc


def test_bootstrap_ci_of_a_mean_covers_the_true_mean_at_about_its_level():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 400
    for _ in range(trials):
        ci = lc.bootstrap_ci(rng.normal(1.0, 2.0, size=60), rng=rng, n_boot=400, level=0.9)
        assert ci.low <= ci.estimate <= ci.high
        hits += ci.low <= 1.0 <= ci.high
    # percentile bootstrap at n = 60 under-covers slightly; 400 trials have a standard error of 1.5 %
    assert 0.84 <= hits / trials <= 0.95


def test_bootstrap_ci_width_matches_the_normal_theory_and_is_seeded():
    x = np.random.default_rng(1).normal(size=400)
    ci = lc.bootstrap_ci(x, rng=np.random.default_rng(2), n_boot=4000)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(len(x)), rel=0.1)
    x = np.arange(10.0)
    a = lc.bootstrap_ci(x, rng=np.random.default_rng(5), statistic=np.median)
    b = lc.bootstrap_ci(x, rng=np.random.default_rng(5), statistic=np.median)
    assert a == b and a.estimate == 4.5 and a.n == 10


def test_bootstrap_ci_refuses_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="finite"):
        lc.bootstrap_ci([1.0, np.nan, 2.0], rng=rng)
    with pytest.raises(ValueError, match="at least 2"):
        lc.bootstrap_ci([1.0], rng=rng)
    with pytest.raises(ValueError, match="level"):
        lc.bootstrap_ci([1.0, 2.0], rng=rng, level=1.0)
    with pytest.raises(TypeError, match="rng"):
        lc.bootstrap_ci([1.0, 2.0], rng=0)


W = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.5, -1.0]])  # latent -> two outputs


def _linear_decoder(z: torch.Tensor) -> torch.Tensor:
    return z @ W


def _measure(out: np.ndarray) -> dict:
    return {"a": out[:, 0], "b": out[:, 1]}


def test_sweep_sets_one_latent_and_keeps_the_others_common():
    base = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    before = base.clone()
    grid = (-5.0, -1.0, 0.0, 1.0, 5.0)
    sweep = lc.intervention_sweep(_linear_decoder, base, 0, grid, _measure)
    assert torch.equal(base, before)  # the prior draws are not modified
    assert sweep["a"].shape == (5, 50) and sweep["a"].dtype == np.float64
    # common random numbers: rows differ by exactly W[0] (v_g - v_h) for every sample
    np.testing.assert_allclose(sweep["a"][4] - sweep["a"][0], 2.0 * 10.0, rtol=1e-6)
    np.testing.assert_allclose(sweep["b"][4] - sweep["b"][0], 0.0, atol=1e-6)
    expected = (2.0 * 1.0 + 0.5 * base[:, 2]).numpy()  # row v = 1: latent 0 set to 1, latent 2 from the prior
    np.testing.assert_allclose(sweep["a"][3], expected, rtol=1e-6)


def test_effect_of_a_known_linear_decoder_is_exact_and_a_dead_latent_has_none():
    base = torch.randn(200, 3, generator=torch.Generator().manual_seed(1))
    grid = (-5.0, -1.0, 0.0, 1.0, 5.0)
    rng = np.random.default_rng(0)
    live = lc.intervention_sweep(_linear_decoder, base, 2, grid, _measure)
    e5 = lc.intervention_effect(live["b"], grid, -5, 5, scale=2.0, rng=rng)
    e1 = lc.intervention_effect(live["b"], grid, -1, 1, scale=2.0, rng=rng)
    assert e5.estimate == pytest.approx(-1.0 * 10 / 2.0, rel=1e-6) and e5.excludes_zero
    assert e5.estimate / e1.estimate == pytest.approx(5.0, rel=1e-6)  # linear: ±5σ is 5 times ±1σ
    dead = lc.intervention_sweep(_linear_decoder, base, 1, grid, _measure)
    e = lc.intervention_effect(dead["a"], grid, -5, 5, scale=1.0, rng=rng)
    assert e.estimate == pytest.approx(0.0, abs=1e-6) and not e.excludes_zero


def test_effect_with_output_noise_is_significant_only_when_real():
    rng = np.random.default_rng(3)
    grid = np.array([-5.0, 0.0, 5.0])
    noise = rng.normal(size=(3, 200))
    with_effect = 0.1 * grid[:, None] + noise
    without = noise
    assert lc.intervention_effect(with_effect, grid, -5, 5, scale=1.0, rng=rng).excludes_zero
    assert not lc.intervention_effect(without, grid, -5, 5, scale=1.0, rng=rng).excludes_zero


def test_effect_drops_undefined_pairs_and_gives_nan_when_too_few_remain():
    grid = (-5.0, 5.0)
    sweep = np.array([[1.0] * 20, [2.0] * 20])
    sweep[1, :15] = np.nan
    e = lc.intervention_effect(sweep, grid, -5, 5, scale=1.0, rng=np.random.default_rng(0), min_pairs=5)
    assert e.n == 5 and e.estimate == pytest.approx(1.0)
    e = lc.intervention_effect(sweep, grid, -5, 5, scale=1.0, rng=np.random.default_rng(0), min_pairs=10)
    assert e.n == 5 and np.isnan(e.estimate) and not e.excludes_zero
    with pytest.raises(ValueError, match="grid"):
        lc.intervention_effect(sweep, grid, -3, 5, scale=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="scale"):
        lc.intervention_effect(sweep, grid, -5, 5, scale=0.0, rng=np.random.default_rng(0))


def test_rank_correlations_match_scipy_and_ignore_monotone_transforms():
    rng = np.random.default_rng(4)
    latents = rng.normal(size=(300, 3))
    factors = np.stack([np.exp(latents[:, 0]), rng.integers(0, 3, 300), np.full(300, 7.0)], axis=1)
    rho = lc.rank_correlations(latents, factors)
    assert rho.shape == (3, 3)
    assert rho[0, 0] == pytest.approx(1.0)
    for i in range(3):
        assert rho[i, 1] == pytest.approx(spearmanr(latents[:, i], factors[:, 1])[0], abs=1e-12)
    assert np.all(rho[:, 2] == 0.0)  # a constant factor
    with pytest.raises(ValueError, match="finite"):
        lc.rank_correlations(np.full((5, 1), np.nan), np.ones((5, 1)))


def test_assignment_scores_by_hand():
    flagged = np.array([[True, False], [True, True], [False, False]])
    truth = np.array([[True, False], [False, False], [False, True]])
    s = lc.assignment_scores(flagged, truth)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 2)
    assert s["recovered"].tolist() == [True, False]
    none = lc.assignment_scores(np.zeros((2, 2), bool), truth[:2])
    assert none["precision"] == 0.0 and none["recall"] == 0.0
    with pytest.raises(ValueError, match="bool"):
        lc.assignment_scores(flagged.astype(int), truth)
