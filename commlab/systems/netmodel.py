"""Analytic costs of synchronisation: compute utilisation and overlapped rounds, on the lab's one
α–β link model (:class:`~commlab.comm.link.Link`, bit/s; its algorithms and coefficients (a, b) of
T = a·ℓ + b·S/B are :data:`~commlab.comm.link.ALGORITHMS` and :func:`~commlab.comm.link.coefficients`).

``"ring"`` and ``"pairwise"`` are the all-reduce and point-to-point costs the simulated clock of a
:class:`~commlab.comm.communicator.SimComm` charges; the others are the forms the briefs quote
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

from commlab._checks import check_int, check_nonnegative, check_positive, check_real_number
from commlab.comm.link import Link, coefficients


def collective_seconds(bits: float, *, workers: int, bandwidth: float, latency: float = 0.0,
                       algorithm: str = "ring") -> float:
    """Seconds T = a·ℓ + b·S/B of one synchronisation of ``bits`` = S bits per worker on
    ``Link(bandwidth, latency)`` (bit/s, s) among ``workers`` = N; see :meth:`Link.collective_seconds`."""
    return Link(bandwidth, check_nonnegative("latency", latency)).collective_seconds(bits, workers, algorithm)


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
