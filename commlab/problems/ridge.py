"""Heterogeneous ridge regression: every node its own features' scales and its own ground truth.

Node i holds X_i ∈ R^{m×d}, y_i ∈ R^m and (DADAO brief, "Problem")

    f_i(x) = (1/m) ‖X_i x − y_i‖² + (λ/2) ‖x‖²,        f(x) = (1/n) Σ_i f_i(x).

Each f_i is a quadratic: ∇f_i(x) = H_i x − c_i with

    H_i = (2/m) X_iᵀX_i + λ I,     c_i = (2/m) X_iᵀ y_i,

so L_i = λ_max(H_i) and μ_i = λ_min(H_i) exactly, and x* = (Σ_i H_i)⁻¹ Σ_i c_i in closed form.
Decentralised methods such as DADAO take the worst case over nodes, L = max_i L_i and μ = min_i μ_i
(:attr:`HeterogeneousRidge.L_max`, :attr:`HeterogeneousRidge.mu_min`); the mean f has its own
smoothness :attr:`L` and strong convexity :attr:`mu`.

:func:`heterogeneous_ridge` draws X_i = G_i · diag(s_i) with G_i i.i.d. N(0, 1) entries and per-node,
per-feature scales log s_ik = ℓ_k + σ g_ik: a profile ℓ_k evenly spaced over
[−log ``feature_spread``, log ``feature_spread``] shared by all nodes (it sets the conditioning, about
spread⁴ before the ridge term) and node i's own log-normal scaling σ g_ik (σ = ``node_spread``,
g_ik ~ N(0, 1)); y_i = X_i (x_true + ζ u_i) + noise · ε_i with x_true, u_i ~ N(0, I_d) and
ε_i ~ N(0, I_m): node i's ground truth is offset by ζ u_i.
"""

from __future__ import annotations

import numpy as np
import torch

from commlab.problems._checks import check_generator, check_int, check_nonnegative, check_positive, check_tensor
from commlab.problems.finite_sum import FiniteSum, worker_matvec


class HeterogeneousRidge(FiniteSum):
    """f(x) = (1/n) Σ_i [(1/m)‖X_i x − y_i‖² + (λ/2)‖x‖²], float64.

    Args:
        X: features, float tensor [n, m, d]. y: targets, float tensor [n, m].
        lam: ridge weight λ > 0 (every f_i is then λ-strongly convex at least).

    Attributes:
        n, m, d: nodes, samples per node, dimension.
        H: [n, d, d] Hessians H_i; c: [n, d] so that ∇f_i(x) = H_i x − c_i (float64 tensors).
        L_i, mu_i: float64 [n], λ_max(H_i) and λ_min(H_i).
        L_max, mu_min: max_i L_i and min_i μ_i (DADAO's L and μ). L, mu: those of the mean f.
        x_star: [d] float64 minimiser of f; f_star: f(x*).
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, lam: float):
        if not isinstance(X, torch.Tensor) or X.ndim != 3:
            raise ValueError("X must be a float tensor of shape [n, m, d]")
        n, m, d = X.shape
        check_tensor("X", X, ((n, m, d),))
        check_tensor("y", y, ((n, m),))
        self.lam = check_positive("lam", lam)
        self.n, self.m, self.d = n, m, d
        self.dtype = torch.float64
        self.X, self.y = X.double(), y.double()
        self.H = 2.0 / m * self.X.transpose(1, 2) @ self.X + self.lam * torch.eye(d, dtype=torch.float64)
        self.c = 2.0 / m * (self.y.unsqueeze(1) @ self.X).squeeze(1)
        spectrum = torch.linalg.eigvalsh(self.H)
        self.L_i, self.mu_i = spectrum[:, -1], spectrum[:, 0]
        self.L_max, self.mu_min = float(self.L_i.max()), float(self.mu_i.min())
        mean = torch.linalg.eigvalsh(self.H.mean(0))
        self.L, self.mu = float(mean[-1]), float(mean[0])
        self.x_star = torch.linalg.solve(self.H.sum(0), self.c.sum(0))
        self.f_star = float(self._losses(self.x_star).mean())

    def _losses(self, x: torch.Tensor) -> torch.Tensor:
        residual = worker_matvec(self.X, x) - self.y
        sq = x.square().sum(-1)
        return residual.square().mean(-1) + 0.5 * self.lam * sq

    def _grads(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 1:
            return self.H @ x - self.c
        return (self.H @ x.unsqueeze(-1)).squeeze(-1) - self.c

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(H [n, d, d], c [n, d]) as contiguous float64 numpy arrays, for event loops that call
        ∇f_i(x) = H[i] @ x − c[i] one node at a time."""
        return np.ascontiguousarray(self.H.numpy()), np.ascontiguousarray(self.c.numpy())

    def relative_distance(self, x) -> float:
        """(1/n) Σ_i ‖x_i − x*‖² / ‖x*‖² for per-node iterates ``x`` [n, d] (array or tensor)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.n, self.d):
            raise ValueError(f"x must have shape [{self.n}, {self.d}], got {list(x.shape)}")
        star = self.x_star.numpy()
        return float(np.mean(np.sum((x - star) ** 2, axis=1)) / np.sum(star**2))


def heterogeneous_ridge(n: int, d: int, m: int = 50, *, generator: torch.Generator, lam: float = 0.1,
                        feature_spread: float = 2.0, node_spread: float = 0.3, zeta: float = 1.0,
                        noise: float = 0.1) -> HeterogeneousRidge:
    """Draw a heterogeneous ridge problem (see the module docstring); all draws float64 from ``generator``.

    Args:
        n, d, m: nodes, dimension, samples per node (each >= 1).
        generator: torch.Generator for every draw.
        lam: ridge weight λ > 0.
        feature_spread: >= 1; the shared scales of the d features run from 1/spread to spread.
        node_spread: >= 0, σ of node i's own log-normal feature scaling.
        zeta: >= 0, spread of the per-node ground-truth offsets ζ u_i.
        noise: >= 0, standard deviation of the target noise.
    """
    n, d, m = check_int("n", n, low=1), check_int("d", d, low=1), check_int("m", m, low=1)
    check_generator(generator)
    spread = check_positive("feature_spread", feature_spread)
    if spread < 1:
        raise ValueError(f"feature_spread must be >= 1, got {feature_spread!r}")
    zeta, noise = check_nonnegative("zeta", zeta), check_nonnegative("noise", noise)
    sigma = check_nonnegative("node_spread", node_spread)
    f64 = torch.float64
    x_true = torch.randn(d, generator=generator, dtype=f64)
    offsets = torch.randn(n, d, generator=generator, dtype=f64)
    profile = torch.linspace(-1.0, 1.0, d, dtype=f64) * float(np.log(spread))  # ℓ_k, shared
    log_scales = profile + sigma * torch.randn(n, d, generator=generator, dtype=f64)  # + σ g_ik, node i's own
    X = torch.randn(n, m, d, generator=generator, dtype=f64) * log_scales.exp()[:, None, :]
    eps = torch.randn(n, m, generator=generator, dtype=f64)
    y = worker_matvec(X, x_true + zeta * offsets) + noise * eps
    return HeterogeneousRidge(X, y, lam)
