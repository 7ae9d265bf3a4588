"""Posterior sampling with a diffusion prior on a toy with exact answers: a Gaussian-mixture prior,
its exact noised marginals and scores, a linear-Gaussian observation, and three samplers.

"Solving Inverse Problems via Diffusion-Based Priors: An Approximation-Free Ensemble Sampling Approach"
(Chen, Ren, Min, Ying, Izzo, 2025; arXiv 2506.03979). Everything is torch float64 ``[N, d]``; every
random draw takes an explicit ``torch.Generator``.

* :class:`VPSDE`: forward diffusion ``dx = −½β(t)x dt + √β(t) dW`` on ``t ∈ [0, 1]`` with linear
  ``β(t) = β_min + t(β_max − β_min)``, so ``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε``,
  ``ᾱ_t = exp(−β_min t − ½(β_max − β_min)t²)``.
* :class:`GaussianMixture`: ``p(x) = Σ_k π_k N(x; m_k, C_k)``; :meth:`~GaussianMixture.noised` is the
  exact marginal ``p_t = Σ_k π_k N(√ᾱ_t m_k, ᾱ_t C_k + (1 − ᾱ_t) I)`` and :meth:`~GaussianMixture.score`
  its exact ``∇ log p``; :meth:`~GaussianMixture.posterior` the exact posterior under a
  :class:`LinearGaussianObservation` ``y = A x + η``, ``η ~ N(0, σ_y² I)`` (again a mixture).
* :func:`weighted_particles`: the paper's sampler (AFDPS, reconstructed). With ``μ_y = −log p(y | x)``
  and the generative process's marginals ``p_s`` (``s`` generative time), ``Q_y(x, s) = p_s(x) e^{−μ_y(x)}``
  solves ``∂_s Q = −∇·([c_H − V²∇μ_y] Q) + ½V² ΔQ + r Q`` with
  ``c_H = ½β x + ½(β + V²) ∇log p_t`` (the prior's generative drift at forward time ``t = 1 − s``)
  and the reweighting rate ``r = −c_H·∇μ_y + ½V²(|∇μ_y|² − Δμ_y)``; particles follow the drift and
  diffusion, their log-weights integrate ``r``, and they are resampled when the ESS drops below a
  fraction of N. ``Q_y(·, 1) ∝ p(x) p(y | x)`` is the posterior, with no approximation but the score,
  the time step and N.
* :func:`dps`: diffusion posterior sampling (Chung et al., 2023, Algorithm 1): the prior's reverse SDE
  plus the step ``−ζ/‖y − A x̂_0‖ · ∇_x ‖y − A x̂_0(x)‖²`` through the Tweedie estimate
  ``x̂_0 = (x + (1 − ᾱ_t) ∇log p_t(x)) / √ᾱ_t`` (the heuristic approximation the paper removes).
* :func:`twisted_smc`: commlab's reference sampler, not the paper's: twisted SMC (Wu et al., 2023) along the
  prior's discretised reverse SDE with an intermediate likelihood ``L_t(x) = ∫ p(y | x_0) p(x_0 | x_t = x) dx_0``
  as the twist (:meth:`GaussianMixture.twist` gives the exact one, available only for this toy).
* :func:`reverse_sde`: the plain reverse SDE for any score (with a posterior mixture's exact score it is
  an oracle that has only the time-discretisation error).
* :func:`fit_score`: a learned score, a small MLP trained by denoising score matching on prior draws.
* :func:`random_walk_metropolis`, :func:`effective_sample_size`, :func:`systematic_resample`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from commlab._checks import check_generator, check_int, check_positive, check_real_number
from commlab.seeding import seeded_init

Score = Callable[[torch.Tensor, float], torch.Tensor]
DTYPE = torch.float64


def _matrix(name: str, value, ndim: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    value = value.to(DTYPE)
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite")
    return value


def _points(x, d: int) -> torch.Tensor:
    x = _matrix("x", x, 2)
    if x.shape[1] != d:
        raise ValueError(f"x must be [N, {d}], got shape {tuple(x.shape)}")
    return x



class VPSDE:
    """Variance-preserving forward SDE ``dx = −½β(t) x dt + √β(t) dW``, ``t ∈ [0, 1]``, linear β."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got {beta_max} < {beta_min}")

    def beta(self, t: float) -> float:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def alpha_bar(self, t: float) -> float:
        """``ᾱ_t = exp(−∫_0^t β)``."""
        return math.exp(-self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t * t)

    def grid(self, steps: int, t_min: float = 1e-3) -> torch.Tensor:
        """``steps + 1`` forward times from 1 down to ``t_min`` (uniform), the reverse samplers' grid."""
        check_int("steps", steps, low=1)
        check_real_number("t_min", t_min, low=0.0, high=1.0)
        if not t_min < 1.0:
            raise ValueError(f"t_min must be < 1, got {t_min}")
        return torch.linspace(1.0, t_min, steps + 1, dtype=DTYPE)

    def perturb(self, x0: torch.Tensor, t: float, generator: torch.Generator) -> torch.Tensor:
        """A draw of ``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε`` for ``x0`` ``[N, d]``."""
        x0 = _matrix("x0", x0, 2)
        a = self.alpha_bar(t)
        eps = torch.randn(x0.shape, dtype=DTYPE, generator=check_generator(generator))
        return math.sqrt(a) * x0 + math.sqrt(1 - a) * eps


@dataclass
class LinearGaussianObservation:
    """``y = A x + η``, ``η ~ N(0, σ_y² I_m)``; ``A`` ``[m, d]``, ``y`` ``[m]``, ``noise_std`` σ_y > 0."""

    A: torch.Tensor
    y: torch.Tensor
    noise_std: float

    def __post_init__(self):
        self.A = _matrix("A", self.A, 2)
        self.y = _matrix("y", self.y, 1)
        if self.y.shape[0] != self.A.shape[0]:
            raise ValueError(f"y must have {self.A.shape[0]} entries (rows of A), got {self.y.shape[0]}")
        self.noise_std = check_positive("noise_std", self.noise_std)

    def neg_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``μ_y(x) = ‖y − A x‖² / (2σ_y²)`` (constants dropped), ``[N]``."""
        r = self.y - x @ self.A.T
        return (r * r).sum(1) / (2 * self.noise_std**2)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``∇μ_y = Aᵀ(A x − y) / σ_y²``, ``[N, d]``."""
        return (x @ self.A.T - self.y) @ self.A / self.noise_std**2

    def laplacian(self) -> float:
        """``Δμ_y = tr(AᵀA) / σ_y²`` (a constant)."""
        return float((self.A * self.A).sum()) / self.noise_std**2


@dataclass(frozen=True)
class Twist:
    """An intermediate likelihood ``L_t(x) ≈ p(y | x_t = x)`` for :func:`twisted_smc`: ``log(x, t)`` ``[N]``
    and its gradient ``grad(x, t)`` ``[N, d]`` at forward time ``t``."""

    log: Callable[[torch.Tensor, float], torch.Tensor]
    grad: Callable[[torch.Tensor, float], torch.Tensor]


class GaussianMixture:
    """``p(x) = Σ_k π_k N(x; m_k, C_k)``: ``weights`` ``[K]`` (normalised), ``means`` ``[K, d]``,
    ``covs`` ``[K, d, d]`` (symmetric positive definite)."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor):
        weights, means, covs = _matrix("weights", weights, 1), _matrix("means", means, 2), _matrix("covs", covs, 3)
        K, d = means.shape
        if weights.shape != (K,) or covs.shape != (K, d, d):
            raise ValueError(f"weights must be [{K}] and covs [{K}, {d}, {d}], got {tuple(weights.shape)} "
                             f"and {tuple(covs.shape)}")
        if bool((weights < 0).any()) or not float(weights.sum()) > 0:
            raise ValueError("weights must be non-negative with a positive sum")
        if not torch.allclose(covs, covs.transpose(1, 2)):
            raise ValueError("covs must be symmetric")
        chol, info = torch.linalg.cholesky_ex(covs)
        if bool((info != 0).any()):
            raise ValueError("covs must be positive definite")
        self.weights, self.means, self.covs, self._chol = weights / weights.sum(), means, covs, chol
        self.d = d

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log π_k + log N(x; m_k, C_k)``, ``[N, K]``."""
        x = _points(x, self.d)
        diff = x[None, :, :] - self.means[:, None, :]                       # [K, N, d]
        z = torch.linalg.solve_triangular(self._chol, diff.transpose(1, 2), upper=False)  # [K, d, N]
        half_logdet = torch.log(torch.diagonal(self._chol, dim1=1, dim2=2)).sum(1)        # [K]
        logn = -0.5 * (z * z).sum(1) - half_logdet[:, None] - 0.5 * self.d * math.log(2 * math.pi)
        return (torch.log(self.weights)[:, None] + logn).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` by log-sum-exp, ``[N]``."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """``P(k | x) = π_k N(x; m_k, C_k) / p(x)``, ``[N, K]``."""
        return torch.softmax(self.component_log_prob(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``∇ log p(x) = Σ_k P(k | x) C_k⁻¹ (m_k − x)``, ``[N, d]``."""
        resp = self.responsibilities(x)                                      # [N, K]
        diff = (self.means[:, None, :] - x[None, :, :]).transpose(1, 2)      # [K, d, N]
        prec_diff = torch.cholesky_solve(diff, self._chol)                   # [K, d, N]
        return torch.einsum("nk,kdn->nd", resp, prec_diff)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact draws, ``[n, d]``."""
        check_int("n", n, low=1)
        generator = check_generator(generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn((n, self.d), dtype=DTYPE, generator=generator)
        return self.means[k] + torch.einsum("nij,nj->ni", self._chol[k], eps)

    def noised(self, sde: VPSDE, t: float) -> GaussianMixture:
        """The exact VP marginal at time t: ``Σ_k π_k N(√ᾱ_t m_k, ᾱ_t C_k + (1 − ᾱ_t) I)``."""
        a = sde.alpha_bar(t)
        eye = torch.eye(self.d, dtype=DTYPE)
        return GaussianMixture(self.weights, math.sqrt(a) * self.means, a * self.covs + (1 - a) * eye)

    def exact_score(self, sde: VPSDE) -> Score:
        """``(x, t) ↦ ∇ log p_t(x)`` along the forward VP path (exact)."""
        return lambda x, t: self.noised(sde, t).score(x)

    def posterior(self, obs: LinearGaussianObservation) -> GaussianMixture:
        """The exact posterior ``p(x | y) = Σ_k w_k N(x; m_k', C_k')`` with ``S_k = A C_k Aᵀ + σ_y² I``,
        ``w_k ∝ π_k N(y; A m_k, S_k)``, ``m_k' = m_k + C_k Aᵀ S_k⁻¹ (y − A m_k)``,
        ``C_k' = C_k − C_k Aᵀ S_k⁻¹ A C_k``."""
        A = obs.A
        if A.shape[1] != self.d:
            raise ValueError(f"A must have {self.d} columns, got shape {tuple(A.shape)}")
        m = A.shape[0]
        S = A @ self.covs @ A.T + obs.noise_std**2 * torch.eye(m, dtype=DTYPE)   # [K, m, m]
        CAt = self.covs @ A.T                                                    # [K, d, m]
        gain = torch.linalg.solve(S, CAt.transpose(1, 2)).transpose(1, 2)        # C Aᵀ S⁻¹, [K, d, m]
        resid = obs.y[None, :] - self.means @ A.T                                # [K, m]
        chol_s = torch.linalg.cholesky(S)
        z = torch.linalg.solve_triangular(chol_s, resid[:, :, None], upper=False)[:, :, 0]
        log_evidence = (-0.5 * (z * z).sum(1) - torch.log(torch.diagonal(chol_s, dim1=1, dim2=2)).sum(1)
                        - 0.5 * m * math.log(2 * math.pi))
        weights = torch.softmax(torch.log(self.weights) + log_evidence, dim=0)
        means = self.means + torch.einsum("kdm,km->kd", gain, resid)
        covs = self.covs - gain @ A @ self.covs
        return GaussianMixture(weights, means, 0.5 * (covs + covs.transpose(1, 2)))

    def twist(self, sde: VPSDE, obs: LinearGaussianObservation) -> Twist:
        """The exact intermediate likelihood of this prior, ``L_t(x) = ∫ p(y | x_0) p(x_0 | x_t = x) dx_0
        = p_t(x | y) p(y) / p_t(x)`` (``p_t(· | y)``: the posterior mixture noised to time t), so
        ``log L_t = log p_t(x | y) − log p_t(x) + log p(y)`` and ``∇log L_t = ∇log p_t(x | y) − ∇log p_t(x)``;
        at ``t = 0`` it is ``log N(y; A x, σ_y² I)``."""
        post, log_z = self.posterior(obs), self.log_evidence(obs)
        return Twist(lambda x, t: post.noised(sde, t).log_prob(x) - self.noised(sde, t).log_prob(x) + log_z,
                     lambda x, t: post.noised(sde, t).score(x) - self.noised(sde, t).score(x))

    def log_evidence(self, obs: LinearGaussianObservation) -> float:
        """``log p(y) = log Σ_k π_k N(y; A m_k, A C_k Aᵀ + σ_y² I)``."""
        S = obs.A @ self.covs @ obs.A.T + obs.noise_std**2 * torch.eye(obs.A.shape[0], dtype=DTYPE)
        marg = GaussianMixture(self.weights, self.means @ obs.A.T, S)
        return float(marg.log_prob(obs.y[None, :])[0])


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """``ESS = (Σ w)² / Σ w²`` from unnormalised log-weights ``[N]`` (in ``[1, N]``)."""
    lw = _matrix("log_weights", log_weights, 1)
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))


def systematic_resample(log_weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Systematic resampling: ``N`` ancestor indices (int64 ``[N]``) with ``E[#copies of i] = N w_i``."""
    lw = _matrix("log_weights", log_weights, 1)
    n = lw.shape[0]
    w = torch.softmax(lw, 0)
    u = (torch.rand((), dtype=DTYPE, generator=check_generator(generator)) + torch.arange(n, dtype=DTYPE)) / n
    return torch.searchsorted(torch.cumsum(w, 0), u).clamp(max=n - 1)


@dataclass
class ParticleResult:
    """Output of :func:`weighted_particles`: ``x`` ``[N, d]``, normalised ``log_weights`` ``[N]``
    (log-sum-exp 0), ``ess`` ``[steps]`` (before any resampling at each step) and ``resamples``."""

    x: torch.Tensor
    log_weights: torch.Tensor
    ess: torch.Tensor
    resamples: int
    weights: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.weights = torch.exp(self.log_weights)


def _check_sampler(n, steps, obs, d):
    check_int("n", n, low=2)
    check_int("steps", steps, low=1)
    if not isinstance(obs, LinearGaussianObservation):
        raise TypeError(f"obs must be a LinearGaussianObservation, got {type(obs).__name__}")
    check_int("d", d, low=1)
    if obs.A.shape[1] != d:
        raise ValueError(f"obs.A must have d = {d} columns, got shape {tuple(obs.A.shape)}")


def weighted_particles(score: Score, sde: VPSDE, obs: LinearGaussianObservation, n: int, d: int, *,
                       steps: int, generator: torch.Generator, diffusion_scale: float = 1.0,
                       ess_threshold: float = 0.5, t_min: float = 1e-3,
                       reweighting: str = "transition") -> ParticleResult:
    """The paper's weighted-particle posterior sampler (AFDPS), discretised in generative time.

    ``score(x, t)``: the prior's (possibly learned or perturbed) score at forward time ``t``.
    Diffusion ``V = diffusion_scale · √β`` (1: the reverse SDE's; 0: the probability-flow ODE's).
    Start: exact draws from ``Q_y(·, 0) ∝ N(0, I) e^{−μ_y}`` (Gaussian: precision ``I + AᵀA/σ_y²``).
    Each step of length ``h`` at forward time ``t`` moves the particles along the modified PDE's transport
    (drift ``c_H − V²∇μ_y``, diffusion ``V``) and reweights them by ``r``, in one of two discretisations
    (``reweighting``):

    * ``"transition"`` (default): ``μ_y`` is quadratic (``∇μ_y = P x − b``, ``P = AᵀA/σ_y²``,
      ``b = Aᵀy/σ_y²``), so the Euler step of the prior ``N(x'; m, V²h I)``, ``m = x + h c_H(x)``, times
      ``e^{−μ_y(x')}`` is a Gaussian in ``x'``: the particles move by an exact draw from it,
      ``x' ~ N((I + hV²P)⁻¹(m + hV² b), hV² (I + hV²P)⁻¹)`` (the drift ``−V²∇μ_y`` taken implicitly), and
      the log-weights gain the step's exact Radon–Nikodym factor ``μ_y(x) + log ∫ N(x'; m, V²h) e^{−μ_y(x')} dx'
      = μ_y(x) − ½ (y − A m)ᵀ (σ_y² I + hV² AAᵀ)⁻¹ (y − A m) + const``. Its ``h → 0`` limit is ``r ds``
      (Itô: ``r ds = −dμ_y − ½V²|∇μ_y|² ds + V ∇μ_y·dW``), and the weighted particles target
      ``p̃(x) e^{−μ_y(x)}`` exactly, ``p̃`` the Euler prior chain's own output law;
    * ``"rate"``: the explicit Euler–Maruyama move ``x' = x + h(c_H − V²∇μ_y) + V√h ξ`` with the left-point
      rule ``log w += h · r(x)`` (unstable once ``hV²‖P‖ > 2``).

    Resample (systematic) when ESS < ``ess_threshold · N``.
    """
    _check_sampler(n, steps, obs, d)
    v = check_real_number("diffusion_scale", diffusion_scale, low=0.0)
    threshold = check_real_number("ess_threshold", ess_threshold, low=0.0, high=1.0)
    if reweighting not in ("transition", "rate"):
        raise ValueError(f"reweighting must be 'transition' or 'rate', got {reweighting!r}")
    generator = check_generator(generator)
    eye, eye_m = torch.eye(d, dtype=DTYPE), torch.eye(obs.A.shape[0], dtype=DTYPE)
    P = obs.A.T @ obs.A / obs.noise_std**2
    b = obs.A.T @ obs.y / obs.noise_std**2                                        # ∇μ_y = P x − b
    chol = torch.linalg.cholesky(eye + P)                                        # Q_y(·,0) = N((I+P)⁻¹b, (I+P)⁻¹)
    mean0 = torch.cholesky_solve(b[:, None], chol)[:, 0]
    eps = torch.randn((n, d), dtype=DTYPE, generator=generator)
    x = mean0 + torch.linalg.solve_triangular(chol.T, eps.T, upper=True).T
    lw = torch.zeros(n, dtype=DTYPE)
    lap = obs.laplacian()
    grid = sde.grid(steps, t_min)
    ess, resamples = torch.empty(steps, dtype=DTYPE), 0
    for i in range(steps):
        t, h = float(grid[i]), float(grid[i] - grid[i + 1])
        beta = sde.beta(t)
        V2 = v * v * beta
        c_h = 0.5 * beta * x + 0.5 * (beta + V2) * score(x, t)                   # prior's generative drift
        prior_mean = x + h * c_h
        xi = torch.randn((n, d), dtype=DTYPE, generator=generator)
        if reweighting == "rate":
            g = x @ P - b
            lw = lw + h * (-(c_h * g).sum(1) + 0.5 * V2 * ((g * g).sum(1) - lap))  # r = −c_H·∇μ + ½V²(|∇μ|² − Δμ)
            x_new = prior_mean - h * V2 * g + math.sqrt(V2 * h) * xi
        else:
            cov = torch.linalg.inv(eye / (h * V2) + P) if V2 > 0 else None       # hV²(I + hV²P)⁻¹
            S = obs.noise_std**2 * eye_m + h * V2 * (obs.A @ obs.A.T)           # σ_y² I + hV² AAᵀ
            resid = obs.y - prior_mean @ obs.A.T
            lw = lw + obs.neg_log_likelihood(x) - 0.5 * (resid * torch.linalg.solve(S, resid.T).T).sum(1)
            if cov is None:
                x_new = prior_mean
            else:
                x_new = (prior_mean / (h * V2) + b) @ cov + xi @ torch.linalg.cholesky(cov).T
        x = x_new
        ess[i] = effective_sample_size(lw)
        if ess[i] < threshold * n:
            idx = systematic_resample(lw, generator)
            x, lw, resamples = x[idx], torch.zeros(n, dtype=DTYPE), resamples + 1
    return ParticleResult(x, lw - torch.logsumexp(lw, 0), ess, resamples)


def twisted_smc(score: Score, twist: Twist, sde: VPSDE, obs: LinearGaussianObservation, n: int, d: int, *,
                steps: int, generator: torch.Generator, ess_threshold: float = 0.5,
                t_min: float = 1e-3) -> ParticleResult:
    """Twisted SMC along the prior's Euler–Maruyama reverse chain (Wu et al., 2023; commlab's reference).

    Targets ``γ_i(x_{0:i}) ∝ p̃(x_{0:i}) L_{t_i}(x_i)``, ``p̃`` the chain ``x' ~ N(m, βh I)``,
    ``m = x + h(½βx + β s(x, t))`` started at ``N(0, I)``, and ``L_{t_n}`` replaced by the exact likelihood
    ``N(y; A x, σ_y² I)`` at the end, so the weighted particles target ``p̃(x) p(y | x)`` (the same law as
    :func:`weighted_particles`). Proposal ``x' ~ N(m + hβ ∇log L_t(x), βh I)``; weight increment
    ``log p̃(x' | x) − log q(x' | x) + log L_{t'}(x') − log L_t(x)``. Initial weights ``L_1(x)``.
    With the exact twist the proposal is the posterior's own reverse SDE and the weights only correct the
    time discretisation. Resample (systematic) when ESS < ``ess_threshold · N``.
    """
    _check_sampler(n, steps, obs, d)
    if not isinstance(twist, Twist):
        raise TypeError(f"twist must be a Twist, got {type(twist).__name__}")
    threshold = check_real_number("ess_threshold", ess_threshold, low=0.0, high=1.0)
    generator = check_generator(generator)
    grid = sde.grid(steps, t_min)
    m = obs.A.shape[0]
    log_norm = -0.5 * m * math.log(2 * math.pi * obs.noise_std**2)
    x = torch.randn((n, d), dtype=DTYPE, generator=generator)
    log_l = twist.log(x, float(grid[0]))
    lw = log_l.clone()
    ess, resamples = torch.empty(steps, dtype=DTYPE), 0
    for i in range(steps):
        t, h = float(grid[i]), float(grid[i] - grid[i + 1])
        beta = sde.beta(t)
        prior_mean = x + h * (0.5 * beta * x + beta * score(x, t))
        shift = h * beta * twist.grad(x, t)                                       # guidance toward y
        noise = math.sqrt(beta * h) * torch.randn((n, d), dtype=DTYPE, generator=generator)
        x = prior_mean + shift + noise
        log_ratio = (((noise * noise).sum(1) - ((noise + shift) ** 2).sum(1)) / (2 * beta * h))  # log p̃/q
        new_log_l = (twist.log(x, float(grid[i + 1])) if i + 1 < steps
                     else log_norm - obs.neg_log_likelihood(x))                   # exact p(y | x) at the end
        lw = lw + log_ratio + new_log_l - log_l
        log_l = new_log_l
        ess[i] = effective_sample_size(lw)
        if ess[i] < threshold * n:
            idx = systematic_resample(lw, generator)
            x, log_l, lw, resamples = x[idx], log_l[idx], torch.zeros(n, dtype=DTYPE), resamples + 1
    return ParticleResult(x, lw - torch.logsumexp(lw, 0), ess, resamples)


def _reverse_step(x, score_x, sde, t, h, generator):
    beta = sde.beta(t)
    noise = torch.randn(x.shape, dtype=DTYPE, generator=generator)
    return x + h * (0.5 * beta * x + beta * score_x) + math.sqrt(beta * h) * noise


def reverse_sde(score: Score, sde: VPSDE, n: int, d: int, *, steps: int, generator: torch.Generator,
                t_min: float = 1e-3) -> torch.Tensor:
    """Euler–Maruyama on the reverse SDE ``dx = [½βx + β ∇log p_t] ds + √β dW̄`` from ``N(0, I)``, ``[n, d]``."""
    check_int("n", n, low=1)
    check_int("d", d, low=1)
    generator = check_generator(generator)
    grid = sde.grid(steps, t_min)
    x = torch.randn((n, d), dtype=DTYPE, generator=generator)
    for i in range(steps):
        t, h = float(grid[i]), float(grid[i] - grid[i + 1])
        x = _reverse_step(x, score(x, t), sde, t, h, generator)
    return x


def dps(score: Score, sde: VPSDE, obs: LinearGaussianObservation, n: int, d: int, *, steps: int,
        generator: torch.Generator, step_size: float = 1.0, t_min: float = 1e-3) -> torch.Tensor:
    """Diffusion posterior sampling (Chung et al. 2023, Alg. 1) on the VP reverse SDE, ``[n, d]``.

    Each step: ``x' = x + h(½βx + β s(x)) + √(βh) ξ``; then
    ``x ← x' − ζ/‖y − A x̂_0(x)‖ · ∇_x ‖y − A x̂_0(x)‖²`` with the Tweedie estimate
    ``x̂_0 = (x + (1 − ᾱ_t) s(x, t)) / √ᾱ_t`` (ζ = ``step_size``, gradient by autograd)."""
    _check_sampler(n, steps, obs, d)
    zeta = check_positive("step_size", step_size)
    generator = check_generator(generator)
    grid = sde.grid(steps, t_min)
    x = torch.randn((n, d), dtype=DTYPE, generator=generator)
    for i in range(steps):
        t, h = float(grid[i]), float(grid[i] - grid[i + 1])
        a = sde.alpha_bar(t)
        xg = x.detach().requires_grad_(True)
        s = score(xg, t)
        x0_hat = (xg + (1 - a) * s) / math.sqrt(a)                              # Tweedie
        norms = (obs.y - x0_hat @ obs.A.T).norm(dim=1)                          # ‖y − A x̂_0‖, [n]
        (grad,) = torch.autograd.grad((norms * norms).sum(), xg)
        with torch.no_grad():
            x = _reverse_step(x, s.detach(), sde, t, h, generator)
            x = x - zeta * grad / norms.detach().clamp_min(1e-12)[:, None]
    return x.detach()


def fit_score(samples: torch.Tensor, sde: VPSDE, *, generator: torch.Generator, hidden: int = 128,
              steps: int = 2000, batch_size: int = 512, lr: float = 2e-3, t_min: float = 1e-3) -> Score:
    """A learned score ``s_θ(x, t) = −ε_θ(x, t) / √(1 − ᾱ_t)`` from prior draws ``samples`` ``[M, d]``.

    ``ε_θ``: MLP ``[x, t] → hidden → hidden → d`` (SiLU), trained with Adam (``lr``, ``steps`` minibatches of
    ``batch_size``) on denoising score matching (Vincent, 2011; Ho et al., 2020):
    ``E_{x_0, t ~ U(t_min, 1), ε} ‖ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t) − ε‖²``. Initial weights and every minibatch
    come from ``generator``; the returned callable evaluates without gradients to the parameters."""
    x0 = _matrix("samples", samples, 2)
    check_int("hidden", hidden, low=1)
    check_int("steps", steps, low=1)
    check_int("batch_size", batch_size, low=1)
    lr = check_positive("lr", lr)
    check_real_number("t_min", t_min, low=0.0, high=1.0)
    generator = check_generator(generator)
    d = x0.shape[1]
    with seeded_init(int(torch.randint(2**62, (), generator=generator))):
        net = torch.nn.Sequential(torch.nn.Linear(d + 1, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                                  torch.nn.SiLU(), torch.nn.Linear(hidden, d)).to(DTYPE)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def sigma(t):                                                                # √(1 − ᾱ_t), [B, 1]
        return torch.sqrt(1 - torch.exp(-sde.beta_min * t - 0.5 * (sde.beta_max - sde.beta_min) * t * t))

    for _ in range(steps):
        idx = torch.randint(x0.shape[0], (batch_size,), generator=generator)
        t = t_min + (1 - t_min) * torch.rand((batch_size, 1), dtype=DTYPE, generator=generator)
        eps = torch.randn((batch_size, d), dtype=DTYPE, generator=generator)
        s_t = sigma(t)
        xt = torch.sqrt(1 - s_t * s_t) * x0[idx] + s_t * eps                     # x_t = √ᾱ x_0 + √(1 − ᾱ) ε
        loss = (net(torch.cat([xt, t], 1)) - eps).square().sum(1).mean()         # ‖ε_θ − ε‖²
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.requires_grad_(False)

    def score(x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0], 1), float(t), dtype=DTYPE)
        return -net(torch.cat([x, tt], 1)) / sigma(tt)
    return score


def random_walk_metropolis(log_density: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *,
                           steps: int, scales, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Parallel random-walk Metropolis chains from ``x0`` ``[C, d]``: each step proposes
    ``x + σ ξ`` with σ drawn uniformly from ``scales`` (a symmetric mixture of Gaussian walks) and accepts
    with probability ``min(1, π(x')/π(x))``. Returns the chains ``[steps, C, d]`` and the acceptance rate."""
    x = _matrix("x0", x0, 2)
    check_int("steps", steps, low=1)
    scales = torch.as_tensor(scales, dtype=DTYPE).reshape(-1)
    if scales.numel() == 0 or bool((scales <= 0).any()) or not bool(torch.isfinite(scales).all()):
        raise ValueError(f"scales must be positive finite numbers, got {scales.tolist()}")
    generator = check_generator(generator)
    lp = log_density(x)
    out, accepted = torch.empty((steps, *x.shape), dtype=DTYPE), 0
    for i in range(steps):
        sigma = scales[torch.randint(scales.numel(), (x.shape[0], 1), generator=generator)]
        prop = x + sigma * torch.randn(x.shape, dtype=DTYPE, generator=generator)
        lp_prop = log_density(prop)
        accept = torch.log(torch.rand(x.shape[0], dtype=DTYPE, generator=generator)) < lp_prop - lp
        x = torch.where(accept[:, None], prop, x)
        lp = torch.where(accept, lp_prop, lp)
        out[i], accepted = x, accepted + int(accept.sum())
    return out, accepted / (steps * x.shape[0])


def mode_weight_error(mixture: GaussianMixture, x: torch.Tensor, weights: torch.Tensor | None = None) -> float:
    """Total variation ``½ Σ_k |ŵ_k − π_k|`` between the mixture's weights and the samples' mode weights
    ``ŵ_k = Σ_i w_i P(k | x_i)`` (soft assignment by responsibility; unbiased for exact samples).
    ``weights`` ``[N]`` (normalised here) default to uniform."""
    resp = mixture.responsibilities(x)
    if weights is None:
        w_hat = resp.mean(0)
    else:
        weights = _matrix("weights", weights, 1)
        if weights.shape[0] != x.shape[0] or bool((weights < 0).any()) or not float(weights.sum()) > 0:
            raise ValueError(f"weights must be [{x.shape[0]}] non-negative with a positive sum")
        w_hat = (weights / weights.sum()) @ resp
    return 0.5 * float((w_hat - mixture.weights).abs().sum())
