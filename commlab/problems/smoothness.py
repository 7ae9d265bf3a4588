"""Smoothness constants of finite sums: L_i, their means, and exact largest eigenvalues.

For f(x) = (1/n) Σ_i f_i(x) with f_i L_i-smooth, error-feedback theory uses

    L_AM  = (1/n) Σ_i L_i                 (arithmetic mean; EF21-W, Richtárik et al. 2024)
    L_QM  = sqrt((1/n) Σ_i L_i²)          (quadratic mean; classical EF21)
    L_var = L_QM² − L_AM²                 (variance of the L_i), L_AM ≤ L_QM ≤ sqrt(n)·L_AM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SmoothnessConstants:
    """Summary of per-worker smoothness constants (all floats)."""

    L: float  # smoothness of the mean f
    L_am: float  # arithmetic mean of the L_i
    L_qm: float  # quadratic mean of the L_i
    L_max: float  # largest L_i

    @property
    def L_var(self) -> float:
        """L_QM² − L_AM² (never negative)."""
        return max(0.0, self.L_qm**2 - self.L_am**2)

    @property
    def qm_over_am(self) -> float:
        """L_QM / L_AM: the EF21-W gain factor, in [1, sqrt(n)]."""
        return self.L_qm / self.L_am


def smoothness_constants(L_i: torch.Tensor, L: float) -> SmoothnessConstants:
    """Means of the per-worker constants ``L_i`` (shape [n], positive) and the constant ``L`` of f."""
    if not isinstance(L_i, torch.Tensor) or L_i.ndim != 1 or L_i.numel() == 0:
        raise ValueError("L_i must be a non-empty 1-D tensor [n]")
    if not bool((L_i > 0).all()) or not bool(torch.isfinite(L_i).all()):
        raise ValueError("L_i must be finite and > 0")
    if not (isinstance(L, float | int) and math.isfinite(L) and L > 0):
        raise ValueError(f"L must be a finite positive number, got {L!r}")
    values = L_i.double()
    return SmoothnessConstants(L=float(L), L_am=float(values.mean()), L_qm=float(values.square().mean().sqrt()),
                               L_max=float(values.max()))


def lambda_max(symmetric: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue of each symmetric matrix in ``symmetric`` ([..., d, d]), in float64: [...]."""
    return torch.linalg.eigvalsh(symmetric.double())[..., -1]
