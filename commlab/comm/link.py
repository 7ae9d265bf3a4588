"""The one latency/bandwidth (α–β) model of the lab: how long a collective takes on a link.

Every worker has one full-duplex link of ``bandwidth`` B bits per second and a per-message latency
``latency`` ℓ seconds. A synchronisation of S bits per worker among N workers costs

    T = a·ℓ + b·S/B,

with (a, b) set by the algorithm (:func:`coefficients`; Thakur, Rabenseifner, Gropp 2005; ring
all-reduce of Patarasuk & Yuan 2009):

=======================  ===================  ====================  ====================================
algorithm                a                    b                     note
=======================  ===================  ====================  ====================================
``"ring"``               2(N − 1)             2(N − 1)/N            reduce-scatter + all-gather
``"tree"``               2⌈log₂ N⌉            2⌈log₂ N⌉             reduce then broadcast, binary tree
``"bandwidth_optimal"``  1                    2                     ℓ + 2S/B: the large-N ring, one latency
``"pairwise"``           1                    1                     one exchange with one peer
=======================  ===================  ====================  ====================================

The communicators' clock charges each collective it runs with :meth:`Link.seconds` (bytes per
worker, as the meter counts them):

* all-reduce: the ring, 2(N − 1)·ℓ + 2(N − 1)/N · 8n/B;
* all-gather (ring): (N − 1)·(ℓ + 8n/B);
* broadcast (binomial tree): ⌈log₂ N⌉·(ℓ + 8n/B);
* point-to-point rounds (gossip ``mix``, pairwise ``exchange``): ℓ + deg·8n/B, with deg the largest
  number of messages one worker sends in the round (the pairwise form with deg messages).

An all-to-all (:meth:`Link.alltoall_seconds`, expert parallelism) ends when the busiest device has sent
and received its off-diagonal bits: ℓ + max_g max(sent_g, received_g)/B. With one worker, or nothing
to send, every collective costs 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive

OPS = ("all_reduce", "all_gather", "broadcast", "p2p")
ALGORITHMS = ("ring", "tree", "bandwidth_optimal", "pairwise")


def coefficients(algorithm: str, workers: int) -> tuple[float, float]:
    """(a, b) of T = a·ℓ + b·S/B for ``algorithm`` (one of :data:`ALGORITHMS`) on ``workers`` = N >= 1."""
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


@dataclass(frozen=True)
class Link:
    """A link of ``bandwidth`` bit/s (``math.inf`` for an unlimited one) and ``latency`` seconds."""

    bandwidth: float = math.inf
    latency: float = 0.0

    def __post_init__(self):
        if self.bandwidth != math.inf:
            check_positive("bandwidth", self.bandwidth)
        check_nonnegative("latency", self.latency)

    def collective_seconds(self, bits: float, workers: int, algorithm: str = "ring") -> float:
        """T = a·ℓ + b·S/B of one synchronisation of ``bits`` = S bits per worker among ``workers`` = N
        (see :func:`coefficients` for the algorithms)."""
        a, b = coefficients(algorithm, workers)
        bits = check_nonnegative("bits", bits)
        per_bit = 0.0 if self.bandwidth == math.inf else 1.0 / self.bandwidth
        return a * self.latency + b * bits * per_bit

    def alltoall_seconds(self, traffic_bits) -> np.ndarray:
        """Seconds of all-to-all exchanges: ℓ + (bits the busiest device sends or receives)/B, 0 when nothing
        crosses devices.

        Args:
            traffic_bits: ``[..., G, G]`` bits from device g to device h (the diagonal stays local).

        Returns:
            float64 ``[...]``.
        """
        traffic = np.asarray(traffic_bits, dtype=np.float64)
        if traffic.ndim < 2 or traffic.shape[-1] != traffic.shape[-2]:
            raise ValueError(f"traffic_bits must have shape [..., G, G], got {traffic.shape}")
        if not np.isfinite(traffic).all() or (traffic < 0).any():
            raise ValueError("traffic_bits must be finite and non-negative")
        off = traffic * (1 - np.eye(traffic.shape[-1]))
        busiest = np.maximum(off.sum(axis=-1), off.sum(axis=-2)).max(axis=-1)
        return np.where(busiest > 0, self.latency + busiest / self.bandwidth, 0.0)

    def seconds(self, op: str, nbytes: float, workers: int, degree: int = 1) -> float:
        """Seconds one collective ``op`` takes when each worker contributes ``nbytes`` bytes.

        Args:
            op: one of ``"all_reduce"``, ``"all_gather"``, ``"broadcast"``, ``"p2p"``.
            nbytes: bytes per worker (for ``"p2p"``: bytes of one message).
            workers: N, the number of workers taking part.
            degree: for ``"p2p"``, the most messages one worker sends in the round.
        """
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        n_workers = workers
        if n_workers <= 1 or (op == "p2p" and degree == 0):
            return 0.0
        if op == "all_reduce":
            return self.collective_seconds(8 * nbytes, n_workers, "ring")
        if op == "p2p":
            return self.collective_seconds(8 * degree * nbytes, n_workers, "pairwise")
        per_byte = 8.0 / self.bandwidth
        if op == "all_gather":
            return (n_workers - 1) * (self.latency + nbytes * per_byte)
        return math.ceil(math.log2(n_workers)) * (self.latency + nbytes * per_byte)
