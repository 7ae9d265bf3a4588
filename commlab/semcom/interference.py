"""Statistics of interference after de-shuffling: is it white and decorrelated, not merely Gaussian-looking?

All statistics remove the scalar (per-example) mean of each vector first; without that, the DC term of
the features shows up as spurious correlation (brief pitfall).
"""

from __future__ import annotations

import numpy as np
import torch

from commlab.channels._checks import require_complex


def _centre(v: torch.Tensor) -> torch.Tensor:
    return v - v.mean(dim=-1, keepdim=True)


def lag1_autocorrelation(v: torch.Tensor) -> float:
    """Mean over examples of ``Re Σ_i v_i* v_{i+1} / Σ_i |v_i|²`` of the centred complex vectors ``[B, n]``."""
    require_complex("v", v)
    c = _centre(v.to(torch.complex128))
    num = (c[:, :-1].conj() * c[:, 1:]).sum(dim=1).real
    return float((num / c.abs().square().sum(dim=1)).mean())


def correlation(v: torch.Tensor, s: torch.Tensor) -> float:
    """Mean over examples of the normalised correlation ``Re <v, s> / (‖v‖‖s‖)`` of the centred vectors ``[B, n]``."""
    require_complex("v", v)
    require_complex("s", s)
    if v.shape != s.shape:
        raise ValueError(f"v and s must have the same shape, got {tuple(v.shape)} and {tuple(s.shape)}")
    a, b = _centre(v.to(torch.complex128)), _centre(s.to(torch.complex128))
    num = (a.conj() * b).sum(dim=1).real
    return float((num / (a.abs().square().sum(dim=1) * b.abs().square().sum(dim=1)).sqrt()).mean())


def interference_statistics(interference: torch.Tensor, signal: torch.Tensor, max_samples: int = 20_000) -> dict:
    """Whiteness, decorrelation and marginal shape of ``interference`` ``[B, n]`` against the wanted ``signal``.

    Returns ``lag1`` (lag-1 autocorrelation), ``corr_signal`` (correlation with the wanted signal),
    ``excess_kurtosis`` and ``ks`` (Kolmogorov-Smirnov distance to a normal) of the standardised real and
    imaginary parts pooled (at most ``max_samples`` of them, taken in order).
    """
    from scipy import stats

    c = _centre(interference.to(torch.complex128))
    parts = torch.cat([c.real.reshape(-1), c.imag.reshape(-1)]).numpy()[:max_samples]
    z = (parts - parts.mean()) / parts.std()
    return {
        "lag1": lag1_autocorrelation(interference),
        "corr_signal": correlation(interference, signal),
        "excess_kurtosis": float(np.mean(z**4) - 3.0),
        "ks": float(stats.kstest(z, "norm").statistic),
    }


def shuffled_interference_moments(features: torch.Tensor, gains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-real variance of the de-shuffled interference ``Σ_j g_j · (a random symbol of z_j)``.

    Args:
        features: complex ``[N, n]`` training features (the prior of every user's symbols).
        gains: complex ``[B, J]`` relative gains ``h_j/h_k`` of the J interferers (ones for AWGN).

    Returns ``mean`` (complex ``[B]``: ``μ̄·Σ_j g_j``, with ``μ̄`` the mean symbol) and ``var`` (real ``[B]``:
    ``Σ_j |g_j|²·(E|z|² − |μ̄|²)/2`` per real component).
    """
    require_complex("features", features)
    require_complex("gains", gains)
    mu = features.mean()
    spread = (features - mu).abs().square().mean()
    return mu * gains.sum(dim=1), gains.abs().square().sum(dim=1) * spread / 2
