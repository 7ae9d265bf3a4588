"""PowerSGD: a rank-r approximation from one step of subspace iteration (Vogels et al. 2019).

Each row of length d is viewed as an ``n × m`` matrix M (zero-padded; by default the most square
shape with n·m ≥ d, or the layer's own shape). With a random Gaussian Q ∈ R^{m×r} drawn from the
generator (shared by all workers when they use the same seed):

    P = M Q,   P̂ = orthonormalise(P),   Q' = Mᵀ P̂,   C(M) = P̂ Q'ᵀ        (Alg. 1 of the paper)

The wire carries P̂ and Q' (``(n + m)·r`` float32 values per row). In PowerSGD proper the P and Q'
of all workers are all-reduced in two rounds so the result approximates the *mean* matrix; that
protocol belongs to the Communicator. As a per-worker compressor it is biased, not linear, and
warm starts (reusing Q') are left to the caller, who can keep the generator's stream advancing.
"""

from __future__ import annotations

import math

import torch

from commlab.compress.base import Compressor
from commlab.compress.payload import Part


class PowerSGD(Compressor):
    """Rank-``rank`` PowerSGD of each row seen as a matrix of shape ``matrix`` (or near-square)."""

    random = True
    shared_draws = True  # one Gaussian Q for all rows
    homogeneous = True

    def __init__(self, rank: int = 1, *, matrix: tuple[int, int] | None = None):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
        if matrix is not None and (len(matrix) != 2 or min(matrix) < 1):
            raise ValueError(f"matrix must be a shape (n, m) with n, m >= 1, got {matrix!r}")
        self.rank, self.matrix = rank, None if matrix is None else tuple(int(v) for v in matrix)

    def shape_for(self, d: int) -> tuple[int, int]:
        """The matrix shape a row of length ``d`` is viewed as."""
        if self.matrix is not None:
            if self.matrix[0] * self.matrix[1] != d:
                raise ValueError(f"matrix {self.matrix} does not hold d={d} values")
            return self.matrix
        n = math.isqrt(d - 1) + 1 if d > 1 else 1
        return n, -(-d // n)

    def _encode(self, rows, generator):
        W, d = rows.shape
        n, m = self.shape_for(d)
        r = min(self.rank, n, m)
        M = torch.nn.functional.pad(rows.to(torch.float32), (0, n * m - d)).reshape(W, n, m)
        Q = torch.randn(m, r, generator=generator)
        P, _ = torch.linalg.qr(M @ Q)
        Q_next = M.transpose(1, 2) @ P
        return Part.floats("p", P.reshape(W, -1)), Part.floats("q", Q_next.reshape(W, -1))

    def _decode(self, payload, W, d):
        n, m = self.shape_for(d)
        r = payload["p"].counts[0] // n
        P = payload["p"].data.reshape(W, n, r)
        Q = payload["q"].data.reshape(W, m, r)
        return (P @ Q.transpose(1, 2)).reshape(W, n * m)[:, :d]
