"""Distances between two (optionally weighted) samples ``x`` ``[N, d]`` and ``y`` ``[M, d]``, torch float64.

* :func:`mmd_rbf`: maximum mean discrepancy with the Gaussian kernel ``k(a, b) = exp(−‖a − b‖² / (2ℓ²))``,
  the V-statistic ``MMD² = Σ w_i w_j k(x_i, x_j) + Σ v_i v_j k(y_i, y_j) − 2 Σ w_i v_j k(x_i, y_j)``
  (Gretton et al., 2012), returned as ``√max(MMD², 0)``; computed in row blocks so memory stays small.
* :func:`sliced_wasserstein`: ``SW_p = (E_θ W_p^p(θᵀx, θᵀy))^{1/p}`` over ``n_projections`` uniform
  directions θ on the sphere, each 1-D ``W_p`` exact from the quantile functions of the weighted samples.
"""

from __future__ import annotations

import math

import torch

from commlab._checks import check_int, check_positive

DTYPE = torch.float64


def _sample(name: str, x, weights, d: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0 or (d is not None and x.shape[1] != d):
        raise ValueError(f"{name} must be [N >= 1, {d if d is not None else 'd'}], got shape {tuple(x.shape)}")
    x = x.to(DTYPE)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    if weights is None:
        return x, torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=DTYPE)
    w = torch.as_tensor(weights, dtype=DTYPE)
    if w.shape != (x.shape[0],) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError(f"weights of {name} must be [{x.shape[0]}] finite, non-negative, with a positive sum")
    return x, w / w.sum()


def _kernel_mean(a, wa, b, wb, bandwidth: float, block: int = 2048) -> float:
    total = torch.zeros((), dtype=DTYPE)
    for i in range(0, a.shape[0], block):
        k = torch.exp(-torch.cdist(a[i:i + block], b).square() / (2 * bandwidth**2))
        total = total + wa[i:i + block] @ k @ wb
    return float(total)


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, *, bandwidth: float, x_weights=None, y_weights=None) -> float:
    """MMD (not squared) between ``x`` ``[N, d]`` and ``y`` ``[M, d]`` with an RBF kernel of length ``bandwidth``.

    Weights (non-negative, normalised here) default to uniform; the V-statistic is biased upwards by
    about ``(1 − E k)/N + (1 − E k)/M``, so it falls with the sample sizes."""
    ell = check_positive("bandwidth", bandwidth)
    x, wx = _sample("x", x, x_weights)
    y, wy = _sample("y", y, y_weights, x.shape[1])
    mmd2 = (_kernel_mean(x, wx, x, wx, ell) + _kernel_mean(y, wy, y, wy, ell)
            - 2 * _kernel_mean(x, wx, y, wy, ell))
    return math.sqrt(max(mmd2, 0.0))


def _wasserstein_1d(u, wu, v, wv, p: float) -> torch.Tensor:
    """``W_p^p`` between weighted 1-D samples, one per column: ``u`` ``[N, L]``, ``v`` ``[M, L]``."""
    u, iu = torch.sort(u, dim=0)
    v, iv = torch.sort(v, dim=0)
    cu = torch.cumsum(wu[iu], dim=0)                                  # [N, L]
    cv = torch.cumsum(wv[iv], dim=0)
    levels, _ = torch.sort(torch.cat([cu, cv], dim=0), dim=0)         # breakpoints of both quantile functions
    levels = levels.clamp(max=1.0)
    lower = torch.cat([torch.zeros_like(levels[:1]), levels[:-1]], dim=0)
    mid = 0.5 * (levels + lower)
    qu = torch.gather(u, 0, torch.searchsorted(cu.T.contiguous(), mid.T.contiguous()).T.clamp(max=u.shape[0] - 1))
    qv = torch.gather(v, 0, torch.searchsorted(cv.T.contiguous(), mid.T.contiguous()).T.clamp(max=v.shape[0] - 1))
    return ((levels - lower) * (qu - qv).abs() ** p).sum(0)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator, n_projections: int = 128,
                       p: float = 2.0, x_weights=None, y_weights=None) -> float:
    """Sliced ``W_p`` between ``x`` ``[N, d]`` and ``y`` ``[M, d]`` over ``n_projections`` random directions."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    check_int("n_projections", n_projections, low=1)
    p = check_positive("p", p)
    x, wx = _sample("x", x, x_weights)
    y, wy = _sample("y", y, y_weights, x.shape[1])
    theta = torch.randn((x.shape[1], n_projections), dtype=DTYPE, generator=generator)
    theta = theta / theta.norm(dim=0, keepdim=True)
    return float(_wasserstein_1d(x @ theta, wx, y @ theta, wy, p).mean() ** (1 / p))
