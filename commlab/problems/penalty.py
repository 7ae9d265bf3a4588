"""The non-convex regulariser of the EF21 / EF21-W / EControl experiments.

    r(x) = λ Σ_j x_j² / (1 + x_j²),      ∇r(x)_j = λ · 2 x_j / (1 + x_j²)²

Its Hessian is diagonal with entries λ (2 − 6 x_j²) / (1 + x_j²)³ ∈ [−λ/2, 2λ], so r is 2λ-smooth
(the bound is attained at x_j = 0) and adds 2λ to every smoothness constant.
"""

from __future__ import annotations

import torch

#: smoothness constant of r per unit λ: sup_t |d²/dt² t²/(1+t²)| = 2 (at t = 0)
PENALTY_SMOOTHNESS = 2.0


def nonconvex_penalty(x: torch.Tensor, lam: float) -> torch.Tensor:
    """r(x) over the last axis: x [..., d] -> [...]."""
    sq = x.square()
    return lam * (sq / (1.0 + sq)).sum(-1)


def nonconvex_penalty_grad(x: torch.Tensor, lam: float) -> torch.Tensor:
    """∇r(x), same shape as x."""
    return lam * 2.0 * x / (1.0 + x.square()).square()
