"""Analytic costs of synchronisation: collective times, compute utilisation, overlapped rounds.

Every collective below costs T = a·ℓ + b·S/B for a message of S bits per worker on links of
latency ℓ (s) and bandwidth B (bit/s), with (a, b) set by the algorithm and the number of workers N:

=====================  ===================  ====================  ===========================================
algorithm              a                    b                     note
=====================  ===================  ====================  ===========================================
``"ring"``             2(N − 1)             2(N − 1)/N            reduce-scatter + all-gather (= ``Link``)
``"tree"``             2⌈log₂ N⌉            2⌈log₂ N⌉             reduce then broadcast along a binary tree
``"bandwidth_optimal"``  1                  2                     ℓ + 2S/B: the large-N ring with one latency
``"pairwise"``         1                    1                     one exchange with one peer (NoLoCo)
=====================  ===================  ====================  ===========================================

``"ring"`` and ``"pairwise"`` are the all-reduce and point-to-point costs of
:class:`~commlab.comm.link.Link`, which the simulated clock of a
:class:`~commlab.comm.communicator.SimComm` uses; the others are the forms the briefs quote
(briefs/distributed/noloco_gossip.md: tree 2·log₂N·(ℓ + S/B), pairwise ℓ + S/B;
briefs/distributed/streaming_diloco.md: T = ℓ + 2S/B). With N = 1 nothing is sent and T = 0.

**Compute utilisation** (Streaming DiLoCo's simulation). A method computes K inner steps of c
seconds per synchronisation of S bits; the synchronisation may overlap the next ``overlap_steps``
(τ) steps, so the stall it causes is max(0, T − τc) and

    CU = K·c / (K·c + max(0, T − τ·c)).

Data parallel: K = 1, S = all parameters, τ = 0 (no overlap with the backward pass, conservative).
DiLoCo: K = H. Streaming DiLoCo: K = H/P, S = the fragment's bits at the exchange precision, τ > 0.
:func:`required_bandwidth` inverts it: the smallest B reaching a target CU is
b·S / (K·c·(1/CU − 1) + τ·c − a·ℓ), or infinity when latency alone stalls too long.

**Rounds with overlap** (CO2): a synchronous round costs τc + C, a round whose averaging runs
in the background of the next round's computation max(τc, C).
"""

from __future__ import annotations

import math

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive, check_real_number

ALGORITHMS = ("ring", "tree", "bandwidth_optimal", "pairwise")


def coefficients(algorithm: str, workers: int) -> tuple[float, float]:
    """(a, b) of T = a·ℓ + b·S/B for ``algorithm`` on ``workers`` = N >= 1 workers."""
    check_choice("algorithm", algorithm, ALGORITHMS)
    n = check_int("workers", workers, low=1)
    if n == 1:
        return 0.0, 0.0
    if algorithm == "ring":
        return 2.0 * (n - 1), 2.0 * (n - 1) / n
    if algorithm == "tree":
        depth = 2.0 * math.ceil(math.log2(n))
        return depth, depth
    if algorithm == "bandwidth_optimal":
        return 1.0, 2.0
    return 1.0, 1.0


def collective_seconds(bits: float, *, workers: int, bandwidth: float, latency: float = 0.0,
                       algorithm: str = "ring") -> float:
    """Seconds T = a·ℓ + b·S/B of one synchronisation of ``bits`` = S bits per worker.

    Args:
        bits: message size S per worker (bits, >= 0).
        workers: N >= 1.
        bandwidth: B in bit/s (> 0; ``math.inf`` for an unlimited link).
        latency: ℓ in seconds (>= 0).
        algorithm: one of :data:`ALGORITHMS`.
    """
    a, b = coefficients(algorithm, workers)
    bits, latency = check_nonnegative("bits", bits), check_nonnegative("latency", latency)
    per_bit = 0.0 if bandwidth == math.inf else 1.0 / check_positive("bandwidth", bandwidth)
    return a * latency + b * bits * per_bit


def compute_utilisation(bandwidth: float, *, bits: float, step_seconds: float, period: int,
                        overlap_steps: int = 0, latency: float = 0.0, workers: int = 2,
                        algorithm: str = "bandwidth_optimal") -> float:
    """CU = K·c / (K·c + max(0, T − τ·c)) for one synchronisation of ``bits`` every ``period`` = K
    inner steps of ``step_seconds`` = c seconds, overlapped with ``overlap_steps`` = τ steps."""
    K = check_int("period", period, low=1)
    tau = check_int("overlap_steps", overlap_steps, low=0)
    c = check_positive("step_seconds", step_seconds)
    T = collective_seconds(bits, workers=workers, bandwidth=bandwidth, latency=latency, algorithm=algorithm)
    return K * c / (K * c + max(0.0, T - tau * c))


def required_bandwidth(target: float, *, bits: float, step_seconds: float, period: int, overlap_steps: int = 0,
                       latency: float = 0.0, workers: int = 2, algorithm: str = "bandwidth_optimal") -> float:
    """The smallest bandwidth (bit/s) at which :func:`compute_utilisation` reaches ``target`` in (0, 1):
    b·S / (K·c·(1/CU − 1) + τ·c − a·ℓ); ``math.inf`` when latency alone stalls longer than allowed
    (the target is unreachable). Arguments as in :func:`compute_utilisation`."""
    target = check_real_number("target", target, low=0.0, high=1.0, low_open=True, high_open=True)
    K = check_int("period", period, low=1)
    tau = check_int("overlap_steps", overlap_steps, low=0)
    c = check_positive("step_seconds", step_seconds)
    bits, latency = check_nonnegative("bits", bits), check_nonnegative("latency", latency)
    a, b = coefficients(algorithm, workers)
    budget = K * c * (1 / target - 1) + tau * c - a * latency  # seconds left for the b·S/B term
    if b * bits == 0:
        return 0.0 if budget >= 0 else math.inf
    return b * bits / budget if budget > 0 else math.inf


def round_seconds(tau: int, step_seconds: float, comm_seconds: float, *, overlap: bool) -> float:
    """One round of τ inner steps of c seconds and one averaging of C seconds: τc + C synchronously,
    max(τc, C) when the averaging overlaps the next round (CO2)."""
    tau = check_int("tau", tau, low=1)
    compute = tau * check_nonnegative("step_seconds", step_seconds)
    comm = check_nonnegative("comm_seconds", comm_seconds)
    return max(compute, comm) if overlap else compute + comm
