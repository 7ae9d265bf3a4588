"""Common interface of the finite-sum objectives f(x) = (1/n) Σ_i f_i(x) with one f_i per worker.

Points come in two shapes: a single iterate ``x`` of shape [d] (shared by all workers), or per-worker
iterates ``X`` of shape [n, d] (worker i evaluates f_i at X[i]). ``grads`` returns the stacked
per-worker gradients [n, d] in one call in both cases, so that n simulated workers are one tensor.
"""

from __future__ import annotations

import torch

from commlab.problems._checks import check_tensor
from commlab.problems.smoothness import SmoothnessConstants, smoothness_constants


class FiniteSum:
    """Base class. Subclasses set ``n``, ``d``, ``dtype``, ``L_i`` (float64 [n]) and ``L`` (float),
    and implement :meth:`_losses` and :meth:`_grads` on validated inputs."""

    n: int
    d: int
    dtype: torch.dtype
    L_i: torch.Tensor
    L: float

    def points(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Validate a point [d] or per-worker points [n, d] and cast it to the problem's dtype."""
        check_tensor(name, x, ((self.d,), (self.n, self.d)))
        return x.to(self.dtype)

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        """Per-worker losses f_i: x [d] or X [n, d] -> [n]."""
        return self._losses(self.points(x))

    def grads(self, x: torch.Tensor) -> torch.Tensor:
        """Per-worker gradients ∇f_i, stacked: x [d] or X [n, d] -> [n, d]."""
        return self._grads(self.points(x))

    def stochastic_grads(self, x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
        """∇f_i(x_i) + σ ξ_i with ξ_i ~ N(0, I_d) drawn from ``generator``: [n, d] (EControl's noise model)."""
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma >= 0:
            raise ValueError(f"sigma must be a real number >= 0, got {sigma!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        grads = self.grads(x)
        return grads + sigma * torch.randn(grads.shape, generator=generator, dtype=grads.dtype)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = (1/n) Σ_i f_i(x) for x [d]: a 0-d tensor."""
        check_tensor("x", x, ((self.d,),))
        return self.losses(x).mean()

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """∇f(x) = (1/n) Σ_i ∇f_i(x) for x [d]: [d]."""
        check_tensor("x", x, ((self.d,),))
        return self.grads(x).mean(0)

    def grad_norm_sq(self, x: torch.Tensor) -> float:
        """‖∇f(x)‖² for x [d], accumulated in float64."""
        return float(self.grad(x).double().square().sum())

    @property
    def constants(self) -> SmoothnessConstants:
        """L, L_AM, L_QM, L_max of this problem."""
        return smoothness_constants(self.L_i, self.L)

    def _losses(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _grads(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def worker_matvec(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A_i x_i for stacked A [n, m, d] and x [d] (shared) or X [n, d] (per worker): [n, m]."""
    if x.ndim == 1:
        return A @ x
    return torch.bmm(A, x.unsqueeze(-1)).squeeze(-1)


def worker_rmatvec(A: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """A_iᵀ r_i for stacked A [n, m, d] and r [n, m]: [n, d]."""
    return torch.bmm(r.unsqueeze(1), A).squeeze(1)


def worker_scales(n: int, heavy_frac: float, scale: float) -> torch.Tensor:
    """Per-worker multipliers [n] (float64): the first round(heavy_frac · n) workers get ``scale``,
    the others 1. Scaling worker i's data matrix by s_i multiplies its smoothness constant by s_i²."""
    scales = torch.ones(n, dtype=torch.float64)
    scales[: round(heavy_frac * n)] = scale
    return scales
