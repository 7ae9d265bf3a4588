"""Decentralised flow matching: experts trained in isolation on data partitions, combined by a router.

Decentralized Diffusion Models (McAllister et al., 2025) split the data into clusters S_1..S_K
(π_k = |S_k| / N), train one flow-matching expert v_k per cluster with no communication, and train a
small router r(k | x_t, t) on noised samples of all the data. Time convention of
:mod:`commlab.models.flow_matching`: **t = 0 is data, t = 1 is noise**, x_t = (1 − t)·x₀ + t·ε.

The identity behind it: for data p = Σ_k π_k p_k, the marginal velocity of the whole data is the
posterior-weighted mixture of the per-cluster marginal velocities::

    v(x, t) = Σ_k P(k | x_t = x) · v_k(x, t)                                        (paper, Sec. 3)

so a router that learns P(k | x_t, t) and experts that learn v_k reproduce the monolithic target.

* :func:`top_k_weights` — keep each row's k largest router probabilities and renormalise them to one;
* :class:`RoutedVelocity` — the router-weighted mixture velocity (full ensemble, or sparse top-k), a
  ``velocity(x [B, d], t [B], cond)`` callable for :func:`commlab.models.flow_matching.sample_ode`;
* :class:`TimeRouter`, :func:`fit_router`, :func:`router_accuracy` — the router on (x_t, t), trained
  with cross-entropy on the cluster id of noised samples, and its accuracy against t;
* :class:`GaussianMixture` — a toy data distribution with exact posteriors P(m | x_t) and an exact
  marginal velocity from the score of its noised density, v = −(x + t·∇log p_t(x)) / (1 − t), computed
  without the mixture identity, so the identity can be checked at float precision;
* :func:`training_flops`, :func:`split_steps` — the equal-FLOP accounting (6 FLOPs per weight per
  training sample) and a budget of steps apportioned to experts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from commlab._checks import check_generator, check_int, check_positive
from commlab.models.flow_matching import TimeEmbedding, Velocity
from commlab.seeding import seeded_init

RouterProbs = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``router(x [B, d], t [B]) → probabilities [B, K]`` (rows sum to one)."""



def _check_probs(probs: torch.Tensor) -> torch.Tensor:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or 0 in probs.shape or not probs.is_floating_point():
        raise ValueError(f"router probabilities must be a float tensor [B, K], got {getattr(probs, 'shape', probs)}")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError("router probabilities must be finite and non-negative")
    if not torch.allclose(probs.sum(1), torch.ones((), dtype=probs.dtype), atol=1e-4):
        raise ValueError("router probabilities must sum to one over the experts in every row")
    return probs


def top_k_weights(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Sparse top-k routing weights ``[B, K]``: w_j = p_j / Σ_{i ∈ top-k} p_i for the k largest p_j of
    each row, 0 elsewhere (k = 1 picks one expert with weight 1; k = K returns ``probs``).

    ``probs`` [B, K], rows summing to one; ties go to the lower expert index."""
    probs = _check_probs(probs)
    k = check_int("k", k, low=1, high=probs.shape[1])
    top = torch.topk(probs, k, dim=1, sorted=False).indices
    kept = torch.zeros_like(probs).scatter(1, top, probs.gather(1, top))
    total = kept.sum(1, keepdim=True)
    # a row whose top-k mass is 0 (possible only with k < K and exact zeros) keeps uniform weights on its top-k
    uniform = torch.zeros_like(probs).scatter(1, top, 1.0 / k)
    return torch.where(total > 0, kept / total.clamp_min(torch.finfo(probs.dtype).tiny), uniform)  # renormalise


class RoutedVelocity:
    """Mixture velocity ``v(x, t) = Σ_k w_k(x, t)·v_k(x, t)`` over ``experts`` weighted by ``router``.

    Args:
        experts: K velocity callables ``v_k(x [B, d], t [B], cond) → [B, d]`` (e.g. FlowMatchingMLPs).
        router: ``router(x [B, d], t [B]) → probabilities [B, K]`` (a :class:`TimeRouter`'s
            :meth:`~TimeRouter.probabilities`, or an exact posterior).
        top_k: None for the full ensemble (w = r), else sparse top-k with renormalised weights
            (:func:`top_k_weights`); an expert is evaluated only on the rows that selected it.

    Calling it returns v ``[B, d]``; it holds no state of its own (the experts and router do).
    """

    def __init__(self, experts: Sequence[Velocity], router: RouterProbs, *, top_k: int | None = None):
        self.experts = list(experts)
        if not self.experts or not all(callable(e) for e in self.experts):
            raise ValueError("experts must be a non-empty sequence of velocity callables")
        if not callable(router):
            raise TypeError(f"router must be callable, got {type(router).__name__}")
        self.router = router
        self.top_k = None if top_k is None else check_int("top_k", top_k, low=1, high=len(self.experts))

    def weights(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Routing weights ``[B, K]`` used at (x, t): the router's probabilities, or their top-k renormalisation."""
        probs = _check_probs(self.router(x, t))
        if probs.shape != (x.shape[0], len(self.experts)):
            raise ValueError(f"router returned shape {tuple(probs.shape)}, "
                             f"expected [{x.shape[0]}, {len(self.experts)}]")
        return probs if self.top_k is None else top_k_weights(probs, self.top_k)

    def __call__(self, x: torch.Tensor, t, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2:
            raise ValueError(f"x must be [B, d], got shape {tuple(x.shape)}")
        t = torch.as_tensor(t, dtype=x.dtype)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(-1)
        w = self.weights(x, t)
        v = torch.zeros_like(x)
        for k, expert in enumerate(self.experts):
            rows = torch.nonzero(w[:, k] > 0).reshape(-1)
            if rows.numel() == 0:
                continue
            c = None if cond is None else cond[rows]
            v[rows] += w[rows, k, None] * expert(x[rows], t[rows], c)                # Σ_k w_k(x, t)·v_k(x, t)
        return v


class TimeRouter(nn.Module):
    """Router ``r(k | x_t, t)``: an MLP on ``[x_t, TimeEmbedding(t)]`` (SiLU) with K output logits.

    Args:
        dim: data dimension d; n_experts: K; hidden: hidden widths (the brief's single 128-wide layer);
        time_dim: width of the sinusoidal time embedding (0: no time input, the ablation of a router
        that cannot tell large t from small t); generator: draws the initial weights.

    ``forward(x [B, d], t [B]) → logits [B, K]``; :meth:`probabilities` gives their softmax.
    """

    def __init__(self, dim: int, n_experts: int, *, hidden: Sequence[int] = (128,), time_dim: int = 32,
                 generator: torch.Generator):
        super().__init__()
        self.dim = check_int("dim", dim, low=1)
        self.n_experts = check_int("n_experts", n_experts, low=2)
        self.time_dim = check_int("time_dim", time_dim, low=0)
        widths = [check_int("hidden width", h, low=1) for h in hidden]
        self.time = TimeEmbedding(time_dim) if time_dim else None
        sizes = [dim + time_dim, *widths]
        layers: list[nn.Module] = []
        with seeded_init(int(torch.randint(2**62, (), generator=check_generator(generator)))):
            for a, b in zip(sizes[:-1], sizes[1:], strict=True):
                layers += [nn.Linear(a, b), nn.SiLU()]
            layers.append(nn.Linear(sizes[-1], n_experts))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be [B, {self.dim}], got shape {tuple(x.shape)}")
        parts = [x]
        if self.time is not None:
            t = torch.as_tensor(t, dtype=x.dtype)
            parts.append(self.time(t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(-1)))
        return self.net(torch.cat(parts, dim=1))

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, t) -> torch.Tensor:
        """``softmax(logits)`` ``[B, K]``: the router's estimate of P(k | x_t = x)."""
        return torch.softmax(self.forward(x, t), dim=1)


def _noised(data: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    eps = torch.randn(data.shape, dtype=data.dtype, generator=generator)
    return (1 - t[:, None]) * data + t[:, None] * eps                               # x_t = (1 − t)x₀ + tε


def _check_labelled(data, labels, n_experts: int) -> None:
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"data must be [N >= 1, d], got shape {tuple(data.shape)}")
    if labels.shape != (data.shape[0],) or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 [{data.shape[0]}], got {labels.dtype} {tuple(labels.shape)}")
    if bool((labels < 0).any()) or bool((labels >= n_experts).any()):
        raise ValueError(f"labels must be cluster ids in 0..{n_experts - 1}")


def fit_router(router: TimeRouter, data: torch.Tensor, labels: torch.Tensor, *, steps: int, batch_size: int,
               lr: float, generator: torch.Generator) -> np.ndarray:
    """Train ``router`` to predict the cluster id ``labels`` [N] (int64, 0..K−1) of noised rows of ``data``
    [N, d]: per minibatch (rows drawn with replacement) t ~ U(0, 1), x_t = (1 − t)x₀ + tε, loss
    CE(r(x_t, t), k); Adam at ``lr`` with cosine decay. Returns the per-step losses [steps] (nats); eval mode after."""
    _check_labelled(data, labels, router.n_experts)
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    lr = check_positive("lr", lr)
    generator = check_generator(generator)
    opt = torch.optim.Adam(router.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = np.empty(steps)
    router.train()
    for i in range(steps):
        idx = torch.randint(data.shape[0], (batch_size,), generator=generator)
        t = torch.rand(batch_size, dtype=data.dtype, generator=generator)
        loss = F.cross_entropy(router(_noised(data[idx], t, generator), t), labels[idx])   # −log r(k | x_t, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses[i] = float(loss.detach())
    router.eval()
    return losses


@torch.no_grad()
def router_accuracy(router: TimeRouter, data: torch.Tensor, labels: torch.Tensor, times: Sequence[float], *,
                    generator: torch.Generator) -> np.ndarray:
    """Accuracy ``[len(times)]`` of the router's arg-max on every row of ``data`` noised at each fixed t in
    ``times`` (one ε draw per row and t), against the cluster ids ``labels``."""
    _check_labelled(data, labels, router.n_experts)
    generator = check_generator(generator)
    out = np.empty(len(times))
    for i, t in enumerate(times):
        t = torch.full((data.shape[0],), float(t), dtype=data.dtype)
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError("times must lie in [0, 1]")
        out[i] = float((router(_noised(data, t, generator), t).argmax(1) == labels).double().mean())
    return out


class GaussianMixture:
    """Data p = Σ_m w_m N(μ_m, s_m² I) with exact quantities along the path x_t = (1 − t)x₀ + tε.

    Args:
        means: ``[M, d]``; stds: ``[M]`` (s_m > 0); weights: ``[M]`` (non-negative; normalised here).
        Stored as float64.

    The noised density is p_t(x) = Σ_m w_m N(x; (1 − t)μ_m, σ_m(t)² I), σ_m(t)² = (1 − t)²s_m² + t².
    """

    def __init__(self, means, stds, weights):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        w = torch.as_tensor(weights, dtype=torch.float64)
        if self.means.ndim != 2 or self.means.shape[0] == 0:
            raise ValueError(f"means must be [M >= 1, d], got shape {tuple(self.means.shape)}")
        M = self.means.shape[0]
        if self.stds.shape != (M,) or not bool((self.stds > 0).all()) or not bool(torch.isfinite(self.stds).all()):
            raise ValueError(f"stds must be [{M}] finite and positive")
        if w.shape != (M,) or bool((w < 0).any()) or not float(w.sum()) > 0 or not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights must be [{M}] finite, non-negative, with a positive sum")
        self.weights = w / w.sum()

    @classmethod
    def ring(cls, n: int = 8, *, radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
        """``n`` equal-weight 2-D Gaussians of std ``std`` at angles 2πm/n on a circle of ``radius``."""
        n = check_int("n", n, low=1)
        angle = 2 * np.pi * np.arange(n) / n
        means = check_positive("radius", radius) * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return cls(means, np.full(n, check_positive("std", std)), np.ones(n))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def components(self, index: Sequence[int]) -> GaussianMixture:
        """The sub-mixture of the components ``index``, weights renormalised (the data of one cluster)."""
        index = torch.as_tensor(list(index), dtype=torch.int64)
        if index.numel() == 0 or bool((index < 0).any()) or bool((index >= len(self.weights)).any()):
            raise ValueError(f"index must name components in 0..{len(self.weights) - 1}")
        return GaussianMixture(self.means[index], self.stds[index], self.weights[index])

    def sample(self, n: int, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws: (x₀ [n, d] float64, component ids [n] int64)."""
        n = check_int("n", n, low=1)
        m = torch.multinomial(self.weights, n, replacement=True, generator=check_generator(generator))
        eps = torch.randn((n, self.dim), dtype=torch.float64, generator=generator)
        return self.means[m] + self.stds[m, None] * eps, m

    def _check(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be [B, {self.dim}], got shape {tuple(getattr(x, 'shape', ()))}")
        x = x.to(torch.float64)
        t = torch.as_tensor(t, dtype=torch.float64)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(-1)
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or one time per row ({x.shape[0]})")
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError("t must lie in [0, 1]")
        return x, t

    def _joint(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log w_m + log N(x; (1 − t)μ_m, σ_m(t)² I), ``[B, M]``."""
        var = (1 - t[:, None]).square() * self.stds.square() + t[:, None].square()   # σ_m(t)², [B, M]
        diff = x[:, None, :] - (1 - t[:, None, None]) * self.means                   # x − (1 − t)μ_m, [B, M, d]
        return (self.weights.log() - 0.5 * diff.square().sum(2) / var
                - 0.5 * self.dim * torch.log(2 * torch.pi * var))

    def log_density(self, x: torch.Tensor, t) -> torch.Tensor:
        """log p_t(x) ``[B]``: the log-sum-exp over components of the noised density."""
        x, t = self._check(x, t)
        return torch.logsumexp(self._joint(x, t), dim=1)

    def posterior(self, x: torch.Tensor, t) -> torch.Tensor:
        """P(m | x_t = x) ``[B, M]`` (float64, rows sum to one)."""
        x, t = self._check(x, t)
        return torch.softmax(self._joint(x, t), dim=1)

    def cluster_posterior(self, x: torch.Tensor, t, clusters: Sequence[Sequence[int]]) -> torch.Tensor:
        """P(k | x_t = x) = Σ_{m ∈ cluster k} P(m | x_t = x), ``[B, K]``; ``clusters`` partitions the components."""
        flat = sorted(m for c in clusters for m in c)
        if flat != list(range(len(self.weights))):
            raise ValueError(f"clusters must partition the components 0..{len(self.weights) - 1}, got {clusters}")
        post = self.posterior(x, t)
        return torch.stack([post[:, list(c)].sum(1) for c in clusters], dim=1)

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """Exact marginal velocity E[ε − x₀ | x_t = x] ``[B, d]`` (float64), t in [0, 1], from the score of
        p_t by automatic differentiation (no mixture weights of per-component velocities are formed); at
        t = 1, where x₁ = ε carries no information about x₀, it is x − E[x₀].
        ``cond`` must be None (the signature of a velocity callable)."""
        if cond is not None:
            raise ValueError("GaussianMixture.velocity is unconditional: cond must be None")
        x, t = self._check(x, t)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            score = torch.autograd.grad(torch.logsumexp(self._joint(xg, t), dim=1).sum(), xg)[0]  # ∇ log p_t(x)
        t = t[:, None]
        # Tweedie: E[ε | x_t] = −t·∇log p_t, E[x₀ | x_t] = (x + t²∇log p_t)/(1 − t) ⇒ v = −(x + t·∇log p_t)/(1 − t)
        v = -(x + t * score) / torch.where(t < 1, 1 - t, 1.0)
        return torch.where(t < 1, v, x - self.weights @ self.means)


def training_flops(model: nn.Module, samples: int) -> float:
    """Training FLOPs of ``model`` on ``samples`` examples: 6 per weight of its ``nn.Linear`` layers per example
    (2 forward, 4 backward; biases, activations and the time embedding are not counted)."""
    samples = check_int("samples", samples, low=0)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    if weights == 0:
        raise ValueError("model has no nn.Linear layers to count")
    return 6.0 * weights * samples                                                  # C ≈ 6·N·D


def split_steps(total_steps: int, shares: Sequence[float]) -> list[int]:
    """Apportion a budget of ``total_steps`` optimiser steps to experts in proportion to ``shares`` (e.g.
    equal shares, or the cluster sizes π_k), by largest remainder: the result sums to ``total_steps``
    exactly, so K experts of one architecture at one batch size spend the monolithic model's FLOPs."""
    total_steps = check_int("total_steps", total_steps, low=1)
    shares = np.asarray(shares, dtype=np.float64)
    if shares.ndim != 1 or shares.size == 0 or not np.isfinite(shares).all() or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError("shares must be a non-empty vector of finite non-negative numbers with a positive sum")
    exact = total_steps * shares / shares.sum()
    steps = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - steps), kind="stable")
    steps[order[: total_steps - int(steps.sum())]] += 1
    return [int(s) for s in steps]
