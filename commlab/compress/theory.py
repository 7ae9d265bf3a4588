"""Theoretical step sizes of error feedback.

EF21 (Richtárik, Sokolov, Fatkhullin 2021) with a contractive compressor of constant α
(E‖C(v) − v‖² ≤ (1 − α)‖v‖²) on f = (1/n) Σ_i f_i, f L-smooth and f_i L_i-smooth, converges in the
non-convex case with

    θ = 1 − sqrt(1 − α),   β = (1 − α) / (1 − sqrt(1 − α)),   γ = 1 / (L + L̃ · sqrt(β/θ)),

where the classical analysis takes L̃ = L_QM = sqrt((1/n) Σ L_i²) and "Error Feedback Reloaded"
(Richtárik, Gasanov, Burlachenko 2024) shows that L̃ = L_AM = (1/n) Σ L_i suffices (for EF21-W, and
for EF21 itself). sqrt(β/θ) ≈ 2/α for small α.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

MEANS = ("AM", "QM")


def ef21_factor(alpha: float) -> float:
    """sqrt(β/θ) of the EF21 step size for a compressor with constant ``alpha`` in (0, 1] (0 at α = 1)."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 < alpha <= 1:
        raise ValueError(f"alpha must be a real number in (0, 1], got {alpha!r}")
    root = math.sqrt(1 - alpha)
    if root == 0.0:
        return 0.0
    theta = 1 - root
    beta = (1 - alpha) / (1 - root)
    return math.sqrt(beta / theta)


def ef21_stepsize(L: float, L_i, alpha: float, mean: str = "AM") -> float:
    """The EF21 theory step γ = 1 / (L + L̃ sqrt(β/θ)), with L̃ the ``mean`` of the ``L_i``.

    Args:
        L: smoothness constant of f (> 0).
        L_i: per-worker smoothness constants, shape [n] (tensor or sequence of positive numbers).
        alpha: contraction constant of the compressor, in (0, 1] (Top-k: k/d).
        mean: ``"AM"`` (arithmetic mean, the improved analysis / EF21-W) or ``"QM"`` (quadratic mean,
            classical EF21).
    """
    if isinstance(L, bool) or not isinstance(L, Real) or not (math.isfinite(L) and L > 0):
        raise ValueError(f"L must be a finite number > 0, got {L!r}")
    if mean not in MEANS:
        raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")
    values = torch.as_tensor(L_i, dtype=torch.float64)
    if values.ndim != 1 or values.numel() == 0 or not bool((torch.isfinite(values) & (values > 0)).all()):
        raise ValueError("L_i must be a non-empty 1-D sequence of finite numbers > 0")
    L_tilde = float(values.mean()) if mean == "AM" else float(values.square().mean().sqrt())
    return 1.0 / (L + L_tilde * ef21_factor(alpha))
