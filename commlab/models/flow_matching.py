"""Flow matching for low-dimensional data: an MLP velocity field, its loss, training and ODE sampling.

Conditional flow matching with the linear (rectified-flow) path of Lipman et al. (2023) and Liu et al.
(2023). The time convention is explicit and fixed here: **t = 0 is data, t = 1 is noise**::

    x_t = (1 − t)·x₀ + t·ε,            x₀ ~ data [B, d],  ε ~ N(0, I),  t ~ U(0, 1)
    u_t = dx_t/dt = ε − x₀                                          (the regression target)
    L(θ) = E ‖v_θ(x_t, t, c) − (ε − x₀)‖²                           (sum over d, mean over the batch)

Its minimiser is the marginal velocity v*(x, t) = E[ε − x₀ | x_t = x] (and, with a condition c,
E[ε − x₀ | x_t = x, c]). Sampling integrates dx/dt = v(x, t) backwards from t = 1, x₁ ~ N(0, I), to t = 0
(:func:`sample_ode`, Euler or Heun on a uniform grid), so any velocity — a trained
:class:`FlowMatchingMLP`, a router-weighted mixture of experts, or the closed form
:func:`gaussian_velocity` — can be sampled the same way.

For Gaussian data x₀ ~ N(μ, diag(s²)) the marginal velocity is linear in x (per coordinate):
``v*(x, t) = −μ + (t − (1 − t)s²) / ((1 − t)²s² + t²) · (x − (1 − t)μ)``, the Gaussian regression of
u_t on x_t (Cov(u, x_t) = t − (1 − t)s², Var(x_t) = (1 − t)²s² + t², E u = −μ).

Example::

    gen = SeedTree(0).torch("flow")
    model = FlowMatchingMLP(64, hidden=(256, 256), generator=gen)          # v_θ: [B, 64] × [B] → [B, 64]
    losses = fit_flow_matching(model, images, steps=2000, batch_size=128, lr=1e-3, generator=gen)
    samples = sample_ode(model, torch.randn(1000, 64, generator=gen), steps=40)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from commlab._checks import check_choice, check_generator, check_int, check_positive
from commlab.seeding import seeded_init

Velocity = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""``velocity(x [B, d], t [B], cond [B, c] or None) → v [B, d]``."""



def _times(t, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """``t`` (a float, a [B] or a [B, 1] tensor) as a [B] tensor."""
    t = torch.as_tensor(t, dtype=dtype)
    if t.ndim == 0:
        return t.expand(batch)
    t = t.reshape(-1)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or hold one time per row ({batch}), got {t.numel()} values")
    return t


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t ∈ [0, 1]: ``[sin(ω_j t), cos(ω_j t)]`` for ``dim/2`` frequencies
    ω_j geometrically spaced from 1 to ``max_frequency`` (rad per unit time). ``t`` [B] → [B, dim]."""

    def __init__(self, dim: int = 32, max_frequency: float = 1000.0):
        super().__init__()
        dim = check_int("dim", dim, low=2)
        if dim % 2:
            raise ValueError(f"dim must be even, got {dim}")
        max_frequency = check_positive("max_frequency", max_frequency)
        self.dim = dim
        self.register_buffer("omega", torch.exp(torch.linspace(0.0, math.log(max_frequency), dim // 2)))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angle = t.reshape(-1, 1).to(self.omega.dtype) * self.omega                  # [B, dim/2]
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


class FlowMatchingMLP(nn.Module):
    """Velocity field ``v_θ(x, t, c)``: MLP on ``[x, TimeEmbedding(t), c]`` with SiLU activations.

    Args:
        dim: data dimension d.
        hidden: widths of the hidden layers (the brief's 256 → 256 by default).
        cond_dim: dimension c of the optional condition (0: unconditional).
        time_dim: width of the sinusoidal time embedding.
        generator: draws the initial weights (PyTorch's default initialisation, from this generator).
        dtype: parameter dtype.

    ``forward(x [B, d], t, cond [B, c] or None) → [B, d]``; ``t`` is a float or one time per row.
    """

    def __init__(self, dim: int, *, hidden: Sequence[int] = (256, 256), cond_dim: int = 0, time_dim: int = 32,
                 generator: torch.Generator, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dim = check_int("dim", dim, low=1)
        self.cond_dim = check_int("cond_dim", cond_dim, low=0)
        widths = [check_int("hidden width", h, low=1) for h in hidden]
        if not widths:
            raise ValueError("hidden must name at least one layer width")
        self.time = TimeEmbedding(time_dim).to(dtype)
        sizes = [dim + time_dim + cond_dim, *widths]
        layers: list[nn.Module] = []
        with seeded_init(int(torch.randint(2**62, (), generator=check_generator(generator)))):
            for a, b in zip(sizes[:-1], sizes[1:], strict=True):
                layers += [nn.Linear(a, b, dtype=dtype), nn.SiLU()]
            layers.append(nn.Linear(sizes[-1], dim, dtype=dtype))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be [B, {self.dim}], got shape {tuple(x.shape)}")
        parts = [x, self.time(_times(t, x.shape[0], x.dtype))]
        if self.cond_dim:
            if cond is None or cond.shape != (x.shape[0], self.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond must be [{x.shape[0]}, {self.cond_dim}], got {got}")
            parts.append(cond.to(x.dtype))
        elif cond is not None:
            raise ValueError("this model is unconditional (cond_dim=0) but a cond was given")
        return self.net(torch.cat(parts, dim=1))


def flow_matching_loss(velocity: Velocity, x0: torch.Tensor, *, generator: torch.Generator,
                       cond: torch.Tensor | None = None) -> torch.Tensor:
    """Monte-Carlo flow-matching loss on one batch ``x0`` [B, d]: draws t ~ U(0, 1) [B] and ε ~ N(0, I)
    [B, d] from ``generator`` and returns the scalar mean over the batch of ‖v(x_t, t, c) − (ε − x₀)‖²."""
    if x0.ndim != 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be [B >= 1, d], got shape {tuple(x0.shape)}")
    generator = check_generator(generator)
    t = torch.rand(x0.shape[0], dtype=x0.dtype, generator=generator)
    eps = torch.randn(x0.shape, dtype=x0.dtype, generator=generator)
    xt = (1 - t[:, None]) * x0 + t[:, None] * eps                                  # x_t = (1 − t)x₀ + tε
    return (velocity(xt, t, cond) - (eps - x0)).square().sum(1).mean()            # ‖v − (ε − x₀)‖²


def fit_flow_matching(model: nn.Module, data: torch.Tensor, *, steps: int, batch_size: int, lr: float,
                      generator: torch.Generator, cond: torch.Tensor | None = None) -> np.ndarray:
    """Train ``model`` on ``data`` [N, d] (with conditions ``cond`` [N, c] row-aligned, if given): Adam at
    ``lr`` with cosine decay over ``steps`` minibatches of ``batch_size`` rows drawn with replacement from
    ``generator``. Returns the per-step losses [steps]; the model is left in eval mode."""
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"data must be [N >= 1, d], got shape {tuple(data.shape)}")
    if cond is not None and (cond.ndim != 2 or cond.shape[0] != data.shape[0]):
        raise ValueError(f"cond must be [{data.shape[0]}, c], got shape {tuple(cond.shape)}")
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    lr = check_positive("lr", lr)
    generator = check_generator(generator)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = np.empty(steps)
    model.train()
    for i in range(steps):
        idx = torch.randint(data.shape[0], (batch_size,), generator=generator)
        loss = flow_matching_loss(model, data[idx], generator=generator, cond=None if cond is None else cond[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses[i] = float(loss.detach())
    model.eval()
    return losses


@torch.no_grad()
def sample_ode(velocity: Velocity, noise: torch.Tensor, *, steps: int, method: str = "euler",
               cond: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate dx/dt = v(x, t, c) from t = 1 (``noise`` [B, d], x₁ ~ N(0, I)) to t = 0 on ``steps``
    uniform steps of h = 1/steps: Euler ``x ← x − h·v(x, t)``, or Heun (one Euler predictor, then the
    trapezoid of the two velocities; 2·steps evaluations). Returns x₀ [B, d]."""
    if noise.ndim != 2:
        raise ValueError(f"noise must be [B, d], got shape {tuple(noise.shape)}")
    steps = check_int("steps", steps, low=1)
    method = check_choice("method", method, ("euler", "heun"))
    x = noise.clone()
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=x.dtype)
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        h = t - t_next
        v = velocity(x, t.expand(x.shape[0]), cond)
        if method == "euler":
            x = x - h * v                                                          # x_{t−h} = x_t − h·v(x_t, t)
        else:
            x_pred = x - h * v
            x = x - h * 0.5 * (v + velocity(x_pred, t_next.expand(x.shape[0]), cond))
    return x


def gaussian_velocity(x: torch.Tensor, t, mean, std) -> torch.Tensor:
    """Exact marginal velocity for data N(mean, diag(std²)) under this module's path:
    ``v*(x, t) = −μ + (t − (1 − t)s²) / ((1 − t)²s² + t²) · (x − (1 − t)μ)``.

    ``x`` [B, d]; ``t`` a float or [B] in [0, 1] (t = 0 needs std > 0); ``mean`` and ``std`` scalars or [d]."""
    if x.ndim != 2:
        raise ValueError(f"x must be [B, d], got shape {tuple(x.shape)}")
    mu = torch.as_tensor(mean, dtype=x.dtype)
    s2 = torch.as_tensor(std, dtype=x.dtype).square()
    if bool((s2 < 0).any()) or not bool(torch.isfinite(s2).all()):
        raise ValueError("std must be finite")
    t = _times(t, x.shape[0], x.dtype)[:, None]
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError("t must lie in [0, 1]")
    var_t = (1 - t).square() * s2 + t.square()                                    # Var(x_t)
    if bool((var_t <= 0).any()):
        raise ValueError("t = 0 with std = 0 has no velocity (a point mass at t = 0)")
    return -mu + (t - (1 - t) * s2) / var_t * (x - (1 - t) * mu)                  # E u + Cov/Var·(x − E x_t)
