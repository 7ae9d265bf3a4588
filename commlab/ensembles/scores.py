"""Scores of probabilistic (ensemble) forecasts: CRPS of an ensemble and of a Gaussian, the energy
score, spread–skill, rank histograms and the Brier score of an exceedance.

Conventions. An ensemble ``members`` holds m members on its axis ``member_dim`` (default last);
``obs`` (the verifying observation) has the members' shape with that axis removed, and the scores
come back with ``obs``'s shape, so any leading axes (cases, lead times, variables) are vectorised.
Inputs are torch tensors (numpy arrays are converted), floating point and finite; results are torch
tensors in the dtype of the promoted inputs, differentiable where the score is (CRPS and energy
score can be training losses). Lower is better for every score here except the spread–skill ratio
(1 is calibrated).

* CRPS (Gneiting & Raftery 2007, eq. 21), with F the forecast CDF and y the observation:
  :math:`\\mathrm{CRPS}(F, y) = \\int (F(x) - \\mathbf 1\\{x \\ge y\\})^2 dx = E|X - y| - \\tfrac12 E|X - X'|`.
  For the empirical distribution of m members (:func:`crps_ensemble`),

  .. math:: \\mathrm{CRPS} = \\frac1m \\sum_i |x_i - y| - \\frac{1}{2m^2} \\sum_{i,j} |x_i - x_j|,

  and the "fair" estimator (Ferro 2014) divides the second sum by :math:`2m(m-1)` instead, which is
  unbiased for the CRPS of the distribution the members are drawn from. With the members sorted,
  :math:`\\sum_{i,j}|x_i - x_j| = 2\\sum_{i=1}^m (2i - m - 1)\\,x_{(i)}` (O(m log m)).
* Gaussian CRPS in closed form (Gneiting et al. 2005), z = (y − μ)/σ:
  :math:`\\sigma\\,[z(2\\Phi(z) - 1) + 2\\varphi(z) - 1/\\sqrt\\pi]` (:func:`crps_gaussian`).
* Energy score (Gneiting & Raftery 2007, eq. 22 with β = 1), the multivariate CRPS:
  :math:`\\mathrm{ES} = \\frac1m \\sum_i \\lVert x_i - y\\rVert - \\frac{1}{2m^2}\\sum_{i,j}\\lVert x_i - x_j\\rVert`
  (fair: :math:`1/(2m(m-1))`); for d = 1 it equals the ensemble CRPS exactly (:func:`energy_score`).
* Spread–skill (Fortin et al. 2014): if the observation and the m members are exchangeable draws of
  variance σ², the unbiased ensemble variance s² has mean σ² while the ensemble mean's squared error
  has mean :math:`(1 + 1/m)\\sigma^2`, so the calibrated ratio is
  :math:`\\sqrt{(m+1)/m}\\;\\sqrt{\\overline{s^2}} / \\mathrm{RMSE} \\approx 1` (:func:`spread_skill`).
* Rank histogram (Talagrand diagram; Hamill 2001): the rank of y among the members, in {0, …, m},
  is uniform for a calibrated ensemble (:func:`ensemble_rank`, :func:`rank_histogram`,
  :func:`rank_histogram_chi2`).
* Brier score of the event "value > threshold", the forecast probability being the fraction of
  members above it (:func:`brier_exceedance`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from commlab._checks import check_choice


def _as_tensor(name: str, value, *, numbers: bool = False) -> torch.Tensor:
    """``value`` as a finite floating-point tensor (numpy arrays converted; a Python int or float,
    where ``numbers``, as a 0-d float64 tensor, to be cast to the other inputs' dtype)."""
    if numbers and _is_number(value):
        value = torch.tensor(float(value), dtype=torch.float64)
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array{' or a number' if numbers else ''}, "
                        f"got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {value.dtype}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite")
    return value


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _promote(*tensors: torch.Tensor) -> list[torch.Tensor]:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in tensors]


def _ensemble(members, obs, member_dim: int, min_members: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``members`` with the member axis moved last ``[*S, m]`` and ``obs`` ``[*S]``, checked."""
    members, obs = _as_tensor("members", members), _as_tensor("obs", obs)
    if isinstance(member_dim, bool) or not isinstance(member_dim, int):
        raise TypeError(f"member_dim must be an int, got {type(member_dim).__name__}")
    if members.ndim == 0 or not -members.ndim <= member_dim < members.ndim:
        raise ValueError(f"member_dim must be in [-{members.ndim}, {members.ndim - 1}] for members "
                         f"of shape {tuple(members.shape)}, got {member_dim}")
    members = members.movedim(member_dim, -1)
    if tuple(obs.shape) != tuple(members.shape[:-1]):
        raise ValueError(f"obs must have the members' shape without the member axis, "
                         f"{tuple(members.shape[:-1])}, got {tuple(obs.shape)}")
    if members.shape[-1] < min_members:
        raise ValueError(f"the ensemble needs m >= {min_members} members, got {members.shape[-1]}")
    members, obs = _promote(members, obs)
    return members, obs


def _pair_weight(m: int, fair: bool) -> float:
    if fair and m < 2:
        raise ValueError(f"the fair estimator needs m >= 2 members, got {m}")
    return 1.0 / (2 * m * (m - 1)) if fair else 1.0 / (2 * m * m)


def crps_ensemble(members, obs, *, member_dim: int = -1, fair: bool = False,
                  method: str = "sorted") -> torch.Tensor:
    """CRPS of the ensemble's empirical distribution (or its fair version) against ``obs``.

    Args:
        members: ``[..., m, ...]`` forecasts, the m members on axis ``member_dim``.
        obs: observations, ``members``'s shape without the member axis (``[...]``).
        member_dim: the member axis of ``members``.
        fair: divide the member–member sum by 2m(m−1) (unbiased; needs m >= 2) instead of 2m².
        method: ``"sorted"`` (O(m log m), the sorted-members identity) or ``"pairwise"`` (the
            plain double sum, O(m²) memory); they agree to rounding.

    Returns:
        ``obs``'s shape, in the units of the data.
    """
    x, y = _ensemble(members, obs, member_dim)
    check_choice("method", method, ("sorted", "pairwise"))
    m = x.shape[-1]
    weight = _pair_weight(m, fair)
    skill = (x - y.unsqueeze(-1)).abs().mean(-1)  # (1/m) Σ_i |x_i − y|
    if method == "pairwise":
        pair_sum = (x.unsqueeze(-1) - x.unsqueeze(-2)).abs().sum((-2, -1))  # Σ_{i,j} |x_i − x_j|
    else:
        i = torch.arange(1, m + 1, dtype=x.dtype, device=x.device)
        pair_sum = 2.0 * (torch.sort(x, dim=-1).values * (2.0 * i - m - 1)).sum(-1)  # 2 Σ_i (2i − m − 1) x_(i)
    return skill - weight * pair_sum


def crps_gaussian(mean, std, obs) -> torch.Tensor:
    """Closed-form CRPS of N(mean, std²) against ``obs``: σ[z(2Φ(z) − 1) + 2φ(z) − 1/√π].

    Args:
        mean, std, obs: broadcastable tensors (or numbers); ``std`` > 0 everywhere.

    Returns:
        The broadcast shape, in the units of the data.
    """
    values = (mean, std, obs)
    tensors = [_as_tensor(n, v, numbers=True) for n, v in zip(("mean", "std", "obs"), values, strict=True)]
    given = [t for t, v in zip(tensors, values, strict=True) if not _is_number(v)]
    # Python numbers take the given tensors' promoted dtype, as in torch arithmetic.
    dtype = _promote(*given)[0].dtype if given else torch.get_default_dtype()
    mean, std, obs = (t.to(dtype) for t in tensors)
    if not bool((std > 0).all()):
        raise ValueError("std must be > 0 everywhere")
    try:
        z = (obs - mean) / std
    except RuntimeError as error:
        raise ValueError(f"mean, std and obs must broadcast: {error}") from None
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return std * (z * (2.0 * torch.special.ndtr(z) - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))


def energy_score(members, obs, *, fair: bool = False) -> torch.Tensor:
    """Energy score of an ensemble of vectors: (1/m)Σ‖x_i − y‖ − w Σ_{i,j}‖x_i − x_j‖, with
    w = 1/(2m²), or 1/(2m(m−1)) if ``fair``; Euclidean norms over the last axis.

    Args:
        members: ``[..., m, d]`` (members second to last, the d components last).
        obs: ``[..., d]``.
        fair: as in :func:`crps_ensemble` (needs m >= 2).

    Returns:
        ``[...]``. For d = 1 it equals ``crps_ensemble(members[..., 0], obs[..., 0], fair=fair)``.
    """
    x = _as_tensor("members", members)
    y = _as_tensor("obs", obs)
    if x.ndim < 2 or tuple(y.shape) != tuple(x.shape[:-2]) + tuple(x.shape[-1:]):
        raise ValueError(f"members must be [..., m, d] and obs [..., d] with the same leading shape "
                         f"and d, got {tuple(x.shape)} and {tuple(y.shape)}")
    m = x.shape[-2]
    if m < 1 or x.shape[-1] < 1:
        raise ValueError(f"members need m >= 1 and d >= 1, got shape {tuple(x.shape)}")
    weight = _pair_weight(m, fair)
    x, y = _promote(x, y)
    skill = torch.linalg.vector_norm(x - y.unsqueeze(-2), dim=-1).mean(-1)  # (1/m) Σ_i ‖x_i − y‖
    pair_sum = torch.linalg.vector_norm(x.unsqueeze(-2) - x.unsqueeze(-3), dim=-1).sum((-2, -1))
    return skill - weight * pair_sum


class SpreadSkill(NamedTuple):
    """Result of :func:`spread_skill`; every field has the shape of the axes not averaged."""

    spread: torch.Tensor
    """sqrt of the mean unbiased ensemble variance."""
    rmse: torch.Tensor
    """root mean squared error of the ensemble mean."""
    ratio: torch.Tensor
    """sqrt((m+1)/m) · spread / rmse (1 for a calibrated ensemble)."""


def _reduce_dims(dim, ndim: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not -ndim <= d < ndim:
            raise ValueError(f"dim must hold axes of obs in [-{ndim}, {ndim - 1}], got {dim!r}")
    normalised = tuple(sorted({d % ndim for d in dims}))
    if len(normalised) != len(dims):
        raise ValueError(f"dim repeats an axis: {dim!r}")
    return normalised


def spread_skill(members, obs, *, member_dim: int = -1, dim=None) -> SpreadSkill:
    """Ensemble spread, RMSE of the ensemble mean and their finite-ensemble-corrected ratio.

    spread² = mean of s² = Σ_i (x_i − x̄)² / (m − 1); RMSE² = mean of (x̄ − y)²; ratio =
    √((m+1)/m) · spread / RMSE, the factor undoing the (1 + 1/m) by which an exchangeable
    observation's error exceeds the ensemble variance (Fortin et al. 2014).

    Args:
        members, obs, member_dim: as in :func:`crps_ensemble` (m >= 2).
        dim: axes of ``obs`` averaged over (an int or a tuple; None: all, giving scalars). Keep,
            e.g., the lead-time axis out of ``dim`` for a ratio per lead.
    """
    x, y = _ensemble(members, obs, member_dim, min_members=2)
    m = x.shape[-1]
    dims = _reduce_dims(dim, y.ndim)
    variance = x.var(dim=-1, correction=1)  # s², unbiased
    error = x.mean(-1) - y  # x̄ − y
    spread = variance.mean(dims).sqrt() if dims else variance.sqrt()
    rmse = (error * error).mean(dims).sqrt() if dims else error.abs()
    return SpreadSkill(spread, rmse, math.sqrt((m + 1) / m) * spread / rmse)


def _ranks(x: torch.Tensor, y: torch.Tensor, generator) -> torch.Tensor:
    below = (x < y.unsqueeze(-1)).sum(-1)
    ties = (x == y.unsqueeze(-1)).sum(-1)
    if bool((ties > 0).any()):
        if not isinstance(generator, torch.Generator):
            raise ValueError("members equal to obs (ties) need a torch.Generator to break them at random")
        u = torch.rand(ties.shape, generator=generator, dtype=torch.float64, device=ties.device)
        below = below + torch.floor(u * (ties + 1)).long()  # uniform in {0, …, ties}
    return below.long()


def ensemble_rank(members, obs, *, member_dim: int = -1,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Rank of each observation among its members: the number of members below it, in {0, …, m}.

    Ties (members equal to the observation) are broken uniformly at random with ``generator``;
    one is needed only when a tie occurs, and a ``ValueError`` says so otherwise.

    Returns:
        int64 tensor of ``obs``'s shape.
    """
    x, y = _ensemble(members, obs, member_dim)
    return _ranks(x, y, generator)


def rank_histogram(members, obs, *, member_dim: int = -1, dim=None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Counts of the observation's rank among the members (see :func:`ensemble_rank`).

    Args:
        members, obs, member_dim, generator: as in :func:`ensemble_rank`.
        dim: axes of ``obs`` pooled into each histogram (None: all).

    Returns:
        int64 ``[*kept axes, m + 1]``; bin r counts the cases with r members below the observation.
    """
    x, y = _ensemble(members, obs, member_dim)
    dims = _reduce_dims(dim, y.ndim)
    counts = torch.nn.functional.one_hot(_ranks(x, y, generator), x.shape[-1] + 1)
    return counts.sum(dims) if dims else counts


def rank_histogram_chi2(counts) -> torch.Tensor:
    """Pearson χ² of rank-histogram counts against flatness: Σ_r (n_r − N/B)² / (N/B) over the last
    axis of B = m + 1 bins, N = Σ_r n_r. For independent cases from a calibrated ensemble it is
    χ²-distributed with B − 1 degrees of freedom (mean m); correlated cases (neighbouring
    variables, overlapping leads) inflate it.

    Args:
        counts: ``[..., B]`` non-negative counts (B >= 2, N > 0), e.g. from :func:`rank_histogram`.

    Returns:
        float64 ``[...]``.
    """
    if isinstance(counts, np.ndarray):
        counts = torch.from_numpy(counts)
    if not isinstance(counts, torch.Tensor):
        raise TypeError(f"counts must be a torch.Tensor or numpy array, got {type(counts).__name__}")
    n = counts.to(torch.float64)
    if n.ndim == 0 or n.shape[-1] < 2:
        raise ValueError(f"counts must be [..., B] with B >= 2 bins, got shape {tuple(n.shape)}")
    if not bool(torch.isfinite(n).all()) or bool((n < 0).any()) or not bool((n.sum(-1) > 0).all()):
        raise ValueError("counts must be finite, non-negative and not all zero")
    expected = n.sum(-1, keepdim=True) / n.shape[-1]  # N / B
    return ((n - expected) ** 2 / expected).sum(-1)


def brier_exceedance(members, obs, threshold, *, member_dim: int = -1) -> torch.Tensor:
    """Brier score of the event "value > threshold": (p − 1{y > threshold})², p the fraction of
    members above the threshold.

    Args:
        members, obs, member_dim: as in :func:`crps_ensemble`.
        threshold: a number or a tensor broadcastable to ``obs`` (e.g. a per-variable quantile).

    Returns:
        ``obs``'s shape, in [0, 1].
    """
    x, y = _ensemble(members, obs, member_dim)
    t = _as_tensor("threshold", threshold, numbers=True).to(y.dtype)
    try:
        t = torch.broadcast_to(t, y.shape)
    except RuntimeError:
        raise ValueError(f"threshold must broadcast to obs's shape {tuple(y.shape)}, "
                         f"got {tuple(t.shape)}") from None
    p = (x > t.unsqueeze(-1)).to(y.dtype).mean(-1)
    return (p - (y > t).to(y.dtype)) ** 2
