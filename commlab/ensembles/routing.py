"""Mixtures over language-model experts weighted by the domain posterior (Branch-Train-Merge /
HDEE inference).

Given J experts and per-token log-likelihoods ``logp[j, n, t] = log p_j(x_t | x_<t)`` of N
sequences of T tokens, the ensemble predicts (Li et al. 2022, BTM, eqs. 1–2)::

    p(x_t | x_<t) = Σ_j p_j(x_t | x_<t) · P(D = j | x_<t)
    P(D = j | x_<t) ∝ p_j(x_<t) · prior_j,         p_j(x_<t) = Π_{s<t} p_j(x_s | x_<s)

so at the first token the weights are the prior, and they move toward the experts that explained the
sequence so far. Everything is computed in log space (log-sum-exp), so a sequence that one expert finds
e^-10⁴ times less likely than another gives a weight of exactly 0, never a NaN.

Priors (:func:`mixture_log_probs` ``prior=``): ``"uniform"`` (1/J), a given vector, or one
estimated on development sequences of the target domain by :func:`cached_prior`; ``"simple_avg"`` is
not a prior but the plain average of the experts' distributions, weights 1/J at every token.

Shapes: ``logp`` ``[J, N, T]`` (float, nats); weights ``[J, N, T]``; mixture log-probabilities ``[N, T]``.
"""

from __future__ import annotations

import math

import torch

from commlab._checks import check_fraction

PRIORS = ("uniform", "simple_avg")
"""The named priors of :func:`mixture_log_probs` (a vector of J probabilities is the third choice)."""


def _check_logp(logp) -> torch.Tensor:
    if not isinstance(logp, torch.Tensor) or logp.dim() != 3 or not logp.is_floating_point() or 0 in logp.shape:
        raise ValueError(f"logp must be a float tensor [J, N, T] of per-token log-likelihoods, got "
                         f"{getattr(logp, 'dtype', type(logp).__name__)} {tuple(getattr(logp, 'shape', ()))}")
    if torch.isnan(logp).any() or (logp > 1e-6).any():
        raise ValueError("logp must hold log-probabilities (<= 0, no NaN)")
    return logp.double()


def _log_prior(prior, J: int) -> torch.Tensor:
    if isinstance(prior, str):
        if prior != "uniform":
            raise ValueError(f"prior must be 'uniform', 'simple_avg' or a vector of {J} probabilities, got {prior!r}")
        return torch.full((J,), -math.log(J), dtype=torch.float64)
    prior = torch.as_tensor(prior, dtype=torch.float64)
    valid = prior.shape == (J,) and bool((prior >= 0).all()) and bool(torch.isfinite(prior).all())
    if not valid or abs(float(prior.sum()) - 1) > 1e-6:
        raise ValueError(f"prior must be {J} non-negative probabilities summing to 1, got {prior.tolist()}")
    return prior.log()


def domain_posterior(logp: torch.Tensor, prior="uniform") -> torch.Tensor:
    """Weights ``[J, N, T]``: P(D = j | x_<t) ∝ prior_j · Π_{s<t} p_j(x_s | x_<s), summing to 1 over j.

    Args:
        logp: ``[J, N, T]`` per-token log-likelihoods of each expert (nats).
        prior: ``"uniform"`` or J probabilities.

    Returns:
        float64 ``[J, N, T]``; ``[:, :, 0]`` is the prior.
    """
    logp = _check_logp(logp)
    J = logp.shape[0]
    past = torch.cumsum(logp, dim=2) - logp                                   # Σ_{s<t} log p_j(x_s | x_<s)
    joint = _log_prior(prior, J).view(J, 1, 1) + past                         # log prior_j + log p_j(x_<t)
    return torch.softmax(joint, dim=0)                                         # normalise over j (log-sum-exp)


def mixture_log_probs(logp: torch.Tensor, prior="uniform") -> tuple[torch.Tensor, torch.Tensor]:
    """The ensemble's per-token log-probabilities and the weights it used.

    Args:
        logp: ``[J, N, T]`` per-token log-likelihoods of each expert (nats).
        prior: ``"uniform"``, J probabilities (e.g. from :func:`cached_prior`), or ``"simple_avg"``
            (no posterior: p = (1/J) Σ_j p_j at every token).

    Returns:
        ``(log p(x_t | x_<t) [N, T], weights [J, N, T])``, float64.
    """
    logp = _check_logp(logp)
    if isinstance(prior, str) and prior == "simple_avg":
        weights = torch.full_like(logp, 1.0 / logp.shape[0])
    else:
        weights = domain_posterior(logp, prior)
    # log Σ_j w_j p_j in log space; log 0 = -inf terms drop out of the log-sum-exp
    return torch.logsumexp(weights.log() + logp, dim=0), weights


def cached_prior(dev_logp: torch.Tensor, *, decay: float | None = None) -> torch.Tensor:
    """A domain prior ``[J]`` estimated on N development sequences ``dev_logp`` ``[J, N, T]`` of the target domain.

    Each sequence's posterior after all its T tokens, with a uniform prior,
    π_n,j ∝ Π_t p_j(x_n,t | x_n,<t), is combined over the sequences:

    * ``decay=None`` (commlab's default): the mean, prior_j = (1/N) Σ_n π_n,j;
    * ``decay=λ`` in (0, 1): an exponential moving average in sequence order, starting from 1/J,
      prior ← λ·prior + (1 − λ)·π_n (a reconstruction of BTM's "exponential decay"; unverified).

    Returns:
        float64 ``[J]``, non-negative, summing to 1.
    """
    logp = _check_logp(dev_logp)
    posterior = torch.softmax(logp.sum(dim=2), dim=0)                          # π_n,j, [J, N]
    if decay is None:
        return posterior.mean(dim=1)
    decay = check_fraction("decay", decay)
    prior = torch.full((logp.shape[0],), 1.0 / logp.shape[0], dtype=torch.float64)
    for n in range(posterior.shape[1]):
        prior = decay * prior + (1 - decay) * posterior[:, n]
    return prior
