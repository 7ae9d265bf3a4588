"""Window-based early-exit cascades and selective-classification metrics.

Selective classification (Xia & Bouganis, 2023, and references there): a classifier predicts
:math:`\\hat y(x)` with a confidence score :math:`s(x)`, here the maximum softmax probability (MSP)
:math:`s = \\max_c p_c(x)`, and answers only when :math:`s(x) \\ge \\tau`. For a target coverage
:math:`c` the accepted set is the :math:`\\lceil cN \\rceil` samples with the highest scores, and

.. math::

    \\mathrm{risk}(c) = \\frac{\\#\\{\\text{accepted and wrong}\\}}{\\#\\{\\text{accepted}\\}}, \\qquad
    \\mathrm{AURC} = \\frac1N \\sum_{k=1}^{N} \\mathrm{risk}(k/N).

Window cascade: stage 1 runs member 1 on every sample; only samples whose stage-1 score lies in a
window :math:`|s_1 - \\tau_1| < \\delta` around the accept/reject threshold go on to stage 2, whose
prediction is the ensemble average :math:`(p_1 + p_2)/2`; the rest exit with member 1's output.
Only samples near the threshold can flip their accept/reject decision, so a small passed fraction
keeps most of the ensemble's gain. With K stages, stage k+1 sees the samples whose stage-k
ensemble score lies in its window around :math:`\\tau_k`. The expected cost per sample is

.. math::

    \\mathrm{MACs} = \\sum_k \\mathrm{MACs}_k \\cdot \\Pr[\\text{sample reaches stage } k].

After mixing exits from different stages, the accept threshold for the target coverage is recomputed
on the mixed scores (:func:`risk_at_coverage` ranks the final scores).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def _as_scores(scores, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} must be finite")
    return scores


def _as_probs(probs, name: str = "probs") -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(f"{name} must be [N, C] with N >= 1 and C >= 2, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    return probs


def _check_coverage(coverage) -> float:
    if isinstance(coverage, bool) or not isinstance(coverage, int | float | np.floating):
        raise TypeError(f"coverage must be a real number in (0, 1], got {type(coverage).__name__}")
    if not 0.0 < float(coverage) <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    return float(coverage)


def msp(probs) -> np.ndarray:
    """Maximum softmax probability score ``[N]`` of class probabilities ``[N, C]``."""
    return _as_probs(probs).max(axis=1)


def _order(scores: np.ndarray) -> np.ndarray:
    """Indices from the most to the least confident (ties keep the sample order)."""
    return np.argsort(-scores, kind="stable")


def accepted_at_coverage(scores, coverage: float) -> np.ndarray:
    """Bool ``[N]``: the :math:`\\lceil cN \\rceil` highest-scoring samples (ties broken by position)."""
    scores = _as_scores(scores)
    k = math.ceil(_check_coverage(coverage) * len(scores) - 1e-9)
    accepted = np.zeros(len(scores), dtype=bool)
    accepted[_order(scores)[:k]] = True
    return accepted


def threshold_at_coverage(scores, coverage: float) -> float:
    """Score threshold :math:`\\tau` that accepts a share ``coverage`` of ``scores`` (``s >= τ``): the
    :math:`\\lceil cN \\rceil`-th largest score."""
    scores = _as_scores(scores)
    k = math.ceil(_check_coverage(coverage) * len(scores) - 1e-9)
    return float(np.sort(scores)[::-1][k - 1])


def risk_at_coverage(scores, correct, coverage: float) -> float:
    """Selective risk (error rate among accepted samples) at ``coverage``; ``correct`` is bool ``[N]``."""
    scores, correct = _as_scores(scores), np.asarray(correct, dtype=bool)
    if correct.shape != scores.shape:
        raise ValueError(f"correct must have shape {scores.shape}, got {correct.shape}")
    accepted = accepted_at_coverage(scores, coverage)
    return float(1.0 - correct[accepted].mean())


def risk_coverage_curve(scores, correct) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage, risk)``, both ``[N]``: risk when accepting the k most confident, k = 1..N."""
    scores, correct = _as_scores(scores), np.asarray(correct, dtype=bool)
    if correct.shape != scores.shape:
        raise ValueError(f"correct must have shape {scores.shape}, got {correct.shape}")
    errors = np.cumsum(~correct[_order(scores)])
    k = np.arange(1, len(scores) + 1)
    return k / len(scores), errors / k


def aurc(scores, correct) -> float:
    """Area under the risk-coverage curve (mean of risk over the N coverages k/N)."""
    return float(risk_coverage_curve(scores, correct)[1].mean())


def coverage_at_risk(scores, correct, risk: float) -> float:
    """Largest coverage k/N whose selective risk is <= ``risk`` (0 if none)."""
    if not 0.0 <= risk <= 1.0:
        raise ValueError(f"risk must be in [0, 1], got {risk}")
    coverage, risks = risk_coverage_curve(scores, correct)
    ok = risks <= risk + 1e-12
    return float(coverage[ok].max()) if ok.any() else 0.0


@dataclass(frozen=True)
class CascadeResult:
    """Output of :meth:`WindowCascade.run`.

    Attributes:
        probs: float64 ``[N, C]`` final class probabilities (ensemble of the stages each sample saw).
        exit_stage: int64 ``[N]``: the last stage (0-based) that ran on each sample.
        macs_per_sample: mean multiply-accumulates per sample over the N samples.
    """

    probs: np.ndarray
    exit_stage: np.ndarray
    macs_per_sample: float

    @property
    def scores(self) -> np.ndarray:
        """MSP of the final probabilities, ``[N]``."""
        return self.probs.max(axis=1)

    def passed_fraction(self, stage: int = 1) -> float:
        """Share of samples that reached ``stage`` (stage 1 is the second model)."""
        return float((self.exit_stage >= stage).mean())


class WindowCascade:
    """K-stage window-based early-exit cascade of ensemble members.

    Args:
        thresholds: ``K - 1`` accept thresholds :math:`\\tau_k`, one per stage that can forward
            (the threshold of the stage-k ensemble at the target coverage, chosen on held-out data
            with :func:`threshold_at_coverage`).
        half_width: window half-width :math:`\\delta \\ge 0` on the MSP scale (``inf`` forwards every
            sample: the full ensemble).
        macs: per-sample multiply-accumulates of each of the K members.
    """

    def __init__(self, thresholds: Sequence[float], half_width: float, macs: Sequence[float]):
        if len(thresholds) + 1 != len(macs) or len(macs) < 2:
            raise ValueError(f"need K >= 2 members and K-1 thresholds, got {len(macs)} macs and "
                             f"{len(thresholds)} thresholds")
        if not half_width >= 0:
            raise ValueError(f"half_width must be >= 0, got {half_width}")
        if any(not (m > 0 and math.isfinite(m)) for m in macs):
            raise ValueError(f"macs must be finite and > 0, got {list(macs)}")
        self.thresholds = [float(t) for t in thresholds]
        self.half_width = float(half_width)
        self.macs = [float(m) for m in macs]

    def window(self, scores, stage: int = 0) -> np.ndarray:
        """Bool mask of the samples forwarded past ``stage``: :math:`|s - \\tau_\\text{stage}| < \\delta`."""
        return np.abs(_as_scores(scores) - self.thresholds[stage]) < self.half_width

    def run(self, members: Sequence[Callable[[np.ndarray], np.ndarray]], n: int) -> CascadeResult:
        """Run the cascade on ``n`` samples.

        Args:
            members: K callables; ``members[k](idx)`` returns member k's probabilities ``[len(idx), C]``
                for the sample indices ``idx`` (int64). Member k > 0 is only called on forwarded samples.
            n: number of samples.
        """
        if len(members) != len(self.macs):
            raise ValueError(f"members must have {len(self.macs)} entries, got {len(members)}")
        active = np.arange(n)
        total = _as_probs(members[0](active), "members[0] output").copy()
        if total.shape[0] != n:
            raise ValueError(f"members[0] returned {total.shape[0]} rows for {n} samples")
        exit_stage = np.zeros(n, dtype=np.int64)
        macs = self.macs[0] * n
        for k in range(1, len(members)):
            forward = self.window(total[active].max(axis=1) / k, k - 1)
            active = active[forward]
            if len(active) == 0:
                break
            total[active] += _as_probs(members[k](active), f"members[{k}] output")
            exit_stage[active] = k
            macs += self.macs[k] * len(active)
        probs = total / (exit_stage + 1)[:, None]
        return CascadeResult(probs, exit_stage, macs / n)
