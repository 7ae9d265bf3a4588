"""Convex classification-calibrated margin losses for binary classification, and EnsLoss's random ones.

Binary labels y ∈ {−1, +1}, a real score f(x) and the margin z = y·f(x). A margin loss φ is
*classification-calibrated* when, for every conditional probability η = P(y = +1 | x) ≠ 1/2, the
minimiser α* of the conditional risk

    C_η(α) = η φ(α) + (1 − η) φ(−α)

has the Bayes sign, sign(α*) = sign(2η − 1) (Bartlett, Jordan & McAuliffe, 2006). For a **convex** φ
this holds if and only if φ is differentiable at 0 with φ'(0) < 0 (their Theorem 6); convexity is
the same as φ' non-decreasing. The fixed losses here (:data:`LOSSES`) are

    logistic  φ(z) = log(1 + e^{−z})     φ'(0) = −1/2
    hinge     φ(z) = max(0, 1 − z)        φ'(0) = −1   (the kink is at z = 1, not at 0)
    exponential φ(z) = e^{−z}             φ'(0) = −1

**EnsLoss** ("EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing Overfitting in
Classification", Ben Dai, 2024; ICML 2025) never writes φ down. At every SGD step it draws a random
*derivative* g = φ' on the batch's margins that satisfies the two conditions above, and back-propagates
Σ_i g(z_i) ∂z_i/∂θ, i.e. it minimises Σ_i g_i z_i with g detached (:func:`ensloss_surrogate`). Over
the steps this is an ensemble of convex calibrated losses formed in one run ("doubly stochastic"
gradient descent: random batches and random losses). :func:`ensloss_derivatives` is commlab's sampler,
written from the paper's description of the public code (statmlben/ensLoss, read only):

    ξ_i ~ N(0, σ²), i = 1..B
    u_i = BC⁻¹_λ(ξ_i) = (1 + λ ξ_i)_+^{1/λ}   (λ ≠ 0),   e^{ξ_i}  (λ = 0)      ≥ 0
    v = sort(max(−u, −c))                      non-decreasing, in [−c, 0]
    g_{(i)} = v_i                              the i-th smallest margin gets the i-th smallest value
    g_i ← g_i / z_i  for z_i > 1               a decaying −1/z tail beyond the margin 1
    g_i ← g_i − ε                              strictly negative everywhere, so g(0) < 0

Because g is non-decreasing in z and negative, any φ with φ' = g is convex, decreasing and calibrated
(:func:`loss_from_derivatives` integrates it on the sorted margins, for checks). The exact
distribution family of the paper is unverified in detail; λ (``boxcox_lambda``), σ (``scale``) and the
clip c (``clip``) are exposed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from commlab._checks import check_choice, check_nonnegative, check_positive, check_real_number

LOSSES = ("logistic", "hinge", "exponential")
"""The fixed convex calibrated margin losses :func:`margin_loss` knows."""


def _check_margins(z: torch.Tensor, name: str = "margins") -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.dim() != 1 or len(z) == 0 or not z.dtype.is_floating_point:
        raise ValueError(f"{name} must be a non-empty 1-D float tensor, got {getattr(z, 'shape', type(z))}")
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} must be finite")
    return z


def margins(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z = y·f(x) ``[B]`` from real scores ``[B]`` and labels ``[B]`` in {0, 1} (mapped to y = 2·label − 1)."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or not scores.dtype.is_floating_point:
        raise ValueError(f"scores must be a 1-D float tensor [B], got {getattr(scores, 'shape', type(scores))}")
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != tuple(scores.shape):
        raise ValueError(f"labels must be a tensor [{len(scores)}] of 0/1 labels")
    if not torch.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1")
    return (2 * labels.to(scores.dtype) - 1) * scores              # z = y f(x), y = 2·label − 1


def margin_loss(z: torch.Tensor, name: str) -> torch.Tensor:
    """φ(z) ``[B]`` for the loss ``name`` in :data:`LOSSES` (elementwise; differentiable)."""
    check_choice("name", name, LOSSES)
    if not isinstance(z, torch.Tensor) or not z.dtype.is_floating_point:
        raise ValueError("z must be a float tensor")
    if name == "logistic":
        return F.softplus(-z)                                      # log(1 + e^{−z})
    if name == "hinge":
        return torch.relu(1 - z)                                   # max(0, 1 − z)
    return torch.exp(-z)                                           # e^{−z}


def inverse_box_cox(x: torch.Tensor, lam: float) -> torch.Tensor:
    """BC⁻¹_λ(x) = (1 + λx)_+^{1/λ} for λ ≠ 0 and e^x for λ = 0 (≥ 0, non-decreasing in x)."""
    lam = check_real_number("boxcox_lambda", lam)
    if lam == 0.0:
        return torch.exp(x)
    return torch.clamp(1 + lam * x, min=0.0) ** (1.0 / lam)       # (1 + λx)_+^{1/λ}


def ensloss_derivatives(z: torch.Tensor, generator: torch.Generator, *, boxcox_lambda: float = 0.0,
                        scale: float = 1.0, clip: float = 1.0, tail_from: float = 1.0,
                        eps: float = 1e-6) -> torch.Tensor:
    """One random calibrated loss-derivative g ``[B]`` on the margins ``z`` ``[B]`` (detached, z's dtype).

    Args:
        z: margins y·f(x) of the batch (any order; ties get consecutive values).
        generator: the ``torch.Generator`` of the Gaussian draws ξ.
        boxcox_lambda: λ of the inverse Box–Cox map (0: the exponential, so −u is log-normal).
        scale: σ > 0 of the Gaussian draws.
        clip: c > 0, the most negative derivative allowed (|g| ≤ c before the tail and ε).
        tail_from: margins above this get g / z (a ∝ −1/z tail); > 0.
        eps: ε ≥ 0 subtracted at the end, so g < 0 even where u = 0.

    Returns:
        g with g_i ≤ g_j whenever z_i ≤ z_j (non-decreasing: a convex φ) and g < 0 (φ'(0) < 0) when
        ε > 0 or every u > 0.
    """
    z = _check_margins(z).detach()
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    scale, clip = check_positive("scale", scale), check_positive("clip", clip)
    tail_from, eps = check_positive("tail_from", tail_from), check_nonnegative("eps", eps)
    xi = scale * torch.randn(len(z), generator=generator, dtype=torch.float64)  # ξ ~ N(0, σ²)
    values = torch.sort(torch.clamp(-inverse_box_cox(xi, boxcox_lambda), min=-clip)).values  # sort(max(−u, −c))
    g = torch.empty_like(values)
    g[torch.argsort(z, stable=True)] = values                      # i-th smallest margin ↦ i-th smallest value
    zd = z.double()
    tail = zd > tail_from
    g[tail] = g[tail] * tail_from / zd[tail]                       # g ∝ −1/z beyond the margin tail_from
    return (g - eps).to(z.dtype)                                   # strictly negative


def ensloss_surrogate(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The scalar mean_i g_i·z_i with g detached: its gradient is (1/B) Σ_i g_i ∂z_i/∂θ (EnsLoss's step)."""
    if not isinstance(z, torch.Tensor) or not isinstance(g, torch.Tensor) or z.shape != g.shape or z.dim() != 1:
        raise ValueError(f"z and g must be 1-D tensors of one shape, got {getattr(z, 'shape', None)} and "
                         f"{getattr(g, 'shape', None)}")
    return (g.detach() * z).mean()                                 # Σ g(z_i) z_i / B, dL/dz_i = g_i / B


def loss_from_derivatives(z: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_sorted, φ)``: a loss with φ' = g on the sorted margins, by the trapezoid rule, φ(z_sorted[0]) = 0.

    For checks: φ is convex when g is non-decreasing along the sorted margins.
    """
    z, g = _check_margins(z), _check_margins(g, "g")
    if z.shape != g.shape:
        raise ValueError(f"z and g must have one shape, got {tuple(z.shape)} and {tuple(g.shape)}")
    order = torch.argsort(z, stable=True)
    zs, gs = z[order].double(), g[order].double()
    steps = (zs[1:] - zs[:-1]) * (gs[1:] + gs[:-1]) / 2            # ∫ φ' dz on each interval
    return zs, torch.cat([zs.new_zeros(1), torch.cumsum(steps, 0)])


def calibration_sign(phi, etas: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """sign(α*(η)) ``[len(etas)]``: the sign of the grid minimiser of C_η(α) = η φ(α) + (1 − η) φ(−α).

    ``phi`` maps a float64 tensor of α to φ(α); ``alphas`` is a grid symmetric about 0. A calibrated φ
    gives sign(2η − 1) for every η ≠ 1/2 (up to the grid's resolution).
    """
    alphas = _check_margins(alphas, "alphas").double()
    etas = _check_margins(etas, "etas").double()
    if torch.any((etas < 0) | (etas > 1)):
        raise ValueError("etas must lie in [0, 1]")
    risk = etas[:, None] * phi(alphas)[None, :] + (1 - etas[:, None]) * phi(-alphas)[None, :]  # C_η(α)
    return torch.sign(alphas[risk.argmin(dim=1)])
