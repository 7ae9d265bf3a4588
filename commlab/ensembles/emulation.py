"""Ensemble emulation from a few seed members (SEEDS, Li et al. 2023): a conditional generative model
learns p(member | S seed members) from past forecast cases and, for a new case, turns the S physics
seeds into as many members as wanted; and the plain baseline, a Gaussian about the seed mean.

Shapes: ``seeds`` ``[N, S, K]`` (N cases, S seeds, K variables), members ``[N, M, K]``. Units are the
state's own. All normalisation constants are fitted on the training cases only and kept as buffers,
so :meth:`SeedEmulator.state_dict` holds everything a receiver needs besides the seeds.

Normalisation (per variable k), fitted by :meth:`SeedEmulator.fit`:

* climatology μ_k, σ_k: mean and standard deviation of the training seeds;
* pooled ensemble spread s_k (:func:`pooled_spread`): :math:`s_k^2 = \\overline{\\mathrm{var}_m(x_{k})}`,
  the unbiased member variance averaged over the training cases.

Conditioning features (:func:`seed_features`), ``[N, S·K]`` — the seed mean and the seeds' deviations:

.. math::

    c = \\Big[\\frac{\\bar s - \\mu}{\\sigma},\\ \\frac{s_1 - \\bar s}{s_{\\mathrm{pool}}},\\ \\dots,\\
        \\frac{s_{S-1} - \\bar s}{s_{\\mathrm{pool}}}\\Big], \\qquad \\bar s = \\frac1S \\sum_j s_j

(the last deviation is minus the sum of the others and is left out; for S = 2 it is the half
difference of the two seeds). The generative model works on the residual
:math:`r = (x - \\bar s) / s_{\\mathrm{pool}}`: flow matching (:mod:`commlab.models.flow_matching`,
t = 0 data, t = 1 noise) with an MLP velocity :math:`v_\\theta(r_t, t, c)`, sampled by the ODE from
:math:`r_1 \\sim \\mathcal N(0, I)` and mapped back by :math:`x = \\bar s + s_{\\mathrm{pool}}\\, r_0`.

Gaussian baseline (:func:`seed_gaussian`): N(:math:`\\bar s`, :math:`s_{\\mathrm{pool}}^2 (1 + 1/S)`)
per variable — the predictive law of a new exchangeable member when the members have spread
s_pool and their mean is estimated from S draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from commlab._checks import check_choice, check_generator, check_int
from commlab.models.flow_matching import FlowMatchingMLP, fit_flow_matching, sample_ode


def _states(name: str, x, *, min_rows: int = 1, n_variables: int | None = None) -> torch.Tensor:
    """``x`` checked as a finite floating-point ``[N, R, K]`` tensor with R >= ``min_rows``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] < min_rows or x.shape[2] == 0:
        raise ValueError(f"{name} must be [N >= 1, {'S' if name == 'seeds' else 'M'} >= {min_rows}, K >= 1], "
                         f"got shape {tuple(x.shape)}")
    if n_variables is not None and x.shape[2] != n_variables:
        raise ValueError(f"{name} must have K = {n_variables} variables on its last axis, got {x.shape[2]}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    return x


def pooled_spread(members: torch.Tensor) -> torch.Tensor:
    """Pooled ensemble spread per variable: sqrt of the unbiased member variance averaged over cases.

    Args:
        members: ``[N, M, K]`` with M >= 2.

    Returns:
        ``[K]``, in state units.
    """
    members = _states("members", members, min_rows=2)
    return members.var(dim=1, correction=1).mean(0).sqrt()  # s_k² = mean_n var_m(x_nmk)


def training_pairs(members: torch.Tensor, n_seeds: int = 2, *,
                   n_splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed/target pairs from exchangeable ensembles: split each case's members into disjoint seed
    groups of ``n_seeds`` consecutive members; the case's other members are that group's targets.

    Args:
        members: ``[N, M, K]`` training ensembles (exchangeable members), M > ``n_seeds``.
        n_seeds: S >= 1 seeds per group.
        n_splits: P groups per case, 1 <= P <= M // S (default: M // S).

    Returns:
        ``seeds [N·P, S, K]`` and ``targets [N·P, M − S, K]``; row ``p·N + n`` is group p of case n
        (seeds: members ``p·S`` to ``p·S + S − 1``).
    """
    members = _states("members", members, min_rows=2)
    m = members.shape[1]
    n_seeds = check_int("n_seeds", n_seeds, low=1, high=m - 1)
    n_splits = check_int("n_splits", m // n_seeds if n_splits is None else n_splits, low=1, high=m // n_seeds)
    seeds, targets = [], []
    for p in range(n_splits):
        inside = torch.zeros(m, dtype=torch.bool)
        inside[p * n_seeds:(p + 1) * n_seeds] = True
        seeds.append(members[:, inside])
        targets.append(members[:, ~inside])
    return torch.cat(seeds), torch.cat(targets)


def seed_features(seeds: torch.Tensor, *, clim_mean, clim_std, spread) -> torch.Tensor:
    """Conditioning features of the module docstring: ``seeds [N, S, K]`` -> ``[N, S·K]``.

    Args:
        seeds: ``[N, S, K]``.
        clim_mean, clim_std: μ and σ (> 0), ``[K]`` or scalars.
        spread: s_pool (> 0), ``[K]`` or a scalar.
    """
    seeds = _states("seeds", seeds)
    clim_mean, clim_std, spread = (torch.as_tensor(v, dtype=seeds.dtype) for v in (clim_mean, clim_std, spread))
    if not (bool((clim_std > 0).all()) and bool((spread > 0).all())):
        raise ValueError("clim_std and spread must be > 0")
    mean = seeds.mean(1)                                                          # s̄ [N, K]
    deviations = (seeds[:, :-1] - mean.unsqueeze(1)) / spread                     # (s_j − s̄)/s_pool
    return torch.cat([(mean - clim_mean) / clim_std, deviations.flatten(1)], dim=1)


def seed_gaussian(seeds: torch.Tensor, spread) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian fit to the seeds: mean s̄ and standard deviation s_pool·sqrt(1 + 1/S) per variable.

    Args:
        seeds: ``[N, S, K]``.
        spread: s_pool (> 0), ``[K]`` or a scalar (e.g. :func:`pooled_spread` of training ensembles).

    Returns:
        ``(mean, std)``, each ``[N, K]``.
    """
    seeds = _states("seeds", seeds)
    spread = torch.as_tensor(spread, dtype=seeds.dtype)
    if not bool((spread > 0).all()):
        raise ValueError("spread must be > 0")
    n_seeds = seeds.shape[1]
    std = spread * (1.0 + 1.0 / n_seeds) ** 0.5                                   # Var(x − s̄) = s²(1 + 1/S)
    return seeds.mean(1), std.expand(seeds.shape[0], seeds.shape[2]).clone()


def sample_seed_gaussian(seeds: torch.Tensor, spread, n_members: int, *,
                         generator: torch.Generator) -> torch.Tensor:
    """``n_members`` draws per case from :func:`seed_gaussian`: ``[N, n_members, K]``."""
    mean, std = seed_gaussian(seeds, spread)
    n_members = check_int("n_members", n_members, low=1)
    noise = torch.randn((mean.shape[0], n_members, mean.shape[1]), generator=check_generator(generator),
                        dtype=mean.dtype)
    return mean.unsqueeze(1) + std.unsqueeze(1) * noise


class SeedEmulator(nn.Module):
    """p(member | S seeds) by conditional flow matching on the normalised residual (module docstring).

    Args:
        n_variables: K.
        n_seeds: S >= 1.
        hidden: hidden widths of the velocity MLP (input ``K + time_dim + S·K``, output K).
        time_dim: width of the sinusoidal time embedding.
        generator: draws the initial weights.
        dtype: of the parameters and of the computations (inputs are cast to it).

    The climatology and the pooled spread are buffers, set by :meth:`fit`; ``state_dict()`` holds
    them with the weights.
    """

    def __init__(self, n_variables: int, n_seeds: int = 2, *, hidden: Sequence[int] = (256, 256),
                 time_dim: int = 32, generator: torch.Generator, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.n_variables = check_int("n_variables", n_variables, low=1)
        self.n_seeds = check_int("n_seeds", n_seeds, low=1)
        self.velocity = FlowMatchingMLP(n_variables, hidden=hidden, cond_dim=n_seeds * n_variables,
                                        time_dim=time_dim, generator=check_generator(generator), dtype=dtype)
        self.dtype = dtype
        for name in ("clim_mean", "clim_std", "spread"):
            self.register_buffer(name, torch.full((n_variables,), float("nan"), dtype=dtype))

    @property
    def fitted(self) -> bool:
        return bool(torch.isfinite(self.spread).all())

    def features(self, seeds: torch.Tensor) -> torch.Tensor:
        """Conditioning features ``[N, S·K]`` with this emulator's normalisation (see :func:`seed_features`)."""
        if not self.fitted:
            raise RuntimeError("the emulator is not fitted: call fit() first (or load a state_dict)")
        seeds = self._seeds(seeds)
        return seed_features(seeds, clim_mean=self.clim_mean, clim_std=self.clim_std, spread=self.spread)

    def _seeds(self, seeds) -> torch.Tensor:
        seeds = _states("seeds", seeds, n_variables=self.n_variables)
        if seeds.shape[1] != self.n_seeds:
            raise ValueError(f"seeds must hold S = {self.n_seeds} seeds per case, got {seeds.shape[1]}")
        return seeds.to(self.dtype)

    def fit(self, seeds: torch.Tensor, targets: torch.Tensor, *, steps: int, batch_size: int, lr: float,
            generator: torch.Generator, spread=None) -> np.ndarray:
        """Fit the normalisation and train the velocity on every (case, target) pair.

        Args:
            seeds: ``[N, S, K]`` seeds of the training cases (e.g. from :func:`training_pairs`).
            targets: ``[N, T, K]`` the members (or truths, T = 1, for post-processing) to learn.
            steps, batch_size, lr: Adam training of :func:`~commlab.models.flow_matching.fit_flow_matching`.
            generator: minibatches, flow times and noise.
            spread: s_pool ``[K]`` (> 0); default: :func:`pooled_spread` of ``cat(seeds, targets)``,
                right when seeds and targets are members of one exchangeable ensemble; pass the
                seeds' own model spread when the targets are truths (post-processing).

        Returns:
            per-step training losses ``[steps]``.
        """
        seeds = self._seeds(seeds)
        targets = _states("targets", targets, n_variables=self.n_variables).to(self.dtype)
        if targets.shape[0] != seeds.shape[0]:
            raise ValueError(f"targets must hold one row per case of seeds ({seeds.shape[0]}), got {targets.shape[0]}")
        if spread is None:
            spread = pooled_spread(torch.cat([seeds, targets], 1))
        spread = torch.as_tensor(spread, dtype=self.dtype).expand(self.n_variables)
        if not (bool(torch.isfinite(spread).all()) and bool((spread > 0).all())):
            raise ValueError("spread must be finite and > 0")
        flat = seeds.reshape(-1, self.n_variables)
        self.clim_mean.copy_(flat.mean(0))
        self.clim_std.copy_(flat.std(0).clamp_min(torch.finfo(self.dtype).tiny))
        self.spread.copy_(spread)
        cond = self.features(seeds)                                               # [N, S·K]
        residual = (targets - seeds.mean(1, keepdim=True)) / self.spread          # r = (x − s̄)/s_pool
        n_targets = targets.shape[1]
        return fit_flow_matching(self.velocity, residual.reshape(-1, self.n_variables), steps=steps,
                                 batch_size=batch_size, lr=lr, generator=generator,
                                 cond=cond.repeat_interleave(n_targets, dim=0))

    @torch.no_grad()
    def sample(self, seeds: torch.Tensor, n_members: int, *, generator: torch.Generator, steps: int = 32,
               method: str = "heun") -> torch.Tensor:
        """Generate ``n_members`` members per case: ``seeds [N, S, K]`` -> ``[N, n_members, K]``.

        Draws r₁ ~ N(0, I) from ``generator``, integrates the ODE (``steps``, ``method`` of
        :func:`~commlab.models.flow_matching.sample_ode`) and returns ``s̄ + s_pool·r₀``.
        """
        seeds = self._seeds(seeds)
        n_members = check_int("n_members", n_members, low=1)
        method = check_choice("method", method, ("euler", "heun"))
        cond = self.features(seeds).repeat_interleave(n_members, dim=0)          # [N·M, S·K]
        noise = torch.randn((cond.shape[0], self.n_variables), generator=check_generator(generator), dtype=self.dtype)
        r0 = sample_ode(self.velocity, noise, steps=steps, method=method, cond=cond)
        r0 = r0.reshape(seeds.shape[0], n_members, self.n_variables)
        return seeds.mean(1, keepdim=True) + self.spread * r0                    # x = s̄ + s_pool·r₀
