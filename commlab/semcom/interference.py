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


def autocorrelation(v: torch.Tensor, max_lag: int) -> np.ndarray:
    """Mean over examples of ``Re Σ_i v_i* v_{i+l} / Σ_i |v_i|²`` for lags ``l = 0 … max_lag`` of the centred
    complex vectors ``v`` ``[B, n]``; returns float ``[max_lag + 1]`` (entry 0 is 1)."""
    require_complex("v", v)
    if not 0 <= max_lag < v.shape[-1]:
        raise ValueError(f"max_lag must be in [0, {v.shape[-1] - 1}], got {max_lag}")
    c = _centre(v.to(torch.complex128))
    energy = c.abs().square().sum(dim=1)
    return np.array([float(((c[:, :c.shape[1] - lag].conj() * c[:, lag:]).sum(dim=1).real / energy).mean())
                     for lag in range(max_lag + 1)])


def lag1_autocorrelation(v: torch.Tensor) -> float:
    """Lag-1 value of :func:`autocorrelation`."""
    return float(autocorrelation(v, 1)[1])


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


def feature_moments(features: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean feature vector ``μ`` (complex ``[n]``) and spread ``s² = mean_i E|z_i − μ_i|²`` of features ``[N, n]``.

    A de-shuffled interferer ``Π_k⁻¹Π_j z_j`` has mean ``Π_k⁻¹Π_j μ`` and, per symbol, about ``s²`` of variance.
    """
    require_complex("features", features)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, n_symbols], got shape {tuple(features.shape)}")
    mu = features.mean(dim=0)
    return mu, float((features - mu).abs().square().mean())
