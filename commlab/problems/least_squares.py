"""Heterogeneous least squares with exact smoothness constants and minimiser.

Worker i holds A_i ∈ R^{m×d}, b_i ∈ R^m and

    f_i(x) = ½ ‖A_i x − b_i‖² + λ Σ_j x_j² / (1 + x_j²),        f(x) = (1/n) Σ_i f_i(x),

the form of the EF21-W brief (λ = 0 gives plain least squares; λ > 0 adds the non-convex regulariser
of :mod:`commlab.problems.penalty`). Constants:

    L_i = λ_max(A_iᵀA_i) + 2λ,     L = λ_max((1/n) Σ_i A_iᵀA_i) + 2λ,

exact for λ = 0 (attained by the top eigenvector) and tight upper bounds for λ > 0. For λ = 0 the
minimiser x* solves the normal equations (Σ_i A_iᵀA_i) x* = Σ_i A_iᵀ b_i (minimum-norm solution if
singular), and μ = λ_min((1/n) Σ_i A_iᵀA_i).

Two heterogeneity knobs in :func:`heterogeneous_least_squares`:

* smoothness: worker i's A_i is multiplied by s_i (``heavy_frac``/``scale``, or explicit ``scales``),
  so L_i ∝ s_i². A few heavy workers make L_AM ≪ L_QM, the regime of EF21-W;
* data: worker i's planted solution is x_true + ζ·u_i (u_i ~ N(0, I)), so local minimisers differ.
"""

from __future__ import annotations

import math

import torch

from commlab.problems._checks import (
    check_dtype,
    check_generator,
    check_int,
    check_nonnegative,
    check_positive,
    check_real_in,
    check_tensor,
)
from commlab.problems.finite_sum import FiniteSum, worker_matvec, worker_rmatvec, worker_scales
from commlab.problems.penalty import PENALTY_SMOOTHNESS, nonconvex_penalty, nonconvex_penalty_grad
from commlab.problems.smoothness import lambda_max


class HeterogeneousLeastSquares(FiniteSum):
    """f(x) = (1/n) Σ_i [½‖A_i x − b_i‖² + λ Σ_j x_j²/(1+x_j²)].

    Args:
        A: data matrices, float tensor [n, m, d].
        b: targets, float tensor [n, m].
        lam: weight λ ≥ 0 of the non-convex regulariser.

    Attributes:
        n, d, m: workers, dimension, rows per worker.
        L_i: float64 [n], per-worker smoothness constants. L: float, smoothness of f.
        x_star: [d] minimiser in the problem's dtype (None if λ > 0, where f is non-convex).
        f_star: float, f(x*) computed in float64 (None if λ > 0).
        mu: float, strong-convexity constant of f (0 if singular; None if λ > 0).
    """

    def __init__(self, A: torch.Tensor, b: torch.Tensor, lam: float = 0.0):
        if not isinstance(A, torch.Tensor) or A.ndim != 3:
            raise ValueError("A must be a float tensor of shape [n, m, d]")
        n, m, d = A.shape
        check_tensor("A", A, ((n, m, d),))
        check_tensor("b", b, ((n, m),))
        self.lam = check_nonnegative("lam", lam)
        self.n, self.m, self.d = n, m, d
        self.dtype = check_dtype(A.dtype)
        self.A, self.b = A, b.to(A.dtype)
        A64, b64 = A.double(), b.double()
        grams = A64.transpose(1, 2) @ A64  # [n, d, d]
        self.L_i = lambda_max(grams) + PENALTY_SMOOTHNESS * self.lam
        self.L = float(lambda_max(grams.mean(0))) + PENALTY_SMOOTHNESS * self.lam
        self.x_star = self.f_star = self.mu = None
        if self.lam == 0.0:
            solution = torch.linalg.lstsq(A64.reshape(n * m, d), b64.reshape(n * m, 1), driver="gelsd").solution
            x64 = solution[:, 0]
            self.x_star = x64.to(self.dtype)
            self.f_star = float(0.5 * (A64 @ x64 - b64).square().sum(-1).mean())
            self.mu = max(0.0, float(torch.linalg.eigvalsh(grams.mean(0))[0]))

    def _losses(self, x: torch.Tensor) -> torch.Tensor:
        residual = worker_matvec(self.A, x) - self.b
        return 0.5 * residual.square().sum(-1) + nonconvex_penalty(x, self.lam)

    def _grads(self, x: torch.Tensor) -> torch.Tensor:
        residual = worker_matvec(self.A, x) - self.b
        return worker_rmatvec(self.A, residual) + nonconvex_penalty_grad(x, self.lam)


def heterogeneous_least_squares(n: int, d: int, m: int, *, generator: torch.Generator, heavy_frac: float = 0.0,
                                scale: float = 1.0, scales: torch.Tensor | None = None, zeta: float = 0.0,
                                noise: float = 0.1, lam: float = 0.0,
                                dtype: torch.dtype = torch.float32) -> HeterogeneousLeastSquares:
    """Draw a heterogeneous least-squares problem (EF21-W brief, "Data and model").

    A_i = s_i · G_i with G_i i.i.d. N(0, 1/m) entries [m, d]; b_i = A_i (x_true + ζ u_i) + noise · ε_i
    with x_true, u_i ~ N(0, I_d), ε_i ~ N(0, I_m). All draws are made in float64 from ``generator``
    and then cast, so the float32 and float64 problems hold the same data.

    Args:
        n, d, m: workers, dimension, rows per worker (each ≥ 1).
        generator: torch.Generator for all draws.
        heavy_frac: fraction in [0, 1] of "heavy" workers (the first round(heavy_frac·n)) whose A_i is
            multiplied by ``scale`` (L_i grows by scale²).
        scale: multiplier (> 0) of the heavy workers.
        scales: explicit per-worker multipliers s_i, tensor [n] of positive numbers; overrides
            ``heavy_frac``/``scale`` (e.g. ``torch.logspace(0, 2, n)`` spreads L_i over four decades).
        zeta: spread (≥ 0) of the per-worker planted solutions (data heterogeneity).
        noise: standard deviation (≥ 0) of the target noise.
        lam: weight (≥ 0) of the non-convex regulariser.
        dtype: torch.float32 (default) or torch.float64.
    """
    n, d, m = check_int("n", n, low=1), check_int("d", d, low=1), check_int("m", m, low=1)
    check_generator(generator)
    heavy_frac = check_real_in("heavy_frac", heavy_frac, 0.0, 1.0)
    scale = check_positive("scale", scale)
    zeta, noise = check_nonnegative("zeta", zeta), check_nonnegative("noise", noise)
    check_dtype(dtype)
    if scales is None:
        scales = worker_scales(n, heavy_frac, scale)
    else:
        check_tensor("scales", scales, ((n,),))
        if not bool((scales > 0).all()):
            raise ValueError("scales must be > 0")
        scales = scales.double()
    f64 = torch.float64
    x_true = torch.randn(d, generator=generator, dtype=f64)
    spread = torch.randn(n, d, generator=generator, dtype=f64)
    A = torch.randn(n, m, d, generator=generator, dtype=f64) / math.sqrt(m) * scales[:, None, None]
    eps = torch.randn(n, m, generator=generator, dtype=f64)
    b = worker_matvec(A, x_true + zeta * spread) + noise * eps
    return HeterogeneousLeastSquares(A.to(dtype), b.to(dtype), lam=lam)

