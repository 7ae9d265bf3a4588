"""Heterogeneous quadratics with a stochastic gradient oracle (EControl brief, "Data").

Worker i holds a positive semi-definite H_i = A_iᵀA_i and a local optimum x_i*:

    f_i(x) = ½ (x − x_i*)ᵀ H_i (x − x_i*),        f(x) = (1/n) Σ_i f_i(x),

with A_i = G_i/sqrt(d) + I (G_i ∈ R^{d×d} i.i.d. N(0, 1)) and x_i* = (c + ζ u_i)/sqrt(d)
(c, u_i ~ N(0, I_d)). ζ spreads the local optima (ζ = 0: all workers share the optimum c/sqrt(d));
the common part c keeps the optimum away from the usual start x⁰ = 0. Stochastic gradients
∇f_i(x) + σ ξ_i, ξ_i ~ N(0, I_d), come from :meth:`FiniteSum.stochastic_grads` (x, σ, generator).

f is a quadratic with Hessian H̄ = (1/n) Σ_i H_i, so in closed form

    x* = H̄⁻¹ (1/n) Σ_i H_i x_i*,     f(x) − f* = ½ (x − x*)ᵀ H̄ (x − x*),

and L_i = λ_max(H_i), L = λ_max(H̄), μ = λ_min(H̄).
"""

from __future__ import annotations

import math

import torch

from commlab.problems._checks import check_dtype, check_generator, check_int, check_nonnegative, check_tensor
from commlab.problems.finite_sum import FiniteSum
from commlab.problems.smoothness import lambda_max


class HeterogeneousQuadratics(FiniteSum):
    """f(x) = (1/n) Σ_i ½ (x − x_i*)ᵀ H_i (x − x_i*).

    Args:
        H: symmetric positive semi-definite matrices, float tensor [n, d, d]; their mean must be
            positive definite (so that x* is unique).
        optima: local optima x_i*, float tensor [n, d].

    Attributes:
        n, d: workers and dimension.
        L_i: float64 [n], per-worker smoothness constants. L: float, smoothness of f.
        mu: float, strong-convexity constant of f.
        x_star: [d] minimiser of f (problem dtype). f_star: float, f(x*) in float64.
    """

    def __init__(self, H: torch.Tensor, optima: torch.Tensor):
        if not isinstance(H, torch.Tensor) or H.ndim != 3 or H.shape[1] != H.shape[2]:
            raise ValueError("H must be a float tensor of shape [n, d, d]")
        n, d, _ = H.shape
        check_tensor("H", H, ((n, d, d),))
        check_tensor("optima", optima, ((n, d),))
        self.dtype = check_dtype(H.dtype)
        H64, optima64 = H.double(), optima.double()
        if not torch.allclose(H64, H64.transpose(1, 2), rtol=1e-10, atol=1e-12):
            raise ValueError("H must be symmetric")
        self.n, self.d = n, d
        self.H, self.optima = H, optima.to(H.dtype)
        self._H_rows = H.reshape(n * d, d)  # one matrix-vector product for a shared point
        self._H_optima = (H @ self.optima.unsqueeze(-1)).squeeze(-1)  # H_i x_i*, [n, d]
        self.L_i = lambda_max(H64)
        if not bool((torch.linalg.eigvalsh(H64)[:, 0] >= -1e-10 * self.L_i.clamp(min=1.0)).all()):
            raise ValueError("H must be positive semi-definite")
        self._H_mean = H64.mean(0)
        eigenvalues = torch.linalg.eigvalsh(self._H_mean)
        self.L, self.mu = float(eigenvalues[-1]), float(eigenvalues[0])
        if self.mu <= 1e-12 * self.L:
            raise ValueError("the mean of H must be positive definite")
        x64 = torch.linalg.solve(self._H_mean, (H64 @ optima64.unsqueeze(-1)).squeeze(-1).mean(0))
        self._x_star64 = x64
        self.x_star = x64.to(self.dtype)
        self.f_star = float(self._losses64(x64).mean())

    def _losses64(self, x: torch.Tensor) -> torch.Tensor:
        diff = x - self.optima.double()
        return 0.5 * (diff.unsqueeze(1) @ self.H.double() @ diff.unsqueeze(-1)).reshape(self.n)

    def _losses(self, x: torch.Tensor) -> torch.Tensor:
        diff = x - self.optima
        return 0.5 * (diff.unsqueeze(1) @ self.H @ diff.unsqueeze(-1)).reshape(self.n)

    def _grads(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 1:
            return (self._H_rows @ x).reshape(self.n, self.d) - self._H_optima
        return (self.H @ (x - self.optima).unsqueeze(-1)).squeeze(-1)

    def suboptimality(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) − f* = ½ (x − x*)ᵀ H̄ (x − x*) for x of shape [..., d] (e.g. a trajectory [T, d]),
        in float64, shape [...]. Exact (no cancellation against f*)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim == 0 or x.shape[-1] != self.d:
            raise ValueError(f"x must be a float tensor of shape [..., {self.d}]")
        diff = x.double() - self._x_star64
        return 0.5 * ((diff @ self._H_mean) * diff).sum(-1)


def heterogeneous_quadratics(n: int, d: int, *, generator: torch.Generator, zeta: float = 0.0,
                             dtype: torch.dtype = torch.float64) -> HeterogeneousQuadratics:
    """Draw the EControl brief's heterogeneous quadratics (see the module docstring).

    All draws are made in float64 from ``generator`` and then cast, so the float32 and float64
    problems hold the same data.

    Args:
        n, d: workers and dimension (each ≥ 1).
        generator: torch.Generator for all draws.
        zeta: spread (≥ 0) of the local optima (data heterogeneity).
        dtype: torch.float64 (default) or torch.float32.
    """
    n, d = check_int("n", n, low=1), check_int("d", d, low=1)
    check_generator(generator)
    zeta = check_nonnegative("zeta", zeta)
    check_dtype(dtype)
    f64 = torch.float64
    A = torch.randn(n, d, d, generator=generator, dtype=f64) / math.sqrt(d) + torch.eye(d, dtype=f64)
    H = A.transpose(1, 2) @ A
    H = 0.5 * (H + H.transpose(1, 2))
    common = torch.randn(d, generator=generator, dtype=f64)
    spread = torch.randn(n, d, generator=generator, dtype=f64)
    optima = (common + zeta * spread) / math.sqrt(d)
    return HeterogeneousQuadratics(H.to(dtype), optima.to(dtype))
