"""Causal disentanglement with extreme values (CDEV; Beguš, Leban, Gero 2023): intervene on one latent
variable of a generative model at a time, over a grid that spans and exceeds the training range, and
estimate the effect on measured properties of the outputs with bootstrap confidence intervals.

* :func:`intervention_sweep` — the intervention do(u_i = v): the other latents are drawn once from the
  prior and reused at every grid value v (common random numbers), all outputs decoded in one batch;
* :func:`intervention_effect` — the effect of moving u_i from ``v_low`` to ``v_high`` on a property p,
  the mean paired difference :math:`\\hat\\delta = \\tfrac1n \\sum_j (p_j(v_{high}) - p_j(v_{low})) / s_p`
  in units of a scale :math:`s_p` (e.g. the property's standard deviation over the data), with a
  percentile-bootstrap CI; a latent "encodes" p when the CI excludes 0 and :math:`|\\hat\\delta|` is large;
* :func:`bootstrap_ci` — the percentile bootstrap for any statistic of one sample;
* :func:`rank_correlations` — Spearman's ρ between each latent and each known factor (ground truth of
  which latent carries which factor, from the encoder on data with known factors);
* :func:`assignment_scores` — precision and recall of flagged (latent, factor) pairs against that truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from commlab._checks import check_fraction, check_int, check_positive


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval ``[low, high]`` (NaN when there was too little data)."""

    estimate: float
    low: float
    high: float
    n: int
    """samples the estimate used."""

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (False for NaN)."""
        return bool(self.low > 0 or self.high < 0)


def bootstrap_ci(samples, *, rng: np.random.Generator, statistic: Callable = np.mean, n_boot: int = 1000,
                 level: float = 0.95) -> Interval:
    """Percentile-bootstrap confidence interval of ``statistic`` over a 1-D sample.

    Resample the n values with replacement ``n_boot`` times, evaluate the statistic on each resample
    (``statistic(values, axis=1)`` on a ``[n_boot, n]`` array), and take its ``(1 ± level)/2`` quantiles.

    Args:
        samples: finite real ``[n]``, n >= 2.
        rng: the generator of the resampling.
        statistic: a reduction that takes ``axis=`` (``np.mean``, ``np.median``, ...).
        n_boot: resamples, >= 10.
        level: confidence level in (0, 1).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"samples must be 1-D with at least 2 values, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples must be finite (drop NaN values first)")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n_boot, level = check_int("n_boot", n_boot, low=10), check_fraction("level", level)
    stats = statistic(x[rng.integers(0, len(x), size=(n_boot, len(x)))], axis=1)
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(statistic(x)), float(low), float(high), len(x))


def intervention_sweep(decode: Callable[[torch.Tensor], torch.Tensor], base_z: torch.Tensor, latent: int,
                       values: Sequence[float], measure: Callable[[np.ndarray], dict[str, np.ndarray]]
                       ) -> dict[str, np.ndarray]:
    """Properties of the outputs under do(u_latent = v) for each v in ``values``.

    Args:
        decode: the generator, latents ``[M, d]`` -> outputs ``[M, ...]`` (called once, under no_grad).
        base_z: ``[n, d]`` draws of all latents from the prior; column ``latent`` is overwritten by v and the
            others are the same at every v (common random numbers).
        latent: the intervened latent index in ``[0, d)``.
        values: the grid, G values.
        measure: outputs as a numpy array ``[G·n, ...]`` -> ``{property: [G·n]}``.

    Returns:
        ``{property: float64 [G, n]}``, row g for ``values[g]``, column j for ``base_z[j]``.
    """
    if base_z.ndim != 2:
        raise ValueError(f"base_z must be [n, d], got {tuple(base_z.shape)}")
    n, d = base_z.shape
    latent = check_int("latent", latent, low=0, high=d - 1)
    grid = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=base_z.dtype)
    if grid.ndim != 1 or len(grid) == 0 or not torch.isfinite(grid).all():
        raise ValueError(f"values must be a non-empty 1-D sequence of finite numbers, got {values!r}")
    z = base_z.repeat(len(grid), 1)
    z[:, latent] = grid.repeat_interleave(n)  # do(u_i = v)
    with torch.no_grad():
        out = decode(z)
    props = measure(out.cpu().numpy())
    return {k: np.asarray(v, dtype=np.float64).reshape(len(grid), n) for k, v in props.items()}


def intervention_effect(sweep: np.ndarray, values: Sequence[float], v_low: float, v_high: float, *, scale: float,
                        rng: np.random.Generator, n_boot: int = 1000, level: float = 0.95,
                        min_pairs: int = 10) -> Interval:
    """Standardised effect of moving a latent from ``v_low`` to ``v_high`` on one property (module docstring).

    Args:
        sweep: ``[G, n]`` property values from :func:`intervention_sweep` (NaN where undefined, e.g. an
            ICI of an output without clicks; such pairs are dropped).
        values: the grid of the sweep, ``[G]``; ``v_low`` and ``v_high`` must be on it.
        scale: s_p > 0, the unit of the effect.
        rng, n_boot, level: the bootstrap (:func:`bootstrap_ci`).
        min_pairs: fewer finite pairs than this give a NaN interval (not significant).
    """
    sweep = np.asarray(sweep, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if sweep.ndim != 2 or values.shape != (sweep.shape[0],):
        raise ValueError(f"sweep must be [G, n] and values [G], got {sweep.shape}, {values.shape}")
    rows = []
    for v in (v_low, v_high):
        hit = np.flatnonzero(np.isclose(values, v))
        if len(hit) != 1:
            raise ValueError(f"{v} is not (exactly once) on the grid {values.tolist()}")
        rows.append(hit[0])
    scale = check_positive("scale", scale)
    min_pairs = check_int("min_pairs", min_pairs, low=2)
    diff = (sweep[rows[1]] - sweep[rows[0]]) / scale  # (p_j(v_high) − p_j(v_low)) / s_p
    diff = diff[np.isfinite(diff)]
    if len(diff) < min_pairs:
        return Interval(float("nan"), float("nan"), float("nan"), len(diff))
    return bootstrap_ci(diff, rng=rng, n_boot=n_boot, level=level)


def rank_correlations(latents: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Spearman's ρ (Pearson correlation of average ranks) between every latent and every factor.

    Args:
        latents: ``[N, d]`` (e.g. the encoder's posterior means on data).
        factors: ``[N, F]`` the known factor values of the same data.

    Returns:
        float64 ``[d, F]``; 0 for a constant column.
    """
    a, b = np.asarray(latents, dtype=np.float64), np.asarray(factors, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b) or len(a) < 3:
        raise ValueError(f"latents [N, d] and factors [N, F] with N >= 3 needed, got {a.shape}, {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("latents and factors must be finite")

    def standardised_ranks(m: np.ndarray) -> np.ndarray:
        r = rankdata(m, axis=0)
        r = r - r.mean(axis=0)
        norm = np.sqrt((r**2).sum(axis=0))
        return np.divide(r, norm, out=np.zeros_like(r), where=norm > 0)

    return standardised_ranks(a).T @ standardised_ranks(b)


def assignment_scores(flagged: np.ndarray, truth: np.ndarray) -> dict:
    """Precision and recall of flagged (latent, factor) pairs against the true pairs.

    Args:
        flagged, truth: bool ``[d, F]``.

    Returns:
        ``{"precision", "recall", "recovered", "true_positive"}``: precision = |flagged ∧ truth| / |flagged|
        (0 when nothing is flagged), recall = |flagged ∧ truth| / |truth| (0 when nothing is true),
        ``recovered`` bool ``[F]`` (a factor with at least one true positive), ``true_positive`` bool ``[d, F]``.
    """
    flagged, truth = np.asarray(flagged), np.asarray(truth)
    if flagged.dtype != bool or truth.dtype != bool or flagged.shape != truth.shape or flagged.ndim != 2:
        raise ValueError(f"flagged and truth must be bool arrays of one shape [d, F], got {flagged.dtype} "
                         f"{flagged.shape} and {truth.dtype} {truth.shape}")
    tp = flagged & truth
    return {"precision": float(tp.sum() / flagged.sum()) if flagged.any() else 0.0,
            "recall": float(tp.sum() / truth.sum()) if truth.any() else 0.0,
            "recovered": tp.any(axis=0), "true_positive": tp}
