"""How long a collective takes on a link of given latency and bandwidth (the α–β model).

Every worker has one full-duplex link of ``bandwidth`` bits per second and a per-message latency
``latency`` seconds. With n the bytes each worker contributes and N workers, the standard costs
of bandwidth-optimal algorithms (Thakur, Rabenseifner, Gropp 2005; ring all-reduce of
Patarasuk & Yuan 2009) are

* all-reduce (ring: reduce-scatter + all-gather): 2(N − 1)·α + 2·(N − 1)/N · 8n/B
* all-gather (ring):                               (N − 1)·α + (N − 1) · 8n/B
* broadcast (binomial tree):                       ⌈log₂ N⌉ · (α + 8n/B)
* point-to-point rounds (gossip ``mix``, pairwise ``exchange``): α + deg · 8n/B, with deg the
  largest number of messages one worker sends in the round.

α = ``latency`` (s), B = ``bandwidth`` (bit/s). With one worker every collective costs 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from commlab._checks import check_nonnegative, check_positive

OPS = ("all_reduce", "all_gather", "broadcast", "p2p")


@dataclass(frozen=True)
class Link:
    """A link of ``bandwidth`` bit/s (``math.inf`` for an unlimited one) and ``latency`` seconds."""

    bandwidth: float = math.inf
    latency: float = 0.0

    def __post_init__(self):
        if self.bandwidth != math.inf:
            check_positive("bandwidth", self.bandwidth)
        check_nonnegative("latency", self.latency)

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
        per_byte = 8.0 / self.bandwidth
        if op == "all_reduce":
            return 2 * (n_workers - 1) * self.latency + 2 * (n_workers - 1) / n_workers * nbytes * per_byte
        if op == "all_gather":
            return (n_workers - 1) * (self.latency + nbytes * per_byte)
        if op == "broadcast":
            return math.ceil(math.log2(n_workers)) * (self.latency + nbytes * per_byte)
        return self.latency + degree * nbytes * per_byte
