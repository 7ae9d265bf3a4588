"""Weighted least squares over K federated clients (Lari, Arablouei, Gogineni & Werner, 2024, §II).

Client k holds X_k ∈ R^{m_k×d}, positive weights W_k = diag(ω_k) and targets y_k ∈ R^{m_k};
its cost and the global problem are

    J_k(w) = ‖y_k − X_k w‖²_{W_k} = (y_k − X_k w)ᵀ W_k (y_k − X_k w),        min_w Σ_k J_k(w).

With A_k = 2 X_kᵀ W_k X_k and b_k = 2 X_kᵀ W_k y_k, ∇J_k(w) = A_k w − b_k, and the exact WLS solution
is w* = (Σ_k A_k)⁻¹ Σ_k b_k. The brief's data (``briefs/distributed/admm_fl_noisy_links.md``):
X_k ~ N(0, I), ω_k ~ U(0.5, 1.5), y_k = X_k w_true + ν_k with w_true ~ N(0, I_d) and
ν_k ~ N(0, noise_var · I).

Clients of different sizes (``sizes``) are stored padded to m = max_k m_k with zero weights on the
padding rows, so A_k and b_k are exact and every client is one slice of a stacked tensor. A leading
axis of ``runs`` independent problems (one per Monte-Carlo run) is optional.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from commlab.problems._checks import check_dtype, check_generator, check_int, check_nonnegative, check_positive


@dataclass(frozen=True)
class WeightedLeastSquares:
    """K clients' weighted least-squares data and the quantities ADMM uses (shapes with ``R`` only
    when the problem was drawn with ``runs=R``).

    Attributes:
        X: features [R?, K, m, d]; weights: ω_k [R?, K, m] (0 on padding rows); y: targets [R?, K, m].
        A: 2 X_kᵀ W_k X_k [R?, K, d, d]; b: 2 X_kᵀ W_k y_k [R?, K, d].
        w_true: the planted model [R?, d]; w_star: the exact WLS solution (Σ A_k)⁻¹ Σ b_k [R?, d].
        sizes: samples per client m_k, int64 [K].
    """

    X: torch.Tensor
    weights: torch.Tensor
    y: torch.Tensor
    A: torch.Tensor
    b: torch.Tensor
    w_true: torch.Tensor
    w_star: torch.Tensor
    sizes: torch.Tensor

    @property
    def clients(self) -> int:
        return self.A.shape[-3]

    @property
    def dim(self) -> int:
        return self.A.shape[-1]

    def costs(self, w: torch.Tensor) -> torch.Tensor:
        """J_k(w) for w [R?, d] (or [d]): [R?, K]."""
        residual = self.y - (self.X @ w.unsqueeze(-2).unsqueeze(-1)).squeeze(-1)
        return (self.weights * residual.square()).sum(-1)


def weighted_least_squares_clients(clients: int, dim: int, samples: int = 20, *, generator: torch.Generator,
                                   sizes: torch.Tensor | None = None, runs: int | None = None,
                                   weight_low: float = 0.5, weight_high: float = 1.5, noise_var: float = 0.01,
                                   dtype: torch.dtype = torch.float64) -> WeightedLeastSquares:
    """Draw the brief's K-client WLS problem (all draws from ``generator``, in float64, then cast).

    Args:
        clients: K ≥ 1. dim: d ≥ 1. samples: m_k for every client (≥ 1), unless ``sizes`` is given.
        generator: torch.Generator for every draw.
        sizes: heterogeneous client sizes, an integer tensor [K] of values ≥ 1 (overrides ``samples``).
        runs: None for one problem, or R ≥ 1 independent problems on a leading axis.
        weight_low, weight_high: ω ~ U(weight_low, weight_high), 0 < low ≤ high.
        noise_var: variance (≥ 0) of the target noise ν.
        dtype: torch.float64 (default) or torch.float32.
    """
    K, d = check_int("clients", clients, low=1), check_int("dim", dim, low=1)
    check_generator(generator)
    check_dtype(dtype)
    low, high = check_positive("weight_low", weight_low), check_positive("weight_high", weight_high)
    if high < low:
        raise ValueError(f"weight_high must be >= weight_low, got {high} < {low}")
    noise_var = check_nonnegative("noise_var", noise_var)
    if sizes is None:
        sizes = torch.full((K,), check_int("samples", samples, low=1), dtype=torch.int64)
    else:
        if not isinstance(sizes, torch.Tensor) or sizes.dtype.is_floating_point or sizes.shape != (K,):
            raise ValueError(f"sizes must be an integer tensor of shape [{K}]")
        if bool((sizes < 1).any()):
            raise ValueError("sizes must be >= 1")
        sizes = sizes.to(torch.int64)
    lead = () if runs is None else (check_int("runs", runs, low=1),)
    m, f64 = int(sizes.max()), torch.float64
    w_true = torch.randn(*lead, d, generator=generator, dtype=f64)
    X = torch.randn(*lead, K, m, d, generator=generator, dtype=f64)
    weights = low + (high - low) * torch.rand(*lead, K, m, generator=generator, dtype=f64)
    weights = weights * (torch.arange(m)[None, :] < sizes[:, None])  # zero weight on padding rows
    y = (X @ w_true.unsqueeze(-2).unsqueeze(-1)).squeeze(-1)  # X_k w_true
    y = y + noise_var ** 0.5 * torch.randn(*lead, K, m, generator=generator, dtype=f64)
    XtW = X.transpose(-1, -2) * weights.unsqueeze(-2)  # X_kᵀ W_k  [.., K, d, m]
    A = 2 * XtW @ X  # A_k = 2 X_kᵀ W_k X_k
    b = 2 * (XtW @ y.unsqueeze(-1)).squeeze(-1)  # b_k = 2 X_kᵀ W_k y_k
    w_star = torch.linalg.solve(A.sum(-3), b.sum(-2))  # w* = (Σ A_k)⁻¹ Σ b_k
    cast = lambda t: t.to(dtype)  # noqa: E731
    return WeightedLeastSquares(cast(X), cast(weights), cast(y), cast(A), cast(b), cast(w_true), cast(w_star), sizes)
