"""Distances between two (optionally weighted) samples ``x`` ``[N, d]`` and ``y`` ``[M, d]``, torch float64.

* :func:`mmd_rbf`: maximum mean discrepancy with the Gaussian kernel ``k(a, b) = exp(−‖a − b‖² / (2ℓ²))``,
  the V-statistic ``MMD² = Σ w_i w_j k(x_i, x_j) + Σ v_i v_j k(y_i, y_j) − 2 Σ w_i v_j k(x_i, y_j)``
  (Gretton et al., 2012), returned as ``√max(MMD², 0)``; computed in row blocks so memory stays small.
* :func:`sliced_wasserstein`: ``SW_p = (E_θ W_p^p(θᵀx, θᵀy))^{1/p}`` over ``n_projections`` uniform
  directions θ on the sphere, each 1-D ``W_p`` exact from the quantile functions of the weighted samples.
* :func:`frechet_distance`: the Fréchet (2-Wasserstein²) distance between Gaussians fitted to the two samples,
  ``FD = ‖μ_x − μ_y‖² + tr(Σ_x + Σ_y − 2(Σ_x^{1/2} Σ_y Σ_x^{1/2})^{1/2})`` (the FID formula of Heusel et al.,
  2017, on whatever features are passed); :func:`gaussian_frechet_distance` is the same for given moments.
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


def _psd_sqrt(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues below 0 from round-off set to 0)."""
    vals, vecs = torch.linalg.eigh(0.5 * (a + a.T))
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def gaussian_frechet_distance(mean_x, cov_x, mean_y, cov_y) -> float:
    """Fréchet distance between N(mean_x, cov_x) and N(mean_y, cov_y): means ``[d]``, covariances ``[d, d]``
    symmetric PSD; ``‖μ_x − μ_y‖² + tr Σ_x + tr Σ_y − 2 tr (Σ_x^{1/2} Σ_y Σ_x^{1/2})^{1/2}``, in squared
    feature units."""
    mx, my = (torch.as_tensor(m, dtype=DTYPE) for m in (mean_x, mean_y))
    cx, cy = (torch.as_tensor(c, dtype=DTYPE) for c in (cov_x, cov_y))
    d = mx.shape[0] if mx.ndim == 1 else -1
    if mx.ndim != 1 or my.shape != (d,) or cx.shape != (d, d) or cy.shape != (d, d):
        raise ValueError(f"means must be [d] and covariances [d, d] with one d, got {tuple(mx.shape)}, "
                         f"{tuple(cx.shape)}, {tuple(my.shape)}, {tuple(cy.shape)}")
    if not all(bool(torch.isfinite(a).all()) for a in (mx, my, cx, cy)):
        raise ValueError("means and covariances must be finite")
    for name, c in (("cov_x", cx), ("cov_y", cy)):
        if not torch.allclose(c, c.T, rtol=1e-6, atol=1e-9 * max(1.0, float(c.abs().max()))):
            raise ValueError(f"{name} must be symmetric")
    root_x = _psd_sqrt(cx)
    cross = torch.linalg.eigvalsh(root_x @ cy @ root_x).clamp_min(0).sqrt().sum()    # tr (Σx^½ Σy Σx^½)^½
    return float((mx - my).square().sum() + torch.trace(cx) + torch.trace(cy) - 2 * cross)


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to ``x`` ``[N, d]`` and ``y`` ``[M, d]`` (sample means and
    unbiased covariances; N, M >= 2). Biased upwards at small N, M: compare arms at equal sample sizes."""
    x, _ = _sample("x", x, None)
    y, _ = _sample("y", y, None, x.shape[1])
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"x and y need at least 2 rows each for a covariance, got {x.shape[0]} and {y.shape[0]}")
    return gaussian_frechet_distance(x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1]),
                                     y.mean(0), torch.cov(y.T).reshape(y.shape[1], y.shape[1]))
