"""Gaussian-mixture prior with exact diffusion scores and posteriors, the samplers' bookkeeping, and the
sample distances (commlab.ensembles.posterior_sampling, commlab.ensembles.sample_distances)."""

import math

import pytest
import torch

from commlab.ensembles.posterior_sampling import (
    VPSDE,
    GaussianMixture,
    LinearGaussianObservation,
    Twist,
    dps,
    effective_sample_size,
    fit_score,
    mode_weight_error,
    random_walk_metropolis,
    reverse_sde,
    systematic_resample,
    twisted_smc,
    weighted_particles,
)
from commlab.ensembles.sample_distances import mmd_rbf, sliced_wasserstein

D = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def mixture(d=2, K=3, seed=0):
    g = gen(seed)
    means = 2.0 * torch.randn((K, d), generator=g, dtype=D)
    B = torch.randn((K, d, d), generator=g, dtype=D)
    covs = 0.2 * B @ B.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=D)
    w = torch.rand(K, generator=g, dtype=D) + 0.2
    return GaussianMixture(w, means, covs)


def test_score_equals_autograd_of_log_density():
    gm = mixture(d=3)
    x = torch.randn((50, 3), generator=gen(1), dtype=D).requires_grad_(True)
    (auto,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    assert torch.allclose(gm.score(x.detach()), auto, atol=1e-10)


def test_log_prob_integrates_to_one_on_a_grid():
    gm = mixture(d=2)
    u = torch.linspace(-12, 12, 601, dtype=D)
    X, Y = torch.meshgrid(u, u, indexing="ij")
    p = gm.log_prob(torch.stack([X.reshape(-1), Y.reshape(-1)], 1)).exp()
    assert float(p.sum()) * float(u[1] - u[0]) ** 2 == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("t", [0.1, 0.4, 0.9])
def test_noised_marginal_matches_monte_carlo_of_the_forward_process(t):
    gm, sde = mixture(d=2), VPSDE()
    x0 = gm.sample(200_000, gen(2))
    xt = sde.perturb(x0, t, gen(3))
    pt = gm.noised(sde, t)
    mean = pt.weights @ pt.means
    second = torch.einsum("k,kij->ij", pt.weights, pt.covs + pt.means[:, :, None] * pt.means[:, None, :])
    cov = second - mean[:, None] * mean[None, :]
    assert torch.allclose(xt.mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(xt.T), cov, atol=0.03)
    # a non-Gaussian statistic: the mean log-density of the MC draws equals minus the entropy estimate
    # from the closed form's own draws (both samples come from the same law if the closed form is right)
    own = pt.sample(200_000, gen(4))
    assert float(pt.log_prob(xt).mean()) == pytest.approx(float(pt.log_prob(own).mean()), abs=0.02)


def test_noised_marginal_tends_to_standard_normal():
    gm, sde = mixture(d=2), VPSDE()
    p1 = gm.noised(sde, 1.0)
    assert sde.alpha_bar(1.0) == pytest.approx(math.exp(-0.1 - 0.5 * 19.9))
    assert torch.allclose(p1.covs, torch.eye(2, dtype=D).expand(3, 2, 2), atol=1e-3)


def test_posterior_equals_brute_force_bayes_on_a_1d_grid():
    gm = GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=D), torch.tensor([[-2.0], [0.5], [3.0]], dtype=D),
                         torch.tensor([[[0.3]], [[0.8]], [[0.2]]], dtype=D))
    obs = LinearGaussianObservation(torch.tensor([[0.7]], dtype=D), torch.tensor([0.4], dtype=D), 0.5)
    post = gm.posterior(obs)
    u = torch.linspace(-10, 10, 200_001, dtype=D)[:, None]
    du = float(u[1, 0] - u[0, 0])
    comp = gm.component_log_prob(u) - obs.neg_log_likelihood(u)[:, None]          # [G, K] unnormalised
    joint = comp.exp()
    evidence = joint.sum() * du
    w = joint.sum(0) * du / evidence
    means = (joint * u).sum(0) / joint.sum(0)
    var = (joint * (u - means) ** 2).sum(0) / joint.sum(0)
    assert torch.allclose(post.weights, w, atol=1e-8)
    assert torch.allclose(post.means[:, 0], means, atol=1e-8)
    assert torch.allclose(post.covs[:, 0, 0], var, atol=1e-8)
    log_z = math.log(float(evidence)) - 0.5 * math.log(2 * math.pi * 0.25)      # e^{-μ} lacks N's constant
    assert gm.log_evidence(obs) == pytest.approx(log_z, abs=1e-8)


def test_posterior_density_is_prior_times_likelihood_in_10d():
    gm = mixture(d=10, K=4, seed=5)
    A = torch.randn((5, 10), generator=gen(6), dtype=D) / math.sqrt(10)
    obs = LinearGaussianObservation(A, torch.randn(5, generator=gen(7), dtype=D), 0.1)
    post = gm.posterior(obs)
    x = post.sample(100, gen(8))
    lhs = post.log_prob(x)
    rhs = gm.log_prob(x) - obs.neg_log_likelihood(x) - 5 * 0.5 * math.log(2 * math.pi * 0.01) - gm.log_evidence(obs)
    assert torch.allclose(lhs, rhs, atol=1e-8)


def test_twist_is_the_intermediate_likelihood_by_1d_quadrature():
    # L_t(x) = ∫ N(y; a x_0, σ²) p(x_0 | x_t = x) dx_0 with p(x_0 | x_t) ∝ p(x_0) N(x_t; √ᾱ x_0, 1 − ᾱ) on a grid
    gm = GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=D), torch.tensor([[-2.0], [0.5], [3.0]], dtype=D),
                         torch.tensor([[[0.3]], [[0.8]], [[0.2]]], dtype=D))
    obs = LinearGaussianObservation(torch.tensor([[0.7]], dtype=D), torch.tensor([0.4], dtype=D), 0.2)
    sde = VPSDE()
    twist = gm.twist(sde, obs)
    u = torch.linspace(-10, 10, 100_001, dtype=D)[:, None]
    lik = torch.exp(-obs.neg_log_likelihood(u)) / math.sqrt(2 * math.pi * 0.04)
    xt = torch.tensor([[-1.3], [0.2], [1.7]], dtype=D)
    for t in (0.05, 0.3, 0.8):
        a = sde.alpha_bar(t)
        kern = torch.exp(-(xt[:, 0][None, :] - math.sqrt(a) * u) ** 2 / (2 * (1 - a)))      # [G, 3]
        joint = gm.log_prob(u).exp()[:, None] * kern
        expected = torch.log((lik[:, None] * joint).sum(0) / joint.sum(0))
        assert torch.allclose(twist.log(xt, t), expected, atol=1e-7)
    # t = 0: the likelihood itself, normalising constant included
    assert torch.allclose(twist.log(xt, 0.0), -obs.neg_log_likelihood(xt) - 0.5 * math.log(2 * math.pi * 0.04),
                          atol=1e-9)
    # the gradient is the autograd of the log
    x = torch.randn((20, 1), generator=gen(30), dtype=D).requires_grad_(True)
    (auto,) = torch.autograd.grad(twist.log(x, 0.4).sum(), x)
    assert torch.allclose(twist.grad(x.detach(), 0.4), auto, atol=1e-9)


def test_twisted_smc_with_the_exact_twist_samples_the_posterior():
    gm, obs = _problem(m=1)
    obs = LinearGaussianObservation(obs.A, obs.y, 0.1)
    sde = VPSDE()
    post = gm.posterior(obs)
    r = twisted_smc(gm.exact_score(sde), gm.twist(sde, obs), sde, obs, 4000, 2, steps=100, generator=gen(31))
    assert float(r.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(r.ess.min()) > 0.3 * 4000            # the exact twist leaves only discretisation to correct
    assert mode_weight_error(post, r.x, r.weights) < 0.02
    assert mmd_rbf(r.x, post.sample(4000, gen(32)), bandwidth=1.0, x_weights=r.weights) < 0.04
    again = twisted_smc(gm.exact_score(sde), gm.twist(sde, obs), sde, obs, 4000, 2, steps=100, generator=gen(31))
    assert torch.equal(r.x, again.x) and torch.equal(r.log_weights, again.log_weights)


def test_twisted_smc_weights_correct_a_wrong_twist():
    # half the exact log-twist: the proposal is off, so only the weights (and resampling) can bring the
    # particles to the posterior
    gm, obs = _problem(m=1)
    obs = LinearGaussianObservation(obs.A, obs.y, 0.1)
    sde = VPSDE()
    post = gm.posterior(obs)
    exact = gm.twist(sde, obs)
    half = Twist(lambda x, t: 0.5 * exact.log(x, t), lambda x, t: 0.5 * exact.grad(x, t))
    r = twisted_smc(gm.exact_score(sde), half, sde, obs, 4000, 2, steps=100, generator=gen(33))
    assert r.resamples > 0
    assert mode_weight_error(post, r.x, r.weights) < 0.03


def test_fit_score_learns_the_mixture_score_and_is_seeded():
    gm, sde = mixture(d=2), VPSDE()
    draws = gm.sample(20_000, gen(40))
    learned = fit_score(draws, sde, generator=gen(41), hidden=64, steps=600, batch_size=256)
    untrained = fit_score(draws, sde, generator=gen(41), hidden=64, steps=1, batch_size=256)
    exact = gm.exact_score(sde)
    for t in (0.1, 0.5):
        x = sde.perturb(gm.sample(2000, gen(42)), t, gen(43))                     # x ~ p_t
        ref = exact(x, t)
        rel = float((learned(x, t) - ref).square().sum(1).mean() / ref.square().sum(1).mean())
        rel0 = float((untrained(x, t) - ref).square().sum(1).mean() / ref.square().sum(1).mean())
        assert rel < 0.3 < rel0
    again = fit_score(draws, sde, generator=gen(41), hidden=64, steps=5, batch_size=256)
    other = fit_score(draws, sde, generator=gen(41), hidden=64, steps=5, batch_size=256)
    x = torch.randn((10, 2), generator=gen(44), dtype=D)
    assert torch.equal(again(x, 0.3), other(x, 0.3))
    with pytest.raises(ValueError, match="samples"):
        fit_score(torch.zeros(5, dtype=D), sde, generator=gen())


def test_ess_and_systematic_resampling():
    assert effective_sample_size(torch.zeros(10, dtype=D)) == pytest.approx(10)
    assert effective_sample_size(torch.tensor([0.0, -1e6, -1e6], dtype=D)) == pytest.approx(1)
    lw = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=D)) + 7.0    # shift-invariant
    assert effective_sample_size(lw) == pytest.approx(1 / (0.25 + 0.0625 + 2 * 0.015625))
    w = torch.tensor([0.3, 0.05, 0.4, 0.25], dtype=D)
    mean = torch.zeros(4, dtype=D)
    for seed in range(400):
        counts = torch.bincount(systematic_resample(torch.log(w), gen(seed)), minlength=4).to(D)
        assert bool(((counts == torch.floor(4 * w)) | (counts == torch.ceil(4 * w))).all())   # floor/ceil of N w
        mean += counts / 400
    assert torch.allclose(mean, 4 * w, atol=0.1)                                              # unbiased


def _problem(d=2, m=1):
    gm = mixture(d=d, K=4, seed=3)
    A = torch.randn((m, d), generator=gen(9), dtype=D) / math.sqrt(d)
    return gm, LinearGaussianObservation(A, torch.randn(m, generator=gen(10), dtype=D), 0.3)


def test_weighted_particles_weights_normalised_ess_bounded_and_seeded():
    gm, obs = _problem()
    sde = VPSDE()
    r1 = weighted_particles(gm.exact_score(sde), sde, obs, 300, 2, steps=30, generator=gen(11))
    r2 = weighted_particles(gm.exact_score(sde), sde, obs, 300, 2, steps=30, generator=gen(11))
    assert float(torch.logsumexp(r1.log_weights, 0)) == pytest.approx(0.0, abs=1e-12)
    assert float(r1.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool(((r1.ess >= 1 - 1e-9) & (r1.ess <= 300 + 1e-9)).all())
    assert 0 <= r1.resamples <= 30
    assert torch.equal(r1.x, r2.x) and torch.equal(r1.log_weights, r2.log_weights)
    r3 = weighted_particles(gm.exact_score(sde), sde, obs, 300, 2, steps=30, generator=gen(12))
    assert not torch.equal(r1.x, r3.x)
    # ess_threshold = 1 resamples at every step
    r4 = weighted_particles(gm.exact_score(sde), sde, obs, 300, 2, steps=30, generator=gen(11), ess_threshold=1.0)
    assert r4.resamples == 30


def test_weighted_particles_exact_for_a_wide_likelihood_and_standard_normal_prior():
    # N(0, I) prior: the VP path keeps it, the prior chain stands still in law; a wide likelihood gives
    # the Gaussian posterior N(b/(1+p), 1/(1+p)) which the sampler must reproduce.
    gm = GaussianMixture(torch.ones(1, dtype=D), torch.zeros((1, 1), dtype=D), torch.ones((1, 1, 1), dtype=D))
    obs = LinearGaussianObservation(torch.ones((1, 1), dtype=D), torch.tensor([1.0], dtype=D), 1.0)
    sde = VPSDE()
    r = weighted_particles(gm.exact_score(sde), sde, obs, 20_000, 1, steps=50, generator=gen(13))
    mean = float(r.weights @ r.x[:, 0])
    var = float(r.weights @ (r.x[:, 0] - mean) ** 2)
    assert mean == pytest.approx(0.5, abs=0.03) and var == pytest.approx(0.5, abs=0.03)


def test_reverse_sde_with_exact_score_samples_the_mixture():
    gm, sde = mixture(d=2), VPSDE()
    x = reverse_sde(gm.exact_score(sde), sde, 4000, 2, steps=200, generator=gen(14))
    assert mode_weight_error(gm, x) < 0.03
    assert mmd_rbf(x, gm.sample(4000, gen(15)), bandwidth=1.0) < 0.06


def test_dps_is_seeded_and_moves_towards_the_observation():
    gm, obs = _problem()
    sde = VPSDE()
    a = dps(gm.exact_score(sde), sde, obs, 200, 2, steps=40, generator=gen(16), step_size=0.3)
    b = dps(gm.exact_score(sde), sde, obs, 200, 2, steps=40, generator=gen(16), step_size=0.3)
    prior = reverse_sde(gm.exact_score(sde), sde, 200, 2, steps=40, generator=gen(16))
    assert torch.equal(a, b)
    assert float(obs.neg_log_likelihood(a).mean()) < 0.5 * float(obs.neg_log_likelihood(prior).mean())


def test_mode_weight_error_zero_in_expectation_and_detects_a_wrong_mixture():
    gm = mixture(d=2)
    x = gm.sample(20_000, gen(17))
    assert mode_weight_error(gm, x) < 0.02
    wrong = GaussianMixture(torch.tensor([1.0, 0.0001, 0.0001], dtype=D), gm.means, gm.covs)
    assert mode_weight_error(gm, wrong.sample(20_000, gen(18))) > 0.3
    w = torch.zeros(20_000, dtype=D)
    w[:10] = 1.0
    assert mode_weight_error(gm, x, w) > 0.0


def test_random_walk_metropolis_leaves_the_target_invariant():
    gm = mixture(d=2)
    start = gm.sample(2000, gen(19))
    chains, acc = random_walk_metropolis(gm.log_prob, start, steps=50, scales=[0.3, 1.0], generator=gen(20))
    assert chains.shape == (50, 2000, 2) and 0.05 < acc < 0.95
    assert mode_weight_error(gm, chains[-1]) < 0.04


def test_mmd_and_sliced_wasserstein():
    g = gen(21)
    x = torch.randn((2000, 2), generator=g, dtype=D)
    y = torch.randn((2000, 2), generator=g, dtype=D)
    z = y + torch.tensor([1.0, 0.0], dtype=D)
    assert mmd_rbf(x, x, bandwidth=1.0) == pytest.approx(0.0, abs=1e-6)
    assert mmd_rbf(x, y, bandwidth=1.0) < 0.1 < mmd_rbf(x, z, bandwidth=1.0)
    # a shift by s along one axis: SW_2 = s · sqrt(E θ_1²) = s / sqrt(2) in 2-D
    small = x[:300]
    sw = sliced_wasserstein(small, small + torch.tensor([1.0, 0.0], dtype=D), generator=gen(22), n_projections=1000)
    assert sw == pytest.approx(1 / math.sqrt(2), abs=0.03)
    # weights: duplicating points equals giving them double weight
    w = torch.ones(2000, dtype=D)
    w[:1000] = 2.0
    dup = torch.cat([x, x[:1000]])
    assert mmd_rbf(x, y, bandwidth=1.0, x_weights=w) == pytest.approx(mmd_rbf(dup, y, bandwidth=1.0), abs=1e-10)
    assert sliced_wasserstein(x, y, generator=gen(23), x_weights=w, n_projections=16) == pytest.approx(
        sliced_wasserstein(dup, y, generator=gen(23), n_projections=16), abs=1e-10)
    assert sliced_wasserstein(x, y, generator=gen(23), n_projections=16) < 0.1 < sliced_wasserstein(
        x, z, generator=gen(23), n_projections=16)


def test_bad_input():
    gm = mixture(d=2)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(torch.ones(1, dtype=D), torch.zeros((1, 2), dtype=D), -torch.eye(2, dtype=D)[None])
    with pytest.raises(ValueError, match=r"covs \[2, 2, 2\]"):
        GaussianMixture(torch.ones(2, dtype=D), torch.zeros((2, 2), dtype=D), torch.eye(2, dtype=D)[None])
    with pytest.raises(ValueError, match="x must be"):
        gm.score(torch.zeros((3, 5), dtype=D))
    with pytest.raises(ValueError, match="finite"):
        gm.log_prob(torch.full((1, 2), float("nan"), dtype=D))
    with pytest.raises(TypeError, match="generator"):
        gm.sample(3, 0)
    with pytest.raises(ValueError, match="noise_std"):
        LinearGaussianObservation(torch.ones((1, 2), dtype=D), torch.ones(1, dtype=D), 0.0)
    with pytest.raises(ValueError, match="entries"):
        LinearGaussianObservation(torch.ones((1, 2), dtype=D), torch.ones(2, dtype=D), 0.1)
    obs = LinearGaussianObservation(torch.ones((1, 3), dtype=D), torch.ones(1, dtype=D), 0.1)
    sde = VPSDE()
    with pytest.raises(ValueError, match="columns"):
        gm.posterior(obs)
    with pytest.raises(ValueError, match="columns"):
        weighted_particles(gm.exact_score(sde), sde, obs, 10, 2, steps=5, generator=gen())
    obs2 = LinearGaussianObservation(torch.ones((1, 2), dtype=D), torch.ones(1, dtype=D), 0.1)
    with pytest.raises(ValueError, match="reweighting"):
        weighted_particles(gm.exact_score(sde), sde, obs2, 10, 2, steps=5, generator=gen(), reweighting="x")
    with pytest.raises(ValueError, match="ess_threshold"):
        weighted_particles(gm.exact_score(sde), sde, obs2, 10, 2, steps=5, generator=gen(), ess_threshold=2.0)
    with pytest.raises(TypeError, match="twist"):
        twisted_smc(gm.exact_score(sde), None, sde, obs2, 10, 2, steps=5, generator=gen())
    with pytest.raises(ValueError, match="step_size"):
        dps(gm.exact_score(sde), sde, obs2, 10, 2, steps=5, generator=gen(), step_size=0.0)
    with pytest.raises(ValueError, match="beta_max"):
        VPSDE(beta_min=1.0, beta_max=0.5)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(torch.zeros((2, 2), dtype=D), torch.zeros((2, 2), dtype=D), bandwidth=0.0)
    with pytest.raises(ValueError, match="weights"):
        mmd_rbf(torch.zeros((2, 2), dtype=D), torch.zeros((2, 2), dtype=D), bandwidth=1.0, x_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="scales"):
        random_walk_metropolis(gm.log_prob, torch.zeros((2, 2), dtype=D), steps=2, scales=[0.0], generator=gen())
