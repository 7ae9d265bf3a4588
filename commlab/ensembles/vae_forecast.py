"""A conditional-VAE ensemble emulator of a one-step forecast map, trained with L1 + KL or with the
CRPS + KL objective of FuXi-ENS (Zhong et al., 2024), and a deterministic reference emulator.

Model (K state variables, latent dimension D; every density diagonal Gaussian)::

    prior      p(z | x_t)           = N(μ_p(x_t), diag σ_p(x_t)²)                       (1)
    posterior  q(z | x_t, x_{t+Δ})  = N(μ_q(x_t, x_{t+Δ}), diag σ_q²)                    (2)
    decoder    x̂_{t+Δ} = x_t + s_Δ · g(x_t, z)                                          (3)
    z = μ + σ ⊙ ε,  ε ~ N(0, I) from an explicit generator (reparameterisation)          (4)
    KL(q ‖ p) = Σ_d [ln σ_p/σ_q + (σ_q² + (μ_q − μ_p)²)/(2σ_p²) − ½]                      (5)

The networks see standardised inputs, ``(x − x_mean)/x_std`` and ``(x_{t+Δ} − x_t)/s_Δ``, and g
predicts the increment in units of ``s_Δ`` (``step_std``). The two training objectives, per batch of
B pairs, are in those same increment units, averaged over the K variables and the batch, with the
KL (5) summed over the D latent dimensions and averaged over the batch:

* ``"l1"`` (the usual VAE recipe, loss A): ``mean |x̂ − x_{t+Δ}| / s_Δ + β·KL``, one z ~ q per pair;
* ``"crps"`` (FuXi-ENS, loss B): ``mean fairCRPS({x̂⁽ⁱ⁾}, x_{t+Δ}) / s_Δ + β·KL`` over m >= 2 decoded
  samples per pair (:func:`commlab.ensembles.scores.crps_ensemble` with ``fair=True``:
  (1/m)Σ_i|x̂⁽ⁱ⁾ − y| − Σ_{i,j}|x̂⁽ⁱ⁾ − x̂⁽ʲ⁾| / (2m(m−1))), the z⁽ⁱ⁾ drawn from q (``crps_z_source=
  "posterior"``) or from p (``"prior"``, the distribution the forecasts are drawn from).

Forecasts (:meth:`ConditionalVAE.rollout`) are autoregressive with a fresh z ~ p at every step for
each of M members. A member whose state overflows (any entry non-finite) has **diverged**: it is no
longer fed to the networks and stays all-NaN for the rest of the rollout, while the other members go
on unchanged; :func:`diverged_members` marks them, so that a caller can count and score them.
:class:`ResidualMLP` is the deterministic reference, ``x_t + s_Δ·g(x_t)``
trained with the mean squared error of the increment.

Shapes: states ``[..., K]`` (any leading batch axes), latents ``[..., D]``; float32 parameters,
inputs cast to them. Units: the state's own; the losses are in units of ``s_Δ``.

Example::

    vae = ConditionalVAE(40, latent_dim=8, hidden=(128, 128), x_mean=2.3, x_std=3.6, step_std=2.0,
                         generator=SeedTree(0).torch("init"))
    history = fit_emulator(vae, x_t, x_next, objective="crps", steps=2000, batch_size=128, lr=1e-3,
                           beta=1e-2, n_samples=4, generator=SeedTree(0).torch("fit"))
    members = vae.rollout(x0, n_steps=10, n_members=20, generator=SeedTree(0).torch("forecast"))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from commlab._checks import (
    check_choice,
    check_generator,
    check_int,
    check_nonnegative,
    check_positive,
    check_real_number,
)
from commlab.ensembles.scores import crps_ensemble
from commlab.seeding import seeded_init

OBJECTIVES = ("l1", "crps", "mse")
"""Training objectives of :func:`fit_emulator`: ``l1`` and ``crps`` for :class:`ConditionalVAE`,
``mse`` for :class:`ResidualMLP`."""

Z_SOURCES = ("posterior", "prior")



def _mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.SiLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, int) or not isinstance(hidden, Sequence) or not hidden:
        raise TypeError(f"hidden must be a non-empty sequence of layer widths, got {hidden!r}")
    return tuple(check_int("hidden width", h, low=1) for h in hidden)


def gaussian_kl(mu_q: torch.Tensor, log_sigma_q: torch.Tensor, mu_p: torch.Tensor,
                log_sigma_p: torch.Tensor) -> torch.Tensor:
    """KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) of diagonal Gaussians, summed over the last axis (5), in nats.

    Args:
        mu_q, log_sigma_q, mu_p, log_sigma_p: broadcastable ``[..., D]`` tensors (log σ, not σ).

    Returns:
        ``[...]``.
    """
    var_ratio = torch.exp(2.0 * (log_sigma_q - log_sigma_p))  # σ_q²/σ_p²
    mean_term = (mu_q - mu_p) ** 2 * torch.exp(-2.0 * log_sigma_p)  # (μ_q − μ_p)²/σ_p²
    return (log_sigma_p - log_sigma_q + 0.5 * (var_ratio + mean_term) - 0.5).sum(-1)  # (5)


def _advance(step, x: torch.Tensor) -> torch.Tensor:
    """``step(x)`` for the members (rows of ``x [..., K]``) whose state is finite; a member with any
    non-finite entry, before or after the step, is diverged and all-NaN afterwards. Diverged rows are
    fed zeros (the networks refuse non-finite input), so every row keeps its place in the batch and
    the finite members' results do not depend on the diverged ones."""
    alive = torch.isfinite(x).all(-1, keepdim=True)
    x_next = step(torch.where(alive, x, torch.zeros_like(x)))
    return torch.where(alive & torch.isfinite(x_next).all(-1, keepdim=True), x_next, torch.nan)


def diverged_members(states: torch.Tensor) -> torch.Tensor:
    """The members of a rollout that have diverged: ``[..., K]`` states → bool ``[...]``, True where
    the state is non-finite (rollouts keep a diverged member all-NaN from its overflow on)."""
    if not isinstance(states, torch.Tensor) or not states.is_floating_point() or states.ndim == 0:
        raise TypeError("states must be a floating-point torch.Tensor [..., K]")
    return ~torch.isfinite(states).all(-1)


class _Emulator(nn.Module):
    """Shared parts: the K variables, the standardisation constants and input checks."""

    def __init__(self, n_variables: int, x_mean: float, x_std: float, step_std: float):
        super().__init__()
        self.n_variables = check_int("n_variables", n_variables, low=1)
        self.register_buffer("x_mean", torch.tensor(check_real_number("x_mean", x_mean), dtype=torch.float32))
        self.register_buffer("x_std", torch.tensor(check_positive("x_std", x_std), dtype=torch.float32))
        self.register_buffer("step_std", torch.tensor(check_positive("step_std", step_std), dtype=torch.float32))

    def _state(self, name: str, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {x.dtype}")
        if x.ndim == 0 or x.shape[-1] != self.n_variables:
            raise ValueError(f"{name} must be [..., {self.n_variables}] (K on the last axis), got shape "
                             f"{tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite")
        return x.to(self.x_mean.dtype)

    def _standard(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std


class ConditionalVAE(_Emulator):
    """Conditional VAE (1)–(4) for ``x_t [..., K] → x_{t+Δ} [..., K]`` with a latent z ∈ R^D.

    Args:
        n_variables: K.
        latent_dim: D >= 1.
        hidden: widths of the hidden layers of each of the three MLPs (prior, posterior, decoder;
            SiLU activations).
        x_mean, x_std: standardisation of the state (state units; ``x_std`` > 0).
        step_std: s_Δ > 0, the scale of the increment ``x_{t+Δ} − x_t`` (state units).
        generator: ``torch.Generator`` of the initial weights.
    """

    def __init__(self, n_variables: int, *, latent_dim: int = 8, hidden: Sequence[int] = (128, 128),
                 x_mean: float = 0.0, x_std: float = 1.0, step_std: float = 1.0,
                 generator: torch.Generator):
        super().__init__(n_variables, x_mean, x_std, step_std)
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        hidden = _hidden(hidden)
        k, d = self.n_variables, self.latent_dim
        with seeded_init(int(torch.randint(2**62, (), generator=check_generator(generator)))):
            self.prior_net = _mlp(k, hidden, 2 * d)  # x_t → (μ_p, ln σ_p)          (1)
            self.posterior_net = _mlp(2 * k, hidden, 2 * d)  # (x_t, Δx) → (μ_q, ln σ_q)  (2)
            self.decoder = _mlp(k + d, hidden, k)  # (x_t, z) → g                    (3)

    def prior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_p, ln σ_p) of p(z | x_t) (1): ``[..., K]`` → two ``[..., D]``."""
        mu, log_sigma = self.prior_net(self._standard(self._state("x", x))).chunk(2, -1)
        return mu, log_sigma

    def posterior(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_q, ln σ_q) of q(z | x_t, x_{t+Δ}) (2): two ``[..., K]`` → two ``[..., D]``."""
        x, y = self._state("x", x), self._state("y", y)
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        features = torch.cat([self._standard(x), (y - x) / self.step_std], -1)
        mu, log_sigma = self.posterior_net(features).chunk(2, -1)
        return mu, log_sigma

    def decode(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x̂_{t+Δ} = x_t + s_Δ g(x_t, z) (3): ``x [..., K]``, ``z [..., D]`` (same leading shape) →
        ``[..., K]``."""
        x = self._state("x", x)
        if z.shape != (*x.shape[:-1], self.latent_dim):
            raise ValueError(f"z must be {(*x.shape[:-1], self.latent_dim)}, got {tuple(z.shape)}")
        return x + self.step_std * self.decoder(torch.cat([self._standard(x), z.to(x.dtype)], -1))  # (3)

    @staticmethod
    def reparameterise(mu: torch.Tensor, log_sigma: torch.Tensor, n_samples: int,
                       generator: torch.Generator) -> torch.Tensor:
        """``n_samples`` draws z = μ + σ ⊙ ε (4), ε from ``generator``: ``[..., D]`` → ``[n, ..., D]``."""
        n_samples = check_int("n_samples", n_samples, low=1)
        eps = torch.randn((n_samples, *mu.shape), generator=check_generator(generator), dtype=mu.dtype)
        return mu + torch.exp(log_sigma) * eps  # (4)

    def sample(self, x: torch.Tensor, n_samples: int, *, generator: torch.Generator,
               y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded draws of x_{t+Δ}: z from the prior (1), or from the posterior (2) if ``y`` is given.

        Returns:
            ``[n_samples, ..., K]``.
        """
        mu, log_sigma = self.prior(x) if y is None else self.posterior(x, y)
        z = self.reparameterise(mu, log_sigma, n_samples, generator)
        return self.decode(self._state("x", x).expand(n_samples, *x.shape), z)

    def rollout(self, x0: torch.Tensor, n_steps: int, n_members: int, *,
                generator: torch.Generator) -> torch.Tensor:
        """Autoregressive ensemble forecast, a fresh z ~ p(z | x) at every step for every member.

        Args:
            x0: ``[*batch, K]`` initial states.
            n_steps: steps of length Δ (>= 0).
            n_members: M >= 1.
            generator: ``torch.Generator`` of the latents.

        Returns:
            float32 ``[n_steps + 1, *batch, M, K]`` (time first, entry 0 the initial state); a member
            that diverged is all-NaN from the step its state overflowed (:func:`diverged_members`).
        """
        x = self._state("x0", x0)
        n_steps = check_int("n_steps", n_steps, low=0)
        n_members = check_int("n_members", n_members, low=1)
        check_generator(generator)
        x = x.unsqueeze(-2).expand(*x.shape[:-1], n_members, self.n_variables)
        saved = [x]
        with torch.no_grad():
            for _ in range(n_steps):
                x = _advance(lambda x: self.decode(x, self.reparameterise(*self.prior(x), 1, generator)[0]), x)
                saved.append(x)
        return torch.stack(saved)


class ResidualMLP(_Emulator):
    """Deterministic emulator ``x̂_{t+Δ} = x_t + s_Δ g(x_t)``, the RMSE reference.

    Args: as :class:`ConditionalVAE` without ``latent_dim``.
    """

    def __init__(self, n_variables: int, *, hidden: Sequence[int] = (128, 128), x_mean: float = 0.0,
                 x_std: float = 1.0, step_std: float = 1.0, generator: torch.Generator):
        super().__init__(n_variables, x_mean, x_std, step_std)
        hidden = _hidden(hidden)
        with seeded_init(int(torch.randint(2**62, (), generator=check_generator(generator)))):
            self.net = _mlp(self.n_variables, hidden, self.n_variables)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., K]`` → ``[..., K]``."""
        x = self._state("x", x)
        return x + self.step_std * self.net(self._standard(x))

    def rollout(self, x0: torch.Tensor, n_steps: int) -> torch.Tensor:
        """``[*batch, K]`` → float32 ``[n_steps + 1, *batch, K]``; a diverged state is all-NaN from its
        overflow on, as in :meth:`ConditionalVAE.rollout`."""
        x = self._state("x0", x0)
        saved = [x]
        with torch.no_grad():
            for _ in range(check_int("n_steps", n_steps, low=0)):
                x = _advance(self, x)
                saved.append(x)
        return torch.stack(saved)


class LossTerms(NamedTuple):
    """One evaluation of a training objective (0-d tensors; ``total`` carries the gradient)."""

    total: torch.Tensor
    """reconstruction + β·KL."""
    reconstruction: torch.Tensor
    """L1, fair CRPS or squared error, in units of s_Δ (s_Δ² for MSE), per variable."""
    kl: torch.Tensor
    """KL(q ‖ p) (5) in nats per pair (0 for the deterministic emulator)."""


def emulator_loss(model: ConditionalVAE | ResidualMLP, x: torch.Tensor, y: torch.Tensor, *,
                  objective: str, generator: torch.Generator | None = None, beta: float = 1e-2,
                  n_samples: int = 4, crps_z_source: str = "prior") -> LossTerms:
    """The training objective on a batch of pairs ``x = x_t [B, K]``, ``y = x_{t+Δ} [B, K]``.

    Args:
        model: a :class:`ConditionalVAE` (``objective`` ``"l1"`` or ``"crps"``) or a
            :class:`ResidualMLP` (``"mse"``).
        objective: see the module docstring.
        generator: ``torch.Generator`` of the latents (VAE objectives).
        beta: β >= 0, the weight of the KL term.
        n_samples: m >= 2 decoded samples per pair for ``"crps"`` (ignored otherwise).
        crps_z_source: ``"prior"`` or ``"posterior"``: where the CRPS samples' z come from.
    """
    check_choice("objective", objective, OBJECTIVES)
    if isinstance(model, ResidualMLP) != (objective == "mse"):
        raise TypeError(f"objective {objective!r} does not fit a {type(model).__name__} "
                        f"(ConditionalVAE: 'l1' or 'crps'; ResidualMLP: 'mse')")
    x, y = model._state("x", x), model._state("y", y)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both be [B, K], got {tuple(x.shape)} and {tuple(y.shape)}")
    if objective == "mse":
        err = (model(x) - y) / model.step_std
        mse = (err * err).mean()
        return LossTerms(mse, mse, torch.zeros((), dtype=mse.dtype))
    check_generator(generator)
    beta = check_nonnegative("beta", beta)
    check_choice("crps_z_source", crps_z_source, Z_SOURCES)
    mu_p, ls_p = model.prior(x)
    mu_q, ls_q = model.posterior(x, y)
    kl = gaussian_kl(mu_q, ls_q, mu_p, ls_p).mean()  # (5), nats per pair
    if objective == "l1":
        z = model.reparameterise(mu_q, ls_q, 1, generator)[0]  # z ~ q (4)
        reconstruction = ((model.decode(x, z) - y) / model.step_std).abs().mean()  # L1
    else:
        n_samples = check_int("n_samples", n_samples, low=2)
        mu, ls = (mu_p, ls_p) if crps_z_source == "prior" else (mu_q, ls_q)
        z = model.reparameterise(mu, ls, n_samples, generator)  # [m, B, D]
        members = model.decode(x.expand(n_samples, *x.shape), z)  # x̂⁽ⁱ⁾, [m, B, K]
        # fair CRPS per variable: (1/m)Σ|x̂⁽ⁱ⁾ − y| − Σ_{i,j}|x̂⁽ⁱ⁾ − x̂⁽ʲ⁾|/(2m(m−1)), in units of s_Δ
        reconstruction = crps_ensemble(members / model.step_std, y / model.step_std, member_dim=0,
                                       fair=True).mean()
    return LossTerms(reconstruction + beta * kl, reconstruction, kl)


def fit_emulator(model: ConditionalVAE | ResidualMLP, x: torch.Tensor, y: torch.Tensor, *,
                 objective: str, steps: int, batch_size: int, lr: float, generator: torch.Generator,
                 beta: float = 1e-2, n_samples: int = 4, crps_z_source: str = "prior",
                 lr_decay: str = "cosine") -> dict[str, list[float]]:
    """Adam on :func:`emulator_loss` with batches of pairs drawn uniformly with replacement.

    Args:
        model, objective, beta, n_samples, crps_z_source: as in :func:`emulator_loss`.
        x, y: training pairs ``[N, K]`` (x_t and x_{t+Δ}).
        steps: optimiser steps (>= 1); batch_size: pairs per step (>= 1); lr: Adam step (> 0).
        lr_decay: ``"cosine"`` (lr·½(1 + cos(π s/steps)) at step s) or ``"constant"``.
        generator: ``torch.Generator`` of the batches and of the latents.

    Returns:
        ``{"loss", "reconstruction", "kl"}``: one float per step.
    """
    x, y = model._state("x", x), model._state("y", y)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both be [N, K], got {tuple(x.shape)} and {tuple(y.shape)}")
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    lr = check_positive("lr", lr)
    check_choice("lr_decay", lr_decay, ("cosine", "constant"))
    check_generator(generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"loss": [], "reconstruction": [], "kl": []}
    for step in range(steps):
        if lr_decay == "cosine":
            optimiser.param_groups[0]["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        idx = torch.randint(x.shape[0], (batch_size,), generator=generator)
        terms = emulator_loss(model, x[idx], y[idx], objective=objective, generator=generator, beta=beta,
                              n_samples=n_samples, crps_z_source=crps_z_source)
        optimiser.zero_grad(set_to_none=True)
        terms.total.backward()
        optimiser.step()
        for key, value in zip(history, terms, strict=True):
            history[key].append(float(value.detach()))
    if not all(math.isfinite(v) for v in history["loss"]):
        raise FloatingPointError("the training loss became non-finite (lower lr?)")
    return history
