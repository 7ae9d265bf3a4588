"""Output- and weight-space averaging of ensemble members, the FalseFalseTrue rate, and
temperature balancing (the BANG-style fix).

"Spurious Feature Diversification Improves Out-of-distribution Generalization" (Lin et al., 2023)
explains the OOD gain of ensembles by members that rely on *different* spurious features: in the
average each spurious cue carries less weight, so cues that break out of distribution partly
cancel, and the ensemble is often right where both members are wrong ("FalseFalseTrue",
:func:`falsefalsetrue_rate`). An over-confident member (logits scaled by κ > 1) dominates the
average and erases the gain; BAlaNced averaGing (BANG) rebalances it before averaging. Here the
rebalancing is a temperature :math:`T` fitted on in-distribution validation data
(:func:`fit_temperature`), i.e. each member's logits are divided by its own :math:`T`.

* Output space: :math:`z_\\text{ens} = \\sum_m w_m z_m` with :math:`\\sum_m w_m = 1` (:func:`output_average`).
* Weight space (WiSE-FT): :math:`\\theta(\\lambda) = (1-\\lambda)\\,\\theta_0 + \\lambda\\,\\theta_1`
  (:func:`interpolate`). For models linear in their parameters (e.g. logistic regression on fixed
  features) the two coincide.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def _as_logits(logits, name: str = "logits") -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(f"{name} must be [N, C] with N >= 1 and C >= 2, got shape {logits.shape}")
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"{name} must be finite")
    return logits


def output_average(logits: Sequence, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted average of members' logits ``[N, C]`` (equal weights by default; weights must be
    non-negative and are normalised to sum to 1)."""
    members = [_as_logits(z, f"logits[{i}]") for i, z in enumerate(logits)]
    if not members:
        raise ValueError("logits must hold at least one member")
    if any(z.shape != members[0].shape for z in members):
        raise ValueError(f"all members must have the same shape, got {[z.shape for z in members]}")
    w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(members),) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"weights must be {len(members)} non-negative numbers with a positive sum, got {weights}")
    w = w / w.sum()
    return sum(wi * z for wi, z in zip(w, members, strict=True))


def log_softmax(logits) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, ``[N, C]``."""
    z = _as_logits(logits)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits, labels) -> float:
    """Mean negative log-likelihood of int ``labels`` ``[N]`` under softmax(``logits``)."""
    logp = log_softmax(logits)
    labels = np.asarray(labels)
    if labels.shape != (logp.shape[0],) or labels.min() < 0 or labels.max() >= logp.shape[1]:
        raise ValueError(f"labels must be [N] = [{logp.shape[0]}] integers in [0, {logp.shape[1] - 1}]")
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits, labels, *, bounds: tuple[float, float] = (0.01, 100.0), iterations: int = 60) -> float:
    """Temperature :math:`T^* = \\arg\\min_T \\mathrm{NLL}(z / T)` by golden-section search on
    :math:`\\log T` within ``bounds`` (fit it on in-distribution validation data, never on OOD data)."""
    lo, hi = bounds
    if not 0 < lo < hi or not math.isfinite(hi):
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got {bounds}")
    logits = _as_logits(logits)
    a, b = math.log(lo), math.log(hi)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0

    def loss(log_t: float) -> float:
        return nll(logits / math.exp(log_t), labels)

    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return math.exp((a + b) / 2.0)


def falsefalsetrue_rate(pred_a, pred_b, pred_ens, labels) -> float:
    """Share of samples where member A and member B are both wrong and the ensemble is right."""
    arrays = [np.asarray(v) for v in (pred_a, pred_b, pred_ens, labels)]
    if any(v.ndim != 1 or v.shape != arrays[-1].shape for v in arrays) or arrays[-1].size == 0:
        raise ValueError(f"predictions and labels must be non-empty 1-D arrays of one length, got "
                         f"{[v.shape for v in arrays]}")
    a, b, ens, y = arrays
    return float(np.mean((a != y) & (b != y) & (ens == y)))


def interpolate(theta_0: Mapping, theta_1: Mapping, lam: float) -> dict:
    """WiSE-FT weight interpolation :math:`(1-\\lambda)\\theta_0 + \\lambda\\theta_1`, key by key.

    Works for dicts of numpy arrays or torch tensors (e.g. ``state_dict()``); both must have the
    same keys and shapes. ``lam`` in [0, 1].
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if set(theta_0) != set(theta_1):
        raise ValueError(f"parameter names differ: {sorted(set(theta_0) ^ set(theta_1))}")
    out = {}
    for key in theta_0:
        if tuple(theta_0[key].shape) != tuple(theta_1[key].shape):
            raise ValueError(f"{key}: shapes {tuple(theta_0[key].shape)} and {tuple(theta_1[key].shape)} differ")
        out[key] = (1.0 - lam) * theta_0[key] + lam * theta_1[key]
    return out
