"""ensembles.routing: BTM domain-posterior mixtures sum to one over the experts at every token, equal Bayes'
rule computed by brute force, reduce to the prior at the first token and to plain averaging with
'simple_avg', stay finite for extreme likelihoods; cached priors (mean and EMA); argument checks."""

import math

import pytest
import torch

from commlab.ensembles.routing import cached_prior, domain_posterior, mixture_log_probs


def random_logp(J=3, N=4, T=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(J, N, T, 5, generator=generator, dtype=torch.float64)
    return torch.log_softmax(logits, dim=-1)[..., 0]  # log-probabilities of one symbol, [J, N, T]


@pytest.mark.parametrize("prior", ["uniform", [0.2, 0.5, 0.3], "simple_avg"])
def test_mixture_weights_sum_to_one_at_every_token(prior):
    lp, weights = mixture_log_probs(random_logp(), prior)
    assert weights.shape == (3, 4, 6) and lp.shape == (4, 6)
    torch.testing.assert_close(weights.sum(dim=0), torch.ones(4, 6, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (weights >= 0).all() and (lp <= 0).all()


def test_posterior_is_bayes_rule_by_brute_force():
    logp = random_logp(seed=1)
    prior = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    weights = domain_posterior(logp, prior)
    lp, _ = mixture_log_probs(logp, prior)
    p = logp.exp()
    for n in range(4):
        for t in range(6):
            joint = prior * torch.stack([p[j, n, :t].prod() for j in range(3)])  # prior_j · p_j(x_<t)
            expected = joint / joint.sum()
            torch.testing.assert_close(weights[:, n, t], expected, rtol=0, atol=1e-12)
            torch.testing.assert_close(lp[n, t], (expected * p[:, n, t]).sum().log(), rtol=0, atol=1e-12)
    torch.testing.assert_close(weights[:, :, 0], prior[:, None].expand(3, 4), rtol=0, atol=1e-15)


def test_simple_average_is_the_mean_of_the_experts_distributions():
    logp = random_logp(seed=2)
    lp, weights = mixture_log_probs(logp, "simple_avg")
    torch.testing.assert_close(lp, logp.exp().mean(dim=0).log(), rtol=0, atol=1e-12)
    assert torch.equal(weights, torch.full_like(weights, 1 / 3))


def test_a_one_hot_prior_or_identical_experts_give_that_expert():
    logp = random_logp(seed=3)
    lp, _ = mixture_log_probs(logp, [0.0, 1.0, 0.0])
    torch.testing.assert_close(lp, logp[1], rtol=0, atol=1e-12)
    same = logp[:1].expand(3, 4, 6)
    for prior in ("uniform", "simple_avg"):
        torch.testing.assert_close(mixture_log_probs(same, prior)[0], logp[0], rtol=0, atol=1e-12)


def test_extreme_likelihoods_stay_finite_and_select_the_better_expert():
    logp = torch.full((2, 1, 50), -1.0, dtype=torch.float64)
    logp[1] = -1e4  # expert 1 is e^-9999 times worse per token
    lp, weights = mixture_log_probs(logp, "uniform")
    assert torch.isfinite(lp).all() and torch.isfinite(weights).all()
    assert weights[1, 0, 1:].max() == 0.0
    torch.testing.assert_close(lp[0, 1:], logp[0, 0, 1:], rtol=0, atol=1e-12)
    first_token = torch.tensor(-1.0 - math.log(2), dtype=torch.float64)  # the prior 1/2 times e^-1
    torch.testing.assert_close(lp[0, 0], first_token)


def test_cached_prior_is_the_mean_or_an_ema_of_the_final_posteriors():
    dev = random_logp(J=3, N=5, T=4, seed=4)
    final = torch.softmax(dev.sum(dim=2), dim=0)  # posterior after each whole sequence, uniform prior
    prior = cached_prior(dev)
    torch.testing.assert_close(prior, final.mean(dim=1), rtol=0, atol=1e-15)
    ema = torch.full((3,), 1 / 3, dtype=torch.float64)
    for n in range(5):
        ema = 0.3 * ema + 0.7 * final[:, n]
    torch.testing.assert_close(cached_prior(dev, decay=0.3), ema, rtol=0, atol=1e-15)
    for p in (prior, cached_prior(dev, decay=0.3)):
        assert abs(float(p.sum()) - 1) < 1e-12


def test_bad_input_raises():
    logp = random_logp()
    with pytest.raises(ValueError, match=r"\[J, N, T\]"):
        mixture_log_probs(logp[0])
    with pytest.raises(ValueError, match="<= 0"):
        mixture_log_probs(-logp)
    with pytest.raises(ValueError, match="3 non-negative"):
        mixture_log_probs(logp, [0.5, 0.5])
    with pytest.raises(ValueError, match="3 non-negative"):
        mixture_log_probs(logp, [0.5, 0.6, -0.1])
    with pytest.raises(ValueError, match="prior must be"):
        mixture_log_probs(logp, "cached")
    with pytest.raises(ValueError, match="decay"):
        cached_prior(logp, decay=1.0)
